// Consumer role of the sm90 backward kernel: warpgroups 1 and 2, 64 keys each, of the CTA's key
// block. dK and dV (64 x d each per warpgroup) stay in fp32 registers over every step.
//
// One step = one query block m of one q head (GQA: all heads of the group, head-major):
//   wait Q stage -> S^T = K Q^T (SS wgmma)  | wait dO stage -> dP^T = V dO^T (SS wgmma)
//   P^T  = exp2(S^T * scale*log2e - lse_log2[q])      (lse per column = per query; masks,
//          softcap / ALiBi like the forward)
//   dS^T = P^T * (dP^T - D[q]) (* (1 - tanh^2) with softcap)
//          dropout (mask Z of the forward, bwd_dropout.h): dP^T -> Z dP^T / (1-p) in dS^T, and
//          dV uses Z P^T / (1-p); D = rowsum(dO * O) with the dropped O is already right.
//   dV += P^T dO, dK += dS^T Q     (RS wgmma: P^T, dS^T re-viewed as A operands in registers)
//   dS^T -> smem (as dS), barrier; dQ = dS K (SS wgmma, each warpgroup half the head dim)
//   release the stage; dQ -> smem (fp32), arrive dq_full; the dQ writer warp bulk-adds it to
//   dq_accum (bwd_dq_writer.h) and frees the buffer through dq_empty.
// Epilogue: dK *= softmax_scale, dK and dV stored from registers (rows >= seqlen_k skipped).
// Varlen: `rule` holds this sequence's lengths; positions are relative to the sequence.
#pragma once

#include <cutlass/arch/barrier.h>
#include <cutlass/numeric_conversion.h>

#include "bwd_dq_writer.h"
#include "bwd_dropout.h"
#include "bwd_kernel_params.h"
#include "bwd_probs.h"
#include "bwd_smem_store.h"
#include "fwd_block_range.h"  // block_needs_mask, key_block_range
#include "fwd_consumer.h"     // wgmma_gemm
#include "fwd_softmax.h"      // rowcol_view, fast_exp2

