// Main backward kernel (FlashAttention-2 algorithm): one CTA per (key block, head, batch), or per
// (split, head, batch) in deterministic mode, where the CTA walks the key blocks split, split +
// splits, ... and owns dq slice `split`.
//
// Per key block j (K_j, V_j resident in smem, dK_j / dV_j fp32 in registers) and every query block
// i that can see it:
//   S  = Q_i K_j^T      dP = dO_i V_j^T                 (recomputed, registers)
//   P  = exp(score(S) - lse)  masked, dropped           -> sP   (16-bit)
//   dS = P * (dP_kept - D) * softcap'                   -> sdS  (16-bit)
//   dV += P_dropped^T dO_i     dK += dS^T Q_i           (registers)
//   dQ_i += dS K_j                                      -> fp32 dq_accum (atomicAdd / own slice)
// dK is scaled by softmax_scale at the end; dQ by the convert kernel.
//
// Order inside one query block (3 barriers), with kQStages == 2 (Q double-buffered):
//   [barrier] issue Q_{i+1} (other buffer) | S, dP | P, dS -> smem | [barrier] dV | [barrier]
//   issue dO_{i+1} | dQ | dK | wait
// so Q_{i+1} streams in during the whole iteration and dO_{i+1} during dQ and dK.
// With kQStages == 1 (d = 224 / 256 where smem < 188 KB, e.g. A100): ... | dV | dK | [barrier] issue
// Q_{i+1}, dO_{i+1} | dQ | wait.
// With kDoStages == 2 (experiment, BwdConfigDo2): dO_{i+1} is issued with Q_{i+1} at the top into the
// other dO buffer and the barrier after dV is dropped: [barrier] issue Q_{i+1}, dO_{i+1} | S, dP |
// P, dS -> smem | [barrier] dV | dQ | dK | wait.
#pragma once

#include <climits>
#include <cmath>

#include "common/mask.h"
#include "common/philox.h"
#include "cuda/sm80/bwd_config.cuh"
#include "cuda/sm80/bwd_primitives.cuh"
#include "cuda/sm80/bwd_workspace.cuh"

