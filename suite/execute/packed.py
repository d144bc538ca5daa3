"""Packed training: K runs of one MLP trained together as one batched model.

The runs of a study often share architecture, data and schedule and differ only in their seed,
learning rate, weight decay, dropout rate, augmentation, label noise, label smoothing or patience
(`config.PER_MEMBER`).
`train_packed` stacks their weights (K x in x out), runs every layer as one batched matmul
(`torch.baddbmm`) and steps one optimizer over the stacked tensors, each member with its own
hyperparameters. Each member draws exactly what `train.train_run` draws for its seed: the same
initial weights, data order, augmentation and dropout masks, from its own generators. Only the
floating-point summation order differs, which is why `execution.packed` is part of a run's
config and key. A member is independent of the others: its numbers do not depend on which
runs share its pack or how many (tests/test_packed.py checks this bit for bit).

A member that diverges (a non-finite loss) or stops early leaves the pack, keeping its weights;
the others go on. Per-epoch metrics, the best-epoch restore and the test are each member's own.
When packing pays (small models, many seeds; not a 3-million-parameter MLP on a 2-core CPU):
the README's Speed section has the measurements.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..spec.config import RunConfig, pack_group, packable
from ..components.data import Splits, augment_batch
from ..components.models import ACTIVATIONS, build_model
from .train import STEP_EVERY, RunResult, evaluate, finish_run, generators, noisy_labels, schedule_of


class Stacked:
    """One optimizer over stacked parameters (dim 0: the member), each member with its own lr and weight decay.

    torch.optim's update rules (sgd, momentum, adam, adamw; its single-tensor code paths),
    written out for tensors of per-member hyperparameters. Every parameter is a view of one
    (members, n) buffer (decayed parameters first), and so is each state tensor. On a GPU one set
    of kernels updates all decayed parameters and one set the rest: a dozen launches per step,
    where a set per tensor (~150) was most of a packed step's time. On a CPU the update goes
    tensor by tensor, so that each tensor's passes stay in cache (the whole buffer at once made
    the step 2x slower here). Either way each element gets the same operations, so the numbers
    are the same.
    """

    def __init__(self, cfgs: list, params: list[torch.Tensor], decayed: list[bool] | None = None, fused: bool | None = None):
        """`decayed[i]` False: parameter i gets no weight decay (train.decay: weights); `fused`: update parameters
        in two sets (default: off the CPU) rather than one by one."""
        self.cfg = cfgs[0]  # every field but lr and weight_decay is shared (config.pack_group)
        decayed = decayed or [True] * len(params)
        device = params[0].device
        self.lr = torch.tensor([c.lr for c in cfgs], device=device).view(-1, 1)
        self.wd = torch.tensor([c.weight_decay for c in cfgs], device=device).view(-1, 1)
        self.spans, column = [], 0  # (parameter, its columns of the buffer)
        for i in sorted(range(len(params)), key=lambda i: not decayed[i]):  # decayed columns first
            self.spans.append((i, slice(column, column + params[i][0].numel())))
            column = self.spans[-1][1].stop
        self.flat = self._adopt(params, torch.cat([params[i].detach().flatten(1) for i, _ in self.spans], 1))
        self.groups: list[tuple[slice, list[int], bool]] = []  # (columns, parameters, decayed): one set of kernels each
        fused = device.type != "cpu" if fused is None else fused
        for i, columns in self.spans:
            if self.groups and fused and self.groups[-1][2] == decayed[i]:
                joined, members, _ = self.groups[-1]
                self.groups[-1] = (slice(joined.start, columns.stop), members + [i], decayed[i])
            else:
                self.groups.append((columns, [i], decayed[i]))
        self.state: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.decay = bool(self.wd.any())

    def _adopt(self, params: list[torch.Tensor], flat: torch.Tensor) -> torch.Tensor:
        """Make each parameter a view of `flat` (its values are already there); returns `flat`."""
        for i, columns in self.spans:
            params[i].data = flat[:, columns].view(params[i].shape)
        return flat

    def keep(self, rows: torch.Tensor, params: list[torch.Tensor]) -> None:
        """Only the members at `rows` stay; `params` are the pack's parameters after the same selection."""
        self.lr, self.wd = self.lr[rows], self.wd[rows]
        self.flat = self._adopt(params, self.flat[rows])
        self.decay = bool(self.wd.any())
        self.state = {k: v[rows] for k, v in self.state.items()}

    @torch.no_grad()
    def step(self, params: list[torch.Tensor], factor: float = 1.0) -> None:
        """One update of every member; `factor` scales the learning rates (the schedule's, train.lr_factor)."""
        self.steps += 1
        cfg, t, state = self.cfg, self.steps, self.state
        lr, wd = (self.lr if factor == 1.0 else self.lr * factor), self.wd
        adam = cfg.name in ("adam", "adamw")
        if not state:
            names = ("m", "v") if adam else ("buf",) if cfg.name == "momentum" else ()
            state.update({name: torch.zeros_like(self.flat) for name in names})
        for columns, members, decayed in self.groups:
            grads = [params[i].grad.flatten(1) for i in members]
            grad = grads[0] if len(grads) == 1 else torch.cat(grads, 1)
            p = self.flat[:, columns]
            if not (decayed and self.decay):
                pass
            elif cfg.name == "adamw":
                p.mul_(1 - lr * wd)
            else:
                grad = grad + wd * p
            if adam:
                beta1, beta2 = cfg.betas
                m, v = state["m"][:, columns], state["v"][:, columns]
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (v.sqrt() / math.sqrt(1 - beta2 ** t)).add_(cfg.eps)
                p.sub_((m / denom).mul_(lr / (1 - beta1 ** t)))
                continue
            if cfg.name == "momentum":
                buf = state["buf"][:, columns]
                buf.copy_(grad) if t == 1 else buf.mul_(cfg.momentum).add_(grad)
                grad = grad.add(buf, alpha=cfg.momentum) if cfg.nesterov else buf
            p.sub_(lr * grad)


