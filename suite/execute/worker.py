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

from .. import components
from ..spec.config import RunConfig
from ..errors import SuiteError, error_line

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
    plugins: tuple[str, ...] = ()  # modules the worker imports first: the study's plug-ins (`plugins:`)


@dataclass
class Record:
    task_id: int
    status: str  # finished, diverged, pruned, failed
    history: list[dict] = field(default_factory=list)  # one dict of metrics per epoch
    steps: list[tuple[int, float]] = field(default_factory=list)  # (step, training loss of that batch)
    final: dict = field(default_factory=dict)  # test metrics, epochs_trained, train_seconds, ...
    reason: str = ""  # why it diverged, was pruned or failed: one line
    trace: str = ""  # a run that failed on an unexpected exception: its traceback (the run's artifact traceback.txt)
    where: dict = field(default_factory=dict)  # host, pid, device, threads, cpu
    seconds: float = 0.0  # wall time in the worker, data loading included
    fatal: bool = False  # a user-level error (missing data, no CUDA) that every other run would hit too
    weights: bytes | None = None  # the tested state_dict as a weights.pt file's bytes (`saved`), when the task keeps weights
    errors: dict | None = None  # classification: the test confusion matrix and the first misclassified examples (`test_errors`)
    members: list["Record"] = field(default_factory=list)  # a pack's record: one per member (empty: the pack failed as a whole)


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
    from ..components.data import load_splits

    key = (config.data, str(device), data_dir)
    if key not in _cached:
        _cached.clear()  # hold one dataset's tensors at a time
        _cached[key] = load_splits(config.data, Path(data_dir), device)
    return _cached[key]


def warm(task: Task) -> None:
    """Load the data `task` will train on (on a GPU: start CUDA too) before it comes: a pool worker does this
    while the driver opens its store. A failure is left for the task itself to meet and report."""
    import torch

    from .train import make_optimizer, resolve_device

    try:
        components.load_plugins(task.plugins)
        device = resolve_device(task.config.execution.device)
        _splits(task.config, task.data_dir, device)
        if not task.config.execution.packed:  # (packed runs step their own optimizer, suite.execute.packed.Stacked)
            # a process's first optimizer imports torch._dynamo (~2 s here) and, for Adam on a CPU, builds and checks adam.c
            make_optimizer(task.config.optimizer, [torch.nn.Parameter(torch.zeros(1, device=device))],
                           task.config.execution.fused_optimizer)
        if device.type == "cuda":  # cuBLAS's handle and the first kernels load on first use: here, not in the first step
            w = torch.zeros(2, 4, 4, device=device, requires_grad=True)
            torch.baddbmm(torch.zeros(2, 1, 4, device=device), torch.ones(2, 1, 4, device=device), w).sum().backward()
            torch.cuda.synchronize(device)
    except Exception:
        pass


def where(device, threads: int) -> dict:
    from ..provenance import cpu_model, device_description

    return {"host": socket.gethostname(), "pid": os.getpid(), "device": device_description(device), "threads": threads,
            "cpu": cpu_model()}


@dataclass(frozen=True)
class Pack:
    """Runs trained together as one packed model (`suite.execute.packed`): one task for a backend, one record per member."""

    id: int  # unique within one executor call, like a task's
    name: str
    members: tuple[Task, ...]  # same data, architecture and schedule (config.pack_group); each config packed
    fit: bool = False  # on a GPU, train the members in as many packs as its free memory needs (the driver did not size it)


