"""The worker: `execute(task) -> Record`, the only code that trains a run.

A task is a resolved run config, its seed and where its data lives; a record is everything the
run produced (per-epoch and per-step metrics, final metrics, status, the error line) and where
it ran (host, pid, device, threads). `execute` imports no MLflow and no Optuna: it runs the same
in the driver (serial), in a spawned process (local pool) or on a Ray node, and talks to the
driver only through `emit(kind, payload)` (events: started, steps, epoch) and, for a task that
asks after each epoch (pruning), `ask(kind, payload) -> bool` (True: stop here).
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import RunConfig
from ..errors import SuiteError

FINISHED, DIVERGED, PRUNED, FAILED = "finished", "diverged", "pruned", "failed"


@dataclass(frozen=True)
class Task:
    id: int  # unique within one executor call
    name: str  # what progress lines call it
    config: RunConfig  # resolved: config.execution says device and threads
    seed: int
    data_dir: str  # readable from wherever the task runs
    ask_each_epoch: bool = False  # wait for the driver's verdict after each epoch (pruned trials stop)
    keep_weights: bool = False  # send the tested weights back in the record
    test: bool = True  # evaluate the test split at the end (never for search trials: selection must not see it)


@dataclass
class Record:
    task_id: int
    status: str  # finished, diverged, pruned, failed
    history: list[dict] = field(default_factory=list)  # one dict of metrics per epoch
    steps: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss of that batch)
    final: dict = field(default_factory=dict)  # test metrics, epochs_trained, train_seconds, ...
    reason: str = ""  # why it diverged, was pruned or failed: one line
    where: dict = field(default_factory=dict)  # host, pid, device, threads, cpu
    seconds: float = 0.0  # wall time in the worker, data loading included
    fatal: bool = False  # a user-level error (missing data, no CUDA) that every other run would hit too
    weights: dict | None = None  # the tested state_dict, on the CPU, when the task keeps weights
    errors: dict | None = None  # classification: the test confusion matrix and the first misclassified examples (`test_errors`)


GALLERY = 16  # misclassified test images a run keeps (with their labels), for the report's gallery


def class_shares(predicted, truth, classes: int) -> dict:
    """test_top_share: the share of test predictions in the most predicted class (1.0: the run collapsed to one class);
    test_majority_share: the share of the largest true class (what predicting only that class would score)."""
    import torch

    return {"test_top_share": torch.bincount(predicted, minlength=classes).max().item() / len(predicted),
            "test_majority_share": torch.bincount(truth, minlength=classes).max().item() / len(truth)}


def test_errors(predicted, truth, images, classes: int) -> dict:
    """Where the tested weights go wrong: confusion[true][predicted] counts, and the first GALLERY misclassified
    test examples (index, true and predicted class, the raw image as uint8)."""
    import torch

    confusion = torch.bincount(truth * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    wrong = (predicted != truth).nonzero().flatten()[:GALLERY]
    return {"confusion": confusion.tolist(), "index": wrong.tolist(), "true": truth[wrong].tolist(),
            "predicted": predicted[wrong].tolist(), "images": images[wrong].numpy()}


class Stop(Exception):
    """Raised from the epoch callback when the driver says stop (a pruned trial)."""


_cached: dict = {}  # one set of splits per process: (data config, device, root) -> Splits


def _splits(config: RunConfig, data_dir: str, device):
    from ..data import load_splits

    key = (config.data, str(device), data_dir)
    if key not in _cached:
        _cached.clear()  # hold one dataset's tensors at a time
        _cached[key] = load_splits(config.data, Path(data_dir), device)
    return _cached[key]


def where(device, threads: int) -> dict:
    from ..provenance import cpu_model, device_description

    return {"host": socket.gethostname(), "pid": os.getpid(), "device": device_description(device), "threads": threads,
            "cpu": cpu_model()}


def execute(task: Task, emit: Callable[[str, Any], None], ask: Callable[[str, Any], bool] | None = None) -> Record:
    """Train one run; never raises for a failure of the run itself (the record says FAILED and why)."""
    import torch

    from ..data import fingerprint
    from ..train import resolve_device, train_run

    start = time.perf_counter()
    record = Record(task.id, FAILED)
    try:
        torch.set_num_threads(task.config.execution.threads)
        device = resolve_device(task.config.execution.device)
        data = _splits(task.config, task.data_dir, device)
        record.where = where(device, torch.get_num_threads())
        record.where["data_fingerprint"] = fingerprint(task.config.data.name, Path(task.data_dir))
        splits = {"train": len(data.train_y), "val": len(data.val_y), "test": len(data.test_y)}
        emit("started", {**record.where, "data": {"name": task.config.data.name, "root": task.data_dir, "splits": splits}})

        def on_epoch(epoch: int, metrics: dict) -> None:
            record.history.append(metrics)
            if task.ask_each_epoch and ask is not None:
                if ask("epoch", (epoch, metrics)):
                    raise Stop(f"pruned after epoch {epoch}")
            else:
                emit("epoch", (epoch, metrics))

        def on_step(step: int, loss: float) -> None:
            record.steps.append((step, loss))
            emit("steps", [(step, loss)])

        with core_slots(task.config.execution.threads if device.type == "cpu" else 1):
            result = train_run(task.config, task.seed, data, device, on_epoch, on_step, test=task.test)
        record.final = result.final  # (record.history filled itself epoch by epoch)
        if result.test_predictions is not None:
            from ..data import load_raw

            raw = load_raw(task.config.data.name, task.data_dir)
            truth = data.test_y.cpu()
            record.errors = test_errors(result.test_predictions, truth, raw.test_x[:len(truth)], data.num_outputs)
            record.final.update(class_shares(result.test_predictions, truth, data.num_outputs))
        if task.keep_weights:
            record.weights = {k: v.detach().to("cpu", copy=True) for k, v in result.state.items()}
        record.status, record.reason = (DIVERGED, result.reason) if result.diverged else (FINISHED, "")
    except Stop as stop:
        record.status, record.reason = PRUNED, str(stop)
    except SuiteError as err:  # missing data and the like: one line, and no point in trying the other runs
        record.status, record.reason, record.fatal = FAILED, str(err), True
    except Exception as err:  # the run failed; the worker lives on
        record.status, record.reason = FAILED, error_line(err)
    record.seconds = time.perf_counter() - start
    return record


SLOTS_ENV = "SUITE_CORE_SLOTS"  # the folder of this host's core slots (default: <tmp>/suite-cores-<uid>)


@contextmanager
def core_slots(threads: int):
    """Hold `threads` of this host's cores while a run trains, across every driver and worker on the host.

    One lock file per core; a run takes `threads` of them (all or none) and waits while too few
    are free, so workers x threads never exceed the cores however many drivers share the host.
    The kernel frees the locks of a killed process.
    """
    import fcntl
    import random
    import tempfile

    from . import cores

    folder = Path(os.environ.get(SLOTS_ENV) or Path(tempfile.gettempdir()) / f"suite-cores-{os.getuid()}")
    folder.mkdir(parents=True, exist_ok=True)
    total = cores()
    need, held = min(threads, total), []
    while True:
        for i in random.sample(range(total), total):
            handle = open(folder / f"{i}.lock", "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            held.append(handle)
            if len(held) == need:
                break
        if len(held) == need:
            break
        for handle in held:
            handle.close()
        held = []
        time.sleep(random.uniform(0.05, 0.3))
    try:
        yield
    finally:
        for handle in held:
            handle.close()


def evaluate_weights(config: RunConfig, weights: dict, data_dir: str) -> dict:
    """Test metrics of `weights` in a fresh model built from `config` (what `suite evaluate` prints)."""
    import torch

    from ..models import build_model
    from ..train import evaluate, resolve_device

    torch.set_num_threads(config.execution.threads)
    device = resolve_device(config.execution.device)
    data = _splits(config, data_dir, device)
    model = build_model(config.model, data.in_shape, data.num_outputs, torch.Generator()).to(device)
    model.load_state_dict(weights)
    return {f"test_{k}": v for k, v in evaluate(model, data.test_x, data.test_y, data.task).items()}


def error_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"[:300]
