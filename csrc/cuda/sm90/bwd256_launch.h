// Host side of one (dtype, head_dim) instantiation of the wide-head-dim sm90 backward: workspace
// carve-up, TMA descriptors, and the kernel sequence memset -> preprocess -> main -> dQ convert
// on the caller's stream. Included only by the files in inst/ (heavy: pulls in the kernel).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "bwd256_kernel.h"
#include "bwd256_launch_decl.h"
#include "bwd_aux_kernels.h"
#include "bwd_workspace.h"
#include "common/philox.h"  // dropout_keep_threshold
#include "flash/params.h"
#include "fwd_launch.h"  // detail::tma_stride

namespace flash::sm90 {

namespace bwd256_detail {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("sm90 bwd256: ") + what + ": " + cudaGetErrorString(e));
}

// TMA map of a (rows, head_dim, heads, batch) tensor whose tiles are (rows, kHeadDim) boxes.
template <typename Traits, typename Tma, typename SmemLayout, typename TileShape>
Tma make_tma(const void* ptr, int rows, int head_dim, int heads, int batch, int64_t row_stride,
             int64_t head_stride, int64_t batch_stride, SmemLayout smem, TileShape tile) {
  using Element = typename Traits::Element;
  const int64_t rs = detail::tma_stride(row_stride, rows, head_dim);
  const int64_t hs = detail::tma_stride(head_stride, heads, rs * rows);
  const int64_t bs = detail::tma_stride(batch_stride, batch, hs * heads);
  Tensor g = make_tensor(make_gmem_ptr(static_cast<const Element*>(ptr)),
                         QkvGmemLayout(make_shape(rows, head_dim, heads, batch),
                                       make_stride(rs, _1{}, hs, bs)));
  return make_tma_copy(SM90_TMA_LOAD{}, g, smem, tile, _1{});
}

}  // namespace bwd256_detail

// The main kernel (TMA descriptors, parameters, launch) for one traits type.
template <typename Traits>
void launch_bwd256_main(const BwdParams& params, const BwdWorkspaceLayout& ws, float* lse_log2,
                        float* dpsum, float* dq_accum, int* dq_sem, cudaStream_t stream) {
  using Element = typename Traits::Element;
  using Tmas = BwdTmaTypes<Traits>;
  constexpr int kHeadDim = Traits::kHeadDim;
  const int n_blocks = (params.seqlen_k + Traits::kBlockN - 1) / Traits::kBlockN;
  // Varlen: the sequences are row ranges of (total, heads, d) tensors, mapped as one batch entry.
  const bool varlen = params.cu_seqlens_q != nullptr;
  const int rows_q = varlen ? params.total_q : params.seqlen_q;
  const int rows_k = varlen ? int(params.total_k) : params.seqlen_k;
  const int map_batch = varlen ? 1 : params.batch;
  if (n_blocks == 0 || rows_q <= 0 || rows_k <= 0) return;  // (a TMA map cannot be empty)

  const auto tile_q = Shape<Int<Traits::kBlockM>, Int<kHeadDim>>{};
  const auto tile_kv = Shape<Int<Traits::kBlockN>, Int<kHeadDim>>{};
  const auto smem_q = take<0, 2>(typename Traits::SmemLayoutQ{});
  const auto smem_kv = typename Traits::SmemLayoutK{};
  const int d = params.head_dim;
  BwdKernelParams<Traits> kp{
      bwd256_detail::make_tma<Traits, typename Tmas::TmaQ>(
          params.q, rows_q, d, params.nheads, map_batch, params.q_row_stride,
          params.q_head_stride, params.q_batch_stride, smem_q, tile_q),
      bwd256_detail::make_tma<Traits, typename Tmas::TmaQ>(
          params.dout, rows_q, d, params.nheads, map_batch, params.dout_row_stride,
          params.dout_head_stride, params.dout_batch_stride, smem_q, tile_q),
      bwd256_detail::make_tma<Traits, typename Tmas::TmaKV>(
          params.k, rows_k, d, params.nheads_k, map_batch, params.k_row_stride,
          params.k_head_stride, params.k_batch_stride, smem_kv, tile_kv),
      bwd256_detail::make_tma<Traits, typename Tmas::TmaKV>(
          params.v, rows_k, d, params.nheads_k, map_batch, params.v_row_stride,
          params.v_head_stride, params.v_batch_stride, smem_kv, tile_kv),
  };
  kp.batch = params.batch;
  kp.nheads = params.nheads;
  kp.nheads_k = params.nheads_k;
  kp.seqlen_q = params.seqlen_q;
  kp.seqlen_k = params.seqlen_k;
  kp.head_ratio = params.nheads / params.nheads_k;
  kp.cu_seqlens_q = params.cu_seqlens_q;
  kp.cu_seqlens_k = params.cu_seqlens_k;
  kp.total_q = rows_q;
  kp.total_k = rows_k;
  kp.ws_head_stride = ws.head_stride;
  kp.num_m_blocks = ws.num_m_blocks;
  kp.seqlen_q_rounded = ws.seqlen_q_rounded;
  kp.window_left = params.window_left;
  kp.window_right = params.window_right;
  kp.dropout = params.dropout_p > 0.f;
  kp.keep_threshold = dropout_keep_threshold(params.dropout_p);
  kp.rp_dropout = kp.dropout ? 1.f / (1.f - params.dropout_p) : 1.f;
  kp.rng_state = params.rng_state;
  kp.softmax_scale = params.softmax_scale;
  kp.softcap = params.softcap;
  kp.alibi_slopes = params.alibi_slopes;
  kp.alibi_batch_stride = params.alibi_batch_stride;
  kp.lse_log2 = lse_log2;
  kp.dpsum = dpsum;
  kp.dq_accum = dq_accum;
  kp.dq_sem = dq_sem;
  kp.dk = static_cast<Element*>(params.dk);
  kp.dk_batch_stride = params.dk_batch_stride;
  kp.dk_row_stride = params.dk_row_stride;
  kp.dk_head_stride = params.dk_head_stride;
  kp.dv = static_cast<Element*>(params.dv);
  kp.dv_batch_stride = params.dv_batch_stride;
  kp.dv_row_stride = params.dv_row_stride;
  kp.dv_head_stride = params.dv_head_stride;

  const bool mod_scores = params.softcap > 0.f || params.alibi_slopes != nullptr;
  const bool det = params.deterministic;
  constexpr int kSmem = Traits::kSmemBytes;
  // x = key block fastest: in deterministic mode key block n waits only for blocks < n of the
  // same (head, batch), which have lower linear CTA indices and so were scheduled earlier.
  const dim3 grid(n_blocks, params.nheads_k, params.batch);
  // Three kernels (x deterministic), as bwd_launch.h: lean, softcap / ALiBi, dropout (softcap /
  // ALiBi runtime-checked inside).
  auto kernel = kp.dropout ? (det ? bwd256_kernel<Traits, true, true, true>
                                  : bwd256_kernel<Traits, true, false, true>)
                : mod_scores ? (det ? bwd256_kernel<Traits, true, true>
                                    : bwd256_kernel<Traits, true, false>)
                             : (det ? bwd256_kernel<Traits, false, true>
                                    : bwd256_kernel<Traits, false, false>);
  bwd256_detail::check_cuda(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem),
      "cudaFuncSetAttribute(max dynamic smem)");
  kernel<<<grid, Traits::kNumThreads, kSmem, stream>>>(kp, params.head_dim);
  bwd256_detail::check_cuda(cudaGetLastError(), "main kernel launch");
}

