"""Train one run: a pure function of its config and seed.

`train_run` is the whole loop on one screen: shuffle, augment, forward, loss, backward,
step; evaluate on the validation split each epoch; stop early on `patience`; restore the
best epoch's weights; evaluate the test split once. Four generators derived from the seed
(init, data order, augmentation, dropout) make seed k draw the same numbers in every
variant. A non-finite loss ends the run as diverged instead of raising.

The seams are `on_epoch(epoch, metrics)`, called after each epoch, and `on_step(step,
loss)`, called with the training loss of every `STEP_EVERY`-th batch; the executor's worker
streams both to the driver (and may stop a pruned trial from `on_epoch` by raising).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .config import FUSED_OPTIMIZERS, RunConfig
from .data import Splits, augment_batch
from .errors import SuiteError
from .models import build_model

EVAL_BATCH = 4096  # examples per forward pass when evaluating; memory only, results identical
TRAIN_EVAL_SIZE = 5000  # training images re-evaluated at the end (eval mode, no augmentation) for the generalisation gap
STEP_EVERY = 50  # batches between non-finite loss checks and streamed step losses (each syncs a GPU)


@dataclass
class RunResult:
    history: list[dict] = field(default_factory=list)  # one dict of metrics per epoch
    final: dict = field(default_factory=dict)  # test_loss, test_acc, epochs_trained, ...
    diverged: bool = False
    reason: str = ""
    state: dict | None = None  # the tested weights (the restored best epoch's, or the last): model.state_dict()
    test_predictions: torch.Tensor | None = None  # classification: the predicted class of every test example, on the CPU


def resolve_device(name: str) -> torch.device:
    """The torch device of a run's `execution.device` (cpu or cuda)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SuiteError("this run is to be computed on CUDA, but its worker has no CUDA device")
    return torch.device(name)


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named random stream of run `seed`."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{stream}".encode()).digest()[:8], "big") >> 1


def generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    """Separate streams: init on the CPU (same weights on any device); the rest where the data is."""
    gens = {"init": torch.Generator().manual_seed(stream_seed(seed, "init"))}
    for stream in ("order", "augment", "dropout"):
        gens[stream] = torch.Generator(device=device).manual_seed(stream_seed(seed, stream))
    return gens


