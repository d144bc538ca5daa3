"""suite: reproducible benchmark and ablation studies for deep learning.

    make study STUDY=regularization    # or: python -m suite study regularization
"""

import os
from pathlib import Path

__version__ = "0.1.0"


def cache_dir() -> Path:
    """Where the suite keeps what it makes once per machine (adam.c's library, the empty MLflow store):
    $XDG_CACHE_HOME/suite, by default ~/.cache/suite."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "suite"
