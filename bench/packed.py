"""Does packing K runs into one batched model pay on this machine? (issue: packed runs; measure before building)

    .venv/bin/python bench/packed.py [--members 10] [--steps 40] [--threads 1 2]

Times training steps (batch 64, Adam, random inputs of MNIST's shape: the arithmetic is what is
measured, not the data) of K MLPs in two ways, per thread count:
  unpacked  K separate nn.Sequential models, one after another, each with its own Adam (the
            executor's worker does this today, one run per process)
  packed    one model whose layers hold K stacked weight matrices, each member's batch through
            `torch.baddbmm`, one Adam over the stacked tensors (members never mix: the loss is
            the sum of the members' mean losses, so each member's gradient is its own)
for the regularization study's MLP (784-700x6-10) and a small one (784-64-10). Prints ms per
member-step and the packed / unpacked speed-up.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

SHAPES = {"784-700x6-10": [784] + [700] * 6 + [10], "784-64-10": [784, 64, 10]}


def unpacked(widths, members: int, batch: int, steps: int, x, y) -> float:
    models = []
    for _ in range(members):
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        models.append(nn.Sequential(*layers[:-1]))
    optims = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    start = time.perf_counter()
    for step in range(steps):
        for k, (model, opt) in enumerate(zip(models, optims)):
            loss = F.cross_entropy(model(x[k]), y[k])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def packed(widths, members: int, batch: int, steps: int, x, y) -> float:
    weights, biases = [], []
    for a, b in zip(widths[:-1], widths[1:]):
        bound = 1 / a ** 0.5
        weights.append(torch.empty(members, a, b).uniform_(-bound, bound).requires_grad_())
        biases.append(torch.empty(members, 1, b).uniform_(-bound, bound).requires_grad_())
    opt = torch.optim.Adam(weights + biases, lr=1e-3)
    start = time.perf_counter()
    for step in range(steps):
        h = x
        for i, (w, b) in enumerate(zip(weights, biases)):
            h = torch.baddbmm(b, h, w)
            if i < len(weights) - 1:
                h = F.relu(h)
        # sum of the members' mean losses: member k's gradient is that of its own loss alone
        loss = F.cross_entropy(h.reshape(-1, h.shape[-1]), y.reshape(-1), reduction="none").reshape(members, -1).mean(1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.members, args.batch, 784)
    y = torch.randint(0, 10, (args.members, args.batch))
    print(f"{'model':<14} {'threads':>7} {'unpacked ms/member-step':>24} {'packed ms/member-step':>22} {'speed-up':>9}")
    for name, widths in SHAPES.items():
        for threads in args.threads:
            torch.set_num_threads(threads)
            per = args.members * args.steps
            unpacked(widths, args.members, args.batch, 3, x, y)  # warm-up
            packed(widths, args.members, args.batch, 3, x, y)
            u = unpacked(widths, args.members, args.batch, args.steps, x, y) / per * 1e3
            p = packed(widths, args.members, args.batch, args.steps, x, y) / per * 1e3
            print(f"{name:<14} {threads:>7} {u:>24.2f} {p:>22.2f} {u / p:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
