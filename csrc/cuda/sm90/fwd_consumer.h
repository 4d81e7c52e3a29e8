// Consumer role of the sm90 forward kernel: warpgroups 1..kNumConsumerWarpgroups, 64 query rows each.
//
// Per key block (visited from the last to the first, as the producer loads them):
//   wait K stage -> S = Q K^T (wgmma, both operands in smem) -> release K stage
//   -> score modifiers (scale, softcap, ALiBi) and the mask, only where needed
//   -> online softmax in registers -> P = bf16/fp16(S) kept in registers
//   -> wait V stage -> O += P V (wgmma, A = P from registers, B = V^T view of smem) -> release V.
// With Traits::kIntraWgOverlap (default) the two GEMMs of neighbouring blocks are issued together:
// Q K^T(i+1) and P V(i), then the softmax of block i+1 runs while P V(i) is in the tensor cores.
// Then O is normalised and written straight from registers, LSE by one thread per row.
#pragma once

#include <cutlass/arch/barrier.h>
#include <cutlass/numeric_conversion.h>

#include "fwd_block_range.h"
#include "fwd_kernel_params.h"
#include "fwd_dropout.h"
#include "fwd_pingpong.h"
#include "fwd_seqlen.h"
#include "fwd_softmax.h"
#include "fwd_variant.h"

