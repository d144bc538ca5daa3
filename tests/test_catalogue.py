"""Every shipped study: validates, expands to its documented run count, has its full report
committed under reports/ (made from the runs the file defines now), and smoke-runs end to end
(real data cut small, a throw-away MLflow store), the way a registry's entries are each tested."""

import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from suite import analysis, components
from suite.analysis import collapsed
from suite.cli import main
from suite.analysis.results import from_report
from suite.spec.config import task_of
from suite.spec.study import expand, list_studies, load_study

from conftest import IN_CI, ROOT, has_dataset, needs_mnist, store_at

STUDIES = list_studies()
REPORTS = ROOT / "reports"


def documented_runs() -> dict[str, int]:
    """study -> its runs (datasets x conditions x seeds), as the README's catalogue table says: a row may name two
    studies (`a` / `b`, "35 each"); a tuned study's "20 + 20 tuned" counts its own 20."""
    table = (ROOT / "README.md").read_text().split("## The study catalogue", 1)[1].split("\n\n")[1]
    runs = {}
    for row in table.splitlines()[2:]:
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        runs.update(dict.fromkeys(re.findall(r"`([a-z0-9_]+)`", cells[0]), int(re.match(r"\d+", cells[-1]).group())))
    return runs


DOCUMENTED_RUNS = documented_runs()


def test_the_catalogue_is_documented():
    assert sorted(p.stem for p in STUDIES) == sorted(DOCUMENTED_RUNS)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_validates_and_expands_to_its_documented_count(path):
    study = load_study(str(path))
    assert study.name == path.stem and study.question.endswith("?")
    assert len(expand(study)) == study.run_count == DOCUMENTED_RUNS[path.stem]
    if study.baseline:
        assert study.baseline in study.variants


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_full_report_is_committed_and_matches_the_study_file(path):
    """reports/<study>/ holds every run of the full study as the file defines it now (edit a protocol: rerun it)."""
    study = load_study(str(path))
    folder = REPORTS / study.name
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["runs"] == meta["expected"] and (folder / "report.md").stat().st_size > 0
    keys = set(pd.read_csv(folder / "runs.csv")["run_key"])
    assert {spec.run_key for spec in expand(study)} <= keys  # a tuned study adds its @tuned runs
    assert len(keys) == meta["runs"] == DOCUMENTED_RUNS[study.name] * (2 if study.tune else 1)


@pytest.mark.slow
@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_smoke_runs_end_to_end(path, tmp_path, data_dir):
    study = load_study(str(path))
    missing = [d for d in study.datasets if not has_dataset(d)]
    if missing and not IN_CI:
        pytest.skip(f"{', '.join(missing)} not found under {data_dir}")
    # serial on both cores: in this process, whose dataset cache the 16 studies share (test_execute.py covers pool and Ray)
    code = main(["study", str(path), "--smoke", "--data-dir", str(data_dir), "--tracking-uri", store_at(tmp_path / "m.db"),
                 "--reports-dir", str(tmp_path / "reports"), "--storage", f"sqlite:///{tmp_path}/o.db", "--executor", "serial", "--threads", "2"])
    assert code == 0
    runs = pd.read_csv(tmp_path / "reports" / "smoke" / study.name / "runs.csv")
    tuned = len(study.variants) * len(study.datasets) * len(study.smoke.seeds if isinstance(study.smoke.seeds, list) else range(study.smoke.seeds)) if study.tune else 0
    assert len(runs) == len(expand(study, smoke=True)) + tuned
    assert runs[study.metric].notna().all()
    # tables list datasets and variants in the study file's order
    summary = pd.read_csv(tmp_path / "reports" / "smoke" / study.name / "summary.csv", keep_default_na=False)
    assert list(dict.fromkeys(summary["dataset"])) == list(study.datasets)
    assert list(dict.fromkeys(runs["dataset"])) == list(study.datasets)
    # the per-class table names the classes where its datasets name them alike (CIFAR-10's 3: cat), else their labels
    report = (tmp_path / "reports" / "smoke" / study.name / "report.md").read_text()
    header = next((line for line in report.splitlines() if line.startswith("| dataset | variant | seeds |")), None)
    named = {components.class_names(d) for d in study.datasets}
    assert (header is not None) == any(task_of(d) == "classification" for d in study.datasets)  # (smoke runs log predictions)
    if header and len(named) == 1 and None not in named:
        assert " | ".join(next(iter(named))) in header, header
    elif header:
        assert "| class 0 | class 1 |" in header, header
    # variants that differ in the full study do not train identically in smoke (e.g. patience 3 and 5)
    for dataset, part in runs.groupby("dataset"):
        outcomes = {}
        for variant, rows in part.sort_values("seed").groupby("variant"):
            outcome = tuple(rows[["test_loss", "train_eval_loss", "epochs_trained"]].itertuples(index=False, name=None))
            assert outcome not in outcomes, f"{dataset}: {variant} trains exactly as {outcomes.get(outcome)} in smoke"
            outcomes[outcome] = variant


