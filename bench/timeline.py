"""Where a study's seconds went, process by process: a py-spy speedscope recording read back as a timeline.

    python bench/timeline.py spy.json [--step 0.5]

`spy.json` is `py-spy record --subprocesses --idle -f speedscope -o spy.json -- python -m suite study ...`
(bench/gpu.sh makes one). For each process's main thread (threads with few samples are left out), one line per
`--step` seconds of its own clock (a process's clock starts with its first sample): the two functions that took most
of that slice, each the innermost frame in suite/ (else the innermost frame), marked [import] while a module was
being imported. A tool for measuring, not part of the product.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recording")
    p.add_argument("--step", type=float, default=0.5, help="seconds per line (default 0.5)")
    p.add_argument("--min-samples", type=int, default=30, help="leave out threads with fewer samples (default 30)")
    args = p.parse_args()
    with open(args.recording) as fh:
        data = json.load(fh)
    frames = data["shared"]["frames"]

    def where(i: int) -> str:
        f = frames[i]
        return f"{f['name']} {(f.get('file') or '').rsplit('/', 1)[-1]}:{f.get('line')}"

    for profile in data["profiles"]:
        samples, weights = profile["samples"], profile["weights"]
        if len(samples) < args.min_samples or any(w in profile["name"] for w in ("tqdm", "resource_tracker", "Telemetry")):
            continue
        print(f"== {profile['name'][:100]} ({sum(weights):.1f} s sampled)")
        slices: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        clock = 0.0
        for stack, weight in zip(samples, weights):
            ours = [i for i in stack if "/suite/" in (frames[i].get("file") or "")]
            key = where(ours[-1] if ours else stack[-1]) if stack else "idle"
            if any(frames[i]["name"] == "_find_and_load" for i in stack):
                key += " [import]"
            slices[int(clock / args.step)][key] += weight
            clock += weight
        for k in sorted(slices):
            top = sorted(slices[k].items(), key=lambda kv: -kv[1])[:2]
            print(f"  {k * args.step:6.1f}  " + " | ".join(f"{name[:70]} {sec:.2f}" for name, sec in top))


if __name__ == "__main__":
    main()
