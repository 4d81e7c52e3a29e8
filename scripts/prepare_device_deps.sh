#!/usr/bin/env bash
# Fills .deps/ (git-ignored) with the wheels the GPU machine lacks and cannot download (it has no
# network): only nvidia-cutlass (CuTe/CUTLASS headers). Run once on a machine with PyPI access, then
# carry .deps with the source tree to the GPU machine; scripts/gpu_round.sh installs from it.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .deps nvidia-cutlass==4.2.0.0
ls -la .deps
