"""Hyperparameter search with Optuna, bridged to MLflow; the only module that imports optuna.

    suite tune regularization --trials 20 [--workers 2]     # or: make tune STUDY=regularization

A study's `search` block names a validation objective, a space (dotted config path -> range
or choices), a trial budget, a sampler (TPE, random or QMC, seeded) and a pruner (median or
none). Every trial trains one run through the executor (`suite.execute`) with the search's seed, reports the
objective each epoch (the pruner may stop it: state PRUNED), and is an MLflow child run of
one parent run per search. A diverged trial is FAILED with its reason; the search goes on.

Trials live in an Optuna RDB store (`--storage`, $OPTUNA_STORAGE, default sqlite:///optuna.db)
under the name `<study>` (a `tune` block: `<study>/<variant>`, `<study>/<variant>/<dataset>` with several datasets), loaded if it exists, so a
rerun continues to the requested total (its sampler seed is derived from the search's seed and
the trials already stored, so it proposes new points rather than replaying the first run's). A trial left RUNNING by a killed process is marked
FAILED as interrupted and does not count towards the total. A search holds the trials of one
configuration (`placed`): after a change to what its trials are a function of (the base config,
space, objective, sampler, pruner or seed, or how the call computes them: --threads, --device, --pack) it continues as `<name>@<8 hex digits of the fingerprint>`, apart from the
earlier trials, which stay where they are.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
from tqdm import tqdm

from . import tracking
from .provenance import redact
from .tracking import INTERRUPTED
from .spec.config import Execution, RunConfig
from .errors import OptionError, StudyError, SuiteError
from .execute import Settings, backend, check_threads, execution
from .execute.plan import describe, source_name
from .execute.recorder import Recorder
from .execute.worker import DIVERGED, FAILED, FINISHED, PRUNED, Record, Task
from .spec.derived import override, search_base, search_fingerprint, search_variant, tuning_name, tuning_targets, with_tuned
from .spec.study import Search, Study, with_execution

optuna.logging.set_verbosity(optuna.logging.WARNING)


def make_sampler(block: Search, resumed_at: int = 0) -> optuna.samplers.BaseSampler:
    """The block's seeded sampler; on resuming a search that holds `resumed_at` trials, a seed derived from both.

    A rerun that reused the plain seed would replay the first run's random draws (TPE's start-up
    trials, every random-sampler trial) and spend its budget on points already tried. QMC keeps
    its seed: it continues its own sequence from a counter kept in the store.
    """
    if block.sampler not in SAMPLERS:
        raise SuiteError(f"unknown sampler '{block.sampler}' (known: {', '.join(SAMPLERS)})")
    seed = block.seed
    if resumed_at and block.sampler != "qmc":
        seed = int.from_bytes(hashlib.sha256(f"{block.seed}/resumed-at/{resumed_at}".encode()).digest()[:4], "big")
    return SAMPLERS[block.sampler](seed)


def make_pruner(block: Search) -> optuna.pruners.BasePruner:
    # median: prune a trial whose objective at an epoch is worse than the median of earlier trials there
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0) if block.pruner == "median" else optuna.pruners.NopPruner()


def sample(trial: optuna.Trial, block: Search) -> dict:
    """One point of the space, as {dotted path: value}."""
    values = {}
    for path, p in block.space.items():
        if p.type == "float":
            values[path] = trial.suggest_float(path, p.low, p.high, log=p.log)
        elif p.type == "int":
            values[path] = trial.suggest_int(path, int(p.low), int(p.high), log=p.log)
        else:
            values[path] = trial.suggest_categorical(path, p.choices)
    return values


@dataclass
class Target:
    """What one search tunes: a study variant on a dataset, and where its trials are kept."""

    study: Study
    block: Search
    variant: str
    dataset: str
    smoke: bool
    apart: bool = False  # kept apart from an earlier search of another configuration under the plain name (`placed`)
    how: Execution | None = None  # how this call computes its trials (None: the default, 1 CPU thread)

    @property
    def plain_name(self) -> str:
        if self.block is not self.study.search:
            return tuning_name(self.study, self.variant, self.smoke, self.dataset)
        return self.study.name + ("/smoke" if self.smoke else "")

    @property
    def name(self) -> str:
        """Where its trials are kept (Optuna study name, MLflow tag `suite.search`): the plain name, or `<plain>@<fingerprint>`."""
        return self.plain_name + (f"@{self.fingerprint[:8]}" if self.apart else "")

    @property
    def fingerprint(self) -> str:
        return search_fingerprint(self.study, self.block, self.variant, self.dataset, self.smoke, self.how)

    @property
    def budget(self) -> int:
        return self.study.smoke.trials if self.smoke else self.block.trials

    def base_config(self) -> RunConfig:
        return search_base(self.study, self.variant, self.dataset, self.smoke)


def search_target(study: Study, smoke: bool, how: Execution | None = None) -> Target:
    """The study's `search` block as a target, under its plain name (`placed` says where its trials are)."""
    if study.search is None:
        raise StudyError(f"study '{study.name}' has no search block; add one (see README, 'Searching hyperparameters')")
    block = study.search
    return Target(study, block, search_variant(block, study.baseline, study.variants), block.dataset or study.datasets[0], smoke,
                  how=how)


