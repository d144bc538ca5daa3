"""Where a result came from: git commit, library versions, device, the command line."""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "torchvision", "mlflow", "optuna", "numpy", "pandas", "scipy", "seaborn")


CODE = Path(__file__).resolve().parent.parent  # the checkout this suite's code runs from (in a pip install: site-packages)


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=root)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


NO_GIT = "not a git checkout"  # what runs record as their commit when trained outside one (e.g. a pip-installed suite)


def git_commit(root: Path = CODE) -> str:
    """The commit of the checkout whose files the code under `root` is (wherever the command was started, and wherever
    in that checkout the project sits), or NO_GIT: a pip-installed suite's site-packages are no checkout's files,
    even inside another project's repository."""
    if not _git(root, "ls-files", "--", "suite/provenance.py"):  # (empty where untracked, or outside any checkout)
        return NO_GIT
    return _git(root, "rev-parse", "HEAD") or NO_GIT


# Generated output, not code: `make study` rewrites committed reports, which must not mark the runs
# that follow as trained from a modified tree.
GENERATED = ("reports",)


def git_dirty(root: Path = CODE) -> bool:
    """True when tracked files other than generated reports differ from the commit (untracked files do not count)."""
    if git_commit(root) == NO_GIT:
        return False
    excluded = [f":(exclude){folder}" for folder in GENERATED]
    return bool(_git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded))


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo on Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    # PyTorch's CPU kernels, and oneDNN's (convolutions), are picked for the processor's vector instructions (AVX2,
    # AVX512, ...): their sums round differently, so a run's numbers depend on them (README "Reproducibility")
    kernels = f"{torch.backends.cpu.get_cpu_capability()} kernels"
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return (f"cpu: {platform.processor() or platform.machine()} ({kernels}{f', oneDNN up to {onednn}' if onednn else ''}), "
            f"{threads} thread{'s' if threads != 1 else ''}")


def user() -> str:
    """Who ran it (the login name; MLflow's `mlflow.user`)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER, e.g. in some containers
        return "unknown"


def redact(text: str) -> str:
    """Any password in a URL (scheme://user:password@host) replaced by ***: fit for tags, logs and reports."""
    return re.sub(r"(://[^/:@\s]+:)[^/@\s]+@", r"\1***@", text)


def command_line() -> str:
    """The command as typed, passwords in storage URLs redacted."""
    return redact(" ".join(shlex.quote(a) for a in ["suite", *sys.argv[1:]]))
