// Scalar and pointer arguments of the C++ API not covered by test_validation.cpp: each bad value
// raises flash::Error naming the argument, before any backend runs.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "expect_error.h"
#include "flash/api.h"

namespace {

using testing_support::expect_error;

// A valid CPU kvcache problem (batch 2, 1 query, cache of 8, 2 heads over 1, d 8); the forward
// params are its FwdParams part.
struct Problem {
  static constexpr int h = 2, hk = 1, d = 8, cache = 8;
  std::vector<float> q = std::vector<float>(2 * h * d, 0.5f), kc = std::vector<float>(2 * cache * hk * d, 0.25f),
                     vc = std::vector<float>(2 * cache * hk * d, 1.f), out = std::vector<float>(2 * h * d),
                     lse = std::vector<float>(2 * h), probs = std::vector<float>(2 * h * cache);
  uint64_t rng[2] = {1, 2};

  flash::KvcacheParams kv() {
    flash::KvcacheParams p;
    p.device = flash::Device::kCPU;
    p.dtype = flash::DType::kFloat32;
    p.batch = 2, p.seqlen_q = 1, p.seqlen_k = cache, p.batch_cache = 2, p.cache_seqlen_const = 4;
    p.nheads = h, p.nheads_k = hk, p.head_dim = d;
    p.q = q.data(), p.q_batch_stride = h * d, p.q_row_stride = h * d, p.q_head_stride = d;
    p.k = kc.data(), p.k_batch_stride = cache * hk * d, p.k_row_stride = hk * d, p.k_head_stride = d;
    p.v = vc.data(), p.v_batch_stride = cache * hk * d, p.v_row_stride = hk * d, p.v_head_stride = d;
    p.out = out.data(), p.out_batch_stride = h * d, p.out_row_stride = h * d, p.out_head_stride = d;
    p.softmax_lse = lse.data(), p.lse_batch_stride = h, p.lse_head_stride = 1;
    p.softmax_scale = 0.3f;
    return p;
  }
  flash::FwdParams fwd() { return static_cast<flash::FwdParams>(kv()); }
};

TEST(ArgValidation, ValidProblemsRun) {
  Problem pr;
  flash::KvcacheParams k = pr.kv();
  EXPECT_NO_THROW(flash::fwd_kvcache(k));
  flash::FwdParams f = pr.fwd();
  EXPECT_NO_THROW(flash::fwd(f));
}

TEST(ArgValidation, Forward) {
  Problem pr;
  const std::vector<std::pair<const char*, std::function<void(flash::FwdParams&)>>> cases = {
      {"device", [](auto& p) { p.device = static_cast<flash::Device>(7); }},
      {"dtype", [](auto& p) { p.dtype = static_cast<flash::DType>(9); }},
      {"nheads", [](auto& p) { p.nheads = 0; }},
      {"seqlen_k", [](auto& p) { p.seqlen_k = -1; }},
      {"softcap", [](auto& p) { p.softcap = NAN; }},
      {"softmax_scale", [](auto& p) { p.softmax_scale = INFINITY; }},
      {"dropout_p", [](auto& p) { p.dropout_p = NAN; }},
      {"alibi_slopes", [](auto& p) { p.alibi_batch_stride = -1; }},
      {"null_v", [](auto& p) { p.v = nullptr; }},
      {"attn_probs", [&](auto& p) { p.attn_probs = pr.probs.data(), p.probs_row_stride = 4; }},
      {"num_pages", [](auto& p) {
         static const int32_t table[2] = {0, 1};
         p.block_table = table, p.block_table_batch_stride = 1, p.page_size = 8, p.num_pages = 0;
       }},
      {"block_table", [](auto& p) {
         static const int32_t table[2] = {0, 1};
         p.block_table = table, p.block_table_batch_stride = 0, p.page_size = 8, p.num_pages = 2;
       }},
      {"device_index", [](auto& p) {
         p.device = flash::Device::kCUDA, p.dtype = flash::DType::kFloat16, p.device_index = -2;
       }},
  };
  for (const auto& [arg, spoil] : cases) {
    flash::FwdParams p = pr.fwd();
    spoil(p);
    const std::string want = std::string(arg) == "null_v" ? "v" : arg;
    SCOPED_TRACE(arg);
    expect_error([&] { flash::fwd(p); }, want);
  }
}

TEST(ArgValidation, Kvcache) {
  Problem pr;
  const std::vector<std::pair<const char*, std::function<void(flash::KvcacheParams&)>>> cases = {
      {"cu_seqlens_q", [](auto& p) {
         static const int32_t cu[3] = {0, 1, 2};
         p.cu_seqlens_q = cu, p.cu_seqlens_k = cu;
       }},
      {"k", [](auto& p) { p.seqlen_new = -1; }},
      {"cache_seqlens", [](auto& p) { p.cache_seqlen_const = -3; }},
      {"cache_seqlens", [](auto& p) { p.cache_seqlen_const = 9; }},
      {"k_cache", [](auto& p) { p.batch_cache = 1; }},
      {"k_cache", [&](auto& p) { p.k_new = pr.q.data(), p.v_new = pr.q.data(), p.seqlen_new = 9; }},
      {"cache_batch_idx", [](auto& p) {
         static const int32_t table[2] = {0, 1}, idx[2] = {0, 1};
         p.block_table = table, p.block_table_batch_stride = 1, p.page_size = 8, p.num_pages = 2;
         p.cache_batch_idx = idx;
       }},
      {"rotary_cos", [&](auto& p) {
         p.rotary_cos = p.rotary_sin = pr.q.data(), p.rotary_dim = 4, p.seqlen_rotary = 0;
       }},
      {"rotary_cos", [&](auto& p) {
         p.rotary_cos = p.rotary_sin = pr.q.data(), p.rotary_dim = 10, p.seqlen_rotary = 8;
       }},
      {"attn_probs", [&](auto& p) { p.attn_probs = pr.probs.data(); }},
      {"window_size", [](auto& p) { p.window_left = -4; }},
  };
  for (const auto& [arg, spoil] : cases) {
    flash::KvcacheParams p = pr.kv();
    spoil(p);
    SCOPED_TRACE(arg);
    expect_error([&] { flash::fwd_kvcache(p); }, arg);
  }
}

}  // namespace
