// Forward main loop and epilogue of the lean kernel's kVarSplitPV variant (d = 256, 64 x 64 tile,
// 4 warps): S = Q K^T and the softmax stay per warp (warp w: query rows 16 w .. 16 w + 15, every key
// of the block), but O += P V is split by head dim: warp w accumulates ALL 64 rows for dims
// 64 w .. 64 w + 63, with P taken from shared memory.
//
// Why: with 16 rows per warp every warp reads the whole V tile from shared memory (32 KB per warp and
// key block at d = 256); shared-memory traffic per CTA and key block is Q 32 + K 128 + V 128 KB of
// ldmatrix plus 64 KB of cp.async, ~352 KB for 4.2 MFLOP, which at two CTAs per SM is ~96 % of the
// SM's 128 B/clk when running at FA2's speed. Split by dims, each warp reads a quarter of V plus P
// (8 + 8 KB): ~296 KB per key block (-16 %), for 8 KB of P stores and two small smem vectors.
//
// Cross-warp state: the softmax of a row is owned by one warp, but its O row is spread over all four.
// A row's O rescale factor goes through sCorr (64 floats) with a per-warp flag sFlag[w] ("rows of warp
// w were rescaled in this block"; the lazy rescale keeps most blocks flag-free); 1 / l for the
// epilogue goes through sCorr as well.
// Per key block n:
//   wait K(n) | barrier | issue V(n) | S = Q K^T, mask | softmax (corr -> sCorr, flag) | P -> sP |
//   wait V(n) | barrier | issue K(n-1) | rescale O rows whose warp flagged | O += P V (dims of warp)
// Hazards: sP / sCorr / sFlag of block n are read after the second barrier of block n and rewritten
// after the first barrier of the next block.
#pragma once

#include "cuda/sm80/fwd_block.cuh"

namespace flash::sm80 {

template <typename Cfg>
struct SplitPvSmem {
  using PTile = SmemTile<Cfg::kBlockM, Cfg::kBlockN>;
  static constexpr int kOffP = Cfg::kSmemBytes;
  static constexpr int kOffCorr = kOffP + PTile::kElems * 2;
  static constexpr int kOffFlag = kOffCorr + Cfg::kBlockM * 4;
  static constexpr int kBytes = kOffFlag + 16;
};

template <int kMaskMode, typename Blk, int DT4>
__device__ __forceinline__ void fwd_key_block_splitpv(const Blk& blk, const FwdKernelArgs& args, int n, int n_min,
                                                      float (&acc_o)[4][DT4][4], OnlineSoftmax<1>& sm) {
  using Cfg = typename Blk::Cfg;
  using Element = typename Blk::ElementT;
  using Sm = SplitPvSmem<Cfg>;
  using PTile = typename Sm::PTile;
  using T = MmaTraits<Element>;
  constexpr int NT = Blk::NT;
  static_assert(Blk::MT == 1 && Cfg::kWarps == 4 && Cfg::kBlockM == 64, "64-row tile, a warp per 16 rows");
  Element* sP = reinterpret_cast<Element*>(blk.smem + Sm::kOffP);
  float* sCorr = reinterpret_cast<float*>(blk.smem + Sm::kOffCorr);
  uint8_t* sFlag = blk.smem + Sm::kOffFlag;
  const int lane = blk.lane(), warp = blk.warp();
  const int g = lane >> 2, t = lane & 3;

  cp_async_wait_all();
  __syncthreads();  // K(n) landed; every warp finished P V of the previous block (sV, sP, sCorr free)
  blk.load_v_async(n);
  cp_async_commit();
  float s[1][NT][4];
  blk.template scores<kMaskMode>(s, n, /*force_mask=*/false);
  float corr[1][2];
  const bool rescaled = sm.update_lazy_rows(s, blk.x_scale_log2(), corr, args.lazy_rescale != 0);
  if (rescaled && t == 0) {
    sCorr[warp * 16 + g] = corr[0][0];
    sCorr[warp * 16 + g + 8] = corr[0][1];
  }
  if (lane == 0) sFlag[warp] = rescaled ? 1 : 0;
  // P (16-bit pairs, exactly acc_to_a_frag's packing) -> rows of this warp in sP.
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int r = warp * 16 + g, c = nt * 8 + 2 * t;
    *reinterpret_cast<uint32_t*>(sP + PTile::offset(r, c)) = T::pack(s[0][nt][0], s[0][nt][1]);
    *reinterpret_cast<uint32_t*>(sP + PTile::offset(r + 8, c)) = T::pack(s[0][nt][2], s[0][nt][3]);
  }
  cp_async_wait_all();
  __syncthreads();  // V(n) landed; sP / sCorr / sFlag complete; sK free
  if (n > n_min) {
    blk.load_k_async(n - 1);
    cp_async_commit();
  }
  // The flags are the same in every lane; testing them through a warp vote makes ptxas see a uniform
  // branch (a plain test of the loaded value was if-converted: 128 predicated-off FMULs per block).
  const uint32_t flags = *reinterpret_cast<const uint32_t*>(sFlag);
  if (__any_sync(0xffffffffu, flags != 0u)) {
#pragma unroll
    for (int mt = 0; mt < 4; ++mt) {
      if (__any_sync(0xffffffffu, ((flags >> (8 * mt)) & 0xffu) != 0u)) {
        const float c0 = sCorr[mt * 16 + g], c1 = sCorr[mt * 16 + g + 8];
#pragma unroll
        for (int dt = 0; dt < DT4; ++dt) {
          acc_o[mt][dt][0] *= c0;
          acc_o[mt][dt][1] *= c0;
          acc_o[mt][dt][2] *= c1;
          acc_o[mt][dt][3] *= c1;
        }
      }
    }
  }
  gemm_ss_pv<4, DT4, NT, PTile, typename Cfg::KVTile>(acc_o, sP, blk.sV(), warp * (DT4 * 8), lane);
}

