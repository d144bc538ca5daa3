"""The one writer: the driver records what workers send back into MLflow, as it arrives.

A run's MLflow run is created when its task is handed to a worker (RUNNING, with its tags,
params and resolved config), receives per-step training losses (`train_loss_step`) and per-epoch
metrics while it trains, and is closed with its final metrics and where it ran. Studies,
searches and tuned comparisons all record through `Recorder`, so every run carries the same tags.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager

from .. import components, provenance, tracking
from ..spec.config import METRIC_ALIASES, flatten
from .worker import DIVERGED, FAILED, FINISHED, PRUNED, Record, Task


WEIGHTS = "weights.pt"  # the artifact holding a run's tested weights
FLUSH_SECONDS = 1.0  # a run's streamed metrics reach the store at least this often (one batch per flush)


_critical = [0]  # depth of recorder writes in progress
_pending: list[int] = []  # Ctrl-C / SIGTERM that arrived during one


def on_signal(signum, frame) -> None:
    """SIGINT/SIGTERM handler of the driver: KeyboardInterrupt, but never halfway through a store write.

    A run created in MLflow but not yet known to the recorder (or closed halfway) would stay RUNNING.
    """
    if _critical[0]:
        _pending.append(signum)
        return
    raise KeyboardInterrupt


@contextmanager
def atomic():
    _critical[0] += 1
    try:
        yield
    finally:
        _critical[0] -= 1
        if not _critical[0] and _pending:
            _pending.clear()
            raise KeyboardInterrupt


def install_signal_handlers() -> dict:
    """Route Ctrl-C and SIGTERM through `on_signal`; returns the previous handlers."""
    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


class Recorder:
    def __init__(self, client, exp_id: str, common_tags: dict):
        self.client, self.exp_id = client, exp_id
        commit = provenance.git_commit()
        self.common = {"suite.git_commit": commit, "suite.git_dirty": provenance.git_dirty(),
                       "suite.command": provenance.command_line(), "mlflow.source.git.commit": commit,
                       "mlflow.source.type": "LOCAL", "mlflow.user": provenance.user(), **common_tags}
        self.run_ids: dict[int, str] = {}  # task id -> MLflow run id, while the task is in flight
        self.pending: dict[str, list] = {}  # run id -> (name, value, step) not yet written
        self.flushed: dict[str, float] = {}  # run id -> when its metrics were last written

    def start(self, task: Task, tags: dict, params: dict | None = None) -> str:
        """The task's MLflow run, RUNNING, before a worker takes it."""
        params = {**flatten(task.config.canonical()), "seed": task.seed, **(params or {})}
        plugins = components.sources(task.config)
        if plugins:  # the packages (name==version) whose components the run uses
            tags = {**tags, "suite.plugins": ", ".join(plugins)}
        with atomic():
            resolved = {"config": task.config.canonical(), "seed": task.seed, **({"plugins": list(task.plugins)} if task.plugins else {})}
            run_id = tracking.start_run(self.client, self.exp_id, task.name, {**self.common, **tags}, params, resolved)
            self.run_ids[task.id] = run_id
        return run_id

    def event(self, task: Task, kind: str, payload) -> None:
        with atomic():
            self._event(self.run_ids[task.id], kind, payload)

    def _event(self, run_id: str, kind: str, payload) -> None:
        if kind == "started":
            tracking.set_tags(self.client, run_id, {"suite.device": payload["device"], "suite.host": payload["host"],
                                                    "suite.pid": payload["pid"], "suite.threads": payload["threads"],
                                                    "suite.cpu": payload["cpu"],
                                                    "suite.data_fingerprint": payload["data_fingerprint"],
                                                    **({"suite.adam_kernel": payload["adam_kernel"]} if "adam_kernel" in payload else {}),
                                                    **({"suite.pack_size": payload["pack_size"]} if "pack_size" in payload else {})})
            data = payload["data"]
            tracking.log_dataset(self.client, run_id, data["name"], payload["data_fingerprint"], data["root"], data["splits"])
        elif kind == "steps":
            self._stream(run_id, [("train_loss_step", loss, step) for step, loss in payload])
        elif kind == "epoch":
            epoch, metrics = payload
            self._stream(run_id, [(name, value, epoch) for name, value in metrics.items() if name not in METRIC_ALIASES])

    def _stream(self, run_id: str, items: list, force: bool = False) -> None:
        """Buffer a run's metrics and write them in one batch per FLUSH_SECONDS (tiny epochs would swamp the store)."""
        self.pending.setdefault(run_id, []).extend(items)
        now = time.monotonic()
        if force or now - self.flushed.get(run_id, 0.0) >= FLUSH_SECONDS:
            tracking.log_metric_items(self.client, run_id, self.pending.pop(run_id))
            self.flushed[run_id] = now

    def finish(self, task: Task, record: Record, tags: dict | None = None) -> str:
        """Close the run: final metrics; FINISHED (diverged runs too, tagged so), FAILED with the error line."""
        with atomic():
            return self._finish(task, record, tags)

    def _finish(self, task: Task, record: Record, tags: dict | None) -> str:
        run_id = self.run_ids[task.id]
        final = [(name, value, len(record.history)) for name, value in record.final.items() if name not in METRIC_ALIASES]
        self._stream(run_id, final, force=True)
        status = "FAILED" if record.status == FAILED else tracking.FINISHED
        tags = {"suite.status": record.status, "suite.worker_seconds": f"{record.seconds:.2f}", **(tags or {})}
        if record.status == DIVERGED:
            tags.update({"suite.diverged": True, "suite.diverged_reason": record.reason})
        elif record.status == FINISHED:
            tags.update({"suite.diverged": False, "suite.diverged_reason": ""})
        elif record.status in (FAILED, PRUNED):
            tags["suite.error" if record.status == FAILED else "suite.pruned"] = record.reason
        if record.weights is not None:
            self._log_weights(run_id, record.weights)
        if record.errors is not None:
            self._log_errors(run_id, record.errors)
        if record.status == FAILED and record.trace:
            tracking.log_text(self.client, run_id, record.trace, tracking.TRACEBACK)
        tracking.end_run(self.client, run_id, status, tags)
        del self.run_ids[task.id]
        self.flushed.pop(run_id, None)
        return run_id

    def _log_weights(self, run_id: str, weights: bytes) -> None:
        """The tested state_dict as `weights.pt`, the file the worker saved (tensors only: `torch.load(...,
        weights_only=True)` reads it)."""
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / WEIGHTS
            path.write_bytes(weights)
            tracking.log_files(self.client, run_id, [path])

    def _log_errors(self, run_id: str, errors: dict) -> None:
        """`test_errors.json` (confusion matrix, first misclassified test examples) and their images, `misclassified.npz`."""
        import json
        import tempfile
        from pathlib import Path

        import numpy as np

        with tempfile.TemporaryDirectory() as tmp:
            table = {k: v for k, v in errors.items() if k != "images"}
            (Path(tmp) / tracking.ERRORS).write_text(json.dumps(table))
            np.savez_compressed(Path(tmp) / tracking.GALLERY_FILE, images=errors["images"], true=np.array(errors["true"]),
                                predicted=np.array(errors["predicted"]), index=np.array(errors["index"]))
            tracking.log_files(self.client, run_id, [Path(tmp) / tracking.ERRORS, Path(tmp) / tracking.GALLERY_FILE])

    def drop(self, task: Task) -> None:
        """Forget a run whose claim another driver took over: it deleted (or will delete) our MLflow run."""
        with atomic():
            run_id = self.run_ids.pop(task.id)
            self.pending.pop(run_id, None)
            self.flushed.pop(run_id, None)
            try:
                tracking.delete_runs(self.client, [run_id])
            except Exception:  # already deleted by the driver that took it over
                pass

    def abandon(self) -> None:
        """Ctrl-C or a store failure: runs still in flight are KILLED (the next call trains them again).

        Best effort: when the store itself is what failed, they stay RUNNING and the next call deletes them.
        """
        with atomic():
            for run_id in self.run_ids.values():
                try:
                    self._stream(run_id, [], force=True)
                    tracking.end_run(self.client, run_id, "KILLED")
                except Exception:
                    pass
            self.run_ids.clear()