namespace flash::sm90 {

// One wgmma batch: C (+)= A * B over all k-blocks, committed as one group. kZeroInit makes the
// first k-block overwrite C instead of accumulating (saves clearing the S fragment).
// kARegs: A lives in registers (RS wgmma); its registers must be fenced like the accumulator's.
template <bool kZeroInit, bool kARegs, typename TiledMma, typename TA, typename TB, typename TC>
__device__ __forceinline__ void wgmma_gemm(TiledMma& mma, TA& tA, TB const& tB, TC& tC) {
  if constexpr (kARegs) warpgroup_fence_operand(tA);
  warpgroup_fence_operand(tC);
  warpgroup_arrive();
  if constexpr (kZeroInit) mma.accumulate_ = GMMA::ScaleOut::Zero;
  CUTE_UNROLL
  for (int k = 0; k < size<2>(tA); ++k) {
    cute::gemm(mma, tA(_, _, k), tB(_, _, k), tC);
    mma.accumulate_ = GMMA::ScaleOut::One;
  }
  warpgroup_commit_batch();
  warpgroup_fence_operand(tC);
  if constexpr (kARegs) warpgroup_fence_operand(tA);
}

// Keeps ptxas from hoisting the following wgmma wait above the code that computed `v`.
// ptxas schedules `wgmma.wait_group` like any instruction without register inputs: in the
// overlapped loop it placed the wait for P V(i) BEFORE the softmax of block i+1 (SASS of the lean
// d=128 / d=256 kernels: WARPGROUP.DEPBAR.LE gsb0, 0x0 ahead of every MUFU.EX2), which
// serialises P V(i) and the softmax and undoes the intra-warpgroup overlap. It does keep shared
// memory accesses in order with the wait (wgmma reads smem), so a shared store that depends on
// `v` -- predicated on a condition that never holds (v is a row sum: >= 0, or NaN) -- ends the
// softmax before the wait. The store never executes; `never_written` is only its address.
__device__ __forceinline__ void order_before_wgmma_wait(float v, const void* never_written) {
  const uint32_t addr = cute::cast_smem_ptr_to_uint(never_written);
  asm volatile(
      "{\n .reg .pred p;\n setp.lt.f32 p, %0, 0f00000000;\n @p st.shared.f32 [%1], %0;\n}\n" ::"f"(v),
      "r"(addr)
      : "memory");
}

// kModScores: softcap or ALiBi present. Then scores are brought to natural units (times
// softmax_scale) before the modifiers; without them the scale is folded into the exp2 FFMA.
// kVariant: bit set of opt-in code variants of the lean kernel (fwd_variant.h), template flags
// rather than runtime ones so that variant 0 keeps the code it had (the wide-store transposes
// alone cost d=256 ~20 B more spills when compiled in).
template <typename Traits, bool kModScores, int kVariant = 0>
__device__ __forceinline__ void fwd_consumer(const FwdKernelParams<Traits>& p,
                                             typename Traits::SharedStorage& ss,
                                             int tid /* 0 .. kNumConsumerThreads-1 */) {
  using namespace cute;
  using Element = typename Traits::Element;
  using EmptyBarrier = cutlass::arch::ClusterBarrier;
  constexpr bool kWideStore = !kModScores && (kVariant & kFwdVariantWideStore) != 0;
  constexpr bool kIlpSoftmax = !kModScores && (kVariant & kFwdVariantIlpSoftmax) != 0;
  constexpr bool kWgBlockSkip =
      !kModScores && Traits::kWgBlockSkipAvailable && (kVariant & kFwdVariantWgSkip) != 0;
  constexpr bool kPinWait = !kModScores && (kVariant & kFwdVariantPinWait) != 0;
  constexpr int kBlockM = Traits::kBlockM, kBlockN = Traits::kBlockN, kHeadDim = Traits::kHeadDim;

  typename Traits::TiledMmaQK mma_qk;
  typename Traits::TiledMmaPV mma_pv;
  auto thr_qk = mma_qk.get_thread_slice(tid);
  auto thr_pv = mma_pv.get_thread_slice(tid);

  Tensor sK = make_tensor(make_smem_ptr(ss.k), typename Traits::SmemLayoutK{});
  Tensor sVt = make_tensor(make_smem_ptr(ss.v), typename Traits::SmemLayoutVt{});
  Tensor tSrK = thr_qk.partition_fragment_B(sK);   // (MMA, MMA_N, MMA_K, stages)
  Tensor tOrV = thr_pv.partition_fragment_B(sVt);  // (MMA, MMA_N, MMA_K, stages)

  // Tile coordinates (row, key) of each S value of this thread, and (row, col) of each O value.
  Tensor cS = rowcol_view(thr_qk.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kBlockN>>{})));
  Tensor cO = rowcol_view(thr_pv.partition_C(make_identity_tensor(Shape<Int<kBlockM>, Int<kHeadDim>>{})));
  constexpr int kRows = decltype(size<0>(cS))::value;

  // S fragment ((2,2,kBlockN/8),1,1) as the A operand of P V: ((2,2,2),1,kBlockN/16). The wgmma
  // register layouts of C (64xN) and A (64x16) coincide value for value -- k-block k of A is
  // column groups 2k and 2k+1 of C -- so the conversion is only a re-view of the same order.
  using PLayout = Layout<Shape<Shape<_2, _2, _2>, _1, Int<kBlockN / 16>>,
                         Stride<Stride<_1, _2, _4>, _0, _8>>;
  constexpr int kSFragSize = kBlockN / 2;  // 64 x kBlockN over 128 threads
  using SFragment = decltype(partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{}));
  static_assert(decltype(size(std::declval<SFragment>()))::value == kSFragSize);
  static_assert(decltype(cosize(std::declval<SFragment>().layout()))::value == kSFragSize,
                "S fragment not compact: the P re-view below would be wrong");
  static_assert(decltype(size<0, 0>(std::declval<SFragment>()))::value == 2 &&
                decltype(size<0, 1>(std::declval<SFragment>()))::value == 2,
                "unexpected wgmma accumulator layout");
  constexpr float kLog2e = 1.4426950408889634f;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  auto full_k = [&](int s) -> Barrier& { return reinterpret_cast<Barrier&>(ss.full_k[s]); };
  auto full_v = [&](int s) -> Barrier& { return reinterpret_cast<Barrier&>(ss.full_v[s]); };
  auto empty_k = [&](int s) -> EmptyBarrier& { return reinterpret_cast<EmptyBarrier&>(ss.empty_k[s]); };
  auto empty_v = [&](int s) -> EmptyBarrier& { return reinterpret_cast<EmptyBarrier&>(ss.empty_v[s]); };
  constexpr int kStages = Traits::kStages;
  const PingPong<Traits::kPingPongAvailable, Traits::kNumConsumerWarpgroups> pingpong{
      uint32_t(tid / 128), p.pingpong};
  pingpong.start();

  // Pipeline state carried across the tiles of this CTA, counted exactly as the producer does:
  // the kv_iter-th key block this CTA visits uses K/V stage kv_iter % kStages with parity
  // (kv_iter / kStages) & 1; the q_iter-th non-empty tile reads Q buffer q_iter % q_stages and
  // waits its full_q on parity (q_iter / q_stages) & 1.
  int kv_iter = 0;
  uint32_t q_iter = 0;
  const TileSchedule& sched = p.sched;
  for (int slot = blockIdx.x, round = 0; slot < sched.num_units; slot += gridDim.x, ++round) {
    const int unit = sched.unit_at(slot, round, int(blockIdx.x), int(gridDim.x));
    const int tiles = sched.tiles_in_unit(unit);
    for (int j = 0; j < tiles; ++j) {
      const TileCoord tc = sched.tile(unit, j);
      const int m_block = tc.m_block, bidh = tc.bidh, bidb = tc.bidb;
      const SeqInfo si = seq_info(p, bidb);
      if (m_block * kBlockM >= si.seqlen_q) continue;  // varlen: past this sequence's rows
      const MaskRule rule = si.rule(p.window_left, p.window_right);

      Tensor tOrO = partition_fragment_C(mma_pv, Shape<Int<kBlockM>, Int<kHeadDim>>{});
      clear(tOrO);
      Tensor O = rowcol_view(tOrO);
      OnlineSoftmax<kRows> softmax(kModScores ? kLog2e : p.softmax_scale * kLog2e);

      const int row0 = m_block * kBlockM;
      DropoutArgs drop{};
      if constexpr (kModScores) {
        if (p.dropout)
          drop = DropoutArgs{p.rng_state[0], p.rng_state[1], uint32_t(bidb * p.nheads + bidh),
                             p.keep_threshold};
      }
      // Dropout after the softmax (the row sums keep every probability), before P V.
      auto dropout = [&](auto& S, int n_block) {
        if constexpr (kModScores) {
          if (p.dropout) apply_dropout(S, cS, row0, n_block * kBlockN, drop);
        }
      };
      float alibi_slope = 0.f;
      if constexpr (kModScores) {
        if (p.alibi_slopes != nullptr)
          alibi_slope = p.alibi_slopes[bidb * p.alibi_batch_stride + bidh];
      }

      // Score modifiers (kModScores) and the element mask of one S tile, in place.
      auto modify_and_mask = [&](auto& S, int n_block) {
        const int col0 = n_block * kBlockN;
        if constexpr (kModScores) {
          CUTE_UNROLL
          for (int r = 0; r < size<0>(S); ++r) {
            const int row = row0 + get<0>(cS(r, 0));
            CUTE_UNROLL
            for (int c = 0; c < size<1>(S); ++c) {
              float x = S(r, c) * p.softmax_scale;
              if (p.softcap > 0.f) x = p.softcap * tanhf(x / p.softcap);
              x += alibi_bias(alibi_slope, rule, row, col0 + get<1>(cS(r, c)));
              S(r, c) = x;
            }
          }
        }
        // kFastMaskAvailable: d <= 128, 128-key blocks, two consumer warpgroups only -- the extra
        // code costs the d=256 kernel 8 B more spills (and its GEMMs dwarf the mask anyway), the
        // 192-row tile's kernels (160 registers) 136 B, the 128 x 176 tile 32 B.
        constexpr bool kFastMaskAvailable =
            kHeadDim <= 128 && kBlockN <= 128 && Traits::kNumConsumerWarpgroups == 2;
        if (kFastMaskAvailable && p.fast_mask &&
            block_needs_mask<kBlockM, kBlockN>(rule, m_block, n_block)) {
          // The same bounds relative to this thread's first column: the column offsets then are
          // compile-time constants of the unrolled loop (no per-column add), one compare per
          // element and bound; without a left window (causal) only the right bound is tested.
          const int tcol0 = get<1>(cS(0, 0));
          if (rule.window_left >= 0) {
            CUTE_UNROLL
            for (int r = 0; r < size<0>(S); ++r) {
              const int row = row0 + get<0>(cS(r, 0));
              const int lo = rule.first_key(row) - col0 - tcol0;
              const int hi = rule.end_key(row) - col0 - tcol0;
              CUTE_UNROLL
              for (int c = 0; c < size<1>(S); ++c) {
                const int dc = get<1>(cS(r, c)) - tcol0;
                if (dc < lo || dc >= hi) S(r, c) = -INFINITY;
              }
            }
          } else {
            CUTE_UNROLL
            for (int r = 0; r < size<0>(S); ++r) {
              const int row = row0 + get<0>(cS(r, 0));
              const int hi = rule.end_key(row) - col0 - tcol0;
              CUTE_UNROLL
              for (int c = 0; c < size<1>(S); ++c) {
                if (get<1>(cS(r, c)) - tcol0 >= hi) S(r, c) = -INFINITY;
              }
            }
          }
        } else if (block_needs_mask<kBlockM, kBlockN>(rule, m_block, n_block)) {
          // MaskRule::visible(row, key) is key in [first_key(row), end_key(row)) (keys are >= 0):
          // the bounds are computed once per row, relative to the block, so each element costs two
          // compares against a column offset that is a constant of the unrolled loop.
          CUTE_UNROLL
          for (int r = 0; r < size<0>(S); ++r) {
            const int row = row0 + get<0>(cS(r, 0));
            const int lo = rule.first_key(row) - col0, hi = rule.end_key(row) - col0;
            CUTE_UNROLL
            for (int c = 0; c < size<1>(S); ++c) {
              const int col = get<1>(cS(r, c));
              if (col < lo || col >= hi) S(r, c) = -INFINITY;
            }
          }
        }
      };
      // fp32 probabilities -> 16-bit A operand of P V (same register order, see PLayout).
      auto convert_p = [&](auto const& tSrS, auto& tOrP) {
        cutlass::NumericArrayConverter<Element, float, kSFragSize> convert;
        *reinterpret_cast<cutlass::Array<Element, kSFragSize>*>(tOrP.data()) =
            convert(*reinterpret_cast<const cutlass::Array<float, kSFragSize>*>(tSrS.data()));
      };
      const KeyBlockRange range = key_block_range<kBlockM, kBlockN>(rule, m_block);
      if (range.n_min < range.n_max) {
        const int qb = int(q_iter % uint32_t(p.q_stages));
        auto& full_q = reinterpret_cast<Barrier&>(ss.full_q[qb]);
        auto& empty_q = reinterpret_cast<EmptyBarrier&>(ss.empty_q[qb]);
        Tensor sQ = make_tensor(make_smem_ptr(ss.q[qb]), typename Traits::SmemLayoutQ{});
        Tensor tSrQ = thr_qk.partition_fragment_A(sQ);  // wgmma descriptors (MMA, MMA_M, MMA_K)
        full_q.wait((q_iter / uint32_t(p.q_stages)) & 1);
        float correction[kRows];
        Tensor tOrP = make_tensor<Element>(PLayout{});
        // Blocks this warpgroup computes: [lo, hi). Only the 192-row tile narrows them
        // (kWgBlockSkip: FwdTraits::kWgBlockSkipAvailable, variant bit kFwdVariantWgSkip; its own
        // kernel, since the extra bookkeeping costs the 160-register budget ~124 B of spills) to
        // the blocks its own 64 rows can see: there a causal diagonal block is often fully
        // masked for one or two of the three warpgroups, and past seqlen_q a warpgroup has no
        // rows at all. The blocks outside are
        // "passed" (skip_block): data waits, one ping-pong turn without an issue, the same barrier
        // arrivals -- so the protocol's counts do not change -- but no GEMM and no softmax (the
        // block would give these rows P = 0: O, max and sum stay bitwise the same). The GEMMs are
        // never issued conditionally: ptxas serialises every wgmma of a kernel that does.
        int lo = range.n_min, hi = range.n_max;
        int it = kv_iter;  // visit number of the next block (stage it % kStages)
        if constexpr (kWgBlockSkip) {
          const KeyBlockRange wr =
              key_block_range_rows<kBlockN>(rule, row0 + 64 * int(tid / 128), 64);
          lo = max(wr.n_min, range.n_min);
          hi = min(wr.n_max, range.n_max);
          if (hi <= lo) lo = hi = range.n_min;  // sees nothing: every block is passed
        }
        auto skip_block = [&](int n_block) {
          const int stage = it % kStages;
          const uint32_t phase = (it / kStages) & 1;
          full_k(stage).wait(phase);
          full_v(stage).wait(phase);
          pingpong.wait_turn();
          pingpong.pass_turn();
          empty_k(stage).arrive();
          empty_v(stage).arrive();
          if (n_block == range.n_min) empty_q.arrive();
          ++it;
        };
        if constexpr (kWgBlockSkip) {
          for (int n_block = range.n_max - 1; n_block >= hi; --n_block) skip_block(n_block);
          if (hi == lo) {  // nothing computed: the turn of the last P V is still owed
            pingpong.wait_turn();
            pingpong.pass_turn();
          }
        }

        if constexpr (Traits::kIntraWgOverlap) {
          // Block i's P V is issued together with block i+1's Q K^T; the softmax of block i+1 runs
          // while P V(i) is still in the tensor cores (wgmma groups retire in issue order, so
          // wait<1> = "S(i+1) ready", wait<0> = "O ready"). O is rescaled only after wait<0>.
          // Block number `it` (0-based, counted over all tiles of this CTA, in visiting order) uses
          // stage it % kStages, parity (it / kStages) & 1 -- the producer's sequence.
          // empty_q is arrived right after the tile's last Q K^T completes (the block n_min), so the
          // producer can load the next tile's Q during the last P V and the epilogue.
          if (lo < hi) {
            {
              const int stage0 = it % kStages;
              const uint32_t phase0 = (it / kStages) & 1;
              Tensor tSrS = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
              full_k(stage0).wait(phase0);
              pingpong.wait_turn();
              wgmma_gemm</*kZeroInit=*/true, /*kARegs=*/false>(mma_qk, tSrQ, tSrK(_, _, _, stage0), tSrS);
              pingpong.pass_turn();
              warpgroup_wait<0>();
              warpgroup_fence_operand(tSrS);
              empty_k(stage0).arrive();
              if (hi - 1 == range.n_min) empty_q.arrive();  // one-block tile: Q is done
              Tensor S = rowcol_view(tSrS);
              modify_and_mask(S, hi - 1);
              softmax.template scores_to_probs<kIlpSoftmax>(S, correction);  // O is still 0: no rescale needed
              dropout(S, hi - 1);
              convert_p(tSrS, tOrP);
            }
            int it_prev = it;
            for (int n_block = hi - 2; n_block >= lo; --n_block) {
              const int it_cur = it_prev + 1;
              const int stage = it_cur % kStages, stage_prev = it_prev % kStages;
              const uint32_t phase = (it_cur / kStages) & 1, phase_prev = (it_prev / kStages) & 1;
              Tensor tSrS = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
              full_k(stage).wait(phase);
              full_v(stage_prev).wait(phase_prev);  // both data waits before taking the turn
              pingpong.wait_turn();
              wgmma_gemm</*kZeroInit=*/true, /*kARegs=*/false>(mma_qk, tSrQ, tSrK(_, _, _, stage), tSrS);
              wgmma_gemm</*kZeroInit=*/false, /*kARegs=*/true>(mma_pv, tOrP, tOrV(_, _, _, stage_prev), tOrO);
              pingpong.pass_turn();
              warpgroup_wait<1>();  // S of this block is ready; P V of the previous may still run
              warpgroup_fence_operand(tSrS);
              empty_k(stage).arrive();
              if (n_block == range.n_min) empty_q.arrive();  // last Q K^T of the tile is done
              Tensor S = rowcol_view(tSrS);
              modify_and_mask(S, n_block);
              softmax.template scores_to_probs<kIlpSoftmax>(S, correction);
              dropout(S, n_block);
              if constexpr (kPinWait) {
                static_assert(kRows == 2);
                order_before_wgmma_wait(fminf(softmax.row_sum[0], softmax.row_sum[1]), &ss.full_q[0]);
              }
              warpgroup_wait<0>();  // P V done: O may be rescaled and tOrP overwritten
              warpgroup_fence_operand(tOrO);
              empty_v(stage_prev).arrive();
              OnlineSoftmax<kRows>::rescale(O, correction);
              convert_p(tSrS, tOrP);
              it_prev = it_cur;
            }
            const int stage_prev = it_prev % kStages;
            const uint32_t phase_prev = (it_prev / kStages) & 1;
            full_v(stage_prev).wait(phase_prev);
            pingpong.wait_turn();
            wgmma_gemm</*kZeroInit=*/false, /*kARegs=*/true>(mma_pv, tOrP, tOrV(_, _, _, stage_prev), tOrO);
            pingpong.pass_turn();
            warpgroup_wait<0>();
            warpgroup_fence_operand(tOrO);
            empty_v(stage_prev).arrive();
            it = it_prev + 1;
          }
          if constexpr (kWgBlockSkip) {
            for (int n_block = lo - 1; n_block >= range.n_min; --n_block) skip_block(n_block);
          }
          kv_iter = it;
        } else {
          // Plain order, one wgmma batch in flight at a time (kept to compare against).
          int stage = kv_iter % kStages;
          uint32_t phase = (kv_iter / kStages) & 1;
          kv_iter += range.n_max - range.n_min;
          for (int n_block = range.n_max - 1; n_block >= range.n_min; --n_block) {
            Tensor tSrS = partition_fragment_C(mma_qk, Shape<Int<kBlockM>, Int<kBlockN>>{});
            full_k(stage).wait(phase);
            wgmma_gemm</*kZeroInit=*/true, /*kARegs=*/false>(mma_qk, tSrQ, tSrK(_, _, _, stage), tSrS);
            warpgroup_wait<0>();
            warpgroup_fence_operand(tSrS);
            empty_k(stage).arrive();  // K stage may be refilled
            if (n_block == range.n_min) empty_q.arrive();  // last Q K^T of the tile is done
            Tensor S = rowcol_view(tSrS);
            modify_and_mask(S, n_block);
            softmax.template scores_to_probs<kIlpSoftmax>(S, correction);
            dropout(S, n_block);
            OnlineSoftmax<kRows>::rescale(O, correction);  // the previous P V was waited for
            convert_p(tSrS, tOrP);
            full_v(stage).wait(phase);
            wgmma_gemm</*kZeroInit=*/false, /*kARegs=*/true>(mma_pv, tOrP, tOrV(_, _, _, stage), tOrO);
            warpgroup_wait<0>();
            warpgroup_fence_operand(tOrO);
            empty_v(stage).arrive();  // V stage may be refilled
            if (++stage == kStages) { stage = 0; phase ^= 1; }
          }
        }
        ++q_iter;
      }

      float lse[kRows];
      softmax.finalize(O, lse, kModScores ? p.rp_dropout : 1.f);

      // ---- epilogue: O (2 adjacent columns per store) and LSE, rows >= seqlen_q skipped ----------
      // Varlen: row r of the sequence is row q_offset + r of out, and lse is (nheads, total_q).
      const bool varlen = p.cu_seqlens_q != nullptr;
      Element* out = p.out + (varlen ? int64_t(si.q_offset) * p.out_row_stride
                                     : bidb * p.out_batch_stride) + bidh * p.out_head_stride;
      float* lse_out = p.lse + (varlen ? int64_t(si.q_offset) : bidb * p.lse_batch_stride) +
                       bidh * p.lse_head_stride;
      // 16-byte stores (kWideStore, lean instantiation only: out 16-byte aligned, strides
      // multiples of 8 elements). A quad (lanes 4i..4i+3) holds rows r, r + 8 and, per 8-column
      // group g, columns 8g + 2q, 8g + 2q + 1 in lane q: per row and 4 consecutive groups a 4 x 4
      // matrix of 32-bit words M[lane][group]. Transposed within the quad (two xor-shuffle rounds,
      // each lane sends 2 words and receives 2), lane q holds group 4k + q whole: 8 adjacent
      // columns. A warp's store then writes 8 rows x 64 bytes instead of 8 rows x 16 bytes, a
      // quarter of the store instructions. All lanes shuffle; only the stores skip rows >= seqlen_q.
      bool stored_wide = false;
      if constexpr (kWideStore) {
        {
          stored_wide = true;
          const int q = tid % 4;
          const bool hi2 = (q & 2) != 0, hi1 = (q & 1) != 0;
          auto pack = [&](int r, int c) {
            cutlass::Array<Element, 2> pair;
            pair[0] = static_cast<Element>(O(r, c));
            pair[1] = static_cast<Element>(O(r, c + 1));
            return *reinterpret_cast<const uint32_t*>(&pair);
          };
          CUTE_UNROLL
          for (int r = 0; r < size<0>(O); ++r) {
            const int row = row0 + get<0>(cO(r, 0));
            CUTE_UNROLL
            for (int k = 0; k < kHeadDim / 32; ++k) {
              uint32_t a0 = pack(r, 8 * k), a1 = pack(r, 8 * k + 2), a2 = pack(r, 8 * k + 4),
                       a3 = pack(r, 8 * k + 6);
              // Round 1 (xor 2): lanes 0,1 trade their words 2,3 for lanes 2,3's words 0,1.
              uint32_t r0 = __shfl_xor_sync(0xffffffffu, hi2 ? a0 : a2, 2);
              uint32_t r1 = __shfl_xor_sync(0xffffffffu, hi2 ? a1 : a3, 2);
              if (hi2) { a0 = r0; a1 = r1; } else { a2 = r0; a3 = r1; }
              // Round 2 (xor 1): even lanes trade words 1,3 for odd lanes' words 0,2.
              r0 = __shfl_xor_sync(0xffffffffu, hi1 ? a0 : a1, 1);
              r1 = __shfl_xor_sync(0xffffffffu, hi1 ? a2 : a3, 1);
              if (hi1) { a0 = r0; a2 = r1; } else { a1 = r0; a3 = r1; }
              if (row < si.seqlen_q) {
                // This thread's first column in group 4k is 32k + 2q; its chunk starts at 32k + 8q.
                const int col = get<1>(cO(r, 8 * k)) - 2 * q + 8 * q;
                *reinterpret_cast<uint4*>(out + row * p.out_row_stride + col) =
                    make_uint4(a0, a1, a2, a3);
              }
            }
            if (tid % 4 == 0 && row < si.seqlen_q) lse_out[row] = lse[r];
          }
        }
      }
      if (!stored_wide) {
        CUTE_UNROLL
        for (int r = 0; r < size<0>(O); ++r) {
          const int row = row0 + get<0>(cO(r, 0));
          if (row >= si.seqlen_q) continue;
          Element* out_row = out + row * p.out_row_stride;
          CUTE_UNROLL
          for (int c = 0; c < size<1>(O); c += 2) {  // columns c, c+1 adjacent (mode 0,0 of C)
            const int col = get<1>(cO(r, c));
            cutlass::Array<Element, 2> pair;
            pair[0] = static_cast<Element>(O(r, c));
            pair[1] = static_cast<Element>(O(r, c + 1));
            *reinterpret_cast<cutlass::Array<Element, 2>*>(out_row + col) = pair;
          }
          if (tid % 4 == 0)
            lse_out[row] = lse[r];
        }
      }
    }  // tiles of the unit
  }  // units of this CTA
  pingpong.finish();
}

}  // namespace flash::sm90
