// Builds the HeadProblem of one (sequence, query head) from the params every entry point shares.
#pragma once

#include "common/philox.h"
#include "cpu/attention_core.h"
#include "cpu/sequence_layout.h"
#include "flash/params.h"

namespace flash::cpu {

// seqlen_q / seqlen_k: this sequence's query and (mask) key counts; keys: where its keys live.
inline HeadProblem make_head_problem(const FwdParams& p, int b, int h, int seqlen_q,
                                     int seqlen_k, const KeySource& keys) {
  HeadProblem hp;
  hp.dtype = p.dtype;
  hp.head_dim = p.head_dim;
  hp.mask = MaskRule{seqlen_q, seqlen_k, p.window_left, effective_window_right(p)};
  hp.k = p.k;
  hp.v = p.v;
  hp.keys = keys;
  hp.scale = p.softmax_scale;
  hp.softcap = p.softcap;
  if (p.alibi_slopes) hp.alibi_slope = p.alibi_slopes[b * p.alibi_batch_stride + h];
  if (p.dropout_p > 0.f) {
    hp.dropout_p = p.dropout_p;
    hp.seed = p.rng_state[0];
    hp.offset = p.rng_state[1];
    hp.bh = static_cast<uint32_t>(b * p.nheads + h);
    hp.keep_threshold = dropout_keep_threshold(p.dropout_p);
  }
  return hp;
}

// Query head h reads kv head h / (nheads / nheads_k).
inline int kv_head_of(const FwdParams& p, int h) { return h / (p.nheads / p.nheads_k); }

}  // namespace flash::cpu
