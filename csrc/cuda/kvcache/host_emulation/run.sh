#!/bin/bash
# Runs the kvcache kernels on the CPU (128 std::threads per CTA, ldmatrix/mma/shfl emulated per the
# PTX ISA) through the real kvcache_api.cu, and compares with flash::cpu::fwd_kvcache.
# No GPU needed. Usage: csrc/cuda/kvcache/host_emulation/run.sh   (from anywhere)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../../.." && pwd)"
out="${TMPDIR:-/tmp}/kvcache_host_emulation"
mkdir -p "$out"
cp "$here/emu_ptx.h" "$out/"
python3 - "$root" "$out" <<'PY'
import sys
root, out = sys.argv[1], sys.argv[2]
k = root + "/csrc/cuda/kvcache/"
s = open(k + "kvcache_attn_kernel.cuh").read()
s = s.replace('#include "cuda/kvcache/kvcache_ptx.cuh"', '#include "emu_ptx.h"')
s = s.replace('extern __shared__ __align__(128) unsigned char smem[];', 'unsigned char* smem = g_smem;')
s = s[:s.index('template <typename Elem, int D, bool kLean>\nvoid launch_attention_layout')] + '}  // namespace flash::kvcache_cuda\n'
open(out + "/attn_emu.h", "w").write(s)
s = open(k + "kvcache_aux_kernels.cu").read()
s = s.replace('#include "cuda/kvcache/kvcache_ptx.cuh"', '#include "emu_ptx.h"')
s = s.replace('extern __shared__ __align__(16) unsigned char combine_smem[];', 'unsigned char* combine_smem = g_smem;')
s = s[:s.index('}  // namespace\n')] + '}  // namespace\n}  // namespace flash::kvcache_cuda\n'
open(out + "/aux_emu.h", "w").write(s)
PY
cuda_inc="${CUDA_HOME:-/usr/local/cuda}/include"
cuda_lib="${CUDA_HOME:-/usr/local/cuda}/lib64"
cd "$root"
g++ -std=c++20 -O1 -ffp-contract=off -pthread -I"$cuda_inc" -Iinclude -Icsrc -I"$out" \
  -DFLASH_HDIM_64_ENABLED -DFLASH_HDIM_128_ENABLED -DFLASH_HDIM_256_ENABLED \
  -DFLASH_FP16_ENABLED -DFLASH_BF16_ENABLED \
  "$here/harness.cpp" -x c++ csrc/cuda/kvcache/kvcache_api.cu -x none \
  csrc/cpu/kvcache.cpp csrc/cpu/attention_core.cpp csrc/types.cpp \
  -L"$cuda_lib" -lcudart -Wl,-rpath,"$cuda_lib" -o "$out/harness"
"$out/harness"
