"""Training: determinism, seeds, divergence, early stopping, augmentation; on real MNIST cut small."""

import pytest
import torch

from suite import components
from suite.spec.config import RunConfig
from suite.components.data import augment_batch, load_splits
from suite.execute.train import make_optimizer, train_run

from conftest import needs_mnist

CPU = torch.device("cpu")


def config(**over) -> RunConfig:
    base = {"data": {"name": "mnist", "train_size": 300, "val_size": 200, "test_size": 300},
            "model": {"name": "mlp", "hidden": [32], "dropout": 0.2},
            "optimizer": {"name": "adam", "lr": 0.01},
            "train": {"batch_size": 50, "epochs": 2}}
    for section, values in over.items():
        base[section] = {**base[section], **values}
    return RunConfig(**base)


@pytest.fixture
def splits(data_dir):
    return load_splits(config().data, data_dir, CPU)


@needs_mnist
def test_splits_are_carved_deterministically_and_normalised(splits, data_dir):
    again = load_splits(config().data, data_dir, CPU)
    assert torch.equal(splits.val_x, again.val_x) and torch.equal(splits.train_y, again.train_y)
    assert splits.train_x.shape == (300, 1, 28, 28) and splits.val_x.shape == (200, 1, 28, 28) and splits.test_x.shape == (300, 1, 28, 28)
    full = load_splits(config(data={"train_size": None, "test_size": None}).data, data_dir, CPU)
    assert len(full.train_x) == 60000 - 200 and len(full.test_x) == 10000
    assert abs(full.train_x.mean().item()) < 0.01 and abs(full.train_x.std().item() - 1) < 0.02  # normalised with MNIST's stats


@needs_mnist
def test_same_seed_same_metrics_bitwise_and_other_seed_differs(splits):
    cfg = config(data={"augment": {"rotation": 20}})
    first, second = train_run(cfg, 3, splits, CPU), train_run(cfg, 3, splits, CPU)
    strip = lambda r: [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in r.history]  # noqa: E731
    assert strip(first) == strip(second) and len(strip(first)) == 2
    assert first.final["test_acc"] == second.final["test_acc"] and first.final["test_loss"] == second.final["test_loss"]
    other = train_run(cfg, 4, splits, CPU)
    assert other.final["test_loss"] != first.final["test_loss"]


@needs_mnist
def test_absurd_learning_rate_is_recorded_as_diverged(splits):
    result = train_run(config(optimizer={"name": "sgd", "lr": 1e6}, model={"dropout": 0.0}), 0, splits, CPU)
    assert result.diverged and "non-finite" in result.reason
    assert result.final["diverged"] == 1.0 and result.reason.endswith(f"epoch {result.final['epochs_trained']}")
    assert len(result.history) == result.final["epochs_trained"] - 1  # the diverged epoch logs no metrics


@needs_mnist
def test_early_stopping_restores_the_best_epoch(splits):
    seen = []
    result = train_run(config(train={"epochs": 30, "patience": 2}, optimizer={"lr": 0.05}), 0, splits, CPU,
                       on_epoch=lambda epoch, m: seen.append(m["val_acc"]))
    assert result.final["epochs_trained"] < 30
    best = max(range(len(seen)), key=lambda i: (seen[i], -i)) + 1
    assert result.final["best_epoch"] == best == result.final["tested_epoch"]
    assert result.final["epochs_trained"] - best == 2  # stopped after `patience` epochs without improvement


# What each built-in name must build, written out here apart from the registry (adam and adamw may step through
# suite.execute.kernels' one-pass subclasses of PyTorch's classes: the same numbers).
TORCH_CLASS = {"sgd": torch.optim.SGD, "momentum": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam,
               "adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad, "nadam": torch.optim.NAdam, "radam": torch.optim.RAdam,
               "adadelta": torch.optim.Adadelta}


@pytest.mark.parametrize("name", components.names("optimizer"))
def test_every_optimizer_builds_its_torch_class_with_its_settings(name):
    cfg = config(optimizer={"name": name, "lr": 0.1})
    opt = make_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(2))])
    built = next(c for c in type(opt).__mro__ if c.__module__.startswith("torch.optim"))  # (AdamW subclasses Adam)
    assert built is TORCH_CLASS[name] and opt.param_groups[0]["lr"] == 0.1
    if name == "momentum":  # the class's own default is no momentum at all
        assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["nesterov"] is False
    if name == "sgd":
        assert opt.param_groups[0]["momentum"] == 0


def test_rotation_keeps_shape_pads_black_and_is_seeded():
    x = torch.randn(8, 1, 28, 28)
    fill = torch.tensor([-0.4242])
    aug = config(data={"augment": {"rotation": 20}}).data.augment
    a = augment_batch(x, aug, fill, torch.Generator().manual_seed(0))
    b = augment_batch(x, aug, fill, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    corner = augment_batch(torch.zeros(4, 1, 28, 28) + 5, config(data={"augment": {"rotation": 45}}).data.augment, fill,
                           torch.Generator().manual_seed(1))[:, 0, 0, 0]
    assert torch.all(corner < 5)  # rotated-in corners are filled towards black, not left at the image value


def test_crop_and_flip_move_pixels_and_keep_shape():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float).view(2, 3, 8, 8)
    aug = RunConfig(data={"name": "cifar10", "augment": {"hflip": True, "crop_pad": 2}}).data.augment
    out = augment_batch(x, aug, torch.zeros(3), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)


@pytest.mark.parametrize("name", components.names("optimizer"))
def test_fused_optimizer_reaches_the_optimizer_where_pytorch_has_a_fused_kernel(name):
    from suite.spec.config import FUSED_OPTIMIZERS

    cfg = config(optimizer={"name": name, "lr": 0.1})
    opt = make_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(2))], fused=True)
    assert bool(opt.param_groups[0].get("fused")) == (name in FUSED_OPTIMIZERS)


@needs_mnist
def test_fused_adam_trains_to_nearly_the_same_numbers_under_another_key(splits):
    from suite.spec.config import Execution
    from suite.spec.study import run_key, with_execution

    plain = config(optimizer={"lr": 0.001}, model={"dropout": 0.0})
    fused = with_execution(plain, Execution(fused_optimizer=True))
    assert run_key(fused, 0) != run_key(plain, 0)
    a, b = train_run(plain, 0, splits, CPU), train_run(fused, 0, splits, CPU)
    assert b.final["test_loss"] == pytest.approx(a.final["test_loss"], rel=1e-4)
    # the flag is dropped (and the key kept) for an optimizer without a fused kernel
    rms = config(optimizer={"name": "rmsprop", "lr": 0.001})
    assert run_key(with_execution(rms, Execution(fused_optimizer=True)), 0) == run_key(rms, 0)