def tune_targets(study: Study, smoke: bool, storage: str | None = None, how: Execution | None = None) -> list[Target]:
    """One search per variant and dataset, each with the same budget and sampler seed (not for `@tuned` variants)."""
    targets = [Target(study, study.tune, v, d, smoke, how=how) for d, v in tuning_targets(study)]
    return [placed(t, storage) for t in targets] if storage else targets


FINGERPRINT = "suite.fingerprint"  # Optuna study user attribute; the parent run's tag is suite.search_fingerprint


def placed(target: Target, storage: str) -> Target:
    """The target under the name its trials are kept: the plain name, unless a search stored there was run with
    another configuration (another fingerprint: its base config, space, objective, sampler, pruner or seed changed, or
    this call computes trials another way: --threads, --device, --pack);
    then `<plain name>@<fingerprint>`, so trials of two configurations never mix and both stay. A search stored
    before fingerprints existed takes the fingerprint of the first configuration that opens it (run_search)."""
    found = load_search(dataclasses.replace(target, apart=False), storage)
    stamped = found.user_attrs.get(FINGERPRINT) if found is not None else None
    return dataclasses.replace(target, apart=stamped is not None and stamped != target.fingerprint)


def open_search(target: Target, storage: str) -> optuna.Study:
    _with_schema(storage)
    try:
        try:
            return optuna.create_study(storage=storage, study_name=target.name, direction=target.block.direction,
                                       sampler=make_sampler(target.block), pruner=make_pruner(target.block), load_if_exists=True)
        except optuna.exceptions.DuplicatedStudyError:  # created by another driver between Optuna's check and its insert
            return optuna.load_study(study_name=target.name, storage=storage, sampler=make_sampler(target.block),
                                     pruner=make_pruner(target.block))
    except Exception as err:  # a bad URL, an unreachable server
        raise _storage_error(storage, err) from None


def interrupted(trial) -> bool:
    """Failed by a kill (its driver's, or another driver's takeover), not by the trial itself: it does not count."""
    return trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs.get("fail_reason") == INTERRUPTED


def counted(trials) -> int:
    """Trials that count towards the budget: finished ones, not those a kill interrupted."""
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return sum(t.state in states and not interrupted(t) for t in trials)


def trial_key(name: str, study_id: int, number: int, storage: str = "") -> str:
    """The lease of one trial (`suite.execute.leases`): alive while a driver trains it. With the Optuna study's id: a
    search deleted and made again numbers its trials from 0 again, and those keys of the old one are done."""
    return f"trial/{redact(storage)}#{name}@{study_id}/{number}"


