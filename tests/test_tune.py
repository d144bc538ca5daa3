"""Hyperparameter search on tiny real data into temporary sqlite Optuna and MLflow stores."""

import mlflow
import optuna
import pytest

from suite.study import load_study
from suite.tune import counted, run_search, search_target, storage_url

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
    states = {t.number: t.state.name for t in trials}
    assert "PRUNED" in states.values(), states  # seeded random sampler over a wide lr range: some trials fall below the median
    for t in trials:
        row = runs[runs["tags.suite.trial"] == str(t.number)].iloc[0]
        assert row["tags.suite.trial_state"] == {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED", "FAIL": "FAIL"}[t.state.name]
        assert row["run_id"] == t.user_attrs["mlflow_run_id"]
        assert float(row["params.sampled.optimizer.lr"]) == pytest.approx(t.params["optimizer.lr"])
    parent = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`suite.kind` = 'search'")
    assert len(parent) == 1 and set(runs["tags.mlflow.parentRunId"]) == {parent["run_id"][0]}
    history = mlflow.tracking.MlflowClient(store).get_metric_history(trials[0].user_attrs["mlflow_run_id"], "val_acc")
    assert len(history) >= 1
    assert max(v for t in trials if t.state.name == "COMPLETE" for v in [t.value]) == search.best_value


def test_an_interrupted_trial_does_not_count_and_is_not_redone(searched, tmp_path, store, data_dir):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    target = search_target(searched, smoke=True)
    run_search(target, uri=store, storage=storage, data_dir=data_dir, trials=2)
    # what a kill leaves: a trial RUNNING in the store
    optuna.load_study(study_name=target.name, storage=storage).ask()
    search = run_search(target, uri=store, storage=storage, data_dir=data_dir, trials=3)
    trials = search.trials
    assert counted(trials) == 3 and len(trials) == 4
    assert trials[2].state.name == "FAIL" and trials[2].user_attrs["fail_reason"] == "interrupted"


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
