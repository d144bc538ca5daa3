"""Does packing K runs into one batched model pay on this machine? (`--pack`, suite/execute/packed.py)

    .venv/bin/python bench/packed.py [--members 10] [--train-size 5000] [--threads 1 2] [--device cpu|cuda]

For the regularization study's MLP (784-700x6-10) and a small one (784-64-10), per thread count:
  unpacked  `train.train_run` K times, one after another (what one worker does without --pack)
  packed    `packed.train_packed` once over the K runs: stacked weights through `torch.baddbmm`,
            one optimizer step over the stacked tensors (what one worker does with --pack)
both on real MNIST (the first --train-size images, one epoch, batch 64, Adam, each run its own
seed and weight decay), evaluation included; and, per training step alone, the packed model's
batched layers against the same model written with `torch.func` (`stack_module_state` +
`functional_call` + `vmap`), both stepped by the packed optimizer. Prints seconds per run and the
speed-ups. A benchmark, not a test: the figures go into the README with the command.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from suite.spec.config import RunConfig
from suite.components.data import load_splits
from suite.components.models import build_model
from suite.execute.packed import Pack, Stacked, member_losses, train_packed
from suite.execute.train import train_run

SHAPES = {"784-700x6-10": [700] * 6, "784-64-10": [64]}


def configs(hidden, members: int, train_size: int, device: str) -> list[RunConfig]:
    return [RunConfig(data={"name": "mnist", "train_size": train_size, "val_size": 5000, "test_size": 10000},
                      model={"name": "mlp", "hidden": hidden}, optimizer={"name": "adam", "lr": 1e-3, "weight_decay": 1e-4 * k},
                      execution={"device": device, "packed": True}) for k in range(members)]


def whole_runs(cfgs, data, device) -> tuple[float, float]:
    """Seconds for K unpacked runs one after another, and for the same runs as one pack."""
    start = time.perf_counter()
    for seed, cfg in enumerate(cfgs):
        train_run(cfg, seed, data, device)
    unpacked = time.perf_counter() - start
    start = time.perf_counter()
    train_packed(cfgs, list(range(len(cfgs))), data, device)
    return unpacked, time.perf_counter() - start


def steps(cfgs, data, device, n: int) -> tuple[float, float]:
    """Seconds per training step of the K members: batched layers (suite.execute.packed.Pack) vs torch.func's vmap."""
    from torch.func import functional_call, stack_module_state, vmap

    k = len(cfgs)
    models = [build_model(c.model, data.in_shape, data.num_outputs, torch.Generator().manual_seed(i)).to(device)
              for i, c in enumerate(cfgs)]
    x, y = data.train_x[:64 * k].view(k, 64, *data.in_shape), data.train_y[:64 * k].view(k, 64)
    pack = Pack(cfgs, models)
    params, _ = stack_module_state(models)
    template = build_model(cfgs[0].model, data.in_shape, data.num_outputs, torch.Generator()).to("meta")
    vmapped = vmap(lambda p, xb: functional_call(template, p, (xb,)))
    timings = []
    for forward, tensors in ((lambda: pack.forward(x), pack.params), (lambda: vmapped(params, x), list(params.values()))):
        optimizer = Stacked([c.optimizer for c in cfgs], tensors)
        for i in range(n + 3):
            if i == 3:
                start = time.perf_counter()
            member_losses(forward(), y, "classification").sum().backward()
            optimizer.step(tensors)
            for t in tensors:
                t.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append((time.perf_counter() - start) / n)
    return timings[0], timings[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--train-size", type=int, default=5000)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data-dir", default=os.environ.get("SUITE_DATA_DIR", "data"))
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"{args.members} runs, MNIST {args.train_size} training images, 1 epoch, batch 64, Adam; {device}")
    print(f"{'model':<14} {'threads':>7} {'unpacked s/run':>15} {'packed s/run':>13} {'speed-up':>9}"
          f" {'step: batched ms':>17} {'vmap ms':>8}")
    for name, hidden in SHAPES.items():
        cfgs = configs(hidden, args.members, args.train_size, device.type)
        data = load_splits(cfgs[0].data, Path(args.data_dir), device)
        for threads in args.threads:
            torch.set_num_threads(threads)
            unpacked, packed = whole_runs(cfgs, data, device)
            batched, vmapped = steps(cfgs, data, device, 20)
            k = args.members
            print(f"{name:<14} {threads:>7} {unpacked / k:>15.2f} {packed / k:>13.2f} {unpacked / packed:>8.2f}x"
                  f" {batched * 1e3:>17.1f} {vmapped * 1e3:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
