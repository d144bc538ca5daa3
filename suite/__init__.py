"""suite: reproducible benchmark and ablation studies for deep learning.

    make study STUDY=regularization    # or: python -m suite study regularization
"""

import os
from pathlib import Path

__version__ = "0.1.0"


def data_root(cli_value: str | None = None) -> Path:
    """Where datasets are read (and downloaded to when online): --data-dir, else $SUITE_DATA_DIR, else ./data."""
    return Path(cli_value or os.environ.get("SUITE_DATA_DIR") or "data")


def cache_dir() -> Path:
    """Where the suite keeps what it makes once per machine (adam.c's library, the empty MLflow store):
    $XDG_CACHE_HOME/suite, by default ~/.cache/suite."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "suite"


def plural(count: int, noun: str) -> str:
    """'1 run', '3 runs'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
