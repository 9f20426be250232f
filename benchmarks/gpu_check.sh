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
#                (43,264), gram + probe on the GPU (target: <= 10 minutes for the two on the real stage);
#   pipeline_direct (not run by default) pipeline with the activation file written with O_DIRECT
#                (--direct-io on; extraction on a GPU writes through the page cache by default): a lever
#                to measure, against pipeline in the same call;
#   vit_cls      (not run by default) the same end to end as pipeline with torchvision's ViT-B/16 (random
#   vit_mean     weights), its 12 blocks, extract.tokens cls, then mean: 768 units per block
#                (target: total_s <= 120 each);
#   vit_all      (only with GPU_CHECK_VIT_ALL=1) the same with extract.tokens all: 197 x 768 units per
#                block, a 36.0 GB activation file and a 1.2 GB Gram file on the work folder's disk (the
#                script refuses, in one line, a disk that cannot hold both; it prints the sizes measured).
# GPU_CHECK_STEPS="vit_cls vit_mean" runs the steps named, in that order (default: pipeline check_device
# compare_cov compare_gram nsd_fc nsd_conv5, 410 s of limits). Every step's limit together is 960 s, more
# than one device call of 600 s, so the full set takes two calls (each fits, under 560 s of limits):
#   OUT=/some/folder bash benchmarks/gpu_check.sh                                     (410 s)
#   OUT=/some/folder GPU_CHECK_STEPS="vit_cls vit_mean" GPU_CHECK_VIT_ALL=1 \
#       bash benchmarks/gpu_check.sh                                                  (550 s: vit_all last)
# GPU_CHECK_LIMITS then gives one limit per step run, in order.
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

DEFAULT_STEPS="pipeline check_device compare_cov compare_gram nsd_fc nsd_conv5"
declare -A LIMIT
if [ "${GPU_CHECK_SCALE:-full}" = tiny ]; then
    DEVICE=cpu; OTHER=torch-cpu; N=24; SIZE=64; WORKERS=0; CHECK_N=8; PCA=4; CV=3
    COV="--n 300 --units 64"; GRAM="--n 200 --units 400"; NSD_N=400; FC=64; CONV=512
    VIT_N=8  # ViT-B/16 itself (224 px input whatever the JPEG's size): about 10 s a step on one CPU core
    LIMIT=([pipeline]=120 [pipeline_direct]=120 [check_device]=60 [compare_cov]=60 [compare_gram]=60 [nsd_fc]=60 [nsd_conv5]=60
           [vit_cls]=60 [vit_mean]=60 [vit_all]=60)
else
    DEVICE=cuda; OTHER=cpu; N=4916; SIZE=375; WORKERS=14; CHECK_N=128; PCA=100; CV=10
    COV="--n 3000 --units 2048"; GRAM="--n 2500 --units 43264"; NSD_N=73000; FC=4096; CONV=43264
    VIT_N=4916
    # 410 s in all; measured on an H200 (2026-12-04): 94, 18, -, 27, 29, ~150
    LIMIT=([pipeline]=105 [check_device]=25 [compare_cov]=45 [compare_gram]=35 [nsd_fc]=35 [nsd_conv5]=165)
    # Not yet run on a GPU; limits from a rough estimate. vit_cls: drawing the 4,916 images when it is a call's
    # first step (~40 s: the pipeline step took 94 s for a total_s of 52), Python, torch and the network ~10 s,
    # extract ~15 s (decoding-bound as AlexNet's 414 images/s; ViT-B/16's forward passes, about 86 TFLOP in
    # float32, take a few seconds), gram and probe on 12 x 768 units (covariance route) ~15 s: ~80 s, limit 150.
    # vit_mean: the same with the images already drawn (~40 s), limit 100 (enough to draw them too, barely).
    # vit_all: writing 36.0 GB (~25-70 s: 1.5 GB/s for AlexNet's 19.6 GB, slower once the page cache is full),
    # reading it back for the Gram matrices and its sha256 (~40 s: AlexNet's 19.6 GB took 19.5 s), 12 Gram-route
    # probes at n = 4,916 (~30 s), and the images and start when first (~50 s): ~150-190 s, limit 300.
    LIMIT+=([vit_cls]=150 [vit_mean]=100 [vit_all]=300 [pipeline_direct]=105)
