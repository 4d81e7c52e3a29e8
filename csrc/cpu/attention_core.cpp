#include "cpu/attention_core.h"

#include <algorithm>
#include <cmath>

#include "common/philox.h"

namespace flash::cpu {

bool HeadProblem::kept(int i, int j) const {
  return dropout_keep(seed, offset, bh, static_cast<uint32_t>(i), static_cast<uint32_t>(j),
                      keep_threshold);
}

void KeyBlock::load(const HeadProblem& p, int first, int count) {
  const int d = p.head_dim;
  j0 = first;
  n = count;
  k.resize(static_cast<size_t>(count) * d);
  v.resize(static_cast<size_t>(count) * d);
  valid.assign(count, 0);
  for (int t = 0; t < count; ++t) {
    int64_t ko, vo;
    if (!p.keys.locate(first + t, &ko, &vo)) continue;  // never touch an out-of-range page
    valid[t] = 1;
    load_row(p.k, p.dtype, ko, d, &k[static_cast<size_t>(t) * d]);
    load_row(p.v, p.dtype, vo, d, &v[static_cast<size_t>(t) * d]);
  }
}

void block_scores(const HeadProblem& p, const float* q_row, int i, const KeyBlock& kb, float* s,
                  float* cap_grad) {
  const int d = p.head_dim;
  for (int t = 0; t < kb.n; ++t) {
    const int j = kb.j0 + t;
    if (!kb.valid[t] || !p.mask.visible(i, j)) {
      s[t] = -INFINITY;
      if (cap_grad) cap_grad[t] = 0.f;
      continue;
    }
    const float* kr = &kb.k[static_cast<size_t>(t) * d];
    float x = dot(q_row, kr, d) * p.scale;
    if (p.softcap > 0.f) {
      const float th = std::tanh(x / p.softcap);
      x = p.softcap * th;
      if (cap_grad) cap_grad[t] = 1.f - th * th;
    } else if (cap_grad) {
      cap_grad[t] = 1.f;
    }
    if (p.alibi_slope != 0.f) x += alibi_bias(p.alibi_slope, p.mask, i, j);
    s[t] = x;
  }
}

void visible_key_range(const HeadProblem& p, int i0, int i1, int* lo, int* hi) {
  // first_key / end_key are monotone non-decreasing in i, so the extremes are at the ends.
  *lo = std::max(0, p.mask.first_key(i0));
  *hi = std::min(p.seqlen_k(), p.mask.end_key(i1 - 1));
}

void attend_rows(const HeadProblem& p, const float* q, int i0, int nrows, int key_lo, int key_hi,
                 float* out, float* lse) {
  const int d = p.head_dim;
  std::vector<float> row_max(nrows, -INFINITY), row_sum(nrows, 0.f);
  std::fill(out, out + static_cast<size_t>(nrows) * d, 0.f);
  int lo, hi;
  visible_key_range(p, i0, i0 + nrows, &lo, &hi);
  lo = std::max(lo, key_lo);
  hi = std::min(hi, key_hi);

  KeyBlock kb;
  std::vector<float> s(kKeyBlock);
  for (int j0 = lo; j0 < hi; j0 += kKeyBlock) {
    kb.load(p, j0, std::min(kKeyBlock, hi - j0));
    for (int r = 0; r < nrows; ++r) {
      const int i = i0 + r;
      block_scores(p, q + static_cast<size_t>(r) * d, i, kb, s.data());
      float m_blk = -INFINITY;
      for (int t = 0; t < kb.n; ++t) m_blk = std::max(m_blk, s[t]);
      if (m_blk == -INFINITY) continue;  // nothing visible in this block for this row
      // Online softmax: rescale what was accumulated under the old running max.
      const float m_new = std::max(row_max[r], m_blk);
      const float correction = std::exp(row_max[r] - m_new);  // exp(-inf) = 0 on the first hit
      float* o = out + static_cast<size_t>(r) * d;
      row_sum[r] *= correction;
      for (int c = 0; c < d; ++c) o[c] *= correction;
      row_max[r] = m_new;
      for (int t = 0; t < kb.n; ++t) {
        if (s[t] == -INFINITY) continue;
        const float e = std::exp(s[t] - m_new);
        row_sum[r] += e;  // the denominator ignores dropout
        if (p.dropout() && !p.kept(i, kb.j0 + t)) continue;
        const float* vr = &kb.v[static_cast<size_t>(t) * d];
        for (int c = 0; c < d; ++c) o[c] += e * vr[c];
      }
    }
  }
  const float keep_scale = p.dropout() ? 1.f / (1.f - p.dropout_p) : 1.f;
  for (int r = 0; r < nrows; ++r) {
    float* o = out + static_cast<size_t>(r) * d;
    if (row_sum[r] == 0.f) {  // no visible key
      std::fill(o, o + d, 0.f);
      lse[r] = -INFINITY;
      continue;
    }
    const float inv = keep_scale / row_sum[r];
    for (int c = 0; c < d; ++c) o[c] *= inv;
    lse[r] = row_max[r] + std::log(row_sum[r]);
  }
}

}  // namespace flash::cpu
