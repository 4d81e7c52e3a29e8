// Per-CTA context of the Ampere-class forward kernel: where this (query block, head, batch) lives
// in memory, its visibility rule, and the score pipeline (Q K^T -> modifiers -> mask) shared by the
// main loop and the S_dmask (attn_probs) pass.
//
// Register economy matters here (d = 128 keeps 192 accumulator floats live per thread): the
// context stores only values that come from global memory (sequence offsets/lengths); everything
// derivable from the kernel parameters (__grid_constant__, read from the constant bank) or from
// blockIdx/threadIdx is recomputed where it is used.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/mask.h"
#include "common/varlen.h"
#include "cuda/sm80/common/sm80_frag_dropout.cuh"
#include "cuda/sm80/common/sm80_frag_mask.cuh"
#include "cuda/sm80/common/sm80_frag_softmax.cuh"
#include "cuda/sm80/common/sm80_mma.cuh"
#include "cuda/sm80/common/sm80_smem_tile.cuh"
#include "cuda/sm80/fwd_kernel_traits.cuh"

namespace flash::sm80 {

constexpr int kVarPipelinedS = 1, kVarSplitMask = 2, kVarEarlyBarrier = 4, kVarKFast = 8, kVarSplitPV = 16,
              kVarSUnroll4 = 32, kVarSwizzle = 64;

// kFull: false = the lean kernel (no dropout, softcap, ALiBi, paged KV or S_dmask: the launcher
// only picks it when all are off), whose register allocation is not burdened by those paths.
// kVariant: bit flags of the lean kernel (the launcher's choice is in fwd_launch.cuh):
//   kVarPipelinedS: S = Q K^T with the register-double-buffered k loop (gemm_abt_smem kPipelined);
//     d >= 160 only (at d = 128 the double buffer spills);
//   kVarEarlyBarrier: main-loop order, see fwd_kernel.cuh (fwd_key_block);
//   kVarKFast: d = 128 issues K(n-1) through the whole-tile fast path of the loader too (experiment,
//     pass 5: it spilled before the early-barrier order moved the K issue ahead of the softmax);
//   kVarSUnroll4: the (non-pipelined) S = Q K^T k loop unrolled by 4 instead of 2 (experiment, pass 5);
//   kVarSwizzle: Q / K / V in unpadded XOR-swizzled tiles (SmemTileSwz; d % 64 == 0; pass 5): each
//     cp.async warp instruction then stays 4 L2 requests (the padded rows split it into ~10);
//   kVarSplitPV (with kVarSplitMask): O += P V split by head dim across the warps, P through shared
//     memory, and a main loop split into masked / mask-free key blocks (fwd_splitpv.cuh; d = 256).
template <typename Element, int kHeadDim, bool kFull_, int kVariant = 0>
struct FwdBlock {
  static constexpr bool kFull = kFull_;
  static constexpr int kVariantFlags = kVariant;
  static constexpr bool kSwz = !kFull && (kVariant & kVarSwizzle) != 0;
  using Cfg = FwdTileConfig<kHeadDim, !kFull, kSwz>;
  using ElementT = Element;
  using QTile = typename Cfg::QTile;
  using KVTile = typename Cfg::KVTile;
  static constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  static constexpr int MT = Cfg::kMT, NT = Cfg::kNT, DT = Cfg::kDT;

  const FwdKernelArgs& args;
  int sq, sk;      // this sequence's query / key counts
  int q_start;     // varlen: first row of the sequence in the packed q/out/lse
  int k_start;     // varlen (not paged): first row of the sequence in the packed k/v
  unsigned char* smem;

  __device__ __forceinline__ FwdBlock(const FwdKernelArgs& a, unsigned char* s) : args(a), smem(s) {
    const FwdParams& p = a.p;
    const int b = blockIdx.z;
    q_start = 0;
    sq = p.seqlen_q;
    // Device-held lengths are clamped into the tensors (common/varlen.h): never out of bounds.
    if (p.cu_seqlens_q != nullptr) {
      const PackedRange r = packed_range(p.cu_seqlens_q, b, p.total_q, p.seqlen_q);
      q_start = static_cast<int>(r.start), sq = r.len;
    }
    k_start = 0;
    sk = p.seqlen_k;
    if (p.cu_seqlens_k != nullptr) {
      const bool paged = p.block_table != nullptr;  // paged: only the lengths count
      const PackedRange r = packed_range(p.cu_seqlens_k, b, paged ? INT64_MAX : p.total_k, p.seqlen_k);
      sk = r.len;
      if (!paged) k_start = static_cast<int>(r.start);
    }
    if (p.seqused_k != nullptr) sk = max(0, min(p.seqused_k[b], sk));
  }

