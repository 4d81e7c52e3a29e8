// The kvcache attention kernel: one CTA per (16 packed query rows, split, kv head, sequence).
//
// Rows: the seqlen_q x group query rows that share one kv head are packed (p = i * group + hg),
// so every K/V byte of a kv head is fetched once per 16 packed rows (once in total for decode
// with group <= 16). Keys: a 64-key tile per pipeline stage, loaded with 16-byte cp.async through
// one row-address function (contiguous or paged, any page size), kStages deep. Each of the 4
// warps owns 16 keys of every tile and runs its own online softmax over all 16 rows (S and P
// never leave registers); the 4 partial (max, sum, O) are merged through shared memory at the end,
// exactly like split-KV but inside the CTA. This keeps the MMA M dimension at 16 (decode has few
// rows) while all 4 warps still share the streaming work.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "common/mask.h"
#include "cuda/kvcache/kvcache_args.h"
#include "cuda/kvcache/kvcache_ptx.cuh"
#include "cuda/kvcache/kvcache_split_merge.cuh"
#include "flash/errors.h"

namespace flash::kvcache_cuda {

template <int D, bool kLean = false>
struct AttnCfg {
  static_assert(D % 32 == 0 && D <= 256, "head-dim buckets are multiples of 32");
  static_assert(!kLean || lean_supported(D), "lean layout only where the host allows it");
  static constexpr int kStages = stages_for(D, kLean);
  static constexpr int kRow = kv_row_elems(D, kLean);  // elements per K/V shared-memory row
  static constexpr int kQRow = smem_row_elems(D);     // elements per Q row (always padded)
  static constexpr int kChunks = D / 8;               // 16-byte chunks per row
  // Lean rows are unpadded: chunk c of row r lives at chunk c ^ (r & 7) (the 8 rows of one
  // ldmatrix then cover all 32 banks; needs whole groups of 8 chunks).
  static constexpr bool kSwizzle = kLean;
  static_assert(!kSwizzle || kChunks % 8 == 0, "swizzle permutes groups of 8 chunks");
  static constexpr int kTileElems = kBlockN * kRow;
  static constexpr int kKvBytes = kStages * 2 * kTileElems * 2;
  static constexpr int kQBytes = kRowsPerTile * kQRow * 2;
  // m[kWarps][16], l[kWarps][16], weight[kWarps][16], lse[16]
  static constexpr int kStatFloats = 3 * kWarps * kRowsPerTile + kRowsPerTile;
  static constexpr int kOkBytes = kStages * kBlockN;
  // Per stage and key row: element offsets of K and V (-1: key not loadable), written one tile
  // ahead by the thread that owns the row, so the copy loop does no page lookups or divisions.
  static constexpr int kOffBytes = kStages * kBlockN * 2 * 8;
  static constexpr int kSmemBytes = kKvBytes + kQBytes + kStatFloats * 4 + kOkBytes + kOffBytes;
  static_assert(kSmemBytes == attn_smem_bytes(D, kLean), "host occupancy estimate must match");
  // The end-of-CTA merge reuses the K/V region for the 4 warps' fp32 O tiles.
  static constexpr int kORow = D + 8;  // floats; +8 breaks the 8-way bank conflict of float2 stores
  static_assert(kWarps * kRowsPerTile * kORow * 4 <= kKvBytes, "merge buffer must fit");
  static_assert(kMergeSmemBytes <= kKvBytes, "split merge buffer must fit");
  static constexpr int kQItersPerThread = (kRowsPerTile * kChunks + kThreads - 1) / kThreads;
  // Element offset of 16-byte chunk c of K/V row r within a tile.
  __device__ __forceinline__ static int kv_at(int r, int c) {
    return r * kRow + (kSwizzle ? (c ^ (r & 7)) : c) * 8;
  }
  // Resident CTAs per SM the register allocation must allow (lean: 3 x 128 threads -> <= 168).
  // 0 = no hint: an explicit 1 makes ptxas use 176 registers instead of 166 at d128 (nvcc 13).
  static constexpr int kMinBlocks = kLean ? 3 : 0;
};

constexpr float kLog2e = 1.4426950408889634f;

// Rotates the query tile in shared memory (first rotary_dim dims of each valid row), in fp32 with
// one rounding to the storage type, as the CPU backend does.
template <typename Elem, int D>
__device__ __forceinline__ void rotate_query_tile(const AttnArgs& a, Elem* sQ, int p0, int p_end,
                                                  int cached) {
  using Cfg = AttnCfg<D>;  // the Q tile layout is the same in both layouts
  using T = ElemTraits<Elem>;
  const Elem* cos_tab = static_cast<const Elem*>(a.rot_cos);
  const Elem* sin_tab = static_cast<const Elem*>(a.rot_sin);
  const int half = a.rotary_dim / 2;
  Elem rotated[Cfg::kQItersPerThread][8];
#pragma unroll
  for (int it = 0; it < Cfg::kQItersPerThread; ++it) {
    const int idx = threadIdx.x + it * kThreads;
    const int r = idx / Cfg::kChunks, c = idx % Cfg::kChunks;
    const int p = p0 + r;
    const int pos = cached + (a.rot_query_per_row ? p / a.group : 0);
    const bool row_ok = idx < kRowsPerTile * Cfg::kChunks && p < p_end && pos >= 0 &&
                        pos < a.seqlen_rotary;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int d = c * 8 + e;
      if (!row_ok || d >= a.rotary_dim) {
        // Unrotated dims (and rows without a position) keep their value; idx past the tile: unused.
        rotated[it][e] = idx < kRowsPerTile * Cfg::kChunks ? sQ[r * Cfg::kQRow + d]
                                                           : T::from_float(0.f);
        continue;
      }
      const bool first = a.rot_interleaved ? (d & 1) == 0 : d < half;
      const int partner = a.rot_interleaved ? (d ^ 1) : (first ? d + half : d - half);
      const int f = a.rot_interleaved ? d / 2 : (first ? d : d - half);
      const float x = T::to_float(sQ[r * Cfg::kQRow + d]);
      const float y = T::to_float(sQ[r * Cfg::kQRow + partner]);
      const float cs = T::to_float(cos_tab[static_cast<int64_t>(pos) * half + f]);
      const float sn = T::to_float(sin_tab[static_cast<int64_t>(pos) * half + f]);
      // first: x*c - y*s; second: y*s + x*c (partner is x0). _rn: no FMA contraction, like the CPU.
      const float out = first ? __fsub_rn(__fmul_rn(x, cs), __fmul_rn(y, sn))
                              : __fadd_rn(__fmul_rn(y, sn), __fmul_rn(x, cs));
      rotated[it][e] = T::from_float(out);
    }
  }
  __syncthreads();  // every read of the unrotated tile is done
#pragma unroll
  for (int it = 0; it < Cfg::kQItersPerThread; ++it) {
    const int idx = threadIdx.x + it * kThreads;
    if (idx >= kRowsPerTile * Cfg::kChunks) break;
    const int r = idx / Cfg::kChunks, c = idx % Cfg::kChunks;
#pragma unroll
    for (int e = 0; e < 8; ++e) sQ[r * Cfg::kQRow + c * 8 + e] = rotated[it][e];
  }
}

