"""Take `make bench` to an offline GPU machine that has its own PyTorch: the packages it lacks, and MNIST.

    .venv/bin/python bench/carry.py --to .carry [--python-version 3.12] [--have names.txt] [--data-dir ../shared/data]

Here (a machine that reaches PyPI): installs, for the other machine's Python and platform, each package
that `suite` needs at run time and that the other machine lacks, at the versions installed in this
environment (constraints.txt's), into one folder, less MLflow's web UI (27 MB the study never serves), packed
as DIR/site.tar.xz (~16 MiB where the wheels take ~37: the device tool carries 64 MiB with the repo); copies
MNIST's four .gz files into DIR/data/MNIST/raw.
PyTorch, torchvision and their CUDA libraries are never taken: the other machine's own build is the
point. `--have` names a file of the packages already there (names separated by commas, spaces or
newlines, e.g. that machine's `pip list`'s first column), which are not taken either. py-spy comes too
(PROFILER): gpu.sh records one more study under it, and bench/timeline.py says where its seconds went.

There, from a copy of this repo with DIR beside the code (python3 being the one with CUDA PyTorch):

    bash bench/gpu.sh DIR [OUT]

A tool for measuring, not part of the product: the figures it prints go into the README.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEVER = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|setuptools|pip|wheel)$")
PROFILER = "py-spy==0.4.3"  # a sampling profiler of every process of a study (bench/gpu.sh, bench/timeline.py)
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "manylinux_2_24_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64"]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(root: str = "suite", python: str = "3.12") -> dict[str, str]:
    """{normalised name: installed version} of every distribution `root` needs at run time (no extras) under Python
    `python`, itself excluded, and not through the packages the other machine brings its own of (NEVER: torch's needs
    come with its torch)."""
    seen, todo = {}, [root]
    while todo:
        dist = metadata.distribution(todo.pop())
        for req in dist.requires or []:
            name, _, marker = req.partition(";")
            if "extra" in marker:
                continue
            if marker.strip() and not _marker_holds(marker, python):
                continue
            key = norm(re.split(r"[\s<>=!~\[(]", name.strip(), maxsplit=1)[0])
            if key in seen or NEVER.match(key):
                continue
            try:
                seen[key] = metadata.version(key)
            except metadata.PackageNotFoundError:
                continue  # not needed on this platform (pip did not install it)
            todo.append(key)
    return seen


def _marker_holds(marker: str, python: str) -> bool:
    from packaging.markers import Marker

    return Marker(marker.strip()).evaluate({"python_version": python, "python_full_version": f"{python}.0"})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--to", type=Path, default=ROOT / ".carry")
    p.add_argument("--python-version", default="3.12")
    p.add_argument("--have", type=Path, help="file naming the packages the other machine has already")
    p.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args()
    have = {norm(n.strip(".;:")) for n in re.split(r"[\s,]+", args.have.read_text()) if n.strip(".;:")} if args.have else set()
    wanted = {name: version for name, version in sorted(closure(python=args.python_version).items()) if name not in have}
    args.to.mkdir(parents=True, exist_ok=True)
    site = args.to / "site"
    shutil.rmtree(site, ignore_errors=True)
    flags = ["--no-deps", "--no-compile", "--only-binary=:all:", "--python-version", args.python_version, "--implementation", "cp",
             *[f for plat in PLATFORMS for f in ("--platform", plat)], "--target", str(site)]
    print(f"{len(wanted)} packages for Python {args.python_version}: {', '.join(wanted)}, and {PROFILER}", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *flags, *[f"{n}=={v}" for n, v in wanted.items()], PROFILER],
                   check=True)
    shutil.rmtree(site / "mlflow" / "server" / "js", ignore_errors=True)  # the UI's build: `suite study` serves no UI
    subprocess.run(["tar", "-cJf", str(args.to / "site.tar.xz"), "-C", str(args.to), "site"], check=True)
    shutil.rmtree(site)
    raw = args.to / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in sorted((args.data_dir / "MNIST" / "raw").glob("*.gz")):
        shutil.copy2(gz, raw / gz.name)
    size = sum(f.stat().st_size for f in args.to.rglob("*") if f.is_file())
    print(f"{args.to}: site.tar.xz and {len(list(raw.glob('*.gz')))} MNIST files, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
