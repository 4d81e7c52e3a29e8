// Dropout: the mask is exactly the philox reference (checked through attn_probs signs and the
// output), the kept fraction is about 1 - p, and lse ignores dropout.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "attention_case.h"
#include "common/philox.h"
#include "cpu/cpu_backend.h"

using flash::DType;
using testing_support::AttentionCase;
using testing_support::run_attention_case;

TEST(CpuDropout, MaskAndOutputMatchPhilox) {
  for (DType dt : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    AttentionCase c;
    c.dtype = dt;
    c.batch = 2;
    c.nheads = 3;
    c.nheads_k = 1;
    c.seqlen_q = 37;
    c.seqlen_k = 70;
    c.head_dim = 32;
    c.dropout_p = 0.3f;
    c.probs = true;
    run_attention_case(c);
  }
}

TEST(CpuDropout, VarlenCausalWithProbs) {
  AttentionCase c;
  c.batch = 2;
  c.nheads = 2;
  c.nheads_k = 2;
  c.head_dim = 16;
  c.q_lens = {20, 45};
  c.k_lens = {33, 45};
  c.causal = true;
  c.dropout_p = 0.17f;
  c.probs = true;
  run_attention_case(c);
}

TEST(CpuDropout, KeptFractionIsOneMinusP) {
  const int sq = 256, sk = 256;
  const float p = 0.25f;
  std::vector<float> q(sq * 8, 0.1f), k(sk * 8, 0.1f), v(sk * 8, 1.f), out(sq * 8);
  std::vector<float> lse(sq), probs(static_cast<size_t>(sq) * sk);
  const uint64_t rng_state[2] = {42, 7};
  flash::FwdParams prm;
  prm.dtype = DType::kFloat32;
  prm.q = q.data();
  prm.k = k.data();
  prm.v = v.data();
  prm.out = out.data();
  prm.q_batch_stride = prm.k_batch_stride = prm.v_batch_stride = prm.out_batch_stride = sq * 8;
  prm.q_row_stride = prm.k_row_stride = prm.v_row_stride = prm.out_row_stride = 8;
  prm.q_head_stride = prm.k_head_stride = prm.v_head_stride = prm.out_head_stride = 8;
  prm.softmax_lse = lse.data();
  prm.lse_batch_stride = sq;
  prm.lse_head_stride = sq;
  prm.batch = 1;
  prm.seqlen_q = sq;
  prm.seqlen_k = sk;
  prm.nheads = prm.nheads_k = 1;
  prm.head_dim = 8;
  prm.dropout_p = p;
  prm.rng_state = rng_state;
  prm.attn_probs = probs.data();
  prm.probs_batch_stride = prm.probs_head_stride = static_cast<int64_t>(sq) * sk;
  prm.probs_row_stride = sk;
  flash::cpu::fwd(prm);
  size_t kept = 0;
  for (float x : probs) kept += x > 0;
  const double frac = static_cast<double>(kept) / probs.size();
  EXPECT_NEAR(frac, 1.0 - p, 0.01);
  // Uniform scores q.k = 0.08: lse = 0.08 + log(sk) regardless of dropout.
  for (float x : lse) EXPECT_NEAR(x, std::log(static_cast<double>(sk)) + 0.08, 1e-4);
}

TEST(CpuDropout, Backward) {
  for (DType dt : {DType::kFloat32, DType::kBFloat16}) {
    AttentionCase c;
    c.dtype = dt;
    c.batch = 2;
    c.nheads = 2;
    c.nheads_k = 1;
    c.seqlen_q = 40;
    c.seqlen_k = 75;
    c.head_dim = 32;
    c.dropout_p = 0.2f;
    c.causal = true;
    c.backward = true;
    run_attention_case(c);
  }
}

// Philox4x32-10 known-answer vectors (Random123 kat_vectors).
TEST(Philox, KnownAnswers) {
  auto r = flash::philox4x32_10({0, 0, 0, 0}, 0, 0);
  EXPECT_EQ(r.x, 0x6627e8d5u);
  EXPECT_EQ(r.y, 0xe169c58du);
  EXPECT_EQ(r.z, 0xbc57ac4cu);
  EXPECT_EQ(r.w, 0x9b00dbd8u);
  r = flash::philox4x32_10({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, 0xffffffffu,
                           0xffffffffu);
  EXPECT_EQ(r.x, 0x408f276du);
  EXPECT_EQ(r.y, 0x41c83b0eu);
  EXPECT_EQ(r.z, 0xa20bc7c6u);
  EXPECT_EQ(r.w, 0x6d5451fdu);
  r = flash::philox4x32_10({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, 0xa4093822u,
                           0x299f31d0u);
  EXPECT_EQ(r.x, 0xd16cfe09u);
  EXPECT_EQ(r.y, 0x94fdccebu);
  EXPECT_EQ(r.z, 0x5001e420u);
  EXPECT_EQ(r.w, 0x24126ea1u);
}