def _kill(client, run_id: str) -> None:
    """A trial's MLflow run ended as KILLED (interrupted), unless the driver that lost the trial deleted the run meanwhile."""
    tracking.end_run_unless_deleted(client, run_id, "KILLED", {"suite.trial_state": "FAIL", "suite.fail_reason": INTERRUPTED})


def fail_stale(search: optuna.Study, leases, name: str, client, exp_id: str, storage_name: str) -> None:
    """Trials left RUNNING by a killed driver (no live lease): FAILED as interrupted (they do not count), their MLflow runs KILLED.

    MLflow trial runs are closed by their own lease too: a kill between creating a trial's run and
    linking it to the trial leaves a RUNNING run that no trial names.
    """
    storage, key_of = search._storage, functools.partial(trial_key, name, search._study_id, storage=storage_name)
    running = search.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    alive = leases.alive(key_of(t.number) for t in running)
    for trial in running:
        key = key_of(trial.number)
        # claimed first: the token moves on, so a driver that only stalled past its lease can no longer record the trial
        token = None if key in alive else leases.claim(key)
        if token is None:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", INTERRUPTED)
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # its driver told Optuna just before the claim: the trial stands
            leases.complete(key, token)
            continue
        leases.complete(key, token)
        run_id = trial.user_attrs.get("mlflow_run_id")  # recorded, but killed before Optuna was told: not counted
        if run_id and client.get_run(run_id).info.status != "KILLED":
            _kill(client, run_id)
    runs = client.search_runs([exp_id], f"tags.`suite.kind` = 'trial' and tags.`suite.search` = '{name}' and attributes.status = 'RUNNING'",
                              max_results=1000)
    live = leases.alive(key_of(int(r.data.tags["suite.trial"])) for r in runs)
    for run in runs:
        if key_of(int(run.data.tags["suite.trial"])) not in live:
            _kill(client, run.info.run_id)


