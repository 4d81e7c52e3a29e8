#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine (idempotent, quick when done):
# GoogleTest, cmake/ninja, the CPU build of torch, nanobind, scikit-build-core, nvidia-cutlass, pytest.
set -euo pipefail
PY=${PYTHON:-python3}

need_apt=()
[ -f /usr/lib/x86_64-linux-gnu/libgtest.a ] || [ -f /usr/lib/aarch64-linux-gnu/libgtest.a ] || need_apt+=(libgtest-dev)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v ninja >/dev/null || need_apt+=(ninja-build)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }
# torch: the Python layer only; any torch >= 2.4 works. This machine kind keeps a CPU wheel on disk.
"$PY" -c "import torch" 2>/dev/null || { echo "[setup] pip install torch==2.13.0"; pip_install torch==2.13.0; }
missing=()
"$PY" -c "import nanobind" 2>/dev/null || missing+=(nanobind)
"$PY" -c "import scikit_build_core" 2>/dev/null || missing+=(scikit-build-core)
"$PY" -c "import cutlass_library" 2>/dev/null || missing+=(nvidia-cutlass==4.2.0.0)
"$PY" -c "import pytest" 2>/dev/null || missing+=(pytest)
"$PY" -c "import numpy" 2>/dev/null || missing+=(numpy)
if [ ${#missing[@]} -gt 0 ]; then echo "[setup] pip install ${missing[*]}"; pip_install "${missing[@]}"; fi
echo "[setup] ok"