template <typename Elem, int D, bool kLean>
__global__ void __launch_bounds__(kThreads, AttnCfg<D, kLean>::kMinBlocks)
    kvcache_attn_kernel(const AttnArgs a) {
  using Cfg = AttnCfg<D, kLean>;
  using T = ElemTraits<Elem>;
  extern __shared__ __align__(128) unsigned char smem[];
  Elem* sKV = reinterpret_cast<Elem*>(smem);
  Elem* sQ = reinterpret_cast<Elem*>(smem + Cfg::kKvBytes);
  float* sM = reinterpret_cast<float*>(smem + Cfg::kKvBytes + Cfg::kQBytes);
  float* sL = sM + kWarps * kRowsPerTile;
  float* sW = sL + kWarps * kRowsPerTile;
  float* sLse = sW + kWarps * kRowsPerTile;
  uint8_t* sOk = reinterpret_cast<uint8_t*>(sLse + kRowsPerTile);
  // 8-byte aligned: every region before it is a multiple of 8 bytes (sOk is kStages * 64).
  int64_t* sOff = reinterpret_cast<int64_t*>(sOk + Cfg::kOkBytes);

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int m_tile = blockIdx.x % a.m_tiles;
  const int split = blockIdx.x / a.m_tiles;
  const int hk = blockIdx.y, b = blockIdx.z;

  const SeqKeys sq = seq_keys(a, b);
  const int p0 = m_tile * kRowsPerTile;
  const int p_end = min(a.rows, p0 + kRowsPerTile);
  const MaskRule mask{a.seqlen_q, sq.sk, a.window_left, a.window_right};

  // Keys any row of this tile may see, then this split's share of them in whole tiles.
  const int lo = mask.first_key(p0 / a.group);
  const int hi = mask.end_key((p_end - 1) / a.group);
  const int n_tiles_all = hi > lo ? (hi - lo + kBlockN - 1) / kBlockN : 0;
  const int per_split = (n_tiles_all + a.splits - 1) / a.splits;
  const int t_begin = min(split * per_split, n_tiles_all);
  const int t_end = min(t_begin + per_split, n_tiles_all);
  const int key_hi = min(hi, lo + t_end * kBlockN);
  const int n_my = t_end - t_begin;

  // ---- the row-address function: key j (relative to leftpad) -> element offsets of K and V ----
  // Evaluated once per key row per tile by thread `tid < kBlockN` (one row each), one tile ahead
  // of its copy, with the block-table entry prefetched one more tile ahead; the copy loop then
  // reads the offsets from smem, so contiguous and paged caches issue the same cp.async stream.
  const Elem* k_base = static_cast<const Elem*>(a.k) + hk * a.k_hs;
  const Elem* v_base = static_cast<const Elem*>(a.v) + hk * a.v_hs;
  const bool paged = a.block_table != nullptr;
  const int32_t* bt = paged ? a.block_table + b * a.bt_stride : nullptr;
  const int64_t k_row0 = paged ? 0 : static_cast<int64_t>(max(sq.cache_row, 0)) * a.k_bs;
  const int64_t v_row0 = paged ? 0 : static_cast<int64_t>(max(sq.cache_row, 0)) * a.v_bs;
  const bool owns_row = tid < kBlockN;
  // FLASH_KVCACHE_DIRECT (contiguous caches only): the copy loop computes its row offsets itself
  // instead of reading the smem table (no table writes, no table reads; CTA-uniform).
  const bool direct = a.direct_offsets && !paged;
  // Block-table entry of this thread's key row in `tile` (0 when contiguous or out of range).
  auto fetch_page = [&](int tile) -> int {
    const int j = lo + tile * kBlockN + tid;
    if (!paged || !owns_row || j >= key_hi) return 0;
    const int t = sq.leftpad + j;
    const int slot = a.page_shift >= 0 ? (t >> a.page_shift) : t / a.page_size;
    return __ldg(bt + slot);
  };
  auto store_offsets = [&](int tile, int page, int stage) {
    if (!owns_row || direct) return;
    const int j = lo + tile * kBlockN + tid;
    const int t = sq.leftpad + j;
    int64_t ko = -1, vo = -1;
    if (j < key_hi) {
      if (!paged) {
        ko = k_row0 + t * a.k_rs;
        vo = v_row0 + t * a.v_rs;
      } else if (page >= 0 && page < a.num_pages) {  // never dereference a bad page
        const int row = a.page_shift >= 0 ? (t & (a.page_size - 1)) : t % a.page_size;
        ko = page * a.k_bs + row * a.k_rs;
        vo = page * a.v_bs + row * a.v_rs;
      }
    }
    sOff[(stage * kBlockN + tid) * 2] = ko;
    sOff[(stage * kBlockN + tid) * 2 + 1] = vo;
  };
  auto issue_tile = [&](int stage, int tile) {
    Elem* sK = sKV + stage * 2 * Cfg::kTileElems;
    Elem* sV = sK + Cfg::kTileElems;
    const int64_t* off = sOff + stage * kBlockN * 2;
    constexpr int kIters = kBlockN * Cfg::kChunks / kThreads;
    static_assert(kBlockN * Cfg::kChunks % kThreads == 0, "whole copy rounds");
    // Groups of 4 rows: their offsets are read before the copies (cp.async clobbers memory, so
    // reads interleaved with copies would be serialised).
    constexpr int kGroup = kIters % 4 == 0 ? 4 : (kIters % 2 == 0 ? 2 : 1);  // d96/160/224: 2
    static_assert(kIters % kGroup == 0, "whole groups");
#pragma unroll
    for (int g0 = 0; g0 < kIters; g0 += kGroup) {
      int64_t ko[kGroup], vo[kGroup];
#pragma unroll
      for (int u = 0; u < kGroup; ++u) {
        const int r = (tid + (g0 + u) * kThreads) / Cfg::kChunks;
        if (direct) {  // same values store_offsets would have written for a contiguous cache
          const int j = lo + tile * kBlockN + r;
          const int t = sq.leftpad + j;
          ko[u] = j < key_hi ? k_row0 + t * a.k_rs : -1;
          vo[u] = j < key_hi ? v_row0 + t * a.v_rs : -1;
        } else {
          ko[u] = off[r * 2];
          vo[u] = off[r * 2 + 1];
        }
      }
#pragma unroll
      for (int u = 0; u < kGroup; ++u) {
        const int idx = tid + (g0 + u) * kThreads;
        const int r = idx / Cfg::kChunks, c = idx % Cfg::kChunks;
        const bool ok = ko[u] >= 0;
        if (c == 0) sOk[stage * kBlockN + r] = ok;
        const bool ld = ok && c * 8 < a.head_dim;  // dims past head_dim: zeros (bucket padding)
        // (padded rows keep the pre-lean expression: same code as the measured default kernel)
        Elem* dk = Cfg::kSwizzle ? sK + Cfg::kv_at(r, c) : sK + r * Cfg::kRow + c * 8;
        Elem* dv = Cfg::kSwizzle ? sV + Cfg::kv_at(r, c) : sV + r * Cfg::kRow + c * 8;
        cp_async_16(dk, ld ? k_base + ko[u] + c * 8 : k_base, ld);
        cp_async_16(dv, ld ? v_base + vo[u] + c * 8 : v_base, ld);
      }
    }
  };

  // Offsets of the first kStages tiles (all issued by the prologue), then the page of the next.
#pragma unroll
  for (int s = 0; s < Cfg::kStages; ++s) {
    if (s < n_my) store_offsets(t_begin + s, fetch_page(t_begin + s), s);
  }
  int next_page = Cfg::kStages < n_my ? fetch_page(t_begin + Cfg::kStages) : 0;
  __syncthreads();

  // Two pipeline schedules (CTA-uniform choice, see the loop): `deep` for long key ranges, the
  // classic one for short ones. Start streaming K/V before touching q.
  const bool deep = n_my > a.deep_min_tiles;
  const int prologue_tiles = deep ? Cfg::kStages : Cfg::kStages - 1;
#pragma unroll
  for (int s = 0; s < Cfg::kStages; ++s) {
    if (s < prologue_tiles) {
      if (s < n_my) issue_tile(s, t_begin + s);
      cp_async_commit();
    }
  }

  // ---- query tile (zero rows/dims beyond the problem), rotated when rotary is on ----
  const Elem* q_base = static_cast<const Elem*>(a.q) + b * a.q_bs;
  for (int idx = tid; idx < kRowsPerTile * Cfg::kChunks; idx += kThreads) {
    const int r = idx / Cfg::kChunks, c = idx % Cfg::kChunks;
    const int p = p0 + r;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (p < p_end && c * 8 < a.head_dim) {
      const int i = p / a.group, h = hk * a.group + p % a.group;
      val = *reinterpret_cast<const uint4*>(q_base + i * a.q_rs + h * a.q_hs + c * 8);
    }
    *reinterpret_cast<uint4*>(sQ + r * Cfg::kQRow + c * 8) = val;
  }
  if (a.rot_cos != nullptr) {
    __syncthreads();
    rotate_query_tile<Elem, D>(a, sQ, p0, p_end, sq.cached);
  }

  // Per-thread rows g and g + 8 of the tile (padding rows reuse the last valid row's position).
  int row_i[2];
  float slope[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int p = min(p0 + g + 8 * rr, p_end - 1);
    row_i[rr] = p / a.group;
    const int h = hk * a.group + p % a.group;
    slope[rr] = a.alibi ? a.alibi[b * a.alibi_bs + h] : 0.f;
  }

  // Interior key range (FLASH_KVCACHE_FASTMASK): keys every row of this tile sees -- first_key and
  // end_key are nondecreasing in the row, so [first_key(last row), end_key(first row)) -- and that
  // this CTA loaded (< key_hi; contiguous caches load every such key).
  const bool plain_tiles = a.fast_interior && !(a.softcap > 0.f) && a.alibi == nullptr;
  const int interior_lo = mask.first_key((p_end - 1) / a.group);
  const int interior_hi = min(mask.end_key(p0 / a.group), key_hi);

  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY};
  float l_run[2] = {0.f, 0.f};  // this thread's share of the row sum (quad-reduced at the end)

  // Both schedules issue tile n + kStages - 1 in iteration n, into the stage of tile n - 1.
  // deep: issued *before* waiting for tile n (after a barrier that frees the stage), so kStages
  //   tiles are in flight while a warp waits; two barriers per tile. Commit groups: kStages from
  //   the prologue, then one per iteration n >= 1, so wait_group(kStages - 1) in iteration n
  //   means tiles 0..n are complete. H100: +1 % at 32-256 tiles per CTA.
  // classic: issued right *after* tile n lands (one barrier), kStages - 1 tiles in flight while
  //   waiting. Prologue kStages - 1 groups + one per iteration: wait_group(kStages - 2).
  //   Better for short CTAs (split decode at batch 1: 4 tiles): there the deep schedule's last
  //   tile is issued only after tile 0 is computed, and the whole grid's last tiles then go out
  //   in one late burst (H100 (1, 8192): 25.2 -> 26.7 us with deep everywhere).
  // The host picks the threshold (a.deep_min_tiles): 8 for the padded layout, never for the lean
  // 2-stage one (classic was 1-3.5 % faster there on the H100, session 5).
  for (int n = 0; n < n_my; ++n) {
    if (deep) {
      if (n > 0) {
        __syncthreads();  // every warp is done with tile n-1: its stage is free; offsets visible
        const int nn = n + Cfg::kStages - 1;
        if (nn < n_my) issue_tile(nn % Cfg::kStages, t_begin + nn);
        cp_async_commit();
      }
      cp_async_wait<Cfg::kStages - 1>();  // this thread's copies of tile n have landed
      __syncthreads();                     // ... everyone's
    } else {
      cp_async_wait<Cfg::kStages - 2>();
      __syncthreads();  // tile n landed for everyone; tile n-1's stage is free
      const int nn = n + Cfg::kStages - 1;
      if (nn < n_my) issue_tile(nn % Cfg::kStages, t_begin + nn);
      cp_async_commit();
    }
    const int stage = n % Cfg::kStages;
    const Elem* sK = sKV + stage * 2 * Cfg::kTileElems;
    const Elem* sV = sK + Cfg::kTileElems;
    const uint8_t* ok = sOk + stage * kBlockN;
    const int key0 = warp * kKeysPerWarp;  // this warp's keys within the tile
    const int mi = lane >> 3, mr = lane & 7;

    // S = Q K^T for 16 rows x this warp's 16 keys (two n8 tiles).
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
    for (int k0 = 0; k0 < D; k0 += 16) {
      uint32_t qa[4], kb[4];
      ldmatrix_x4(qa, sQ + ((mi & 1) * 8 + mr) * Cfg::kQRow + k0 + (mi >> 1) * 8);
      // (padded rows: the plain expression; routing it through kv_at costs d64 49 registers)
      if constexpr (Cfg::kSwizzle) {
        ldmatrix_x4(kb, sK + Cfg::kv_at(key0 + (mi >> 1) * 8 + mr, k0 / 8 + (mi & 1)));
      } else {
        ldmatrix_x4(kb, sK + (key0 + (mi >> 1) * 8 + mr) * Cfg::kRow + k0 + (mi & 1) * 8);
      }
      T::mma(s[0], qa, kb[0], kb[1]);
      T::mma(s[1], qa, kb[2], kb[3]);
    }

    // Score modifiers and visibility, then the online-softmax update.
    const int j_tile = lo + (t_begin + n) * kBlockN;
    float bmax[2] = {-INFINITY, -INFINITY};
    if (plain_tiles && j_tile >= interior_lo && j_tile + kBlockN <= interior_hi) {
      // Interior tile (CTA-uniform branch): every key visible to every row, no modifier; only a
      // paged cache can still have unloadable keys (bad pages). Same values as the general path.
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int kl = key0 + nt * 8 + 2 * t4 + (e & 1);
          float x = s[nt][e] * a.scale;
          if (paged && !ok[kl]) x = -INFINITY;
          s[nt][e] = x;
          bmax[e >> 1] = fmaxf(bmax[e >> 1], x);
        }
      }
    } else {
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int rr = e >> 1;
          const int kl = key0 + nt * 8 + 2 * t4 + (e & 1);
          const int j = j_tile + kl;
          float x = s[nt][e] * a.scale;
          if (a.softcap > 0.f) x = a.softcap * tanhf(x / a.softcap);
          if (a.alibi) x += alibi_bias(slope[rr], mask, row_i[rr], j);
          x = (ok[kl] && mask.visible(row_i[rr], j)) ? x : -INFINITY;
          s[nt][e] = x;
          bmax[rr] = fmaxf(bmax[rr], x);
        }
      }
    }
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      bmax[rr] = fmaxf(bmax[rr], __shfl_xor_sync(0xffffffffu, bmax[rr], 1));
      bmax[rr] = fmaxf(bmax[rr], __shfl_xor_sync(0xffffffffu, bmax[rr], 2));
      const float m_new = fmaxf(m_run[rr], bmax[rr]);
      // All keys so far invisible: keep everything at zero (avoids -inf - -inf).
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      const float corr = exp2f((m_run[rr] - m_use) * kLog2e);  // 0 on the first visible key
      m_run[rr] = m_new;
      l_run[rr] *= corr;