def execute(task: Task | Pack, emit: Callable[[str, Any], None], ask: Callable[[str, Any], bool] | None = None) -> Record:
    """Train one run, or a pack of runs; never raises for a failure of the runs themselves (the record says FAILED and why).

    A pack's events carry their member's task id, `(id, payload)`, and its record holds one record per member (`members`).
    """
    import torch

    from ..components.data import fingerprint
    from .train import resolve_device, steps_adam_c

    packed = isinstance(task, Pack)
    tasks = task.members if packed else (task,)
    first = tasks[0]
    start = time.perf_counter()
    records = [Record(t.id, FAILED) for t in tasks]

    def say(i: int, kind: str, payload) -> None:
        emit(kind, (tasks[i].id, payload) if packed else payload)

    try:
        components.load_plugins(first.plugins)
        torch.set_num_threads(first.config.execution.threads)
        device = resolve_device(first.config.execution.device)
        data = _splits(first.config, first.data_dir, device)
        here = where(device, torch.get_num_threads())
        here["data_fingerprint"] = fingerprint(first.config.data.name, Path(first.data_dir))
        if not first.config.execution.packed and steps_adam_c(first.config.optimizer, first.config.execution.fused_optimizer,
                                                              device.type == "cpu"):  # (packed runs step suite.execute.packed.Stacked)
            from . import kernels

            here["adam_kernel"] = kernels.kernel_name()  # adam.c or torch: the same numbers, not the same speed
        splits = {"train": len(data.train_y), "val": len(data.val_y), "test": len(data.test_y)}
        size = _fitting(tasks, data, device) if packed and task.fit and device.type == "cuda" else len(tasks)
        started = {**here, "data": {"name": first.config.data.name, "root": first.data_dir, "splits": splits}}
        for record in records:
            record.where = here

        def announce(at: int, n: int) -> None:
            """Tasks at..at+n-1 start now, as one pack of n (a packed member's tag suite.pack_size)."""
            for i in range(at, at + n):
                say(i, "started", {**started, "pack_size": n} if packed else started)

        def on_epoch(i: int, epoch: int, metrics: dict) -> None:
            records[i].history.append(metrics)
            if tasks[i].ask_each_epoch and ask is not None:
                if ask("epoch", (epoch, metrics)):
                    raise Stop(f"pruned after epoch {epoch}")
            else:
                say(i, "epoch", (epoch, metrics))

        def on_step(i: int, step: int, loss: float) -> None:
            records[i].steps.append((step, loss))
            say(i, "steps", [(step, loss)])

        with core_slots(first.config.execution.threads if device.type == "cpu" else 1):
            results = _train(tasks, data, device, on_epoch, on_step, size, announce)
        for t, record, result in zip(tasks, records, results):
            if isinstance(result, Exception):  # its part of the pack failed; the other parts' members stand
                record.status, (record.reason, record.trace) = FAILED, failure(result)
            else:
                _finish(t, record, result, data)
    except Stop as stop:
        for record in records:
            record.status, record.reason = PRUNED, str(stop)
    except SuiteError as err:  # missing data and the like: one line, and no point in trying the other runs
        for record in records:
            record.status, record.reason, record.fatal = FAILED, str(err), True
    except Exception as err:  # the runs failed; the worker lives on
        for record in records:
            record.status, (record.reason, record.trace) = FAILED, failure(err)
    seconds = time.perf_counter() - start
    for record in records:
        record.seconds = seconds
    if not packed:
        return records[0]
    return Record(task.id, FINISHED, where=records[0].where, seconds=seconds, members=records)


def failure(err: Exception) -> tuple[str, str]:
    """A failed run's reason, one line (where in a plug-in's own code it was raised, if it was), and its traceback."""
    import traceback

    where = components.plugin_frame(err)
    return error_line(err) + (f" (at {where})" if where else ""), "".join(traceback.format_exception(err))


