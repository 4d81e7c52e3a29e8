#!/usr/bin/env bash
# The test suite: set up, build, then the C++ tests (ctest) and the Python tests (pytest).
# GPU cases run when a CUDA device is visible and skip cleanly otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
BUILD_DIR=${FLASH_ATTN_BUILD_DIR:-build/dev}
echo "[test] C++ tests"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)"
echo "[test] Python tests"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" ${PYTHON:-python3} -m pytest -q -p no:cacheprovider \
  ${PYTEST_ARGS:-} tests/python
