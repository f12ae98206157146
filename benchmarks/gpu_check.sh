#!/usr/bin/env bash
# GPU check, under 8 minutes on one GPU: the gpu-marked tests, then the weighting, training-throughput
# and loader benchmarks, each table written to OUT_DIR.
#
#   benchmarks/gpu_check.sh OUT_DIR            # on a machine with CUDA
#   benchmarks/gpu_check.sh --dry-run OUT_DIR  # print the commands only
#
# Without CUDA it says so, runs nothing on a GPU and exits 0 (the CPU test suite covers the rest).
# PYTHON defaults to .venv/bin/python when present, else python3.
set -euo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT="${1:?usage: benchmarks/gpu_check.sh [--dry-run] OUT_DIR}"
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# name | time limit (s) | command (stdout goes to OUT/name)
STEPS=(
  "gpu_tests.txt|240|$PY -m pytest -q -m gpu -p no:cacheprovider -n 0 tests"
  "weighting_celeba40.md|150|$PY benchmarks/bench_weighting.py --device cuda --setups celeba40 --mode both --only pcgrad,mgda,cagrad,nash,imtl,aligned,dbmtl,gradnorm --steps 5"
  "train_throughput.md|60|$PY benchmarks/bench_train.py --num-images 2000 --steps 40 --repeats 1"
  "loader_224.md|30|$PY benchmarks/bench_loader.py --num-images 4000 --size 224 --workers 0 4"
)

if [[ $DRY -eq 1 ]]; then
  for s in "${STEPS[@]}"; do IFS='|' read -r name limit cmd <<<"$s"; echo "timeout $limit $cmd > $OUT/$name"; done
  exit 0
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA device here; nothing run (the GPU figures in docs/benchmarks.md stay missing)."
  exit 0
fi
mkdir -p "$OUT"
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")' > "$OUT/device.txt"
status=0
for s in "${STEPS[@]}"; do
  IFS='|' read -r name limit cmd <<<"$s"
  echo "== $name (limit ${limit}s): $cmd"
  start=$(date +%s)
  if timeout "$limit" $cmd > "$OUT/$name" 2> "$OUT/${name%.*}.log"; then r=0; else r=$?; status=1; fi
  echo "   exit $r in $(( $(date +%s) - start ))s -> $OUT/$name"
done
exit $status
