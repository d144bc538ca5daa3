"""MLflow, the single source of truth: every run, its params, per-epoch metrics and artifacts.

The store is `--tracking-uri`, else $MLFLOW_TRACKING_URI, else MLflow's embedded
`sqlite:///mlflow.db` in the current directory (browse it with `make ui`). One experiment
per study, named after it; one MLflow run per run spec, found again by its `suite.run_key`
tag. Only this module imports mlflow, and it talks to the store through an explicit
`MlflowClient` (no global active run).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import SuiteError

DEFAULT_URI = "sqlite:///mlflow.db"
FINISHED = "FINISHED"

def tracking_uri(cli_value: str | None = None) -> str:
    return cli_value or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextmanager
def store_lock(uri: str):
    """Hold an exclusive lock beside a sqlite store: one writing process at a time."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SuiteError(f"another suite process is writing to {db}; wait for it to finish or pass another --tracking-uri") from None
        yield


def connect(uri: str):
    """An MlflowClient on the store (created, with its schema, on first use)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    for noisy in ("alembic", "mlflow"):  # after mlflow's import, which sets its own levels
        logging.getLogger(noisy).setLevel(logging.WARNING)
    mlflow.set_tracking_uri(uri)
    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as err:  # a bad URI or an unreachable server
        raise SuiteError(f"cannot open the MLflow store {uri}: {str(err).splitlines()[0][:200]}") from None


def experiment_id(client, name: str, create: bool = True) -> str | None:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    return client.create_experiment(name) if create else None


def search(client, exp_id: str, kind: str = "run", status: str | None = None) -> list:
    """All live runs of one kind (`run`, `summary`, `trial`, `search`) in an experiment."""
    query = f"tags.`suite.kind` = '{kind}'" + (f" and attributes.status = '{status}'" if status else "")
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], filter_string=query, max_results=5000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def start_run(client, exp_id: str, name: str, tags: dict, params: dict, config: dict) -> str:
    """A RUNNING MLflow run with its tags, flattened params and the resolved config as an artifact."""
    from mlflow.entities import Param

    run = client.create_run(exp_id, run_name=name, tags={k: str(v) for k, v in tags.items()})
    run_id = run.info.run_id
    items = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[i:i + 100])
    client.log_dict(run_id, config, "resolved_config.json")
    return run_id


def log_metric_items(client, run_id: str, items) -> None:
    """(name, value, step) triples, in batches of MLflow's limit of 1,000 metrics."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for k, v, step in items]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])


def set_tags(client, run_id: str, tags: dict) -> None:
    from mlflow.entities import RunTag

    if tags:
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def end_run(client, run_id: str, status: str = FINISHED, tags: dict | None = None) -> None:
    set_tags(client, run_id, tags or {})
    client.set_terminated(run_id, status=status)


def delete_runs(client, run_ids) -> None:
    for run_id in run_ids:
        client.delete_run(run_id)


def histories(client, run_ids, keys) -> list[tuple[str, str, int, float]]:
    """(run_id, metric, step, value) for every logged value of `keys`."""
    rows = []
    for run_id in run_ids:
        for key in keys:
            rows.extend((run_id, key, m.step, m.value) for m in client.get_metric_history(run_id, key))
    return rows


def find_run(client, run_id_or_key: str):
    """A run by its MLflow run id, else the FINISHED run whose `suite.run_key` it is."""
    try:
        return client.get_run(run_id_or_key)
    except Exception:  # not a run id of this store
        pass
    query = f"tags.`suite.run_key` = '{run_id_or_key}' and attributes.status = '{FINISHED}'"
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, filter_string=query, max_results=1) if ids else []
    if not found:
        raise SuiteError(f"no run with id or run key '{run_id_or_key}' in this store; `make ui` lists them")
    return found[0]


def download(client, run_id: str, name: str, folder: Path) -> Path:
    """One artifact of a run, into `folder`."""
    try:
        return Path(client.download_artifacts(run_id, name, str(folder)))
    except Exception:
        raise SuiteError(f"run {run_id} has no artifact {name} (runs recorded with --keep-weights none, or before weights were kept, have none)") from None


def log_files(client, run_id: str, paths, folder: str | None = None) -> None:
    for path in paths:
        client.log_artifact(run_id, str(path), folder)


def log_text(client, run_id: str, text: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        client.log_artifact(run_id, str(path))
