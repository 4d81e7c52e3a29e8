// Compile-time configuration of the wide-head-dim sm90 backward kernel (d = 256 and d = 192): tiles,
// shared-memory layouts and the wgmma tilings. Design and register / smem budget: README_bwd256.md.
//
// A CTA owns kBlockN = 64 keys and walks the query blocks (kBlockM = 64 rows) that see them.
// dK + dV of 64 keys x 256 in fp32 would be 256 registers per thread of one warpgroup, so the two
// consumer warpgroups split the HEAD DIM for the dK / dV / dQ GEMMs and the QUERIES for S / dP:
//   S^T  = K Q^T,  dP^T = V dO^T       TiledMmaSdP  M = 64 keys, N = 32 queries per warpgroup
//   P^T, dS^T -> shared memory (bf16/fp16), both warpgroups' halves; named barrier
//   dV  += P^T dO,  dK += dS^T Q       TiledMmadKV  M = 64 keys, N = d/2 per warpgroup, K = 64 q
//   dQ   = dS K                        TiledMmadQ   M = 64 queries, N = d/2 per warpgroup, K = 64 k
// All five GEMMs are SS wgmma (every operand in shared memory).
//
// The member names match BwdTraits (bwd_traits.h) where the shared pieces read them: the producer
// (bwd_producer.h), the dQ writer (bwd_dq_writer.h), BwdKernelParams / BwdTmaTypes.
#pragma once

#ifndef CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#define CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#endif

#include <cute/tensor.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/atom/copy_traits_sm90_tma.hpp>
#include <cutlass/numeric_types.h>

#include <type_traits>

#include "bwd_workspace.h"

namespace flash::sm90 {

using namespace cute;

template <typename Element_, int kHeadDim_>
struct Bwd256Traits {
  using Element = Element_;  // cutlass::half_t or cutlass::bfloat16_t
  static constexpr int kHeadDim = kHeadDim_;  // 256 or 192
  static constexpr int kBlockM = 64;          // queries per step
  static constexpr int kBlockN = 64;          // keys per CTA
  // d256: one Q / dO stage, two would not fit next to the 64 KB fp32 dQ tile (README_bwd256.md).
  // d192 (48 KB dQ tile, 24 KB tiles): two of each fit.
  static constexpr int kStages = kHeadDim <= 192 ? 2 : 1;  // Q / dO / lse / D ring

  static constexpr int kNumConsumerWarpgroups = 2;
  static constexpr int kNumConsumerThreads = 128 * kNumConsumerWarpgroups;
  static constexpr int kNumThreads = 128 + kNumConsumerThreads;  // + producer warpgroup
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;

  // Each warpgroup's head-dim half (an N range of the MN-major B operands) must start on a swizzle
  // atom: 128-byte atoms (64 elements) for d256, 64-byte atoms (32 elements) for d192.
  static constexpr bool kSw128 = (kHeadDim / 2) % 64 == 0;
  static_assert((kHeadDim / 2) % 32 == 0, "head-dim halves of whole 64-byte swizzle atoms");
  static_assert(kBlockM == bwd_block_m(kHeadDim), "workspace plan (bwd_workspace.h) disagrees");