  // ---- cheap recomputed quantities ----
  __device__ __forceinline__ int tid() const { return threadIdx.x; }
  __device__ __forceinline__ int lane() const { return threadIdx.x & 31; }
  __device__ __forceinline__ int warp() const { return threadIdx.x >> 5; }
  __device__ __forceinline__ int b() const { return blockIdx.z; }
  __device__ __forceinline__ int h() const { return blockIdx.y; }
  // First query row. Query blocks run in reverse launch order: with causal masks the last blocks
  // see the most keys, so they start first and the light ones fill the tail of the grid.
  __device__ __forceinline__ int m0() const { return static_cast<int>(gridDim.x - 1 - blockIdx.x) * kBlockM; }
  __device__ __forceinline__ int warp_row0() const { return m0() + warp() * Cfg::kWarpRows; }
  __device__ __forceinline__ int last_row() const { return (m0() + kBlockM < sq ? m0() + kBlockM : sq) - 1; }
  __device__ __forceinline__ int dim_chunks() const { return args.p.head_dim / 8; }
  __device__ __forceinline__ bool paged() const { return kFull && args.p.block_table != nullptr; }
  __device__ __forceinline__ MaskRule rule() const {
    return MaskRule{sq, sk, args.p.window_left, args.p.window_right};
  }
  // Softcap or ALiBi: scores are transformed to natural-log units before the softmax.
  __device__ __forceinline__ bool has_mods() const {
    return kFull && (args.p.softcap > 0.f || args.p.alibi_slopes != nullptr);
  }
  __device__ __forceinline__ float x_scale_log2() const {
    return has_mods() ? 1.4426950408889634f : args.scale_log2;
  }
  __device__ __forceinline__ bool has_dropout() const { return kFull && args.p.dropout_p > 0.f; }
  // rng_state is a device pointer read at run time, so CUDA-graph replays draw fresh masks.
  __device__ __forceinline__ DropoutState dropout() const {
    const FwdParams& p = args.p;
    return DropoutState{p.rng_state[0], p.rng_state[1], static_cast<uint32_t>(b() * p.nheads + h()),
                        args.keep_threshold};
  }

  __device__ __forceinline__ Element* sQ() const { return reinterpret_cast<Element*>(smem); }
  __device__ __forceinline__ Element* sK() const { return reinterpret_cast<Element*>(smem + Cfg::kSmemQ); }
  __device__ __forceinline__ Element* sV() const {
    return reinterpret_cast<Element*>(smem + Cfg::kSmemQ + Cfg::kSmemKV);
  }
  // Per-key "page exists" flags live in the (never read by ldmatrix) padding column of sK's rows,
  // so they cost no extra shared memory: flag of key row r = key_ok()[r * kKeyOkStride].
  static constexpr int kKeyOkStride = KVTile::kRowStride * 2;
  __device__ __forceinline__ uint8_t* key_ok() const {
    return reinterpret_cast<uint8_t*>(sK() + KVTile::offset(0, kHeadDim));
  }

  // ---- global tiles ----
  __device__ __forceinline__ KvRows<Element> kv_rows(const void* base, int64_t batch_stride, int64_t row_stride,
                                                     int64_t head_stride, int n) const {
    const FwdParams& p = args.p;
    int64_t off = static_cast<int64_t>(h() / args.head_ratio) * head_stride;
    const int32_t* table = nullptr;
    if (paged()) {
      table = p.block_table + static_cast<int64_t>(b()) * p.block_table_batch_stride;
    } else {
      off += p.cu_seqlens_k != nullptr ? static_cast<int64_t>(k_start) * row_stride
                                       : static_cast<int64_t>(b()) * batch_stride;
    }
    return KvRows<Element>{static_cast<const Element*>(base) + off, row_stride, batch_stride, table,
                           p.page_size, p.num_pages, n * kBlockN, sk};
  }

