// flash::cpu::fwd_kvcache: in-place append (with rotary), left pad, cache_batch_idx, paging,
// splits; the cache contents and the attention output are both checked.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "cpu/cpu_backend.h"
#include "reference.h"
#include "test_support.h"

using flash::DType;
using namespace testing_support;

namespace {

struct KvCase {
  DType dtype = DType::kFloat32;
  int batch = 2, seqlen_q = 1, nheads = 2, nheads_k = 1, head_dim = 32;
  int batch_cache = 2, seqlen_cache = 64;
  std::vector<int> cache_seqlens;  // empty: cache_seqlen_const
  int cache_seqlen_const = 10;
  int seqlen_new = 0;
  int rotary_dim = 0;
  bool interleaved = false;
  bool causal = false;
  int window_left = -1, window_right = -1;
  std::vector<int> leftpad, cache_batch_idx;
  int page_size = 0;
  int num_splits = 1;
  float softcap = 0.f;
  bool alibi = false;
  uint32_t seed = 11;
};

void run_kv_case(const KvCase& c) {
  SCOPED_TRACE(dtype_name(c.dtype) + " sq" + std::to_string(c.seqlen_q) + " new" +
               std::to_string(c.seqlen_new) + " rot" + std::to_string(c.rotary_dim) +
               (c.interleaved ? "i" : "n") + " page" + std::to_string(c.page_size) + " splits" +
               std::to_string(c.num_splits) + (c.causal ? " causal" : ""));
  std::mt19937 rng(c.seed);
  const int B = c.batch, H = c.nheads, HK = c.nheads_k, d = c.head_dim, S = c.seqlen_cache;
  const DType dt = c.dtype;
  auto fill = [&](Buffer& buf) {
    const auto r = random_normal(rng, buf.size());
    for (int64_t i = 0; i < buf.size(); ++i) buf.set(i, r[i]);
  };
  // Cache storage.
  const int64_t row = static_cast<int64_t>(HK) * d;
  int num_pages = 0, blocks = 0;
  std::vector<int32_t> table;
  if (c.page_size > 0) {
    blocks = S / c.page_size;
    num_pages = B * blocks + 3;
    std::vector<int32_t> perm(num_pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    table.assign(perm.begin(), perm.begin() + B * blocks);
  }
  const int64_t batch_stride = c.page_size > 0 ? row * c.page_size : row * S;
  const int64_t cache_elems = c.page_size > 0 ? batch_stride * num_pages : batch_stride * c.batch_cache;
  Buffer kc(dt, cache_elems), vc(dt, cache_elems);
  fill(kc);
  fill(vc);
  Buffer q(dt, static_cast<int64_t>(B) * c.seqlen_q * H * d), out(dt, q.size(), NAN);
  fill(q);
  Buffer kn(dt, static_cast<int64_t>(B) * std::max(c.seqlen_new, 1) * row), vn(dt, kn.size());
  fill(kn);
  fill(vn);
  const int half = c.rotary_dim / 2;
  Buffer cosb(dt, static_cast<int64_t>(S) * std::max(half, 1)), sinb(dt, cosb.size());
  for (int pos = 0; pos < S; ++pos)
    for (int f = 0; f < half; ++f) {
      const double ang = pos * std::pow(10000.0, -2.0 * f / c.rotary_dim);
      cosb.set(pos * half + f, std::cos(ang));
      sinb.set(pos * half + f, std::sin(ang));
    }
  std::vector<float> lse(static_cast<size_t>(B) * H * c.seqlen_q, NAN);
  std::vector<float> slopes(H);
  for (int h = 0; h < H; ++h) slopes[h] = 0.1f * (h + 1);

  auto cached = [&](int b) { return c.cache_seqlens.empty() ? c.cache_seqlen_const : c.cache_seqlens[b]; };
  auto cache_row = [&](int b) { return c.cache_batch_idx.empty() ? b : c.cache_batch_idx[b]; };
  auto slot_index = [&](int b, int slot, int hk, int ch) -> int64_t {
    if (c.page_size == 0) return cache_row(b) * batch_stride + slot * row + hk * d + ch;
    return table[b * blocks + slot / c.page_size] * batch_stride + (slot % c.page_size) * row +
           hk * d + ch;
  };

  // Expected cache after the append (rotary in double, rounded to dtype).
  std::vector<double> ek(cache_elems), ev(cache_elems);
  for (int64_t i = 0; i < cache_elems; ++i) {
    ek[i] = kc.get(i);
    ev[i] = vc.get(i);
  }
  auto rot_row = [&](int pos, std::vector<double>& x) {
    if (c.rotary_dim == 0) return;
    std::vector<double> cr(half), sr(half);
    for (int f = 0; f < half; ++f) {
      cr[f] = cosb.get(pos * half + f);
      sr[f] = sinb.get(pos * half + f);
    }
    ref::rotary(x, cr, sr, c.rotary_dim, c.interleaved);
    for (auto& e : x) e = round_to(dt, e);
  };
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < c.seqlen_new; ++i)
      for (int hk = 0; hk < HK; ++hk) {
        std::vector<double> x(d);
        for (int ch = 0; ch < d; ++ch) x[ch] = kn.get((b * c.seqlen_new + i) * row + hk * d + ch);
        rot_row(cached(b) + i, x);
        for (int ch = 0; ch < d; ++ch) {
          ek[slot_index(b, cached(b) + i, hk, ch)] = x[ch];
          ev[slot_index(b, cached(b) + i, hk, ch)] = vn.get((b * c.seqlen_new + i) * row + hk * d + ch);
        }
      }

  flash::KvcacheParams p;
  p.dtype = dt;
  p.q = q.data();
  p.q_batch_stride = static_cast<int64_t>(c.seqlen_q) * H * d; p.q_row_stride = H * d; p.q_head_stride = d;
  p.out = out.data();
  p.out_batch_stride = p.q_batch_stride; p.out_row_stride = H * d; p.out_head_stride = d;
  p.k = kc.data();
  p.v = vc.data();
  p.k_batch_stride = p.v_batch_stride = batch_stride;
  p.k_row_stride = p.v_row_stride = row;
  p.k_head_stride = p.v_head_stride = d;
  p.softmax_lse = lse.data();
  p.lse_batch_stride = static_cast<int64_t>(H) * c.seqlen_q;
  p.lse_head_stride = c.seqlen_q;
  p.batch = B; p.seqlen_q = c.seqlen_q; p.seqlen_k = S; p.nheads = H; p.nheads_k = HK; p.head_dim = d;
  if (c.page_size > 0) {
    p.block_table = table.data();
    p.block_table_batch_stride = blocks;
    p.page_size = c.page_size;
    p.num_pages = num_pages;
  }
  p.softmax_scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  p.causal = c.causal;
  p.window_left = c.window_left;
  p.window_right = c.window_right;
  p.softcap = c.softcap;
  if (c.alibi) p.alibi_slopes = slopes.data();
  p.batch_cache = c.batch_cache;
  if (!c.cache_seqlens.empty()) p.cache_seqlens = c.cache_seqlens.data();
  p.cache_seqlen_const = c.cache_seqlen_const;
  if (!c.cache_batch_idx.empty()) p.cache_batch_idx = c.cache_batch_idx.data();
  if (!c.leftpad.empty()) p.cache_leftpad = c.leftpad.data();
  if (c.seqlen_new > 0) {
    p.k_new = kn.data();
    p.v_new = vn.data();
    p.knew_batch_stride = p.vnew_batch_stride = c.seqlen_new * row;
    p.knew_row_stride = p.vnew_row_stride = row;
    p.knew_head_stride = p.vnew_head_stride = d;
    p.seqlen_new = c.seqlen_new;
  }
  if (c.rotary_dim > 0) {
    p.rotary_cos = cosb.data();
    p.rotary_sin = sinb.data();
    p.rotary_dim = c.rotary_dim;
    p.seqlen_rotary = S;
    p.rotary_interleaved = c.interleaved;
  }
  p.num_splits = c.num_splits;
  flash::cpu::fwd_kvcache(p);

  // The cache after the call.
  std::vector<double> gk(cache_elems), gv(cache_elems);
  for (int64_t i = 0; i < cache_elems; ++i) {
    gk[i] = kc.get(i);
    gv[i] = vc.get(i);
  }
  EXPECT_LE(max_rel_error(gk, ek), 2 * dtype_eps(dt)) << "k cache";
  EXPECT_EQ(max_rel_error(gv, ev), 0.0) << "v cache";

  const bool local = c.causal || c.window_left >= 0 || c.window_right >= 0;
  const double tol = dt == DType::kFloat32 ? 2e-5 : 4 * dtype_eps(dt);
  for (int b = 0; b < B; ++b) {
    const int lp = c.leftpad.empty() ? 0 : c.leftpad[b];
    const int sk = cached(b) + c.seqlen_new - lp;
    for (int h = 0; h < H; ++h) {
      const int hk = h / (H / HK);
      ref::HeadSpec s;
      s.seqlen_q = c.seqlen_q;
      s.seqlen_k = sk;
      s.head_dim = d;
      s.window_left = c.window_left;
      s.window_right = c.causal ? 0 : c.window_right;
      s.scale = p.softmax_scale;
      s.softcap = c.softcap;
      if (c.alibi) s.alibi_slope = slopes[h];
      std::vector<double> qq, kk(static_cast<size_t>(sk) * d), vv(kk.size());
      for (int i = 0; i < c.seqlen_q; ++i) {
        std::vector<double> x(d);
        for (int ch = 0; ch < d; ++ch) x[ch] = q.get(((b * c.seqlen_q + i) * H + h) * d + ch);
        rot_row(cached(b) + (local ? i : 0), x);
        qq.insert(qq.end(), x.begin(), x.end());
      }
      for (int j = 0; j < sk; ++j)
        for (int ch = 0; ch < d; ++ch) {
          kk[j * d + ch] = ek[slot_index(b, lp + j, hk, ch)];
          vv[j * d + ch] = ev[slot_index(b, lp + j, hk, ch)];
        }
      const auto f = ref::forward(s, qq, kk, vv);
      std::vector<double> got(qq.size());
      for (int i = 0; i < c.seqlen_q; ++i)
        for (int ch = 0; ch < d; ++ch) got[i * d + ch] = out.get(((b * c.seqlen_q + i) * H + h) * d + ch);
      EXPECT_LE(max_rel_error(got, f.out), tol) << "out b=" << b << " h=" << h;
      for (int i = 0; i < c.seqlen_q; ++i) {
        const float l = lse[(b * H + h) * c.seqlen_q + i];
        if (std::isinf(f.lse[i]))
          EXPECT_TRUE(std::isinf(l) && l > 0);
        else
          EXPECT_NEAR(l, f.lse[i], 1e-4 * (1 + std::fabs(f.lse[i])));
      }
    }
  }
}

}  // namespace

