// flash::cpu::fwd against the double reference: each feature alone, odd shapes, and combos.
#include <gtest/gtest.h>

#include "attention_case.h"

using flash::DType;
using testing_support::AttentionCase;
using testing_support::run_attention_case;

namespace {

AttentionCase base(DType dt, int sq, int sk, int d) {
  AttentionCase c;
  c.dtype = dt;
  c.seqlen_q = sq;
  c.seqlen_k = sk;
  c.head_dim = d;
  return c;
}

constexpr DType kAllTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

}  // namespace

TEST(CpuFwd, PlainAllDtypes) {
  for (DType dt : kAllTypes) run_attention_case(base(dt, 70, 90, 64));
}

TEST(CpuFwd, OddShapes) {
  run_attention_case(base(DType::kFloat32, 113, 203, 59));
  run_attention_case(base(DType::kFloat32, 1, 1, 32));
  run_attention_case(base(DType::kFloat16, 1, 130, 40));
  run_attention_case(base(DType::kBFloat16, 65, 1, 8));
  run_attention_case(base(DType::kFloat32, 7, 5, 1));
}

TEST(CpuFwd, HeadDims) {
  for (int d : {32, 59, 64, 96, 128, 160, 192, 256}) run_attention_case(base(DType::kFloat16, 33, 47, d));
  run_attention_case(base(DType::kFloat32, 20, 70, 256));
}

TEST(CpuFwd, Causal) {
  for (DType dt : kAllTypes) {
    AttentionCase c = base(dt, 77, 77, 32);
    c.causal = true;
    run_attention_case(c);
  }
  AttentionCase c = base(DType::kFloat32, 113, 203, 48);
  c.causal = true;
  run_attention_case(c);
  c = base(DType::kFloat32, 150, 60, 32);  // sq > sk: first rows see nothing
  c.causal = true;
  run_attention_case(c);
}

TEST(CpuFwd, LocalWindows) {
  for (auto w : {std::pair{16, 0}, std::pair{0, 8}, std::pair{5, 3}, std::pair{-1, 4},
                 std::pair{30, -1}, std::pair{0, 0}}) {
    AttentionCase c = base(DType::kFloat32, 90, 130, 32);
    c.window_left = w.first;
    c.window_right = w.second;
    run_attention_case(c);
  }
  AttentionCase c = base(DType::kFloat32, 120, 40, 16);  // sq > sk with a window
  c.window_left = 3;
  c.window_right = 2;
  run_attention_case(c);
}

TEST(CpuFwd, Softcap) {
  for (DType dt : kAllTypes) {
    AttentionCase c = base(dt, 50, 80, 64);
    c.softcap = 5.f;
    c.score_stddev = 4.0;
    run_attention_case(c);
  }
}

TEST(CpuFwd, Alibi) {
  for (int shape : {1, 2}) {
    AttentionCase c = base(DType::kFloat32, 40, 100, 32);
    c.batch = 2;
    c.nheads = 3;
    c.nheads_k = 3;
    c.alibi = shape;
    run_attention_case(c);
    c.causal = true;
    run_attention_case(c);
  }
}

TEST(CpuFwd, GqaAndMqa) {
  AttentionCase c = base(DType::kFloat16, 45, 66, 32);
  c.batch = 2;
  c.nheads = 6;
  c.nheads_k = 2;
  run_attention_case(c);
  c.nheads_k = 1;
  c.causal = true;
  run_attention_case(c);
}

TEST(CpuFwd, StridedLayout) {
  AttentionCase c = base(DType::kBFloat16, 30, 41, 24);
  c.batch = 3;
  c.nheads = 2;
  c.nheads_k = 2;
  c.head_pad = 5;
  run_attention_case(c);
}

TEST(CpuFwd, Varlen) {
  AttentionCase c = base(DType::kFloat32, 0, 0, 32);
  c.batch = 3;
  c.nheads = 4;
  c.nheads_k = 2;
  c.q_lens = {5, 70, 1};
  c.k_lens = {9, 130, 33};
  c.probs = true;
  run_attention_case(c);
  c.causal = true;
  run_attention_case(c);
  c.q_lens = {40, 3, 0};  // sq > sk (leading rows see nothing) and an empty sequence
  c.k_lens = {10, 3, 7};
  run_attention_case(c);
}

TEST(CpuFwd, SequsedK) {
  AttentionCase c = base(DType::kFloat16, 20, 90, 32);
  c.batch = 3;
  c.seqused_k = {90, 17, 0};  // last sequence sees nothing: out 0, lse +inf
  c.probs = true;
  run_attention_case(c);
  c.k_lens = {50, 90, 64};
  c.seqused_k = {49, 3, 64};
  c.causal = true;
  run_attention_case(c);
}

TEST(CpuFwd, Paged) {
  for (int ps : {1, 3, 16, 64}) {
    AttentionCase c = base(DType::kFloat16, 37, 101, 32);
    c.batch = 2;
    c.nheads = 2;
    c.nheads_k = 1;
    c.page_size = ps;
    run_attention_case(c);
  }
  AttentionCase c = base(DType::kFloat32, 0, 0, 48);  // paged + varlen + causal
  c.batch = 3;
  c.q_lens = {3, 20, 8};
  c.k_lens = {40, 20, 75};
  c.page_size = 16;
  c.causal = true;
  run_attention_case(c);
}

TEST(CpuFwd, PagedOutOfRangePageIsInvisible) {
  AttentionCase c = base(DType::kFloat32, 12, 40, 16);
  c.batch = 2;
  c.page_size = 8;
  c.invalid_logical_page = 2;  // keys 16..23 of every sequence
  c.probs = true;
  run_attention_case(c);
}

TEST(CpuFwd, Combos) {
  AttentionCase c = base(DType::kBFloat16, 61, 150, 80);
  c.batch = 2;
  c.nheads = 4;
  c.nheads_k = 2;
  c.causal = true;
  c.window_left = 40;
  c.softcap = 10.f;
  c.alibi = 2;
  c.page_size = 5;
  run_attention_case(c);
  c = base(DType::kFloat32, 0, 0, 40);
  c.batch = 2;
  c.q_lens = {17, 66};
  c.k_lens = {80, 66};
  c.window_left = 10;
  c.window_right = 10;
  c.softcap = 3.f;
  c.alibi = 1;
  c.head_pad = 3;
  c.probs = true;
  run_attention_case(c);
}