namespace flash::sm80::bwd {

// Floor / ceiling of a / b for b > 0 and any sign of a.
__device__ __forceinline__ int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
__device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// Flags of the main kernel (defaults per head dim and the FLASH_SM80_BWD_VARIANT switch: bwd_launch.cuh).
// Same arithmetic, same results; fewer instructions per warp and query block:
// kBwdPlainRange: plain_block is a range test against [m_plain_lo, m_plain_hi], solved once per key
//   block from the same linear inequalities (was ~48 SASS instructions of 64-bit compares).
// kBwdRedFast: the dQ reductions of a query block whose rows all exist and whose head dim is the
//   bucket's run unpredicated (sm_90; the predicate of each red made ptxas emit a branch region per
//   reduction, ~5 instructions each: d128 ~40 -> ~15 per m-tile).
// kBwdFusedSdP: S = Q K^T and dP = dO V^T in one k loop (twice the independent accumulators per
//   k-step; the mma sequence of each accumulator is unchanged).
constexpr int kBwdPlainRange = 1, kBwdRedFast = 2, kBwdFusedSdP = 4;

// kLean: the launcher guarantees no softcap, ALiBi or dropout, so those predicates are compile-time
// false and the general element-wise path is dead code: smaller kernel (instruction-cache misses
// were ~2 % of the stall samples) and a register allocation for the common path alone.
template <typename Cfg, bool kLean = false, int kVariant = 0>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks)
    bwd_main_kernel(const BwdParams p, const BwdWorkspace ws, const BwdExtra ex) {
  using Element = typename Cfg::Element;
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kHeadDim = Cfg::kHeadDim;
  constexpr int kPitchD = Cfg::kPitchD, kPitchN = Cfg::kPitchN, kThreads = Cfg::kThreads;
  constexpr int MT_S = Cfg::kMtS, NT_S = Cfg::kNtS;
  constexpr int MT_KV = Cfg::kMtKV, NT_KV = Cfg::kNtKV;
  constexpr int MT_Q = Cfg::kMtQ, NT_Q = Cfg::kNtQ;
  constexpr bool kQ2 = Cfg::kQStages == 2;
  constexpr bool kDO2 = Cfg::kDoStages == 2;
  constexpr float kLog2e = 1.4426950408889634f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kVecAtomics = true;  // red.global.add.v2.f32 exists from sm_90 on
#else
  constexpr bool kVecAtomics = false;
#endif

  extern __shared__ __align__(16) unsigned char smem_raw[];
  Element* smem = reinterpret_cast<Element*>(smem_raw);
  Element* sK = smem + Cfg::kOffK;
  Element* sV = smem + Cfg::kOffV;
  Element* sQ = smem + Cfg::kOffQ;  // Cfg::kQStages buffers
  Element* sdO = smem + Cfg::kOffDO;  // Cfg::kDoStages buffers
  Element* sP = smem + Cfg::kOffP;
  Element* sdS = smem + Cfg::kOffDS;
  float* sLse = reinterpret_cast<float*>(smem + Cfg::kElems);  // lse * log2(e), +inf for absent rows
  float* sD = sLse + kBlockM;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, t = lane % 4;
  const int h = blockIdx.y, b = blockIdx.z;
  const SeqInfo si(p, b);
  const int hk = h / (p.nheads / p.nheads_k);
  const MaskRule rule{si.sq, si.sk_used, p.window_left, p.window_right};
  const bool softcap_on = !kLean && p.softcap > 0.f;
  const bool has_alibi = !kLean && p.alibi_slopes != nullptr;
  const bool dropout_on = !kLean && ex.dropout;
  const bool has_mods = softcap_on || has_alibi;
  const float inv_cap = softcap_on ? 1.f / p.softcap : 0.f;
  // Without modifiers the scale folds into the exp2 FFMA; with them x is the natural-log score.
  const float x_scale_log2 = has_mods ? kLog2e : p.softmax_scale * kLog2e;
  const float slope = has_alibi ? p.alibi_slopes[b * p.alibi_batch_stride + h] : 0.f;
  const uint32_t bh = static_cast<uint32_t>(b * p.nheads + h);

  // Tensor bases are formed from the (constant-bank) parameters where they are used, and the dropout
  // seed is read there too: nothing of them stays live in registers across the GEMMs.
  auto q = [&] { return static_cast<const Element*>(p.q) + h * p.q_head_stride; };
  auto k = [&] { return static_cast<const Element*>(p.k) + hk * p.k_head_stride; };
  auto v = [&] { return static_cast<const Element*>(p.v) + hk * p.v_head_stride; };
  auto dout = [&] { return static_cast<const Element*>(p.dout) + h * p.dout_head_stride; };
  float* dq_acc = ws.dq_accum;
  if (p.deterministic) dq_acc += static_cast<int64_t>(blockIdx.x) * ws.rows_q * p.nheads * p.head_dim;

  // Warp coordinates of the three tilings.
  const int ws_m = warp % Cfg::kWarpsMS, ws_n = warp / Cfg::kWarpsMS;       // S / dP
  const int wkv_n = warp % Cfg::kWarpsNKV, wkv_d = warp / Cfg::kWarpsNKV;  // dK / dV
  const int wq_m = warp % Cfg::kWarpsMQ, wq_d = warp / Cfg::kWarpsMQ;      // dQ

  // cp.async loads of Q_i into Q buffer `stage` and of dO_i (the caller commits).
  auto issue_q = [&](int m_block, int stage) {
    const int m0 = m_block * kBlockM;
    load_tile_async<kBlockM, kHeadDim, kPitchD, kThreads>(sQ + stage * kBlockM * kPitchD,
                                                          q() + si.q_offset(p, p.q_batch_stride, p.q_row_stride, b, m0),
                                                          p.q_row_stride, si.sq - m0, p.head_dim, tid);
  };
  auto issue_do = [&](int m_block, int stage) {
    const int m0 = m_block * kBlockM;
    load_tile_async<kBlockM, kHeadDim, kPitchD, kThreads>(
        sdO + stage * kBlockM * kPitchD, dout() + si.q_offset(p, p.dout_batch_stride, p.dout_row_stride, b, m0), p.dout_row_stride, si.sq - m0,
        p.head_dim, tid);
  };
  // This thread's lse / D row (threads < kBlockM) into registers; stored with store_row_stats later,
  // so the global-load latency hides under GEMMs instead of stalling warps right after a barrier.
  auto load_row_stats = [&](int m_block, float& lse_r, float& d_r) {
    lse_r = INFINITY;
    d_r = 0.f;
    const int i = m_block * kBlockM + tid;
    if (tid < kBlockM && i < si.sq) {
      lse_r = p.softmax_lse[si.lse_offset(p, b, h, i)];
      d_r = ws.d[h * ws.rows_q + si.q_row0 + i];
    }
  };
  // sLse holds lse * log2(e), +inf for absent rows (rows past sq, or rows that see no key).
  auto store_row_stats = [&](float lse_r, float d_r) {
    if (tid < kBlockM) {
      sLse[tid] = lse_r == INFINITY ? INFINITY : lse_r * kLog2e;
      sD[tid] = d_r;
    }
  };

  const int n_blocks = (si.sk + kBlockN - 1) / kBlockN;
  const int n_stride = p.deterministic ? gridDim.x : n_blocks + 1;
  for (int n_block = blockIdx.x; n_block < n_blocks; n_block += n_stride) {
    __syncthreads();  // every warp is done with the previous key block's shared memory
    const int n0 = n_block * kBlockN;

    // Query rows that can see some key of [n0, n_last] (see MaskRule::visible).
    int m_begin = 0, m_end = 0;
    if (n0 < si.sk_used && si.sq > 0) {
      const int n_last = min(n0 + kBlockN, si.sk_used) - 1;
      // int64: windows may be as large as INT_MAX.
      int64_t i_lo = p.window_right >= 0 ? int64_t{n0} - si.sk_used + si.sq - p.window_right : 0;
      int64_t i_hi = p.window_left >= 0 ? int64_t{n_last} - si.sk_used + si.sq + p.window_left : si.sq - 1;
      i_lo = i_lo < 0 ? 0 : i_lo;
      i_hi = i_hi > si.sq - 1 ? si.sq - 1 : i_hi;
      if (i_lo <= i_hi) {
        m_begin = static_cast<int>(i_lo) / kBlockM;
        m_end = static_cast<int>(i_hi) / kBlockM + 1;
      }
    }

    // Keys past seqused_k are zero-filled: they may hold garbage, and dS (0 there) multiplies K.
    const int valid_keys = max(min(kBlockN, si.sk_used - n0), 0);
    load_tile_async<kBlockN, kHeadDim, kPitchD, kThreads>(
        sK, k() + si.k_offset(p, p.k_batch_stride, p.k_row_stride, b, n0), p.k_row_stride, valid_keys, p.head_dim, tid);
    load_tile_async<kBlockN, kHeadDim, kPitchD, kThreads>(
        sV, v() + si.k_offset(p, p.v_batch_stride, p.v_row_stride, b, n0), p.v_row_stride, valid_keys, p.head_dim, tid);
    if (m_begin < m_end) {
      issue_q(m_begin, 0);
      issue_do(m_begin, 0);
      float lse_r, d_r;
      load_row_stats(m_begin, lse_r, d_r);
      store_row_stats(lse_r, d_r);
    }
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();

    float acc_dk[MT_KV][NT_KV][4], acc_dv[MT_KV][NT_KV][4];
    zero_acc(acc_dk);
    zero_acc(acc_dv);

    // kBwdPlainRange: the query blocks whose plain_block test (below) holds form the range
    // [m_plain_lo, m_plain_hi]: each condition is linear in m0 = m_block * kBlockM.
    int m_plain_lo = 1, m_plain_hi = 0;  // empty
    if constexpr ((kVariant & kBwdPlainRange) != 0) {
      if (!has_mods && !dropout_on && n0 + kBlockN <= si.sk_used) {
        // m0 + kBlockM <= sq
        int64_t hi = floor_div(int64_t{si.sq} - kBlockM, kBlockM), lo = 0;
        // n0 - (m0 + kBlockM - 1) - sk_used + sq >= -window_left
        if (p.window_left >= 0)
          hi = min(hi, floor_div(int64_t{n0} - (kBlockM - 1) - si.sk_used + si.sq + p.window_left, kBlockM));
        // n0 + kBlockN - 1 - m0 - sk_used + sq <= window_right
        if (p.window_right >= 0)
          lo = max(lo, ceil_div(int64_t{n0} + kBlockN - 1 - si.sk_used + si.sq - p.window_right, kBlockM));
        if (lo <= hi && hi >= 0 && lo <= INT_MAX) {
          m_plain_lo = static_cast<int>(lo);
          m_plain_hi = static_cast<int>(min(hi, int64_t{INT_MAX}));
        }
      }
    }

    for (int m_block = m_begin; m_block < m_end; ++m_block) {
      const int m0 = m_block * kBlockM;
      const int stage = kQ2 ? (m_block - m_begin) & 1 : 0;
      const Element* sQc = sQ + stage * kBlockM * kPitchD;
      const Element* sdOc = sdO + (kDO2 ? stage : 0) * kBlockM * kPitchD;
      const bool has_next = m_block + 1 < m_end;
      if constexpr (kQ2) {
        // The other Q buffer was last read by the previous iteration's dK GEMM, which every warp
        // finished before the barrier that ended that iteration.
        if (has_next) {
          issue_q(m_block + 1, stage ^ 1);
          // (kDO2) The other dO buffer was last read by the previous iteration's dP / dV GEMMs.
          if constexpr (kDO2) issue_do(m_block + 1, stage ^ 1);
          cp_async_commit();
        }
      }
      // Interior blocks (all rows < sq, all keys < seqused_k, the window hides nothing) without
      // softcap / ALiBi / dropout skip the per-element visibility test and the modifier code.
      bool plain_block;
      if constexpr ((kVariant & kBwdPlainRange) != 0) {
        plain_block = m_block >= m_plain_lo && m_block <= m_plain_hi;
      } else {
        plain_block = !has_mods && !dropout_on && m0 + kBlockM <= si.sq && n0 + kBlockN <= si.sk_used;
        if (plain_block && p.window_left >= 0)  // smallest diag offset j - (i + sk - sq) of the block
          plain_block = int64_t{n0} - (m0 + kBlockM - 1) - si.sk_used + si.sq >= -int64_t{p.window_left};
        if (plain_block && p.window_right >= 0)  // largest one
          plain_block = int64_t{n0} + kBlockN - 1 - m0 - si.sk_used + si.sq <= int64_t{p.window_right};
      }

      // ---- S = Q K^T and dP = dO V^T for this warp's kTileMS x kTileNS tile ----
      float acc_s[MT_S][NT_S][4], acc_dp[MT_S][NT_S][4];
      zero_acc(acc_s);
      zero_acc(acc_dp);
      const int row_s = ws_m * Cfg::kTileMS, col_s = ws_n * Cfg::kTileNS;
      if constexpr ((kVariant & kBwdFusedSdP) != 0) {
        // One k loop for both GEMMs: each accumulator gets the same mma sequence as below.
#pragma unroll
        for (int ks = 0; ks < kHeadDim / 16; ++ks) {
          warp_gemm_kstep<Element, MT_S, NT_S, false, false>(acc_s, sQc + row_s * kPitchD, kPitchD,
                                                             sK + col_s * kPitchD, kPitchD, lane, ks * 16);
          warp_gemm_kstep<Element, MT_S, NT_S, false, false>(acc_dp, sdOc + row_s * kPitchD, kPitchD,
                                                             sV + col_s * kPitchD, kPitchD, lane, ks * 16);
        }
      } else {
        warp_gemm<Element, MT_S, NT_S, kHeadDim / 16, false, false, Cfg::kSUnroll>(acc_s, sQc + row_s * kPitchD,
                                                                   kPitchD, sK + col_s * kPitchD, kPitchD, lane);
        warp_gemm<Element, MT_S, NT_S, kHeadDim / 16, false, false, Cfg::kSUnroll>(acc_dp, sdOc + row_s * kPitchD,
                                                                   kPitchD, sV + col_s * kPitchD, kPitchD, lane);
      }

      // ---- P and dS, element-wise on the C fragments: rows (r, r+8), cols (c, c+1) ----
      // Rows of this thread: r_loc(mt) = ws_m * kTileMS + 16 mt + g (+ 8). Read after the GEMMs:
      // nothing extra is live across them (ptxas -v: each register there counts).
      float lse2[MT_S][2], dsum[MT_S][2];
#pragma unroll
      for (int mt = 0; mt < MT_S; ++mt) {
        const int r = row_s + mt * 16 + g;
        lse2[mt][0] = sLse[r];
        lse2[mt][1] = sLse[r + 8];
        dsum[mt][0] = sD[r];
        dsum[mt][1] = sD[r + 8];
      }
      auto store_p_ds = [&](int r_loc, int c_loc, const float (&pv)[4], const float (&dsv)[4]) {
        *reinterpret_cast<uint32_t*>(sP + r_loc * kPitchN + c_loc) = pack2<Element>(pv[0], pv[1]);
        *reinterpret_cast<uint32_t*>(sP + (r_loc + 8) * kPitchN + c_loc) = pack2<Element>(pv[2], pv[3]);
        *reinterpret_cast<uint32_t*>(sdS + r_loc * kPitchN + c_loc) = pack2<Element>(dsv[0], dsv[1]);
        *reinterpret_cast<uint32_t*>(sdS + (r_loc + 8) * kPitchN + c_loc) = pack2<Element>(dsv[2], dsv[3]);
      };
      if (Cfg::kPlainPath && plain_block) {
        // Every (i, j) of the block is visible and no modifier / dropout is on. Every row then
        // sees a key, so its lse is finite (the +inf test of the general path is always true) and
        // the general path reduces to exactly these operations: bitwise equal P and dS. exp2 is
        // written as the instruction the general path's exp2f becomes under --use_fast_math
        // (ex2.approx.ftz.f32): as identical code, ptxas/LLVM merged this branch into the general
        // one, which then ran the visibility / modifier / dropout tests for every element.
#pragma unroll
        for (int mt = 0; mt < MT_S; ++mt) {
          const int r_loc = row_s + mt * 16 + g;
#pragma unroll
          for (int nt = 0; nt < NT_S; ++nt) {
            const int c_loc = col_s + nt * 8 + 2 * t;
            float pv[4], dsv[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int ri = e / 2;
              pv[e] = ex2_approx(fmaf(acc_s[mt][nt][e], x_scale_log2, -lse2[mt][ri]));
              dsv[e] = pv[e] * (acc_dp[mt][nt][e] - dsum[mt][ri]);
            }
            store_p_ds(r_loc, c_loc, pv, dsv);
          }
        }
      } else if (!has_mods && !dropout_on) {
        // Boundary blocks (causal / window diagonal, sequence ends) without modifiers or dropout:
        // the general path's operations for that case, branch-free. An invisible element gets
        // ex2(-inf) = +0 and dS = +0, as the general path's zeros. Visibility is MaskRule::visible
        // without short-circuits (j >= 0 always; rows past sq have lse = +inf):
        // j < sk_used and -window_left <= j - (i + sk_used - sq) <= window_right.
        const int diag_shift = si.sk_used - si.sq;
        const int win_lo = p.window_left >= 0 ? -p.window_left : INT_MIN;
        const int win_hi = p.window_right >= 0 ? p.window_right : INT_MAX;
#pragma unroll
        for (int mt = 0; mt < MT_S; ++mt) {
          const int r_loc = row_s + mt * 16 + g;
#pragma unroll
          for (int nt = 0; nt < NT_S; ++nt) {
            const int c_loc = col_s + nt * 8 + 2 * t;
            float pv[4], dsv[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int ri = e / 2;
              const int i = m0 + r_loc + 8 * ri, j = n0 + c_loc + (e & 1);
              const int d = j - (i + diag_shift);
              const bool vis = (lse2[mt][ri] != INFINITY) & (j < si.sk_used) & (d >= win_lo) & (d <= win_hi);
              pv[e] = ex2_approx(vis ? fmaf(acc_s[mt][nt][e], x_scale_log2, -lse2[mt][ri]) : -INFINITY);
              dsv[e] = vis ? pv[e] * (acc_dp[mt][nt][e] - dsum[mt][ri]) : 0.f;
            }
            store_p_ds(r_loc, c_loc, pv, dsv);
          }
        }
      } else {
#pragma unroll
        for (int mt = 0; mt < MT_S; ++mt) {
          const int r_loc = row_s + mt * 16 + g;
#pragma unroll
          for (int nt = 0; nt < NT_S; ++nt) {
            const int c_loc = col_s + nt * 8 + 2 * t;
            const int j0 = n0 + c_loc;
            Philox4 bits{0, 0, 0, 0};
            // One Philox call per 2x2 group: words x,y,z,w = (r,c) (r,c+1) (r+8,c) (r+8,c+1).
            if (dropout_on)
              bits = dropout_group_bits(p.rng_state[0], p.rng_state[1], bh, static_cast<uint32_t>(m0 + r_loc),
                                        static_cast<uint32_t>(j0));
            float pv[4], dsv[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int ri = e / 2;
              const int i = m0 + r_loc + 8 * ri, j = j0 + (e & 1);
              float p_val = 0.f, ds_val = 0.f;
              if (lse2[mt][ri] != INFINITY && rule.visible(i, j)) {
                // Same arithmetic as the forward (common/sm80_frag_mask.cuh), so P matches its lse.
                float x = acc_s[mt][nt][e], sc = 0.f;
                if (has_mods) {
                  x *= p.softmax_scale;
                  if (softcap_on) x = sc = p.softcap * tanhf(x * inv_cap);
                  if (has_alibi) x += alibi_bias(slope, rule, i, j);
                }
                const float prob = exp2f(fmaf(x, x_scale_log2, -lse2[mt][ri]));
                float dp = acc_dp[mt][nt][e];
                float p_keep = prob;
                if (dropout_on) {
                  const bool keep = dropout_word(bits, e) < ex.keep_threshold;
                  p_keep = keep ? prob * ex.rp_keep : 0.f;
                  dp = keep ? dp * ex.rp_keep : 0.f;
                }
                ds_val = prob * (dp - dsum[mt][ri]);
                if (softcap_on) {
                  const float th = sc * inv_cap;  // tanh(s / c)
                  ds_val *= 1.f - th * th;
                }
                p_val = p_keep;
              }
              pv[e] = p_val;
              dsv[e] = ds_val;
            }
            store_p_ds(r_loc, c_loc, pv, dsv);
          }
        }
      }  // plain_block
      __syncthreads();  // sP, sdS complete

      // ---- dV += P^T dO, dK += dS^T Q (A read transposed from [m][n], B transposed from [m][d]) ----
      const int row_kv = wkv_n * Cfg::kTileNKV, col_kv = wkv_d * Cfg::kTileDKV;
      auto gemm_dk = [&] {
        warp_gemm<Element, MT_KV, NT_KV, kBlockM / 16, true, true, Cfg::kKvUnroll>(acc_dk, sdS + row_kv, kPitchN,
                                                                                  sQc + col_kv, kPitchD, lane);
      };
      warp_gemm<Element, MT_KV, NT_KV, kBlockM / 16, true, true, Cfg::kKvUnroll>(acc_dv, sP + row_kv, kPitchN,
                                                                                sdOc + col_kv, kPitchD, lane);
      if constexpr (!kQ2) gemm_dk();
      // sdO (and with one Q buffer sQ, sLse, sD) free: prefetch under dQ (and dK). With two dO
      // buffers the next dO was issued at the top and nothing here needs every warp's progress.
      if constexpr (!kDO2) __syncthreads();

      // lse / D of the next query block: global loads now, stored to smem at the end of the iteration.
      float next_lse = INFINITY, next_d = 0.f;
      if (has_next) {
        if constexpr (!kDO2) {
          if constexpr (!kQ2) issue_q(m_block + 1, 0);
          issue_do(m_block + 1, 0);
          cp_async_commit();
        }
        load_row_stats(m_block + 1, next_lse, next_d);
      }

      // ---- dQ_i += dS K_j, in kDqChunk-column pieces (B = K read transposed from [n][d]) ----
      const int row_q = wq_m * Cfg::kTileMQ;
#pragma unroll 1
      for (int c0 = 0; c0 < Cfg::kTileDQ; c0 += Cfg::kDqChunk) {
        const int col0 = wq_d * Cfg::kTileDQ + c0;
        if (col0 >= p.head_dim) break;  // warp-uniform: columns past the real head dim are zero
        float acc_dq[MT_Q][NT_Q][4];
        zero_acc(acc_dq);
        warp_gemm<Element, MT_Q, NT_Q, kBlockN / 16, false, true, Cfg::kQUnroll>(acc_dq, sdS + row_q * kPitchN, kPitchN, sK + col0,
                                                                  kPitchD, lane);
        // Vector layout (deterministic path): lanes t and t^1 swap halves so that each
        // holds 4 consecutive columns of one row: even t row g, odd t row g + 8, both columns
        // 4*(t/2)..+3 of the n8 tile. One 16-byte access per lane and tile: 16 full 32-byte
        // sectors per warp instruction instead of 4 x 8 half-used.
        const bool odd = (t & 1) != 0;
#pragma unroll
        for (int mt = 0; mt < MT_Q; ++mt) {
          const int i4 = m0 + row_q + mt * 16 + g + (odd ? 8 : 0);
          auto dq_vec_ptr = [&](int nt) -> float4* {
            const int c4 = col0 + nt * 8 + 4 * (t >> 1);  // head_dim % 8 == 0: all 4 in or all out
            if (c4 >= p.head_dim || i4 >= si.sq) return nullptr;
            // dq_accum is 256-byte aligned and head_dim % 8 == 0: the address is 16-byte aligned.
            return reinterpret_cast<float4*>(dq_acc + ((si.q_row0 + i4) * p.nheads + h) * p.head_dim + c4);
          };
          if (p.deterministic) {
            float4 v4[NT_Q];
#pragma unroll
            for (int nt = 0; nt < NT_Q; ++nt) {
              const float send0 = odd ? acc_dq[mt][nt][0] : acc_dq[mt][nt][2];
              const float send1 = odd ? acc_dq[mt][nt][1] : acc_dq[mt][nt][3];
              const float recv0 = __shfl_xor_sync(0xffffffffu, send0, 1);
              const float recv1 = __shfl_xor_sync(0xffffffffu, send1, 1);
              v4[nt] = odd ? make_float4(recv0, recv1, acc_dq[mt][nt][2], acc_dq[mt][nt][3])
                           : make_float4(acc_dq[mt][nt][0], acc_dq[mt][nt][1], recv0, recv1);
            }
            // This lane is the only reader / writer of these elements in its slice (the previous
            // key block's store is its own, earlier in program order): ordered and exact. All
            // loads of the m-tile first (one L2 round trip), then the stores.
            float4 old[NT_Q];
#pragma unroll
            for (int nt = 0; nt < NT_Q; ++nt) {
              const float4* src = dq_vec_ptr(nt);
              old[nt] = src != nullptr ? *src : make_float4(0.f, 0.f, 0.f, 0.f);
            }
#pragma unroll
            for (int nt = 0; nt < NT_Q; ++nt) {
              float4* dst = dq_vec_ptr(nt);
              if (dst == nullptr) continue;
              *dst = make_float4(old[nt].x + v4[nt].x, old[nt].y + v4[nt].y, old[nt].z + v4[nt].z,
                                 old[nt].w + v4[nt].w);
            }
          } else if constexpr (kVecAtomics) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
            // Fire-and-forget vector reductions of the C fragment pairs (c0, c1) / (c2, c3) as they
            // are: 4 lanes of a row cover 8 consecutive floats (one full 32-byte sector per row and
            // instruction), and each pair is already an aligned register pair, so no shuffles and no
            // copies. (v4 after a lane-pair shuffle needed the values copied into one aligned
            // register quad per instruction, and every copy waited for the previous reduction to
            // read that quad: ~10 % of the kernel's time stalled there, ncu source counters.)
            // One 64-bit base per m-tile, 32-bit offsets, and the bounds as the reduction's own
            // predicate: written with `continue`, every reduction became a branch around 64-bit
            // address arithmetic (~35 instructions per row in the SASS).
            const int i_base = m0 + row_q + mt * 16 + g;
            const int64_t dq_row_stride = static_cast<int64_t>(p.nheads) * p.head_dim;
            float* tile = dq_acc + (si.q_row0 + i_base) * dq_row_stride + h * p.head_dim + col0 + 2 * t;
            if ((kVariant & kBwdRedFast) != 0 && m0 + kBlockM <= si.sq && p.head_dim == kHeadDim) {
              // Every row and column of the block exists (uniform over the CTA): no predicates.
#pragma unroll
              for (int ri = 0; ri < 2; ++ri) {
                float* row = tile + 8 * ri * dq_row_stride;
#pragma unroll
                for (int nt = 0; nt < NT_Q; ++nt)
                  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(row + nt * 8),
                               "f"(acc_dq[mt][nt][2 * ri]), "f"(acc_dq[mt][nt][2 * ri + 1]));
              }
              continue;
            }
#pragma unroll
            for (int ri = 0; ri < 2; ++ri) {
              const bool row_ok = i_base + 8 * ri < si.sq;
              float* row = tile + 8 * ri * dq_row_stride;
#pragma unroll
              for (int nt = 0; nt < NT_Q; ++nt) {
                // c even and head_dim % 8 == 0: 8-byte aligned, the pair is in or out as a whole.
                const bool ok = row_ok && col0 + nt * 8 + 2 * t < p.head_dim;
                asm volatile(
                    "{\n .reg .pred p;\n setp.ne.b32 p, %3, 0;\n @p red.global.add.v2.f32 [%0], {%1, %2};\n}\n" ::"l"(
                        row + nt * 8),
                    "f"(acc_dq[mt][nt][2 * ri]), "f"(acc_dq[mt][nt][2 * ri + 1]), "r"(static_cast<int>(ok)));
              }
            }
#endif
          } else {
            // sm_80..sm_89 default mode: no vector float atomics there, scalar atomicAdd per element.
#pragma unroll
            for (int nt = 0; nt < NT_Q; ++nt) {
              const int c = col0 + nt * 8 + 2 * t;
              if (c >= p.head_dim) continue;
#pragma unroll
              for (int ri = 0; ri < 2; ++ri) {
                const int i = m0 + row_q + mt * 16 + g + 8 * ri;
                if (i >= si.sq) continue;
                float* dst = dq_acc + ((si.q_row0 + i) * p.nheads + h) * p.head_dim + c;
                atomicAdd(dst, acc_dq[mt][nt][2 * ri]);
                atomicAdd(dst + 1, acc_dq[mt][nt][2 * ri + 1]);
              }
            }
          }
        }
      }
      if constexpr (kQ2) gemm_dk();
      // sLse / sD were last read at the top of this iteration (before the P / dS barrier).
      if (has_next) store_row_stats(next_lse, next_d);
      cp_async_wait_all();
      __syncthreads();
    }

    // ---- write dK (scaled) and dV: rows of keys in [0, sk); keys past seqused_k are zeros ----
    const bool gqa = p.nheads != p.nheads_k;
