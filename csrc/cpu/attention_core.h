// The attention math shared by fwd, kvcache and bwd: one (sequence, query head) problem whose
// keys come through a KeySource, processed a block of keys at a time with an online softmax, so
// no seqlen_q x seqlen_k buffer is ever formed.
#pragma once

#include <cstdint>
#include <vector>

#include "common/mask.h"
#include "cpu/tensor_access.h"
#include "flash/types.h"

namespace flash::cpu {

constexpr int kKeyBlock = 64;    // keys converted to fp32 and scored together
constexpr int kQueryBlock = 64;  // query rows per parallel task

struct HeadProblem {
  DType dtype = DType::kFloat32;
  int head_dim = 0;
  MaskRule mask{0, 0, -1, -1};  // seqlen_q / seqlen_k of this sequence, windows
  const void* k = nullptr;
  const void* v = nullptr;
  KeySource keys;
  float scale = 1.f;
  float softcap = 0.f;
  float alibi_slope = 0.f;  // 0: no ALiBi
  // Dropout (active when dropout_p > 0).
  float dropout_p = 0.f;
  uint64_t seed = 0, offset = 0;
  uint32_t bh = 0;  // b * nheads + h
  uint32_t keep_threshold = 0;

  int seqlen_q() const { return mask.seqlen_q; }
  int seqlen_k() const { return mask.seqlen_k; }
  bool dropout() const { return dropout_p > 0.f; }
  bool kept(int i, int j) const;
};

// Keys [j0, j0 + n) of a problem in fp32; valid[t] is 0 for keys whose page is out of range.
struct KeyBlock {
  int j0 = 0, n = 0;
  std::vector<float> k, v;  // n x head_dim
  std::vector<uint8_t> valid;
  void load(const HeadProblem& p, int first, int count);
};

// Scores of query row i (q_row: head_dim fp32 values) against the loaded block, after scale,
// softcap and ALiBi; -inf for keys row i may not see. When cap_grad is non-null it receives
// d(softcapped)/d(scaled score) (1 without softcap), needed by the backward.
void block_scores(const HeadProblem& p, const float* q_row, int i, const KeyBlock& kb, float* s,
                  float* cap_grad = nullptr);

// Keys that any row of [i0, i1) may see, clamped to [0, seqlen_k): [*lo, *hi) (may be empty).
void visible_key_range(const HeadProblem& p, int i0, int i1, int* lo, int* hi);

// Attends rows [i0, i0 + nrows) over keys [key_lo, key_hi) (clamped to the visible range).
// q: nrows x head_dim fp32. Writes out (nrows x head_dim fp32, normalised, dropout applied) and
// lse (natural log of the un-dropped softmax denominator; -inf when the row saw no key, and
// then out is 0).
void attend_rows(const HeadProblem& p, const float* q, int i0, int nrows, int key_lo, int key_hi,
                 float* out, float* lse);

}  // namespace flash::cpu
