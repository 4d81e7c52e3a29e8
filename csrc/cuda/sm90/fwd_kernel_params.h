// What the sm90 forward kernel receives (by value, as a __grid_constant__ parameter): the three TMA
// descriptors built on the host for this call, plus the scalars of FwdParams the device needs.
#pragma once

#include <utility>

#include "fwd_tile_scheduler.h"
#include "fwd_traits.h"

namespace flash::sm90 {

// q/k/v as 4-D tensors (rows, head_dim, heads, batch); strides in elements, head_dim contiguous.
using QkvGmemLayout = Layout<Shape<int, int, int, int>, Stride<int64_t, _1, int64_t, int64_t>>;

template <typename Traits>
struct FwdTmaTypes {
  using Element = typename Traits::Element;
  using GmemTensor = decltype(make_tensor(make_gmem_ptr(static_cast<Element const*>(nullptr)),
                                          std::declval<QkvGmemLayout>()));
  using TmaQ = decltype(make_tma_copy(
      SM90_TMA_LOAD{}, std::declval<GmemTensor>(), typename Traits::SmemLayoutQ{},
      Shape<Int<Traits::kBlockM>, Int<Traits::kHeadDim>>{}, _1{}));
  // K and V share one stage layout (one stage = the first two modes of the staged layout).
  using TmaKV = decltype(make_tma_copy(
      SM90_TMA_LOAD{}, std::declval<GmemTensor>(), take<0, 2>(typename Traits::SmemLayoutK{}),
      Shape<Int<Traits::kBlockN>, Int<Traits::kHeadDim>>{}, _1{}));
};

template <typename Traits>
struct FwdKernelParams {
  using Element = typename Traits::Element;
  typename FwdTmaTypes<Traits>::TmaQ tma_q;
  typename FwdTmaTypes<Traits>::TmaKV tma_k;
  typename FwdTmaTypes<Traits>::TmaKV tma_v;

  int batch = 0, nheads = 0, nheads_k = 0, seqlen_q = 0, seqlen_k = 0;  // varlen: max lengths
  // Extents of the TMA maps: (rows_q | rows_k, d, heads, tma_batch). Varlen: rows = total_q /
  // total_k, tma_batch = 1 (sequences are row ranges of one tensor); else seqlen_q / seqlen_k, batch.
  int rows_q = 0, rows_k = 0, tma_batch = 0;
  const int* cu_seqlens_q = nullptr;  // varlen (both set) or fixed length (both nullptr)
  const int* cu_seqlens_k = nullptr;
  const int* seqused_k = nullptr;
  int head_ratio = 1;  // nheads / nheads_k (GQA/MQA group size)
  TileSchedule sched{};  // which query tiles each (persistent) CTA processes
  int window_left = -1, window_right = -1;  // -1 = unbounded; causal arrives as window_right = 0
  // Tuning switches (fwd_launch.h sets them from Traits, or from FLASH_SM90_FWD_* environment
  // variables for A/B measurements): Q buffers in use (1..Traits::kQStages) and warpgroup
  // ping-pong (fwd_pingpong.h; needs Traits::kPingPongAvailable).
  int q_stages = 1;
  bool pingpong = false;
  // Element mask as one compare per element against per-row bounds relative to this thread's
  // first column, the left bound only with a left window (fwd_consumer.h; FLASH_SM90_FWD_FAST_MASK).
  bool fast_mask = false;

  // Dropout (only in the kModScores instantiation): keep iff the element's Philox word is below
  // keep_threshold (common/philox.h); O is scaled by rp_dropout = 1 / (1 - p) at the end.
  bool dropout = false;
  uint32_t keep_threshold = 0xFFFFFFFFu;
  float rp_dropout = 1.f;
  const uint64_t* rng_state = nullptr;  // {seed, offset} in device memory, read by the kernel

  float softmax_scale = 1.f;
  float softcap = 0.f;                   // 0: off
  const float* alibi_slopes = nullptr;   // nullptr: off
  int64_t alibi_batch_stride = 0;

  Element* out = nullptr;
  int64_t out_batch_stride = 0, out_row_stride = 0, out_head_stride = 0;
  float* lse = nullptr;
  int64_t lse_batch_stride = 0, lse_head_stride = 0;
};

}  // namespace flash::sm90