#pragma unroll
      for (int nd = 0; nd < D / 8; ++nd) {
        o[nd][2 * rr] *= corr;
        o[nd][2 * rr + 1] *= corr;
      }
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        const float e0 = exp2f((s[nt][2 * rr] - m_use) * kLog2e);
        const float e1 = exp2f((s[nt][2 * rr + 1] - m_use) * kLog2e);
        s[nt][2 * rr] = e0;
        s[nt][2 * rr + 1] = e1;
        l_run[rr] += e0 + e1;
      }
    }

    // O += P V: P (16 rows x 16 keys) straight from the S accumulators as the A operand.
    uint32_t pa[4];
    pa[0] = T::pack2(s[0][0], s[0][1]);
    pa[1] = T::pack2(s[0][2], s[0][3]);
    pa[2] = T::pack2(s[1][0], s[1][1]);
    pa[3] = T::pack2(s[1][2], s[1][3]);
#pragma unroll
    for (int n0 = 0; n0 < D; n0 += 16) {
      uint32_t vb[4];
      if constexpr (Cfg::kSwizzle) {
        ldmatrix_x4_trans(vb, sV + Cfg::kv_at(key0 + (mi & 1) * 8 + mr, n0 / 8 + (mi >> 1)));
      } else {
        ldmatrix_x4_trans(vb, sV + (key0 + (mi & 1) * 8 + mr) * Cfg::kRow + n0 + (mi >> 1) * 8);
      }
      T::mma(o[n0 / 8], pa, vb[0], vb[1]);
      T::mma(o[n0 / 8 + 1], pa, vb[2], vb[3]);
    }

    // Offsets of tile n + kStages (issued next iteration, after a barrier) into the stage
    // it will use, (n + kStages) % kStages = n % kStages: that slot's offsets were last read when
    // tile n was issued, barriers ago. Then prefetch the page of the tile after it.
    {
      const int nt = n + Cfg::kStages;
      if (nt < n_my) {
        store_offsets(t_begin + nt, next_page, nt % Cfg::kStages);
        next_page = nt + 1 < n_my ? fetch_page(t_begin + nt + 1) : 0;
      }
    }
  }

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Streaming done: let a programmatic dependent (the split-KV combine) start launching. It
  // still waits (griddepcontrol.wait) for this whole grid to complete before reading partials.
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
  // ---- merge the 4 warps' (max, sum, O) and write the tile ----
  cp_async_wait<0>();
  __syncthreads();  // K/V region is free for the merge buffer
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    l_run[rr] += __shfl_xor_sync(0xffffffffu, l_run[rr], 1);
    l_run[rr] += __shfl_xor_sync(0xffffffffu, l_run[rr], 2);
    if (t4 == 0) {
      sM[warp * kRowsPerTile + g + 8 * rr] = m_run[rr];
      sL[warp * kRowsPerTile + g + 8 * rr] = l_run[rr];
    }
  }
  float* sO = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int nd = 0; nd < D / 8; ++nd) {
    const int col = nd * 8 + 2 * t4;
    float* dst = sO + (warp * kRowsPerTile + g) * Cfg::kORow + col;
    *reinterpret_cast<float2*>(dst) = make_float2(o[nd][0], o[nd][1]);
    *reinterpret_cast<float2*>(dst + 8 * Cfg::kORow) = make_float2(o[nd][2], o[nd][3]);
  }
  __syncthreads();
  if (tid < kRowsPerTile) {
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, sM[w * kRowsPerTile + tid]);
    float wgt[kWarps];
    float l = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      // A warp that saw nothing has m = -inf, l = 0: weight 0. m == -inf overall: row is empty.
      wgt[w] = m == -INFINITY ? 0.f : exp2f((sM[w * kRowsPerTile + tid] - m) * kLog2e);
      l += wgt[w] * sL[w * kRowsPerTile + tid];
    }
    const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) sW[w * kRowsPerTile + tid] = wgt[w] * inv;
    sLse[tid] = l > 0.f ? m + logf(l) : -INFINITY;
  }
  __syncthreads();

  for (int idx = tid; idx < kRowsPerTile * Cfg::kChunks; idx += kThreads) {
    const int r = idx / Cfg::kChunks, c = idx % Cfg::kChunks;
    const int p = p0 + r;
    if (p >= p_end || c * 8 >= a.head_dim) continue;
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float wt = sW[w * kRowsPerTile + r];
      const float* src = sO + (w * kRowsPerTile + r) * Cfg::kORow + c * 8;
      const float4 x0 = *reinterpret_cast<const float4*>(src);
      const float4 x1 = *reinterpret_cast<const float4*>(src + 4);
      acc[0] += wt * x0.x; acc[1] += wt * x0.y; acc[2] += wt * x0.z; acc[3] += wt * x0.w;
      acc[4] += wt * x1.x; acc[5] += wt * x1.y; acc[6] += wt * x1.z; acc[7] += wt * x1.w;
    }
    const int i = p / a.group, h = hk * a.group + p % a.group;
    const float lse = sLse[r];
    if (a.splits == 1) {
      uint4 packed;
      packed.x = T::pack2(acc[0], acc[1]);
      packed.y = T::pack2(acc[2], acc[3]);
      packed.z = T::pack2(acc[4], acc[5]);
      packed.w = T::pack2(acc[6], acc[7]);
      Elem* dst = static_cast<Elem*>(a.out) + b * a.o_bs + i * a.o_rs + h * a.o_hs + c * 8;
      *reinterpret_cast<uint4*>(dst) = packed;
      if (c == 0) a.lse[b * a.lse_bs + h * a.lse_hs + i] = lse == -INFINITY ? INFINITY : lse;
    } else {
      const int64_t row =
          ((static_cast<int64_t>(split) * a.batch + b) * a.nheads + h) * a.seqlen_q + i;
      float* dst = a.part_o + row * a.head_dim + c * 8;
      *reinterpret_cast<float4*>(dst) = make_float4(acc[0], acc[1], acc[2], acc[3]);
      *reinterpret_cast<float4*>(dst + 4) = make_float4(acc[4], acc[5], acc[6], acc[7]);
      if (c == 0) a.part_lse[row] = lse;
    }
  }
  if (a.splits > 1 && a.tickets != nullptr) {
    merge_splits_if_last<Elem, D>(a, smem, b, hk, m_tile, p0, p_end);
  }
}