  // ---- shared memory ---------------------------------------------------------------------------
  // Q, dO, K, V: 8 rows x 64 (SW128) or x 32 (SW64) elements, rows contiguous.
  using SmemAtomK = std::conditional_t<kSw128, GMMA::Layout_K_SW128_Atom<Element>,
                                       GMMA::Layout_K_SW64_Atom<Element>>;
  // P^T / dS tiles (64 queries = one 128-byte row): always the 128-byte swizzle.
  using SmemAtomPK = GMMA::Layout_K_SW128_Atom<Element>;    // 8 x 64, K contiguous
  using SmemAtomPMN = GMMA::Layout_MN_SW128_Atom<Element>;  // 64 contiguous x 8
  using SmemLayoutQ =
      decltype(tile_to_shape(SmemAtomK{}, Shape<Int<kBlockM>, Int<kHeadDim>, Int<kStages>>{}));
  using SmemLayoutdO =
      decltype(tile_to_shape(SmemAtomK{}, Shape<Int<kBlockM>, Int<kHeadDim>, Int<kStages>>{}));
  using SmemLayoutK = decltype(tile_to_shape(SmemAtomK{}, Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  using SmemLayoutV = SmemLayoutK;
  // Transposed views (head dim, rows[, stage]) of the same bytes: MN-major B operands.
  using SmemLayoutQt = decltype(composition(
      SmemLayoutQ{}, make_ordered_layout(Shape<Int<kHeadDim>, Int<kBlockM>, Int<kStages>>{},
                                         Step<_2, _1, _3>{})));
  using SmemLayoutdOt = decltype(composition(
      SmemLayoutdO{}, make_ordered_layout(Shape<Int<kHeadDim>, Int<kBlockM>, Int<kStages>>{},
                                          Step<_2, _1, _3>{})));
  using SmemLayoutKt = decltype(composition(
      SmemLayoutK{}, make_ordered_layout(Shape<Int<kHeadDim>, Int<kBlockN>>{}, Step<_2, _1>{})));
  // P^T and dS^T as (keys, queries), queries contiguous: the K-major A operands of dV / dK. The
  // C fragment of S^T holds pairs of adjacent queries, so they are stored as 32-bit words.
  using SmemLayoutPt = decltype(tile_to_shape(SmemAtomPK{}, Shape<Int<kBlockN>, Int<kBlockM>>{}));
  // dS as (queries, keys), queries contiguous: the MN-major A operand of dQ = dS K. With 64 queries
  // (one 128-byte swizzle row) this is the same function of the bytes as SmemLayoutPt transposed:
  // element (q, k) at swizzle(k * 64 + q) in both.
  using SmemLayoutdS = decltype(tile_to_shape(SmemAtomPMN{}, Shape<Int<kBlockM>, Int<kBlockN>>{}));
  static_assert(kBlockM == 64, "dS / dS^T share bytes only with 64 queries per swizzle row");

  // ---- wgmma tilings (warpgroups side by side along N) -----------------------------------------
  using WgAlongN = Layout<Shape<_1, Int<kNumConsumerWarpgroups>, _1>>;
  using TiledMmaSdP = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float,
                           Shape<_64, Int<kBlockM / kNumConsumerWarpgroups>, Int<kHeadDim>>>(),
      WgAlongN{}));
  using TiledMmadKV = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float,
                           Shape<_64, Int<kHeadDim / kNumConsumerWarpgroups>, Int<kBlockM>>,
                           GMMA::Major::K, GMMA::Major::MN>(),
      WgAlongN{}));
  using TiledMmadQ = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float,
                           Shape<_64, Int<kHeadDim / kNumConsumerWarpgroups>, Int<kBlockN>>,
                           GMMA::Major::MN, GMMA::Major::MN>(),
      WgAlongN{}));

  static constexpr uint32_t kBytesQ = kBlockM * kHeadDim * sizeof(Element);  // one stage of Q or dO
  static constexpr uint32_t kBytesKV = kBlockN * kHeadDim * sizeof(Element);
  static constexpr uint32_t kBytesRowStats = kBlockM * sizeof(float);        // lse or D of a block

  struct SharedStorage {
    alignas(1024) Element k[cosize_v<SmemLayoutK>];
    alignas(1024) Element v[cosize_v<SmemLayoutV>];
    alignas(1024) Element q[cosize_v<SmemLayoutQ>];
    alignas(1024) Element dout[cosize_v<SmemLayoutdO>];
    // P^T and dS^T, double-buffered by step parity: step t writes buffer t % 2, whose last readers
    // (the GEMMs of step t-2) both warpgroups finished before the barrier of step t-1.
    alignas(1024) Element p[2][cosize_v<SmemLayoutPt>];
    alignas(1024) Element ds[2][cosize_v<SmemLayoutPt>];
    // dQ of one step in fp32, row-major kBlockM x kHeadDim with the XOR column swizzle of
    // bwd_workspace.h; added to dq_accum by the dQ writer warp with one bulk reduce-add.
    alignas(128) float dq[kBlockM * kHeadDim];
    alignas(16) float lse_log2[kStages][kBlockM];  // lse * log2(e), +inf past seqlen_q
    alignas(16) float dpsum[kStages][kBlockM];    // D = rowsum(dO * O), 0 past seqlen_q
    alignas(8) uint64_t full_kv;           // K and V landed (once per CTA)
    alignas(8) uint64_t full_q[kStages];  // Q + lse stage landed
    alignas(8) uint64_t full_do[kStages];  // dO + D stage landed
    alignas(8) uint64_t empty[kStages];   // all consumer threads done with the stage
    alignas(8) uint64_t dq_full;           // all consumer threads stored this step's dQ tile
    alignas(8) uint64_t dq_empty;          // the dQ writer's bulk add has read the tile
  };
  static constexpr int kSmemBytes = sizeof(SharedStorage);
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per CTA exceeds the sm90 limit");
};

}  // namespace flash::sm90
