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
#pragma once

#include <cmath>

#include "common/mask.h"
#include "common/philox.h"
#include "cuda/sm80/bwd_config.cuh"
#include "cuda/sm80/bwd_primitives.cuh"
#include "cuda/sm80/bwd_workspace.cuh"

namespace flash::sm80::bwd {

template <typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    bwd_main_kernel(const BwdParams p, const BwdWorkspace ws, const BwdExtra ex) {
  using Element = typename Cfg::Element;
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kHeadDim = Cfg::kHeadDim;
  constexpr int kPitchD = Cfg::kPitchD, kPitchN = Cfg::kPitchN, kThreads = Cfg::kThreads;
  constexpr int NT_S = Cfg::kPassNS / 8, NT_KV = Cfg::kTileDKV / 8, NT_Q = Cfg::kDqChunk / 8;
  constexpr float kLog2e = 1.4426950408889634f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kVec4Atomics = true;  // red.global.add.v4.f32 exists from sm_90 on
#else
  constexpr bool kVec4Atomics = false;
#endif

  extern __shared__ __align__(16) unsigned char smem_raw[];
  Element* smem = reinterpret_cast<Element*>(smem_raw);
  Element* sK = smem + Cfg::kOffK;
  Element* sV = smem + Cfg::kOffV;
  Element* sQ = smem + Cfg::kOffQ;
  Element* sdO = smem + Cfg::kOffDO;
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
  const bool softcap_on = p.softcap > 0.f;
  const bool has_alibi = p.alibi_slopes != nullptr;
  const bool has_mods = softcap_on || has_alibi;
  const float inv_cap = softcap_on ? 1.f / p.softcap : 0.f;
  // Without modifiers the scale folds into the exp2 FFMA; with them x is the natural-log score.
  const float x_scale_log2 = has_mods ? kLog2e : p.softmax_scale * kLog2e;
  const float slope = has_alibi ? p.alibi_slopes[b * p.alibi_batch_stride + h] : 0.f;
  uint64_t seed = 0, rng_offset = 0;
  if (ex.dropout) {
    seed = p.rng_state[0];
    rng_offset = p.rng_state[1];
  }
  const uint32_t bh = static_cast<uint32_t>(b * p.nheads + h);

  const auto* q = static_cast<const Element*>(p.q) + h * p.q_head_stride;
  const auto* k = static_cast<const Element*>(p.k) + hk * p.k_head_stride;
  const auto* v = static_cast<const Element*>(p.v) + hk * p.v_head_stride;
  const auto* dout = static_cast<const Element*>(p.dout) + h * p.dout_head_stride;
  float* dq_acc = ws.dq_accum;
  if (p.deterministic) dq_acc += static_cast<int64_t>(blockIdx.x) * ws.rows_q * p.nheads * p.head_dim;

  // Warp coordinates of the three tilings.
  const int wm = warp % Cfg::kWarpsM, wn = warp / Cfg::kWarpsM;         // S / dP, and dQ rows
  const int wkv_n = warp % Cfg::kWarpsNKV, wkv_d = warp / Cfg::kWarpsNKV;  // dK / dV

  // Issues the cp.async loads of Q_i, dO_i and reads this thread's lse / D row (threads < kBlockM)
  // into registers. The caller stores them with store_row_stats later, so the global-load latency
  // hides under the dQ GEMM instead of stalling two warps right after the barrier.
  static_assert(kBlockM <= kThreads, "one lse / D row per thread");
  auto issue_query_block = [&](int m_block, float& lse_r, float& d_r) {
    const int m0 = m_block * kBlockM;
    load_tile_async<kBlockM, kHeadDim, kPitchD, kThreads>(
        sQ, q + si.q_offset(p, p.q_batch_stride, p.q_row_stride, b, m0), p.q_row_stride, si.sq - m0, p.head_dim, tid);
    load_tile_async<kBlockM, kHeadDim, kPitchD, kThreads>(
        sdO, dout + si.q_offset(p, p.dout_batch_stride, p.dout_row_stride, b, m0), p.dout_row_stride, si.sq - m0,
        p.head_dim, tid);
    cp_async_commit();
    lse_r = INFINITY;
    d_r = 0.f;
    const int i = m0 + tid;
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
        sK, k + si.k_offset(p, p.k_batch_stride, p.k_row_stride, b, n0), p.k_row_stride, valid_keys, p.head_dim, tid);
    load_tile_async<kBlockN, kHeadDim, kPitchD, kThreads>(
        sV, v + si.k_offset(p, p.v_batch_stride, p.v_row_stride, b, n0), p.v_row_stride, valid_keys, p.head_dim, tid);
    cp_async_commit();
    if (m_begin < m_end) {
      float lse_r, d_r;
      issue_query_block(m_begin, lse_r, d_r);
      store_row_stats(lse_r, d_r);
    }
    cp_async_wait_all();
    __syncthreads();

    float acc_dk[NT_KV][4], acc_dv[NT_KV][4];
    zero_acc(acc_dk);
    zero_acc(acc_dv);

    for (int m_block = m_begin; m_block < m_end; ++m_block) {
      const int m0 = m_block * kBlockM;
      const int r_loc = wm * 16 + g;
      const float lse2[2] = {sLse[r_loc], sLse[r_loc + 8]};
      const float dsum[2] = {sD[r_loc], sD[r_loc + 8]};
      // Interior blocks (all rows < sq, all keys < seqused_k, the window hides nothing) without
      // softcap / ALiBi / dropout skip the per-element visibility test and the modifier code.
      bool plain_block = !has_mods && !ex.dropout && m0 + kBlockM <= si.sq && n0 + kBlockN <= si.sk_used;
      if (plain_block && p.window_left >= 0)  // smallest diag offset j - (i + sk - sq) of the block
        plain_block = int64_t{n0} - (m0 + kBlockM - 1) - si.sk_used + si.sq >= -int64_t{p.window_left};
      if (plain_block && p.window_right >= 0)  // largest one
        plain_block = int64_t{n0} + kBlockN - 1 - m0 - si.sk_used + si.sq <= int64_t{p.window_right};
#pragma unroll 1
      for (int pass = 0; pass < Cfg::kSPasses; ++pass) {
      const int col_base = wn * Cfg::kTileNS + pass * Cfg::kPassNS;
      // ---- S = Q K^T and dP = dO V^T for this warp's 16 x kPassNS tile ----
      float acc_s[NT_S][4], acc_dp[NT_S][4];
      zero_acc(acc_s);
      zero_acc(acc_dp);
      warp_gemm<Element, NT_S, kHeadDim / 16, false, false>(acc_s, sQ + wm * 16 * kPitchD, kPitchD,
                                                           sK + col_base * kPitchD, kPitchD, lane);
      warp_gemm<Element, NT_S, kHeadDim / 16, false, false>(acc_dp, sdO + wm * 16 * kPitchD, kPitchD,
                                                           sV + col_base * kPitchD, kPitchD, lane);

      // ---- P and dS, element-wise on the C fragments: rows (r, r+8), cols (c, c+1) ----
      auto store_p_ds = [&](int c_loc, const float (&pv)[4], const float (&dsv)[4]) {
        *reinterpret_cast<uint32_t*>(sP + r_loc * kPitchN + c_loc) = pack2<Element>(pv[0], pv[1]);
        *reinterpret_cast<uint32_t*>(sP + (r_loc + 8) * kPitchN + c_loc) = pack2<Element>(pv[2], pv[3]);
        *reinterpret_cast<uint32_t*>(sdS + r_loc * kPitchN + c_loc) = pack2<Element>(dsv[0], dsv[1]);
        *reinterpret_cast<uint32_t*>(sdS + (r_loc + 8) * kPitchN + c_loc) = pack2<Element>(dsv[2], dsv[3]);
      };
      if (Cfg::kPlainPath && plain_block) {
        // Every (i, j) of the block is visible and no modifier / dropout is on: the general
        // path below reduces to exactly these operations (same order, bitwise equal results).
#pragma unroll
        for (int nt = 0; nt < NT_S; ++nt) {
          const int c_loc = col_base + nt * 8 + 2 * t;
          float pv[4], dsv[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int ri = e / 2;
            float prob = 0.f, ds_val = 0.f;
            if (lse2[ri] != INFINITY) {
              prob = exp2f(fmaf(acc_s[nt][e], x_scale_log2, -lse2[ri]));
              ds_val = prob * (acc_dp[nt][e] - dsum[ri]);
            }
            pv[e] = prob;
            dsv[e] = ds_val;
          }
          store_p_ds(c_loc, pv, dsv);
        }
      } else {
#pragma unroll
      for (int nt = 0; nt < NT_S; ++nt) {
        const int c_loc = col_base + nt * 8 + 2 * t;
        const int j0 = n0 + c_loc;
        Philox4 bits{0, 0, 0, 0};
        // One Philox call per 2x2 group: words x,y,z,w = (r,c) (r,c+1) (r+8,c) (r+8,c+1).
        if (ex.dropout) bits = dropout_group_bits(seed, rng_offset, bh, static_cast<uint32_t>(m0 + r_loc),
                                                  static_cast<uint32_t>(j0));
        float pv[4], dsv[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ri = e / 2;
          const int i = m0 + r_loc + 8 * ri, j = j0 + (e & 1);
          float p_val = 0.f, ds_val = 0.f;
          if (lse2[ri] != INFINITY && rule.visible(i, j)) {
            // Same arithmetic as the forward (common/sm80_frag_mask.cuh), so P matches its lse.
            float x = acc_s[nt][e], sc = 0.f;
            if (has_mods) {
              x *= p.softmax_scale;
              if (softcap_on) x = sc = p.softcap * tanhf(x * inv_cap);
              if (has_alibi) x += alibi_bias(slope, rule, i, j);
            }
            const float prob = exp2f(fmaf(x, x_scale_log2, -lse2[ri]));
            float dp = acc_dp[nt][e];
            float p_keep = prob;
            if (ex.dropout) {
              const bool keep = dropout_word(bits, e) < ex.keep_threshold;
              p_keep = keep ? prob * ex.rp_keep : 0.f;
              dp = keep ? dp * ex.rp_keep : 0.f;
            }
            ds_val = prob * (dp - dsum[ri]);
            if (softcap_on) {
              const float th = sc * inv_cap;  // tanh(s / c)
              ds_val *= 1.f - th * th;
            }
            p_val = p_keep;
          }
          pv[e] = p_val;
          dsv[e] = ds_val;
        }
        store_p_ds(c_loc, pv, dsv);
      }
      }  // plain_block
      }  // pass
      __syncthreads();

      // ---- dV += P^T dO, dK += dS^T Q (A read transposed from [m][n], B transposed from [m][d]) ----
      // d >= 224 (16 x 112 / 16 x 128 tiles next to 112 / 128 accumulator registers): no k-step
      // unrolling, see warp_gemm; it spilled on sm_90a otherwise. Smaller buckets are spill-free
      // fully unrolled (and d = 128 spills when not).
      constexpr bool kKvUnroll = kHeadDim < 224;
      warp_gemm<Element, NT_KV, kBlockM / 16, true, true, kKvUnroll>(acc_dv, sP + wkv_n * 16, kPitchN,
                                                         sdO + wkv_d * Cfg::kTileDKV, kPitchD, lane);
      warp_gemm<Element, NT_KV, kBlockM / 16, true, true, kKvUnroll>(acc_dk, sdS + wkv_n * 16, kPitchN,
                                                         sQ + wkv_d * Cfg::kTileDKV, kPitchD, lane);
      __syncthreads();  // sQ, sdO, sLse, sD are free: prefetch the next query block under dQ

      const bool has_next = m_block + 1 < m_end;
      float next_lse = INFINITY, next_d = 0.f;
      if (has_next) issue_query_block(m_block + 1, next_lse, next_d);

      // ---- dQ_i += dS K_j, in kDqChunk-column pieces (B = K read transposed from [n][d]) ----
#pragma unroll 1
      for (int c0 = 0; c0 < Cfg::kTileDQ; c0 += Cfg::kDqChunk) {
        const int col0 = wn * Cfg::kTileDQ + c0;
        if (col0 >= p.head_dim) break;  // warp-uniform: columns past the real head dim are zero
        // Vector layout of the dQ chunk (used by the deterministic and the sm_90 paths): lanes t and
        // t^1 swap halves so that each holds 4 consecutive columns of one row: even t row g, odd t
        // row g + 8, both columns 4*(t/2)..+3 of the n8 tile. One 16-byte access per lane and tile:
        // 16 full 32-byte sectors per warp instruction instead of 4 x 8 half-used.
        const bool odd = (t & 1) != 0;
        const int i4 = m0 + r_loc + (odd ? 8 : 0);
        auto dq_vec_ptr = [&](int nt) -> float4* {
          const int c4 = col0 + nt * 8 + 4 * (t >> 1);  // head_dim % 8 == 0: all 4 in or all out
          if (c4 >= p.head_dim || i4 >= si.sq) return nullptr;
          // dq_accum is 256-byte aligned and head_dim % 8 == 0: the address is 16-byte aligned.
          return reinterpret_cast<float4*>(dq_acc + ((si.q_row0 + i4) * p.nheads + h) * p.head_dim + c4);
        };
        // Deterministic mode reads this slice's running sums for all tiles of the chunk at once (one
        // L2 round trip, not NT_Q): on sm_90 before the GEMM so the latency hides under it; on
        // sm_80 right after it (before, the 16 extra live registers made d = 128 spill there).
        float4 dq_old[NT_Q];
        auto load_dq_old = [&] {
#pragma unroll
          for (int nt = 0; nt < NT_Q; ++nt) {
            const float4* src = dq_vec_ptr(nt);
            dq_old[nt] = src != nullptr ? *src : make_float4(0.f, 0.f, 0.f, 0.f);
          }
        };
        if (kVec4Atomics && p.deterministic) load_dq_old();
        float acc_dq[NT_Q][4];
        zero_acc(acc_dq);
        warp_gemm<Element, NT_Q, kBlockN / 16, false, true>(acc_dq, sdS + wm * 16 * kPitchN, kPitchN, sK + col0,
                                                           kPitchD, lane);
        if (!kVec4Atomics && p.deterministic) load_dq_old();
        if (p.deterministic || kVec4Atomics) {
#pragma unroll
          for (int nt = 0; nt < NT_Q; ++nt) {
            const float send0 = odd ? acc_dq[nt][0] : acc_dq[nt][2];
            const float send1 = odd ? acc_dq[nt][1] : acc_dq[nt][3];
            const float recv0 = __shfl_xor_sync(0xffffffffu, send0, 1);
            const float recv1 = __shfl_xor_sync(0xffffffffu, send1, 1);
            const float4 v4 = odd ? make_float4(recv0, recv1, acc_dq[nt][2], acc_dq[nt][3])
                                  : make_float4(acc_dq[nt][0], acc_dq[nt][1], recv0, recv1);
            float4* dst = dq_vec_ptr(nt);
            if (dst == nullptr) continue;
            if (p.deterministic) {
              // This lane is the only reader / writer of these elements in its slice (the previous
              // key block's store is its own, earlier in program order): ordered and exact.
              float4 o = dq_old[nt];
              o.x += v4.x;
              o.y += v4.y;
              o.z += v4.z;
              o.w += v4.w;
              *dst = o;
            } else {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
              // Fire-and-forget vector reduction (sm_90+). atomicAdd(float4*) would emit atom.v4
              // (a result is returned); red says no value is wanted.
              asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(dst), "f"(v4.x), "f"(v4.y),
                           "f"(v4.z), "f"(v4.w));
#endif
            }
          }
        } else {
          // sm_80..sm_89 default mode: no vector float atomics there, scalar atomicAdd per element.
#pragma unroll
        for (int nt = 0; nt < NT_Q; ++nt) {
          const int c = col0 + nt * 8 + 2 * t;
          if (c >= p.head_dim) continue;
#pragma unroll
          for (int ri = 0; ri < 2; ++ri) {
            const int i = m0 + r_loc + 8 * ri;
            if (i >= si.sq) continue;
            float* dst = dq_acc + ((si.q_row0 + i) * p.nheads + h) * p.head_dim + c;
            atomicAdd(dst, acc_dq[nt][2 * ri]);
            atomicAdd(dst + 1, acc_dq[nt][2 * ri + 1]);
          }
        }
        }
      }
      if (has_next) store_row_stats(next_lse, next_d);
      cp_async_wait_all();
      __syncthreads();
    }

    // ---- write dK (scaled) and dV: rows of keys in [0, sk); keys past seqused_k are zeros ----
    const bool gqa = p.nheads != p.nheads_k;
#pragma unroll
    for (int nt = 0; nt < NT_KV; ++nt) {
      const int c = wkv_d * Cfg::kTileDKV + nt * 8 + 2 * t;
      if (c >= p.head_dim) continue;
#pragma unroll
      for (int ri = 0; ri < 2; ++ri) {
        const int j = n0 + wkv_n * 16 + g + 8 * ri;
        if (j >= si.sk) continue;
        const float dk0 = acc_dk[nt][2 * ri] * p.softmax_scale, dk1 = acc_dk[nt][2 * ri + 1] * p.softmax_scale;
        const float dv0 = acc_dv[nt][2 * ri], dv1 = acc_dv[nt][2 * ri + 1];
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

}  // namespace flash::sm80::bwd
