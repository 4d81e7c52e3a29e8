#!/usr/bin/env bash
# The main job: set up, build, then run attention on whatever hardware is here (the GPU if one is
# visible, else the CPU backend), check it against an fp64 reference, and time it against torch SDPA.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" ${PYTHON:-python3} benchmarks/demo.py "$@"
