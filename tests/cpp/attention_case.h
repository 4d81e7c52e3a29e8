// A declarative fwd(+bwd) test case: builds the tensors in the requested layout (strided,
// varlen, paged...), runs flash::cpu::fwd / bwd, and checks every output against the double
// reference with a tolerance proportional to the dtype's eps.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "flash/types.h"

namespace testing_support {

struct AttentionCase {
  flash::DType dtype = flash::DType::kFloat32;
  int batch = 1, seqlen_q = 16, seqlen_k = 16, nheads = 1, nheads_k = 1, head_dim = 32;
  bool causal = false;  // passed as causal = true (the backend folds it into window_right 0)
  int window_left = -1, window_right = -1;
  float softcap = 0.f;
  int alibi = 0;  // 0: none, 1: slopes (nheads), 2: slopes (batch, nheads)
  float dropout_p = 0.f;
  std::vector<int> q_lens, k_lens;  // non-empty: varlen (cu_seqlens) on that side
  std::vector<int> seqused_k;       // non-empty: keys actually used per sequence
  int page_size = 0;                // > 0: paged K/V
  bool shuffle_pages = true;
  int invalid_logical_page = -1;    // >= 0: that block_table entry of every sequence is -1
  int head_pad = 0;                 // extra elements after each head (non-contiguous strides)
  bool probs = false;               // request attn_probs (S_dmask)
  bool backward = false;
  double score_stddev = 1.0;        // stddev of q (bigger: peakier softmax)
  uint32_t seed = 1;
  double tol_scale = 1.0;

  std::string describe() const;
};

// Runs the case; failures are reported through gtest EXPECTs (with describe()).
void run_attention_case(const AttentionCase& c);

}  // namespace testing_support