template <typename Elem, int D, bool kLean>
void launch_attention_layout(const AttnArgs& a, void* stream) {
  auto kernel = kvcache_attn_kernel<Elem, D, kLean>;
  // a.smem_bytes > the layout's need: padding that caps the CTAs per SM (kvcache_api.cu).
  const int smem = a.smem_bytes > AttnCfg<D, kLean>::kSmemBytes ? a.smem_bytes
                                                                 : AttnCfg<D, kLean>::kSmemBytes;
  // The smem opt-in is per device; remember how far it was raised (per device ordinal < 64) so the
  // decode hot path makes no driver call. Not a stream operation: legal during graph capture.
  static std::atomic<int> opted_bytes[64] = {};
  int device = 0;
  cudaGetDevice(&device);
  if (device >= 64 || opted_bytes[device].load(std::memory_order_relaxed) < smem) {
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) {
      throw DeviceError(std::string("kvcache attention: cudaFuncSetAttribute: ") +
                        cudaGetErrorString(err));
    }
    if (device < 64) opted_bytes[device].store(smem, std::memory_order_relaxed);
  }
  const dim3 grid(a.m_tiles * a.splits, a.nheads_k, a.batch);
  kernel<<<grid, kThreads, smem, static_cast<cudaStream_t>(stream)>>>(a);
}

template <ElemTag E, int D>
void launch_attention(const AttnArgs& a, void* stream) {
  using Elem = std::conditional_t<E == ElemTag::kHalf, __half, __nv_bfloat16>;
  if constexpr (lean_supported(D)) {
    if (a.lean) return launch_attention_layout<Elem, D, true>(a, stream);
  }
  launch_attention_layout<Elem, D, false>(a, stream);
}

}  // namespace flash::kvcache_cuda

#define FLASH_KVCACHE_INSTANTIATE(TAG, D) \
  template void flash::kvcache_cuda::launch_attention<flash::kvcache_cuda::ElemTag::TAG, D>( \
      const flash::kvcache_cuda::AttnArgs&, void*);