  __device__ __forceinline__ void load_q_async() const {
    const FwdParams& p = args.p;
    const int64_t off = p.cu_seqlens_q != nullptr ? static_cast<int64_t>(q_start) * p.q_row_stride
                                                  : static_cast<int64_t>(b()) * p.q_batch_stride;
    const Element* base = static_cast<const Element*>(p.q) + off + static_cast<int64_t>(h()) * p.q_head_stride;
    load_tile_dense_async<Cfg::kThreads, QTile>(sQ(), base + static_cast<int64_t>(m0()) * p.q_row_stride,
                                                p.q_row_stride, sq - m0(), dim_chunks(), tid());
  }
  // Dense K or V rows of key block n (not paged): row r is key n * kBlockN + r of the sequence.
  // kFastPath: see load_tile_dense_async.
  template <bool kFastPath = true>
  __device__ __forceinline__ void load_kv_dense_async(Element* dst, const void* base, int64_t batch_stride,
                                                      int64_t row_stride, int64_t head_stride, int n) const {
    const FwdParams& p = args.p;
    int64_t off = static_cast<int64_t>(h() / args.head_ratio) * head_stride;
    off += p.cu_seqlens_k != nullptr ? static_cast<int64_t>(k_start) * row_stride
                                     : static_cast<int64_t>(b()) * batch_stride;
    const int first = n * kBlockN;
    load_tile_dense_async<Cfg::kThreads, KVTile, kFastPath>(
        dst, static_cast<const Element*>(base) + off + static_cast<int64_t>(first) * row_stride, row_stride,
        sk - first, dim_chunks(), tid());
  }
  // K of key block n, plus the per-key page flags (plain stores; visible after the caller's
  // wait + __syncthreads, like the zero-filled chunks).
  __device__ __forceinline__ void load_k_async(int n) const {
    const FwdParams& p = args.p;
    if (!paged()) {
      // K(n-1) is issued while P (packed) is live: at d = 128 the second code path of the whole-tile
      // fast path made ptxas spill 6 registers per key block, so d = 128 keeps one path there.
      load_kv_dense_async<kHeadDim != 128 || (kVariant & kVarKFast) != 0>(sK(), p.k, p.k_batch_stride, p.k_row_stride, p.k_head_stride, n);
      return;
    }
    const KvRows<Element> rows = kv_rows(p.k, p.k_batch_stride, p.k_row_stride, p.k_head_stride, n);
    load_tile_async<Cfg::kThreads, KVTile>(sK(), rows, dim_chunks(), tid());
    for (int r = tid(); r < kBlockN; r += Cfg::kThreads) key_ok()[r * kKeyOkStride] = rows.row(r) != nullptr ? 1 : 0;
  }
  __device__ __forceinline__ void load_v_async(int n) const {
    const FwdParams& p = args.p;
    if (!paged()) {
      load_kv_dense_async(sV(), p.v, p.v_batch_stride, p.v_row_stride, p.v_head_stride, n);
      return;
    }
    const KvRows<Element> rows = kv_rows(p.v, p.v_batch_stride, p.v_row_stride, p.v_head_stride, n);
    load_tile_async<Cfg::kThreads, KVTile>(sV(), rows, dim_chunks(), tid());
  }

  // S = Q K^T for key block n (K in sK), modifiers applied, invisible elements -inf.
  // force_mask: apply the element mask even on interior blocks (the probs pass).
  // kMaskMode: kMaskAuto decides per block (run-time test); kMaskNever / kMaskAlways are for callers
  // that already know (the split main loop: no mask code at all in the interior loop's body).
  static constexpr int kMaskAuto = 0, kMaskNever = 1, kMaskAlways = 2;
  template <int kMaskMode = kMaskAuto>
  __device__ __forceinline__ void scores(float (&s)[MT][NT][4], int n, bool force_mask) const {
    const FwdParams& p = args.p;
    zero_acc(s);
    gemm_abt_smem<MT, NT, kHeadDim, QTile, KVTile, ((kVariant & kVarPipelinedS) != 0),
                  ((kVariant & kVarSUnroll4) != 0 ? 4 : 0)>(s, sQ(), warp() * Cfg::kWarpRows, sK(), 0, lane());
    const int n0 = n * kBlockN;
    const MaskRule r = rule();
    if (has_mods()) {
      const bool alibi = p.alibi_slopes != nullptr;
      const float slope =
          alibi ? p.alibi_slopes[static_cast<int64_t>(b()) * p.alibi_batch_stride + h()] : 0.f;
      apply_score_mods(s, p.softmax_scale, p.softcap, alibi, slope, r, warp_row0(), n0, lane());
    }
    if constexpr (kMaskMode == kMaskNever) return;
    if (kMaskMode == kMaskAlways || force_mask || paged() || !block_fully_visible(r, m0(), last_row(), n0, kBlockN)) {
      apply_visibility(s, r, warp_row0(), n0, paged() ? key_ok() : nullptr, kKeyOkStride, lane());
    }
  }
};

}  // namespace flash::sm80