def committed_runs(study):
    """A committed report's runs (its runs.csv), each marked collapsed or not, and the study they answer."""
    folder = REPORTS / study.name
    study, results = from_report(study, folder)
    runs = results.runs
    runs["collapsed"] = collapsed(runs)
    return study, runs


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_committed_verdicts_follow_from_the_committed_runs(path):
    """Recompute every comparison and claim from the committed runs.csv: the committed tables hold no stale verdict."""
    study, runs = committed_runs(load_study(str(path)))
    folder = REPORTS / study.name
    tests = analysis.family(runs, study)
    for name, table in (("comparisons", tests.comparisons), ("claims", tests.claims)):
        committed = pd.read_csv(folder / f"{name}.csv")
        assert list(table["verdict"]) == list(committed["verdict"]), name
        for column in ("mean_diff", "ci_low", "ci_high", "p_holm") if name == "comparisons" else ("ci_low", "ci_high", "p_holm"):
            assert table[column].to_numpy(dtype=float) == pytest.approx(committed[column].to_numpy(dtype=float), rel=1e-4, abs=1e-9), (name, column)
    summary = analysis.summarize(runs, study.metric, study.grid_axes)
    committed = pd.read_csv(folder / "summary.csv")
    if "n_collapsed" in committed:
        assert list(summary["n_collapsed"]) == list(committed["n_collapsed"])


def test_collapsed_runs_are_the_ones_the_tutorial_protocols_leave_at_chance():
    """The runs named in the issue: CIFAR-10 at 10.00% and MNIST's patience=none seeds at 11.35% (all class 1)."""
    counts = {}
    for name in ("regularization_cifar10", "optimizers", "augmentation_cifar10", "early_stopping", "regularization"):
        _, runs = committed_runs(load_study(name))
        for (dataset, variant), group in runs.groupby(["dataset", "variant"], observed=True):
            counts[name, dataset, variant] = int(group["collapsed"].sum())
    assert counts["regularization_cifar10", "cifar10", "none"] == 5 and counts["regularization_cifar10", "cifar10", "l2"] == 0
    assert counts["optimizers", "cifar10", "rmsprop"] == counts["optimizers", "cifar10", "adam"] == 5
    assert counts["optimizers", "mnist", "adam"] == 0
    assert counts["augmentation_cifar10", "cifar10", "none"] == 5 and counts["augmentation_cifar10", "cifar10", "hflip"] == 3
    assert counts["early_stopping", "mnist", "patience=none"] == 3
    assert sum(v for k, v in counts.items() if k[0] == "regularization") == 0


def _cpu_has(flag: str) -> bool:
    try:
        return any(line.startswith("flags") and flag in line.split() for line in open("/proc/cpuinfo"))
    except OSError:
        return False


# the switches that make an x86 CPU with AVX2 compute as the AVX2 machine that trained label_noise (README "Reproducibility")
AS_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}


@pytest.mark.slow
@needs_mnist
@pytest.mark.skipif(not _cpu_has("avx2"), reason="no AVX2 here: label_noise's runs were computed with AVX2 kernels")
def test_committed_reports_are_retrained_to_the_digit_with_the_kernels_that_trained_them(data_dir):
    """A committed report's numbers are what its runs compute now, not only its run keys: a code change that alters a
    run's numbers but not its key fails here (bench/rerun.py trains the quickest runs again and compares runs.csv)."""
    for study, runs in (("label_noise", 1), ("optimizers_quadratic", 3)):  # (the second gives its numbers with either kernels)
        out = subprocess.run([sys.executable, "bench/rerun.py", study, "--runs", str(runs), "--data-dir", str(data_dir)],
                             capture_output=True, text=True, cwd=ROOT, env={**os.environ, **AS_AVX2}, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.count("  same\n") == runs and "DIFFERS" not in out.stdout