fi
KNOWN="$DEFAULT_STEPS pipeline_direct vit_cls vit_mean vit_all"
read -r -a STEPS <<< "${GPU_CHECK_STEPS:-$DEFAULT_STEPS}"
if [ "${GPU_CHECK_VIT_ALL:-0}" = 1 ] && [[ " ${STEPS[*]} " != *" vit_all "* ]]; then STEPS+=(vit_all); fi
refuse() { echo "gpu_check: $*" | tee -a "$OUT/steps.txt" >&2; exit 2; }
for name in "${STEPS[@]}"; do
    [[ " $KNOWN " == *" $name "* ]] || refuse "unknown step $name in GPU_CHECK_STEPS (steps: $KNOWN)"
    if [ "$name" = vit_all ] && [ "${GPU_CHECK_VIT_ALL:-0}" != 1 ]; then
        refuse "vit_all writes a 36 GB activation file: set GPU_CHECK_VIT_ALL=1 to run it"
    fi
done
# GPU_CHECK_LIMITS="105 25 45 35 35 165": other limits, in seconds, one per step run, in order.
if [ -n "${GPU_CHECK_LIMITS:-}" ]; then
    read -r -a LIMITS <<< "$GPU_CHECK_LIMITS"
    [ "${#LIMITS[@]}" = "${#STEPS[@]}" ] ||
        refuse "GPU_CHECK_LIMITS has ${#LIMITS[@]} limits for ${#STEPS[@]} steps (${STEPS[*]})"
    for i in "${!STEPS[@]}"; do LIMIT[${STEPS[$i]}]=${LIMITS[$i]}; done
fi
TOTAL=0
for name in "${STEPS[@]}"; do TOTAL=$((TOTAL + LIMIT[$name])); done
PLAN="gpu_check: steps ${STEPS[*]}; limits ${TOTAL} s in all"
if [ "$TOTAL" -gt 560 ]; then
    PLAN="$PLAN (more than one 600 s device call holds: split GPU_CHECK_STEPS over two calls)"
fi

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

# run_step NAME: the step's command under its limit
run_step() {
    local name=$1 limit=${LIMIT[$1]}
    case $name in
        pipeline) step pipeline "$limit" python3 benchmarks/bench_pipeline.py --n "$N" --size "$SIZE" \
            --device "$DEVICE" --workers "$WORKERS" --pca "$PCA" --cv "$CV" --data-dir "$WORK/images" ;;
        pipeline_direct) step pipeline_direct "$limit" python3 benchmarks/bench_pipeline.py --n "$N" --size "$SIZE" \
            --device "$DEVICE" --workers "$WORKERS" --pca "$PCA" --cv "$CV" --data-dir "$WORK/images" --direct-io on ;;
        check_device) step check_device "$limit" python3 benchmarks/check_device.py --n "$CHECK_N" --size "$SIZE" \
            --workers 4 --data-dir "$WORK/check" ;;
        # shellcheck disable=SC2086 # COV and GRAM are lists of arguments
        compare_cov) step compare_cov "$limit" python3 benchmarks/bench_scale.py $COV --device "$DEVICE" \
            --compare-device "$OTHER" --pca "$PCA" --cv "$CV" --workdir "$WORK" --json "$OUT/scale.jsonl" ;;
        # shellcheck disable=SC2086
        compare_gram) step compare_gram "$limit" python3 benchmarks/bench_scale.py $GRAM --device "$DEVICE" \
            --compare-device "$OTHER" --pca "$PCA" --cv "$CV" --workdir "$WORK" --json "$OUT/scale.jsonl" ;;
        nsd_fc) step nsd_fc "$limit" python3 benchmarks/bench_scale.py --n "$NSD_N" --units "$FC" --device "$DEVICE" \
            --pca "$PCA" --cv "$CV" --workdir "$WORK" --json "$OUT/scale.jsonl" ;;
        nsd_conv5) step nsd_conv5 "$limit" python3 benchmarks/bench_scale.py --n "$NSD_N" --units "$CONV" \
            --device "$DEVICE" --pca "$PCA" --cv "$CV" --workdir "$WORK" --json "$OUT/scale.jsonl" ;;
        # the same images folder as pipeline: drawn once per call
        vit_cls | vit_mean | vit_all) step "$name" "$limit" python3 benchmarks/bench_pipeline.py --network vit_b_16 \
            --tokens "${name#vit_}" --n "$VIT_N" --size "$SIZE" --device "$DEVICE" --workers "$WORKERS" --pca "$PCA" \
            --cv "$CV" --data-dir "$WORK/images" ;;
    esac
}

echo "$PLAN" | tee -a "$OUT/log.txt"
machine 2>&1 | tee -a "$OUT/log.txt"
for name in "${STEPS[@]}"; do run_step "$name"; done
machine >> "$OUT/log.txt" 2>&1
echo "gpu_check: done; $(awk '$2 != "rc=0"' "$OUT/steps.txt" | wc -l) step(s) failed" | tee -a "$OUT/steps.txt"
