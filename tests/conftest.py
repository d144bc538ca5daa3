"""Shared fixtures: the real datasets (cut small by the study configs) and a throw-away MLflow store.

Data root: $SUITE_DATA_DIR, else ../shared/data beside the repository (as in CI). Tests that
need a dataset that is not there are skipped with the reason, except under CI=true (IN_CI), where
they run and fail: a green CI has really run them.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SUITE_DATA_DIR") or ROOT.parent / "shared" / "data")
IN_CI = os.environ.get("CI") == "true"


def run_python(args, path, cwd, **kwargs) -> subprocess.CompletedProcess:
    """`python ARGS` in a fresh interpreter, in `cwd`, with `path` (a plug-in's folder) and the suite importable and the
    shared data: how a researcher runs the suite beside a plug-in of their own."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), str(ROOT)]), "SUITE_DATA_DIR": str(DATA_DIR)}
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600, **kwargs)


def has_mnist() -> bool:
    return (DATA_DIR / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()


def has_cifar10() -> bool:
    return (DATA_DIR / "cifar10" / "cifar10.npz").is_file() or (DATA_DIR / "cifar-10-batches-py").is_dir()


def has_fashion_mnist() -> bool:
    from suite.components.data import debian_fashion_installed

    return (DATA_DIR / "FashionMNIST").is_dir() or debian_fashion_installed()


def has_dataset(name: str) -> bool:
    """Whether a run on dataset `name` can find its data here (its registry record's loader reads it; cached per process)."""
    from suite.components.data import load_raw
    from suite.errors import DataError

    try:
        load_raw(name, str(DATA_DIR))
    except DataError:
        return False
    return True


needs_mnist = pytest.mark.skipif(not has_mnist() and not IN_CI, reason=f"MNIST not found under {DATA_DIR}; set SUITE_DATA_DIR")
needs_cifar10 = pytest.mark.skipif(not has_cifar10() and not IN_CI, reason=f"CIFAR-10 not found under {DATA_DIR}; set SUITE_DATA_DIR")


@pytest.fixture
def data_dir() -> Path:
    return DATA_DIR


def store_at(path: Path) -> str:
    """The sqlite URI of the MLflow store at `path`; where there is none yet, it starts as the suite's own
    new stores do, as a copy of the empty store cached once per machine (suite.tracking: a new sqlite
    store otherwise runs MLflow's ~50 schema migrations, 2-4 s each time, for ~40 tests)."""
    from suite.tracking import _start_from_template

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{path}"
    _start_from_template(uri)
    return uri


@pytest.fixture
def store(tmp_path) -> str:
    """A fresh sqlite MLflow store for one test."""
    return store_at(tmp_path / "mlflow.db")


TINY_STUDY = """
name: tiny
question: Does weight decay change anything on a tiny MNIST MLP?
datasets: [mnist]
seeds: 2
metric: test_acc
baseline: none
base:
  data: {train_size: 300, val_size: 200, test_size: 300}
  model: {name: mlp, hidden: [32]}
  optimizer: {name: adam, lr: 0.01}
  train: {batch_size: 50, epochs: 2}
variants:
  none: {}
  wd: {optimizer: {weight_decay: 0.01}}
claims:
  - wd > none
smoke:
  seeds: 2
  epochs: 1
  train_size: 200
  val_size: 100
  test_size: 200
"""


@pytest.fixture
def tiny_study(tmp_path) -> Path:
    """A study file small enough to train end to end in a few seconds."""
    folder = tmp_path / "studies"
    folder.mkdir()
    path = folder / "tiny.yaml"
    path.write_text(TINY_STUDY)
    return path
