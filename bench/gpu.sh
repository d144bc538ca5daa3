#!/usr/bin/env bash
# The README's GPU figures ("Speed", "Packed runs") on an offline GPU machine whose python3 has CUDA PyTorch,
# from a copy of this repo and the folder that bench/carry.py filled here:
#
#   bash bench/gpu.sh DIR [OUT]      # OUT (default $OUT or /tmp/gpu-bench) gets gpu.log and each study's runs.csv
#
# 1. `suite study regularization --pack` into a fresh store, three times: wall seconds end to end, and
#    the 10 runs' training seconds (one pack: its members share the pack's time) from the report's runs.csv;
# 2. `bench/packed.py --device cuda`: seconds per run unpacked vs packed, one step batched vs vmap;
# 3. `bench/run.py --skip-tutorial`: (b) the study with the default executor, (c) --pack --pack-size 10;
# 4. the study once more under py-spy (every process, idle time too) into spy.json: `bench/timeline.py spy.json`
#    says, half a second at a time, what each process did (where py-spy cannot attach, this step says so and ends).
# SMOKE=1 tries the script out on any machine in a minute: steps 1 (once) and 4 with --smoke.
set -euo pipefail
dir=$(cd "${1:?usage: bash bench/gpu.sh DIR [OUT]}" && pwd)
out=${2:-${OUT:-/tmp/gpu-bench}}
py=${PYTHON:-python3}  # PYTHON=.venv/bin/python tries it out here (with bench/carry.py --python-version of that one)
mkdir -p "$out" /tmp/site /tmp/data/MNIST/raw
exec > >(tee "$out/gpu.log") 2>&1
rm -rf /tmp/site   # -> /tmp/site: what bench/carry.py installed there (Python's tarfile: no xz binary needed)
"$py" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall("/tmp", filter="tar")' "$dir/site.tar.xz"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
for f in "$dir"/data/MNIST/raw/*.gz; do gunzip -c "$f" > "/tmp/data/MNIST/raw/$(basename "${f%.gz}")"; done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'Python', platform.python_version())"
git log -1 --format='commit %h %s' 2>/dev/null || true

# each line of the study's output with the seconds since its start: where the time goes
stamp() { "$py" -u -c 'import sys, time
t = time.perf_counter()
for line in sys.stdin: print(f"{time.perf_counter() - t:6.2f}  {line}", end="", flush=True)'; }
set -o pipefail
if [ -n "${SMOKE:-}" ]; then times=1 smoke=(--smoke) reports=reports/smoke; else times="1 2 3" smoke=() reports=reports; fi
for i in $times; do
  s=/tmp/gpu-study-$i; rm -rf "$s"
  start=$(date +%s.%N)
  "$py" -m suite study regularization --pack --data-dir /tmp/data --tracking-uri "sqlite:///$s/mlflow.db" \
    --storage "sqlite:///$s/optuna.db" --reports-dir "$s/reports" "${smoke[@]}" 2>&1 | stamp > "$out/study-$i.txt" || { tail -20 "$out/study-$i.txt"; exit 1; }
  end=$(date +%s.%N)
  cp "$s/$reports/regularization/runs.csv" "$out/runs-$i.csv"
  "$py" - "$start" "$end" "$s/$reports/regularization/runs.csv" "$i" <<'EOF'
import sys, pandas as pd
start, end, csv, i = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
runs = pd.read_csv(csv)
packs = runs.groupby("train_seconds").size()
print(f"study --pack #{i}: {end - start:.1f} s end to end; {len(runs)} runs; training {runs['train_seconds'].drop_duplicates().sum():.2f} s "
      f"in {len(packs)} pack(s); test_acc {' '.join(f'{a:.4f}' for a in runs.sort_values(['variant', 'seed'])['test_acc'])}")
EOF
done
cat "$out/study-1.txt"

if [ -z "${SMOKE:-}" ]; then
  "$py" bench/packed.py --device cuda --threads 1 --train-size 20000 --data-dir /tmp/data
  "$py" bench/run.py --skip-tutorial --data-dir /tmp/data
fi

s=/tmp/gpu-study-spy; rm -rf "$s"
/tmp/site/bin/py-spy record --subprocesses --idle -r 50 -f speedscope -o "$out/spy.json" -- "$py" -m suite study regularization \
  --pack --data-dir /tmp/data --tracking-uri "sqlite:///$s/mlflow.db" --storage "sqlite:///$s/optuna.db" --reports-dir "$s/reports" "${smoke[@]}" \
  > /tmp/spy-study.txt 2>&1 && "$py" bench/timeline.py "$out/spy.json" || { echo "no timeline: py-spy, or the study under it, failed"; tail -3 /tmp/spy-study.txt; }
