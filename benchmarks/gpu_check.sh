#!/usr/bin/env bash
# The prepared GPU check (issue 11): one run on a single-GPU machine without internet, at most 8 minutes.
#
#   bash benchmarks/gpu_check.sh OUTDIR [--dry]
#
# Steps (each under its own time limit; one JSON file per step in OUTDIR, then summary.json and log.txt):
#   pytest      the suite's `gpu` tests (python -m pytest -m gpu tests)
#   throughput  marking with a random torchvision ResNet-18 at 224x224, 90 steps, fp32 / tf32 / bf16:
#               images/s, image-steps/s, the bare forward + input-gradient loop on the same GPU, mark quality
#   torchrun    `torchrun --standalone --nproc_per_node 2 -m radioactive mark` on a small tree, both ranks on
#               the one GPU, against a 1-process run (and a 1-process rerun: are GPU marks bit-reproducible?)
#   whitebox    white-box detection over 50,000 synthetic reference images (shipped marker, 28x28)
# --dry: the same steps on CPU at toy sizes (a few 32x32 images, 2 steps, 200 reference images); the test
# suite runs it (tests/package/test_gpu_check.py).
#
# Python: $PYTHON, else the checkout's .venv, else python3. The package is used from src/ (no install). When
# kornia is missing (the GPU image has none), wheels are installed from $RADIOACTIVE_WHEELS (default:
# .gpu-wheels/ in the checkout; fill it with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_17_x86_64 \
#       -d .gpu-wheels kornia==0.9.0 kornia_rs==0.2.0
# for the machine's Python). Exit status 0 when every step passed.
set -u -o pipefail

usage() { echo "usage: $0 OUTDIR [--dry]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1; shift
DRY=""
for arg in "$@"; do
    case $arg in --dry) DRY="--dry" ;; *) usage ;; esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG="$OUT/log.txt"
: > "$LOG"
cd "$ROOT"

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$ROOT/.venv/bin/python" ] && "$ROOT/.venv/bin/python" -c "import torch" 2>/dev/null; then PY="$ROOT/.venv/bin/python"
else PY=python3
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

if ! "$PY" -c "import kornia" 2>/dev/null; then
    WHEELS=${RADIOACTIVE_WHEELS:-$ROOT/.gpu-wheels}
    SITE=$(mktemp -d)
    echo "kornia missing: installing it from $WHEELS into $SITE" | tee -a "$LOG"
    "$PY" -m pip install --quiet --no-deps --no-index --find-links "$WHEELS" --target "$SITE" kornia kornia_rs \
        >> "$LOG" 2>&1 || { echo "cannot install kornia from $WHEELS" | tee -a "$LOG"; exit 3; }
    export PYTHONPATH="$PYTHONPATH:$SITE"
fi

# Time limits (seconds) per step: 120 + 150 + 100 + 80 = 450 s, inside the 8 minutes with the summary.
if [ -n "$DRY" ]; then LIMITS=(pytest=120 throughput=120 torchrun=180 whitebox=120)
else LIMITS=(pytest=120 throughput=150 torchrun=100 whitebox=80)
fi

SECONDS_LIST=""
STATUS=0
for entry in "${LIMITS[@]}"; do
    step=${entry%%=*}; limit=${entry#*=}
    echo "== $step (limit ${limit}s)" | tee -a "$LOG"
    started=$(date +%s%N)
    timeout --kill-after=10 "$limit" "$PY" benchmarks/gpu_check.py "$step" "$OUT" $DRY >> "$LOG" 2>&1
    code=$?
    ms=$(( ($(date +%s%N) - started) / 1000000 ))
    elapsed=$(printf "%d.%03d" $((ms / 1000)) $((ms % 1000)))
    SECONDS_LIST="$SECONDS_LIST${SECONDS_LIST:+,}$step=$elapsed"
    [ $code -eq 124 ] || [ $code -eq 137 ] && echo "$step: stopped at its ${limit}s limit" | tee -a "$LOG"
    echo "$step: exit $code after ${elapsed}s" | tee -a "$LOG"
    [ $code -eq 0 ] || STATUS=1
done
"$PY" benchmarks/gpu_check.py summary "$OUT" $DRY --seconds "$SECONDS_LIST" >> "$LOG" 2>&1 || STATUS=1
tail -n 1 "$LOG"
exit $STATUS
