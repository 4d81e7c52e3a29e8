// flash::cpu::bwd: exact gradients, recomputing P from the saved lse one block at a time.
//
// One parallel task per (sequence, kv head): it owns dk/dv of that kv head (summed over the GQA
// group in fp32, in a fixed order) and dq of the group's query heads, so no two tasks write the
// same output and the result is bitwise deterministic whatever the thread count.
//
// With s = scaled score before softcap, P = exp(score - lse), Z = keep / (1 - p) (1 without
// dropout) and D_i = dO_i . O_i:
//   dV_j += P_ij Z_ij dO_i,   dP_ij = Z_ij (dO_i . V_j),   dS_ij = P_ij (dP_ij - D_i) * cap'(s)
//   dQ_i += scale dS_ij K_j,  dK_j += scale dS_ij Q_i        (ALiBi is a constant: no gradient)
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/attention_core.h"
#include "cpu/cpu_backend.h"
#include "cpu/parallel.h"
#include "cpu/problem_setup.h"
#include "cpu/sequence_layout.h"

namespace flash::cpu {
namespace {

// Accumulates one query head's contribution to dk/dv (dk_acc/dv_acc: seqlen_k x d) and writes
// its dq rows.
void backward_head(const BwdParams& prm, const SequenceLayout& seq, int h, const KeySource& keys,
                   float* dk_acc, float* dv_acc) {
  const int d = prm.head_dim;
  const HeadProblem hp = make_head_problem(prm, seq.b, h, seq.seqlen_q, seq.seqlen_k, keys);
  const float keep_scale = hp.dropout() ? 1.f / (1.f - hp.dropout_p) : 1.f;
  const int64_t q_off = seq.q_offset(prm.q_batch_stride, prm.q_row_stride) + h * prm.q_head_stride;
  const int64_t o_off =
      seq.q_offset(prm.out_batch_stride, prm.out_row_stride) + h * prm.out_head_stride;
  const int64_t do_off =
      seq.q_offset(prm.dout_batch_stride, prm.dout_row_stride) + h * prm.dout_head_stride;
  const int64_t dq_off =
      seq.q_offset(prm.dq_batch_stride, prm.dq_row_stride) + h * prm.dq_head_stride;
  const float* lse_src = prm.softmax_lse + lse_offset(prm, seq, h);

  std::vector<float> q, dout, dq, row_d, lse, s(kKeyBlock), cap(kKeyBlock), o(d);
  KeyBlock kb;
  for (int i0 = 0; i0 < seq.seqlen_q; i0 += kQueryBlock) {
    const int nrows = std::min(kQueryBlock, seq.seqlen_q - i0);
    q.resize(static_cast<size_t>(nrows) * d);
    dout.resize(q.size());
    dq.assign(q.size(), 0.f);
    row_d.resize(nrows);
    lse.resize(nrows);
    for (int r = 0; r < nrows; ++r) {
      const int i = i0 + r;
      load_row(prm.q, prm.dtype, q_off + i * prm.q_row_stride, d, &q[r * size_t(d)]);
      load_row(prm.dout, prm.dtype, do_off + i * prm.dout_row_stride, d, &dout[r * size_t(d)]);
      load_row(prm.out, prm.dtype, o_off + i * prm.out_row_stride, d, o.data());
      row_d[r] = dot(&dout[r * size_t(d)], o.data(), d);
      lse[r] = lse_src[i];
    }
    int lo, hi;
    visible_key_range(hp, i0, i0 + nrows, &lo, &hi);
    for (int j0 = lo; j0 < hi; j0 += kKeyBlock) {
      kb.load(hp, j0, std::min(kKeyBlock, hi - j0));
      for (int r = 0; r < nrows; ++r) {
        if (std::isinf(lse[r])) continue;  // the row saw no key: no gradient flows
        const int i = i0 + r;
        const float* qr = &q[r * size_t(d)];
        const float* dor = &dout[r * size_t(d)];
        float* dqr = &dq[r * size_t(d)];
        block_scores(hp, qr, i, kb, s.data(), cap.data());
        for (int t = 0; t < kb.n; ++t) {
          if (s[t] == -INFINITY) continue;
          const int j = j0 + t;
          const float pr = std::exp(s[t] - lse[r]);
          const float z = (hp.dropout() && !hp.kept(i, j)) ? 0.f : keep_scale;
          const float* vr = &kb.v[t * size_t(d)];
          const float* kr = &kb.k[t * size_t(d)];
          float* dvr = dv_acc + static_cast<size_t>(j) * d;
          float* dkr = dk_acc + static_cast<size_t>(j) * d;
          const float dp = dot(dor, vr, d);
          const float pz = pr * z;
          if (pz != 0.f)
            for (int c = 0; c < d; ++c) dvr[c] += pz * dor[c];
          const float ds = pr * (dp * z - row_d[r]) * cap[t] * hp.scale;
          for (int c = 0; c < d; ++c) {
            dqr[c] += ds * kr[c];
            dkr[c] += ds * qr[c];
          }
        }
      }
    }
    for (int r = 0; r < nrows; ++r)
      store_row(prm.dq, prm.dtype, dq_off + (i0 + r) * prm.dq_row_stride, d, &dq[r * size_t(d)]);
  }
}

// Rows of dk/dv the sequence owns: its whole packed/padded length when unpaged (rows past
// seqused_k get zeros), its attended keys when paged.
int owned_key_rows(const BwdParams& prm, const SequenceLayout& seq) {
  if (prm.block_table) return seq.seqlen_k;
  if (prm.cu_seqlens_k) return prm.cu_seqlens_k[seq.b + 1] - prm.cu_seqlens_k[seq.b];
  return prm.seqlen_k;
}

}  // namespace

void bwd(const BwdParams& prm) {
  const int d = prm.head_dim;
  const int group = prm.nheads / prm.nheads_k;
  const int64_t tasks = static_cast<int64_t>(prm.batch) * prm.nheads_k;
  FLASH_CPU_PARALLEL_FOR
  for (int64_t task = 0; task < tasks; ++task) {
    const int b = static_cast<int>(task / prm.nheads_k);
    const int hk = static_cast<int>(task % prm.nheads_k);
    const SequenceLayout seq = sequence_layout(prm, b);
    const KeySource keys = key_source(prm, seq, hk);
    const int rows = std::max(owned_key_rows(prm, seq), seq.seqlen_k);
    std::vector<float> dk_acc(static_cast<size_t>(rows) * d, 0.f), dv_acc(dk_acc.size(), 0.f);
    for (int h = hk * group; h < (hk + 1) * group; ++h)
      backward_head(prm, seq, h, keys, dk_acc.data(), dv_acc.data());

    // dk/dv share k's index mapping (paged included) with their own strides.
    BwdParams grads = prm;
    grads.k_batch_stride = prm.dk_batch_stride;
    grads.k_row_stride = prm.dk_row_stride;
    grads.k_head_stride = prm.dk_head_stride;
    grads.v_batch_stride = prm.dv_batch_stride;
    grads.v_row_stride = prm.dv_row_stride;
    grads.v_head_stride = prm.dv_head_stride;
    const KeySource out_keys = key_source(grads, seq, hk);
    const int owned = owned_key_rows(prm, seq);
    for (int j = 0; j < owned; ++j) {
      int64_t ko, vo;
      if (!out_keys.locate(j, &ko, &vo)) continue;
      store_row(prm.dk, prm.dtype, ko, d, &dk_acc[j * size_t(d)]);
      store_row(prm.dv, prm.dtype, vo, d, &dv_acc[j * size_t(d)]);
    }
  }
}

}  // namespace flash::cpu
