// Consumer role of the wide-head-dim sm90 backward kernel (bwd256_traits.h): warpgroups 1 and 2
// of a CTA that owns 64 keys. Warpgroup w keeps dK and dV for head-dim half w (64 keys x d/2
// fp32 each: 64 + 64 registers at d = 256) over every step.
//
// One step = one query block m (64 rows) of one q head (GQA: all heads of the group, head-major):
//   wait Q -> S^T_w = K Q_w^T | wait dO -> dP^T_w = V dO_w^T   (queries 32w .. 32w+31)
//   P^T = exp2(S^T * scale*log2e - lse_log2[q]); dS^T = P^T (dP^T - D[q])   (masks, softcap,
//   ALiBi as in bwd_consumer.h)
//   P^T, dS^T -> smem p[t % 2], ds[t % 2]; fence; named barrier (both warpgroups' halves there)
//   dV_w += P^T dO[:, half w]; dK_w += dS^T Q[:, half w]; dQ_w = dS K[:, half w]  (SS wgmma)
//   wait dV / dK -> release the Q / dO stage; wait dQ -> fp32 tile ss.dq -> dq_full; the dQ
//   writer warp bulk-adds the tile to dq_accum (bwd_dq_writer.h) and frees it via dq_empty.
// Epilogue: dK *= softmax_scale; dK, dV stored from registers (keys >= seqlen_k skipped).
// Dropout (kDropout, bwd_dropout.h: the forward's Philox mask rebuilt for the transposed tile):
// dV uses Z P^T / (1-p), dS^T = P^T (Z dP^T / (1-p) - D), as in bwd_consumer.h.
// Varlen: `rule` holds this sequence's lengths; positions are relative to the sequence.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <type_traits>

#include <cutlass/arch/barrier.h>

#include "bwd256_traits.h"
#include "bwd_dq_writer.h"     // consumer_sync
#include "bwd_dropout.h"
#include "bwd_kernel_params.h"
#include "bwd_probs.h"
#include "fwd_block_range.h"   // block_needs_mask
#include "fwd_consumer.h"      // wgmma_gemm
#include "fwd_softmax.h"       // rowcol_view, fast_exp2

namespace flash::sm90 {

// Two floats rounded to 16 bits, `lo` at the lower address.
template <typename Element>
__device__ __forceinline__ uint32_t pack_pair(float lo, float hi) {
  if constexpr (std::is_same_v<Element, cutlass::bfloat16_t>) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
}

__device__ __forceinline__ void st_shared_b32(const void* smem, uint32_t v) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(a), "r"(v) : "memory");
}

