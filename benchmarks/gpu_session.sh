#!/usr/bin/env bash
# One prepared call for a GPU machine: speed benchmark, CUDA-only switch checks, the suite.
# Usage: bash benchmarks/gpu_session.sh [OUT_DIR]   (under 10 minutes: each step has a timeout)
set -u
out="${1:-${OUT:-benchmarks/out}}"
mkdir -p "$out"
py=.venv/bin/python
[ -x "$py" ] || py=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
timeout 200 "$py" benchmarks/bench_speed.py --device cuda 2>&1 | tee "$out/bench_speed.txt"
timeout 150 "$py" benchmarks/gpu_switches.py 2>&1 | tee "$out/switches.txt"
timeout 200 "$py" benchmarks/time_suite.py --one-epoch 2>&1 | tee "$out/suite.txt"
