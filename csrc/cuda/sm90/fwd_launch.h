// Host side of one (dtype, head_dim) instantiation: builds the TMA descriptors of this call, the
// kernel params, and launches. Included only by the files in inst/ (heavy: pulls in the kernel).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "common/philox.h"
#include "flash/params.h"
#include "fwd_kernel.h"
#include "fwd_launch_decl.h"
#include "fwd_tuning.h"

namespace flash::sm90 {

namespace detail {

// TMA rejects strides that are not multiples of 16 bytes even for dimensions of extent 1, where
// the stride is never used; torch may hand us any value there (e.g. batch stride when batch=1).
// Such a stride is replaced by the "packed" one (previous stride x previous extent), which is a
// multiple of 16 bytes whenever the previous one is and keeps the strides non-decreasing.
inline int64_t tma_stride(int64_t stride, int extent, int64_t packed) {
  return extent > 1 ? stride : packed;
}

template <typename Traits, typename Tma, typename SmemLayout, typename TileShape>
Tma make_qkv_tma(const void* ptr, int rows, int heads, int batch, int64_t row_stride,
                 int64_t head_stride, int64_t batch_stride, SmemLayout smem, TileShape tile) {
  using Element = typename Traits::Element;
  const int64_t rs = tma_stride(row_stride, rows, Traits::kHeadDim);
  const int64_t hs = tma_stride(head_stride, heads, rs * rows);
  const int64_t bs = tma_stride(batch_stride, batch, hs * heads);
  Tensor g = make_tensor(make_gmem_ptr(static_cast<const Element*>(ptr)),
                         QkvGmemLayout(make_shape(rows, int(Traits::kHeadDim), heads, batch),
                                       make_stride(rs, _1{}, hs, bs)));
  return make_tma_copy(SM90_TMA_LOAD{}, g, smem, tile, _1{});
}

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("sm90 fwd: ") + what + ": " + cudaGetErrorString(e));
}

}  // namespace detail

