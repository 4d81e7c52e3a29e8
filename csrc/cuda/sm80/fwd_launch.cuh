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

template <typename Cfg, bool kFull, int kVariant>
constexpr int fwd_smem_bytes() {
  return !kFull && (kVariant & kVarSplitPV) != 0 ? SplitPvSmem<Cfg>::kBytes : Cfg::kSmemBytes;
}

template <typename Element, int kHeadDim, bool kFull, int kVariant = 0>
void launch_fwd_kernel(const FwdKernelArgs& args, cudaStream_t stream) {
  using Cfg = typename FwdBlock<Element, kHeadDim, kFull, kVariant>::Cfg;
  const FwdParams& params = args.p;
  const int num_m_blocks = (params.seqlen_q + Cfg::kBlockM - 1) / Cfg::kBlockM;
  auto kernel = &fwd_kernel<Element, kHeadDim, kFull, kVariant>;
  constexpr int kSmem = fwd_smem_bytes<Cfg, kFull, kVariant>();
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

// Lean kernel variant = bit flags (fwd_block.cuh): kVarPipelinedS (1), kVarSplitMask (2),
// kVarEarlyBarrier (4), kVarKFast (8), kVarSplitPV (16), kVarSUnroll4 (32), kVarSwizzle (64) (pass 5: see
// launch_fwd and README.md). Measured on the H100 (bf16, 16K tokens, 2K / 8K, non-causal
// then causal; in-process A/B, medians of 3; README.md "Performance pass 4"):
// - kVarPipelinedS at d256 (pass 3: ncu 4.95 -> 4.75 ms; bench 2K / 8K +0 / +4 %, causal +2 / +1 %).
// - kVarEarlyBarrier: d64 +5.0 / +3.4 / +4.9 / +4.4 % (round 2: +4.7 / +4.2 / +5.5 / +4.9 %), d128
//   +0.7 / -0.1 / +0.6 / +0.9 % (round 2: +0.7 / +1.7 / +1.2 / +1.3 %), d256 +0.4 / -0.4 / +3.8 / +2.9 %.
// - kVarSplitMask alone at d256: -3.4 / -2.0 / -0.8 / -2.7 % (19 % fewer instructions, yet slower).
// - kVarSplitPV + kVarSplitMask at d256 (19) vs 1 | 4: bf16 +9.6 / +6.3 / +2.3 / +7.8 %, fp16 +7.2 / +8.5 /
//   +2.0 / +7.8 %; without the split mask loop (17) only -2..+2 %.
// - FA2's 128 x 64 tile with 8 warps and the pipelined loop (pass 3): 8-9 % slower (removed).
// Defaults: d256 83 (pass 5; 1 | 4 where the device lacks the ~110 KB of smem), d64 4, d128 44 (pass 5), d 160..224 0
// (pipelined S / early barrier not measured there). FLASH_SM80_FWD_VARIANT=<flags> overrides the
// default, read on every call (cheap next to a launch) so that one process can interleave A/B runs;
// the sets compiled per head dim are listed in launch_fwd, an unlisted set runs the default.
inline int fwd_variant_env() {
  const char* s = std::getenv("FLASH_SM80_FWD_VARIANT");
  return s != nullptr && *s != '\0' ? std::atoi(s) : -1;
}
template <int kHeadDim>
inline int fwd_tile_variant() {
  const int v = fwd_variant_env();
  if (v >= 0) return v;
  // d256: 83 = 19 | kVarSwizzle since pass 5 (round 2: +10.0 / +11.5 / +13.4 / +11.2 % over 19).
  if (kHeadDim == 256) return kVarPipelinedS | kVarSplitMask | kVarSplitPV | kVarSwizzle;
  // d128: 44 since pass 5 (round 1: +1.9 / +2.8 / +1.9 / +2.0 % over 4, see launch_fwd).
  if (kHeadDim == 128) return kVarEarlyBarrier | kVarKFast | kVarSUnroll4;
  return kHeadDim == 64 ? kVarEarlyBarrier : 0;
}

// FLASH_SM80_FWD_LAZY=0 turns the lean kernels' lazy softmax rescaling off (read on every call).
inline bool fwd_lazy_rescale() {
  const char* s = std::getenv("FLASH_SM80_FWD_LAZY");
  return s == nullptr || *s == '\0' || std::atoi(s) != 0;
}

// Runs the lean kernel instantiated for flag set `v`, from the compiled list; the first entry is the
// fallback when `v` is not in the list.
template <typename Element, int kHeadDim, int kFirst, int... kRest>
void launch_lean_variant(int v, const FwdKernelArgs& args, cudaStream_t stream) {
  if constexpr (sizeof...(kRest) == 0) {
    launch_fwd_kernel<Element, kHeadDim, false, kFirst>(args, stream);
  } else {
    if (v == kFirst) return launch_fwd_kernel<Element, kHeadDim, false, kFirst>(args, stream);
    launch_lean_variant<Element, kHeadDim, kRest...>(v, args, stream);
  }
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
    return;
  }
  int v = fwd_tile_variant<kHeadDim>();
  constexpr int S = kVarSplitMask, E = kVarEarlyBarrier, P = kVarSplitPV, W = kVarSwizzle;
  if constexpr (kHeadDim == 256) {
    // kVarSplitPV needs ~110 KB of shared memory (sm86 / sm89: 99 KB): 1 | E runs there instead.
    int optin = 0;
    if ((v & P) != 0 &&
        (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, params.device_index) != cudaSuccess ||
         optin < SplitPvSmem<FwdTileConfig<kHeadDim, true>>::kBytes))
      v = 1 | E;
    // Pass 5 round 2 (bf16, 2K / 8K / causal 2K / 8K): 83 = 19 | W vs 19 +10.0 / +11.5 / +13.4 / +11.2 %
    // (x1.01 / 1.05 / 1.00 / 1.06 of torch FA2); ncu: L2 requests 355 M -> 132 M, 4.31 -> 4.01 ms.
    launch_lean_variant<Element, kHeadDim, 1 | S | P | W, 1 | S | P, 1 | E>(v, args, stream);
  } else if constexpr (kHeadDim == 128) {
    // (kVarSplitMask spilled 8-84 B here: the per-block mask test was a real branch already.)
    // Pass 5 round 1 (bf16, 2K / 8K / causal 2K / 8K vs 4): 12 = 4 | kVarKFast +0.7 / +0.1 / +0.1 / +0.8 %,
    // 36 = 4 | kVarSUnroll4 +0.5 / -1.8 / +0.9 / +1.1 %, 44 = both +1.9 / +2.8 / +1.9 / +2.0 % (only 44 kept).
    // (1 | E, pipelined S, spilled 416 B.) Swizzled tiles here (round 2, vs 44): 76 = 4 | kVarKFast | W
    // +0.0 / -1.2 / -0.2 / -0.1 %, 68 = 4 | W -0.7 / +3.4 / -1.4 / -1.3 %: not kept (not compiled).
    launch_lean_variant<Element, kHeadDim, E | kVarKFast | kVarSUnroll4, E, 0>(v, args, stream);
  } else if constexpr (kHeadDim == 64) {
    // (68 = 4 | kVarSwizzle measured 19-22 % SLOWER in round 2, cause not found: not compiled.)
    launch_lean_variant<Element, kHeadDim, E, 0>(v, args, stream);
  } else if constexpr (kHeadDim >= 160) {
    launch_lean_variant<Element, kHeadDim, 0, 1>(v, args, stream);
  } else {
    launch_fwd_kernel<Element, kHeadDim, false>(args, stream);
  }
}

}  // namespace flash::sm80
