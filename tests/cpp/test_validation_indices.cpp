// Per-sequence index validation of the C++ API (cu_seqlens, seqused_k, cache_seqlens, leftpad,
// cache_batch_idx, block tables) and the debug mode FLASH_ATTN_CHECK_INDICES=1.
//
// CPU params are checked always (host memory); CUDA params only in the debug mode, which copies
// the arrays to the host: that path needs a GPU and is covered by tests/python/test_validation_*.py.
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "expect_error.h"
#include "flash/api.h"

namespace {

using testing_support::expect_error;

// Sets FLASH_ATTN_CHECK_INDICES for the scope of a test.
class DebugMode {
 public:
  DebugMode() { setenv("FLASH_ATTN_CHECK_INDICES", "1", 1); }
  ~DebugMode() { unsetenv("FLASH_ATTN_CHECK_INDICES"); }
};

// Varlen CPU problem: 2 sequences, q lengths {3, 2}, k lengths {4, 3}, 2 heads over 1 kv head, d 8.
struct Varlen {
  static constexpr int h = 2, hk = 1, d = 8, total_q = 5, total_k = 7;
  std::vector<int32_t> cu_q{0, 3, 5}, cu_k{0, 4, 7}, used{4, 3};
  std::vector<float> q = std::vector<float>(total_q * h * d, 0.5f), k = std::vector<float>(16 * hk * d, 0.25f),
                     v = std::vector<float>(16 * hk * d, 1.f), out = std::vector<float>(total_q * h * d),
                     lse = std::vector<float>(h * total_q), dout = std::vector<float>(total_q * h * d, 1.f),
                     dq = std::vector<float>(total_q * h * d), dk = std::vector<float>(16 * hk * d),
                     dv = std::vector<float>(16 * hk * d);
  // Paged: pages of 4 keys, 2 pages per sequence.
  std::vector<int32_t> table{0, 1, 2, 3};

