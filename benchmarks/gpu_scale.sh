#!/bin/sh
# Issue 14's GPU check (one CUDA GPU, e.g. an H200): about 6-7 minutes, no dvc or mlflow needed.
#   sh benchmarks/gpu_scale.sh            (from the repository root)
# 1. torch on the GPU against numpy on the CPU, per fold, on the same stored matrices (both routes);
# 2. NSD-shaped synthetic activations (73,000 stimuli; fc1/fc2 width 4,096 and conv5 width 43,264,
#    both on the covariance route) through the gram and probe stages on the GPU: target <= 10 minutes.
# The temporary activation files (up to 12.6 GB) go to ${WORKDIR:-/tmp} and are deleted after each point.
set -e
export PYTHONPATH=src
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 benchmarks/bench_scale.py --n 5000 --units 4096,43264 --device cuda --compare-device cpu --workdir "${WORKDIR:-/tmp}"
python3 benchmarks/bench_scale.py --n 73000 --units 4096,43264 --device cuda --workdir "${WORKDIR:-/tmp}"