def make_optimizer(cfg, params, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer `cfg` names; `fused` (execution.fused_optimizer) picks PyTorch's fused kernel where there is one."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer '{cfg.name}' (known: {', '.join(OPTIMIZERS)})")
    return OPTIMIZERS[cfg.name](cfg, params, {"fused": True} if fused and cfg.name in FUSED_OPTIMIZERS else {})


def loss_fn(task: str):
    return F.cross_entropy if task == "classification" else F.mse_loss


@torch.no_grad()
def evaluate(model, x, y, task: str, predictions: list | None = None) -> dict:
    """Mean loss (and accuracy for classification) over a whole split, in eval mode.

    `predictions`, a list, receives the predicted classes batch by batch (the same forward passes).
    """
    model.eval()
    total, correct = 0.0, 0
    for i in range(0, len(x), EVAL_BATCH):
        out = model(x[i:i + EVAL_BATCH])
        target = y[i:i + EVAL_BATCH]
        total += loss_fn(task)(out, target, reduction="sum").item()
        if task == "classification":
            predicted = out.argmax(1)
            correct += (predicted == target).sum().item()
            if predictions is not None:
                predictions.append(predicted.cpu())
    metrics = {"loss": total / len(x)}
    if task == "classification":
        metrics["acc"] = correct / len(x)
    else:
        metrics["mse"] = metrics["loss"]
    return metrics


def train_run(config: RunConfig, seed: int, data: Splits, device: torch.device,
              on_epoch: Callable[[int, dict], None] | None = None,
              on_step: Callable[[int, float], None] | None = None, test: bool = True) -> RunResult:
    """Train; `test` False leaves the test split unseen (search trials select on validation alone)."""
    gens = generators(seed, device)
    model = build_model(config.model, data.in_shape, data.num_outputs, gens["init"], gens["dropout"]).to(device)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.execution.fused_optimizer)
    criterion = loss_fn(data.task)
    train = config.train
    n = len(data.train_x)
    batch = n if train.batch_size == "full" else min(train.batch_size, n)
    augment = config.data.augment
    augmenting = augment.rotation or augment.hflip or augment.crop_pad
    monitor = train.monitor if data.task == "classification" else "val_loss"
    result, best, best_state, stale = RunResult(), None, None, 0
    steps_per_epoch = math.ceil(n / batch)
    start = time.perf_counter()

    for epoch in range(1, train.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=gens["order"], device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for step, i in enumerate(range(0, n, batch)):
            idx = order[i:i + batch]
            x, y = data.train_x[idx], data.train_y[idx]
            if augmenting:
                x = augment_batch(x, augment, data.fill, gens["augment"])
            out = model(x)
            loss = criterion(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(idx)
            if data.task == "classification":
                correct += (out.argmax(1) == y).sum()
            if step % STEP_EVERY == 0:
                value = loss.item()
                if not math.isfinite(value):
                    break
                if on_step:
                    on_step((epoch - 1) * steps_per_epoch + step + 1, value)
        train_loss = loss_sum.item() / n
        if not math.isfinite(train_loss):
            result.diverged, result.reason = True, f"non-finite training loss in epoch {epoch}"
            break
        metrics = {"train_loss": train_loss}
        if data.task == "classification":
            metrics["train_acc"] = correct.item() / n
        metrics.update({f"val_{k}": v for k, v in evaluate(model, data.val_x, data.val_y, data.task).items()})
        metrics["epoch_seconds"] = time.perf_counter() - epoch_start
        result.history.append(metrics)
        if on_epoch:
            on_epoch(epoch, metrics)
        score = metrics[monitor]
        if best is None or (score > best if monitor.endswith("acc") else score < best):
            best, stale = score, 0
            best_state = copy.deepcopy(model.state_dict()) if train.patience else None
            result.final["best_epoch"] = epoch
        else:
            stale += 1
            if train.patience and stale >= train.patience:
                break

    finish_run(model, result, best_state, data, time.perf_counter() - start, test)
    return result


def finish_run(model, result: RunResult, best_state: dict | None, data: Splits, train_seconds: float, test: bool) -> None:
    """After training: restore the best epoch's weights (early stopping), test, re-evaluate training images, final metrics."""
    if best_state is not None:
        model.load_state_dict(best_state)
    if test:
        predicted: list = []
        result.final.update({f"test_{k}": v for k, v in evaluate(model, data.test_x, data.test_y, data.task, predicted).items()})
        result.test_predictions = torch.cat(predicted) if predicted else None
    seen = evaluate(model, data.train_x[:TRAIN_EVAL_SIZE], data.train_y[:TRAIN_EVAL_SIZE], data.task)
    result.final.update({f"train_eval_{k}": v for k, v in seen.items() if k != "mse"})
    result.final.update({
        "epochs_trained": len(result.history) + (1 if result.diverged else 0),
        # the epoch whose weights the test set saw: the best one when early stopping restored it
        "tested_epoch": result.final.get("best_epoch", 0) if best_state is not None else len(result.history),
        "train_seconds": train_seconds,
        "diverged": float(result.diverged),
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),  # so reports need not rebuild the model
    })
    result.state = model.state_dict()


# (config, parameters, implementation switches such as fused) -> optimizer
OPTIMIZERS = {
    "sgd": lambda c, p, k: torch.optim.SGD(p, lr=c.lr, weight_decay=c.weight_decay, **k),
    "momentum": lambda c, p, k: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay, **k),
    "rmsprop": lambda c, p, k: torch.optim.RMSprop(p, lr=c.lr, alpha=c.alpha, eps=c.eps, momentum=c.momentum, weight_decay=c.weight_decay, **k),
    "adam": lambda c, p, k: torch.optim.Adam(p, lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay, **k),
    "adamw": lambda c, p, k: torch.optim.AdamW(p, lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay, **k),
}
