// Validation of the public C++ API: every bad argument raises flash::Error naming that argument,
// before any backend runs; good params pass and are canonicalised.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "expect_error.h"
#include "flash/api.h"

namespace {

// Small valid CPU problem (batch 2, 5 x 7, 4 heads over 2 kv heads, d 16), fp32.
struct Problem {
  int b = 2, sq = 5, sk = 7, h = 4, hk = 2, d = 16;
  std::vector<float> q, k, v, out, lse, dout, dq, dk, dv;
  uint64_t rng[2] = {123, 0};

  Problem() {
    q.assign(size_t(b) * sq * h * d, 0.5f);
    k.assign(size_t(b) * sk * hk * d, 0.25f);
    v.assign(size_t(b) * sk * hk * d, 1.0f);
    out.assign(q.size(), 0.f);
    dout.assign(q.size(), 1.f);
    dq.assign(q.size(), 0.f);
    dk.assign(k.size(), 0.f);
    dv.assign(v.size(), 0.f);
    lse.assign(size_t(b) * h * sq, 0.f);
  }

  flash::FwdParams fwd() {
    flash::FwdParams p;
    p.device = flash::Device::kCPU;
    p.dtype = flash::DType::kFloat32;
    p.batch = b, p.seqlen_q = sq, p.seqlen_k = sk, p.nheads = h, p.nheads_k = hk, p.head_dim = d;
    p.q = q.data(), p.q_batch_stride = int64_t(sq) * h * d, p.q_row_stride = h * d, p.q_head_stride = d;
    p.k = k.data(), p.k_batch_stride = int64_t(sk) * hk * d, p.k_row_stride = hk * d, p.k_head_stride = d;
    p.v = v.data(), p.v_batch_stride = p.k_batch_stride, p.v_row_stride = hk * d, p.v_head_stride = d;
    p.out = out.data(), p.out_batch_stride = p.q_batch_stride, p.out_row_stride = h * d;
    p.out_head_stride = d;
    p.softmax_lse = lse.data(), p.lse_batch_stride = int64_t(h) * sq, p.lse_head_stride = sq;
    p.softmax_scale = 0.25f;
    return p;
  }