TEST(CpuKvcache, DecodeNoAppend) {
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    KvCase c;
    c.dtype = dt;
    c.cache_seqlens = {37, 64};
    run_kv_case(c);
  }
}

TEST(CpuKvcache, AppendWithRotaryBothStyles) {
  for (bool inter : {false, true})
    for (DType dt : {DType::kFloat32, DType::kFloat16}) {
      KvCase c;
      c.dtype = dt;
      c.seqlen_q = 3;
      c.seqlen_new = 3;
      c.cache_seqlens = {5, 40};
      c.rotary_dim = 16;
      c.interleaved = inter;
      c.causal = true;
      run_kv_case(c);
      c.causal = false;  // query rotary uses the single position cache_seqlens[b]
      c.rotary_dim = 32;
      run_kv_case(c);
    }
}

TEST(CpuKvcache, LeftpadAndBatchIdx) {
  KvCase c;
  c.batch = 3;
  c.batch_cache = 5;
  c.cache_batch_idx = {4, 0, 2};
  c.cache_seqlens = {20, 9, 33};
  c.leftpad = {3, 0, 30};
  c.seqlen_q = 4;
  c.seqlen_new = 2;
  c.rotary_dim = 8;
  c.causal = true;
  run_kv_case(c);
  c.causal = false;
  c.window_left = 5;
  c.window_right = 0;
  c.alibi = true;
  run_kv_case(c);
}

