"""MNIST-layout files are read exactly as torchvision reads them: extracted MNIST/raw and Fashion-MNIST (also from Debian's `dataset-fashion-mnist`)."""

import gzip
import subprocess
import sys

import pytest
import torch

from suite import components
from suite.components import data
from suite.errors import DataError

from conftest import IN_CI, needs_mnist

debian = pytest.mark.skipif(not data.debian_fashion_installed() and not IN_CI,
                            reason=f"Debian's dataset-fashion-mnist is not installed ({data.DEBIAN_FASHION})")


def torchvision_reads(cls, root) -> dict:
    """What torchvision's own dataset class reads from `root` (its `<cls>/raw` layout)."""
    train, test = cls(str(root), train=True), cls(str(root), train=False)
    return {"train_x": train.data.unsqueeze(1), "train_y": train.targets.long(), "test_x": test.data.unsqueeze(1),
            "test_y": test.targets.long()}


@debian
def test_debian_fashion_mnist_equals_torchvision_on_the_same_files(tmp_path):
    from torchvision.datasets import FashionMNIST

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data.IDX_FILES:
        (raw / name.removesuffix(".gz")).write_bytes(gzip.decompress((data.DEBIAN_FASHION / name).read_bytes()))
    ours = data._idx(data.DEBIAN_FASHION, data.IDX_FILES, data.FASHION_STATS)
    extracted = data.load_raw("fashion_mnist", str(tmp_path))  # a root with FashionMNIST/raw: read there, as torchvision does
    assert extracted.files[0].parent == raw
    for field, theirs in torchvision_reads(FashionMNIST, tmp_path).items():
        assert torch.equal(getattr(ours, field), theirs), field
        assert torch.equal(getattr(extracted, field), theirs), field
    assert ours.train_x.shape == (60000, 1, 28, 28) and torch.equal(ours.train_y.bincount(), torch.full((10,), 6000))
    # the published normalisation statistics are those of these images
    pixels = ours.train_x.float() / 255
    assert pixels.mean().item() == pytest.approx(data.FASHION_STATS[0][0], abs=5e-5)
    assert pixels.std().item() == pytest.approx(data.FASHION_STATS[1][0], abs=5e-5)


@debian
def test_an_empty_data_root_falls_back_to_the_debian_package(tmp_path):
    raw = data.load_raw("fashion_mnist", str(tmp_path / "empty"))
    assert raw.files == tuple(data.DEBIAN_FASHION / f for f in data.IDX_FILES)


def test_a_damaged_idx_file_is_one_line(tmp_path):
    for name in data.IDX_FILES:
        (tmp_path / name).write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 12))
    with pytest.raises(DataError, match=r"is not an IDX file of shape \(60000, 28, 28\)") as err:
        data._idx(tmp_path, data.IDX_FILES, data.FASHION_STATS)
    assert "\n" not in str(err.value)


@needs_mnist
def test_extracted_mnist_is_read_as_torchvision_reads_it_without_importing_torchvision(data_dir):
    """Workers read MNIST/raw's IDX files themselves: importing torchvision took ~3 s of each worker's start."""
    from torchvision.datasets import MNIST

    ours = data.mnist(data_dir)
    for field, theirs in torchvision_reads(MNIST, data_dir).items():
        assert torch.equal(getattr(ours, field), theirs), field
    assert ours.files == tuple(sorted(p for p in (data_dir / "MNIST" / "raw").iterdir() if p.suffix != ".gz"))
    probe = ("import sys; from suite.components import data; "
             f"data.load_raw('mnist', {str(data_dir)!r}); print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_missing_fashion_mnist_names_every_place_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION", tmp_path / "no-package")
    root = tmp_path / "nowhere"
    try:
        data.load_raw("fashion_mnist", str(root))
    except DataError as err:
        message = str(err)
    else:
        pytest.skip("online: Fashion-MNIST was downloaded")
    assert "\n" not in message and str(root.resolve()) in message
    assert "SUITE_DATA_DIR" in message and "dataset-fashion-mnist" in message


@pytest.mark.parametrize("name", [c.name for c in components.records("dataset") if c.test_split])
def test_full_test_split_sizes_and_largest_class_shares_are_those_of_the_files(name, data_dir):
    from conftest import has_dataset

    if not has_dataset(name) and not IN_CI:
        pytest.skip(f"{name} not found under {data_dir}")
    raw = data.load_raw(name, str(data_dir))
    size, share = components.get("dataset", name).test_split
    assert len(raw.test_y) == size and torch.bincount(raw.test_y).max().item() / size == share


@pytest.mark.parametrize("name", [c.name for c in components.records("dataset") if c.train_split])
def test_training_split_sizes_are_those_of_the_files(name, data_dir):
    """The sizes study files are checked against at load (data.val_size, data.train_size)."""
    from conftest import has_dataset

    if not has_dataset(name) and not IN_CI:
        pytest.skip(f"{name} not found under {data_dir}")
    assert len(data.load_raw(name, str(data_dir)).train_x) == components.get("dataset", name).train_split


def test_a_training_size_beyond_the_data_is_one_line_not_fewer_examples(data_dir):
    """Where the registry does not know the size (a plug-in's dataset), the run says so instead of training on fewer."""
    from suite.errors import DataError
    from suite.spec.config import DataConfig

    with pytest.raises(DataError, match="data.train_size 5801 is more than the 5800 training examples quadratic has beside data.val_size 200"):
        data.load_splits(DataConfig(name="quadratic", val_size=200, train_size=5801), data_dir, torch.device("cpu"))
    assert len(data.load_splits(DataConfig(name="quadratic", val_size=200, train_size=5800), data_dir, torch.device("cpu")).train_x) == 5800
