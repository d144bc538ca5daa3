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
import functools
import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import kernels
from ..components import get
from ..spec.config import FUSED_OPTIMIZERS, RunConfig
from ..components.data import Splits, augment_batch
from ..errors import SuiteError
from ..components.models import build_model

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
    """The torch device of a run's `execution.device` (cpu or cuda). On CUDA, cuDNN keeps to its deterministic
    convolution algorithms (some of the others add in a varying order from one run to the next)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SuiteError("this run is to be computed on CUDA, but its worker has no CUDA device")
    if name == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
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
    """The optimizer `cfg` names; `fused` (execution.fused_optimizer) picks PyTorch's fused kernel where there is one.

    Unfused Adam and AdamW step through suite.execute.kernels' one-pass C step where it is available: the
    same numbers as PyTorch's step to the last bit, ~3x faster on the CPU."""
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model_dump(exclude={"name"}).items()}
    cls = get("optimizer", cfg.name).load()
    if fused and cfg.name in FUSED_OPTIMIZERS:
        return cls(params, **args, fused=True)
    params = [dict(p, params=list(p["params"])) if isinstance(p, dict) else p for p in params]
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    # a GPU run never takes adam.c's step: no compiling it, no checking it, for nothing
    if steps_adam_c(cfg, fused, all(t.device.type == "cpu" for t in tensors)) and kernels.available():
        cls = kernels.ONE_PASS[cls]
    return cls(params, **args)


def steps_adam_c(cfg, fused: bool, cpu: bool) -> bool:
    """Whether `make_optimizer` steps this optimizer with adam.c where adam.c is available (what the worker's
    `suite.adam_kernel` tag reports on): unfused Adam or AdamW, without amsgrad, on CPU tensors."""
    return (cpu and not (fused and cfg.name in FUSED_OPTIMIZERS) and not getattr(cfg, "amsgrad", False)
            and get("optimizer", cfg.name).load() in kernels.ONE_PASS)


def parameter_groups(model, decay: str):
    """All parameters (train.decay all), or weight matrices and kernels with decay and the rest (biases, norms) without."""
    if decay == "all":
        return model.parameters()
    params = list(model.parameters())
    return [{"params": [p for p in params if p.dim() > 1]}, {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]


def loss_fn(task: str):
    return F.cross_entropy if task == "classification" else F.mse_loss


def schedule_of(schedule) -> Callable[[Any, int, int, int], float]:
    """The function of the schedule `schedule` names (a built-in's is `lr_factor`): f(schedule, t, total, steps_per_epoch)."""
    return get("schedule", schedule.name).load()


def lr_factor(schedule, t: int, total: int, steps_per_epoch: int) -> float:
    """The factor of the base learning rate at step t (0-based) of `total`, for the built-in schedules (config.Schedule)."""
    name, progress = schedule.name, t / max(total, 1)

    def cosine(x: float, top: float = 1.0) -> float:
        return schedule.min_factor + (top - schedule.min_factor) * 0.5 * (1 + math.cos(math.pi * x))

    if name == "constant":
        return 1.0
    if name == "step":
        return schedule.gamma ** (t // steps_per_epoch // schedule.step_every)
    if name == "cosine":
        return cosine(progress)
    if name == "warmup_cosine":
        warm = schedule.warmup * total
        return min(1.0, (t + 1) / warm) if t < warm else cosine((t - warm) / max(total - warm, 1))
    peak = schedule.peak_at * total  # one_cycle: up along a half cosine from start_factor to 1, down along one to min_factor
    if t < peak:
        return 1 + (schedule.start_factor - 1) * 0.5 * (1 + math.cos(math.pi * t / peak))
    return cosine((t - peak) / max(total - peak, 1))


def noisy_labels(y: torch.Tensor, share: float, seed: int, classes: int) -> torch.Tensor:
    """Training labels with `share` of them flipped to another class, uniformly.

    Each example draws a uniform u and an offset in [1, classes) from the run's `label_noise`
    stream, whatever the share: it is flipped when u < share, to (label + offset) mod classes. So
    the labels flipped at 20% are among those flipped at 40%, and flipped to the same class.
    """
    if not share:
        return y
    gen = torch.Generator().manual_seed(stream_seed(seed, "label_noise"))
    u = torch.rand(len(y), generator=gen)
    offset = torch.randint(1, classes, (len(y),), generator=gen)
    flipped = torch.where(u < share, (y.cpu() + offset) % classes, y.cpu())
    return flipped.to(y.device)


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
    optimizer = make_optimizer(config.optimizer, parameter_groups(model, config.train.decay), config.execution.fused_optimizer)
    criterion = loss_fn(data.task)
    if config.train.label_smoothing:
        criterion = functools.partial(F.cross_entropy, label_smoothing=config.train.label_smoothing)
    train_y = noisy_labels(data.train_y, config.data.label_noise, seed, data.num_outputs)
    train = config.train
    n = len(data.train_x)
    batch = n if train.batch_size == "full" else min(train.batch_size, n)
    augment = config.data.augment
    augmenting = bool(augment.active())
    monitor = train.monitor if data.task == "classification" else "val_loss"
    result, best, best_state, stale = RunResult(), None, None, 0
    steps_per_epoch = math.ceil(n / batch)
    scheduled, schedule_fn = train.schedule.name != "constant", schedule_of(train.schedule)
    batch_norm = getattr(config.model, "norm", "none") == "batch"
    seen = n - 1 if batch_norm and n % batch == 1 else n  # examples trained on per epoch
    base_lr = [group["lr"] for group in optimizer.param_groups]
    start = time.perf_counter()

    for epoch in range(1, train.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=gens["order"], device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for step, i in enumerate(range(0, n, batch)):
            idx = order[i:i + batch]
            if len(idx) == 1 and batch_norm:  # batch norm cannot train on one example: a lone last one sits this epoch out
                continue
            x, y = data.train_x[idx], train_y[idx]
            if augmenting:
                x = augment_batch(x, augment, data.fill, gens["augment"])
            out = model(x)
            loss = criterion(out, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train.clip_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train.clip_norm)
            if scheduled:
                factor = schedule_fn(train.schedule, (epoch - 1) * steps_per_epoch + step, train.epochs * steps_per_epoch, steps_per_epoch)
                for group, lr in zip(optimizer.param_groups, base_lr):
                    group["lr"] = lr * factor
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
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            result.diverged, result.reason = True, f"non-finite training loss in epoch {epoch}"
            break
        metrics = {"train_loss": train_loss}
        if data.task == "classification":
            metrics["train_acc"] = correct.item() / seen
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