class Pack:
    """The stacked weights of the members still training, and how to run them."""

    def __init__(self, configs: list[RunConfig], models: list[nn.Module]):
        cfg = configs[0].model
        self.linears = len(cfg.hidden) + 1
        layers = [[m for m in model if isinstance(m, nn.Linear)] for model in models]
        # weight (members, in, out): batched matmuls take it as it is and its gradient arrives in its layout (no copy)
        self.params = []  # weight, bias of layer 0, weight, bias of layer 1, ...
        for j in range(self.linears):
            self.params.append(torch.stack([lin[j].weight.detach().t() for lin in layers]).contiguous().requires_grad_())
            self.params.append(torch.stack([lin[j].bias.detach() for lin in layers]).requires_grad_())
        self.activation = ACTIVATIONS[cfg.activation]()
        hidden = len(cfg.hidden)
        self.dropped = set(range(hidden)) if cfg.dropout_layers is None else {i % hidden for i in cfg.dropout_layers}
        self.dropout = [c.model.dropout for c in configs]
        self.scale = self._scale(self.params[0].device)

    def keep(self, rows: torch.Tensor, positions: list[int]) -> None:
        self.params = [p.detach()[rows].requires_grad_() for p in self.params]
        self.dropout = [self.dropout[i] for i in positions]
        self.scale = self._scale(rows.device)

    def _scale(self, device) -> torch.Tensor:
        """Inverted dropout's divisor per member, (members, 1, 1): 1 - p (1 where p is 0)."""
        return torch.tensor([1 - p for p in self.dropout], device=device).view(-1, 1, 1)

    def forward(self, x: torch.Tensor, dropout_gens: list | None = None) -> torch.Tensor:
        """x: (members, batch, ...) -> (members, batch, outputs); `dropout_gens` (training): each member's dropout stream."""
        h = x.flatten(2)
        for j in range(self.linears):
            h = torch.baddbmm(self.params[2 * j + 1].unsqueeze(1), h, self.params[2 * j])
            if j < self.linears - 1:
                h = self.activation(h)
                if dropout_gens is not None and j in self.dropped and any(self.dropout):
                    h = self._drop(h, dropout_gens)
        return h

    def _drop(self, h: torch.Tensor, gens: list) -> torch.Tensor:
        """Each member's inverted dropout, its mask drawn as models.SeededDropout draws it (none where its rate is 0)."""
        keep = torch.ones_like(h)
        for i, (p, gen) in enumerate(zip(self.dropout, gens)):
            if p:
                keep[i].bernoulli_(1 - p, generator=gen)
        return h * keep / self.scale

    def copy_into(self, position: int, model: nn.Module) -> None:
        """The member's current weights into its own (unpacked) model."""
        linears = [m for m in model if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for j, lin in enumerate(linears):
                lin.weight.copy_(self.params[2 * j][position].t())
                lin.bias.copy_(self.params[2 * j + 1][position])


def member_losses(out: torch.Tensor, y: torch.Tensor, task: str, smoothing: torch.Tensor | None = None) -> torch.Tensor:
    """Each member's mean training loss over its batch: (members,); `smoothing`: each member's label smoothing.

    Cross-entropy against smoothed targets is (1 - e) * nll + e * mean over classes of -log p.
    """
    if task != "classification":
        return F.mse_loss(out, y, reduction="none").flatten(1).mean(1)
    if smoothing is None:
        return F.cross_entropy(out.flatten(0, 1), y.flatten(0, 1), reduction="none").view(y.shape).mean(1)
    logp = F.log_softmax(out, -1)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1).mean(1)
    return (1 - smoothing) * nll + smoothing * -logp.mean(-1).mean(1)


