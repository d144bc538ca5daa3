"""A study end to end with real parts: MNIST cut small, a temporary sqlite MLflow store,
the report written from the store, resume, --force, the lock, and the one-line errors."""

import json
import fcntl
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from suite.cli import main
from suite.execute.kernels import kernel_name
from suite.spec.config import RunConfig
from suite.execute.worker import evaluate_weights

from conftest import IN_CI, ROOT, needs_mnist, store_at

pytestmark = [needs_mnist, pytest.mark.slow]


def cli(*args, study_dir, tmp_path, store):
    return main([*args, "--studies-dir", str(study_dir), "--tracking-uri", store]
                + (["--reports-dir", str(tmp_path / "reports")] if args[0] != "check" else [])  # (check writes no report)
                + (["--data-dir", os.environ.get("SUITE_DATA_DIR", "../shared/data")] if args[0] == "study" else []))


def finished_runs(store: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`suite.kind` = 'run'")


def test_study_logs_runs_writes_report_and_resumes(tiny_study, tmp_path, store, data_dir, capsys):
    os.environ["SUITE_DATA_DIR"] = str(data_dir)
    assert cli("study", "tiny", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    runs = finished_runs(store)
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    assert set(runs["tags.suite.variant"]) == {"none", "wd"} and set(runs["tags.suite.seed"]) == {"0", "1"}
    assert set(runs["tags.mlflow.runName"]) == {"none/seed=0", "none/seed=1", "wd/seed=0", "wd/seed=1"}
    assert runs["tags.suite.run_key"].nunique() == 4 and runs["tags.suite.git_commit"].str.len().min() > 0
    assert set(runs["tags.suite.adam_kernel"]) == {kernel_name()}  # which Adam step trained them (same numbers either way)
    assert set(runs["params.optimizer.weight_decay"]) == {"0.0", "0.01"} and set(runs["params.model.hidden"]) == {"[32]"}
    client = mlflow.tracking.MlflowClient(store)
    history = client.get_metric_history(runs["run_id"][0], "val_acc")
    assert [m.step for m in history] == [1, 2]
    assert {"resolved_config.json", "weights.pt", "test_errors.json", "misclassified.npz"} <= {a.path for a in client.list_artifacts(runs["run_id"][0])}
    # where each run goes wrong: its test confusion matrix agrees with its logged accuracy
    for _, run in runs.iterrows():
        errors = json.loads(open(client.download_artifacts(run["run_id"], "test_errors.json", str(tmp_path / run["run_id"]))).read())
        confusion = np.array(errors["confusion"])
        assert confusion.shape == (10, 10) and confusion.sum() == 300
        assert np.trace(confusion) / 300 == pytest.approx(run["metrics.test_acc"], abs=1e-12)
        assert len(errors["index"]) == min(16, 300 - np.trace(confusion)) and all(t != p for t, p in zip(errors["true"], errors["predicted"]))

    folder = tmp_path / "reports" / "tiny"
    summary = pd.read_csv(folder / "summary.csv")
    table = pd.read_csv(folder / "runs.csv")
    assert list(summary["variant"]) == ["none", "wd"] and list(summary["n"]) == [2, 2]
    params = 784 * 32 + 32 + 32 * 10 + 10  # MLP 784-32-10: 25,450
    assert list(summary["params"]) == [params] * 2
    assert set(runs["metrics.parameters"]) == {params}  # logged by the run: the report needs no torch to count them
    for variant, group in runs.groupby("tags.suite.variant"):
        row = summary[summary["variant"] == variant].iloc[0]
        assert row["mean"] == pytest.approx(group["metrics.test_acc"].mean(), abs=1e-6)
        assert row["max"] == pytest.approx(group["metrics.test_acc"].max(), abs=1e-6)
    assert set(table["run_id"]) == set(runs["run_id"])
    for name in ("report.md", "report.html", "comparisons.csv", "claims.csv", "curves.csv", "final_metric.png",
                 "learning_curves.png", "forest.png", "generalisation_gap.png", "per_class.csv", "confusion.png", "misclassified.png", "training_loss.png"):
        assert (folder / name).stat().st_size > 0, name
    report = (folder / "report.md").read_text()
    assert f"| {params:,} |" in report and "## Where the errors are" in report
    told = re.search(r"- Runs: 4, total training time ([0-9.]+) (s|min)\n", report)  # (under a minute: seconds, not '0.0 min')
    seconds = table["train_seconds"].sum()
    assert told and told.group(2) == ("s" if seconds < 60 else "min")
    assert float(told.group(1)) == pytest.approx(seconds if seconds < 60 else seconds / 60, abs=0.051)
    per_class = pd.read_csv(folder / "per_class.csv")
    assert len(per_class) == 2 * 10 and set(per_class["seeds"]) == {2} and set(per_class.groupby("variant")["n"].sum()) == {600}
    assert f"make report STUDY={tiny_study}" in report and f"make study STUDY={tiny_study}" in report and "wd vs none" in report
    # without a UI address the report names run keys and how to recreate the runs: no links that die with the store
    assert all(f"`{key}`" in report for key in runs["tags.suite.run_key"]) and "](http" not in report
    # with one, every run key links to its run
    exp_id = runs["experiment_id"][0]
    assert cli("report", "tiny", "--ui-url", "http://ui.example:5001/", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    linked = (folder / "report.md").read_text()
    assert all(f"](http://ui.example:5001/#/experiments/{exp_id}/runs/{run_id}?workflowType=machine_learning)" in linked
               for run_id in runs["run_id"])
    # MLflow's standard tags, the dataset as an input, the experiment's description and runs view
    one = client.get_run(runs["run_id"][0])
    assert one.data.tags["mlflow.source.name"].endswith("tiny.yaml") and one.data.tags["mlflow.user"]
    assert one.data.tags["mlflow.source.git.commit"] == one.data.tags["suite.git_commit"]
    assert "Does weight decay change anything" in one.data.tags["mlflow.note.content"]
    dataset = one.inputs.dataset_inputs[0].dataset
    assert dataset.name == "mnist" and dataset.digest == one.data.tags["suite.data_fingerprint"]
    assert json.loads(dataset.profile) == {"train": 300, "val": 200, "test": 300}
    experiment = client.get_experiment(exp_id)
    assert experiment.tags["mlflow.note.content"].startswith("**Does weight decay change anything")
    view = json.loads(json.loads(experiment.tags["mlflow.sharedViewState.suite"])["state"])
    assert view["orderByKey"] == "metrics.`test_acc`" and view["orderByAsc"] is False
    assert {"metrics.`test_acc`", "params.`optimizer.weight_decay`"} <= set(view["selectedColumns"])
    assert (tmp_path / "reports" / "index.md").read_text().count("tiny") >= 2
    first_tables = {n: (folder / n).read_text() for n in ("summary.csv", "comparisons.csv", "claims.csv", "runs.csv")}
    first_files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    # the kept weights, reloaded into a fresh model, give the logged test metrics exactly (by run id or run key) ...
    capsys.readouterr()
    assert main(["evaluate", runs["run_id"][0], "--tracking-uri", store, "--data-dir", str(data_dir)]) == 0
    assert main(["evaluate", runs["tags.suite.run_key"][0], "--tracking-uri", store, "--data-dir", str(data_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all("identical" in line for line in lines)
    assert any(f"test_acc {runs['metrics.test_acc'][0]:.6g}" in line for line in lines)
    # ... and a perturbed copy of them does not
    weights = torch.load(client.download_artifacts(runs["run_id"][0], "weights.pt", str(tmp_path)), weights_only=True)
    config = RunConfig(**json.loads(open(client.download_artifacts(runs["run_id"][0], "resolved_config.json", str(tmp_path))).read())["config"])
    weights["1.weight"] = weights["1.weight"] * 1.5
    assert evaluate_weights(config, weights, str(data_dir))["test_loss"] != runs["metrics.test_loss"][0]
    # ... and where its artifacts are gone (an mlruns/ folder moved), evaluate says so (it blamed --keep-weights)
    from urllib.parse import unquote, urlparse

    where = Path(unquote(urlparse(client.get_run(runs["run_id"][0]).info.artifact_uri).path))
    where.rename(where.with_name("moved"))
    capsys.readouterr()
    assert main(["evaluate", runs["run_id"][0], "--tracking-uri", store, "--data-dir", str(data_dir)]) == 1
    assert f"the artifacts of run {runs['run_id'][0]} are not at {where}, where the store says they are" in capsys.readouterr().err
    where.with_name("moved").rename(where)

    # rerunning trains nothing and creates no duplicates
    capsys.readouterr()
    assert cli("study", "tiny", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    assert "0 trained, 4 already done" in capsys.readouterr().out
    assert len(finished_runs(store)) == 4
    # the report rebuilt from the store alone is identical
    assert cli("report", "tiny", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    assert {n: (folder / n).read_text() for n in first_tables} == first_tables
    # every file of it, figures too (their points' jitter is seeded), byte for byte; the text alone differs: the first
    # call linked its runs to a UI (--ui-url), this one gives the commands that recreate them
    rebuilt = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert rebuilt.keys() == first_files.keys()
    assert sorted(n for n in rebuilt if rebuilt[n] != first_files[n]) == ["report.html", "report.md"]
    # --force reruns and replaces, still no duplicates
    assert cli("study", "tiny", "--force", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    again = finished_runs(store)
    assert len(again) == 4 and set(again["run_id"]).isdisjoint(runs["run_id"])
    # same seeds and configs: bitwise-identical metrics
    merged = runs.merge(again, on="tags.suite.run_key")
    assert (merged["metrics.test_acc_x"] == merged["metrics.test_acc_y"]).all()


def test_an_interrupted_run_is_replaced_not_duplicated(tiny_study, tmp_path, store, data_dir):
    os.environ["SUITE_DATA_DIR"] = str(data_dir)
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    mlflow.set_tracking_uri(store)
    client = mlflow.tracking.MlflowClient(store)
    done = mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="tags.`suite.kind` = 'run'")
    victim = done["run_id"][0]
    # what a kill -9 leaves behind: the run still RUNNING
    client.set_terminated(victim, "RUNNING")
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    after = mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="tags.`suite.kind` = 'run'")
    # smoke runs live in their own experiment: the full one holds none
    assert mlflow.get_experiment_by_name("tiny") is None
    assert len(after) == len(done) and victim not in set(after["run_id"]) and set(after["status"]) == {"FINISHED"}
    assert (tmp_path / "reports" / "smoke" / "tiny" / "report.md").exists()
    # one epoch: no one-point learning-curve figure (the per-batch training loss is the curve of such a study)
    assert not (tmp_path / "reports" / "smoke" / "tiny" / "learning_curves.png").exists()


def test_second_writer_is_refused_with_one_line(tiny_study, tmp_path, store, capsys):
    with open(store.removeprefix("sqlite:///") + ".lock", "w") as held:  # as another process would hold it
        fcntl.flock(held, fcntl.LOCK_EX)
        code = cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store)
    err = capsys.readouterr().err
    assert code == 1 and "another suite process is writing" in err and err.count("\n") == 1


def test_check_exits_1_on_a_contradicted_claim_while_study_exits_0(tiny_study, tmp_path, store, data_dir, capsys):
    os.environ["SUITE_DATA_DIR"] = str(data_dir)
    # four seeds: a t-interval narrow enough to put 99.9% clearly out of reach
    text = tiny_study.read_text().replace("  - wd > none", "  - none >= 99.9% on test_acc").replace("smoke:\n  seeds: 2", "smoke:\n  seeds: 4")
    tiny_study.write_text(text)
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    assert cli("check", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 1
    claims = pd.read_csv(tmp_path / "reports" / "smoke" / "tiny" / "claims.csv")
    assert list(claims["verdict"]) == ["contradicted"]
    # the summary run carries the verdicts: MLflow's search finds the study by its contradicted claim
    mlflow.set_tracking_uri(store)
    found = mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="metrics.claims_contradicted > 0")
    assert len(found) == 1 and found["tags.suite.kind"][0] == "summary"
    assert found["tags.claim.0.mnist"][0] == "contradicted: none >= 99.9% on test_acc"
    assert found["metrics.comparisons_better"][0] + found["metrics.comparisons_worse"][0] + found["metrics.comparisons_inconclusive"][0] == 1
    # a claim on a variant that never trained: check says the runs are missing and exits 1 (it read "inconclusive", exit 0)
    tiny_study.write_text(text.replace("  wd: {", "  wd2: {optimizer: {weight_decay: 0.02}}\n  wd: {")
                          .replace("  - none >= 99.9% on test_acc", "  - none >= 99.9% on test_acc\n  - wd2 > none"))
    capsys.readouterr()
    assert cli("check", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 1
    out, err = capsys.readouterr()
    assert "wd2 > none" in out and err == ("error: 4 runs of study 'tiny' are not in the store (not trained yet, failed, or computed another way): the "
                                           f"verdicts above are from the others; `make study STUDY={tiny_study} ARGS=--smoke` "
                                           "trains them\n"), err
    comparisons = pd.read_csv(tmp_path / "reports" / "smoke" / "tiny" / "comparisons.csv")
    assert found["metrics.diff.mnist.wd"][0] == pytest.approx(comparisons["mean_diff"][0])


def test_missing_data_is_one_line_saying_where_it_looked(tiny_study, tmp_path, store):
    env = {**os.environ, "SUITE_DATA_DIR": str(tmp_path / "nowhere")}
    out = subprocess.run([sys.executable, "-m", "suite", "study", str(tiny_study), "--smoke", "--tracking-uri", store,
                          "--reports-dir", str(tmp_path / "r")], capture_output=True, text=True, env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    line = [l for l in out.stderr.splitlines() if l.startswith("error:")]
    assert len(line) == 1 and str(tmp_path / "nowhere") in line[0] and "SUITE_DATA_DIR" in line[0]


def test_an_interrupted_force_says_what_the_same_command_would_do(tiny_study, tmp_path, store, monkeypatch, capsys):
    """After Ctrl-C, `--force` again retrains every run (it said "run the same command again to resume")."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("suite.execute.plan.run_study", interrupted)
    assert cli("study", "tiny", "--smoke", "--force", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 130
    assert "run the same command to retrain them all again, or drop --force to keep what is there" in capsys.readouterr().err
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 130
    assert "finished runs are kept; run the same command again to resume" in capsys.readouterr().err


def test_tune_of_a_study_without_a_search_is_bad_input(tiny_study, tmp_path, store, capsys):
    assert cli("tune", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 2  # (was 1)
    assert "study 'tiny' has no search block" in capsys.readouterr().err


def test_a_core_slots_folder_that_cannot_be_made_is_one_line_before_anything_trains(tiny_study, tmp_path, store, monkeypatch, capsys):
    """SUITE_CORE_SLOTS naming a file: every run failed with FileExistsError and the advice to retrain them."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SUITE_CORE_SLOTS", str(tmp_path / "a-file"))
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"runs cannot hold core slots in {tmp_path / 'a-file'}" in err and "point SUITE_CORE_SLOTS" in err
    mlflow.set_tracking_uri(store)
    assert mlflow.search_runs(experiment_names=["tiny/smoke"]).empty  # nothing was recorded as failed
    # a slot that is not a file: a folder (the runs that drew it failed with IsADirectoryError), a FIFO (the driver hung)
    from suite.execute import cores

    for make in (os.mkdir, os.mkfifo):
        slots = tmp_path / f"slots-{make.__name__}"
        slots.mkdir()
        make(slots / f"{cores() - 1}.lock")
        monkeypatch.setenv("SUITE_CORE_SLOTS", str(slots))
        assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"runs cannot hold core slots in {slots}" in err and f"{cores() - 1}.lock" in err, err


def test_an_interrupted_push_is_finished_by_the_next_and_a_busy_target_waits(tiny_study, tmp_path, store, monkeypatch, capsys):
    """A push stopped mid-copy left a RUNNING copy that the next push kept beside its new one; and push wrote into a
    sqlite store while a study was writing to it."""
    from suite import tracking

    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    team = f"sqlite:///{tmp_path / 'team.db'}"
    push = ["push", "tiny", "--to", team, "--studies-dir", str(tiny_study.parent), "--tracking-uri", store]
    real, calls = tracking.copy_run, []

    class Interrupted:
        """The real target store, interrupted (Ctrl-C) when a copy uploads its artifacts."""

        def __init__(self, client):
            self.client = client

        def __getattr__(self, name):
            return getattr(self.client, name)

        def log_artifacts(self, *args, **kwargs):
            raise KeyboardInterrupt

    def stopped_in_the_second(src, dst, run, exp_id, tags):
        """The real copy, interrupted in the second run's (its params and metrics written, its artifacts not)."""
        calls.append(1)
        return real(src, Interrupted(dst) if len(calls) == 2 else dst, run, exp_id, tags)

    monkeypatch.setattr(tracking, "copy_run", stopped_in_the_second)
    assert main(push) == 130
    monkeypatch.undo()
    mlflow.set_tracking_uri(team)
    runs = lambda: mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="tags.`suite.kind` = 'run'")  # noqa: E731
    assert sorted(runs()["status"]) == ["FINISHED", "RUNNING"]
    capsys.readouterr()
    assert main(push) == 0
    assert capsys.readouterr().out == f"tiny/smoke: 3 runs copied to {team}, 1 already there\n"  # one line per experiment
    assert sorted(runs()["status"]) == ["FINISHED"] * 4 and runs()["tags.suite.run_key"].nunique() == 4
    # a study writing to the target (its lock held by another process): one line, nothing written
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", f"{tmp_path / 'team.db'}.lock"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(push) == 1
        assert f"another suite process is writing to {tmp_path / 'team.db'}; wait for it to finish or pass another --to" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert main([*push[:3], str(tmp_path / "plain"), *push[4:]]) == 2  # a plain path: MLflow's folder store
    assert f"error: --to {tmp_path / 'plain'}: a store is sqlite:///PATH" in capsys.readouterr().err


def test_a_tracking_server_lost_after_mlflows_retries_is_named_as_such():
    """MLflow's client ends its retries with 'API request to URL failed with exception E' (rest_utils): it read 'the
    MLflow store failed: API request to ...', the cause cut off; a store's own refusal keeps its words."""
    from mlflow.exceptions import MlflowException

    from suite.cli import store_failure

    lost = MlflowException("API request to http://127.0.0.1:47693/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/x.json failed "
                           "with exception HTTPConnectionPool(host='127.0.0.1', port=47693): Max retries exceeded with url: /api "
                           "(Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish "
                           "a new connection: [Errno 111] Connection refused'))")
    assert store_failure(lost) == "the tracking server cannot be reached: http://127.0.0.1:47693 ([Errno 111] Connection refused)"
    assert store_failure(MlflowException("RESOURCE_DOES_NOT_EXIST: no run")) == "the MLflow store failed: RESOURCE_DOES_NOT_EXIST: no run"
    # a live server that failed every retry (5xx: MLflow retries those) is not one that is gone
    failing = MlflowException("API request to http://127.0.0.1:45529/api/2.0/mlflow/experiments/set-experiment-tag failed with "
                              "exception HTTPConnectionPool(host='127.0.0.1', port=45529): Max retries exceeded with url: "
                              "/api/2.0/mlflow/experiments/set-experiment-tag (Caused by ResponseError('too many 503 error responses'))")
    assert store_failure(failing) == ("the tracking server http://127.0.0.1:45529 answered HTTP 503 to every retry (its database "
                                      "may be down; see its log)")


@needs_mnist
def test_result_lines_keep_one_column_for_long_run_names(tiny_study, tmp_path, store, data_dir, capsys, monkeypatch):
    """The first column was 28 characters: longer run names pushed their metric out of line."""
    tiny_study.write_text(tiny_study.read_text().replace("  wd: {", "  weight_decay_of_a_hundredth: {").replace("wd > none",
                                                                                                             "weight_decay_of_a_hundredth > none"))
    monkeypatch.setenv("SUITE_DATA_DIR", str(data_dir))
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "test_acc=" in line]
    assert len(lines) == 4 and {line.index("test_acc=") for line in lines} == {len("  weight_decay_of_a_hundredth/seed=0 ")}, lines


def test_push_of_a_study_with_no_runs_makes_no_target_store(tmp_path, store, capsys):
    """It made the target's database, lock and folders, then said there was nothing to copy."""
    from suite import tracking

    tracking.connect(store)
    target = tmp_path / "new" / "mlflow.db"
    assert main(["push", "regularization", "--to", f"sqlite:///{target}", "--tracking-uri", store]) == 1
    assert capsys.readouterr().err == f"error: no finished runs of study 'regularization' in {store}\n"
    assert not target.parent.exists()


def test_push_to_the_store_it_reads_is_bad_input_however_spelled(tmp_path, store, capsys):
    db = store.removeprefix("sqlite:///")
    from suite.tracking import same_store

    assert same_store("http://127.0.0.1:5000", "http://127.0.0.1:5000/") and not same_store("http://h:5000", "http://h:5001")
    for target in (store, f"sqlite:///{tmp_path}/./{Path(db).name}"):  # (the second copied nothing, exit 0)
        assert main(["push", "regularization", "--to", target, "--tracking-uri", store]) == 2
        err = capsys.readouterr().err
        assert err == "error: --to names the store the runs are read from; give another store\n", err


def test_one_sqlite_file_as_both_stores_is_refused(tiny_study, tmp_path, store, capsys):
    """--storage naming the MLflow store's file: Optuna's tables landed in it and Optuna blamed its schema version."""
    from suite import tracking

    both = tmp_path / "both.db"
    for command in (["study", "tiny", "--smoke"], ["tune", "tiny", "--smoke"]):  # (neither made yet)
        assert cli(*command, "--storage", f"sqlite:///{both}", study_dir=tiny_study.parent, tmp_path=tmp_path, store=f"sqlite:///{both}") == 2
        assert f"the MLflow store and the Optuna storage are one file, {both}" in capsys.readouterr().err
    assert not both.exists()
    same = store.removeprefix("sqlite:///")
    tracking.connect(store)  # the MLflow store exists: what Optuna would have written into
    for command in (["study", "tiny", "--smoke"], ["tune", "tiny", "--smoke"]):
        assert cli(*command, "--storage", f"sqlite:///{same}", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 2
        assert f"{same} is an MLflow store, not an Optuna storage; give each its own file" in capsys.readouterr().err
    import sqlite3

    with sqlite3.connect(same) as db:
        tables = {name for (name,) in db.execute("select name from sqlite_master where type = 'table'")}
    assert "experiments" in tables and "studies" not in tables


def test_check_of_a_study_without_claims_says_so(tiny_study, tmp_path, store, capsys):
    tiny_study.write_text(tiny_study.read_text().replace("claims:\n  - wd > none\n", ""))
    assert cli("check", "tiny", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    assert capsys.readouterr().out == "study 'tiny' makes no claims (a `claims:` list in its file); nothing to check\n"


def test_evaluate_names_a_run_it_cannot_find_in_one_line(tmp_path, store, capsys):
    code = main(["evaluate", "0123456789abcdef", "--tracking-uri", store])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no run with id or run key '0123456789abcdef'" in err  # (bad input: was 1)
    code = main(["evaluate", "' OR 1=1 --", "--tracking-uri", store])  # (it went into a search filter as written)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no run with id or run key '' OR 1=1 --' in this store" in err, err


@needs_mnist
@pytest.mark.slow
def test_a_full_disk_mid_study_is_one_line_and_the_next_call_resumes(tiny_study, tmp_path, data_dir):
    """Store and artifacts on a 1.5 MB tmpfs: the study stops with one line when it fills, keeps what finished, then resumes."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:  # (under CI=true it must run: a green CI has filled a disk)
        (pytest.fail if IN_CI else pytest.skip)(f"cannot mount a size-limited tmpfs here (needs root and CAP_SYS_ADMIN): {mounted.stderr.strip()[:120]}")
    try:
        store = f"sqlite:///{disk}/mlflow.db"
        command = [sys.executable, "-m", "suite", "study", str(tiny_study), "--smoke", "--workers", "1", "--tracking-uri", store,
                   "--reports-dir", str(tmp_path / "r")]
        env = {**os.environ, "SUITE_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
        full = subprocess.run(command, capture_output=True, text=True, env=env, cwd=disk, timeout=300)  # artifacts go to ./mlruns
        assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr[-800:]
        errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "full" in errors[0] and "finished runs are kept" in errors[0], errors

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        mlflow.set_tracking_uri(store)
        before = mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="tags.`suite.kind` = 'run' and attributes.status = 'FINISHED'")
        assert len(before) >= 1, "the runs finished before the disk filled are kept"
        again = subprocess.run(command, capture_output=True, text=True, env=env, cwd=disk, timeout=300)
        assert again.returncode == 0, again.stderr[-800:]
        assert f"{len(before)} already done" in again.stdout
        after = mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="tags.`suite.kind` = 'run'")
        assert len(after) == 4 and set(after["status"]) == {"FINISHED"} and set(before["run_id"]) <= set(after["run_id"])
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_store_that_cannot_be_opened_or_reached_is_one_line_at_once(tiny_study, tmp_path, capsys):
    """A sqlite store where no file can be made, and a tracking server that no one answers (MLflow alone would retry
    for minutes): one line each, at once; so is asking for more threads than the machine has cores."""
    import socket
    import time

    from suite.execute import cores

    (tmp_path / "file").write_text("not a folder")
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    for store, says in [(f"sqlite:///{tmp_path}/file/mlflow.db", "cannot open the MLflow store"),
                        (f"http://127.0.0.1:{port}", f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}")]:
        start = time.monotonic()
        code = cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 1 and len(lines) == 1 and says in lines[0] and "Traceback" not in err, err
        assert time.monotonic() - start < 30
    code = cli("study", "tiny", "--smoke", "--threads", str(cores() + 1), study_dir=tiny_study.parent, tmp_path=tmp_path,
               store=f"sqlite:///{tmp_path}/mlflow.db")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"--threads {cores() + 1} is more than this machine's {cores()} cores" in err
    code = cli("study", "tiny", "--smoke", "--workers", str(cores() + 1), study_dir=tiny_study.parent, tmp_path=tmp_path,
               store=f"sqlite:///{tmp_path}/mlflow.db")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"--workers {cores() + 1} x --threads 1 is more than this machine's" in err


def test_the_index_leaves_out_a_damaged_meta_json_with_a_warning(tmp_path, capsys):
    """One unreadable or foreign meta.json among the reports (a crash, a hand edit) broke every study's report with a
    traceback, after its training; the index now lists the others and names the one it left out."""
    from suite.report import write_index

    good = {"name": "fine", "question": "Does it work?", "runs": 4, "expected": 4, "headline": ["**supported**: a > b"]}
    (tmp_path / "fine").mkdir()
    (tmp_path / "fine" / "meta.json").write_text(json.dumps(good))
    for name, text in [("broken", "{"), ("foreign", "{}"), ("binary", b"\xff".decode("latin-1"))]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "meta.json").write_text(text, encoding="latin-1")
    write_index(tmp_path)
    index, err = (tmp_path / "index.md").read_text(), capsys.readouterr().err
    assert "[fine](fine/report.md)" in index and "Does it work?" in index and "4/4" in index
    assert all(name not in index for name in ("broken", "foreign", "binary"))
    assert all(f"warning: the index leaves out {name}" in err for name in ("broken", "foreign", "binary")), err


def test_a_study_whose_output_is_closed_stops_saying_so(tiny_study, tmp_path, data_dir):
    """`suite study ... | head -1`: the reader's end closes, the study stops with one line that says so (it blamed an
    unreachable tracking server), and the next call finishes what is left."""
    store = f"sqlite:///{tmp_path}/mlflow.db"
    command = [sys.executable, "-m", "suite", "study", "tiny", "--smoke", "--studies-dir", str(tiny_study.parent),
               "--tracking-uri", store, "--reports-dir", str(tmp_path / "reports"), "--data-dir", str(data_dir)]
    reader = os.pipe()
    os.close(reader[0])  # a reader that has gone before the first line
    with os.fdopen(reader[1], "wb") as closed:
        out = subprocess.run(command, stdout=closed, stderr=subprocess.PIPE, text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "stopped: its output was closed; finished runs are kept" in out.stderr and "tracking server" not in out.stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    import re

    trained, done = map(int, re.search(r"tiny: (\d+) trained, (\d+) already done", again.stdout).groups())
    assert again.returncode == 0 and trained >= 1 and trained + done == 4, again.stdout + again.stderr
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="tags.`suite.kind` = 'run'")
    assert (runs["status"] == "FINISHED").sum() == 4 and "RUNNING" not in set(runs["status"])
    for closed in (["schema"], ["list", "--studies-dir", str(tiny_study.parent)]):  # reading commands: silent, no traceback
        out = subprocess.run(f"{sys.executable} -m suite {' '.join(closed)} >&-", shell=True, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stderr == "", out.stderr
    # a full disk under a reading command: no word of runs kept or resuming
    out = subprocess.run(f"{sys.executable} -m suite schema > /dev/full", shell=True, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr == "error: the disk is full (No space left on device); run it again once that is mended\n"


def test_the_ui_says_why_it_cannot_listen_in_one_line(tmp_path):
    """`suite ui` on a port in use, an unknown host and an address of another machine: one line each, saying which."""
    import socket

    from suite import tracking

    store = f"sqlite:///{tmp_path}/mlflow.db"
    tracking.connect(store)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with taken:
        for host, says in [("127.0.0.1", "the port is in use"), ("999.1.1.1", "not a host name or address this machine knows"),
                           ("192.0.2.1", "192.0.2.1 is not an address of this machine")]:  # 192.0.2.0/24: TEST-NET-1
            out = subprocess.run([sys.executable, "-m", "suite", "ui", "--host", host, "--port", str(port), "--tracking-uri", store],
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 1 and out.stderr.count("\n") == 1 and says in out.stderr, out.stderr
    for port, says in [("abc", "SUITE_UI_PORT=abc is not a port number (1-65535)"), ("70000", "SUITE_UI_PORT takes 1-65535, not 70000")]:
        out = subprocess.run([sys.executable, "-m", "suite", "ui", "--tracking-uri", store], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "SUITE_UI_PORT": port})  # (it blamed an option no one gave)
        assert out.returncode == 2 and out.stderr == f"error: {says}\n", out.stderr


def test_more_threads_than_cores_are_refused_only_where_something_would_train(tiny_study, tmp_path, data_dir, monkeypatch, capsys):
    """Runs computed with more threads elsewhere (here: this machine said to have more cores while they trained) can be
    reported by `suite study` where nothing is left to train; anything to train is refused in one line."""
    from suite.execute import cores

    os.environ["SUITE_DATA_DIR"] = str(data_dir)
    store, threads = f"sqlite:///{tmp_path}/mlflow.db", cores() + 1
    args = ("study", "tiny", "--smoke", "--threads", str(threads))
    with monkeypatch.context() as bigger:
        bigger.setattr("suite.execute.cores", lambda: threads)
        assert cli(*args, study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    capsys.readouterr()
    assert cli(*args, study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0  # every run is there: the report
    assert "0 trained" in capsys.readouterr().out
    assert cli(*args, "--force", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 2
    assert f"--threads {threads} is more than this machine's {cores()} cores" in capsys.readouterr().err


def test_a_report_rebuilt_from_runs_computed_another_way_says_so_in_one_line(tmp_path, capsys):
    """`--from-runs` reads the runs computed the way the call asks for: the committed regularization runs took 1 thread."""
    import shutil

    shutil.copytree(ROOT / "reports" / "regularization", tmp_path / "reports" / "regularization")
    args = ["report", "regularization", "--from-runs", "--studies-dir", str(ROOT / "studies"), "--reports-dir", str(tmp_path / "reports")]
    assert main([*args, "--threads", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none of the 10 runs in" in err and "computed on cpu with 2 threads" in err
    # runs computed on a GPU are read on any machine (reading needs no CUDA here: it refused "this machine has no CUDA")
    assert main([*args, "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "computed on cuda with 1 thread, packed" in err
    assert main(args) == 0  # the way they were computed: the report is rebuilt
    if not torch.cuda.is_available():  # training them so needs one: refused before any store is made, pointing at report
        store = tmp_path / "m.db"
        assert main(["study", "regularization", "--device", "cuda", *args[3:5], "--tracking-uri", f"sqlite:///{store}"]) == 2
        assert capsys.readouterr().err == ("error: --device cuda, but this machine has no CUDA device (a report of runs trained "
                                           "on a GPU needs none: `suite report NAME --device cuda`)\n")
        assert not store.exists()


@pytest.mark.parametrize("table, column, value, says", [
    ("runs.csv", "test_acc", "abc", "runs.csv: column test_acc holds 'abc', not a number"),
    ("runs.csv", "start_time", "yesterday", "runs.csv: column start_time holds a value that is not a time"),
    ("curves.csv", "value", "xyz", "curves.csv: column value holds 'xyz', not a number"),
    ("runs.csv", "run_id", "", "runs.csv: column run_id has an empty cell (line 3)"),
    ("runs.csv", "epochs_trained", "", "runs.csv: column epochs_trained has an empty cell (line 3)"),
    ("runs.csv", "seed", "1.5", "runs.csv: column seed holds '1.5', not a whole number"),
    ("curves.csv", "metric", "", "curves.csv: column metric has an empty cell (line 3)"),
    ("runs.csv", "*", None, "runs.csv holds no rows"),  # its header alone
    ("curves.csv", "*", None, "curves.csv holds no rows"),
    ("runs.csv", None, None, "cannot read the runs of"),  # not UTF-8
])
def test_a_damaged_committed_table_is_one_line_and_the_report_stays(tmp_path, capsys, table, column, value, says):
    """A hand-edited or damaged runs.csv/curves.csv: one line naming the file and what is wrong (were tracebacks: an empty
    cell where a run's identity or a count goes, a table of its header alone)."""
    import shutil

    folder = tmp_path / "reports" / "regularization"
    shutil.copytree(ROOT / "reports" / "regularization", folder)
    if column is None:
        (folder / table).write_bytes(b"\xff\xfe" + (folder / table).read_bytes())
    elif column == "*":
        (folder / table).write_text((folder / table).read_text().splitlines()[0] + "\n")
    else:
        frame = pd.read_csv(folder / table, dtype=str)
        frame.loc[1, column] = value
        frame.to_csv(folder / table, index=False)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert main(["report", "regularization", "--from-runs", "--studies-dir", str(ROOT / "studies"), "--reports-dir", str(tmp_path / "reports")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_a_folder_where_the_report_writes_a_file_is_one_line_and_the_report_stays(tmp_path, capsys):
    """A folder named report.md (or any file the build writes) was found only halfway through publishing: some files
    replaced, the rest not, and a traceback."""
    import shutil

    folder = tmp_path / "reports" / "regularization"
    shutil.copytree(ROOT / "reports" / "regularization", folder)
    (folder / "report.md").unlink()
    (folder / "report.md").mkdir()
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert main(["report", "regularization", "--from-runs", "--studies-dir", str(ROOT / "studies"), "--reports-dir", str(tmp_path / "reports")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "report.md is a folder where the report writes a file" in err, err
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before and not list(folder.glob(".building*"))


def test_a_report_rebuilt_from_runs_keeps_what_runs_csv_cannot_redraw(tmp_path, capsys):
    """runs.csv holds no test predictions or step losses: --from-runs keeps per_class.csv and the figures drawn from them,
    and says so, instead of deleting them and telling the reader to retrain."""
    import shutil

    committed = ROOT / "reports" / "label_noise"
    shutil.copytree(committed, tmp_path / "reports" / "label_noise")
    assert main(["report", "label_noise", "--from-runs", "--studies-dir", str(ROOT / "studies"), "--reports-dir", str(tmp_path / "reports")]) == 0
    folder = tmp_path / "reports" / "label_noise"
    for name in ("per_class.csv", "confusion.png", "misclassified.png", "training_loss.png"):
        assert (folder / name).read_bytes() == (committed / name).read_bytes(), name
    report = (folder / "report.md").read_text()
    assert "![" in report and "training_loss.png" in report and "confusion.png" in report and "misclassified.png" in report
    assert "Kept as this report had them" in report and "retrains them" not in report
    assert not list(folder.glob(".building*"))
    # its rebuild command, and the error of a store without its runs, name the rebuild from its own tables too
    assert ("Rebuild this report: `make report STUDY=label_noise` (from a store that holds its runs; from these tables: "
            "`make report STUDY=label_noise ARGS=--from-runs`)") in report
    empty = store_at(tmp_path / "empty" / "mlflow.db")
    assert main(["report", "label_noise", "--studies-dir", str(ROOT / "studies"), "--reports-dir", str(tmp_path / "reports"),
                 "--tracking-uri", empty]) == 1
    assert capsys.readouterr().err.endswith("or rebuild the report from its own runs.csv: `make report STUDY=label_noise "
                                            "ARGS=--from-runs`\n")


def test_a_report_rebuilt_from_runs_shows_the_per_class_accuracies_it_keeps_as_they_were(tmp_path):
    """per_class.csv holds 6 significant digits: l2's class 4 (4460 of 4910, 90.84%) came back as 0.90835, 90.83%."""
    import shutil

    committed = ROOT / "reports" / "regularization"
    shutil.copytree(committed, tmp_path / "reports" / "regularization")
    assert main(["report", "regularization", "--from-runs", "--studies-dir", str(ROOT / "studies"), "--reports-dir", str(tmp_path / "reports")]) == 0
    table = lambda text: [line for line in text.splitlines() if line.startswith("| mnist |") and "class" not in line and "→" in line]  # noqa: E731
    rebuilt, before = table((tmp_path / "reports" / "regularization" / "report.md").read_text()), table((committed / "report.md").read_text())
    assert len(before) == 2 and "| 90.84% |" in before[1] and rebuilt == before


def test_a_regression_report_has_no_class_columns(tmp_path):
    """optimizers_quadratic's tables had a 'collapsed' column of zeros and a 'val acc' of n/a, and its methods spoke of classes."""
    import shutil

    for name, classes in (("optimizers_quadratic", False), ("regularization", True)):
        shutil.copytree(ROOT / "reports" / name, tmp_path / "reports" / name)
        assert main(["report", name, "--from-runs", "--studies-dir", str(ROOT / "studies"), "--reports-dir", str(tmp_path / "reports")]) == 0
        report = (tmp_path / "reports" / name / "report.md").read_text()
        headers = [line for line in report.splitlines() if line.startswith("| dataset | variant |")]
        assert len(headers) >= 2 and all(("| collapsed |" in h) == classes for h in headers if "| diverged |" in h), headers
        assert ("| val acc |" in report) == classes and ("*degenerate*" in report) == classes and ("degenerate" in report) == classes
    # a classification study whose metric is val_acc keeps them (its summary has no val_acc_mean: the metric's own columns)
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "optimizers.yaml").write_text((ROOT / "studies" / "optimizers.yaml").read_text().replace("\nmetric: test_acc\n", "\nmetric: val_acc\n"))
    shutil.copytree(ROOT / "reports" / "optimizers", tmp_path / "reports" / "optimizers")
    assert main(["report", "optimizers", "--from-runs", "--studies-dir", str(tmp_path / "studies"), "--reports-dir", str(tmp_path / "reports")]) == 0
    report = (tmp_path / "reports" / "optimizers" / "report.md").read_text()
    assert "| mean val_acc |" in report and "| collapsed |" in report and "*degenerate* when" in report and "| val acc |" not in report


def test_a_report_build_that_fails_midway_leaves_the_report_as_it_was(tmp_path, monkeypatch):
    """Every file is written beside the report first and moved in at the end: a failure (or Ctrl-C) halfway leaves the
    previous report whole, and the next build clears what the failed one left."""
    import shutil

    from suite import report

    committed = ROOT / "reports" / "regularization"
    shutil.copytree(committed, tmp_path / "reports" / "regularization")
    folder = tmp_path / "reports" / "regularization"
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "render_html", interrupted)
    args = ["report", "regularization", "--from-runs", "--studies-dir", str(ROOT / "studies"), "--reports-dir", str(tmp_path / "reports")]
    assert main(args) == 130
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert [p.name for p in folder.iterdir() if p.is_dir()] == ["search"]  # (what it had written is gone)
    monkeypatch.undo()

    # a second build while the first is writing (another driver, or `suite report` beside a study): both complete
    render, nested = report.render_html, []

    def with_another_build(*a, **kw):
        if not nested:
            nested.append(None)
            nested[0] = main(args)
        return render(*a, **kw)

    monkeypatch.setattr(report, "render_html", with_another_build)
    assert main(args) == 0 and nested == [0]
    assert [p.name for p in folder.iterdir() if p.is_dir()] == ["search"]  # (a search's folder stays)
    assert {p.name for p in folder.iterdir() if p.is_file()} == set(before)


def test_a_forced_retrain_that_fails_keeps_the_runs_it_was_to_replace(tiny_study, tmp_path, store, monkeypatch, capsys):
    """--force deletes a finished run only once its replacement has finished: with the data gone, every retrain fails
    and the store still holds the runs it had, which the report still shows."""
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    mlflow.set_tracking_uri(store)
    smoke = lambda: mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="tags.`suite.kind` = 'run'")  # noqa: E731
    done = smoke()
    monkeypatch.setenv("SUITE_DATA_DIR", str(tmp_path / "no-data"))
    capsys.readouterr()
    assert cli("study", "tiny", "--smoke", "--force", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 1
    assert "MNIST" in capsys.readouterr().err
    after = smoke()
    assert set(done["run_id"]) <= set(after[after["status"] == "FINISHED"]["run_id"])
    monkeypatch.undo()
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0  # nothing to train
    assert "0 trained, 4 already done" in capsys.readouterr().out


def test_a_run_key_finished_twice_is_reported_once_with_its_newer_run(tiny_study, tmp_path, store, monkeypatch):
    """A --force driver killed between its new runs' end and the old ones' deletion leaves each key finished twice:
    the report counts each key once, with its newer run."""
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    mlflow.set_tracking_uri(store)
    smoke = lambda: mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="tags.`suite.kind` = 'run'")  # noqa: E731
    old = smoke()
    monkeypatch.setattr("suite.tracking.delete_runs", lambda client, run_ids: None)  # what the killed driver did not do
    assert cli("study", "tiny", "--smoke", "--force", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    assert len(smoke()) == 2 * len(old)
    table = pd.read_csv(tmp_path / "reports" / "smoke" / "tiny" / "runs.csv", dtype={"run_id": str})
    assert len(table) == len(old) and set(table["run_id"]).isdisjoint(old["run_id"])
    # push sends the same one run per key: the newer
    newer = smoke().set_index("run_id").loc[table["run_id"]]
    team = f"sqlite:///{tmp_path / 'team.db'}"
    assert main(["push", "tiny", "--to", team, "--studies-dir", str(tiny_study.parent), "--tracking-uri", store]) == 0
    mlflow.set_tracking_uri(team)
    pushed = smoke()
    assert len(pushed) == len(old)
    assert sorted(zip(pushed["tags.suite.run_key"], pushed["start_time"])) == sorted(zip(newer["tags.suite.run_key"], newer["start_time"]))


@needs_mnist
def test_store_files_that_cannot_be_written_or_read_are_one_line_and_a_failed_report_keeps_its_summary(
        tiny_study, tmp_path, monkeypatch, capsys):
    """A file where the store's artifact folder belongs (or a folder made read-only): one line, not a traceback; a
    report that fails while it records its summary run keeps the old one (it was deleted first); damaged artifacts are
    one line for evaluate and a warning for a report."""
    import errno

    from suite import tracking

    (tmp_path / "mlruns").write_text("")  # (the store's artifacts go in mlruns/ beside it)
    store = f"sqlite:///{tmp_path}/m.db"
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1] == (f"error: Not a directory: {tmp_path}/mlruns/1; finished runs are "
                                                               "kept, run the same command again to resume")
    (tmp_path / "mlruns").unlink()
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    summaries = lambda: mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="tags.`suite.kind` = 'summary'")  # noqa: E731
    mlflow.set_tracking_uri(store)
    (old,) = summaries()["run_id"]

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", f"{tmp_path}/mlruns/1/x/artifacts")

    monkeypatch.setattr(tracking, "log_files", refused)
    capsys.readouterr()
    assert cli("report", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 1
    assert capsys.readouterr().err == (f"error: Permission denied: {tmp_path}/mlruns/1/x/artifacts; run it again once that is "
                                       "mended\n")
    assert list(summaries()["run_id"]) == [old] and list(summaries()["status"]) == ["FINISHED"]
    # a summary run committed while this report is written (its writer was killed while the tracking server made it, so
    # it started earlier) goes with the old one: one summary is left, this report's
    monkeypatch.undo()
    log_files = tracking.log_files

    def twin_arrives(client, run_id, *args, **kwargs):
        mine = client.get_run(run_id).info
        client.create_run(mine.experiment_id, start_time=mine.start_time - 1000, tags={"suite.kind": "summary", "suite.smoke": "True"})
        return log_files(client, run_id, *args, **kwargs)

    monkeypatch.setattr(tracking, "log_files", twin_arrives)
    assert cli("report", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    (new,) = summaries()["run_id"]
    assert new != old and list(summaries()["status"]) == ["FINISHED"]
    # damaged artifacts: evaluate says which file in one line; a report leaves out the errors it cannot read, with a warning
    monkeypatch.undo()
    runs = mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="tags.`suite.kind` = 'run'").sort_values("tags.suite.run_key")
    first, second = (Path(uri.removeprefix("file://")) for uri in runs["artifact_uri"][:2])
    (first / "weights.pt").write_bytes((first / "weights.pt").read_bytes()[:1000])
    assert main(["evaluate", runs["run_id"].iloc[0], "--tracking-uri", store]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: run {runs['run_id'].iloc[0]}: its weights.pt cannot be read ("), err
    (second / "test_errors.json").write_text("{bad")
    assert cli("report", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    err = capsys.readouterr().err
    assert (f"warning: run {runs['run_id'].iloc[1]}: its test_errors.json and misclassified.npz cannot be read (JSONDecodeError: "
            in err and "the report leaves its test errors out" in err and "Traceback" not in err)
    # the store's artifacts gone (mlruns/ moved): the report says so (it blamed runs recorded before predictions were
    # kept), and push copies none of those runs (their copies, without weights or config, could never be mended)
    (tmp_path / "mlruns").rename(tmp_path / "moved")
    assert cli("report", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    assert "No test predictions to show. 4 of 4 runs have no artifacts in the store at all" in (tmp_path / "reports/smoke/tiny/report.md").read_text()
    capsys.readouterr()
    team = f"sqlite:///{tmp_path}/team.db"
    assert main(["push", "tiny", "--to", team, "--studies-dir", str(tiny_study.parent), "--tracking-uri", store]) == 1
    assert capsys.readouterr().err.startswith("error: 4 runs were not copied (first: ")
    mlflow.set_tracking_uri(team)
    assert mlflow.search_runs(experiment_names=["tiny/smoke"]).empty


def test_smoke_links_no_store_it_deletes_and_says_where_its_runs_went(tiny_study, tmp_path, store, data_dir, capsys, monkeypatch):
    """`suite smoke` printed a `runs:` link per study into its throw-away store (gone when it ended; `make ui` then
    showed other studies under those experiment ids); a study into another store named `make ui`, which serves ./mlflow.db."""
    monkeypatch.setenv("SUITE_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # (the default store: ./mlflow.db; earlier tests may set it)
    monkeypatch.chdir(tmp_path)
    reports = tmp_path / "reports"
    assert main(["smoke", "--studies-dir", str(tiny_study.parent), "--reports-dir", str(reports)]) == 0
    out = capsys.readouterr().out
    assert "runs: " not in out and (reports / "smoke" / "tiny" / "report.md").exists()
    assert "Rebuild this report: its runs were in a throw-away store (`make smoke`), deleted when it ended: `make study " \
           "STUDY=" in (reports / "smoke" / "tiny" / "report.md").read_text()  # (not `make report`: no store holds them)
    assert out.splitlines()[-1] == (f"smoke: 1 study, 4 runs trained in a throw-away store, now deleted (--tracking-uri keeps "
                                    f"them); reports in {reports / 'smoke'}/")
    # a study that fails is one line, and the studies after it still run (the first failure ended the whole smoke)
    (tiny_study.parent / "broken.yaml").write_text(tiny_study.read_text().replace("name: tiny", "name: broken")
                                                   .replace("seeds: 2\nmetric", "seedz: 2\nmetric"))
    assert main(["smoke", "--studies-dir", str(tiny_study.parent), "--reports-dir", str(reports)]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("error: broken: ") and "seedz: unknown key 'seedz'" in err and err.count("\n") == 1, err
    assert out.splitlines()[-1].startswith("smoke: 2 studies, 4 runs trained in a throw-away store") and out.endswith(
        "; 1 failed: broken (errors above)\n")
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=store) == 0
    (link,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("runs: ")]
    assert link.endswith("(after `make ui`)"), link  # (the store is ./mlflow.db here)
    elsewhere = store_at(tmp_path / "elsewhere" / "mlflow.db")
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=elsewhere) == 0
    (link,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("runs: ")]
    assert link.endswith(f"(after `suite ui --tracking-uri {elsewhere}`)"), link
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")  # no store (a folder); --tracking-uri names one: a study done is 0
    assert cli("study", "tiny", "--smoke", study_dir=tiny_study.parent, tmp_path=tmp_path, store=elsewhere) == 0
    assert f"(after `suite ui --tracking-uri {elsewhere}`)" in capsys.readouterr().out
