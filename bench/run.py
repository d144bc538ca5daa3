"""`make bench`: the tutorial's loop against `suite study regularization`, in one sitting, on this machine.

    python bench/run.py [--data-dir ../shared/data] [--skip-tutorial] [--skip-packed] [extra suite study options]

(a) bench/tutorial.py once per run of the regularization study (5 seeds x weight decay 0 and
0.002), one process after another, torch's default threads, no MLflow; (b) `suite study
regularization` into a fresh MLflow store with the default executor, report included; (c) the
same with `--pack --pack-size 10` (on a CPU one pack per worker, on a GPU all ten runs in one). Prints
wall seconds, training samples per second, the ratio, the achieved GFLOP/s of each and their
fraction of this machine's fp32 matmul peak (measured here with a 4096 x 4096 matmul on all cores).
A benchmark, not a test: the figures go into the README with the command that made them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS, DECAYS = range(5), (0.0, 0.002)
# multiply-adds per image of the MLP 784-700x6-10 (weights of the seven linear layers)
MACS = 784 * 700 + 5 * 700 * 700 + 700 * 10
TRAIN_FLOP = 6 * MACS  # forward 2, backward 4 flops per multiply-add and image
EVAL_FLOP = 2 * MACS


def peak_gflops() -> float:
    import torch

    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    a @ b
    start, n = time.perf_counter(), 5
    for _ in range(n):
        a @ b
    return 2 * 4096 ** 3 * n / (time.perf_counter() - start) / 1e9


def machine() -> str:
    import torch

    from suite.provenance import cpu_model

    model = cpu_model()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{model}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}, Python {platform.python_version()}"


class Failed(Exception):
    """A step of the bench failed: its one line."""


def tutorial(data_dir: str) -> tuple[float, list[dict]]:
    start, rows = time.perf_counter(), []
    for wd in DECAYS:
        for seed in SEEDS:
            out = subprocess.run([sys.executable, str(ROOT / "bench" / "tutorial.py"), "--data-dir", data_dir,
                                  "--weight-decay", str(wd), "--seed", str(seed)], capture_output=True, text=True)
            if out.returncode != 0:
                why = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
                raise Failed(f"bench/tutorial.py --weight-decay {wd} --seed {seed} failed: {why}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  tutorial wd={wd} seed={seed}: test_acc {rows[-1]['test_acc']:.4f}, {rows[-1]['wall_seconds']:.1f} s", flush=True)
    return time.perf_counter() - start, rows


def suite_study(data_dir: str, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory(prefix="suite-bench-") as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "suite", "study", "regularization", "--data-dir", data_dir,
                               "--tracking-uri", f"sqlite:///{tmp}/mlflow.db", "--reports-dir", f"{tmp}/reports",
                               "--storage", f"sqlite:///{tmp}/optuna.db", *extra], cwd=ROOT)
        if done.returncode != 0:
            raise Failed(f"suite study regularization {' '.join(extra)} failed (exit status {done.returncode}): its error is above")
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False,
                                epilog="any other option goes to `suite study` as it is, e.g. --workers 2")
    p.add_argument("--data-dir", default=os.environ.get("SUITE_DATA_DIR") or "data")  # (an empty variable: unset, as in suite)
    p.add_argument("--skip-tutorial", action="store_true", help="only (b) and (c), e.g. to try executor options")
    p.add_argument("--skip-packed", action="store_true", help="without (c)")
    args, extra = p.parse_known_args()  # (in their order: a positional list for them took their values apart)
    args.extra = extra[1:] if extra[:1] == ["--"] else extra
    if "--smoke" in args.extra:  # (its figures count the full study's images)
        p.error("--smoke: the bench times the full study; its figures count the full study's images")
    try:
        bench(args)
    except Failed as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; nothing was recorded (each part ran in a throw-away store)", file=sys.stderr)
        sys.exit(130)


def bench(args) -> None:
    if not args.skip_tutorial and not (Path(args.data_dir) / "MNIST" / "raw").is_dir():  # (the tutorial never downloads)
        raise Failed(f"no MNIST under {Path(args.data_dir).resolve()} (MNIST/raw/ in torchvision's layout); pass --data-dir "
                     "or set SUITE_DATA_DIR")
    runs = len(SEEDS) * len(DECAYS)
    peak = peak_gflops()
    print(f"machine: {machine()}\nfp32 matmul peak (4096^3, all cores): {peak:.0f} GFLOP/s", flush=True)
    rows = []
    if not args.skip_tutorial:
        wall, _ = tutorial(args.data_dir)
        flop = runs * (60000 * TRAIN_FLOP + 10000 * EVAL_FLOP)
        rows.append(("(a) tutorial loop", wall, runs * 60000, flop))
    wall = suite_study(args.data_dir, args.extra)
    # 55,000 training images (5,000 carved for validation); validation, test and 5,000 re-evaluated training images
    flop = runs * (55000 * TRAIN_FLOP + 20000 * EVAL_FLOP)
    rows.append(("(b) suite study regularization", wall, runs * 55000, flop))
    if not args.skip_packed:
        rows.append(("(c) ... --pack --pack-size 10", suite_study(args.data_dir, ["--pack", "--pack-size", "10", *args.extra]),
                     runs * 55000, flop))
    print(f"\n{'':<32} {'wall s':>8} {'samples/s':>10} {'GFLOP/s':>8} {'of peak':>8}")
    for name, wall, samples, flop in rows:
        print(f"{name:<32} {wall:>8.1f} {samples / wall:>10.0f} {flop / wall / 1e9:>8.1f} {flop / wall / 1e9 / peak:>8.1%}")
    walls = {name[:3]: wall for name, wall, _, _ in rows}
    for other in ("(b)", "(c)"):
        if "(a)" in walls and other in walls:
            print(f"speed-up (a)/{other}: {walls['(a)'] / walls[other]:.2f}x")


if __name__ == "__main__":
    main()
