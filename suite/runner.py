"""Run a study: expand it, skip what the store already holds, train and log the rest.

    suite study regularization [--smoke] [--force]

A run whose key already FINISHED in the study's MLflow experiment is skipped; a run left
RUNNING or KILLED by an interrupted invocation is deleted and trained again, so the store
never holds two live runs with one key. Ctrl-C marks the current run KILLED and stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from . import provenance, tracking
from .config import flatten
from .errors import SuiteError
from .study import RunSpec, Study, expand


@dataclass
class Outcome:
    total: int
    skipped: int
    trained: int
    diverged: int


def partition(specs: list[RunSpec], existing: list, force: bool) -> tuple[list[RunSpec], list[str]]:
    """(specs still to train, MLflow run ids to delete first)."""
    finished = {r.data.tags.get("suite.run_key") for r in existing if r.info.status == tracking.FINISHED}
    keys = {s.run_key for s in specs}
    if force:
        return specs, [r.info.run_id for r in existing if r.data.tags.get("suite.run_key") in keys]
    todo = [s for s in specs if s.run_key not in finished]
    todo_keys = {s.run_key for s in todo}
    stale = [r.info.run_id for r in existing if r.data.tags.get("suite.run_key") in todo_keys]
    return todo, stale


def run_study(study: Study, *, smoke: bool, uri: str, data_dir: Path, force: bool = False, storage: str | None = None) -> Outcome:
    """Train every run of the study not yet FINISHED in the store (with a `tune` block: tune first)."""
    import torch  # noqa: F401  (imported here so that `suite list` / `validate` stay fast)

    from .data import fingerprint, load_splits
    from .train import resolve_device

    if study.tune is not None:  # each variant gets the same tuning budget; cached in the Optuna store
        from . import tune

        study = tune.tuned_study(study, smoke, tune.storage_url(storage), run={"uri": uri, "data_dir": data_dir})
    specs = expand(study, smoke)
    with tracking.store_lock(uri):
        client = tracking.connect(uri)
        exp_id = tracking.experiment_id(client, study.name)
        todo, stale = partition(specs, tracking.search(client, exp_id, "run"), force)
        tracking.delete_runs(client, stale)
        common = {
            "suite.kind": "run", "suite.study": study.name, "suite.smoke": smoke,
            "suite.git_commit": provenance.git_commit(), "suite.git_dirty": provenance.git_dirty(),
            "suite.study_sha256": study.file_sha256, "suite.command": provenance.command_line(),
        }
        outcome = Outcome(len(specs), len(specs) - len(todo), 0, 0)
        bar = tqdm(total=len(specs), initial=outcome.skipped, desc=study.name, unit="run", disable=None, dynamic_ncols=True)
        cached = (None, None)
        with bar:
            for spec in todo:
                device = resolve_device(spec.config.train.device)
                if cached[0] != (spec.config.data, device):
                    cached = ((spec.config.data, device), load_splits(spec.config.data, data_dir, device))
                name = spec.run_name if len(study.datasets) == 1 else f"{spec.dataset}/{spec.run_name}"
                result = _train_and_log(client, exp_id, spec, name, cached[1], device, common,
                                        fingerprint(spec.dataset, data_dir))
                outcome.trained += 1
                outcome.diverged += result.diverged
                bar.update()
                tqdm.write(_one_line(name, study.metric, result), file=None)
    return outcome


def _train_and_log(client, exp_id, spec: RunSpec, name: str, data, device, common: dict, fingerprint: str):
    from .train import train_run

    tags = {**common, "suite.variant": spec.variant, "suite.seed": spec.seed, "suite.dataset": spec.dataset,
            "suite.run_key": spec.run_key, "suite.device": provenance.device_description(device),
            "suite.data_fingerprint": fingerprint}
    params = {**flatten(spec.config.canonical()), "seed": spec.seed}
    run_id = tracking.start_run(client, exp_id, name, tags, params, {"config": spec.config.canonical(), "seed": spec.seed})
    epochs = tqdm(total=spec.config.train.epochs, desc=name, unit="epoch", leave=False, disable=None, dynamic_ncols=True)

    def on_epoch(epoch: int, metrics: dict) -> None:
        tracking.log_metrics(client, run_id, metrics, step=epoch)
        epochs.update()

    try:
        with epochs:
            result = train_run(spec.config, spec.seed, data, device, on_epoch)
    except KeyboardInterrupt:
        tracking.end_run(client, run_id, "KILLED")
        raise
    except Exception as err:
        tracking.end_run(client, run_id, "FAILED", {"suite.error": str(err)[:500]})
        raise SuiteError(f"run {name} failed: {err}") from err
    tracking.log_metrics(client, run_id, result.final, step=len(result.history))
    tracking.end_run(client, run_id, tags={"suite.diverged": result.diverged, "suite.diverged_reason": result.reason})
    return result


def _one_line(name: str, metric: str, result) -> str:
    value = result.final.get(metric)
    shown = f"{metric}={value:.4f}" if value is not None else ""
    status = f"DIVERGED ({result.reason})" if result.diverged else shown
    return f"  {name:<28} {status}  ({result.final['train_seconds']:.1f} s, {result.final['epochs_trained']} epochs)"