#pragma unroll
    for (int mt = 0; mt < MT_KV; ++mt) {
#pragma unroll
      for (int nt = 0; nt < NT_KV; ++nt) {
        const int c = wkv_d * Cfg::kTileDKV + nt * 8 + 2 * t;
        if (c >= p.head_dim) continue;
#pragma unroll
        for (int ri = 0; ri < 2; ++ri) {
          const int j = n0 + wkv_n * Cfg::kTileNKV + mt * 16 + g + 8 * ri;
          if (j >= si.sk) continue;
          const float dk0 = acc_dk[mt][nt][2 * ri] * p.softmax_scale;
          const float dk1 = acc_dk[mt][nt][2 * ri + 1] * p.softmax_scale;
          const float dv0 = acc_dv[mt][nt][2 * ri], dv1 = acc_dv[mt][nt][2 * ri + 1];
          if (gqa) {
            const int64_t e = ((si.k_row0 + j) * p.nheads + h) * p.head_dim + c;
            *reinterpret_cast<float2*>(ws.dk_exp + e) = make_float2(dk0, dk1);
            *reinterpret_cast<float2*>(ws.dv_exp + e) = make_float2(dv0, dv1);
          } else {
            auto* dk = static_cast<Element*>(p.dk) + si.k_offset(p, p.dk_batch_stride, p.dk_row_stride, b, j) +
                       h * p.dk_head_stride + c;
            auto* dv = static_cast<Element*>(p.dv) + si.k_offset(p, p.dv_batch_stride, p.dv_row_stride, b, j) +
                       h * p.dv_head_stride + c;
            *reinterpret_cast<uint32_t*>(dk) = pack2<Element>(dk0, dk1);
            *reinterpret_cast<uint32_t*>(dv) = pack2<Element>(dv0, dv1);
          }
        }
      }
    }
  }
}

}  // namespace flash::sm80::bwd
