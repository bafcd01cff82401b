#!/usr/bin/env bash
# Writes requirements/constraints.txt: the exact versions `make test`, `make run` and CI
# install (pip install -c), for everything but torch, torchvision and the CUDA build's own
# packages (nvidia-*, cuda-*, triton), which stay whatever build the user installs.
# Run it as `make lock` after changing a dependency in pyproject.toml; versions already in
# the file are kept unless `make lock UPGRADE=1`.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-uv}
out=requirements/constraints.txt
# torch and torchvision are pinned only while resolving, so the rest fits the tested build.
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
printf 'torch==%s\ntorchvision==%s\n' "${TORCH_VERSION:-2.14.1}" "${TORCHVISION_VERSION:-0.29.1}" >"$pins"
# First pass: the whole tree, to name the CUDA build's packages that the lock leaves out.
cuda=$("$uv" pip compile pyproject.toml --quiet --extra test --extra ray -c "$pins" \
    --python-version 3.11 --no-header --no-annotate \
    | grep -oE '^(nvidia-[a-z0-9-]+|cuda-[a-z0-9-]+|triton)==' | tr -d '=' \
    | grep -vx 'nvidia-ml-py' || true)
args=(--no-emit-package torch --no-emit-package torchvision)
for name in $cuda; do args+=(--no-emit-package "$name"); done
[[ -n "${UPGRADE:-}" ]] && args+=(--upgrade)
"$uv" pip compile pyproject.toml --quiet --extra test --extra ray -c "$pins" \
    --python-version 3.11 --custom-compile-command "make lock" "${args[@]}" -o "$out"
echo "wrote $out ($(grep -c '==' "$out") pinned)"
