#include "attention_case.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "common/philox.h"
#include "cpu/cpu_backend.h"
#include "reference.h"
#include "test_support.h"

namespace testing_support {

using flash::DType;

std::string AttentionCase::describe() const {
  std::ostringstream o;
  o << dtype_name(dtype) << " b" << batch << " sq" << seqlen_q << " sk" << seqlen_k << " h"
    << nheads << "/" << nheads_k << " d" << head_dim << (causal ? " causal" : "") << " win("
    << window_left << "," << window_right << ") cap" << softcap << " alibi" << alibi << " p"
    << dropout_p << (q_lens.empty() ? "" : " varlen_q") << (k_lens.empty() ? "" : " varlen_k")
    << (seqused_k.empty() ? "" : " seqused") << " page" << page_size << " pad" << head_pad
    << (probs ? " probs" : "") << (backward ? " bwd" : "");
  return o.str();
}

namespace {

// A (rows, heads, dim) view of one packed or batched q-like/k-like tensor.
struct Layout {
  bool packed = false;        // varlen: rows indexed by cu offsets
  std::vector<int> starts;    // packed: first row of each sequence
  int64_t batch_stride = 0, row_stride = 0, head_stride = 0;
  int64_t index(int b, int row, int h, int c) const {
    return (packed ? (starts[b] + row) * row_stride : b * batch_stride + row * row_stride) +
           h * head_stride + c;
  }
};

Layout make_layout(const std::vector<int>& lens, bool packed, int max_len, int heads, int hs,
                   int64_t* total) {
  Layout l;
  l.packed = packed;
  l.head_stride = hs;
  l.row_stride = static_cast<int64_t>(heads) * hs;
  l.batch_stride = l.row_stride * max_len;
  int acc = 0;
  for (int len : lens) {
    l.starts.push_back(acc);
    acc += len;
  }
  *total = packed ? l.row_stride * acc : l.batch_stride * static_cast<int64_t>(lens.size());
  return l;
}

}  // namespace

void run_attention_case(const AttentionCase& c) {
  SCOPED_TRACE(c.describe());
  std::mt19937 rng(c.seed);
  const int B = c.batch, H = c.nheads, HK = c.nheads_k, d = c.head_dim, hs = d + c.head_pad;
  const bool vq = !c.q_lens.empty(), vk = !c.k_lens.empty();
  std::vector<int> qlen = vq ? c.q_lens : std::vector<int>(B, c.seqlen_q);
  std::vector<int> klen = vk ? c.k_lens : std::vector<int>(B, c.seqlen_k);
  std::vector<int> used = c.seqused_k.empty() ? klen : c.seqused_k;
  const int max_q = *std::max_element(qlen.begin(), qlen.end());
  const int max_k = *std::max_element(klen.begin(), klen.end());

  // ---- q, out, dout, dq ----
  int64_t q_total;
  const Layout ql = make_layout(qlen, vq, max_q, H, hs, &q_total);
  Buffer q(c.dtype, q_total), out(c.dtype, q_total, NAN), dout(c.dtype, q_total),
      dq(c.dtype, q_total, NAN);
  for (int64_t i = 0; i < q_total; ++i) {
    q.set(i, random_normal(rng, 1, c.score_stddev)[0]);
    dout.set(i, random_normal(rng, 1)[0]);
  }

  // ---- k, v (contiguous or paged), dk, dv ----
  Layout kl;
  int64_t k_total;
  std::vector<int32_t> block_table;
  int max_blocks = 0, num_pages = 0;
  if (c.page_size > 0) {
    for (int len : klen) max_blocks = std::max(max_blocks, (len + c.page_size - 1) / c.page_size);
    for (int len : klen) num_pages += (len + c.page_size - 1) / c.page_size;
    num_pages += 2;  // unused pages
    std::vector<int32_t> perm(num_pages);
    std::iota(perm.begin(), perm.end(), 0);
    if (c.shuffle_pages) std::shuffle(perm.begin(), perm.end(), rng);
    block_table.assign(static_cast<size_t>(B) * max_blocks, num_pages + 7);  // never read
    int next = 0;
    for (int b = 0; b < B; ++b)
      for (int blk = 0; blk * c.page_size < klen[b]; ++blk)
        block_table[b * max_blocks + blk] = perm[next++];
    kl.head_stride = hs;
    kl.row_stride = static_cast<int64_t>(HK) * hs;
    kl.batch_stride = kl.row_stride * c.page_size;  // page stride
    k_total = kl.batch_stride * num_pages;
  } else {
    kl = make_layout(klen, vk, max_k, HK, hs, &k_total);
  }
  auto k_index = [&](int b, int j, int hk, int ch) -> int64_t {
    if (c.page_size == 0) return kl.index(b, j, hk, ch);
    const int page = block_table[b * max_blocks + j / c.page_size];
    return page * kl.batch_stride + (j % c.page_size) * kl.row_stride + hk * kl.head_stride + ch;
  };
  Buffer k(c.dtype, k_total), v(c.dtype, k_total), dk(c.dtype, k_total, NAN),
      dv(c.dtype, k_total, NAN);
  for (int64_t i = 0; i < k_total; ++i) {
    k.set(i, random_normal(rng, 1)[0]);
    v.set(i, random_normal(rng, 1)[0]);
  }
  if (c.invalid_logical_page >= 0)
    for (int b = 0; b < B; ++b)
      if (c.invalid_logical_page < max_blocks) block_table[b * max_blocks + c.invalid_logical_page] = -1;

  // ---- lse, probs, slopes, rng ----
  const int64_t lse_total = vq ? static_cast<int64_t>(H) * ql.starts.back() + H * qlen.back()
                               : static_cast<int64_t>(B) * H * max_q;
  std::vector<float> lse(lse_total, NAN);
  const int total_q = vq ? ql.starts.back() + qlen.back() : 0;
  Buffer probs(c.dtype, c.probs ? static_cast<int64_t>(B) * H * max_q * max_k : 0, NAN);
  std::vector<float> slopes(static_cast<size_t>(B) * H);
  for (auto& s : slopes) s = std::uniform_real_distribution<float>(0.05f, 0.6f)(rng);
  const uint64_t rng_state[2] = {0x0123456789ABCDEFull + c.seed, 0x100000004ull};
  std::vector<int32_t> cu_q(B + 1, 0), cu_k(B + 1, 0);
  for (int b = 0; b < B; ++b) {
    cu_q[b + 1] = cu_q[b] + qlen[b];
    cu_k[b + 1] = cu_k[b] + klen[b];
  }

  flash::BwdParams p;
  p.dtype = c.dtype;
  p.q = q.data();
  p.q_batch_stride = ql.batch_stride; p.q_row_stride = ql.row_stride; p.q_head_stride = hs;
  p.k = k.data();
  p.k_batch_stride = kl.batch_stride; p.k_row_stride = kl.row_stride; p.k_head_stride = hs;
  p.v = v.data();
  p.v_batch_stride = kl.batch_stride; p.v_row_stride = kl.row_stride; p.v_head_stride = hs;
  p.out = out.data();
  p.out_batch_stride = ql.batch_stride; p.out_row_stride = ql.row_stride; p.out_head_stride = hs;
  p.softmax_lse = lse.data();
  p.lse_batch_stride = static_cast<int64_t>(H) * max_q;
  p.lse_head_stride = vq ? total_q : max_q;
  p.batch = B; p.seqlen_q = max_q; p.seqlen_k = max_k; p.nheads = H; p.nheads_k = HK;
  p.head_dim = d; p.total_q = total_q;
  if (vq) p.cu_seqlens_q = cu_q.data();
  if (vk) p.cu_seqlens_k = cu_k.data(), p.total_k = cu_k.back();
  if (!c.seqused_k.empty()) p.seqused_k = c.seqused_k.data();
  if (c.page_size > 0) {
    p.block_table = block_table.data();
    p.block_table_batch_stride = max_blocks;
    p.page_size = c.page_size;
    p.num_pages = num_pages;
  }
  p.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  p.causal = c.causal;
  p.window_left = c.window_left;
  p.window_right = c.window_right;
  p.softcap = c.softcap;
  if (c.alibi) {
    p.alibi_slopes = slopes.data();
    p.alibi_batch_stride = c.alibi == 2 ? H : 0;
  }
  p.dropout_p = c.dropout_p;
  p.rng_state = rng_state;
  if (c.probs) {
    p.attn_probs = probs.data();
    p.probs_batch_stride = static_cast<int64_t>(H) * max_q * max_k;
    p.probs_head_stride = static_cast<int64_t>(max_q) * max_k;
    p.probs_row_stride = max_k;
  }
  flash::cpu::fwd(p);

  if (c.backward) {
    p.dout = dout.data();
    p.dout_batch_stride = ql.batch_stride; p.dout_row_stride = ql.row_stride; p.dout_head_stride = hs;
    p.dq = dq.data();
    p.dq_batch_stride = ql.batch_stride; p.dq_row_stride = ql.row_stride; p.dq_head_stride = hs;
    p.dk = dk.data();
    p.dk_batch_stride = kl.batch_stride; p.dk_row_stride = kl.row_stride; p.dk_head_stride = hs;
    p.dv = dv.data();
    p.dv_batch_stride = kl.batch_stride; p.dv_row_stride = kl.row_stride; p.dv_head_stride = hs;
    flash::cpu::bwd(p);
  }

  // ---- compare per (sequence, head) ----
  const double eps = dtype_eps(c.dtype);
  const double fwd_tol = (c.dtype == DType::kFloat32 ? 2e-5 : 4 * eps) * c.tol_scale;
  const double bwd_tol = (c.dtype == DType::kFloat32 ? 1e-4 : 16 * eps) * c.tol_scale;
  const uint32_t threshold = flash::dropout_keep_threshold(c.dropout_p);
  const int group = H / HK;
  for (int b = 0; b < B; ++b) {
    std::vector<std::vector<double>> dk_sum(HK), dv_sum(HK), kk(HK), vv(HK);
    for (int hk = 0; hk < HK; ++hk) {
      kk[hk].resize(static_cast<size_t>(used[b]) * d);
      vv[hk].resize(kk[hk].size());
      for (int j = 0; j < used[b]; ++j)
        for (int ch = 0; ch < d; ++ch) {
          const bool ok = c.page_size == 0 || block_table[b * max_blocks + j / c.page_size] >= 0;
          kk[hk][j * d + ch] = ok ? k.get(k_index(b, j, hk, ch)) : 0.0;
          vv[hk][j * d + ch] = ok ? v.get(k_index(b, j, hk, ch)) : 0.0;
        }
      dk_sum[hk].assign(kk[hk].size(), 0.0);
      dv_sum[hk].assign(kk[hk].size(), 0.0);
    }
    for (int h = 0; h < H; ++h) {
      SCOPED_TRACE("b=" + std::to_string(b) + " h=" + std::to_string(h));
      const int hk = h / group;
      ref::HeadSpec s;
      s.seqlen_q = qlen[b];
      s.seqlen_k = used[b];
      s.head_dim = d;
      s.window_left = c.window_left;
      s.window_right = c.causal ? 0 : c.window_right;
      s.scale = p.softmax_scale;
      s.softcap = c.softcap;
      if (c.alibi) s.alibi_slope = slopes[c.alibi == 2 ? b * H + h : h];
      s.dropout_p = c.dropout_p;
      const uint32_t bh = static_cast<uint32_t>(b * H + h);
      s.keep = [&](int i, int j) {
        return flash::dropout_keep(rng_state[0], rng_state[1], bh, i, j, threshold);
      };
      if (c.page_size > 0) {
        s.key_valid.resize(used[b]);
        for (int j = 0; j < used[b]; ++j)
          s.key_valid[j] = block_table[b * max_blocks + j / c.page_size] >= 0;
      }
      std::vector<double> qq(static_cast<size_t>(qlen[b]) * d), oo(qq.size()), ddo(qq.size());
      for (int i = 0; i < qlen[b]; ++i)
        for (int ch = 0; ch < d; ++ch) {
          qq[i * d + ch] = q.get(ql.index(b, i, h, ch));
          oo[i * d + ch] = out.get(ql.index(b, i, h, ch));
          ddo[i * d + ch] = dout.get(ql.index(b, i, h, ch));
        }
      const ref::HeadForward f = ref::forward(s, qq, kk[hk], vv[hk]);
      EXPECT_LE(max_rel_error(oo, f.out), fwd_tol) << "out";
      for (int i = 0; i < qlen[b]; ++i) {
        const float got = lse[(vq ? h * p.lse_head_stride + cu_q[b]
                                  : b * p.lse_batch_stride + h * p.lse_head_stride) + i];
        if (std::isinf(f.lse[i])) {
          EXPECT_TRUE(std::isinf(got) && got > 0) << "lse row " << i << " got " << got;
        } else {
          EXPECT_NEAR(got, f.lse[i], 1e-5 * (1 + std::fabs(f.lse[i])) * (c.dtype == DType::kFloat32 ? 1 : 10))
              << "lse row " << i;
        }
      }
      if (c.probs) {
        std::vector<double> got, want;
        for (int i = 0; i < max_q; ++i)
          for (int j = 0; j < max_k; ++j) {
            got.push_back(probs.get(b * p.probs_batch_stride + h * p.probs_head_stride +
                                    i * p.probs_row_stride + j));
            want.push_back(i < qlen[b] && j < used[b] ? f.probs[i * size_t(used[b]) + j] : 0.0);
          }
        EXPECT_LE(max_rel_error(got, want), fwd_tol) << "attn_probs";
        size_t sign_mismatch = 0;
        for (size_t t = 0; t < got.size(); ++t)
          if ((got[t] < 0) != (want[t] < 0)) ++sign_mismatch;
        EXPECT_EQ(sign_mismatch, 0u) << "dropout mask in attn_probs";
      }
      if (c.backward) {
        const ref::HeadGrads g = ref::backward(s, qq, kk[hk], vv[hk], ddo);
        std::vector<double> got(qq.size());
        for (int i = 0; i < qlen[b]; ++i)
          for (int ch = 0; ch < d; ++ch) got[i * d + ch] = dq.get(ql.index(b, i, h, ch));
        EXPECT_LE(max_rel_error(got, g.dq), bwd_tol) << "dq";
        for (size_t t = 0; t < g.dk.size(); ++t) {
          dk_sum[hk][t] += g.dk[t];
          dv_sum[hk][t] += g.dv[t];
        }
      }
    }
    if (c.backward) {
      for (int hk = 0; hk < HK; ++hk) {
        SCOPED_TRACE("b=" + std::to_string(b) + " hk=" + std::to_string(hk));
        const int rows = c.page_size > 0 ? used[b] : klen[b];  // unused keys must get zeros
        std::vector<double> gk, gv, wk, wv;
        for (int j = 0; j < rows; ++j) {
          if (c.page_size > 0 && block_table[b * max_blocks + j / c.page_size] < 0) continue;
          for (int ch = 0; ch < d; ++ch) {
            gk.push_back(dk.get(k_index(b, j, hk, ch)));
            gv.push_back(dv.get(k_index(b, j, hk, ch)));
            wk.push_back(j < used[b] ? dk_sum[hk][j * d + ch] : 0.0);
            wv.push_back(j < used[b] ? dv_sum[hk][j * d + ch] : 0.0);
          }
        }
        EXPECT_LE(max_rel_error(gk, wk), bwd_tol) << "dk";
        EXPECT_LE(max_rel_error(gv, wv), bwd_tol) << "dv";
      }
    }
  }
}

}  // namespace testing_support