def run_search(target: Target, *, uri: str, storage: str, data_dir: Path, trials: int | None = None,
               settings: Settings | None = None) -> optuna.Study:
    """Run trials until `trials` (default: the block's budget) count, up to `settings.workers` at once, logging each to MLflow.

    Several drivers may run one search on a shared store: each trial is asked under a lock across
    drivers (trials counted + trials in flight never exceed the total) and leased while it trains;
    a trial whose driver died is failed as interrupted and its slot goes to the next ask.
    """
    from .execute.leases import open_store

    settings = settings or Settings()
    check_threads(settings)
    total = trials or target.budget
    how = execution(settings)
    target = dataclasses.replace(target, how=how)  # trials computed another way (threads, device, packed) are another search
    base = with_execution(target.base_config(), how)
    _with_schema(storage)  # (a URL no database takes is refused before the MLflow store is made)
    with open_store(uri, storage) as (client, leases):
        exp_id = tracking.experiment_id(client, tracking.experiment_name(target.study.name, target.smoke),
                                        description=describe(target.study, target.smoke), metric=target.study.metric,
                                        columns=target.study.scientific())
        with leases.mutex(f"search/{target.plain_name}"):  # placed and stamped by one driver at a time
            target = placed(target, storage)
            search = open_search(target, storage)
            if FINGERPRINT not in search.user_attrs:  # new, or stored before fingerprints: this configuration's from now on
                search.set_user_attr(FINGERPRINT, target.fingerprint)
        if target.apart:
            print(f"search '{target.plain_name}' in {redact(storage)} holds trials of another configuration of it (its base config, "
                  f"space, objective, sampler, pruner or seed, or how its trials were computed: --threads, --device, --pack): "
                  f"this one is kept apart as '{target.name}'", file=sys.stderr)
        lock, key_of = f"search/{target.name}", functools.partial(trial_key, target.name, search._study_id, storage=storage)
        with leases.mutex(lock):
            fail_stale(search, leases, target.name, client, exp_id, storage)
            stored = search.get_trials(deepcopy=False)
            search.sampler = make_sampler(target.block, resumed_at=len(stored))
            parent = _parent_run(client, exp_id, target, storage, search)
        recorder = Recorder(client, exp_id, {"suite.kind": "trial", "suite.study": target.study.name, "suite.search": target.name,
                                             "suite.variant": target.variant, "suite.dataset": target.dataset,
                                             "suite.smoke": target.smoke, "mlflow.parentRunId": parent,
                                             "mlflow.source.name": source_name(target.study)})
        bar = tqdm(total=total, initial=min(counted(stored), total), desc=target.name, unit="trial", disable=None)
        in_flight: dict[int, tuple[optuna.Trial, int]] = {}  # task id -> (trial, lease token)
        objective, last_epoch = target.block.objective, base.train.epochs

        def next_task() -> Task | None:
            while True:
                with leases.mutex(lock):
                    if leases.shared:
                        fail_stale(search, leases, target.name, client, exp_id, storage)
                    now = search.get_trials(deepcopy=False)
                    running = sum(t.state == optuna.trial.TrialState.RUNNING for t in now)
                    if counted(now) + running >= total:
                        return None
                    if leases.shared:  # another driver may have asked with the same seed: derive it from this ask's position
                        search.sampler = make_sampler(target.block, resumed_at=len(now))
                    trial = search.ask()
                    token = leases.claim(key_of(trial.number))
                    values = sample(trial, target.block)
                # resolved after the override: what is packable or fused depends on the sampled values (model.norm, optimizer.name)
                config = with_execution(override(target.base_config(), values), how)
                task = Task(trial.number, f"{target.name}/trial={trial.number}", config, target.block.seed,
                            str(Path(data_dir).resolve()), ask_each_epoch=True, test=False, plugins=target.study.plugins)
                run_id = recorder.start(task, {"suite.trial": trial.number, "suite.trial_state": "RUNNING"},
                                        {f"sampled.{k}": v for k, v in values.items()})
                try:
                    trial.set_user_attr("mlflow_run_id", run_id)
                except optuna.exceptions.UpdateFinishedTrialError:  # this driver stalled past its lease: another failed the trial
                    leases.lose(key_of(trial.number))
                    recorder.drop(task)
                    continue
                in_flight[task.id] = (trial, token)
                return task

        def handle(task: Task, kind: str, payload):
            trial, token = in_flight[task.id]
            key = key_of(trial.number)
            if key in leases.lost:  # failed as interrupted by another driver: nothing of it is ours to record
                if kind == "done":
                    del in_flight[task.id]
                    recorder.drop(task)
                return True  # (to an epoch's ask: stop training it)
            if kind == "ask":  # an epoch ended: record it, report it, maybe prune (never after the last epoch)
                epoch, metrics = payload[1]
                recorder.event(task, "epoch", (epoch, metrics))
                try:
                    trial.report(metrics[objective], epoch)
                except optuna.exceptions.UpdateFinishedTrialError:  # stalled past its lease: another driver failed it; stop
                    leases.lose(key)
                    return True
                return epoch < last_epoch and trial.should_prune()
            if kind != "done":
                recorder.event(task, kind, payload)
                return None
            record = payload
            del in_flight[task.id]
            if not leases.fence(key, token):
                recorder.drop(task)
                return None
            # MLflow first: a kill between the two leaves the trial RUNNING, so it is failed as interrupted and its run KILLED
            state = STATES[record.status]
            run_id = recorder.finish(task, record, {"suite.trial_state": state, "suite.fail_reason": record.reason if state == "FAIL" else ""})
            with leases.mutex(lock):  # (fail_stale's lock: no other driver fails the trial between the fence and the tell)
                told = leases.fence(key, token) and _tell(search, trial, record, objective)
            if not told:  # stalled past its lease while MLflow was written: another driver failed it as interrupted
                _kill(client, run_id)
                leases.lose(key)
                return None
            leases.complete(key, token)
            bar.update()
            if record.fatal:
                raise SuiteError(record.reason)
            return None

        with bar:
            try:
                while True:
                    first = next_task()
                    if first is not None:
                        queue = itertools.chain([first], iter(next_task, None))
                        backend(settings, [target.dataset], max(total - counted(search.get_trials(deepcopy=False)), 1)).run(lambda: next(queue, None), handle)
                    now = search.get_trials(deepcopy=False)
                    if counted(now) >= total or not any(t.state == optuna.trial.TrialState.RUNNING for t in now):
                        break
                    bar.set_postfix_str("waiting for trials that other drivers train", refresh=True)
                    bar.n = min(counted(now), total)
                    time.sleep(min(5.0, leases.seconds / 4))
            except BaseException:
                for trial, token in in_flight.values():  # failed as interrupted: not counted, not redone
                    try:
                        trial.set_user_attr("fail_reason", INTERRUPTED)
                        search.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                    except Exception:  # failed already by another driver (this one stalled), or the store is away: the
                        pass  # lease expires, and the next driver fails it
                    leases.release(key_of(trial.number), token)
                recorder.abandon()
                raise
        with leases.mutex(lock):
            _sweep_parents(client, exp_id, target, parent)  # a twin that appeared since the start (see _parent_run)
            _close_parent(client, parent, search, target)
    return search


