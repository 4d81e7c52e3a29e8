// Host-side launcher of the Ampere-class forward kernel for one (dtype, head-dim bucket). Each
// inst/fwd_hdim<D>_<dtype>.cu instantiates launch_fwd<Element, D> once: two kernels per
// (dtype, bucket), a lean one for the common path and a full one; features are run-time flags.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <string>

#include "common/philox.h"
#include "cuda/sm80/fwd_kernel.cuh"
#include "flash/errors.h"

namespace flash::sm80 {

template <typename Element, int kHeadDim, bool kFull, int kVariant = 0>
void launch_fwd_kernel(const FwdKernelArgs& args, cudaStream_t stream) {
  using Cfg = FwdTileConfig<kHeadDim, !kFull>;
  const FwdParams& params = args.p;
  const int num_m_blocks = (params.seqlen_q + Cfg::kBlockM - 1) / Cfg::kBlockM;
  auto kernel = &fwd_kernel<Element, kHeadDim, kFull, kVariant>;
  constexpr int kSmem = Cfg::kSmemBytes;
  if (kSmem > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
    if (e != cudaSuccess) {
      throw DeviceError(std::string("sm80 fwd: cudaFuncSetAttribute(smem=") + std::to_string(kSmem) +
                        "): " + cudaGetErrorString(e));
    }
  }
  const dim3 grid(num_m_blocks, params.nheads, params.batch);
  kernel<<<grid, Cfg::kThreads, kSmem, stream>>>(args);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw DeviceError(std::string("sm80 fwd launch: ") + cudaGetErrorString(e));
}

// Lean kernel variant for d >= 160 (FwdBlock kVariant): 0 = the unroll-by-2 S = Q K^T loop,
// 1 = the register-double-buffered loop (H100, d256 bf16, round 1: ncu 4.95 -> 4.75 ms; round 2
// bench vs 0: 2K / 8K +0 / +4 %, causal +2 / +1 %). Default: 1 at d = 256 (measured), 0 for 160..224
// (not measured). FLASH_SM80_FWD_VARIANT=0|1 (read once per process) overrides it for every d >= 160.
// (Tried and removed: the same loop on FA2's 128 x 64 tile with 8 warps, 8-9 % slower in round 2.)
inline int fwd_tile_variant_env() {
  static const int v = [] {
    const char* s = std::getenv("FLASH_SM80_FWD_VARIANT");
    return s != nullptr ? std::atoi(s) : -1;
  }();
  return v;
}
template <int kHeadDim>
inline int fwd_tile_variant() {
  const int v = fwd_tile_variant_env();
  return v >= 0 ? v : (kHeadDim == 256 ? 1 : 0);
}

// FLASH_SM80_FWD_LAZY=0 (read once per process) turns the lean kernels' lazy softmax rescaling off.
inline bool fwd_lazy_rescale() {
  static const bool on = [] {
    const char* s = std::getenv("FLASH_SM80_FWD_LAZY");
    return s == nullptr || std::atoi(s) != 0;
  }();
  return on;
}

template <typename Element, int kHeadDim>
void launch_fwd(const FwdParams& params, cudaStream_t stream) {
  if (params.seqlen_q <= 0 || params.batch == 0 || params.nheads == 0) return;

  FwdKernelArgs args;
  args.p = params;
  args.scale_log2 = params.softmax_scale * 1.4426950408889634f;
  args.rp_dropout = params.dropout_p > 0.f ? 1.f / (1.f - params.dropout_p) : 1.f;
  args.keep_threshold = dropout_keep_threshold(params.dropout_p);
  args.head_ratio = params.nheads / params.nheads_k;
  args.lazy_rescale = fwd_lazy_rescale() ? 1 : 0;

  // The lean kernel covers the common case (masks, windows, varlen, GQA); anything needing
  // dropout, softcap, ALiBi, paged KV or S_dmask takes the full kernel.
  const bool full = params.dropout_p > 0.f || params.softcap > 0.f || params.alibi_slopes != nullptr ||
                    params.block_table != nullptr || params.attn_probs != nullptr;
  if (full) {
    launch_fwd_kernel<Element, kHeadDim, true>(args, stream);
  } else {
    if constexpr (kHeadDim >= 160) {
      if (fwd_tile_variant<kHeadDim>() == 1) return launch_fwd_kernel<Element, kHeadDim, false, 1>(args, stream);
    }
    launch_fwd_kernel<Element, kHeadDim, false>(args, stream);
  }
}

}  // namespace flash::sm80
