"""Run a study through the executor: expand it, skip what the store holds, train the rest.

    suite study regularization [--smoke] [--force] [--executor local --workers 2 --threads 1]

A run whose key already FINISHED in the study's MLflow experiment is skipped; a run left
RUNNING, KILLED or FAILED by an earlier invocation is deleted and trained again, so the store
never holds two live runs with one key. Ctrl-C (or SIGTERM) stops the workers, marks the runs
in flight KILLED and keeps everything finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from .. import tracking
from ..errors import SuiteError
from ..study import RunSpec, Study, commands, expand
from . import Settings, backend, execution
from .recorder import Recorder
from .worker import DIVERGED, FAILED, Task


@dataclass
class Outcome:
    total: int
    skipped: int
    trained: int = 0
    diverged: int = 0
    failed: list[str] = field(default_factory=list)  # "name: error line" per failed run


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


def run_study(study: Study, *, smoke: bool, uri: str, data_dir: Path, force: bool = False, storage: str | None = None,
              settings: Settings = Settings(), keep_weights: bool = True) -> Outcome:
    """Train every run of the study not yet FINISHED in the store (with a `tune` block: tune first).

    `keep_weights` logs each run's tested weights as its artifact `weights.pt` (`suite evaluate` reloads them).
    """
    if study.tune is not None:  # each variant gets the same tuning budget; cached in the Optuna store
        from .. import tune

        study = tune.tuned_study(study, smoke, tune.storage_url(storage),
                                 run={"uri": uri, "data_dir": data_dir, "settings": settings})
    specs = expand(study, smoke, execution(settings))
    with tracking.store_lock(uri):
        client = tracking.connect(uri)
        exp_id = tracking.experiment_id(client, tracking.experiment_name(study.name, smoke), description=describe(study, smoke),
                                        metric=study.metric, columns=study.scientific())
        todo, stale = partition(specs, tracking.search(client, exp_id, "run"), force)
        tracking.delete_runs(client, stale)
        recorder = Recorder(client, exp_id, {"suite.kind": "run", "suite.study": study.name, "suite.smoke": smoke,
                                             "suite.study_sha256": study.file_sha256, "mlflow.source.name": source_name(study)})
        outcome = Outcome(len(specs), len(specs) - len(todo))
        pending = iter(enumerate(todo))
        bar = tqdm(total=len(specs), initial=outcome.skipped, desc=study.name, unit="run", disable=None, dynamic_ncols=True)
        fatal: list[str] = []

        def next_task() -> Task | None:
            item = next(pending, None)
            if item is None or fatal:
                return None
            i, spec = item
            name = spec.run_name if len(study.datasets) == 1 else f"{spec.dataset}/{spec.run_name}"
            task = Task(i, name, spec.config, spec.seed, str(Path(data_dir).resolve()), keep_weights=keep_weights)
            recorder.start(task, {"suite.variant": spec.variant, "suite.seed": spec.seed, "suite.dataset": spec.dataset,
                                  "suite.run_key": spec.run_key, tracking.NOTE: _note(study, spec, smoke)})
            _progress(bar, outcome, len(recorder.run_ids))
            return task

        def handle(task: Task, kind: str, payload):
            if kind != "done":
                recorder.event(task, kind, payload)
                return False  # an ask: studies never stop a run early
            recorder.finish(task, payload)
            outcome.trained += payload.status != FAILED
            outcome.diverged += payload.status == DIVERGED
            if payload.status == FAILED:
                outcome.failed.append(f"{task.name}: {payload.reason}")
                if payload.fatal:
                    fatal.append(payload.reason)
            bar.update()
            _progress(bar, outcome, len(recorder.run_ids))
            tqdm.write(_one_line(task.name, study.metric, payload))

        with bar:
            try:
                backend(settings, study.datasets, len(todo)).run(next_task, handle)
            except BaseException:
                recorder.abandon()
                raise
    if fatal:
        raise SuiteError(fatal[0])
    return outcome


def describe(study: Study, smoke: bool) -> str:
    """The experiment's description in the UI: the question, and how its runs were made."""
    return (f"**{study.question}**" + (" (smoke: the seconds-long version)" if smoke else "") + "\n\n"
            + (f"{study.description.strip()}\n\n" if study.description else "")
            + f"Study file `{source_name(study)}`; metric `{study.metric}`. Recreate: `{commands(study, smoke)[0]}`.")


def source_name(study: Study) -> str:
    """The study file, relative to the working directory where it lies below it."""
    path = Path(study.path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _note(study: Study, spec: RunSpec, smoke: bool) -> str:
    return (f"Variant `{spec.variant}`, seed {spec.seed}, dataset `{spec.dataset}` of study **{study.name}**"
            f"{' (smoke)' if smoke else ''}: {study.question}\n\nRun key `{spec.run_key}`; "
            f"recreate with `{commands(study, smoke)[0]}`.")


def _progress(bar, outcome: Outcome, running: int) -> None:
    bar.set_postfix_str(f"running {running}, failed {len(outcome.failed)}, diverged {outcome.diverged}", refresh=False)


def _one_line(name: str, metric: str, record) -> str:
    value = record.final.get(metric)
    if record.status == FAILED:
        return f"  {name:<28} FAILED ({record.reason})"
    shown = f"{metric}={value:.4f}" if value is not None else ""
    status = f"DIVERGED ({record.reason})" if record.status == DIVERGED else shown
    return f"  {name:<28} {status}  ({record.final['train_seconds']:.1f} s, {_epochs(record.final['epochs_trained'])}, pid {record.where.get('pid')})"


def _epochs(n) -> str:
    return f"{int(n)} epoch" + ("" if int(n) == 1 else "s")