def _close_parent(client, run_id: str, search: optuna.Study, target: Target) -> None:
    """The search's parent run: trial counts, best value and best settings (metrics, and tags for choices)."""
    trials = search.get_trials(deepcopy=False)
    states = [t.state for t in trials if not interrupted(t)]
    metrics = {"trials": counted(trials), "trials_complete": states.count(optuna.trial.TrialState.COMPLETE),
               "trials_pruned": states.count(optuna.trial.TrialState.PRUNED), "trials_failed": states.count(optuna.trial.TrialState.FAIL)}
    tags = {"suite.trials": metrics["trials"]}
    if metrics["trials_complete"]:
        best = search.best_trial
        metrics[f"best_{target.block.objective}"] = best.value
        metrics["best_trial"] = best.number
        tags["suite.best_params"] = json.dumps(best.params)  # exact (repr floats): what reports train `@tuned` variants at
        for path, value in best.params.items():
            tags[f"best.{path}"] = value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[f"best.{path}"] = value
        tags[tracking.NOTE] = (f"Search **{target.name}**: best `{target.block.objective}` = {best.value:.4g} at trial {best.number} ("
                               + ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}" for k, v in best.params.items())
                               + f"); {metrics['trials_complete']} complete, {metrics['trials_pruned']} pruned, "
                               f"{metrics['trials_failed']} failed. The search report is this run's artifact `report/`.")
    tracking.log_metric_items(client, run_id, [(k, v, 0) for k, v in metrics.items()])
    tracking.end_run(client, run_id, tags=tags)


STATES = {PRUNED: "PRUNED", DIVERGED: "FAIL", FAILED: "FAIL", FINISHED: "COMPLETE"}  # a record's Optuna state, as MLflow tags show it


def _tell(search: optuna.Study, trial: optuna.Trial, record: Record, objective: str) -> bool:
    """Give Optuna the trial's outcome; False: the trial was finished already (another driver failed it as interrupted)."""
    try:
        if search._storage.get_trial(trial._trial_id).state.is_finished():  # (Optuna: ValueError "Cannot tell a FAIL trial")
            return False
        if record.status == PRUNED:
            search.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif record.status in (DIVERGED, FAILED):
            trial.set_user_attr("fail_reason", record.reason)
            search.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            tested = record.history[int(record.final["tested_epoch"]) - 1]
            search.tell(trial, tested[objective])
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