template <typename Traits, bool kModScores, bool kDropout = false>
__device__ __forceinline__ void bwd256_consumer(const BwdKernelParams<Traits>& p,
                                                typename Traits::SharedStorage& ss,
                                                const MaskRule& rule, int head_dim, int tid,
                                                int n_block, int bidhk, int bidb,
                                                QueryBlockRange range) {
  using namespace cute;
  using Element = typename Traits::Element;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN, kHeadDim = Traits::kHeadDim;
  constexpr int kStages = Traits::kStages;
  constexpr int kConsumers = Traits::kNumConsumerThreads;
  constexpr float kLog2e = 1.4426950408889634f;

  typename Traits::TiledMmaSdP mma_sdp;
  typename Traits::TiledMmadKV mma_dkv;
  typename Traits::TiledMmadQ mma_dq;
  auto thr_sdp = mma_sdp.get_thread_slice(tid);
  auto thr_dkv = mma_dkv.get_thread_slice(tid);
  auto thr_dq = mma_dq.get_thread_slice(tid);

  Tensor sQ = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQ{});
  Tensor sdO = make_tensor(make_smem_ptr(ss.dout), typename Traits::SmemLayoutdO{});
  Tensor sK = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutK{});
  Tensor sV = make_tensor(make_smem_ptr(ss.v), typename Traits::SmemLayoutV{});
  Tensor sQt = make_tensor(make_smem_ptr(ss.q), typename Traits::SmemLayoutQt{});
  Tensor sdOt = make_tensor(make_smem_ptr(ss.dout), typename Traits::SmemLayoutdOt{});
  Tensor sKt = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutKt{});

  // Loop-invariant wgmma operand descriptors (Q / dO: per stage).
  Tensor tSrK = thr_sdp.partition_fragment_A(sK);      // S^T = K Q^T
  Tensor tSrQ = thr_sdp.partition_fragment_B(sQ);      // (MMA, MMA_N, MMA_K, stages)
  Tensor tdPrV = thr_sdp.partition_fragment_A(sV);     // dP^T = V dO^T
  Tensor tdPrdO = thr_sdp.partition_fragment_B(sdO);
  Tensor tdVrdO = thr_dkv.partition_fragment_B(sdOt);  // dV += P^T dO  (B = dO^T view)
  Tensor tdKrQ = thr_dkv.partition_fragment_B(sQt);    // dK += dS^T Q  (B = Q^T view)
  Tensor tdQrK = thr_dq.partition_fragment_B(sKt);     // dQ = dS K     (B = K^T view)

  // (key, query) of each S^T value of this thread; (key, col) of dK/dV; (query, col) of dQ.
  Tensor cS = rowcol_view(thr_sdp.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kBlockM>>{})));
  static_assert(!kDropout || kModScores, "the dropout kernel is a kModScores kernel");
  constexpr int kCols = decltype(size<1>(cS))::value;  // queries of this thread: 8
  const BranchFreeMask bf_mask(rule);  // common/mask.h
  Tensor cKV = rowcol_view(thr_dkv.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{})));
  Tensor cdQ = thr_dq.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));

  Tensor tdVrdV = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
  Tensor tdKrdK = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
  clear(tdVrdV);
  clear(tdKrdK);

  using SFragment = decltype(partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{}));
  constexpr int kFrag = decltype(size(std::declval<SFragment>()))::value;  // 64 x 32 / 128 = 16
  static_assert(decltype(cosize(std::declval<SFragment>().layout()))::value == kFrag,
                "S^T fragment not compact: value i + 1 would not be the query after value i");

  auto full_q = [&](int s) -> Barrier& { return reinterpret_cast<Barrier&>(ss.full_q[s]); };
  auto full_do = [&](int s) -> Barrier& { return reinterpret_cast<Barrier&>(ss.full_do[s]); };

  const int m_count = range.m_end - range.m_begin;
  const int steps = m_count * p.head_ratio;
  const int key0 = n_block * kBlockN;
  if (steps > 0) reinterpret_cast<Barrier&>(ss.full_kv).wait(0);

  for (int step = 0; step < steps; ++step) {
    const int bidh = bidhk * p.head_ratio + step / m_count;
    const int m_block = range.m_end - 1 - step % m_count;  // descending, as the producer
    const int stage = step % kStages;
    const uint32_t phase = (step / kStages) & 1;
    const int row0 = m_block * kBlockM;
    const float* lse_s = ss.lse_log2[stage];
    const float* dpsum_s = ss.dpsum[stage];
    const int buf = step & 1;
    Tensor sPt = make_tensor(make_smem_ptr(ss.p[buf]), typename Traits::SmemLayoutPt{});
    Tensor sdSt = make_tensor(make_smem_ptr(ss.ds[buf]), typename Traits::SmemLayoutPt{});
    Tensor sdS = make_tensor(make_smem_ptr(ss.ds[buf]), typename Traits::SmemLayoutdS{});

    // Dropout keep bits (indices only), before the S^T / dP^T accumulators become live.
    BwdDropoutBits drop{{0xFFFFFFFFu, 0xFFFFFFFFu}};
    if constexpr (kDropout) {
      drop = bwd_dropout_bits<kCols>(cS, key0, row0, p.rng_state[0], p.rng_state[1],
                                     uint32_t(bidb * p.nheads + bidh), p.keep_threshold);
    }

    Tensor tSrS = partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{});
    Tensor tdPrdP = partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{});
    full_q(stage).wait(phase);
    wgmma_gemm</*kZeroInit=*/true, /*kARegs=*/false>(mma_sdp, tSrK, tSrQ(_, _, _, stage), tSrS);
    full_do(stage).wait(phase);
    wgmma_gemm</*kZeroInit=*/true, /*kARegs=*/false>(mma_sdp, tdPrV, tdPrdO(_, _, _, stage), tdPrdP);

    Tensor S = rowcol_view(tSrS);    // (keys of this thread, queries of this thread)
    Tensor dP = rowcol_view(tdPrdP);
    const bool need_mask = block_needs_mask<kBlockM, kBlockN>(rule, m_block, n_block);
    if constexpr (!kModScores) {
      // P^T while dP^T is still in the tensor cores.
      warpgroup_wait<1>();
      warpgroup_fence_operand(tSrS);
      const float scale_log2 = p.softmax_scale * kLog2e;
      scores_to_probs_t(S, cS, row0, key0, bf_mask, need_mask, lse_s, scale_log2);  // bwd_probs.h
      warpgroup_wait<0>();
      warpgroup_fence_operand(tdPrdP);
      CUTE_UNROLL
      for (int c = 0; c < size<1>(S); ++c) {
        const float d = dpsum_s[get<1>(cS(0, c))];
        CUTE_UNROLL
        for (int r = 0; r < size<0>(S); ++r) dP(r, c) = S(r, c) * (dP(r, c) - d);
      }
    } else {
      // Modifiers: recompute s = c*tanh(scale*qk/c) - slope*|..| as the forward did, and the
      // softcap derivative (1 - tanh^2) in the same pass, once dP^T is there too.
      warpgroup_wait<0>();
      warpgroup_fence_operand(tSrS);
      warpgroup_fence_operand(tdPrdP);
      const float alibi_slope =
          p.alibi_slopes != nullptr ? p.alibi_slopes[bidb * p.alibi_batch_stride + bidh] : 0.f;
      CUTE_UNROLL
      for (int c = 0; c < size<1>(S); ++c) {
        const int q = get<1>(cS(0, c));
        const float lse = lse_s[q];
        const float d = dpsum_s[q];
        CUTE_UNROLL
        for (int r = 0; r < size<0>(S); ++r) {
          const int key = key0 + get<0>(cS(r, c));
          float x = S(r, c) * p.softmax_scale;
          float dtanh = 1.f;
          if (p.softcap > 0.f) {
            const float t = tanhf(x / p.softcap);
            x = p.softcap * t;
            dtanh = 1.f - t * t;
          }
          x += alibi_bias(alibi_slope, rule, row0 + q, key);
          x = (!need_mask | bf_mask.visible(row0 + q, key)) ? x : -INFINITY;  // no branch
          const float pr = fast_exp2(x * kLog2e - lse);
          float dp = dP(r, c), pv = pr;
          if constexpr (kDropout) {
            const bool kept = bwd_dropout_kept<kCols>(drop, r, c);
            pv = kept ? pr * p.rp_dropout : 0.f;
            dp = kept ? dp * p.rp_dropout : 0.f;
          }
          S(r, c) = pv;
          dP(r, c) = pr * (dp - d) * dtanh;
        }
      }
    }

    // P^T, dS^T -> smem in 16 bits. Values i, i+1 (i even) of the compact C fragment are
    // neighbouring queries, adjacent in the query-contiguous layout: one 32-bit st.shared each
    // (explicit shared-window addresses: through a generic pointer the compiler emitted generic
    // stores and staged the packed values in local memory).
    {
      Tensor tPsP = thr_sdp.partition_C(sPt);
      Tensor tdSsdS = thr_sdp.partition_C(sdSt);
      CUTE_UNROLL
      for (int i = 0; i < kFrag; i += 2) {
        st_shared_b32(&tPsP(i), pack_pair<Element>(tSrS(i), tSrS(i + 1)));
        st_shared_b32(&tdSsdS(i), pack_pair<Element>(tdPrdP(i), tdPrdP(i + 1)));
      }
    }
    cutlass::arch::fence_view_async_shared();  // generic-proxy writes -> visible to wgmma
    consumer_sync<kConsumers>(1);              // both warpgroups' halves of P^T / dS^T stored

    Tensor tdVrP = thr_dkv.partition_fragment_A(sPt);
    Tensor tdKrdS = thr_dkv.partition_fragment_A(sdSt);
    Tensor tdQrdS = thr_dq.partition_fragment_A(sdS);
    wgmma_gemm</*kZeroInit=*/false, /*kARegs=*/false>(mma_dkv, tdVrP, tdVrdO(_, _, _, stage), tdVrdV);
    wgmma_gemm</*kZeroInit=*/false, /*kARegs=*/false>(mma_dkv, tdKrdS, tdKrQ(_, _, _, stage), tdKrdK);
    Tensor tdQrdQ = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kHeadDim>>{});
    wgmma_gemm</*kZeroInit=*/true, /*kARegs=*/false>(mma_dq, tdQrdS, tdQrK, tdQrdQ);

    // dV / dK retired (wgmma groups complete in order): Q, dO, lse, D of this stage are free.
    warpgroup_wait<1>();
    warpgroup_fence_operand(tdVrdV);
    warpgroup_fence_operand(tdKrdK);
    reinterpret_cast<EmptyBarrier&>(ss.empty[stage]).arrive();
    warpgroup_wait<0>();
    warpgroup_fence_operand(tdQrdQ);

    // dQ -> ss.dq (fp32, swizzled columns), pairs of adjacent columns as float2, once the dQ
    // writer has read the previous tile (the first wait passes at once).
    reinterpret_cast<EmptyBarrier&>(ss.dq_empty).wait((step & 1) ^ 1);
    CUTE_UNROLL
    for (int i = 0; i < size(tdQrdQ); i += 2) {
      const int row = get<0>(cdQ(i)), col = get<1>(cdQ(i));
      *reinterpret_cast<float2*>(&ss.dq[row * kHeadDim + dq_swizzle_col(row, col)]) =
          make_float2(tdQrdQ(i), tdQrdQ(i + 1));
    }
    cutlass::arch::fence_view_async_shared();  // visible to the bulk copy (async proxy)
    reinterpret_cast<EmptyBarrier&>(ss.dq_full).arrive();
  }

  // ---- epilogue: dK (times softmax_scale) and dV, 2 adjacent columns per store ------------------
  Tensor dK = rowcol_view(tdKrdK);
  Tensor dV = rowcol_view(tdVrdV);
  // Varlen: key j of the sequence is row k_offset + j of dk / dv (batch strides unused); keys of
  // the next sequence in a tail block (key >= the sequence's seqlen_k) are never stored.
  const bool varlen = p.cu_seqlens_q != nullptr;
  const BwdSeqInfo si = bwd_seq_info(p, bidb);
  Element* dk = p.dk + (varlen ? int64_t(si.k_offset) * p.dk_row_stride : bidb * p.dk_batch_stride) +
                bidhk * p.dk_head_stride;
  Element* dv = p.dv + (varlen ? int64_t(si.k_offset) * p.dv_row_stride : bidb * p.dv_batch_stride) +
                bidhk * p.dv_head_stride;
  CUTE_UNROLL
  for (int r = 0; r < size<0>(dK); ++r) {
    const int key = key0 + get<0>(cKV(r, 0));
    if (key >= rule.seqlen_k) continue;
    CUTE_UNROLL
    for (int c = 0; c < size<1>(dK); c += 2) {  // columns c, c+1 adjacent (mode 0,0 of C)
      const int col = get<1>(cKV(r, c));
      if (col >= head_dim) continue;  // (head_dim == kHeadDim: the launcher checks it)
      cutlass::Array<Element, 2> pk, pv;
      pk[0] = static_cast<Element>(dK(r, c) * p.softmax_scale);
      pk[1] = static_cast<Element>(dK(r, c + 1) * p.softmax_scale);
      pv[0] = static_cast<Element>(dV(r, c));
      pv[1] = static_cast<Element>(dV(r, c + 1));
      *reinterpret_cast<cutlass::Array<Element, 2>*>(dk + key * p.dk_row_stride + col) = pk;
      *reinterpret_cast<cutlass::Array<Element, 2>*>(dv + key * p.dv_row_stride + col) = pv;
    }
  }
}

}  // namespace flash::sm90
