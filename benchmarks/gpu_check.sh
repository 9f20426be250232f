#!/bin/sh
# Issue 14's GPU measurements in one run (about 8 minutes on one H200; needs no dvc or mlflow):
#   OUT=/some/folder sh benchmarks/gpu_check.sh        (from the repository root)
# 1. BOLD5000-shaped end to end on the GPU: 4,916 JPEGs of 375 px, 14 AlexNet layers, extract + gram +
#    probe (target: total_s <= 120);
# 2. the pipelined CUDA extraction against a plain CUDA forward pass (bit for bit) and the CPU;
# 3. the probe's torch code on the GPU against numpy on the CPU, per fold, on both routes;
# 4. NSD-shaped synthetic activations, 73,000 stimuli, fc1/fc2 (4,096 units) and conv5 (43,264) widths,
#    gram + probe on the GPU (target: <= 10 minutes).
# Each step has its own time limit, so one that fails or overruns does not hide the others.
export PYTHONPATH=src
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; echo "cpus: $(nproc)";
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } 2>&1 | tee "$OUT/machine.txt"
timeout -k 5 220 python3 benchmarks/bench_pipeline.py --n 4916 --size 375 --device cuda --workers 14 2>&1 \
    | grep -v "images:" | tee "$OUT/pipeline.txt"
timeout -k 5 70 python3 benchmarks/check_device.py --n 256 --workers 4 2>&1 | grep -v "images:" | tee "$OUT/check_device.txt"
timeout -k 5 45 python3 benchmarks/bench_scale.py --n 5000 --units 4096 --device cuda --compare-device cpu \
    --json "$OUT/scale.jsonl" 2>&1 | tee "$OUT/compare_covariance.txt"
timeout -k 5 45 python3 benchmarks/bench_scale.py --n 2500 --units 43264 --device cuda --compare-device cpu \
    --json "$OUT/scale.jsonl" 2>&1 | tee "$OUT/compare_gram.txt"
timeout -k 5 190 python3 benchmarks/bench_scale.py --n 73000 --units 4096,43264 --device cuda \
    --json "$OUT/scale.jsonl" 2>&1 | tee "$OUT/nsd.txt"
