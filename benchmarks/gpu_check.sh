#!/usr/bin/env bash
# The GPU measurements in one run that fits in 7 minutes on one H200 (no dvc or mlflow needed):
#   OUT=/some/folder bash benchmarks/gpu_check.sh            (from the repository root)
#   GPU_CHECK_SCALE=tiny bash benchmarks/gpu_check.sh         (the same steps at tiny scale on the CPU: CI)
# Steps, each under its own time limit, so one that fails or overruns does not hide the others:
#   pipeline     BOLD5000-shaped end to end: 4,916 JPEGs of 375 px, 14 AlexNet layers, extract + gram +
#                probe on the GPU (target: total_s <= 120);
#   check_device the network's input and the pipelined CUDA extraction against a plain CUDA pass (bit for
#                bit) and the CPU;
#   compare_*    gram and probe on the GPU and on the CPU from the same activations: the stored products
#                and the fold accuracies, on both routes (covariance: 4,096 units; Gram: 43,264);
#   nsd_*        NSD-shaped synthetic activations, 73,000 stimuli: fc widths (4,096 units) and conv5
#                (43,264), gram + probe on the GPU (target: <= 10 minutes for the two on the real stage).
# Writes $OUT/steps.txt (one line per step: name, exit code, seconds, limit), $OUT/log.txt (every
# step's output) and $OUT/scale.jsonl. A step is stopped with SIGINT (then SIGKILL 10 s later), so the
# Python scripts run their cleanup; the work folder is emptied at the start and at the end, so a rerun
# on a warm machine starts clean.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=src PYTHONUNBUFFERED=1 TQDM_DISABLE=1  # progress bars would flood the log
OUT=${OUT:-/tmp/gpu_check}
WORK=${WORKDIR:-/tmp/dnnprobe-gpu-check}
mkdir -p "$OUT"
rm -rf "$WORK" && mkdir -p "$WORK"
: > "$OUT/steps.txt"
: > "$OUT/log.txt"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'echo "gpu_check: interrupted" | tee -a "$OUT/steps.txt"; exit 130' INT TERM

if [ "${GPU_CHECK_SCALE:-full}" = tiny ]; then
    DEVICE=cpu; OTHER=torch-cpu; N=24; SIZE=64; WORKERS=0; CHECK_N=8; PCA=4; CV=3
    COV="--n 300 --units 64"; GRAM="--n 200 --units 400"; NSD_N=400; FC=64; CONV=512
    LIMITS=(120 60 60 60 60 60)
else
    DEVICE=cuda; OTHER=cpu; N=4916; SIZE=375; WORKERS=14; CHECK_N=128; PCA=100; CV=10
    COV="--n 3000 --units 2048"; GRAM="--n 2500 --units 43264"; NSD_N=73000; FC=4096; CONV=43264
    LIMITS=(105 25 45 35 35 165)   # 410 s in all; measured on an H200 (2026-12-04): 94, 18, -, 27, 29, ~150
fi
# GPU_CHECK_LIMITS="105 25 45 35 35 165": other limits, in seconds, one per step in order.
if [ -n "${GPU_CHECK_LIMITS:-}" ]; then read -r -a LIMITS <<< "$GPU_CHECK_LIMITS"; fi

machine() {
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader 2>&1 || true
    echo "cpus: $(nproc)"
    grep -E '^(MemTotal|MemAvailable):' /proc/meminfo
    free -g | sed -n 2p
    df -h "$WORK" | tail -n 1
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpu', torch.cuda.is_available())"
}

# step NAME LIMIT COMMAND...: run COMMAND under LIMIT seconds; its output goes to log.txt, its exit code and
# time to steps.txt (124: stopped at the limit). No pipe, so the exit code is the command's own.
step() {
    local name=$1 limit=$2
    shift 2
    echo "===== $name (limit ${limit}s): $*" >> "$OUT/log.txt"
    local started rc ms
    started=$(date +%s%N)
    timeout -s INT -k 10 "$limit" "$@" >> "$OUT/log.txt" 2>&1
    rc=$?
    ms=$(( ($(date +%s%N) - started) / 1000000 ))
    printf '%-14s rc=%-4s seconds=%d.%d limit=%s\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000 / 100)) "$limit" \
        | tee -a "$OUT/steps.txt"
    tail -n 3 "$OUT/log.txt"
    echo "memory after $name: $(grep MemAvailable /proc/meminfo), disk: $(df -h "$WORK" | tail -n 1)" >> "$OUT/log.txt"
}

machine 2>&1 | tee -a "$OUT/log.txt"
step pipeline "${LIMITS[0]}" python3 benchmarks/bench_pipeline.py --n "$N" --size "$SIZE" --device "$DEVICE" \
    --workers "$WORKERS" --pca "$PCA" --cv "$CV" --data-dir "$WORK/images"
step check_device "${LIMITS[1]}" python3 benchmarks/check_device.py --n "$CHECK_N" --size "$SIZE" --workers 4 \
    --data-dir "$WORK/check"
# shellcheck disable=SC2086 # COV and GRAM are lists of arguments
step compare_cov "${LIMITS[2]}" python3 benchmarks/bench_scale.py $COV --device "$DEVICE" --compare-device "$OTHER" \
    --pca "$PCA" --cv "$CV" --workdir "$WORK" --json "$OUT/scale.jsonl"
# shellcheck disable=SC2086
step compare_gram "${LIMITS[3]}" python3 benchmarks/bench_scale.py $GRAM --device "$DEVICE" --compare-device "$OTHER" \
    --pca "$PCA" --cv "$CV" --workdir "$WORK" --json "$OUT/scale.jsonl"
step nsd_fc "${LIMITS[4]}" python3 benchmarks/bench_scale.py --n "$NSD_N" --units "$FC" --device "$DEVICE" \
    --pca "$PCA" --cv "$CV" --workdir "$WORK" --json "$OUT/scale.jsonl"
step nsd_conv5 "${LIMITS[5]}" python3 benchmarks/bench_scale.py --n "$NSD_N" --units "$CONV" --device "$DEVICE" \
    --pca "$PCA" --cv "$CV" --workdir "$WORK" --json "$OUT/scale.jsonl"
machine >> "$OUT/log.txt" 2>&1
echo "gpu_check: done; $(awk '$2 != "rc=0"' "$OUT/steps.txt" | wc -l) step(s) failed" | tee -a "$OUT/steps.txt"