template <typename Element, int kHeadDim>
void run_bwd256_hdim(const BwdParams& params, cudaStream_t stream) {
  using Traits = Bwd256Traits<Element, kHeadDim>;
  if (params.head_dim != kHeadDim) throw std::logic_error("sm90 bwd256: head_dim mismatch");
  if (params.batch == 0 || params.nheads == 0) return;

  const BwdWorkspaceLayout ws = plan_bwd_workspace(params);
  if (params.workspace == nullptr || params.workspace_bytes < ws.total)
    throw std::runtime_error("sm90 bwd256: workspace too small");
  char* base = reinterpret_cast<char*>(
      (reinterpret_cast<uintptr_t>(params.workspace) + 255) & ~uintptr_t(255));
  float* lse_log2 = reinterpret_cast<float*>(base + ws.lse_off);
  float* dpsum = reinterpret_cast<float*>(base + ws.dpsum_off);
  float* dq_accum = reinterpret_cast<float*>(base + ws.dq_off);
  int* dq_sem = reinterpret_cast<int*>(base + ws.sem_off);

  bwd256_detail::check_cuda(cudaMemsetAsync(dq_accum, 0, ws.zero_bytes, stream), "memset dq_accum");

  // Preprocess and dQ convert: the d64 / d128 path's kernels (bwd_aux_kernels.h), varlen included.
  BwdAuxParams ap{};
  ap.out = params.out;
  ap.out_batch_stride = params.out_batch_stride;
  ap.out_row_stride = params.out_row_stride;
  ap.out_head_stride = params.out_head_stride;
  ap.dout = params.dout;
  ap.dout_batch_stride = params.dout_batch_stride;
  ap.dout_row_stride = params.dout_row_stride;
  ap.dout_head_stride = params.dout_head_stride;
  ap.lse = params.softmax_lse;
  ap.lse_batch_stride = params.lse_batch_stride;
  ap.lse_head_stride = params.lse_head_stride;
  ap.dq = params.dq;
  ap.dq_batch_stride = params.dq_batch_stride;
  ap.dq_row_stride = params.dq_row_stride;
  ap.dq_head_stride = params.dq_head_stride;
  ap.lse_log2 = lse_log2;
  ap.dpsum = dpsum;
  ap.dq_accum = dq_accum;
  ap.seqlen_q = params.seqlen_q;
  ap.nheads = params.nheads;
  ap.seqlen_q_rounded = ws.seqlen_q_rounded;
  ap.softmax_scale = params.softmax_scale;
  ap.cu_seqlens_q = params.cu_seqlens_q;
  ap.total_q = params.total_q;
  ap.ws_head_stride = ws.head_stride;
  ap.ws_block_m = Traits::kBlockM;

  if (ws.seqlen_q_rounded > 0) {
    const dim3 grid((ws.seqlen_q_rounded + 7) / 8, params.nheads, params.batch);
    bwd_preprocess_kernel<Element, kHeadDim><<<grid, kAuxThreads, 0, stream>>>(ap);
    bwd256_detail::check_cuda(cudaGetLastError(), "preprocess launch");
  }

  launch_bwd256_main<Traits>(params, ws, lse_log2, dpsum, dq_accum, dq_sem, stream);

  if (params.seqlen_q > 0) {
    const dim3 grid((params.seqlen_q + 15) / 16, params.nheads, params.batch);
    bwd_convert_dq_kernel<Element, kHeadDim><<<grid, kAuxThreads, 0, stream>>>(ap);
    bwd256_detail::check_cuda(cudaGetLastError(), "dq convert launch");
  }
}

}  // namespace flash::sm90

#define FLASH_SM90_INSTANTIATE_BWD256(ELEMENT, HDIM)                                    \
  template void flash::sm90::run_bwd256_hdim<ELEMENT, HDIM>(const flash::BwdParams&, \
                                                            cudaStream_t);