TEST(CpuKvcache, Paged) {
  for (int ps : {1, 3, 16}) {
    KvCase c;
    c.dtype = DType::kBFloat16;
    c.seqlen_cache = 48;
    c.page_size = ps;
    c.cache_seqlens = {0, 30};
    c.seqlen_new = 5;
    c.seqlen_q = 5;
    c.rotary_dim = 32;
    c.interleaved = ps == 3;
    c.causal = true;
    run_kv_case(c);
  }
}

TEST(CpuKvcache, SplitsMatchNoSplit) {
  for (int splits : {2, 3, 7}) {
    KvCase c;
    c.seqlen_cache = 200;
    c.cache_seqlens = {150, 197};
    c.seqlen_new = 3;
    c.seqlen_q = 70;  // more than one query block; with causal some splits are empty for rows
    c.nheads = 4;
    c.nheads_k = 2;
    c.num_splits = splits;
    c.causal = true;
    c.softcap = 20.f;
    run_kv_case(c);
    c.causal = false;
    c.window_left = 20;
    c.window_right = 3;
    run_kv_case(c);
  }
}

TEST(CpuKvcache, ConstSeqlenGqaDims) {
  for (int d : {59, 128, 256}) {
    KvCase c;
    c.dtype = DType::kFloat16;
    c.head_dim = d;
    c.cache_seqlen_const = 25;
    c.seqlen_new = 1;
    c.nheads = 4;
    c.nheads_k = 2;
    run_kv_case(c);
  }
}
