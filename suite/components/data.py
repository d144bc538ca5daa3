"""Datasets as tensors: load once, normalise once, split deterministically, hold on the device.

Image sets come through torchvision's own dataset classes (which download when online);
CIFAR-10 also loads from a `cifar10/cifar10.npz` of uint8 arrays when torchvision's pickled
batches are not there. Batches are drawn by index from one normalised tensor per split, and
augmentation runs batch-wise on tensors (`augment_batch`), not per sample through PIL.

The data root is `--data-dir`, else $SUITE_DATA_DIR, else ./data.
"""

from __future__ import annotations

import functools
import hashlib
import math
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..spec.config import Augment, DataConfig
from ..errors import DataError

SPLIT_SEED = 20240101  # fixes which training images form the validation split, in every run

# Per-channel statistics of the training sets, in [0, 1] pixel units (the usual published values).
MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@dataclass(frozen=True)
class Raw:
    """A whole dataset as loaded: images N x C x H x W (uint8 or float), integer or float targets."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]  # normalisation, in the units of x scaled to [0, 1]
    std: tuple[float, ...]
    scale: float  # divide x by this first (255 for uint8 images)
    files: tuple[Path, ...]  # what was read, for checksums


@dataclass(frozen=True)
class Splits:
    """Normalised tensors on the run's device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    fill: torch.Tensor  # the normalised value of a black pixel, per channel (padding for augmentation)
    task: str
    num_outputs: int

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def load_splits(config: DataConfig, root: Path, device: torch.device) -> Splits:
    """Train/validation/test tensors for one run, normalised and on `device`."""
    raw = load_raw(config.name, str(root))
    n = len(raw.train_x)
    if config.val_size >= n:
        raise DataError(f"data.val_size {config.val_size} leaves no training data ({config.name} has {n} training examples)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    val_idx, train_idx = order[: config.val_size], order[config.val_size:]
    if config.train_size is not None:
        if config.train_size > len(train_idx):  # (study files are checked at load where the registry knows the size)
            raise DataError(f"data.train_size {config.train_size} is more than the {len(train_idx)} training examples "
                            f"{config.name} has beside data.val_size {config.val_size}")
        train_idx = train_idx[: config.train_size]
    if config.train_fraction is not None:
        train_idx = train_idx[: max(1, round(len(train_idx) * config.train_fraction))]
    test_n = len(raw.test_x) if config.test_size is None else min(config.test_size, len(raw.test_x))
    mean = torch.tensor(raw.mean).view(1, -1, 1, 1) if raw.train_x.dim() == 4 else torch.tensor(raw.mean)
    std = torch.tensor(raw.std).view(1, -1, 1, 1) if raw.train_x.dim() == 4 else torch.tensor(raw.std)

    def prepare(x):
        return ((x.float() / raw.scale - mean) / std).to(device)

    task = "regression" if raw.train_y.is_floating_point() else "classification"
    return Splits(
        train_x=prepare(raw.train_x[train_idx]), train_y=raw.train_y[train_idx].to(device),
        val_x=prepare(raw.train_x[val_idx]), val_y=raw.train_y[val_idx].to(device),
        test_x=prepare(raw.test_x[:test_n]), test_y=raw.test_y[:test_n].to(device),
        fill=(-mean / std).reshape(-1).to(device), task=task,
        num_outputs=1 if task == "regression" else int(raw.train_y.max()) + 1,
    )


@functools.lru_cache(maxsize=4)
def load_raw(name: str, root: str) -> Raw:
    """Read a dataset from disk once per process (cached by name and root)."""
    from . import get

    try:
        loader = get("dataset", name).load()
    except ValueError as err:
        raise DataError(str(err)) from None
    return loader(Path(root))


@functools.lru_cache(maxsize=8)
def fingerprint(name: str, root: Path) -> str:
    """sha256 over the files a dataset was read from (first 16 hex digits); 'generated' for synthetic data."""
    raw = load_raw(name, str(root))
    if not raw.files:
        return "generated"
    digest = hashlib.sha256()
    for path in raw.files:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- augmentation


def augment_batch(x: torch.Tensor, aug: Augment, fill: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each augmentation switched on, in order (built-ins: rotation, horizontal flip, padded crop), one draw per image.

    Pixels that come in from outside the image are black (`fill`), as with torchvision's transforms.
    """
    from . import get

    for name, value in aug.active():
        x = get("augmentation", name).load()(x, value, fill, gen)
    return x


def rotate(x, degrees, fill, gen):
    """Random rotation by ±degrees."""
    b = len(x)
    angle = (torch.rand(b, generator=gen, device=x.device) * 2 - 1) * math.radians(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    f = fill.view(1, -1, 1, 1)
    return F.grid_sample(x - f, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + f


def hflip(x, on, fill, gen):
    """Horizontal flip of each image with probability 1/2."""
    flip = torch.rand(len(x), generator=gen, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def shift_crop(x, pad, fill, gen):
    """Random crop of the original size after padding by `pad` pixels."""
    b, c, h, w = x.shape
    f = fill.view(1, -1, 1, 1)
    padded = F.pad(x - f, (pad, pad, pad, pad)) + f
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen, device=x.device)
    rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    return padded[torch.arange(b, device=x.device).view(b, 1, 1, 1), torch.arange(c, device=x.device).view(1, c, 1, 1), rows, cols]


# ---------------------------------------------------------------- loaders


def _missing(name: str, root: Path, expected: str, reason: str) -> DataError:
    return DataError(
        f"{name} not found in {root.resolve()}/{expected} and it could not be downloaded ({reason}); "
        f"put the files there, or point --data-dir or SUITE_DATA_DIR at a folder that has {expected}"
    )


def _torchvision_pair(cls, name: str, root: Path, expected: str):
    try:
        return cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)
    except RuntimeError:
        pass
    try:
        return cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
    except Exception as err:  # offline, read-only root, bad checksum: one line either way
        reason = str(err).strip().splitlines()
        raise _missing(name, root, expected, reason[-1][:160] if reason else type(err).__name__) from None


def _mnist_like(folder: str, name: str, root: Path, stats) -> Raw:
    """torchvision's `<folder>/raw` layout under the data root. Where its four IDX files are already there (extracted),
    they are read here, as torchvision reads them, without importing torchvision (~3 s of every worker's start);
    otherwise torchvision's class finds, extracts or downloads them."""
    raw_dir = root / folder / "raw"
    extracted = tuple(f.removesuffix(".gz") for f in IDX_FILES)
    if all((raw_dir / f).is_file() for f in extracted):
        raw = _idx(raw_dir, extracted, stats)
    else:
        import torchvision.datasets

        train, test = _torchvision_pair(getattr(torchvision.datasets, folder), name, root, f"{folder}/raw")
        raw_dir = Path(train.raw_folder)
        raw = Raw(train.data.unsqueeze(1), train.targets.long(), test.data.unsqueeze(1), test.targets.long(),
                  stats[0], stats[1], 255.0, ())
    return replace(raw, files=tuple(sorted(p for p in raw_dir.iterdir() if p.suffix != ".gz")))


def mnist(root: Path) -> Raw:
    return _mnist_like("MNIST", "MNIST", root, MNIST_STATS)


# Debian's `dataset-fashion-mnist` installs the original files here (gzip-recompressed, so their
# checksums differ from torchvision's; the contents are checked as they are read).
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def debian_fashion_installed() -> bool:
    return all((DEBIAN_FASHION / f).is_file() for f in IDX_FILES)


def fashion_mnist(root: Path) -> Raw:
    """torchvision's `FashionMNIST/raw` under the data root; else Debian's package; else download."""
    if not (root / "FashionMNIST" / "raw").is_dir() and debian_fashion_installed():
        return _idx(DEBIAN_FASHION, IDX_FILES, FASHION_STATS)
    try:
        return _mnist_like("FashionMNIST", "Fashion-MNIST", root, FASHION_STATS)
    except DataError as err:
        raise DataError(f"{err}, or install Debian's dataset-fashion-mnist ({DEBIAN_FASHION})") from None


def _idx(folder: Path, names: tuple[str, ...], stats) -> Raw:
    """The four IDX files (gzipped where a name ends in .gz) of an MNIST-layout dataset: 60,000 + 10,000 28x28 images,
    labels 0-9; `names` in the order of IDX_FILES."""
    import gzip

    def read(name: str, magic: int, shape: tuple[int, ...]) -> torch.Tensor:
        blob = (folder / name).read_bytes()
        blob = gzip.decompress(blob) if name.endswith(".gz") else blob
        header = 4 * (1 + len(shape))
        dims = tuple(int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(len(shape)))
        if int.from_bytes(blob[:4], "big") != magic or dims != shape or len(blob) != header + math.prod(shape):
            raise DataError(f"{folder / name} is not an IDX file of shape {shape}; reinstall it or point --data-dir elsewhere")
        return torch.from_numpy(np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(shape).copy())

    train_x, train_y = read(names[0], 2051, (60000, 28, 28)), read(names[1], 2049, (60000,))
    test_x, test_y = read(names[2], 2051, (10000, 28, 28)), read(names[3], 2049, (10000,))
    if int(max(train_y.max(), test_y.max())) > 9:
        raise DataError(f"labels in {folder} go beyond 0-9; reinstall the files or point --data-dir elsewhere")
    return Raw(train_x.unsqueeze(1), train_y.long(), test_x.unsqueeze(1), test_y.long(), stats[0], stats[1], 255.0,
               tuple(folder / f for f in names))


def cifar10(root: Path) -> Raw:
    """torchvision's pickled batches when present, else `cifar10/cifar10.npz`, else download."""
    npz = root / "cifar10" / "cifar10.npz"
    if not (root / "cifar-10-batches-py").is_dir() and npz.is_file():
        try:
            with np.load(npz, allow_pickle=False) as arrays:
                parts = [torch.from_numpy(arrays[k]) for k in ("train_images", "train_labels", "test_images", "test_labels")]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise DataError(f"{npz} is not a readable CIFAR-10 archive ({str(err).splitlines()[0][:120]}); "
                            "restore it or point --data-dir elsewhere") from None
        tx, ty, vx, vy = parts
        return Raw(tx.permute(0, 3, 1, 2).contiguous(), ty.long(), vx.permute(0, 3, 1, 2).contiguous(), vy.long(),
                   *CIFAR10_STATS, 255.0, (npz,))
    from torchvision.datasets import CIFAR10

    train, test = _torchvision_pair(CIFAR10, "CIFAR-10", root, "cifar-10-batches-py (or cifar10/cifar10.npz)")
    folder = root / "cifar-10-batches-py"
    files = tuple(sorted(p for p in folder.iterdir() if "batch" in p.name))
    to_tensor = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return Raw(to_tensor(train.data), torch.tensor(train.targets), to_tensor(test.data), torch.tensor(test.targets),
               *CIFAR10_STATS, 255.0, files)


QUADRATIC_TRAIN, QUADRATIC_POOL, QUADRATIC_TEST = 1000, 6000, 1000
QUADRATIC_SEED = 7


def quadratic(root: Path) -> Raw:
    """The tutorials' toy regression: y = x^2 + 0.1 * N(0, 1), x ~ U[-1, 1]; fixed draws.

    The training pool holds 6,000 points so that any validation carve-out up to 5,000 leaves
    1,000 or more; studies set `data.train_size: 1000` to train on exactly the tutorial's 1,000.
    """
    gen = torch.Generator().manual_seed(QUADRATIC_SEED)

    def draw(n):
        x = torch.rand(n, 1, generator=gen) * 2 - 1
        return x, x.pow(2) + 0.1 * torch.randn(n, 1, generator=gen)

    tx, ty = draw(QUADRATIC_POOL)
    vx, vy = draw(QUADRATIC_TEST)
    return Raw(tx, ty, vx, vy, (0.0,), (1.0,), 1.0, ())
