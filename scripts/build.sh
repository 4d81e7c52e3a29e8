#!/usr/bin/env bash
# Builds the core library, the C++ tests and flash_attn/_C (in place, so the repo imports as is).
# With a visible GPU: every instantiation for that GPU's architecture. Without one (CI, laptops):
# one instantiation per kernel family (hdim 128, bf16), which still compiles every CUDA kernel.
# Override with FLASH_ATTN_HDIMS, FLASH_ATTN_DTYPES, FLASH_ATTN_SM80_ARCHS, FLASH_ATTN_CUDA=ON|OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BUILD_DIR=${FLASH_ATTN_BUILD_DIR:-build/dev}

if [ -z "${FLASH_ATTN_HDIMS:-}" ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    FLASH_ATTN_HDIMS=all
    cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
    FLASH_ATTN_SM80_ARCHS=${FLASH_ATTN_SM80_ARCHS:-$cc}
  else
    FLASH_ATTN_HDIMS=128
    FLASH_ATTN_DTYPES=${FLASH_ATTN_DTYPES:-bf16}
    FLASH_ATTN_SM80_ARCHS=${FLASH_ATTN_SM80_ARCHS:-80}
    # Kernel families that only exist at other head dims: the sm80 d256 forward (P*V split by
    # head dim), the sm90 wide-head-dim backward, the sm90 d64 forward with 192-row tiles, the sm90
    # d256 forward with 128 x 48 tiles (causal, short sequences).
    FLASH_ATTN_EXTRA_INSTANTIATIONS=${FLASH_ATTN_EXTRA_INSTANTIATIONS-fwd_hdim256_bf16;bwd_hdim256_bf16;fwd_hdim64_bf16_m192;fwd_hdim256_bf16_n48}
  fi
fi
args=(-DFLASH_ATTN_BUILD_PYTHON=ON -DFLASH_ATTN_BUILD_TESTS=ON -DFLASH_ATTN_INPLACE=ON
      -DPython_EXECUTABLE="$(command -v "$PY")" "-DFLASH_ATTN_HDIMS=${FLASH_ATTN_HDIMS}"
      "-DFLASH_ATTN_DTYPES=${FLASH_ATTN_DTYPES:-fp16;bf16}" "-DFLASH_ATTN_SM80_ARCHS=${FLASH_ATTN_SM80_ARCHS:-80;90}"
      "-DFLASH_ATTN_EXTRA_INSTANTIATIONS=${FLASH_ATTN_EXTRA_INSTANTIATIONS:-}")
[ -n "${FLASH_ATTN_CUDA:-}" ] && args+=("-DFLASH_ATTN_CUDA=${FLASH_ATTN_CUDA}")
[ -n "${FLASH_ATTN_SM90:-}" ] && args+=("-DFLASH_ATTN_SM90=${FLASH_ATTN_SM90}")
[ -n "${CUDACXX:-}" ] || { [ -x /usr/local/cuda/bin/nvcc ] && export CUDACXX=/usr/local/cuda/bin/nvcc; } || true

echo "[build] cmake ${args[*]}"
cmake -S . -B "$BUILD_DIR" -G Ninja "${args[@]}" >/dev/null
start=$(date +%s)
cmake --build "$BUILD_DIR" -j "${FLASH_ATTN_JOBS:-$(nproc)}"
echo "[build] done in $(( $(date +%s) - start )) s"
