// Compile-time configuration of the sm90 backward kernel: tiles, shared-memory layouts (plain and
// transposed views), the three wgmma tilings and the shared-storage struct.
//
// The kernel works "transposed" (keys along the MMA's M): a CTA owns kBlockN = 128 keys, each of
// the two consumer warpgroups 64 of them, and walks the query blocks (kBlockM rows) that see them.
//   S^T  = K Q^T,  dP^T = V dO^T            TiledMmaSdP   M = keys, N = queries, K = head dim
//   dV  += P^T dO, dK  += dS^T Q            TiledMmadKV   M = keys, N = head dim, K = queries
//                                                          (A = P^T / dS^T straight from registers)
//   dQ   = dS K                             TiledMmadQ    M = queries, N = head dim, K = keys
//                                                          (A = dS through shared memory)
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
struct BwdTraits {
  using Element = Element_;  // cutlass::half_t or cutlass::bfloat16_t
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = BwdTileConfig<kHeadDim>::kBlockM;  // queries per step
  static constexpr int kBlockN = BwdTileConfig<kHeadDim>::kBlockN;  // keys per CTA
  static constexpr int kStages = 2;  // Q / dO / lse / D ring

  static constexpr int kNumConsumerWarpgroups = 2;
  static constexpr int kNumConsumerThreads = 128 * kNumConsumerWarpgroups;
  static constexpr int kNumThreads = 128 + kNumConsumerThreads;  // + producer warpgroup (warp 0:
                                                                  // loads, warp 1: dQ writer)
  static constexpr int kProducerRegs = 24;
  static constexpr int kConsumerRegs = 240;

  static_assert(kHeadDim % 32 == 0, "64-byte swizzle needs rows of a multiple of 32 halves");
  static_assert(kBlockN == 64 * kNumConsumerWarpgroups, "each consumer warpgroup owns 64 keys");
  static_assert(kBlockM == 64 || kBlockM == 128, "query block: one or two 64-row wgmma atoms");

  // ---- shared memory ---------------------------------------------------------------------------
  // 8 rows x 64 elements, row contiguous; d96 (rows of 192 bytes): the 64-byte swizzle, 8 x 32.
  using SmemAtomK = std::conditional_t<kHeadDim % 64 == 0, GMMA::Layout_K_SW128_Atom<Element>,
                                       GMMA::Layout_K_SW64_Atom<Element>>;
  using SmemAtomMN = GMMA::Layout_MN_SW128_Atom<Element>; // 64 contiguous x 8
  using SmemLayoutQ =
      decltype(tile_to_shape(SmemAtomK{}, Shape<Int<kBlockM>, Int<kHeadDim>, Int<kStages>>{}));
  using SmemLayoutdO = SmemLayoutQ;
  // K / V of d96: the 32-byte swizzle (8 x 16 atoms), so that each consumer warpgroup's 48-column
  // half of the K^T operand of dQ = dS K starts on an atom: one 64x48x16 wgmma per k-step.
  using SmemAtomKV = std::conditional_t<kHeadDim % 64 == 0, SmemAtomK, GMMA::Layout_K_SW32_Atom<Element>>;
  using SmemLayoutK = decltype(tile_to_shape(SmemAtomKV{}, Shape<Int<kBlockN>, Int<kHeadDim>>{}));
  using SmemLayoutV = SmemLayoutK;
  // Transposed views (head dim, rows[, stage]) of the same bytes: MN-major B operands.
  using SmemLayoutQt = decltype(composition(
      SmemLayoutQ{}, make_ordered_layout(Shape<Int<kHeadDim>, Int<kBlockM>, Int<kStages>>{},
                                         Step<_2, _1, _3>{})));
  using SmemLayoutdOt = SmemLayoutQt;
  using SmemLayoutKt = decltype(composition(
      SmemLayoutK{}, make_ordered_layout(Shape<Int<kHeadDim>, Int<kBlockN>>{}, Step<_2, _1>{})));
  // dS (queries, keys), queries contiguous: the MN-major A operand of dQ = dS K. The consumers
  // write it through the transposed view (keys, queries), in which the two adjacent values of a
  // wgmma accumulator pair (two neighbouring queries) are adjacent in memory.
  using SmemLayoutdS = decltype(tile_to_shape(SmemAtomMN{}, Shape<Int<kBlockM>, Int<kBlockN>>{}));
  using SmemLayoutdSt = decltype(composition(
      SmemLayoutdS{}, make_ordered_layout(Shape<Int<kBlockN>, Int<kBlockM>>{}, Step<_2, _1>{})));

