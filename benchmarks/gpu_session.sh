#!/usr/bin/env bash
# One prepared call for a GPU machine: speed benchmark, CUDA-only switch checks, the suite.
# Usage: bash benchmarks/gpu_session.sh [OUT_DIR]   (under 10 minutes: each step has a timeout)
#
# The lent GPU machines have python3 with torch, torchvision, numpy and matplotlib but not
# tomli-w, and fetch nothing. Before the call, here:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl tomli-w
# and name `.whl` in the call's carry; this script installs it when it is missing.
set -u
out="${1:-${OUT:-benchmarks/out}}"
mkdir -p "$out"
py=.venv/bin/python
[ -x "$py" ] || py=python3
if ! "$py" -c "import tomli_w" 2>/dev/null; then
    if ! ls .whl/tomli_w-*.whl >/dev/null 2>&1; then
        echo "tomli_w is not installed here and no .whl/tomli_w-*.whl was carried" >&2
        exit 2
    fi
    "$py" -m pip install -q --no-index --no-deps --target /tmp/site .whl/tomli_w-*.whl || exit 2
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
timeout 200 "$py" benchmarks/bench_speed.py --device cuda 2>&1 | tee "$out/bench_speed.txt"
timeout 150 "$py" benchmarks/gpu_switches.py 2>&1 | tee "$out/switches.txt"
timeout 200 "$py" benchmarks/time_suite.py --one-epoch 2>&1 | tee "$out/suite.txt"
# Two detached CUDA runs started warm (forked from the store's warm process): both must train.
warm_dir=$(mktemp -d)
cat >"$warm_dir/experiments.toml" <<'TOML'
[defaults]
dataset = "synthetic"
train_size = 4096
test_size = 512
batch_size = 64
epochs = 2
device = "cuda"
runs_per_gpu = 2

[[experiment]]
name = "warm-a"

[[experiment]]
name = "warm-b"
seed = 1
TOML
pyabs=$(command -v "$py" || echo "$PWD/$py")
case "$pyabs" in /*) ;; *) pyabs="$PWD/$pyabs" ;; esac
(
    cd "$warm_dir" || exit 2
    export PYTHONPATH="$OLDPWD${PYTHONPATH:+:$PYTHONPATH}" CNNTUI_WARM_IDLE=30
    timeout 60 "$pyabs" -m cnntui --run all --detach
    timeout 120 bash -c 'until [ "$("$0" -m cnntui --status | grep -c finished)" -ge 2 ]; do
        sleep 2; done' "$pyabs"
    "$pyabs" -m cnntui --status
    cat runs/.warm.log runs/*/*/worker.log
) 2>&1 | tee "$out/warm.txt"