namespace flash::sm90 {

// kDropout (implies kModScores): its own instantiation, so that the softcap / ALiBi kernel keeps
// its registers (the keep bits and the dropout branch made ptxas spill 3x more values there).
template <typename Traits, bool kModScores, bool kDropout = false>
__device__ __forceinline__ void bwd_consumer(const BwdKernelParams<Traits>& p,
                                             typename Traits::SharedStorage& ss,
                                             const MaskRule& rule, int tid, int n_block, int bidhk,
                                             int bidb, QueryBlockRange range) {
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

  // wgmma operand descriptors.
  Tensor tSrK = thr_sdp.partition_fragment_A(sK);      // S^T = K Q^T
  Tensor tSrQ = thr_sdp.partition_fragment_B(sQ);      // (MMA, MMA_N, MMA_K, stages)
  Tensor tdPrV = thr_sdp.partition_fragment_A(sV);     // dP^T = V dO^T
  Tensor tdPrdO = thr_sdp.partition_fragment_B(sdO);
  Tensor tdVrdO = thr_dkv.partition_fragment_B(sdOt);  // dV += P^T dO  (B = dO^T view)
  Tensor tdKrQ = thr_dkv.partition_fragment_B(sQt);    // dK += dS^T Q  (B = Q^T view)
  Tensor tdQrK = thr_dq.partition_fragment_B(sKt);    // dQ = dS K     (B = K^T view)

  // (key, query) of each S^T value of this thread; (key, col) of dK/dV; (query, col) of dQ.
  Tensor cS0 = thr_sdp.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kBlockM>>{}));
  Tensor cS = rowcol_view(cS0);
  Tensor cKV = rowcol_view(thr_dkv.partition_C(make_identity_tensor(Shape<Int<kBlockN>, Int<kHeadDim>>{})));
  Tensor cdQ = thr_dq.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{}));

  Tensor tdVrdV = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
  Tensor tdKrdK = partition_fragment_C(mma_dkv, Shape<Int<kBlockN>, Int<kHeadDim>>{});
  clear(tdVrdV);
  clear(tdKrdK);

  // The S^T accumulator ((2,2,kBlockM/8),1,1) re-viewed as the A operand of the dV / dK GEMMs,
  // ((2,2,2),1,kBlockM/16): the wgmma C layout of 64xN and the A layout of 64x16 agree value for
  // value (same argument as the forward's P V, fwd_consumer.h).
  using SFragment = decltype(partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{}));
  constexpr int kFrag = kBlockM / 2;  // 64 x kBlockM over 128 threads
  static_assert(decltype(size(std::declval<SFragment>()))::value == kFrag);
  static_assert(decltype(cosize(std::declval<SFragment>().layout()))::value == kFrag,
                "S^T fragment not compact: the A-operand re-view would be wrong");
  using ALayout = Layout<Shape<Shape<_2, _2, _2>, _1, Int<kBlockM / 16>>,
                         Stride<Stride<_1, _2, _4>, _0, _8>>;
  cutlass::NumericArrayConverter<Element, float, kFrag> convert;

  auto full_q = [&](int s) -> Barrier& { return reinterpret_cast<Barrier&>(ss.full_q[s]); };
  auto full_do = [&](int s) -> Barrier& { return reinterpret_cast<Barrier&>(ss.full_do[s]); };
  auto empty = [&](int s) -> EmptyBarrier& { return reinterpret_cast<EmptyBarrier&>(ss.empty[s]); };

  const int m_count = range.m_end - range.m_begin;
  const int steps = m_count * p.head_ratio;
  const int key0 = n_block * kBlockN;
  const BranchFreeMask bf_mask(rule);
  // Closed-form store addresses (bwd_smem_store.h); d96 keeps the CuTe-addressed dQ stores.
  constexpr bool kDqMap = kHeadDim % 64 == 0;
  const uint32_t ds_thread = DsStoreMap<kBlockM>::thread_offset(tid);
  const uint32_t ds_smem0 = smem_u32(ss.ds[0]);
  constexpr uint32_t kDsBufBytes = sizeof(ss.ds[0]);
  uint32_t dq_thread = 0;
  if constexpr (kDqMap) dq_thread = smem_u32(ss.dq) + DqStoreMap<kBlockM, kHeadDim>::thread_offset(tid);
  if (steps > 0) reinterpret_cast<Barrier&>(ss.full_kv).wait(0);

  for (int step = 0; step < steps; ++step) {
    const int bidh = bidhk * p.head_ratio + step / m_count;
    const int m_block = range.m_end - 1 - step % m_count;  // descending, see step_order
    const int stage = step % kStages;
    const uint32_t phase = (step / kStages) & 1;
    const int row0 = m_block * kBlockM;
    const float* lse_s = ss.lse_log2[stage];
    const float* dpsum_s = ss.dpsum[stage];
    // dS buffer of this step (double-buffered, see SharedStorage::ds).
    Tensor sdS = make_tensor(make_smem_ptr(ss.ds[step & 1]), typename Traits::SmemLayoutdS{});
    Tensor tdQrdS = thr_dq.partition_fragment_A(sdS);

    // Dropout keep bits (indices only), computed before the S^T / dP^T accumulators become live.
    // (Measured alternatives, README_bwd.md: computing them while those wgmmas run was no faster
    // and spilled more; computing them in warps 2-3 of the producer warpgroup was 0.55-0.65x.)
    BwdDropoutBits drop{{0xFFFFFFFFu, 0xFFFFFFFFu}};
    if constexpr (kDropout) {
      drop = bwd_dropout_bits<kBlockM / 4>(rowcol_view(cS0), key0, row0, p.rng_state[0],
                                           p.rng_state[1], uint32_t(bidb * p.nheads + bidh),
                                           p.keep_threshold);
    }

    Tensor tSrS = partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{});
    Tensor tdPrdP = partition_fragment_C(mma_sdp, Shape<Int<kBlockN>, Int<kBlockM>>{});
    full_q(stage).wait(phase);
    wgmma_gemm</*kZeroInit=*/true, /*kARegs=*/false>(mma_sdp, tSrK, tSrQ(_, _, _, stage), tSrS);
    full_do(stage).wait(phase);
    wgmma_gemm</*kZeroInit=*/true, /*kARegs=*/false>(mma_sdp, tdPrV, tdPrdO(_, _, _, stage), tdPrdP);

    Tensor S = rowcol_view(tSrS);    // (keys of this thread, queries of this thread)
    Tensor dP = rowcol_view(tdPrdP);
    // 16-bit P^T and dS^T (in C order), viewed as A operands of the dV / dK GEMMs.
    Tensor tdVrP = make_tensor<Element>(ALayout{});
    Tensor tdKrdS = make_tensor<Element>(ALayout{});
    using Frag16 = cutlass::Array<Element, kFrag>;
    using Frag32 = cutlass::Array<float, kFrag>;
    const bool need_mask = block_needs_mask<kBlockM, kBlockN>(rule, m_block, n_block);
    if constexpr (!kModScores) {
      // P^T while dP^T is still in the tensor cores (in source order: ptxas now schedules most of the
      // MUFU.EX2 after the dP^T wait anyway; pinning them before it by issuing dV first measured
      // 1-9 % slower, README_bwd.md session 5).
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
            const bool kept = bwd_dropout_kept<kBlockM / 4>(drop, r, c);
            pv = kept ? pr * p.rp_dropout : 0.f;
            dp = kept ? dp * p.rp_dropout : 0.f;
          }
          S(r, c) = pv;
          dP(r, c) = pr * (dp - d) * dtanh;
        }
      }
    }

    *reinterpret_cast<Frag16*>(tdVrP.data()) = convert(*reinterpret_cast<const Frag32*>(tSrS.data()));
    *reinterpret_cast<Frag16*>(tdKrdS.data()) = convert(*reinterpret_cast<const Frag32*>(tdPrdP.data()));
    wgmma_gemm</*kZeroInit=*/false, /*kARegs=*/true>(mma_dkv, tdVrP, tdVrdO(_, _, _, stage), tdVrdV);
    wgmma_gemm</*kZeroInit=*/false, /*kARegs=*/true>(mma_dkv, tdKrdS, tdKrQ(_, _, _, stage), tdKrdK);

    // dS^T -> smem. Element i of the compact fragment is value i of ds16; i and i+1 (i even) are
    // neighbouring queries, adjacent in the query-contiguous dS layout: one 32-bit store.
    // Safe to overwrite: the last reader of this buffer was the dQ GEMM of step - 2, which every
    // consumer thread completed before arriving at the barrier of step - 1.
    {
      const uint32_t ds_base = opaque_u32(ds_smem0 + (step & 1) * kDsBufBytes + ds_thread);
      CUTE_UNROLL
      for (int i = 0; i < kFrag; i += 2) {
        st_shared_b32(DsStoreMap<kBlockM>::offset(ds_base, i),
                      *reinterpret_cast<const uint32_t*>(&tdKrdS(i)));
      }
    }
    cutlass::arch::fence_view_async_shared();  // generic-proxy writes -> visible to wgmma
    // Wait for dV / dK here rather than after dQ: the P^T / dS^T registers (wgmma operands until
    // the wait) are then free before the dQ accumulators need registers (else ptxas spills).
    warpgroup_wait<0>();
    warpgroup_fence_operand(tdVrdV);
    warpgroup_fence_operand(tdKrdK);
    warpgroup_fence_operand(tdVrP);
    warpgroup_fence_operand(tdKrdS);
    empty(stage).arrive();  // Q, dO, lse, D of this stage are no longer read
    consumer_sync<kConsumers>(1);  // dS of both warpgroups complete

    Tensor tdQrdQ = partition_fragment_C(mma_dq, Shape<Int<kBlockM>, Int<kHeadDim>>{});
    wgmma_gemm</*kZeroInit=*/true, /*kARegs=*/false>(mma_dq, tdQrdS, tdQrK, tdQrdQ);
    warpgroup_wait<0>();
    warpgroup_fence_operand(tdQrdQ);

    // dQ -> ss.dq (fp32, swizzled columns), pairs of adjacent columns as float2, once the dQ
    // writer has read the previous tile (parity as for the producer's empty barriers: the first
    // wait passes at once).
    reinterpret_cast<EmptyBarrier&>(ss.dq_empty).wait((step & 1) ^ 1);
    if constexpr (kDqMap) {
      const uint32_t dq_base = opaque_u32(dq_thread);
      CUTE_UNROLL
      for (int i = 0; i < size(tdQrdQ); i += 2)
        st_shared_v2_f32(DqStoreMap<kBlockM, kHeadDim>::offset(dq_base, i), tdQrdQ(i), tdQrdQ(i + 1));
    } else {
      CUTE_UNROLL
      for (int i = 0; i < size(tdQrdQ); i += 2) {
        const int row = get<0>(cdQ(i)), col = get<1>(cdQ(i));
        *reinterpret_cast<float2*>(&ss.dq[row * kHeadDim + dq_swizzle_col_d<kHeadDim>(row, col)]) =
            make_float2(tdQrdQ(i), tdQrdQ(i + 1));
      }
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
