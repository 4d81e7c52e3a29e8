// flash::cpu::fwd: one parallel task per (sequence, head, block of query rows).
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/split_combine.h"
#include "cpu/attention_core.h"
#include "cpu/cpu_backend.h"
#include "cpu/parallel.h"
#include "cpu/problem_setup.h"
#include "cpu/sequence_layout.h"

namespace flash::cpu {
namespace {

// S_dmask rows [i0, i0 + nrows) of one head: probabilities exp(s - lse), negated where dropout
// drops them, 0 where invisible; the whole padded (seqlen_q, seqlen_k) box of the params is
// written (0 outside this sequence's own box) so the tensor never holds stale memory.
void write_probs(const FwdParams& prm, const HeadProblem& p, int b, int h, const float* q,
                 int i0, int nrows, const float* lse) {
  const int box_k = std::max(prm.seqlen_k, p.seqlen_k());
  std::vector<float> row(box_k);
  std::vector<float> s(kKeyBlock);
  KeyBlock kb;
  const int64_t head_off = b * prm.probs_batch_stride + h * prm.probs_head_stride;
  for (int j0 = 0; j0 < p.seqlen_k(); j0 += kKeyBlock) {
    kb.load(p, j0, std::min(kKeyBlock, p.seqlen_k() - j0));
    for (int r = 0; r < nrows; ++r) {
      const int i = i0 + r;
      block_scores(p, q + static_cast<size_t>(r) * p.head_dim, i, kb, s.data());
      for (int t = 0; t < kb.n; ++t) {
        float pr = (s[t] == -INFINITY || lse[r] == -INFINITY) ? 0.f : std::exp(s[t] - lse[r]);
        if (pr != 0.f && p.dropout() && !p.kept(i, j0 + t)) pr = -pr;
        row[t] = pr;
      }
      store_row(prm.attn_probs, prm.dtype, head_off + i * prm.probs_row_stride + j0, kb.n,
                row.data());
    }
  }
  // Columns past this sequence's keys.
  std::fill(row.begin(), row.end(), 0.f);
  if (prm.seqlen_k > p.seqlen_k())
    for (int r = 0; r < nrows; ++r)
      store_row(prm.attn_probs, prm.dtype, head_off + (i0 + r) * prm.probs_row_stride +
                p.seqlen_k(), prm.seqlen_k - p.seqlen_k(), row.data());
}

void zero_probs_rows(const FwdParams& prm, int b, int h, int i0, int i1) {
  std::vector<float> zeros(prm.seqlen_k, 0.f);
  const int64_t head_off = b * prm.probs_batch_stride + h * prm.probs_head_stride;
  for (int i = i0; i < i1; ++i)
    store_row(prm.attn_probs, prm.dtype, head_off + i * prm.probs_row_stride, prm.seqlen_k,
              zeros.data());
}

}  // namespace

void fwd(const FwdParams& prm) {
  const int q_blocks = (prm.seqlen_q + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = static_cast<int64_t>(prm.batch) * prm.nheads * q_blocks;
  const int d = prm.head_dim;
  FLASH_CPU_PARALLEL_FOR
  for (int64_t task = 0; task < tasks; ++task) {
    const int b = static_cast<int>(task / (static_cast<int64_t>(prm.nheads) * q_blocks));
    const int h = static_cast<int>(task / q_blocks % prm.nheads);
    const int i0 = static_cast<int>(task % q_blocks) * kQueryBlock;
    const SequenceLayout seq = sequence_layout(prm, b);
    if (i0 >= seq.seqlen_q) {  // past this (varlen) sequence's queries
      if (prm.attn_probs && i0 < prm.seqlen_q)
        zero_probs_rows(prm, b, h, i0, std::min(prm.seqlen_q, i0 + kQueryBlock));
      continue;
    }
    const int nrows = std::min(kQueryBlock, seq.seqlen_q - i0);
    const HeadProblem hp = make_head_problem(prm, b, h, seq.seqlen_q, seq.seqlen_k,
                                             key_source(prm, seq, kv_head_of(prm, h)));

    std::vector<float> q(static_cast<size_t>(nrows) * d), out(q.size()), lse(nrows);
    const int64_t q_off = seq.q_offset(prm.q_batch_stride, prm.q_row_stride) +
                          h * prm.q_head_stride;
    for (int r = 0; r < nrows; ++r)
      load_row(prm.q, prm.dtype, q_off + (i0 + r) * prm.q_row_stride, d, &q[r * size_t(d)]);

    attend_rows(hp, q.data(), i0, nrows, 0, hp.seqlen_k(), out.data(), lse.data());

    const int64_t o_off = seq.q_offset(prm.out_batch_stride, prm.out_row_stride) +
                          h * prm.out_head_stride;
    float* lse_dst = prm.softmax_lse + lse_offset(prm, seq, h);
    for (int r = 0; r < nrows; ++r) {
      store_row(prm.out, prm.dtype, o_off + (i0 + r) * prm.out_row_stride, d, &out[r * size_t(d)]);
      lse_dst[i0 + r] = public_lse(lse[r]);
    }
    if (prm.attn_probs) {
      write_probs(prm, hp, b, h, q.data(), i0, nrows, lse.data());
      // Varlen: rows past this sequence inside the same block of the padded box.
      const int pad_end = std::min(prm.seqlen_q, i0 + kQueryBlock);
      if (i0 + nrows < pad_end) zero_probs_rows(prm, b, h, i0 + nrows, pad_end);
    }
  }
}

}  // namespace flash::cpu