// Main loop and epilogue of the variant. Returns after the
// epilogue; the caller has loaded Q and K(n_max - 1) and committed them.
template <typename Blk>
__device__ __forceinline__ void fwd_main_splitpv(const Blk& blk, const FwdKernelArgs& args, int n_min, int n_max) {
  using Cfg = typename Blk::Cfg;
  using Element = typename Blk::ElementT;
  using Sm = SplitPvSmem<Cfg>;
  using QTile = typename Cfg::QTile;
  using T = MmaTraits<Element>;
  constexpr int kBlockN = Cfg::kBlockN;
  constexpr int DT4 = Cfg::kHeadDim / 8 / 4;  // n-tiles of O per warp (a quarter of the dims)
  const FwdParams& p = args.p;
  const int lane = blk.lane(), warp = blk.warp();
  const int g = lane >> 2, t = lane & 3;

  float acc_o[4][DT4][4];
  zero_acc(acc_o);
  OnlineSoftmax<1> sm;
  sm.init();

  // Split mask loop (see fwd_kernel.cuh's former kVarSplitMask loop): the key blocks every row fully
  // sees, [nf_lo, nf_hi], run a body without mask code. (With one body and the per-block mask test,
  // variant 17, this kernel measured only -2..+2 % against the default of the time; with the split
  // loop +2..+10 %.)
  static_assert((Blk::kVariantFlags & kVarSplitMask) != 0, "kVarSplitPV is built with the split mask loop");
  const MaskRule rule = blk.rule();
  const int nf_lo = (rule.first_key(blk.last_row()) + kBlockN - 1) / kBlockN;
  const int end_lo = rule.end_key(blk.m0());
  const int nf_hi = (end_lo < blk.sk ? end_lo : blk.sk) / kBlockN - 1;
  for (int n = n_max - 1; n >= n_min;) {
    if (n <= nf_hi && n >= nf_lo) {
      for (; n >= nf_lo; --n) fwd_key_block_splitpv<Blk::kMaskNever>(blk, args, n, n_min, acc_o, sm);
    } else {
      fwd_key_block_splitpv<Blk::kMaskAlways>(blk, args, n, n_min, acc_o, sm);
      --n;
    }
  }
  cp_async_wait_all();  // the Q load when no key block was visited
  sm.finalize();

  // ---- epilogue: 1 / l of every row through sCorr, O quarter -> sQ (staging), 16-byte stores ----
  float* sCorr = reinterpret_cast<float*>(blk.smem + Sm::kOffCorr);
  __syncthreads();  // every warp is done with sQ and with the last block's sCorr
  if (t == 0) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const float l = sm.row_sum[0][hh];
      sCorr[warp * 16 + g + 8 * hh] = l > 0.f ? args.rp_dropout / l : 0.f;
    }
  }
  __syncthreads();
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int r = mt * 16 + g + 8 * hh;
      const float inv = sCorr[r];
#pragma unroll
      for (int dt = 0; dt < DT4; ++dt) {
        *reinterpret_cast<uint32_t*>(blk.sQ() + QTile::offset(r, warp * DT4 * 8 + dt * 8 + 2 * t)) =
            T::pack(acc_o[mt][dt][2 * hh] * inv, acc_o[mt][dt][2 * hh + 1] * inv);
      }
    }
  __syncthreads();
  const int64_t out_off = p.cu_seqlens_q != nullptr ? static_cast<int64_t>(blk.q_start) * p.out_row_stride
                                                    : static_cast<int64_t>(blk.b()) * p.out_batch_stride;
  Element* out = static_cast<Element*>(p.out) + out_off + static_cast<int64_t>(blk.h()) * p.out_head_stride;
  constexpr int kTotal = QTile::kRows * QTile::kChunks;
  static_assert(kTotal % Cfg::kThreads == 0, "whole iterations");
#pragma unroll
  for (int it = 0; it < kTotal / Cfg::kThreads; ++it) {
    const int idx = it * Cfg::kThreads + blk.tid();
    const int r = idx / QTile::kChunks, c = idx % QTile::kChunks;
    const int row = blk.m0() + r;
    if (row < blk.sq && c < blk.dim_chunks()) {
      *reinterpret_cast<uint4*>(out + static_cast<int64_t>(row) * p.out_row_stride + c * 8) =
          *reinterpret_cast<const uint4*>(blk.sQ() + QTile::offset(r, c * 8));
    }
  }
  // lse (natural log), one writer per row: the row's softmax owner.
  const int64_t lse_off = p.cu_seqlens_q != nullptr
                              ? static_cast<int64_t>(blk.h()) * p.lse_head_stride + blk.q_start
                              : static_cast<int64_t>(blk.b()) * p.lse_batch_stride +
                                    static_cast<int64_t>(blk.h()) * p.lse_head_stride;
  if (t == 0) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int row = blk.warp_row0() + g + 8 * hh;
      if (row < blk.sq) p.softmax_lse[lse_off + row] = sm.lse(0, hh, blk.x_scale_log2());
    }
  }
}

}  // namespace flash::sm80
