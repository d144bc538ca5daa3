"""Where tasks run: in the driver (serial), in a pool of spawned processes (local), on Ray (ray).

Every backend has one method, `run(next_task, handle)`: it pulls a task from `next_task()`
whenever a worker is free (None: no more), and calls `handle(task, kind, payload)` in the driver
for every event a worker sends (`started`, `steps`, `epoch`, `ask` whose return value goes back
to the worker, and finally `done` with the `Record`). A worker that dies gives its task a FAILED
record; the other tasks go on. Ctrl-C or SIGTERM in the driver stops every worker before `run`
returns or raises.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing import connection, get_context

from ..errors import error_line
from .worker import FAILED, Record, Task, execute, warm


class Serial:
    """In the driver's own process, one task at a time: for debugging (breakpoints, profilers)."""

    def run(self, next_task, handle) -> None:
        while (task := next_task()) is not None:
            record = execute(task, lambda kind, payload: handle(task, kind, payload),
                             lambda kind, payload: handle(task, "ask", (kind, payload)))
            handle(task, "done", record)


# ---------------------------------------------------------------- local pool


@dataclass(frozen=True)
class Warm:
    """The pool's first message to a worker: the task whose data to load while the driver gets ready (worker.warm)."""

    task: Task


def _serve(conn, threads: int, tells_cuda: bool = False) -> None:
    """A pool worker: take tasks from the driver's pipe until it sends None or goes away (`tells_cuda`: first tell
    it whether torch finds a CUDA device, `cuda_answer`)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the driver decides
    import torch

    torch.set_num_threads(threads)
    if tells_cuda:
        _send(conn, ("cuda", torch.cuda.is_available()))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if isinstance(task, Warm):
            warm(task.task)
            continue
        if task is None:  # done: everything went through the pipe; skip the interpreter's teardown (seconds with torch loaded)
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(0)

        def ask(kind, payload):
            _send(conn, ("ask", (kind, payload)))
            return conn.recv()

        record = execute(task, lambda kind, payload: _send(conn, (kind, payload)), ask)
        _send(conn, ("done", record))


def _send(conn, message) -> None:
    """To the driver; when it is gone (killed: the kernel kills us a moment later), leave quietly, no traceback."""
    try:
        conn.send(message)
    except OSError:
        os._exit(1)


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the driver dies, even by kill -9."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class _Slot:
    def __init__(self, ctx, threads: int, tells_cuda: bool = False):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, threads, tells_cuda), daemon=True)
        # the spawned interpreter reads these before torch starts its thread pools
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            self.process.start()
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        child.close()
        self.task = None
        self.used = False  # given a task: a worker never given one is stopped at once (it may still be warming up)


class LocalPool:
    """N spawned processes, each with `threads` torch threads, fed over pipes; a dead one is replaced.

    `start(warm)` spawns them ahead of `run` (a driver calls it before opening its store, so the
    workers' imports and data loading overlap its own); `run` starts them if no one did, and stops
    them when it returns. `stop` (idempotent) is for a driver that fails before `run`."""

    def __init__(self, workers: int, threads: int):
        self.workers, self.threads = workers, threads
        self.ctx = get_context("spawn")
        self.slots: list[_Slot] = []

    def start(self, warm: Task | None = None, spawned: list[_Slot] = ()) -> None:
        """Spawn the workers (taking over those `spawn_early` made, up to the pool's size; the others are stopped)."""
        if self.slots:
            _stop(spawned)
            return
        self.slots, extra = list(spawned[:self.workers]), spawned[self.workers:]
        _stop(extra)
        try:
            while len(self.slots) < self.workers:
                self.slots.append(_Slot(self.ctx, self.threads))
            for slot in self.slots if warm is not None else ():
                slot.conn.send(Warm(warm))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        slots, self.slots = self.slots, []
        _stop(slots)

    def run(self, next_task, handle) -> None:
        try:
            self.start()
            self._loop(next_task, handle)
        finally:
            self.stop()

    def _loop(self, next_task, handle) -> None:
        slots, exhausted = self.slots, False
        while True:
            for i, slot in enumerate(slots):
                if slot.task is None and not exhausted:
                    task = next_task()
                    exhausted = task is None
                    if not exhausted:
                        slots[i] = self._hand(slot, task)
            busy = [s for s in slots if s.task is not None]
            if not busy:
                return
            ready = connection.wait([s.conn for s in busy] + [s.process.sentinel for s in busy])
            for slot in busy:
                if (slot.conn in ready or slot.process.sentinel in ready) and not self._receive(slot, handle):
                    self._died(slot, handle)

    def _hand(self, slot: _Slot, task) -> _Slot:
        """Send `task` to the slot's worker; one that died while idle is replaced first."""
        try:
            slot.conn.send(task)
        except OSError:  # its process is gone (killed between two tasks)
            slot.process.join()
            slot = _Slot(self.ctx, self.threads)
            slot.conn.send(task)
        slot.task, slot.used = task, True
        return slot

    def _receive(self, slot: _Slot, handle) -> bool:
        """Handle one message from the slot's worker; False when the worker is gone."""
        try:
            kind, payload = slot.conn.recv()
        except (EOFError, OSError):
            return False
        if kind == "cuda":  # an early worker's answer no one asked for (spawn_early)
            return True
        reply = handle(slot.task, kind, payload)
        if kind == "ask":
            slot.conn.send(reply)
        elif kind == "done":
            slot.task = None
        return True

    def _died(self, slot: _Slot, handle) -> None:
        slot.process.join()
        code = slot.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        task = slot.task
        handle(task, "done", Record(task.id, FAILED, reason=f"worker process {slot.process.pid} died ({how})"))
        self.slots[self.slots.index(slot)] = _Slot(self.ctx, self.threads)


def spawn_early(threads: int) -> list[_Slot]:
    """One pool worker spawned before the driver knows its plan, on a machine that may have a GPU: it imports torch
    and tells whether CUDA is there (`cuda_answer`) while the driver imports MLflow, instead of the driver importing
    torch (~2-3 s) for it. `LocalPool.start(spawned=...)` takes it over; `stop_early` stops it when no pool does."""
    return [_Slot(get_context("spawn"), threads, tells_cuda=True)]


def cuda_answer(slots) -> bool | None:
    """What the first of `spawn_early`'s workers says of CUDA; None when it died first (the driver asks torch itself)."""
    try:
        kind, answer = slots[0].conn.recv()
    except (EOFError, OSError):
        return None
    return answer if kind == "cuda" else None


def stop_early(slots) -> None:
    _stop(slots)


def _stop(slots) -> None:
    for slot in slots:
        if slot.process.is_alive():
            try:
                slot.conn.send(None)
            except OSError:
                pass
    deadline = time.monotonic() + 1  # workers that trained and are idle get a second between them to leave; the rest are killed at once
    for slot in slots:
        slot.process.join(timeout=max(0.0, deadline - time.monotonic()) if slot.task is None and slot.used else 0)
        if slot.process.is_alive():
            slot.process.kill()
            slot.process.join()
        slot.conn.close()


# ---------------------------------------------------------------- ray


class RayWorker:
    """One Ray actor: trains the tasks it is given, sending events through a Ray queue."""

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(threads)

    def run(self, task, events, replies):
        def ask(kind, payload):
            events.put((task.id, "ask", (kind, payload)))
            return replies.get()

        return execute(task, lambda kind, payload: events.put((task.id, kind, payload)), ask)

    def pid(self) -> int:
        return os.getpid()


class RayBackend:
    """`workers` Ray actors (default: the cluster's CPUs / threads) of `threads` CPUs (and a GPU each when `gpus`), on the cluster at `address`.

    `address` None starts a private local Ray instance for this call; `auto` joins the cluster
    that `ray start --head` runs on this machine; `ray://host:10001` a remote one. The suite's code
    travels to the workers (`runtime_env` py_modules); its dependencies and the data root
    (`--data-dir`, the same path on every node) must already be there.
    """

    def __init__(self, workers: int | None, threads: int, address: str | None, gpus: bool = False, tasks: int | None = None):
        self.workers, self.threads, self.address, self.gpus, self.tasks = workers, threads, address, gpus, tasks

    def run(self, next_task, handle) -> None:
        import ray
        from ray.util.queue import Queue

        started_here = not ray.is_initialized()
        if started_here:
            init(self.address)
        actor_class = ray.remote(num_cpus=self.threads, num_gpus=1 if self.gpus else 0, max_restarts=0)(RayWorker)
        events = Queue()
        actors, running = [], {}
        try:
            def spawn():
                return actor_class.remote(self.threads), Queue()

            workers = self.workers or max(1, min(int(ray.cluster_resources().get("CPU", 1)) // self.threads, self.tasks or 1 << 30))
            actors = [spawn() for _ in range(workers)]
            idle, exhausted = list(actors), False
            while True:
                while idle and not exhausted:
                    task = next_task()
                    if task is None:
                        exhausted = True
                        break
                    actor, replies = idle.pop()
                    running[actor.run.remote(task, events, replies)] = (task, actor, replies)
                if not running:
                    return
                done, _ = ray.wait(list(running), num_returns=1, timeout=0.05)
                self._drain(events, running, handle)
                for ref in done:
                    task, actor, replies = running.pop(ref)
                    try:
                        record = ray.get(ref)
                    except Exception as err:  # the actor died (kill -9 of its process, a lost node)
                        record = Record(task.id, FAILED, reason=f"ray worker died: {error_line(err)}")
                        ray.kill(actor)
                        actors.remove((actor, replies))
                        actor, replies = spawn()
                        actors.append((actor, replies))
                    handle(task, "done", record)
                    idle.append((actor, replies))
        finally:
            for actor, _ in actors:
                ray.kill(actor)
            if started_here:
                ray.shutdown()

    @staticmethod
    def _drain(events, running, handle) -> None:
        tasks = {task.id: (task, replies) for task, _, replies in running.values()}
        while not events.empty():
            for task_id, kind, payload in events.get_nowait_batch(events.qsize()):
                task, replies = tasks[task_id]
                reply = handle(task, kind, payload)
                if kind == "ask":
                    replies.put(reply)


def _ray_token() -> bool:
    """Whether Ray would find an authentication token here: $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."""
    from pathlib import Path

    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or (Path.home() / ".ray" / "auth_token").exists())


def init(address: str | None) -> None:
    """Connect to (or, with None, start) Ray, shipping the suite package to the workers."""
    import logging
    from pathlib import Path

    import ray

    package = str(Path(__file__).resolve().parents[1])
    try:
        ray.init(address=address, runtime_env={"py_modules": [package]}, logging_level=logging.WARNING,
                 log_to_driver=False, include_dashboard=False if address is None else None)
    except (ConnectionError, RuntimeError, ValueError) as err:
        from ..errors import SuiteError

        hint = ""
        if address not in (None, "auto") and "RAY_AUTH_MODE" not in os.environ and _ray_token() and "ray[client]" not in str(err):
            # Ray >= 2.59 starts a head with token authentication where a token exists (any local Ray makes one), and
            # sends the token to an explicit address only in token mode (`auto` finds the local head and sends it)
            hint = ("; a head started where a Ray token exists (~/.ray/auth_token) wants it: set RAY_AUTH_MODE=token, "
                    "or use --ray-address auto on the head's machine")
        raise SuiteError(f"cannot reach Ray at {address or 'a new local instance'}: {error_line(err)}{hint}") from None
