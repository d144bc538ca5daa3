"""Hyperparameter search on tiny real data into temporary sqlite Optuna and MLflow stores."""

import os
import sys

import mlflow
import optuna
import pytest

from suite.execute import Settings, execution
from suite.spec.study import load_study
from suite.provenance import redact
from suite.tracking import storage_url
from suite.tune import counted, placed, run_search, search_target

from conftest import TINY_STUDY, needs_mnist

pytestmark = [needs_mnist, pytest.mark.slow]

SEARCH = """
search:
  objective: val_acc
  space:
    optimizer.lr: {type: float, low: 1.0e-5, high: 1.0, log: true}
    train.batch_size: {type: categorical, choices: [25, 50]}
  trials: 8
  sampler: random
  pruner: median
  seed: 3
"""


@pytest.fixture
def searched(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_STUDY.replace("epochs: 2", "epochs: 3") + SEARCH)
    return load_study(str(path))


def children(store: str):
    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`suite.kind` = 'trial'")


def test_search_records_trials_in_optuna_and_mlflow_and_continues(searched, tmp_path, store, data_dir):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    target = search_target(searched, smoke=False)
    first = run_search(target, uri=store, storage=storage, data_dir=data_dir, trials=3)
    assert counted(first.trials) == 3 and len(children(store)) == 3
    # a rerun continues the same search up to the new total, redoing nothing
    search = run_search(target, uri=store, storage=storage, data_dir=data_dir)
    trials = search.trials
    assert [t.number for t in trials] == list(range(8)) and counted(trials) == 8
    runs = children(store)
    assert len(runs) == 8 and runs["tags.suite.trial"].nunique() == 8
    # the rerun draws new points: the seeded sampler does not replay the first run's draws
    assert len({(t.params["optimizer.lr"], t.params["train.batch_size"]) for t in trials}) == 8
    states = {t.number: t.state.name for t in trials}
    assert "PRUNED" in states.values(), states  # seeded random sampler over a wide lr range: some trials fall below the median
    # a trial is pruned only before its last epoch (after it there is nothing left to save)
    assert all(len(t.intermediate_values) < 3 for t in trials if t.state.name == "PRUNED")
    assert all(len(t.intermediate_values) == 3 for t in trials if t.state.name == "COMPLETE")
    for t in trials:
        row = runs[runs["tags.suite.trial"] == str(t.number)].iloc[0]
        assert row["tags.suite.trial_state"] == {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED", "FAIL": "FAIL"}[t.state.name]
        assert row["run_id"] == t.user_attrs["mlflow_run_id"]
        assert float(row["params.sampled.optimizer.lr"]) == pytest.approx(t.params["optimizer.lr"])
    # trials ran in the executor's worker processes, two at a time by default on two cores
    assert os.getpid() not in set(runs["tags.suite.pid"].astype(int)) and runs["tags.suite.pid"].nunique() >= 2
    parent = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`suite.kind` = 'search'")
    assert len(parent) == 1 and set(runs["tags.mlflow.parentRunId"]) == {parent["run_id"][0]}
    # the parent run says how the search went; no budget param (a rerun raised it to 8)
    row = parent.iloc[0]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert row["metrics.trials"] == 8 and row["metrics.trials_complete"] == len(complete)
    assert row["metrics.trials_pruned"] == sum(t.state.name == "PRUNED" for t in trials)
    assert row["metrics.best_val_acc"] == search.best_value and row["metrics.best_trial"] == search.best_trial.number
    assert float(row["metrics.best.optimizer.lr"]) == search.best_params["optimizer.lr"]
    assert row["tags.best.train.batch_size"] == str(search.best_params["train.batch_size"])
    assert "params.budget" not in parent.columns
    # selection never sees the test split: trials log no test metric
    assert not [c for c in runs.columns if c.startswith("metrics.test_")]
    history = mlflow.tracking.MlflowClient(store).get_metric_history(trials[0].user_attrs["mlflow_run_id"], "val_acc")
    assert len(history) >= 1
    assert max(v for t in trials if t.state.name == "COMPLETE" for v in [t.value]) == search.best_value


def test_an_interrupted_trial_does_not_count_and_is_not_redone(searched, tmp_path, store, data_dir):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    target = search_target(searched, smoke=True)
    run_search(target, uri=store, storage=storage, data_dir=data_dir, trials=2)
    # what a kill leaves: a trial RUNNING in Optuna, its MLflow run RUNNING too
    stale = optuna.load_study(study_name=target.name, storage=storage).ask()
    client = mlflow.tracking.MlflowClient(store)
    run = client.create_run(client.get_experiment_by_name("tiny/smoke").experiment_id, tags={"suite.kind": "trial"})
    stale.set_user_attr("mlflow_run_id", run.info.run_id)
    search = run_search(target, uri=store, storage=storage, data_dir=data_dir, trials=3)
    trials = search.trials
    assert counted(trials) == 3 and len(trials) == 4
    assert trials[2].state.name == "FAIL" and trials[2].user_attrs["fail_reason"] == "interrupted"
    assert client.get_run(run.info.run_id).info.status == "KILLED"


def test_a_parent_run_committed_after_its_driver_died_is_deleted_and_the_search_keeps_one(searched, tmp_path, store, data_dir):
    """A driver killed while the tracking server creates its search's parent run frees the search's lock at once; the
    server may commit that run after the next driver found none and made its own (CI saw two parents of one search)."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    target = search_target(searched, smoke=True)
    run_search(target, uri=store, storage=storage, data_dir=data_dir, trials=1)
    client = mlflow.tracking.MlflowClient(store)
    exp_id = client.get_experiment_by_name("tiny/smoke").experiment_id
    (parent,) = client.search_runs([exp_id], "tags.`suite.kind` = 'search'")

    def twin():  # what the dead driver's request leaves: the same tags, RUNNING, sent before the parent was made, no trials
        tags = {k: v for k, v in parent.data.tags.items() if k.startswith("suite.")}
        return client.create_run(exp_id, start_time=parent.info.start_time - 1000, tags=tags).info.run_id

    first = twin()
    search = run_search(target, uri=store, storage=storage, data_dir=data_dir, trials=2)
    assert search.user_attrs["suite.parent_run"] == parent.info.run_id  # the Optuna study names its parent
    parents = client.search_runs([exp_id], "tags.`suite.kind` = 'search'")
    assert [p.info.run_id for p in parents] == [parent.info.run_id] and parents[0].data.metrics["trials"] == 2
    assert client.get_run(first).info.lifecycle_stage == "deleted"
    trials = client.search_runs([exp_id], "tags.`suite.kind` = 'trial'")
    assert len(trials) == 2 and {t.data.tags["mlflow.parentRunId"] for t in trials} == {parent.info.run_id}
    # an Optuna study that names no parent (made before it did): the older twin loses to the parent that has trials
    second = twin()
    other = run_search(target, uri=store, storage=f"sqlite:///{tmp_path}/another.db", data_dir=data_dir, trials=1)
    assert other.user_attrs["suite.parent_run"] == parent.info.run_id
    assert [p.info.run_id for p in client.search_runs([exp_id], "tags.`suite.kind` = 'search'")] == [parent.info.run_id]
    assert client.get_run(second).info.lifecycle_stage == "deleted"


def test_a_search_whose_configuration_changed_is_kept_apart_and_the_earlier_trials_stay(searched, tmp_path, store, data_dir, capsys):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    here = execution(Settings())  # how run_search computes trials by default on this machine
    run_search(placed(search_target(searched, False, here), storage), uri=store, storage=storage, data_dir=data_dir, trials=1)
    # trials computed another way (2 threads, or packed or not) are another search; this call's way is this one
    assert not placed(search_target(searched, False, here), storage).apart
    assert placed(search_target(searched, False, here.model_copy(update={"threads": 2})), storage).apart
    assert placed(search_target(searched, False, here.model_copy(update={"packed": not here.packed})), storage).apart
    # the study file changes what its trials train (hidden 32 -> 16): the old trials must not answer for it
    path = tmp_path / "changed" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(searched.path.read_text().replace("hidden: [32]", "hidden: [16]"))
    changed = placed(search_target(load_study(str(path)), False, here), storage)
    assert changed.apart and changed.name == f"tiny@{changed.fingerprint[:8]}"
    capsys.readouterr()
    search = run_search(changed, uri=store, storage=storage, data_dir=data_dir, trials=1)
    assert f"kept apart as '{changed.name}'" in capsys.readouterr().err
    assert search.study_name == changed.name and counted(search.trials) == 1
    assert search.user_attrs["suite.fingerprint"] == changed.fingerprint
    earlier = optuna.load_study(study_name="tiny", storage=storage)
    assert counted(earlier.trials) == 1 and earlier.user_attrs["suite.fingerprint"] == search_target(searched, False, here).fingerprint
    # two parent runs, one per configuration, each trial under its own
    parents = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`suite.kind` = 'search'")
    assert set(parents["tags.suite.search"]) == {"tiny", changed.name}
    assert set(parents["tags.suite.search_fingerprint"]) == {earlier.user_attrs["suite.fingerprint"], changed.fingerprint}
    assert sorted(children(store)["tags.suite.search"]) == sorted(["tiny", changed.name])
    # back to the first configuration: its search continues where it was
    again = placed(search_target(searched, False, here), storage)
    assert not again.apart and again.name == "tiny"
    assert counted(run_search(again, uri=store, storage=storage, data_dir=data_dir, trials=2).trials) == 2


DIVERGING = """
name: tiny
question: q?
base:
  data: {train_size: 300, val_size: 200, test_size: 300}
  model: {name: mlp, hidden: [32]}
  optimizer: {name: sgd, lr: 0.1}
  train: {batch_size: 50, epochs: 2}
search:
  space:
    optimizer.lr: {type: float, low: 1.0e5, high: 1.0e7, log: true}
  sampler: random
"""


def test_a_diverging_trial_fails_with_its_reason_and_the_search_goes_on(tmp_path, store, data_dir):
    path = tmp_path / "tiny.yaml"
    path.write_text(DIVERGING)
    search = run_search(search_target(load_study(str(path)), False), uri=store, storage=f"sqlite:///{tmp_path}/o.db",
                        data_dir=data_dir, trials=2)
    assert [t.state.name for t in search.trials] == ["FAIL", "FAIL"]
    assert all("non-finite" in t.user_attrs["fail_reason"] for t in search.trials)
    assert set(children(store)["tags.suite.trial_state"]) == {"FAIL"}


def test_default_storage_is_optuna_db(monkeypatch):
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    assert storage_url() == "sqlite:///optuna.db"
    monkeypatch.setenv("OPTUNA_STORAGE", "postgresql://u@h/db")
    assert storage_url() == "postgresql://u@h/db"


TUNE = """
tune:
  objective: val_acc
  space:
    optimizer.lr: {type: float, low: 1.0e-3, high: 0.3, log: true}
  trials: 5
  sampler: tpe
  seed: 11
"""


def test_tuned_comparison_gives_every_variant_the_same_budget_and_is_cached(tiny_study, tmp_path, store, data_dir, capsys):
    from suite.cli import main

    tiny_study.write_text(tiny_study.read_text().replace("  test_size: 200\n", "  test_size: 200\n  trials: 3\n") + TUNE)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    args = ["--studies-dir", str(tiny_study.parent), "--tracking-uri", store, "--reports-dir", str(tmp_path / "reports"),
            "--storage", storage]
    assert main(["study", "tiny", "--smoke", "--data-dir", str(data_dir), *args]) == 0
    searches = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert set(searches) == {"tiny/none/smoke", "tiny/wd/smoke"}
    assert {s.n_trials for s in searches.values()} == {3}  # the smoke budget, equal for every variant
    loaded = {n: optuna.load_study(study_name=n, storage=storage) for n in searches}
    # the same sampler seed: TPE's first (random) proposals coincide across variants
    assert loaded["tiny/none/smoke"].trials[0].params == loaded["tiny/wd/smoke"].trials[0].params
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="tags.`suite.kind` = 'run'")
    assert set(runs["tags.suite.variant"]) == {"none", "wd", "none@tuned", "wd@tuned"}
    tuned_lr = runs[runs["tags.suite.variant"] == "wd@tuned"]["params.optimizer.lr"].astype(float).iloc[0]
    assert tuned_lr == pytest.approx(loaded["tiny/wd/smoke"].best_params["optimizer.lr"])
    parents = mlflow.search_runs(experiment_names=["tiny/smoke"], filter_string="tags.`suite.kind` = 'search'")
    assert len(parents) == 2 and set(parents["metrics.trials"]) == {3}
    client = mlflow.tracking.MlflowClient(store)
    for run_id in parents["run_id"]:  # each search's report is an artifact of its parent run
        assert {"report/report.md", "report/trials.csv"} <= {a.path for a in client.list_artifacts(run_id, "report")}
    # the parent runs hold the exact best values: the study's report takes its @tuned settings from MLflow, not Optuna
    best = parents.set_index("tags.suite.search")["tags.suite.best_params"].map(__import__("json").loads)
    assert best["tiny/wd/smoke"] == loaded["tiny/wd/smoke"].best_params
    folder = tmp_path / "reports" / "smoke" / "tiny"
    report = (folder / "report.md").read_text()
    assert "## Tuned settings" in report and "wd@tuned vs none@tuned" in report
    # one tuned-settings row per tuned variant, and the section sits before the provenance, not inside it
    assert "not tuned yet" not in report
    assert report.index("## Tuned settings") < report.index("## Provenance") < report.index("- Rebuild this report")
    search_report = (folder / "search" / "wd" / "mnist" / "report.md").read_text()
    # a tune block has no `search` to continue; what runs the missing trials is the smoke study's own command
    assert f"`make study STUDY={tiny_study} ARGS=--smoke` runs what is missing" in search_report and "make tune" not in search_report
    comparisons = __import__("pandas").read_csv(folder / "comparisons.csv")
    assert set(zip(comparisons["variant"], comparisons["baseline"])) == {("wd", "none"), ("wd@tuned", "none@tuned")}
    # a second invocation reuses the tuning and the runs
    capsys.readouterr()
    assert main(["study", "tiny", "--smoke", "--data-dir", str(data_dir), *args]) == 0
    assert "0 trained, 8 already done" in capsys.readouterr().out
    assert {s.n_trials for s in optuna.get_all_study_summaries(storage)} == {3}
    # --from-runs rebuilds the tuned report from its own runs.csv and search trials.csv, without either store
    tuned = report[report.index("## Tuned settings"):report.index("## Provenance")]
    assert main(["report", "tiny", "--smoke", "--from-runs", "--studies-dir", str(tiny_study.parent), "--tracking-uri",
                 f"sqlite:///{tmp_path}/empty.db", "--reports-dir", str(tmp_path / "reports")]) == 0
    rebuilt = (folder / "report.md").read_text()
    assert rebuilt[rebuilt.index("## Tuned settings"):rebuilt.index("## Provenance")] == tuned
    assert "Read from this report's own `runs.csv`" in rebuilt and "8 of 8 runs finished" in rebuilt
    again = __import__("pandas").read_csv(folder / "comparisons.csv")
    assert list(again["verdict"]) == list(comparisons["verdict"]) and list(again["variant"]) == list(comparisons["variant"])
    assert again["mean_diff"].to_numpy() == pytest.approx(comparisons["mean_diff"].to_numpy(), rel=1e-4)


def test_storage_passwords_never_reach_tags_or_reports():
    assert redact("postgresql://suite:s3cret@db.lab:5432/optuna") == "postgresql://suite:***@db.lab:5432/optuna"
    assert redact("sqlite:///optuna.db") == "sqlite:///optuna.db"
    assert redact("postgresql://suite@db.lab/optuna") == "postgresql://suite@db.lab/optuna"


def test_the_recorded_command_line_hides_storage_passwords(monkeypatch):
    from suite import provenance

    monkeypatch.setattr(sys, "argv", ["suite", "tune", "x", "--storage", "postgresql+psycopg://suite:s3cret@127.0.0.1:5433/optuna"])
    assert provenance.command_line() == "suite tune x --storage postgresql+psycopg://suite:***@127.0.0.1:5433/optuna"
