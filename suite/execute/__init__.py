"""The executor: every run of a study, search or tuned comparison goes through it.

    plan (what is left to run) -> worker (`execute`, the one training loop) -> backend
    (serial / local pool / ray) -> recorder (the one writer, in the driver)

`Settings` is what the command line chooses (`--executor`, `--workers`, `--threads`,
`--device`, `--fused-optimizer`, `--pack`, `--pack-size`, `--ray-address`); `execution(settings)` is how its runs are
computed (part of their config and keys); `backend(settings, ...)` builds where they run.
"""

from __future__ import annotations

import glob
import os
import sys
from dataclasses import dataclass
from typing import Callable

from ..spec.config import Execution, RunConfig
from ..errors import OptionError, SuiteError

EXECUTORS = ("serial", "local", "ray")
WORKER_BYTES = {"cifar10": 0.75e9}  # tensors a worker holds per dataset (CIFAR-10 normalised: ~0.75 GB)
DEFAULT_WORKER_BYTES = 0.3e9
CPU_CACHE_FALLBACK = 32 * 2**20  # bytes of last-level cache when the OS does not say (this project's EPYC: 32 MiB)


@dataclass(frozen=True)
class Settings:
    executor: str = "local"
    workers: int | None = None  # None: cores / threads, capped by memory and by the number of tasks
    threads: int = 1
    device: str = "auto"  # auto: cuda where the workers have it, else cpu
    ray_address: str | None = None
    fused_optimizer: bool = False
    pack: bool | None = None  # train packable runs as packed models; None: on CUDA yes, on a CPU no (README: Speed)
    pack_size: int | None = None  # members per packed model; None: as many as fit (execute.pack_size)

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise OptionError(f"unknown executor '{self.executor}' (known: {', '.join(EXECUTORS)})")
        if self.threads < 1 or (self.workers is not None and self.workers < 1):
            raise OptionError("--workers and --threads take a positive number")
        if self.pack_size is not None and self.pack_size < 1:
            raise OptionError("--pack-size takes a positive number")
        if self.pack_size is not None and self.pack is False:
            raise OptionError("--pack-size sizes packed runs: drop it, or drop --no-pack")
        if self.executor == "serial" and self.workers not in (None, 1):
            raise OptionError(f"--workers {self.workers}: --executor serial trains one run at a time in this process; "
                              "drop one of them")
        if self.ray_address is not None and self.executor != "ray":
            raise OptionError(f"--ray-address is for --executor ray (this call's executor: {self.executor})")


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_memory() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_workers(threads: int, datasets, tasks: int) -> int:
    """Cores / threads, no more than memory holds (one dataset's tensors per worker), no more than the tasks."""
    per_worker = max(WORKER_BYTES.get(d, DEFAULT_WORKER_BYTES) for d in datasets) if datasets else DEFAULT_WORKER_BYTES
    by_memory = int(0.8 * available_memory() // per_worker)
    return max(1, min(cores() // threads, by_memory, tasks))


def pack_size(config: RunConfig, batch: int, budget: int) -> int:
    """How many members of this packed run's config (`batch` examples a step) fit in `budget` bytes: on a GPU half its
    free memory (the worker that trains the pack measures it), on a CPU its last-level cache (`cpu_cache_bytes`).
    By arithmetic (`spec.checks.model_size`, no torch): the driver sizes CPU packs without importing torch."""
    from ..spec.checks import model_size

    states = {"adam": 2, "adamw": 2, "momentum": 1}.get(config.optimizer.name, 0)  # optimizer state per parameter
    need = 4 * ((2 + states) * model_size(config)[0] + 3 * batch * sum(config.model.hidden))  # + weights, gradients, activations
    return max(1, budget // need)


def cpu_cache_bytes() -> int:
    """The largest CPU cache the OS reports (Linux sysfs), else CPU_CACHE_FALLBACK."""
    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes, default=CPU_CACHE_FALLBACK)


def execution(settings: Settings, trains: bool = True) -> Execution:
    """The device and threads every run of this call is computed with (`trains` False: the runs a reading command
    reads, which need no CUDA here to have been computed with it).

    `auto` is CUDA when this machine has it; on Ray the driver cannot see the workers' devices,
    so `auto` is the CPU there and `--device cuda` asks the cluster for one GPU per worker.
    """
    device = settings.device
    if checks_cuda(settings) and (trains or device == "auto"):
        if device == "cuda" and not cuda_here():
            raise OptionError("--device cuda, but this machine has no CUDA device (a report of runs trained on a GPU "
                              "needs none: `suite report NAME --device cuda`)")
        device = "cuda" if cuda_here() else "cpu"
    device = "cpu" if device == "auto" else device
    # packing is off by default on a CPU: measured here, the catalogue's 3M-parameter MLP trains slower packed
    packed = settings.pack if settings.pack is not None else device == "cuda"
    if settings.pack_size is not None and not packed:
        raise OptionError("--pack-size sizes packed runs, and packing is off on a CPU by default: add --pack")
    return Execution(device=device, threads=settings.threads, fused_optimizer=settings.fused_optimizer, packed=packed)


_cuda: list[bool] = []  # this process's answer to "does torch find a CUDA device here?", once known


def cuda_here(ask: Callable[[], bool | None] | None = None) -> bool:
    """Whether torch finds a CUDA device on this machine, asked once per process: of `ask` where given (a pool worker
    that imports torch anyway answers while the driver imports MLflow; None: it could not), else of torch here."""
    if not _cuda:
        answer = ask() if ask is not None else None
        if answer is None:
            import torch

            answer = torch.cuda.is_available()
        _cuda.append(answer)
    return _cuda[0]


def checks_cuda(settings: Settings) -> bool:
    """Whether `execution(settings)` asks torch about CUDA (`cuda_here`: a first worker, or torch in the driver): not on
    Ray (the cluster's workers decide), not for --device cpu, not for `auto` on a machine with no GPU to find."""
    return settings.executor != "ray" and settings.device != "cpu" and not (settings.device == "auto" and _no_gpu_here())


def _no_gpu_here() -> bool:
    """Linux with no GPU device node (NVIDIA's /dev/nvidia0..., WSL's /dev/dxg, ROCm's /dev/kfd) and no NVIDIA driver
    that knows a GPU (/proc/driver/nvidia/gpus: the nodes may appear only at the first CUDA call): torch.cuda cannot
    find one here, and the driver need not import torch (~3 s of its start) to hear so."""
    return sys.platform.startswith("linux") and not glob.glob("/dev/nvidia[0-9]*") and not any(
        os.path.exists(node) for node in ("/dev/dxg", "/dev/kfd")) and not glob.glob("/proc/driver/nvidia/gpus/*")


def check_threads(settings: Settings) -> None:
    """Before anything trains: no more threads per run, nor workers x threads in a local pool, than this machine has
    cores (Ray places each actor's threads on a node that has them), and a folder for the core slots that hold them.
    A call with nothing left to train never asks."""
    if settings.executor != "ray" and settings.threads > cores():
        raise OptionError(f"--threads {settings.threads} is more than this machine's {cores()} cores: threads beyond the cores "
                         "run 4-10x slower; use at most that many here, or a machine (--executor ray) that has them")
    if settings.executor == "local" and settings.workers and settings.workers * settings.threads > cores():
        raise OptionError(f"--workers {settings.workers} x --threads {settings.threads} is more than this machine's {cores()} cores: "
                         f"threads beyond the cores run 4-10x slower; use --workers {cores() // settings.threads} or fewer here")
    if settings.executor != "ray":  # (Ray's workers hold the slots of their own nodes)
        from .worker import check_slots

        check_slots()


def backend(settings: Settings, datasets=(), tasks: int = 1):
    from .backends import LocalPool, RayBackend, Serial

    if settings.executor == "serial":
        return Serial()
    if settings.executor == "local":
        return LocalPool(min(settings.workers, tasks) if settings.workers else default_workers(settings.threads, datasets, tasks),
                         settings.threads)
    try:
        import ray  # noqa: F401
    except ImportError:
        raise SuiteError("--executor ray needs Ray: pip install -e '.[ray]'") from None
    # default: the cluster's CPUs / threads (known once connected), no more than the tasks
    return RayBackend(settings.workers, settings.threads, settings.ray_address, gpus=settings.device == "cuda", tasks=tasks)
