// The Ampere-class (mma.sync / ldmatrix / cp.async) forward kernel: FlashAttention-2's algorithm.
// One CTA = one block of kBlockM query rows of one (batch, head); 4 warps, each owning
// kBlockM / 4 rows. Key blocks are visited from the last visible one down to the first (the
// boundary blocks needing an element mask come first). Pipeline per key block n:
//   wait K(n) | issue V(n) | S = Q K^T | modifiers, mask | online softmax (rescale O)
//   wait V(n) | issue K(n-1) | dropout on P | O += P V
// so V(n) streams in during Q K^T and K(n-1) during P V. Every feature is a run-time flag.
// The lean kernels' defaults (fwd_launch.cuh) change the order or the whole loop: kVarEarlyBarrier
// (d64 / d128) waits for V(n) and issues K(n-1) before the softmax; d256 runs fwd_splitpv.cuh.
#pragma once

#include "cuda/sm80/fwd_block.cuh"
#include "cuda/sm80/fwd_probs.cuh"
#include "cuda/sm80/fwd_splitpv.cuh"

namespace flash::sm80 {

// O / (l (1 - p)) -> dtype, staged through sQ for 16-byte coalesced stores; then lse.
template <typename Blk, int MT, int DT>
__device__ __forceinline__ void fwd_epilogue(const Blk& blk, const FwdKernelArgs& args, float (&acc_o)[MT][DT][4],
                                             const OnlineSoftmax<MT>& sm) {
  using Element = typename Blk::ElementT;
  using Cfg = typename Blk::Cfg;
  using QTile = typename Cfg::QTile;
  const FwdParams& p = args.p;

  __syncthreads();  // every warp is done with sQ
  const FragCoord fc(blk.lane());
  using T = MmaTraits<Element>;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const float l = sm.row_sum[mt][hh];
      const float inv = l > 0.f ? args.rp_dropout / l : 0.f;
      const int r = blk.warp() * Cfg::kWarpRows + mt * 16 + fc.g + 8 * hh;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        *reinterpret_cast<uint32_t*>(blk.sQ() + QTile::offset(r, dt * 8 + 2 * fc.t)) =
            T::pack(acc_o[mt][dt][2 * hh] * inv, acc_o[mt][dt][2 * hh + 1] * inv);
      }
    }
  __syncthreads();
  const int64_t out_off = p.cu_seqlens_q != nullptr
                              ? static_cast<int64_t>(blk.q_start) * p.out_row_stride
                              : static_cast<int64_t>(blk.b()) * p.out_batch_stride;
  Element* out = static_cast<Element*>(p.out) + out_off + static_cast<int64_t>(blk.h()) * p.out_head_stride;
  constexpr int kTotal = QTile::kRows * QTile::kChunks;
#pragma unroll
  for (int it = 0; it < (kTotal + Cfg::kThreads - 1) / Cfg::kThreads; ++it) {
    const int idx = it * Cfg::kThreads + blk.tid();
    if (kTotal % Cfg::kThreads == 0 || idx < kTotal) {
      const int r = idx / QTile::kChunks, c = idx % QTile::kChunks;
      const int row = blk.m0() + r;
      if (row < blk.sq && c < blk.dim_chunks()) {
        *reinterpret_cast<uint4*>(out + static_cast<int64_t>(row) * p.out_row_stride + c * 8) =
            *reinterpret_cast<const uint4*>(blk.sQ() + QTile::offset(r, c * 8));
      }
    }
  }

  // ---- lse (natural log), one writer per row ----
  const int64_t lse_off = p.cu_seqlens_q != nullptr
                              ? static_cast<int64_t>(blk.h()) * p.lse_head_stride + blk.q_start
                              : static_cast<int64_t>(blk.b()) * p.lse_batch_stride +
                                    static_cast<int64_t>(blk.h()) * p.lse_head_stride;
  if (fc.t == 0) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int row = fc.row(blk.warp_row0(), mt, 2 * hh);
        if (row < blk.sq) p.softmax_lse[lse_off + row] = sm.lse(mt, hh, blk.x_scale_log2());
      }
  }
}

