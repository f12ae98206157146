#!/usr/bin/env bash
# GPU check, about 9 minutes on one H200: the gpu-marked tests; `facemtl train` / `evaluate` end to end
# on CUDA (bf16 autocast by default, fp32, a params-mode strategy, torch.compile, resume); the
# architectures at 224 px in bf16 and fp32 (step time, peak memory); the engine's throughput per
# augmentation preset; batch augmentation and the gradient strategies on the device; then the whole
# CPU test suite with CUDA visible (tests that pick `auto` devices take the GPU). Each step's output
# goes to OUT_DIR/NAME, its stderr to OUT_DIR/NAME.log; a summary line per step goes to stdout.
#
#   benchmarks/gpu_check.sh OUT_DIR            # on a machine with CUDA
#   benchmarks/gpu_check.sh --dry-run OUT_DIR  # print the commands only
#
# Without CUDA it says so, runs nothing on a GPU and exits 0 (the CPU test suite covers the rest).
# PYTHON defaults to .venv/bin/python when present, else python3. WORK (default OUT_DIR/work) holds
# the 2,000-image SynthFaces cache it renders and the run folders.
set -euo pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY=1; shift; fi
OUT="${1:?usage: benchmarks/gpu_check.sh [--dry-run] OUT_DIR}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
W="${WORK:-$OUT/work}"
C="$W/synth2000.h5"
T="$PY -m facemtl train --data $C --device cuda --force"
JOBS=$(( $(nproc) > 4 ? $(nproc) - 2 : 2 ))

# name | time limit (s) | command
STEPS=(
  "gpu_tests.txt|150|$PY -m pytest -q -m gpu -p no:cacheprovider -n 0 tests"
  "train_bf16.txt|90|$T --epochs 3 --out $W/bf16"
  "evaluate_bf16.txt|60|$PY -m facemtl evaluate $W/bf16 --device cuda --no-figures --out $W/bf16-eval"
  "resume_bf16.txt|60|$PY -m facemtl train --resume --out $W/bf16 --epochs 4"
  "architectures_224_bf16.md|60|$PY benchmarks/bench_architectures.py --device cuda --size 224 --amp bf16 --batch 64 --repeats 10"
  "architectures_224_fp32.md|60|$PY benchmarks/bench_architectures.py --device cuda --size 224 --amp off --batch 64 --repeats 10"
  "train_throughput.md|90|$PY benchmarks/bench_train.py --device cuda --num-images 2000 --steps 30 --repeats 3 --dir $W"
  "train_fp32.txt|60|$T --epochs 2 --amp off --out $W/fp32"
  "train_pcgrad_params.txt|60|$T --epochs 1 --weighting pcgrad --grad-mode params --out $W/pcgrad"
  "test_suite_cuda_visible.txt|200|$PY -m pytest -q -p no:cacheprovider -n $JOBS tests"
  "train_compile.txt|120|$T --epochs 2 --compile --out $W/compile"
  "augment.md|40|$PY benchmarks/bench_augment.py --device cuda --batches 20 --repeats 5"
  "weighting_celeba40.md|200|$PY benchmarks/bench_weighting.py --device cuda --setups celeba40 --mode both --only pcgrad,mgda,cagrad,nash,imtl,aligned,dbmtl,gradnorm --steps 5"
)

if [[ $DRY -eq 1 ]]; then
  for s in "${STEPS[@]}"; do IFS='|' read -r name limit cmd <<<"$s"; echo "timeout $limit $cmd > $OUT/$name"; done
  exit 0
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA device here; nothing run (docs/benchmarks.md, \"On a GPU\", holds the figures of an H200)."
  exit 0
fi
mkdir -p "$W"
"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")' | tee "$OUT/device.txt"
if [[ ! -f "$C" ]]; then
  $PY -m facemtl prepare synthetic --out "$C" -n 2000 --identities 100 --sizes 64 --scenes 0 > "$OUT/prepare.log" 2>&1
fi
status=0
for s in "${STEPS[@]}"; do
  IFS='|' read -r name limit cmd <<<"$s"
  start=$(date +%s)
  if timeout "$limit" $cmd > "$OUT/$name" 2> "$OUT/${name%.*}.log"; then r=0; else r=$?; status=1; fi
  echo "$name: exit $r in $(( $(date +%s) - start ))s | $(tail -n 1 "$OUT/$name" | cut -c1-150)"
done
exit $status