def _fitting(tasks: tuple[Task, ...], data, device) -> int:
    """How many of these packed members one pack holds on this GPU: as many as half its free memory holds, measured
    here, where CUDA is started anyway, so that the driver never starts CUDA (a context: ~0.5 GB and a second or two)."""
    import torch

    from . import pack_size

    config, n = tasks[0].config, len(data.train_x)
    batch = n if config.train.batch_size == "full" else min(config.train.batch_size, n)
    return min(len(tasks), pack_size(config, batch, torch.cuda.mem_get_info(device)[0] // 2))


def _train(tasks: tuple[Task, ...], data, device, on_epoch, on_step, size: int | None = None,
           announce: Callable[[int, int], None] = lambda at, n: None) -> list:
    """Each task's `RunResult`: packed configs through `suite.execute.packed`, `size` members per pack (default: all), one pack
    after the other (a single one as a pack of one); others through train_run. `announce(at, n)` just before tasks
    at..at+n-1 train together.

    A pack that runs out of GPU memory before its first step (the size estimate of `execute.pack_size` is one) is
    split in two and tried again, down to packs of one; a pack that fails otherwise gives its members the exception
    as their result, and the other packs go on. Which members share a pack never changes their numbers."""
    import torch

    config = tasks[0].config
    if config.execution.packed:
        from .packed import train_packed

        size, results, at = size or len(tasks), [], 0
        while at < len(tasks):
            part, heard = tasks[at:at + size], []

            def epoch_of(i, epoch, metrics, at=at):
                heard.append(True)
                on_epoch(at + i, epoch, metrics)

            def step_of(i, step, loss, at=at):
                heard.append(True)
                on_step(at + i, step, loss)

            announce(at, len(part))
            try:
                results += train_packed([t.config for t in part], [t.seed for t in part], data, device, epoch_of, step_of,
                                        test=part[0].test)
            except (Stop, SuiteError):
                raise
            except torch.OutOfMemoryError as err:
                if len(part) == 1 or heard:
                    results += [err] * len(part)
                else:  # nothing of this pack was recorded yet: the same members again, in smaller packs
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    size = (len(part) + 1) // 2
                    continue
            except Exception as err:
                results += [err] * len(part)
            at += len(part)
        return results
    from .train import train_run

    (task,) = tasks
    announce(0, 1)
    return [train_run(config, task.seed, data, device, lambda epoch, metrics: on_epoch(0, epoch, metrics),
                      lambda step, loss: on_step(0, step, loss), test=task.test)]


def _finish(task: Task, record: Record, result, data) -> None:
    """The record of one trained run: final metrics, where its test errors lie, its weights if kept, its status."""
    record.final = result.final  # (record.history filled itself epoch by epoch)
    if result.test_predictions is not None:
        from ..components.data import load_raw

        raw = load_raw(task.config.data.name, task.data_dir)
        truth = data.test_y.cpu()
        record.errors = test_errors(result.test_predictions, truth, raw.test_x[:len(truth)], data.num_outputs)
        record.final.update(class_shares(result.test_predictions, truth, data.num_outputs))
    if task.keep_weights:
        record.weights = saved({k: v.detach().to("cpu", copy=True) for k, v in result.state.items()})
    record.status, record.reason = (DIVERGED, result.reason) if result.diverged else (FINISHED, "")


SLOTS_ENV = "SUITE_CORE_SLOTS"  # the folder of this host's core slots (default: <tmp>/suite-cores-<uid>)


def slots_folder() -> Path:
    """This host's folder of core slots."""
    import tempfile

    return Path(os.environ.get(SLOTS_ENV) or Path(tempfile.gettempdir()) / f"suite-cores-{os.getuid()}")


def check_slots() -> None:
    """Before anything trains (the driver): a folder where lock files cannot be made is one line, not every run failed."""
    from ..errors import OptionError

    from . import cores

    folder = slots_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(cores()):
            _open_slot(folder / f"{i}.lock").close()
    except OSError as err:
        raise OptionError(f"runs cannot hold core slots in {folder} ({err.strerror or err}: {err.filename}): "
                          f"{'set' if SLOTS_ENV not in os.environ else 'point'} {SLOTS_ENV} to a writable folder") from None


def _open_slot(path: Path):
    """A core slot's lock file, opened to append; something else there (a folder, a FIFO, on which a plain open
    waits for a reader) is an OSError at once."""
    import errno
    import stat

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK, 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return os.fdopen(fd, "a")


@contextmanager
def core_slots(threads: int):
    """Hold `threads` of this host's cores while a run trains, across every driver and worker on the host.

    One lock file per core; a run takes `threads` of them (all or none) and waits while too few
    are free, so workers x threads never exceed the cores however many drivers share the host.
    The kernel frees the locks of a killed process.
    """
    import fcntl
    import random

    from . import cores

    folder = slots_folder()
    folder.mkdir(parents=True, exist_ok=True)
    total = cores()
    need, held = min(threads, total), []
    while True:
        for i in random.sample(range(total), total):
            handle = _open_slot(folder / f"{i}.lock")
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


def saved(state: dict) -> bytes:
    """`state` as the bytes of a `torch.save` file: the driver writes them as they come, without importing torch."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def loaded(blob: bytes) -> dict:
    """The state_dict of `saved` bytes (tensors only: nothing unpickles code)."""
    import io

    import torch

    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def evaluate_weights(config: RunConfig, weights: dict, data_dir: str) -> dict:
    """Test metrics of `weights` in a fresh model built from `config` (what `suite evaluate` prints)."""
    import torch

    from ..components.models import build_model
    from .train import evaluate, resolve_device

    torch.set_num_threads(config.execution.threads)
    device = resolve_device(config.execution.device)
    data = _splits(config, data_dir, device)
    model = build_model(config.model, data.in_shape, data.num_outputs, torch.Generator()).to(device)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as err:  # weights of another model (an edited or swapped file)
        raise SuiteError(f"the run's weights do not fit the model its config builds ({' '.join(str(err).split())[:200]})") from None
    return {f"test_{k}": v for k, v in evaluate(model, data.test_x, data.test_y, data.task).items()}
