// flash::cpu::bwd against the reference's analytic gradients (in double).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "attention_case.h"

using flash::DType;
using testing_support::AttentionCase;
using testing_support::run_attention_case;

namespace {
AttentionCase bwd_case(DType dt, int sq, int sk, int d) {
  AttentionCase c;
  c.dtype = dt;
  c.seqlen_q = sq;
  c.seqlen_k = sk;
  c.head_dim = d;
  c.backward = true;
  return c;
}
}  // namespace

TEST(CpuBwd, PlainAllDtypes) {
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16})
    run_attention_case(bwd_case(dt, 50, 70, 64));
}

TEST(CpuBwd, OddShapesAndHeadDims) {
  run_attention_case(bwd_case(DType::kFloat32, 113, 203, 59));
  run_attention_case(bwd_case(DType::kFloat32, 1, 1, 32));
  for (int d : {32, 96, 256}) run_attention_case(bwd_case(DType::kFloat16, 30, 40, d));
}

TEST(CpuBwd, CausalAndLocal) {
  AttentionCase c = bwd_case(DType::kFloat32, 90, 60, 32);  // sq > sk: empty rows get dq 0
  c.causal = true;
  run_attention_case(c);
  c = bwd_case(DType::kFloat32, 70, 130, 32);
  c.window_left = 9;
  c.window_right = 4;
  run_attention_case(c);
}

TEST(CpuBwd, SoftcapAndAlibi) {
  AttentionCase c = bwd_case(DType::kFloat32, 40, 64, 32);
  c.softcap = 4.f;
  c.score_stddev = 3.0;
  run_attention_case(c);
  c = bwd_case(DType::kFloat16, 40, 64, 32);
  c.nheads = c.nheads_k = 2;
  c.batch = 2;
  c.alibi = 2;
  c.causal = true;
  run_attention_case(c);
}

TEST(CpuBwd, GqaSumsOverGroup) {
  AttentionCase c = bwd_case(DType::kFloat32, 33, 45, 32);
  c.batch = 2;
  c.nheads = 6;
  c.nheads_k = 2;
  c.head_pad = 4;
  run_attention_case(c);
}

TEST(CpuBwd, VarlenSequsedPaged) {
  AttentionCase c = bwd_case(DType::kFloat32, 0, 0, 32);
  c.batch = 3;
  c.nheads = 2;
  c.nheads_k = 1;
  c.q_lens = {10, 1, 44};
  c.k_lens = {20, 30, 44};
  c.seqused_k = {20, 12, 40};  // unused keys must get zero dk/dv
  c.causal = true;
  run_attention_case(c);
  c = bwd_case(DType::kBFloat16, 25, 50, 16);
  c.batch = 2;
  c.page_size = 3;
  run_attention_case(c);
}

TEST(CpuBwd, CombosBf16) {
  AttentionCase c = bwd_case(DType::kBFloat16, 45, 99, 48);
  c.batch = 2;
  c.nheads = 4;
  c.nheads_k = 2;
  c.window_left = 30;
  c.causal = true;
  c.softcap = 8.f;
  c.alibi = 1;
  c.dropout_p = 0.1f;
  run_attention_case(c);
}

#if defined(_OPENMP)
#include <omp.h>
#endif
#include <random>

#include "cpu/cpu_backend.h"

// The backward's reduction order is fixed, so gradients are bitwise identical for any number
// of threads (and across runs).
TEST(CpuBwd, BitwiseDeterministicAcrossThreadCounts) {
  const int B = 2, S = 70, H = 4, HK = 2, D = 24;
  std::mt19937 rng(9);
  std::normal_distribution<float> n(0.f, 1.f);
  auto make = [&](int heads) {
    std::vector<float> x(static_cast<size_t>(B) * S * heads * D);
    for (auto& e : x) e = n(rng);
    return x;
  };
  std::vector<float> q = make(H), k = make(HK), v = make(HK), dout = make(H), out(q.size());
  std::vector<float> lse(static_cast<size_t>(B) * H * S);
  flash::BwdParams p;
  p.dtype = DType::kFloat32;
  p.q = q.data(); p.out = out.data(); p.dout = dout.data();
  p.q_batch_stride = p.out_batch_stride = p.dout_batch_stride = p.dq_batch_stride = S * H * D;
  p.q_row_stride = p.out_row_stride = p.dout_row_stride = p.dq_row_stride = H * D;
  p.q_head_stride = p.out_head_stride = p.dout_head_stride = p.dq_head_stride = D;
  p.k = k.data(); p.v = v.data();
  p.k_batch_stride = p.v_batch_stride = p.dk_batch_stride = p.dv_batch_stride = S * HK * D;
  p.k_row_stride = p.v_row_stride = p.dk_row_stride = p.dv_row_stride = HK * D;
  p.k_head_stride = p.v_head_stride = p.dk_head_stride = p.dv_head_stride = D;
  p.softmax_lse = lse.data();
  p.lse_batch_stride = H * S;
  p.lse_head_stride = S;
  p.batch = B; p.seqlen_q = S; p.seqlen_k = S; p.nheads = H; p.nheads_k = HK; p.head_dim = D;
  p.softmax_scale = 0.2f;
  p.causal = true;
  p.deterministic = true;
  flash::cpu::fwd(p);
  std::vector<std::vector<float>> runs;
  for (int threads : {1, 2, 3}) {
    (void)threads;  // only used with OpenMP
#if defined(_OPENMP)
    omp_set_num_threads(threads);
#endif
    std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
    p.dq = dq.data(); p.dk = dk.data(); p.dv = dv.data();
    flash::cpu::bwd(p);
    dq.insert(dq.end(), dk.begin(), dk.end());
    dq.insert(dq.end(), dv.begin(), dv.end());
    runs.push_back(dq);
  }
#if defined(_OPENMP)
  omp_set_num_threads(omp_get_num_procs());
#endif
  EXPECT_EQ(std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * 4), 0);
  EXPECT_EQ(std::memcmp(runs[0].data(), runs[2].data(), runs[0].size() * 4), 0);
}