// One key block n of the main loop (pipeline in the file header). kMaskMode: see FwdBlock::scores.
// kVarEarlyBarrier (lean): the second wait + barrier and the issue of K(n-1) come right after S = Q K^T
// (FA2's order), so K(n-1) streams during the softmax too; otherwise the softmax runs first and V(n)
// gets the softmax's time to land.
template <int kMaskMode, typename Blk, int MT, int DT>
__device__ __forceinline__ void fwd_key_block(const Blk& blk, const FwdKernelArgs& args, int n, int n_min,
                                              float (&acc_o)[MT][DT][4], OnlineSoftmax<MT>& sm) {
  using Cfg = typename Blk::Cfg;
  constexpr int NT = Blk::NT;
  constexpr int kBlockN = Cfg::kBlockN;
  constexpr bool kFull = Blk::kFull;
  constexpr int kHeadDim = Cfg::kHeadDim;
  constexpr bool kLazyRescale = !kFull && kHeadDim >= 128;
  constexpr bool kEarlyBarrier = !kFull && (Blk::kVariantFlags & kVarEarlyBarrier) != 0;
  cp_async_wait_all();
  __syncthreads();  // K(n) landed; every warp finished P V of the previous block (sV free)
  blk.load_v_async(n);
  cp_async_commit();
  float s[MT][NT][4];
  blk.template scores<kMaskMode>(s, n, /*force_mask=*/false);
  auto wait_v_issue_k = [&] {
    cp_async_wait_all();
    __syncthreads();  // V(n) landed; every warp finished Q K^T and the mask (sK, key_ok free)
    if (n > n_min) {
      blk.load_k_async(n - 1);
      cp_async_commit();
    }
  };
  if (kEarlyBarrier) wait_v_issue_k();
  // Lazy rescaling where the O rescale is large (d >= 128); at d = 64 (128 x 128 tile, 128 score
  // registers) its extra code spilled ~100 B and the rescale is only 64 multiplies per 128 keys.
  if (kLazyRescale && args.lazy_rescale)
    sm.update_lazy(s, acc_o, blk.x_scale_log2());
  else
    sm.update(s, acc_o, blk.x_scale_log2());
  if (!kEarlyBarrier) wait_v_issue_k();
  if constexpr (kFull) {  // (constexpr: the lean tile may exceed the dropout mask's 64 bits)
    if (blk.has_dropout()) apply_dropout<false>(s, blk.dropout(), blk.warp_row0(), n * kBlockN, blk.lane());
  }
  gemm_rs_v<MT, DT, NT, typename Cfg::KVTile>(acc_o, s, blk.sV(), blk.lane());
}

template <typename Element, int kHeadDim, bool kFull, int kVariant = 0>
__global__ void __launch_bounds__(FwdTileConfig<kHeadDim, !kFull>::kThreads, 1)
    fwd_kernel(const __grid_constant__ FwdKernelArgs args) {
  using Blk = FwdBlock<Element, kHeadDim, kFull, kVariant>;
  using Cfg = typename Blk::Cfg;
  constexpr int MT = Blk::MT, DT = Blk::DT;
  constexpr int kBlockN = Cfg::kBlockN;
  extern __shared__ __align__(16) unsigned char smem[];
  const FwdParams& p = args.p;

  Blk blk(args, smem);
  if (blk.m0() >= blk.sq && (!kFull || p.attn_probs == nullptr)) return;

  // Range of key blocks any row of this query block can see.
  int n_min = 0, n_max = 0;
  if (blk.m0() < blk.sq) {
    const MaskRule rule = blk.rule();
    const int first = rule.first_key(blk.m0()), end = rule.end_key(blk.last_row());
    if (end > first) {
      n_min = first / kBlockN;
      n_max = (end + kBlockN - 1) / kBlockN;
    }
  }

  blk.load_q_async();
  if (n_max > n_min) blk.load_k_async(n_max - 1);
  cp_async_commit();

  if constexpr (!kFull && (kVariant & kVarSplitPV) != 0) {
    fwd_main_splitpv(blk, args, n_min, n_max);
    return;
  }

  float acc_o[MT][DT][4];
  zero_acc(acc_o);
  OnlineSoftmax<MT> sm;
  sm.init();

  // (A split loop without the mask code on interior blocks, kVarSplitMask alone, issued 19 % fewer
  // instructions at d = 256 but ran 1-3 % slower; it lives on only inside kVarSplitPV, fwd_splitpv.cuh.)
  for (int n = n_max - 1; n >= n_min; --n) fwd_key_block<Blk::kMaskAuto>(blk, args, n, n_min, acc_o, sm);
  cp_async_wait_all();  // the Q load when no key block was visited
  sm.finalize();

  if (blk.m0() < blk.sq) fwd_epilogue(blk, args, acc_o, sm);
  if constexpr (kFull) {
    if (p.attn_probs != nullptr) {
      // After the epilogue, so the O accumulator is dead during this register-hungry pass; sQ
      // was reused to stage O, so Q is loaded again.
      __syncthreads();
      blk.load_q_async();
      cp_async_commit();
      fwd_write_probs(blk, p, sm);
    }
  }
}

}  // namespace flash::sm80
