"""Does this machine reproduce a committed report? Trains some of its runs again and compares their numbers.

    .venv/bin/python bench/rerun.py STUDY [--runs N] [--run VARIANT/seed=K] [--dataset D] [--data-dir DIR]

Takes the report's N quickest runs (default 1) from reports/STUDY/runs.csv, or the run named, trains each in this
process with the worker's own code (`suite.execute.worker.execute`: its threads, data, seeds and kernels), and prints
its test metrics beside the report's, both at runs.csv's precision (6 significant digits), with `same` or `DIFFERS`,
and the kernels this machine used. Exit 0 when every run gives the report's numbers, 1 when one does not.
The processor's kernels decide (README "Reproducibility"); on an AVX-512 machine

    ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2 .venv/bin/python bench/rerun.py lr_schedule

computes as an AVX2 machine. A tuned variant's runs (`@tuned`) need their search's Optuna storage: not these.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from suite import data_root  # noqa: E402
from suite.spec.study import expand, load_study  # noqa: E402

METRICS = ("test_acc", "test_loss", "train_eval_acc", "train_eval_loss")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study")
    p.add_argument("--runs", type=int, default=1, help="the report's N quickest runs (default 1)")
    p.add_argument("--run", help="one run by name, e.g. none/seed=0")
    p.add_argument("--dataset", help="with --run, in a study of several datasets")
    p.add_argument("--data-dir", help="dataset root (default: $SUITE_DATA_DIR or ./data)")
    p.add_argument("--reports-dir", default=str(ROOT / "reports"))
    args = p.parse_args()
    table = Path(args.reports_dir) / args.study / "runs.csv"
    if not table.is_file():
        sys.exit(f"error: no {table}: a committed report's study name (ls {args.reports_dir})")
    runs = pd.read_csv(table)
    runs = runs[~runs["variant"].str.endswith("@tuned")]
    if args.run:
        runs = runs[(runs["run_name"] == args.run) & ((runs["dataset"] == args.dataset) if args.dataset else True)]
        if runs.empty:
            sys.exit(f"error: {table} has no run {args.run}{f' on {args.dataset}' if args.dataset else ''} (its run_name column)")
    runs = runs.sort_values("train_seconds").head(args.runs)
    study = load_study(args.study)
    specs = {s.run_key: s for s in expand(study)}

    import torch

    from suite.execute.worker import Task, execute

    print(f"kernels here: {torch.backends.cpu.get_cpu_capability()}; torch {torch.__version__}")
    same = True
    for row in runs.itertuples():
        spec = specs.get(row.run_key)
        if spec is None:
            sys.exit(f"error: run key {row.run_key} ({row.run_name}) is not one that studies/{args.study}.yaml defines now")
        start = time.perf_counter()
        record = execute(Task(0, spec.run_name, spec.config, spec.seed, str(data_root(args.data_dir).resolve()),
                              plugins=study.plugins), lambda kind, payload: None)
        if record.status not in ("finished", "diverged"):
            sys.exit(f"error: {spec.run_name} {record.status}: {record.reason}")
        pairs = [(m, f"{getattr(row, m):.6g}", f"{record.final[m]:.6g}") for m in METRICS
                 if m in record.final and m in runs and pd.notna(getattr(row, m))]
        ok = all(then == now for _, then, now in pairs)
        same &= ok
        print(f"{args.study} {spec.dataset} {spec.run_name} ({row.run_key}, {time.perf_counter() - start:.0f} s): "
              + ", ".join(f"{m} {then} -> {now}" for m, then, now in pairs) + ("  same" if ok else "  DIFFERS"), flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
