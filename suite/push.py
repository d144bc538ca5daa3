"""Move a study up: copy its finished runs from one MLflow store to another, idempotent by run key.

    suite push regularization --to http://lab-server:5001 [--tracking-uri sqlite:///mlflow.db]

Every FINISHED run of the study's experiments (`<study>` and `<study>/smoke`) whose run key the
target does not hold yet is recreated there with its name, tags, params, every metric's full
history, dataset inputs, start and end times, and artifacts (weights, errors, resolved config).
Run keys do not depend on the store, so the target's drivers and reports use the copies as
their own; a second push copies nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from tqdm import tqdm

from . import tracking
from .errors import OptionError, SuiteError


@dataclass
class Pushed:
    counts: dict = field(default_factory=dict)  # experiment (the study's, its smoke runs') -> [runs copied, already there]
    missing: list = field(default_factory=list)  # runs left in the source: their artifacts are gone

    @property
    def copied(self) -> int:
        return sum(copied for copied, _ in self.counts.values())

    @property
    def present(self) -> int:
        return sum(present for _, present in self.counts.values())


def push(study: str, source: str, target: str) -> Pushed:
    if not target.strip():
        raise OptionError("--to takes the target store's URI (http://HOST:PORT or sqlite:///PATH)")
    if tracking.same_store(source, target):
        raise OptionError("--to names the store the runs are read from; give another store")
    with _as_target():
        tracking.tracking_uri(target)  # a plain path: the advice to write sqlite:///PATH
    src = tracking.connect(source, create=False)
    found = _finished(src, study)
    if not any(runs for _, runs in found.values()):  # (before the target store is made)
        raise SuiteError(f"no finished runs of study '{study}' in {source}")
    with contextlib.ExitStack() as held:
        with _as_target():
            dst = tracking.connect(target)
            held.enter_context(tracking.store_lock(target))  # a sqlite target takes one writer at a time, as for a study
        return _push(found, src, dst)


@contextlib.contextmanager
def _as_target():
    """The target store's errors, naming the option it came from."""
    try:
        yield
    except SuiteError as err:
        raise type(err)(str(err).replace("pass another --tracking-uri", "pass another --to")
                        .replace("--tracking-uri ", "--to ", 1)) from None


def _finished(src, study: str) -> dict:
    """experiment name -> (experiment, its finished runs, newest per key), for the study's full and smoke experiments."""
    found = {}
    for name in (study, tracking.experiment_name(study, True)):
        experiment = src.get_experiment_by_name(name)
        if experiment is not None:
            found[name] = experiment, tracking.newest_per_key(tracking.search(src, experiment.experiment_id, "run", tracking.FINISHED))
    return found


def _push(found: dict, src, dst) -> Pushed:
    outcome = Pushed()
    for name, (experiment, runs) in found.items():
        exp_id = tracking.experiment_id(dst, name)
        for key, value in experiment.tags.items():
            if not key.startswith("mlflow.") or key in (tracking.NOTE, tracking.VIEW_TAG):
                dst.set_experiment_tag(exp_id, key, value)
        there = tracking.search(dst, exp_id, "run")
        held = {r.data.tags.get("suite.run_key") for r in there if r.info.status == tracking.FINISHED}
        todo = [r for r in runs if r.data.tags.get("suite.run_key") not in held]
        # copies an interrupted push left unfinished (they carry their source run's id from the start): replaced
        sources = {r.info.run_id for r in runs}
        tracking.delete_runs(dst, [r.info.run_id for r in there if r.info.status != tracking.FINISHED
                                   and r.data.tags.get("suite.pushed_from") in sources])
        counts = outcome.counts[name] = [0, len(runs) - len(todo)]
        for run in tqdm(todo, desc=f"push {name}", unit="run", disable=None):
            if not src.list_artifacts(run.info.run_id):  # (every run logs its config): a copy could never be mended
                outcome.missing.append(run.info.run_name)
                continue
            tags = {**{k: v for k, v in run.data.tags.items() if k != "mlflow.runName"}, "suite.pushed_from": run.info.run_id}
            tracking.copy_run(src, dst, run, exp_id, tags)
            counts[0] += 1
    if outcome.missing:
        raise SuiteError(f"{len(outcome.missing)} runs were not copied (first: {outcome.missing[0]}): their artifacts are not in "
                         f"the source store (for a sqlite store: mlruns/ beside its file moved or deleted?); {outcome.copied} "
                         f"others were copied")
    return outcome
