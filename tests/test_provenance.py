"""Provenance read from a real git repository: a changed report is not a dirty tree, changed code is."""

import subprocess

from suite import provenance

from conftest import ROOT


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True)


def test_generated_reports_do_not_make_the_tree_dirty_but_code_does(tmp_path, monkeypatch):
    (tmp_path / "reports" / "s").mkdir(parents=True)
    (tmp_path / "reports" / "s" / "report.md").write_text("old\n")
    (tmp_path / "train.py").write_text("lr = 1\n")
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "provenance.py").write_text("# the code's own file: what makes this checkout the code's\n")
    git("init", "-q", cwd=tmp_path)
    git("add", ".", cwd=tmp_path)
    git("commit", "-qm", "c", cwd=tmp_path)
    assert len(provenance.git_commit(tmp_path)) == 40 and not provenance.git_dirty(tmp_path)
    (tmp_path / "reports" / "s" / "report.md").write_text("rebuilt\n")
    assert not provenance.git_dirty(tmp_path)
    (tmp_path / "train.py").write_text("lr = 2\n")
    assert provenance.git_dirty(tmp_path)
    # site-packages inside a checkout hold no file of it (a pip-installed suite inside another project): no commit;
    # a project in a subfolder of a larger repository has its repository's
    (tmp_path / "site-packages" / "suite").mkdir(parents=True)
    (tmp_path / "site-packages" / "suite" / "provenance.py").write_text("# installed\n")
    assert provenance.git_commit(tmp_path / "site-packages") == provenance.NO_GIT
    assert not provenance.git_dirty(tmp_path / "site-packages")
    (tmp_path / "monorepo" / "suite").mkdir(parents=True)
    (tmp_path / "monorepo" / "suite" / "provenance.py").write_text("# vendored\n")
    git("add", "monorepo", cwd=tmp_path)
    git("commit", "-qm", "vendored", cwd=tmp_path)
    assert provenance.git_commit(tmp_path / "monorepo") == provenance.git_commit(tmp_path) != provenance.NO_GIT


def test_the_commit_is_that_of_the_code_wherever_the_command_runs(tmp_path, monkeypatch):
    """Runs started from another folder (or another repository) record the commit of the suite's own checkout."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert head or not (ROOT / ".git").exists()  # this checkout's commit, found apart from provenance.CODE
    git("init", "-q", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    assert provenance.git_commit() == (head or provenance.NO_GIT)