PARENT = "suite.parent_run"  # Optuna study user attribute: the MLflow run id of the search's parent run


def _parent_run(client, exp_id: str, target: Target, storage: str, search: optuna.Study) -> str:
    """The search's one parent run (called under the search's lock): the run its Optuna study names, else (a store from
    before that name) a parent run of the search with trials under it, the oldest first, else a new one.

    A driver killed while the tracking server was creating its parent frees the lock at once, and the server may commit
    that run after the next driver found none and made its own: the study's name decides which one is the parent, and the
    childless twin is deleted (here, and again when the search's parent is closed)."""
    named = search.user_attrs.get(PARENT)
    found = _parents(client, exp_id, target)
    childless = {r.info.run_id for r in found if len(found) > 1 and not _has_trials(client, exp_id, r.info.run_id)}
    found.sort(key=lambda r: (r.info.run_id != named, r.info.run_id in childless, r.info.start_time, r.info.run_id))
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, "suite.search_fingerprint", target.fingerprint)  # a parent from before fingerprints
    else:
        run_id = _new_parent(client, exp_id, target, storage)
    if named != run_id:
        search.set_user_attr(PARENT, run_id)
    tracking.delete_runs(client, sorted(childless - {run_id}))
    return run_id


def _parents(client, exp_id: str, target: Target) -> list:
    return [r for r in tracking.search(client, exp_id, "search") if r.data.tags.get("suite.search") == target.name]


def _has_trials(client, exp_id: str, run_id: str) -> bool:
    return bool(client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=1))


def _sweep_parents(client, exp_id: str, target: Target, parent: str) -> None:
    """Delete the search's other parent runs that have no trials: made by a driver killed while making one (_parent_run),
    committed since this driver opened the search."""
    tracking.delete_runs(client, [r.info.run_id for r in _parents(client, exp_id, target)
                                  if r.info.run_id != parent and not _has_trials(client, exp_id, r.info.run_id)])


def _new_parent(client, exp_id: str, target: Target, storage: str) -> str:
    space = {path: p.model_dump(exclude_none=True) for path, p in target.block.space.items()}
    tags = {"suite.kind": "search", "suite.study": target.study.name, "suite.search": target.name, "suite.variant": target.variant,
            "suite.dataset": target.dataset, "suite.smoke": target.smoke, "suite.optuna_storage": redact(storage),
            "suite.search_fingerprint": target.fingerprint}
    # no trial budget here: a rerun may raise it (--trials), and params cannot change; the trial counts are metrics
    params = {"objective": target.block.objective, "direction": target.block.direction, "sampler": target.block.sampler,
              "pruner": target.block.pruner, "sampler_seed": target.block.seed,
              **{f"space.{k}": v for k, v in space.items()}}
    return tracking.start_run(client, exp_id, f"search {target.name}", tags, params, {"space": space})


# ---------------------------------------------------------------- reading results


def load_search(target: Target, storage: str) -> optuna.Study | None:
    _with_schema(storage)
    try:
        return optuna.load_study(study_name=target.name, storage=storage)
    except KeyError:
        return None


_schemas: set[str] = set()  # storage URLs whose Optuna tables this process has seen made


def _with_schema(storage: str) -> None:
    """Optuna's tables in `storage`, made before the first use. Optuna makes them when it first opens a storage, and on
    PostgreSQL two drivers starting at once collide there (CREATE TYPE ... already exists): there it is done under an
    advisory lock, one driver after the other; the later ones find the tables made."""
    if storage in _schemas:
        return
    try:
        if storage.startswith("postgresql"):
            import sqlalchemy as sa

            engine = sa.create_engine(storage)
            try:
                with engine.begin() as conn:  # the lock is held until this transaction ends
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('suite optuna schema'))"))
                    optuna.storages.RDBStorage(storage).engine.dispose()
            finally:
                engine.dispose()
        else:
            optuna.storages.RDBStorage(storage).engine.dispose()
    except Exception as err:  # a bad URL, an unreachable server
        raise _storage_error(storage, err) from None
    _schemas.add(storage)


