"""Run a study through the executor: expand it, skip what the store holds, train the rest.

    suite study regularization [--smoke] [--force] [--executor local --workers 2 --threads 1]

A run whose key already FINISHED in the study's MLflow experiment is skipped; a run left
RUNNING, KILLED or FAILED by an earlier invocation is deleted and trained again, so the store
never holds two live runs with one key. Each run is claimed first (`suite.execute.leases`): on a shared
store, several drivers split a study's runs and none deletes or retrains another's live run. Ctrl-C (or SIGTERM) stops the workers, marks the runs
in flight KILLED and keeps everything finished.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from .. import tracking
from ..errors import SuiteError
from ..spec.study import RunSpec, Study, commands, expand
from . import Settings, backend, check_threads, checks_cuda, cpu_cache_bytes, cuda_here, default_workers, execution, pack_size
from .backends import LocalPool, cuda_answer, spawn_early, stop_early
from .recorder import Recorder
from .worker import DIVERGED, FAILED, Pack, Record, Task


@dataclass
class Outcome:
    total: int
    skipped: int
    trained: int = 0
    diverged: int = 0
    failed: list[str] = field(default_factory=list)  # "name: error line" per failed run
    traced: int = 0  # failed runs that keep their traceback (artifact traceback.txt)
    lost: list[str] = field(default_factory=list)  # runs another driver took over while this one trained them
    reported_elsewhere: bool = False  # another driver wrote (or is writing) the report of these runs


def partition(specs: list[RunSpec], existing: list, force: bool) -> list[RunSpec]:
    """The specs still to train: those without a FINISHED run (with `force`: all)."""
    finished = {r.data.tags.get("suite.run_key") for r in existing if r.info.status == tracking.FINISHED}
    return list(specs) if force else [s for s in specs if s.run_key not in finished]


def run_study(study: Study, *, smoke: bool, uri: str, data_dir: Path, force: bool = False, storage: str | None = None,
              settings: Settings = Settings(), keep_weights: bool = True, report: Callable[[], None] | None = None) -> Outcome:
    """Train every run of the study not yet FINISHED in the store (with a `tune` block: tune first), then `report()`.

    Each run is claimed before it trains (`suite.execute.leases`): on a shared store several drivers split
    the runs, wait for each other's, take over the claims of drivers that died, and the one that
    ends with a new set of finished runs writes the report (`report()`, called once per set).
    `keep_weights` logs each run's tested weights as its artifact `weights.pt` (`suite evaluate` reloads them).
    """
    if study.tune is not None:  # each variant gets the same tuning budget; cached in the Optuna store
        from .. import tune

        study = tune.tuned_study(study, smoke, tracking.storage_url(storage),
                                 run={"uri": uri, "data_dir": data_dir, "settings": settings})
    # on a machine that may have a GPU the plan waits for torch's CUDA check: a first worker imports torch and answers
    # it while this process imports MLflow, which it needs next
    early = spawn_early(settings.threads) if settings.executor == "local" and study.tune is None and checks_cuda(settings) else []
    pool = None
    try:
        if early:
            importlib.import_module("mlflow")
            cuda_here(lambda: cuda_answer(early))
        specs = expand(study, smoke, execution(settings))
        since = time.time()
        pool = backend(settings, study.datasets, _units_at_most(specs, settings))
        if isinstance(pool, LocalPool) and specs:  # its workers import torch and load the data while this process opens the store
            pool.start(warm=Task(-1, "warm", specs[0].config, specs[0].seed, str(Path(data_dir).resolve()), plugins=study.plugins),
                       spawned=early)
            early = []
        return _run_study(study, specs, since, pool, smoke=smoke, uri=uri, data_dir=data_dir, force=force, storage=storage,
                          settings=settings, keep_weights=keep_weights, report=report)
    finally:
        stop_early(early)
        if isinstance(pool, LocalPool):
            pool.stop()


def _units_at_most(specs: list[RunSpec], settings: Settings) -> int:
    """How many tasks `units` can make of these runs at most, without asking the device how many members fit:
    a group on a GPU is one pack (or --pack-size's split), on a CPU up to one per run."""
    alone, groups = _grouped(list(enumerate(specs)))
    return max(1, len(alone) + sum(len(g) if g[0][0][1].config.execution.device == "cpu" else math.ceil(len(g) / (settings.pack_size or len(g)))
                                   for g in groups))


def _run_study(study: Study, specs: list[RunSpec], since: float, pool, *, smoke: bool, uri: str, data_dir: Path, force: bool,
               storage: str | None, settings: Settings, keep_weights: bool, report: Callable[[], None] | None) -> Outcome:
    from . import leases as lease_store

    with lease_store.open_store(uri, tracking.storage_url(storage)) as (client, leases):
        exp_id = tracking.experiment_id(client, tracking.experiment_name(study.name, smoke), description=describe(study, smoke),
                                        metric=study.metric, columns=study.scientific())
        todo = {s.run_key for s in partition(specs, tracking.search(client, exp_id, "run"), force)}
        if not todo and isinstance(pool, LocalPool):  # every run is done: the warming workers would only slow the report
            pool.stop()
        if todo:
            check_threads(settings)
        outcome = Outcome(len(specs), len(specs) - len(todo))
        bar = tqdm(total=len(specs), initial=outcome.skipped, desc=study.name, unit="run", disable=None, dynamic_ncols=True)
        with bar:
            drive = _Drive(study, specs, leases, client, exp_id, outcome, bar, smoke=smoke, uri=uri, since=since, force=force,
                           data_dir=data_dir, keep_weights=keep_weights, fixed_pack_size=settings.pack_size)
            try:
                while not drive.fatal:
                    left = [(i, s) for i, s in enumerate(specs) if s.run_key in todo and s.run_key not in drive.ours]
                    if not left:
                        break
                    pending = iter(units(left, settings, study.datasets))
                    first = drive.next_task(pending)  # claimed before any worker starts
                    if first is not None:
                        queue = itertools.chain([first], iter(lambda: drive.next_task(pending), None))
                        if report is not None:  # its imports (pandas, scipy, matplotlib, seaborn: seconds) run while the workers train
                            threading.Thread(target=importlib.import_module, args=("suite.report.plots",), daemon=True).start()
                        pool.run(lambda: next(queue, None), unpacking(drive.handle))
                    elif not leases.alive(drive.lease(s) for _, s in left):
                        break  # nothing left that anyone holds: done by others (or failed here)
                    else:  # the rest is other drivers' runs: wait for them, or for the claims of dead ones to expire
                        bar.set_postfix_str(f"waiting for {len(left)} runs that other drivers hold", refresh=True)
                        time.sleep(min(5.0, leases.seconds / 4))
                    if not force:
                        todo = {s.run_key for s in partition(specs, tracking.search(client, exp_id, "run"), False)}
                        bar.n = len(specs) - len(todo)
                        bar.refresh()
            except BaseException:
                drive.abandon()
                raise
        if drive.fatal:
            raise SuiteError(drive.fatal[0])
        if report is not None:
            _report_once(study, specs, drive, report)
    return outcome


class _Drive:
    """One call's side of a study's runs while it trains them: claims (leases), MLflow runs, results, the progress bar."""

    def __init__(self, study: Study, specs: list[RunSpec], leases, client, exp_id: str, outcome: Outcome, bar, *, smoke: bool,
                 uri: str, since: float, force: bool, data_dir: Path, keep_weights: bool, fixed_pack_size: int | None):
        from ..provenance import redact

        self.study, self.specs, self.leases, self.client, self.exp_id = study, specs, leases, client, exp_id
        self.outcome, self.bar, self.smoke, self.since, self.force = outcome, bar, smoke, since, force
        self.data_dir, self.keep_weights, self.fixed_pack_size = str(Path(data_dir).resolve()), keep_weights, fixed_pack_size
        self.recorder = Recorder(client, exp_id, {"suite.kind": "run", "suite.study": study.name, "suite.smoke": smoke,
                                                  "suite.study_sha256": study.file_sha256, "mlflow.source.name": source_name(study)})
        self.where = f"{redact(uri)}#{exp_id}"  # leases name the store and experiment: one lease table may serve several
        self.fatal: list[str] = []  # the error of a failure that stops the study (not one run's)
        self.ours: set[str] = set()  # keys this call trained or saw fail: not tried again here
        self.tokens: dict[int, tuple[str, int]] = {}  # task id -> (run's lease, lease token)
        self.replaced: dict[str, list[str]] = {}  # a run's lease -> its finished runs that --force retrains: deleted once the new one is done
        self.width = max([28, *(len(self.name_of(spec)) for spec in specs)])  # result lines' first column: the longest name

    def lease(self, spec: RunSpec) -> str:
        return f"run/{self.where}/{spec.run_key}"

    def claim(self, spec: RunSpec) -> int | None:
        """The run's lease, with the key's stale runs deleted; None when another driver has it or it is done."""
        token = self.leases.claim(self.lease(spec), self.since if self.force else None)
        if token is None:
            return None
        runs = tracking.runs_with_key(self.client, self.exp_id, spec.run_key)
        finished = [r.info.run_id for r in runs if r.info.status == tracking.FINISHED]
        if not self.force and finished:
            self.leases.complete(self.lease(spec), token)  # finished by a driver killed before it said so
            self.ours.add(spec.run_key)
            return None
        self.replaced[self.lease(spec)] = finished  # (kept until their replacement finishes: a failed retrain loses nothing)
        tracking.delete_runs(self.client, [r.info.run_id for r in runs if r.info.run_id not in finished])  # left by a dead driver
        return token

    def name_of(self, spec: RunSpec) -> str:
        return spec.run_name if len(self.study.datasets) == 1 else f"{spec.dataset}/{spec.run_name}"

    def task_of(self, i: int, spec: RunSpec, pack: int = 1) -> Task:
        """The claimed run's task, its MLflow run started."""
        task = Task(i, self.name_of(spec), spec.config, spec.seed, self.data_dir, keep_weights=self.keep_weights, plugins=self.study.plugins)
        tags = {"suite.variant": spec.variant, "suite.seed": spec.seed, "suite.dataset": spec.dataset,
                "suite.run_key": spec.run_key, tracking.NOTE: _note(self.study, spec, self.smoke)}
        self.recorder.start(task, {**tags, "suite.pack_size": pack} if spec.config.execution.packed else tags)
        self.ours.add(spec.run_key)
        return task

    def next_task(self, pending) -> Task | Pack | None:
        """The next unit's claimed runs: a task, or a pack of the runs of a packed unit that this driver could claim."""
        for unit in pending:
            if self.fatal:
                return None
            claimed = [(i, spec, token) for i, spec in unit if (token := self.claim(spec)) is not None]
            if not claimed:
                continue
            tasks = tuple(self.task_of(i, spec, len(claimed)) for i, spec, _ in claimed)
            for task, (_, spec, token) in zip(tasks, claimed):
                self.tokens[task.id] = (self.lease(spec), token)
            _progress(self.bar, self.outcome, len(self.recorder.run_ids))
            if len(tasks) == 1:
                return tasks[0]
            return Pack(len(self.specs) + tasks[0].id, f"pack of {len(tasks)}", tasks, fit=self.fixed_pack_size is None)
        return None

    def handle(self, task: Task, kind: str, payload):
        """A worker's event or result for `task`: recorded where this driver still holds the run's claim."""
        key, token = self.tokens[task.id]
        if key in self.leases.lost:  # another driver took the run over: what we would record is not ours to keep
            if kind == "done":
                self.drop(task)
            return False
        if kind != "done":
            self.recorder.event(task, kind, payload)
            return False  # an ask: studies never stop a run early
        if not self.leases.fence(key, token):
            self.drop(task)
            return None
        self.recorder.finish(task, payload)
        if payload.status == FAILED:
            self.leases.release(key, token)  # the next driver (or call) tries it again
        else:
            tracking.delete_runs(self.client, self.replaced.pop(key, []))
            self.leases.complete(key, token)
        outcome = self.outcome
        outcome.trained += payload.status != FAILED
        outcome.diverged += payload.status == DIVERGED
        if payload.status == FAILED:
            outcome.failed.append(f"{task.name}: {payload.reason}")
            outcome.traced += bool(payload.trace)
            if payload.fatal:
                self.fatal.append(payload.reason)
        self.bar.update()
        _progress(self.bar, outcome, len(self.recorder.run_ids))
        tqdm.write(_one_line(task.name, self.study.metric, payload, self.width))

    def drop(self, task: Task) -> None:
        self.recorder.drop(task)
        self.outcome.lost.append(task.name)
        tqdm.write(f"  {task.name:<{self.width}} lost its claim (another driver took it over); its result is dropped")

    def abandon(self) -> None:
        """Interrupted: the claims this call holds are released and its runs in flight marked KILLED."""
        for key, token in self.tokens.values():
            if key in self.leases.held:
                self.leases.release(key, token)
        self.recorder.abandon()


def _report_once(study: Study, specs: list[RunSpec], drive: _Drive, report: Callable[[], None]) -> None:
    """`report()` for the study's finished runs, by the one driver that claims this set of runs' report."""
    keys = {s.run_key for s in specs}  # (not the runs of an earlier version of the study file, or computed another way)
    finished = sorted(r.info.run_id for r in tracking.search(drive.client, drive.exp_id, "run", tracking.FINISHED)
                      if r.data.tags.get("suite.run_key") in keys)
    if not finished:  # every run failed, and the caller says so: there is nothing to report
        return
    leases, key = drive.leases, f"report/{drive.where}/" + hashlib.sha256(" ".join(finished).encode()).hexdigest()[:16]
    # while another driver holds the claim it is writing this report, or was killed doing so: wait until it is
    # done (then it is reported) or its claim expires (then take it), never leave with the report unwritten
    while (token := leases.claim(key)) is None and leases.alive([key]):
        time.sleep(min(2.0, leases.seconds / 4))
    if token is None:
        drive.outcome.reported_elsewhere = True
    else:
        report()
        leases.complete(key, token)


def units(left: list[tuple[int, RunSpec]], settings: Settings, datasets) -> list[list[tuple[int, RunSpec]]]:
    """What the workers get: packed runs grouped by `config.pack_group` into packs that fit, every other run alone.

    On a CPU a group is split across the workers (each pack trains on one worker's threads); on
    CUDA it goes to one worker whole, which trains it in as few packs as the GPU's free memory allows
    (worker.Pack.fit: the driver starts no CUDA). `--pack-size` sizes the packs here. Which runs share a
    pack never changes their numbers.
    """
    alone, groups = _grouped(left)
    out = list(alone)
    for members in groups:
        config = members[0][0][1].config
        size = settings.pack_size or (len(members) if config.execution.device == "cuda" else _fitting_pack(config))
        count = math.ceil(len(members) / size)
        if config.execution.device == "cpu":
            count = max(count, min(len(members), settings.workers or default_workers(settings.threads, datasets, len(left))))
        out += [sum(members[k::count], []) for k in range(count)]
    return sorted(out, key=lambda unit: unit[0][0])


def _grouped(left: list[tuple[int, RunSpec]]) -> tuple[list, list[list]]:
    """The unpacked runs, one unit each, and the packed ones grouped by `config.pack_group` (lists of one-run units)."""
    from ..spec.config import pack_group

    groups: dict[str, list] = {}
    alone = []
    for i, spec in left:
        (groups.setdefault(pack_group(spec.config), []) if spec.config.execution.packed else alone).append([(i, spec)])
    return alone, list(groups.values())


def _fitting_pack(config) -> int:
    """Members of this config one pack holds on a CPU: as many as its last-level cache holds (no torch imported here)."""
    batch = config.train.batch_size if config.train.batch_size != "full" else 60000
    return pack_size(config, batch, cpu_cache_bytes())


def unpacking(handle: Callable) -> Callable:
    """A backend's `handle` for tasks and packs: a pack's events and record go to its members, one by one."""

    def handle_any(task, kind: str, payload):
        if not isinstance(task, Pack):
            return handle(task, kind, payload)
        members = {member.id: member for member in task.members}
        if kind == "done":  # a pack that failed as a whole (its worker died) fails every member
            records = payload.members or [Record(m.id, payload.status, reason=payload.reason, where=payload.where)
                                          for m in task.members]
            for record in records:
                handle(members[record.task_id], "done", record)
            return None
        if kind == "ask":
            return False  # packed study runs never stop early on the driver's word
        member, inner = payload
        return handle(members[member], kind, inner)

    return handle_any


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


def _one_line(name: str, metric: str, record, width: int = 28) -> str:
    value = record.final.get(metric)
    if record.status == FAILED:
        return f"  {name:<{width}} FAILED ({record.reason})"
    shown = f"{metric}={value:.4f}" if value is not None else ""
    status = f"DIVERGED ({record.reason})" if record.status == DIVERGED else shown
    return f"  {name:<{width}} {status}  ({record.final['train_seconds']:.1f} s, {_epochs(record.final['epochs_trained'])}, pid {record.where.get('pid')})"


def _epochs(n) -> str:
    return f"{int(n)} epoch" + ("" if int(n) == 1 else "s")
