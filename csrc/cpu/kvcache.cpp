// flash::cpu::fwd_kvcache: append k_new/v_new into the cache (rotating k_new), then attend with
// the same core as fwd through a KeySource over the cache (left pad, cache_batch_idx, paging).
// num_splits > 1 attends disjoint key ranges separately and merges them with split_combine.h,
// the exact combine the CUDA split-KV path uses.
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/rotary.h"
#include "common/split_combine.h"
#include "cpu/attention_core.h"
#include "cpu/cpu_backend.h"
#include "cpu/parallel.h"
#include "cpu/problem_setup.h"
#include "cpu/sequence_layout.h"

namespace flash::cpu {
namespace {

struct CacheSequence {
  int cache_row = 0;  // batch index into a contiguous cache
  int cached = 0;     // keys in the cache before this call
  int leftpad = 0;    // first valid key
  int keys = 0;       // attended keys: cached + seqlen_new - leftpad
};

CacheSequence cache_sequence(const KvcacheParams& p, int b) {
  CacheSequence c;
  c.cache_row = p.cache_batch_idx ? p.cache_batch_idx[b] : b;
  c.cached = p.cache_seqlens ? p.cache_seqlens[b] : p.cache_seqlen_const;
  c.leftpad = p.cache_leftpad ? p.cache_leftpad[b] : 0;
  c.keys = c.cached + (p.k_new ? p.seqlen_new : 0) - c.leftpad;
  // Never read past the cache's capacity (validation should already have refused that).
  c.keys = std::min(c.keys, p.seqlen_k - c.leftpad);
  return c;
}

// Cache slots of (sequence, kv head) by physical index (first_physical = first_valid).
KeySource cache_keys(const KvcacheParams& p, int b, const CacheSequence& c, int hk,
                     int first_valid) {
  KeySource ks;
  ks.first_physical = first_valid;
  ks.k_row_stride = p.k_row_stride;
  ks.v_row_stride = p.v_row_stride;
  ks.k_head_offset = hk * p.k_head_stride;
  ks.v_head_offset = hk * p.v_head_stride;
  if (p.block_table) {
    ks.pages = p.block_table + b * p.block_table_batch_stride;
    ks.page_size = p.page_size;
    ks.num_pages = p.num_pages;
    ks.k_page_stride = p.k_batch_stride;
    ks.v_page_stride = p.v_batch_stride;
  } else {
    ks.k_row0 = c.cache_row * p.k_batch_stride;
    ks.v_row0 = c.cache_row * p.v_batch_stride;
  }
  return ks;
}

// Rotates the first rotary_dim dims of x with cos/sin row `pos`, then rounds to the storage
// dtype (the GPU rotates while staging in the input dtype, so the rotated value is rounded).
void rotate(const KvcacheParams& p, int pos, float* x) {
  if (!p.rotary_cos || pos < 0 || pos >= p.seqlen_rotary) return;
  const int half = p.rotary_dim / 2;
  std::vector<float> c(half), s(half);
  load_row(p.rotary_cos, p.dtype, static_cast<int64_t>(pos) * half, half, c.data());
  load_row(p.rotary_sin, p.dtype, static_cast<int64_t>(pos) * half, half, s.data());
  apply_rotary(x, c.data(), s.data(), p.rotary_dim, p.rotary_interleaved);
  for (int d = 0; d < p.rotary_dim; ++d) x[d] = round_to_dtype(x[d], p.dtype);
}

void append_new_keys(const KvcacheParams& p) {
  if (!p.k_new || p.seqlen_new <= 0) return;
  const int d = p.head_dim;
  const int64_t tasks = static_cast<int64_t>(p.batch) * p.seqlen_new;
  FLASH_CPU_PARALLEL_FOR
  for (int64_t task = 0; task < tasks; ++task) {
    const int b = static_cast<int>(task / p.seqlen_new);
    const int i = static_cast<int>(task % p.seqlen_new);
    const CacheSequence c = cache_sequence(p, b);
    const int slot = c.cached + i;
    if (slot >= p.seqlen_k) continue;  // past the cache's capacity: nowhere to write
    std::vector<float> kx(d), vx(d);
    for (int hk = 0; hk < p.nheads_k; ++hk) {
      const KeySource dst = cache_keys(p, b, c, hk, 0);
      int64_t ko, vo;
      if (!dst.locate(slot, &ko, &vo)) continue;  // page out of range: never dereferenced
      load_row(p.k_new, p.dtype, b * p.knew_batch_stride + i * p.knew_row_stride +
               hk * p.knew_head_stride, d, kx.data());
      load_row(p.v_new, p.dtype, b * p.vnew_batch_stride + i * p.vnew_row_stride +
               hk * p.vnew_head_stride, d, vx.data());
      rotate(p, slot, kx.data());
      store_row(const_cast<void*>(p.k), p.dtype, ko, d, kx.data());
      store_row(const_cast<void*>(p.v), p.dtype, vo, d, vx.data());
    }
  }
}

}  // namespace

void fwd_kvcache(const KvcacheParams& prm) {
  append_new_keys(prm);

  const int d = prm.head_dim;
  const int q_blocks = (prm.seqlen_q + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = static_cast<int64_t>(prm.batch) * prm.nheads * q_blocks;
  const bool local = prm.window_left >= 0 || effective_window_right(prm) >= 0;
  FLASH_CPU_PARALLEL_FOR
  for (int64_t task = 0; task < tasks; ++task) {
    const int b = static_cast<int>(task / (static_cast<int64_t>(prm.nheads) * q_blocks));
    const int h = static_cast<int>(task / q_blocks % prm.nheads);
    const int i0 = static_cast<int>(task % q_blocks) * kQueryBlock;
    const SequenceLayout seq = sequence_layout(prm, b);
    if (i0 >= seq.seqlen_q) continue;
    const int nrows = std::min(kQueryBlock, seq.seqlen_q - i0);
    const CacheSequence c = cache_sequence(prm, b);
    const int keys = std::max(c.keys, 0);
    const HeadProblem hp = make_head_problem(
        prm, b, h, seq.seqlen_q, keys, cache_keys(prm, b, c, kv_head_of(prm, h), c.leftpad));

    std::vector<float> q(static_cast<size_t>(nrows) * d), out(q.size()), lse(nrows);
    const int64_t q_off = seq.q_offset(prm.q_batch_stride, prm.q_row_stride) +
                          h * prm.q_head_stride;
    for (int r = 0; r < nrows; ++r) {
      float* qr = &q[r * size_t(d)];
      load_row(prm.q, prm.dtype, q_off + (i0 + r) * prm.q_row_stride, d, qr);
      rotate(prm, c.cached + (local ? i0 + r : 0), qr);
    }

    const int splits = std::max(1, std::min(prm.num_splits, std::max(keys, 1)));
    if (splits == 1) {
      attend_rows(hp, q.data(), i0, nrows, 0, keys, out.data(), lse.data());
    } else {
      // Partials laid out [split][row][dim] and [split][row], combined row by row.
      const int per_split = (keys + splits - 1) / splits;
      std::vector<float> part_out(static_cast<size_t>(splits) * nrows * d);
      std::vector<float> part_lse(static_cast<size_t>(splits) * nrows);
      for (int sp = 0; sp < splits; ++sp)
        attend_rows(hp, q.data(), i0, nrows, sp * per_split, std::min(keys, (sp + 1) * per_split),
                    &part_out[static_cast<size_t>(sp) * nrows * d], &part_lse[sp * size_t(nrows)]);
      for (int r = 0; r < nrows; ++r) {
        lse[r] = combine_lse(&part_lse[r], splits, nrows);
        float* o = &out[r * size_t(d)];
        std::fill(o, o + d, 0.f);
        for (int sp = 0; sp < splits; ++sp) {
          const float w = split_weight(part_lse[sp * size_t(nrows) + r], lse[r]);
          if (w == 0.f) continue;
          const float* po = &part_out[(static_cast<size_t>(sp) * nrows + r) * d];
          for (int cc = 0; cc < d; ++cc) o[cc] += w * po[cc];
        }
      }
    }

    const int64_t o_off = seq.q_offset(prm.out_batch_stride, prm.out_row_stride) +
                          h * prm.out_head_stride;
    float* lse_dst = prm.softmax_lse + lse_offset(prm, seq, h);
    for (int r = 0; r < nrows; ++r) {
      store_row(prm.out, prm.dtype, o_off + (i0 + r) * prm.out_row_stride, d, &out[r * size_t(d)]);
      lse_dst[i0 + r] = public_lse(lse[r]);
    }
  }
}

}  // namespace flash::cpu
