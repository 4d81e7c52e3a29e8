// The call-shape checks both sm90 backward paths share (supports_bwd for d64/d96/d128 and
// supports_bwd256 for d192/d256): what their TMA maps, padded workspace and aux-kernel grids can
// take. Each path checks dtype, head_dim and its own switches first, then calls this.
#pragma once

#include <cstdint>
#include <string>

#include "cuda/sm90/api_checks.h"
#include "cuda/sm90/bwd_workspace.h"
#include "flash/params.h"

namespace flash::sm90::checks {

// varlen_on / dropout_on: whether the path takes varlen / dropout calls now (its switches).
inline bool bwd_call_ok(const BwdParams& p, bool varlen_on, bool dropout_on, std::string* why) {
  // Not on these paths (the sm80 backward takes them): paged KV, seqused_k (rows between seqused_k
  // and the sequence end may be uninitialised: whole K tiles are read and a NaN there would reach
  // dQ through dS K even with dS = 0), degenerate varlen batches.
  if (p.block_table != nullptr) return fail(why, "block_table");
  const bool varlen = p.cu_seqlens_q != nullptr;
  if (varlen != (p.cu_seqlens_k != nullptr)) return fail(why, "cu_seqlens_k");
  if (p.seqused_k != nullptr) return fail(why, "seqused_k");
  if (varlen && !varlen_on) return fail(why, "cu_seqlens_q");
  if (varlen && p.total_q < 1) return fail(why, "total_q");  // (TMA maps cannot be empty)
  if (varlen && (p.total_k < 1 || p.total_k > INT32_MAX)) return fail(why, "total_k");
  if (p.dropout_p > 0.f && (p.rng_state == nullptr || !dropout_on)) return fail(why, "dropout_p");
  if (p.seqlen_k <= 0) return fail(why, "seqlen_k");  // a TMA map cannot be empty
  if (p.seqlen_q <= 0) return fail(why, "seqlen_q");
  // The workspace pads every (batch, head) to whole query blocks (64 / 128 rows): for very short
  // seqlen_q that is up to 128x the data (seqlen_q 1 x 65535 batches x 257 heads asked for 522 GiB).
  // Such calls go to the sm80 backward, whose workspace is not padded. Varlen pads per sequence:
  // total_q + batch * kBlockM rows, refused when that exceeds 4x total_q (mean length < kBlockM / 3).
  {
    const int64_t bm = bwd_block_m(p.head_dim);
    if (varlen) {
      if (int64_t(p.batch) * bm > 3 * int64_t(p.total_q)) return fail(why, "cu_seqlens_q");
    } else {
      const int64_t padded = (int64_t(p.seqlen_q) + bm - 1) / bm * bm;
      if (padded > 4 * int64_t(p.seqlen_q)) return fail(why, "seqlen_q");
    }
  }
  if (p.nheads_k <= 0 || p.nheads % p.nheads_k != 0) return fail(why, "nheads_k");
  if (p.nheads > 65535 || p.batch > 65535)  // grid y / z of the preprocess and convert kernels
    return fail(why, p.batch > 65535 ? "batch" : "nheads");
  // TMA maps (bwd_launch.h, bwd256_launch.h): varlen (total rows, d, heads, 1), else
  // (seqlen, d, heads, batch).
  const int rows_q = varlen ? p.total_q : p.seqlen_q;
  const int rows_k = varlen ? int(p.total_k) : p.seqlen_k;
  const int map_batch = varlen ? 1 : p.batch;
  if (!tma_tensor_ok(p.q, p.q_row_stride, rows_q, p.q_head_stride, p.nheads, p.q_batch_stride, map_batch))
    return fail(why, "q");
  if (!tma_tensor_ok(p.dout, p.dout_row_stride, rows_q, p.dout_head_stride, p.nheads,
                     p.dout_batch_stride, map_batch))
    return fail(why, "dout");
  if (!tma_tensor_ok(p.k, p.k_row_stride, rows_k, p.k_head_stride, p.nheads_k, p.k_batch_stride, map_batch))
    return fail(why, "k");
  if (!tma_tensor_ok(p.v, p.v_row_stride, rows_k, p.v_head_stride, p.nheads_k, p.v_batch_stride, map_batch))
    return fail(why, "v");
  // (varlen: batch strides are not used)
  auto bs = [&](int64_t stride) { return varlen ? int64_t(0) : stride; };
  if (!vec_tensor_ok(p.out, bs(p.out_batch_stride), p.out_row_stride, p.out_head_stride)) return fail(why, "out");
  if (!vec_tensor_ok(p.dout, bs(p.dout_batch_stride), p.dout_row_stride, p.dout_head_stride)) return fail(why, "dout");
  if (!vec_tensor_ok(p.dq, bs(p.dq_batch_stride), p.dq_row_stride, p.dq_head_stride)) return fail(why, "dq");
  if (!vec_tensor_ok(p.dk, bs(p.dk_batch_stride), p.dk_row_stride, p.dk_head_stride)) return fail(why, "dk");
  if (!vec_tensor_ok(p.dv, bs(p.dv_batch_stride), p.dv_row_stride, p.dv_head_stride)) return fail(why, "dv");
  if (!device_is_sm90(p.device_index)) return fail(why, "device_index");
  return true;
}

}  // namespace flash::sm90::checks
