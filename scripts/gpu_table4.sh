#!/usr/bin/env bash
# Issue 20, "A GPU when one is lent": the AutoMix paper's Table 4, MNIST(sub) column, on the paper's protocol
# (automix-mnist-sub: the 11-layer CNN at full width with dropout, 100 epochs, all 10,000 test images; not --quick),
# 10 trials of each of the table's 8 rows (80 runs), on one GPU shared by JOBS runs at once (mixlab reproduce
# --jobs: same run ids and numbers as one after another). Writes the report (report.md, results.json, the figure)
# and the log to REPORT_DIR.
#
# Usage, from the repository root:
#   DATA=<data root with mnist/> bash scripts/gpu_table4.sh [REPORT_DIR]
# Environment: DATA (default $MIXLAB_DATA, else shared/data), JOBS (runs at once, default 8: 2 CPU threads each on
# 16 cores), STORE (the results store and checkpoints, default ${TMPDIR:-/tmp}/mixlab-gpu-table4), PYTHON (default
# python3), LIMIT_S (stop the sweep after this many seconds, default 570: inside one 10-minute device command).
# STORE's results.db is copied to REPORT_DIR at the end, finished or stopped, and copied back into an empty STORE at
# the start: on a fresh machine the same command trains only the runs still missing. Stopped at LIMIT_S, the script
# still writes the report (--report-only: the trials whose runs all finished).
# TARGET and COLUMNS run another table the same way, e.g. issue 21's learned mixers on both sub columns:
#   TARGET=automix-table4-learned COLUMNS='MNIST(sub),F-MNIST(sub)' TRIALS=3 DATA=... bash scripts/gpu_table4.sh OUT
# (COLUMNS empty: every column; TRIALS: trials per cell, default 10; QUICK=1: the --quick protocols, e.g.
#   TARGET=amp-table2 COLUMNS= QUICK=1 TRIALS=3 for issue 19's text table).
# MIXLAB_GPU_TABLE4_TINY=1: the same script as a CPU smoke test (tests/test_jobs.py): --quick, 1 trial, 1 epoch, the
# erm and mixup rows, 2 jobs on the CPU; its numbers mean nothing.
set -euo pipefail

REPORT_DIR=${1:-${REPORT_DIR:-gpu-table4}}
DATA=${DATA:-${MIXLAB_DATA:-shared/data}}
STORE=${STORE:-${TMPDIR:-/tmp}/mixlab-gpu-table4}
PYTHON=${PYTHON:-python3}
TARGET=${TARGET:-automix-table4}
COLUMNS=${COLUMNS-MNIST(sub)}
COLS=()
if [ -n "$COLUMNS" ]; then COLS=(--columns "$COLUMNS"); fi
if [ "${MIXLAB_GPU_TABLE4_TINY:-0}" = 1 ]; then
    ARGS=(--quick --trials 1 --epochs 1 --methods erm,mixup --device cpu --jobs 2)
else
    ARGS=(--trials "${TRIALS:-10}" --device cuda --jobs "${JOBS:-8}")
    if [ "${QUICK:-0}" = 1 ]; then ARGS+=(--quick); fi  # the CPU-sized protocols (e.g. issue 19's amp-table2)
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: torch ' + torch.__version__)"
fi
if [ ! -d "$DATA/mnist" ]; then
    echo "gpu_table4: no mnist/ under DATA=$DATA; set DATA to the staged data root" >&2
    exit 2
fi
mkdir -p "$REPORT_DIR" "$STORE"
if [ -f "$REPORT_DIR/results.db" ] && [ ! -f "$STORE/results.db" ]; then
    cp "$REPORT_DIR/results.db" "$STORE/results.db"  # the runs an earlier, stopped invocation finished
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /' \
    | tee "$REPORT_DIR/log.txt" || true
start=$(date +%s)
set +e
timeout --signal=INT "${LIMIT_S:-570}" "$PYTHON" -m mixlab reproduce "$TARGET" "${COLS[@]}" "${ARGS[@]}" \
    --data-dir "$DATA" --out "$STORE" --report-dir "$REPORT_DIR" --no-progress 2>&1 | tee -a "$REPORT_DIR/log.txt"
code=${PIPESTATUS[0]}
set -e
cp "$STORE/results.db" "$REPORT_DIR/results.db" 2>/dev/null || true
echo "gpu_table4: exit $code after $(( $(date +%s) - start )) s; load average $(cut -d' ' -f1-3 /proc/loadavg)" \
    | tee -a "$REPORT_DIR/log.txt"
if [ "$code" = 124 ] || [ "$code" = 130 ]; then
    echo "gpu_table4: stopped at LIMIT_S=${LIMIT_S:-570} s; the report below counts the trials finished so far" \
        "(REPORT_DIR/results.db holds them: run again to train the rest)" | tee -a "$REPORT_DIR/log.txt"
    "$PYTHON" -m mixlab reproduce "$TARGET" "${COLS[@]}" "${ARGS[@]}" --report-only \
        --data-dir "$DATA" --out "$STORE" --report-dir "$REPORT_DIR" --no-progress 2>&1 | tee -a "$REPORT_DIR/log.txt"
fi
exit "$code"
