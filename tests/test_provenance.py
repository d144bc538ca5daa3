"""Provenance read from a real git repository: a changed report is not a dirty tree, changed code is."""

import subprocess

from suite import provenance


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True)


def test_generated_reports_do_not_make_the_tree_dirty_but_code_does(tmp_path, monkeypatch):
    (tmp_path / "reports" / "s").mkdir(parents=True)
    (tmp_path / "reports" / "s" / "report.md").write_text("old\n")
    (tmp_path / "train.py").write_text("lr = 1\n")
    git("init", "-q", cwd=tmp_path)
    git("add", ".", cwd=tmp_path)
    git("commit", "-qm", "c", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    assert len(provenance.git_commit()) == 40 and not provenance.git_dirty()
    (tmp_path / "reports" / "s" / "report.md").write_text("rebuilt\n")
    assert not provenance.git_dirty()
    (tmp_path / "train.py").write_text("lr = 2\n")
    assert provenance.git_dirty()