  // ---- wgmma tilings -------------------------------------------------------------------------
  using TiledMmaSdP = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float, Shape<_64, Int<kBlockM>, Int<kHeadDim>>>(),
      Layout<Shape<Int<kNumConsumerWarpgroups>, _1, _1>>{}));
  using TiledMmadKV = decltype(make_tiled_mma(
      GMMA::rs_op_selector<Element, Element, float, Shape<_64, Int<kHeadDim>, Int<kBlockM>>,
                           GMMA::Major::K, GMMA::Major::MN>(),
      Layout<Shape<Int<kNumConsumerWarpgroups>, _1, _1>>{}));
  // dQ (kBlockM x d), 32 fp32 registers per thread either way: kBlockM = 64: warpgroup w computes
  // the head-dim half w; kBlockM = 128: warpgroup w computes query rows 64w .. 64w+63.
  static constexpr bool kDqSplitD = kBlockM == 64;
  using TiledMmadQ = decltype(make_tiled_mma(
      GMMA::ss_op_selector<Element, Element, float,
                           Shape<_64, Int<kDqSplitD ? kHeadDim / kNumConsumerWarpgroups : kHeadDim>,
                                 Int<kBlockN>>,
                           GMMA::Major::MN, GMMA::Major::MN>(),
      std::conditional_t<kDqSplitD, Layout<Shape<_1, Int<kNumConsumerWarpgroups>, _1>>,
                         Layout<Shape<Int<kNumConsumerWarpgroups>, _1, _1>>>{}));

  static constexpr uint32_t kBytesQ = kBlockM * kHeadDim * sizeof(Element);  // one stage of Q or dO
  static constexpr uint32_t kBytesKV = kBlockN * kHeadDim * sizeof(Element);
  static constexpr uint32_t kBytesRowStats = kBlockM * sizeof(float);        // lse or D of a block

  struct SharedStorage {
    alignas(1024) Element k[cosize_v<SmemLayoutK>];
    alignas(1024) Element v[cosize_v<SmemLayoutV>];
    alignas(1024) Element q[cosize_v<SmemLayoutQ>];
    alignas(1024) Element dout[cosize_v<SmemLayoutdO>];
    // dS, double-buffered by step parity: step t writes ds[t % 2] while a slower warpgroup may
    // still run the dQ GEMM of step t-1 on the other buffer (one barrier per step suffices).
    alignas(1024) Element ds[2][cosize_v<SmemLayoutdS>];
    // dQ of one step in fp32, row-major kBlockM x kHeadDim with the XOR column swizzle of
    // bwd_workspace.h; added to dq_accum by the dQ writer warp with one bulk reduce-add.
    alignas(128) float dq[kBlockM * kHeadDim];
    alignas(16) float lse_log2[kStages][kBlockM];  // lse * log2(e), +inf past seqlen_q
    alignas(16) float dpsum[kStages][kBlockM];     // D = rowsum(dO * O), 0 past seqlen_q
    alignas(8) uint64_t full_kv;           // K and V landed (once per CTA)
    alignas(8) uint64_t full_q[kStages];   // Q + lse stage landed
    alignas(8) uint64_t full_do[kStages];  // dO + D stage landed
    alignas(8) uint64_t empty[kStages];    // all consumer threads done with the stage
    alignas(8) uint64_t dq_full;           // all consumer threads stored this step's dQ tile
    alignas(8) uint64_t dq_empty;          // the dQ writer's bulk add has read the tile
  };
  static constexpr int kSmemBytes = sizeof(SharedStorage);
  static_assert(kSmemBytes <= 227 * 1024, "shared memory per CTA exceeds the sm90 limit");
};

}  // namespace flash::sm90