  flash::FwdParams fwd() {
    flash::FwdParams p;
    p.device = flash::Device::kCPU;
    p.dtype = flash::DType::kFloat32;
    p.batch = 2, p.seqlen_q = 3, p.seqlen_k = 4, p.total_q = total_q;
    p.nheads = h, p.nheads_k = hk, p.head_dim = d;
    p.q = q.data(), p.q_row_stride = h * d, p.q_head_stride = d;
    p.k = k.data(), p.k_row_stride = hk * d, p.k_head_stride = d;
    p.v = v.data(), p.v_row_stride = hk * d, p.v_head_stride = d;
    p.out = out.data(), p.out_row_stride = h * d, p.out_head_stride = d;
    p.softmax_lse = lse.data(), p.lse_head_stride = total_q;
    p.cu_seqlens_q = cu_q.data(), p.cu_seqlens_k = cu_k.data(), p.total_k = total_k;
    p.softmax_scale = 0.3f;
    return p;
  }
  flash::FwdParams paged() {
    flash::FwdParams p = fwd();
    p.block_table = table.data(), p.block_table_batch_stride = 2, p.page_size = 4, p.num_pages = 4;
    p.k_batch_stride = p.v_batch_stride = 4 * hk * d;
    return p;
  }
  flash::BwdParams bwd() {
    flash::BwdParams p;
    static_cast<flash::FwdParams&>(p) = fwd();
    p.dout = dout.data(), p.dout_row_stride = h * d, p.dout_head_stride = d;
    p.dq = dq.data(), p.dq_row_stride = h * d, p.dq_head_stride = d;
    p.dk = dk.data(), p.dk_row_stride = hk * d, p.dk_head_stride = d;
    p.dv = dv.data(), p.dv_row_stride = hk * d, p.dv_head_stride = d;
    return p;
  }
};

TEST(IndexValidation, ValidVarlenAndPagedRun) {
  Varlen s;
  flash::FwdParams p = s.fwd();
  EXPECT_NO_THROW(flash::fwd(p));
  p = s.paged();
  EXPECT_NO_THROW(flash::fwd(p));
  p = s.fwd();
  p.seqused_k = s.used.data();
  EXPECT_NO_THROW(flash::fwd(p));
  flash::BwdParams b = s.bwd();
  EXPECT_NO_THROW(flash::bwd(b));
}

TEST(IndexValidation, CuSeqlens) {
  Varlen s;
  flash::FwdParams p = s.fwd();
  s.cu_q[0] = 1;
  expect_error([&] { flash::fwd(p); }, "cu_seqlens_q");  // must start at 0
  s.cu_q = {0, 4, 5};
  expect_error([&] { flash::fwd(p); }, "cu_seqlens_q");  // 4 > max_seqlen_q 3
  s.cu_q = {0, 3, 6};
  p.seqlen_q = 3;
  expect_error([&] { flash::fwd(p); }, "cu_seqlens_q");  // last != total_q
  s.cu_q = {0, 3, 5};
  s.cu_k = {0, 5, 7};
  expect_error([&] { flash::fwd(p); }, "cu_seqlens_k");  // 5 > max_seqlen_k 4
  s.cu_k = {0, 4, 3};
  expect_error([&] { flash::fwd(p); }, "cu_seqlens_k");  // decreasing
  s.cu_k = {0, 4, 7};
  p.total_k = 6;
  expect_error([&] { flash::fwd(p); }, "cu_seqlens_k");  // 7 > rows of k
  p.total_k = Varlen::total_k;
  p.seqlen_q = -1;
  expect_error([&] { flash::fwd(p); }, "max_seqlen_q");
  p.seqlen_q = 3, p.total_q = -1;
  expect_error([&] { flash::fwd(p); }, "total_q");
}

TEST(IndexValidation, SequsedK) {
  Varlen s;
  flash::FwdParams p = s.fwd();
  p.seqused_k = s.used.data();
  s.used = {5, 3};  // sequence 0 has 4 keys
  expect_error([&] { flash::fwd(p); }, "seqused_k");
  s.used = {4, -1};
  expect_error([&] { flash::fwd(p); }, "seqused_k");
  s.used = {4, 4};
  flash::BwdParams b = s.bwd();
  b.seqused_k = s.used.data();
  expect_error([&] { flash::bwd(b); }, "seqused_k");
}

TEST(IndexValidation, PagedRowCapacity) {
  Varlen s;
  flash::FwdParams p = s.paged();
  p.block_table_batch_stride = 1;  // one page of 4 keys per row: sequence 0 needs 4, sequence 1 only 3
  s.table = {0, 1};
  EXPECT_NO_THROW(flash::fwd(p));
  p.page_size = 2;  // now 4 keys need 2 pages: max_seqlen_k 4 > what a row maps
  p.k_batch_stride = p.v_batch_stride = 2 * Varlen::hk * Varlen::d;
  expect_error([&] { flash::fwd(p); }, "max_seqlen_k");
}

TEST(IndexValidation, BadPageIdsAreMaskedWithoutDebugModeAndReportedWithIt) {
  Varlen s;
  flash::FwdParams p = s.paged();
  s.table = {0, 1, -1, 3};  // each sequence (4 and 3 keys) uses the first page of its row only
  EXPECT_NO_THROW(flash::fwd(p));
  DebugMode debug;
  p = s.paged();
  expect_error([&] { flash::fwd(p); }, "block_table");
  s.table = {0, 1, 4, 3};  // 4 == num_pages
  expect_error([&] { flash::fwd(p); }, "block_table");
  s.table = {0, -1, 2, 99};  // bad entries in unused columns are fine
  EXPECT_NO_THROW(flash::fwd(p));
}

TEST(IndexValidation, EmptyVarlen) {
  Varlen s;
  flash::FwdParams p = s.fwd();
  s.cu_q = {0, 0, 0};
  p.total_q = 0;
  EXPECT_NO_THROW(flash::fwd(p));  // no query rows at all
  p.batch = 0;
  EXPECT_NO_THROW(flash::fwd(p));
}

// Kvcache problem: batch 2, one query, a contiguous cache of 8 keys, 1 kv head, d 8.
struct Kv {
  static constexpr int h = 2, hk = 1, d = 8, cache = 8;
  std::vector<int32_t> seqlens{3, 5}, leftpad{0, 2}, batch_idx{1, 0}, table{0, 1, 2, 3};
  std::vector<float> q = std::vector<float>(2 * h * d, 0.5f), kc = std::vector<float>(2 * cache * hk * d, 0.25f),
                     vc = std::vector<float>(2 * cache * hk * d, 1.f), out = std::vector<float>(2 * h * d),
                     lse = std::vector<float>(2 * h);