  flash::BwdParams bwd() {
    flash::BwdParams p;
    static_cast<flash::FwdParams&>(p) = fwd();
    p.dout = dout.data(), p.dout_batch_stride = p.q_batch_stride, p.dout_row_stride = h * d;
    p.dout_head_stride = d;
    p.dq = dq.data(), p.dq_batch_stride = p.q_batch_stride, p.dq_row_stride = h * d, p.dq_head_stride = d;
    p.dk = dk.data(), p.dk_batch_stride = p.k_batch_stride, p.dk_row_stride = hk * d, p.dk_head_stride = d;
    p.dv = dv.data(), p.dv_batch_stride = p.k_batch_stride, p.dv_row_stride = hk * d, p.dv_head_stride = d;
    return p;
  }
};

using testing_support::expect_error;

struct BadFwdCase {
  const char* name;
  const char* arg;
  std::function<void(flash::FwdParams&)> spoil;
};

void PrintTo(const BadFwdCase& c, std::ostream* os) { *os << c.name; }

class BadFwdArgument : public ::testing::TestWithParam<BadFwdCase> {};

TEST_P(BadFwdArgument, RaisesErrorNamingIt) {
  Problem pr;
  flash::FwdParams p = pr.fwd();
  GetParam().spoil(p);
  expect_error([&] { flash::fwd(p); }, GetParam().arg);
}

const int32_t kBadCu[3] = {0, 9, 4};  // decreasing
const int32_t kGoodCu[3] = {0, 5, 10};

INSTANTIATE_TEST_SUITE_P(
    Validation, BadFwdArgument,
    ::testing::Values(
        BadFwdCase{"heads_not_divisible", "nheads_k", [](auto& p) { p.nheads_k = 3; }},
        BadFwdCase{"zero_kv_heads", "nheads_k", [](auto& p) { p.nheads_k = 0; }},
        BadFwdCase{"head_dim_too_big", "head_dim", [](auto& p) { p.head_dim = 264; }},
        BadFwdCase{"head_dim_zero", "head_dim", [](auto& p) { p.head_dim = 0; }},
        BadFwdCase{"negative_batch", "batch", [](auto& p) { p.batch = -1; }},
        BadFwdCase{"negative_seqlen_q", "seqlen_q", [](auto& p) { p.seqlen_q = -3; }},
        BadFwdCase{"window_below_minus_one", "window_size", [](auto& p) { p.window_left = -2; }},
        BadFwdCase{"right_window_below_minus_one", "window_size", [](auto& p) { p.window_right = -5; }},
        BadFwdCase{"negative_softcap", "softcap", [](auto& p) { p.softcap = -1.f; }},
        BadFwdCase{"dropout_one", "dropout_p", [](auto& p) { p.dropout_p = 1.f; }},
        BadFwdCase{"dropout_negative", "dropout_p", [](auto& p) { p.dropout_p = -0.1f; }},
        BadFwdCase{"dropout_without_rng", "rng_state", [](auto& p) { p.dropout_p = 0.1f; }},
        BadFwdCase{"null_q", "q", [](auto& p) { p.q = nullptr; }},
        BadFwdCase{"null_k", "k", [](auto& p) { p.k = nullptr; }},
        BadFwdCase{"null_out", "out", [](auto& p) { p.out = nullptr; }},
        BadFwdCase{"null_lse", "softmax_lse", [](auto& p) { p.softmax_lse = nullptr; }},
        BadFwdCase{"nan_scale", "softmax_scale", [](auto& p) { p.softmax_scale = NAN; }},
        BadFwdCase{"only_cu_q", "cu_seqlens_k", [](auto& p) { p.cu_seqlens_q = kGoodCu; }},
        BadFwdCase{"decreasing_cu", "cu_seqlens_q",
                   [](auto& p) {
                     p.cu_seqlens_q = kBadCu, p.cu_seqlens_k = kGoodCu, p.total_q = 4, p.total_k = 10;
                     p.seqlen_q = 9;
                   }},
        BadFwdCase{"cu_total_mismatch", "cu_seqlens_q",
                   [](auto& p) {
                     p.cu_seqlens_q = kGoodCu, p.cu_seqlens_k = kGoodCu, p.total_q = 7, p.total_k = 10;
                     p.seqlen_k = 5;
                   }},
        BadFwdCase{"paged_without_page_size", "page_size",
                   [](auto& p) {
                     static const int32_t table[2] = {0, 1};
                     p.block_table = table, p.block_table_batch_stride = 1, p.num_pages = 2;
                   }},
        BadFwdCase{"cuda_fp32", "q",
                   [](auto& p) { p.device = flash::Device::kCUDA; }},
        BadFwdCase{"cuda_odd_head_dim", "head_dim",
                   [](auto& p) {
                     p.device = flash::Device::kCUDA, p.dtype = flash::DType::kBFloat16, p.head_dim = 12;
                   }}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Validation, BackwardNeedsGradients) {
  Problem pr;
  flash::BwdParams p = pr.bwd();
  p.dq = nullptr;
  expect_error([&] { flash::bwd(p); }, "dq");
  p = pr.bwd();
  p.dout = nullptr;
  expect_error([&] { flash::bwd(p); }, "dout");
  p = pr.bwd();
  p.dk = nullptr;
  expect_error([&] { flash::bwd(p); }, "dk");
}

TEST(Validation, BackwardRejectsPagedKv) {
  Problem pr;
  flash::BwdParams p = pr.bwd();
  static const int32_t table[2] = {0, 1};
  p.block_table = table, p.block_table_batch_stride = 1, p.num_pages = 2, p.page_size = 7;
  expect_error([&] { flash::bwd(p); }, "block_table");
}

TEST(Validation, KvcacheChecks) {
  Problem pr;
  flash::KvcacheParams p;
  static_cast<flash::FwdParams&>(p) = pr.fwd();
  p.batch_cache = 2;
  p.cache_seqlen_const = 3;
  p.k_new = pr.k.data();  // without v
  expect_error([&] { flash::fwd_kvcache(p); }, "v");
  p.k_new = nullptr;
  int32_t seqlens[2] = {3, 9};  // 9 > capacity 7
  p.cache_seqlens = seqlens;
  expect_error([&] { flash::fwd_kvcache(p); }, "cache_seqlens");
  seqlens[1] = 2;
  p.rotary_cos = pr.q.data();
  expect_error([&] { flash::fwd_kvcache(p); }, "rotary_sin");
  p.rotary_sin = pr.q.data();
  p.rotary_dim = 7;  // odd
  p.seqlen_rotary = 8;
  expect_error([&] { flash::fwd_kvcache(p); }, "rotary_cos");
  p.rotary_cos = p.rotary_sin = nullptr;
  p.dropout_p = 0.5f;
  expect_error([&] { flash::fwd_kvcache(p); }, "dropout_p");
}

TEST(Validation, SelectsCpuAndCanonicalisesCausal) {
  Problem pr;
  flash::FwdParams p = pr.fwd();
  p.causal = true;
  EXPECT_EQ(flash::select_fwd_impl(p), flash::Impl::kCpu);
  EXPECT_EQ(flash::fwd(p), flash::Impl::kCpu);
  EXPECT_FALSE(p.causal);
  EXPECT_EQ(p.window_right, 0);
  EXPECT_EQ(p.window_left, -1);
  EXPECT_EQ(flash::fwd_workspace_size(p), 0u);
}

TEST(Validation, EmptyBatchIsFine) {
  Problem pr;
  flash::FwdParams p = pr.fwd();
  p.batch = 0;
  p.q = p.k = p.v = nullptr;
  p.out = nullptr;
  p.softmax_lse = nullptr;
  EXPECT_NO_THROW(flash::fwd(p));
}

TEST(Validation, WindowThatCannotBindBecomesUnbounded) {
  Problem pr;
  flash::FwdParams p = pr.fwd();
  p.window_left = 100;
  p.window_right = 100;
  flash::fwd(p);
  EXPECT_EQ(p.window_left, -1);
  EXPECT_EQ(p.window_right, -1);
}

}  // namespace