template <typename Element, int kHeadDim, int kTile>
void run_fwd_hdim(const FwdParams& params, cudaStream_t stream) {
  using Traits = FwdTraits<Element, kHeadDim, kTile>;
  using Tmas = FwdTmaTypes<Traits>;
  if (params.seqlen_q == 0 || params.batch == 0 || params.nheads == 0) return;
  // Varlen: the sequences are row ranges of (total, heads, d) tensors, mapped as one batch entry.
  const bool varlen = params.cu_seqlens_q != nullptr;
  if (varlen && params.total_q == 0) return;
  const int rows_q = varlen ? params.total_q : params.seqlen_q;
  const int rows_k = varlen ? int(params.total_k) : params.seqlen_k;
  const int tma_batch = varlen ? 1 : params.batch;

  const auto tile_q = Shape<Int<Traits::kBlockM>, Int<kHeadDim>>{};
  const auto tile_kv = Shape<Int<Traits::kBlockN>, Int<kHeadDim>>{};
  const auto smem_kv = take<0, 2>(typename Traits::SmemLayoutK{});
  FwdKernelParams<Traits> kp{
      detail::make_qkv_tma<Traits, typename Tmas::TmaQ>(
          params.q, rows_q, params.nheads, tma_batch, params.q_row_stride,
          params.q_head_stride, params.q_batch_stride, typename Traits::SmemLayoutQ{}, tile_q),
      detail::make_qkv_tma<Traits, typename Tmas::TmaKV>(
          params.k, rows_k, params.nheads_k, tma_batch, params.k_row_stride,
          params.k_head_stride, params.k_batch_stride, smem_kv, tile_kv),
      detail::make_qkv_tma<Traits, typename Tmas::TmaKV>(
          params.v, rows_k, params.nheads_k, tma_batch, params.v_row_stride,
          params.v_head_stride, params.v_batch_stride, smem_kv, tile_kv),
  };
  kp.batch = params.batch;
  kp.nheads = params.nheads;
  kp.nheads_k = params.nheads_k;
  kp.seqlen_q = params.seqlen_q;
  kp.seqlen_k = params.seqlen_k;
  kp.head_ratio = params.nheads / params.nheads_k;
  kp.rows_q = rows_q;
  kp.rows_k = rows_k;
  kp.tma_batch = tma_batch;
  kp.cu_seqlens_q = params.cu_seqlens_q;
  kp.cu_seqlens_k = params.cu_seqlens_k;
  kp.seqused_k = params.seqused_k;
  // Causal arrives as window_right = 0: any window makes the per-tile work depend on m_block.
  const bool windowed = params.window_left >= 0 || params.window_right >= 0;
  const int64_t num_m_blocks = (int64_t(params.seqlen_q) + Traits::kBlockM - 1) / Traits::kBlockM;
  if (num_m_blocks * params.nheads * params.batch > int64_t(INT32_MAX))
    throw std::runtime_error("sm90 fwd: too many query tiles for the tile scheduler");
  kp.sched = make_tile_schedule(params.seqlen_q, Traits::kBlockM, params.nheads, params.batch,
                                windowed);
  // Rotated unit assignment (fwd_tile_scheduler.h; FLASH_SM90_FWD_SCHED_ROTATE=0|1; default: on
  // for the 192-row tile without a window, the configuration measured in pass 4 round 3) and
  // per-warpgroup block skipping (fwd_consumer.h, a kernel variant of the lean 192-row tile;
  // FLASH_SM90_FWD_WG_SKIP=1, off: never cleanly measured -- round 2's A/B script leaked
  // FLASH_SM90_FWD_WG_SKIP=0 into that variant).
  constexpr bool k3Wg = Traits::kNumConsumerWarpgroups == 3;
  static const tuning::Switch env_rotate("FLASH_SM90_FWD_SCHED_ROTATE", -1);  // -1: the default
  const int rotate_env = env_rotate.get();
  static const tuning::Switch env_wg_skip("FLASH_SM90_FWD_WG_SKIP", 0);
  kp.sched.rotate = rotate_env < 0 ? (k3Wg && !windowed) : rotate_env != 0;
  const bool wg_skip = Traits::kWgBlockSkipAvailable && env_wg_skip.get() != 0;
  // FLASH_SM90_FWD_Q_STAGES (1..kQStages) and FLASH_SM90_FWD_PINGPONG (0/1) override the
  // compiled defaults; for benchmarking the two scheduling choices against each other.
  // (fwd_tuning.h: read once per process, or per call with FLASH_SM90_FWD_AB=1.)
  static const tuning::Switch env_q_stages("FLASH_SM90_FWD_Q_STAGES", Traits::kQStages);
  static const tuning::Switch env_pingpong("FLASH_SM90_FWD_PINGPONG", Traits::kPingPong);
  kp.q_stages = std::max(1, std::min(env_q_stages.get(), Traits::kQStages));
  kp.pingpong = Traits::kPingPongAvailable && env_pingpong.get() != 0;
  // FLASH_SM90_FWD_FAST_MASK=0|1 (fwd_consumer.h; compiled into the d<=128 two-warpgroup kernels
  // only). Default (-1): d=64 (H100, session 5 round 2: causal 1K / 2K +2.9 / +2.5 %); not d=128
  // (causal 1K / 2K +0.1 / -1.4 %, and non-causal -1.7 / -3.5 % although no block is masked there).
  static const tuning::Switch env_fast_mask("FLASH_SM90_FWD_FAST_MASK", -1);
  const int fast_mask_env = env_fast_mask.get();
  kp.fast_mask = fast_mask_env < 0 ? kHeadDim == 64 : fast_mask_env != 0;
  // 16-byte O stores (fwd_consumer.h), where out allows them. FLASH_SM90_FWD_WIDE_STORE=0|1;
  // default (-1): d = 128 and 256 (the measured ones) with seqlen_k <= 4096, where the epilogue
  // is a visible part of a tile's time (H100, pass 4 rounds 1-2, in-process A/B: d128 1K/2K/4K
  // +1.5..+5.6 / +1 %, d256 +0.5..+7.5 / +2.6..+3.5 %; 16K -2..+1.4 % (noise), d64 -2 %). Not
  // for the opt-in tiles (the 192-row one's wide-store kernel spills 136 B).
  static const tuning::Switch env_wide_store("FLASH_SM90_FWD_WIDE_STORE", -1);
  const int wide_store_env = env_wide_store.get();
  const bool wide_store_wanted =
      wide_store_env < 0 ? ((kHeadDim == 256 || (kHeadDim == 128 && Traits::kTile != 1)) &&
                            params.seqlen_k <= 4096)
                         : wide_store_env != 0;
  const bool wide_store = wide_store_wanted &&
                         (reinterpret_cast<uintptr_t>(params.out) % 16 == 0) &&
                         params.out_row_stride % 8 == 0 && params.out_head_stride % 8 == 0 &&
                         params.out_batch_stride % 8 == 0;
  // FLASH_SM90_FWD_ILP_SOFTMAX=1: softmax reductions with shorter dependency chains (fwd_softmax.h).
  static const tuning::Switch env_ilp_softmax("FLASH_SM90_FWD_ILP_SOFTMAX", 0);
  // FLASH_SM90_FWD_PIN_WAIT=0|1: keep the softmax ahead of the P V wait (fwd_consumer.h). Default
  // (-1): d=128 (H100, session 5 round 2, in-process A/B vs unpinned: nc 1K / 2K +2.0 / +3.3 %,
  // causal +1.7 / +2.6 %) and the d=256 128 x 48 tile (the configuration measured there); NOT d=64
  // (round 1: -1.3..-3.5 % on the 128-row tile; round 2: the windowed 192-row tile is 2-3 % faster
  // unpinned: its P V is short, and the rescale / P conversion after the wait cost more than the
  // overlap gains) and not the d=256 default tile (+-1 %). Other head dims: unmeasured, off.
  static const tuning::Switch env_pin_wait("FLASH_SM90_FWD_PIN_WAIT", -1);
  const int pin_env = env_pin_wait.get();
  const bool pin_wait =
      pin_env < 0 ? (kHeadDim == 128 || (kHeadDim == 256 && Traits::kTile == 1)) : pin_env != 0;
  const int variant = (wide_store ? kFwdVariantWideStore : 0) |
                      (env_ilp_softmax.get() != 0 ? kFwdVariantIlpSoftmax : 0) |
                      (wg_skip ? kFwdVariantWgSkip : 0) |
                      (pin_wait ? kFwdVariantPinWait : 0);
  kp.window_left = params.window_left;
  kp.window_right = params.window_right;
  kp.softmax_scale = params.softmax_scale;
  kp.softcap = params.softcap;
  kp.alibi_slopes = params.alibi_slopes;
  kp.alibi_batch_stride = params.alibi_batch_stride;
  kp.out = static_cast<Element*>(params.out);
  kp.out_batch_stride = params.out_batch_stride;
  kp.out_row_stride = params.out_row_stride;
  kp.out_head_stride = params.out_head_stride;
  kp.lse = params.softmax_lse;
  kp.lse_batch_stride = params.lse_batch_stride;
  kp.lse_head_stride = params.lse_head_stride;

  kp.dropout = params.dropout_p > 0.f;
  kp.keep_threshold = dropout_keep_threshold(params.dropout_p);
  kp.rp_dropout = kp.dropout ? 1.f / (1.f - params.dropout_p) : 1.f;
  kp.rng_state = params.rng_state;

  // The lean instantiation has no score modifiers and no dropout at all.
  const bool mod_scores = params.softcap > 0.f || params.alibi_slopes != nullptr || kp.dropout;
  // The lean kernel in the variant the switches ask for (fwd_variant.h; 0 = the default code).
  // Instantiated: 2 consumer warpgroups {0, wide store, ILP softmax, both} and with the pinned
  // wait {pin, pin + wide store}; 3 (192-row tile) {0, ILP softmax} x {-, warpgroup block skip}
  // and {pin, pin + skip} -- wide stores spill 136 B there, not offered. ILP softmax together
  // with the pin runs the pinned kernel without ILP (ILP measured slower in session 5 round 1).
  auto kernel = fwd_kernel<Traits, false, 0>;
  if (mod_scores) {
    kernel = fwd_kernel<Traits, true>;
  } else if constexpr (Traits::kNumConsumerWarpgroups == 3) {
    const int v = variant & ~kFwdVariantWideStore;
    if (v == 2) kernel = fwd_kernel<Traits, false, 2>;
    else if (v == 4) kernel = fwd_kernel<Traits, false, 4>;
    else if (v == 6) kernel = fwd_kernel<Traits, false, 6>;
    else if (v == 8 || v == 10) kernel = fwd_kernel<Traits, false, 8>;
    else if (v == 12 || v == 14) kernel = fwd_kernel<Traits, false, 12>;
  } else {
    const int v = variant & ~kFwdVariantWgSkip;
    if (v == 1) kernel = fwd_kernel<Traits, false, 1>;
    else if (v == 2) kernel = fwd_kernel<Traits, false, 2>;
    else if (v == 3) kernel = fwd_kernel<Traits, false, 3>;
    else if (v == 8 || v == 10) kernel = fwd_kernel<Traits, false, 8>;
    else if (v == 9 || v == 11) kernel = fwd_kernel<Traits, false, 9>;
  }
  constexpr int kSmem = Traits::kSmemBytes;
  detail::check_cuda(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem),
      "cudaFuncSetAttribute(max dynamic smem)");
  // Persistent grid: one CTA per SM (the kernel needs a whole SM: 384 threads with setmaxnreg,
  // up to 224 KB of smem), never more CTAs than work units.
  int device = 0, num_sms = 0;
  detail::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  detail::check_cuda(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device),
                     "cudaDeviceGetAttribute(multiprocessor count)");
  const dim3 grid(std::max(1, std::min(kp.sched.num_units, num_sms)));
  kernel<<<grid, Traits::kNumThreads, kSmem, stream>>>(kp);
  detail::check_cuda(cudaGetLastError(), "kernel launch");
}

}  // namespace flash::sm90

// One explicit instantiation per file in inst/.
#define FLASH_SM90_INSTANTIATE_FWD_TILE(ELEMENT, HDIM, TILE)                                \
  template void flash::sm90::run_fwd_hdim<ELEMENT, HDIM, TILE>(const flash::FwdParams&, \
                                                               cudaStream_t);
#define FLASH_SM90_INSTANTIATE_FWD(ELEMENT, HDIM) FLASH_SM90_INSTANTIATE_FWD_TILE(ELEMENT, HDIM, 0)
// The first alternative tile of the head dim (fwd_traits.h, kTile 1).
#define FLASH_SM90_INSTANTIATE_FWD_ALT(ELEMENT, HDIM) FLASH_SM90_INSTANTIATE_FWD_TILE(ELEMENT, HDIM, 1)
#define FLASH_SM90_INSTANTIATE_FWD_WIDE_N(ELEMENT, HDIM) FLASH_SM90_INSTANTIATE_FWD_ALT(ELEMENT, HDIM)