def clip_members(params: list[torch.Tensor], max_norm: float) -> None:
    """clip_grad_norm_ per member: each member's gradient, over all its tensors, scaled down to norm `max_norm`."""
    norms = torch.stack([p.grad.flatten(1).pow(2).sum(1) for p in params]).sum(0).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(scale.view((-1,) + (1,) * (p.dim() - 1)))


class Member:
    """One run's bookkeeping inside a pack."""

    def __init__(self, index: int, config: RunConfig, gens: dict, model: nn.Module):
        self.index, self.config, self.gens, self.model = index, config, gens, model
        self.result = RunResult()
        self.best, self.best_state, self.stale = None, None, 0
        aug = config.data.augment
        self.augmenting = bool(aug.active())
        self.labels = None  # its noisy training labels (data.label_noise), else the data's


def train_packed(configs: list[RunConfig], seeds: list[int], data: Splits, device: torch.device,
                 on_epoch: Callable[[int, int, dict], None] | None = None,
                 on_step: Callable[[int, int, float], None] | None = None, test: bool = True) -> list[RunResult]:
    """Train the runs `configs[i]`, `seeds[i]` as one packed model; one result each, in order.

    The callbacks get the member's index first: `on_epoch(i, epoch, metrics)`, `on_step(i, step, loss)`.
    """
    unpackable = [c for c in configs if not packable(c) or pack_group(c) != pack_group(configs[0])]
    if unpackable:  # a caller's bug, not the run's: the packed loop would silently train something else
        raise ValueError(f"train_packed: {len(unpackable)} of {len(configs)} configs cannot share this pack (config.packable, pack_group)")
    members = []
    for i, (config, seed) in enumerate(zip(configs, seeds)):
        gens = generators(seed, device)
        model = build_model(config.model, data.in_shape, data.num_outputs, gens["init"], gens["dropout"]).to(device)
        members.append(Member(i, config, gens, model))
    pack = Pack(configs, [m.model for m in members])
    decayed = [configs[0].train.decay == "all" or i % 2 == 0 for i in range(len(pack.params))]  # (weight, bias) per layer
    optimizer = Stacked([c.optimizer for c in configs], pack.params, decayed)
    noisy = any(c.data.label_noise for c in configs)
    for m, seed in zip(members, seeds):
        m.labels = noisy_labels(data.train_y, m.config.data.label_noise, seed, data.num_outputs)
    smoothing = [c.train.label_smoothing for c in configs]  # per member, sliced as members leave
    smooth = torch.tensor(smoothing, device=device) if any(smoothing) else None
    train = configs[0].train
    n = len(data.train_x)
    batch = n if train.batch_size == "full" else min(train.batch_size, n)
    monitor = train.monitor if data.task == "classification" else "val_loss"
    steps_per_epoch, schedule_fn = math.ceil(n / batch), schedule_of(train.schedule)
    active = list(members)  # in stack order
    start = time.perf_counter()

    def leave(gone: set[int]) -> None:
        """Members at these stack positions stop: their weights go to their own models, the pack shrinks."""
        nonlocal active, smooth
        for position in sorted(gone):
            pack.copy_into(position, active[position].model)
        positions = [i for i in range(len(active)) if i not in gone]
        rows = torch.tensor(positions, device=device, dtype=torch.long)
        pack.keep(rows, positions)
        optimizer.keep(rows, pack.params)
        active = [active[i] for i in positions]
        if smooth is not None:  # back to plain cross-entropy once no member left smooths (as for a pack built without)
            smooth = smooth[rows] if bool(smooth[rows].any()) else None

    for epoch in range(1, train.epochs + 1):
        if not active:
            break
        epoch_start = time.perf_counter()
        orders = torch.stack([torch.randperm(n, generator=m.gens["order"], device=device) for m in active])
        loss_sum = torch.zeros(len(active), device=device)
        correct = torch.zeros(len(active), device=device, dtype=torch.long)
        for step, i in enumerate(range(0, n, batch)):
            idx = orders[:, i:i + batch]
            x = data.train_x[idx]
            y = torch.stack([m.labels[rows] for m, rows in zip(active, idx)]) if noisy else data.train_y[idx]
            if any(m.augmenting for m in active):
                x = torch.stack([augment_batch(x[k], m.config.data.augment, data.fill, m.gens["augment"]) if m.augmenting else x[k]
                                 for k, m in enumerate(active)])
            out = pack.forward(x, [m.gens["dropout"] for m in active])
            losses = member_losses(out, y, data.task, smooth)
            for p in pack.params:
                p.grad = None
            losses.sum().backward()  # each member's gradient is its own loss's: the others' terms do not depend on its weights
            if train.clip_norm:
                clip_members(pack.params, train.clip_norm)
            factor = schedule_fn(train.schedule, (epoch - 1) * steps_per_epoch + step, train.epochs * steps_per_epoch, steps_per_epoch)
            optimizer.step(pack.params, factor)
            loss_sum += losses.detach() * idx.shape[1]
            if data.task == "classification":
                correct += (out.argmax(-1) == y).sum(1)
            if step % STEP_EVERY == 0:
                values = losses.tolist()
                diverged = {k for k, v in enumerate(values) if not math.isfinite(v)}
                for k, m in enumerate(active):
                    if k in diverged:
                        m.result.diverged, m.result.reason = True, f"non-finite training loss in epoch {epoch}"
                    elif on_step:
                        on_step(m.index, (epoch - 1) * steps_per_epoch + step + 1, values[k])
                if diverged:
                    keep = [k for k in range(len(active)) if k not in diverged]
                    orders, loss_sum, correct = orders[keep], loss_sum[keep], correct[keep]
                    leave(diverged)
                    if not active:
                        break
        train_losses, train_correct = (loss_sum / n).tolist(), correct.tolist()
        stopped: set[int] = set()
        for k, m in enumerate(active):
            if not math.isfinite(train_losses[k]):
                m.result.diverged, m.result.reason = True, f"non-finite training loss in epoch {epoch}"
                stopped.add(k)
                continue
            metrics = {"train_loss": train_losses[k]}
            if data.task == "classification":
                metrics["train_acc"] = train_correct[k] / n
            pack.copy_into(k, m.model)
            metrics.update({f"val_{name}": v for name, v in evaluate(m.model, data.val_x, data.val_y, data.task).items()})
            metrics["epoch_seconds"] = time.perf_counter() - epoch_start
            m.result.history.append(metrics)
            if on_epoch:
                on_epoch(m.index, epoch, metrics)
            if _stops_early(m, metrics[monitor], monitor.endswith("acc"), epoch):
                stopped.add(k)
        if stopped:
            leave(stopped)

    train_seconds = time.perf_counter() - start
    for k, m in enumerate(active):
        pack.copy_into(k, m.model)
    for m in members:
        finish_run(m.model, m.result, m.best_state, data, train_seconds, test)
    return [m.result for m in members]


def _stops_early(m: Member, score: float, higher_is_better: bool, epoch: int) -> bool:
    """train_run's early-stopping rule for one member (its model holds this epoch's weights)."""
    patience = m.config.train.patience
    if m.best is None or (score > m.best if higher_is_better else score < m.best):
        m.best, m.stale = score, 0
        m.best_state = copy.deepcopy(m.model.state_dict()) if patience else None
        m.result.final["best_epoch"] = epoch
        return False
    m.stale += 1
    return bool(patience and m.stale >= patience)