  flash::KvcacheParams params() {
    flash::KvcacheParams p;
    p.device = flash::Device::kCPU;
    p.dtype = flash::DType::kFloat32;
    p.batch = 2, p.seqlen_q = 1, p.seqlen_k = cache, p.batch_cache = 2;
    p.nheads = h, p.nheads_k = hk, p.head_dim = d;
    p.q = q.data(), p.q_batch_stride = h * d, p.q_row_stride = h * d, p.q_head_stride = d;
    p.k = kc.data(), p.k_batch_stride = cache * hk * d, p.k_row_stride = hk * d, p.k_head_stride = d;
    p.v = vc.data(), p.v_batch_stride = cache * hk * d, p.v_row_stride = hk * d, p.v_head_stride = d;
    p.out = out.data(), p.out_batch_stride = h * d, p.out_row_stride = h * d, p.out_head_stride = d;
    p.softmax_lse = lse.data(), p.lse_batch_stride = h, p.lse_head_stride = 1;
    p.cache_seqlens = seqlens.data();
    p.softmax_scale = 0.3f;
    return p;
  }
  // The same cache seen as 4 pages of 4 keys, 2 pages per sequence.
  flash::KvcacheParams paged() {
    flash::KvcacheParams p = params();
    p.block_table = table.data(), p.block_table_batch_stride = 2, p.page_size = 4, p.num_pages = 4;
    p.k_batch_stride = p.v_batch_stride = 4 * hk * d;
    return p;
  }
};

TEST(IndexValidation, Kvcache) {
  Kv s;
  flash::KvcacheParams p = s.params();
  EXPECT_NO_THROW(flash::fwd_kvcache(p));
  p.cache_leftpad = s.leftpad.data();
  p.cache_batch_idx = s.batch_idx.data();
  EXPECT_NO_THROW(flash::fwd_kvcache(p));
  s.leftpad = {4, 0};  // > cache_seqlens[0] = 3
  expect_error([&] { flash::fwd_kvcache(p); }, "cache_leftpad");
  s.leftpad = {0, 0};
  s.batch_idx = {0, 2};
  expect_error([&] { flash::fwd_kvcache(p); }, "cache_batch_idx");
  s.batch_idx = {0, 1};
  s.seqlens = {3, 9};
  expect_error([&] { flash::fwd_kvcache(p); }, "cache_seqlens");
  s.seqlens = {3, 5};
  p.seqused_k = s.seqlens.data();
  expect_error([&] { flash::fwd_kvcache(p); }, "seqused_k");
}

TEST(IndexValidation, KvcacheConstantSeqlenCheckedOnEveryDevice) {
  Kv s;
  flash::KvcacheParams p = s.params();
  p.cache_seqlens = nullptr;
  p.cache_seqlen_const = Kv::cache + 1;
  expect_error([&] { flash::fwd_kvcache(p); }, "cache_seqlens");
  // A host integer: checked before any device access, so even for CUDA params.
  p.device = flash::Device::kCUDA;
  p.dtype = flash::DType::kBFloat16;
  expect_error([&] { flash::kvcache_workspace_size(p); }, "cache_seqlens");
  p.device_index = -1;
  expect_error([&] { flash::kvcache_workspace_size(p); }, "device_index");
}

TEST(IndexValidation, KvcachePagedDebugMode) {
  Kv s;
  flash::KvcacheParams p = s.paged();
  s.table = {0, 1, -1, 3};  // sequence 1 (5 keys) uses pages 0 and 1 of its row: -1 is bad
  EXPECT_NO_THROW(flash::fwd_kvcache(p));
  DebugMode debug;
  expect_error([&] { flash::fwd_kvcache(p); }, "block_table");
  s.table = {0, 7, 2, 3};  // sequence 0 (3 keys) never uses its second page: fine
  EXPECT_NO_THROW(flash::fwd_kvcache(p));
  s.seqlens = {5, 5};  // now it does
  expect_error([&] { flash::fwd_kvcache(p); }, "block_table");
}

}  // namespace