def _storage_error(storage: str, err: Exception) -> SuiteError:
    """One line: a URL no database takes (an unknown scheme or dialect, a malformed URL) is bad input, exit 2; the rest
    (an unreachable server, a missing driver module) is work that could not be done."""
    import sqlalchemy.exc

    line = str(err).splitlines()[0][:200] if str(err).strip() else type(err).__name__
    if isinstance(err, (sqlalchemy.exc.ArgumentError, ValueError)):  # (NoSuchModuleError: "Can't load plugin: ..."; a port "x")
        return OptionError(f"the Optuna storage {redact(storage)} is no database URL SQLAlchemy takes ({line}); an Optuna storage is "
                           "sqlite:///PATH or a database URL (postgresql+psycopg://...)")
    return SuiteError(f"cannot open the Optuna storage {redact(storage)}: {line}")


def trials_frame(search: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, sampled params (one column each), MLflow run id, reason."""
    rows = []
    for t in search.get_trials(deepcopy=False):
        if interrupted(t):
            continue
        rows.append({"trial": t.number, "state": t.state.name, "value": t.value, **t.params,
                     "epochs": len(t.intermediate_values), "mlflow_run_id": t.user_attrs.get("mlflow_run_id", ""),
                     "fail_reason": t.user_attrs.get("fail_reason", "")})
    return pd.DataFrame(rows)


def importances(search: optuna.Study) -> dict[str, float]:
    complete = [t for t in search.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2 or len(search.best_params) < 1:
        return {}
    try:
        # PED-ANOVA (Optuna 5's default, named so that another Optuna's default cannot change it): no random forest, so
        # a rebuild gives the same importances
        return optuna.importance.get_param_importances(search, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (RuntimeError, ValueError):  # too few distinct values to fit the evaluator
        return {}


def edge_warnings(block: Search, best: dict) -> list[str]:
    """Best values in the outer 5% of a range (log-scaled where the range is): the space may be too narrow."""
    warnings = []
    for path, p in block.space.items():
        if p.type == "categorical" or path not in best:
            continue
        f = (lambda v: math.log(v)) if p.log else (lambda v: v)
        position = (f(best[path]) - f(p.low)) / (f(p.high) - f(p.low))
        if position < 0.05 or position > 0.95:
            side = "lower" if position < 0.5 else "upper"
            warnings.append(f"the best {path} ({best[path]:.4g}) sits at the {side} edge of the search space [{p.low:g}, {p.high:g}]; widen it")
    return warnings


def tuned_study(study: Study, smoke: bool, storage: str, run: dict | None = None) -> Study:
    """The study with its `@tuned` variants, for every variant whose tuning has used its budget.

    `run` (keyword arguments of `run_search`) first runs what tuning is missing; without it the
    Optuna store is only read.
    """
    if study.tune is None:
        return study
    tuned = {}
    how = execution(run["settings"]) if run is not None and run.get("settings") is not None else None
    for target in tune_targets(study, smoke, how=how):  # (run_search and best_overrides place each target themselves)
        if run is not None:
            run_search(target, storage=storage, **run)
        best = best_overrides(target, storage)
        if best is not None:
            tuned[target.dataset, target.variant] = best
    return with_tuned(study, tuned)


def best_overrides(target: Target, storage: str) -> dict | None:
    """The best trial's values as {path: value}, or None while the search has not used its budget."""
    search = load_search(placed(target, storage), storage)
    if search is None or counted(search.get_trials(deepcopy=False)) < target.budget:
        return None
    try:
        return dict(search.best_params)
    except ValueError:  # no trial completed
        return None


SAMPLERS = {
    # constant liar: trials still training count as bad guesses, so parallel workers spread out
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "qmc": lambda seed: optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False),
}
