// Entry points of the sm90 forward path (declared in sm90.h): capability check with a reason,
// workspace size, and dispatch to the (dtype, head_dim) instantiation.
//
// Build filtering: cmake/cuda_backend.cmake defines FLASH_HDIM_<D>_ENABLED and
// FLASH_<FP16|BF16>_ENABLED for the instantiations it compiles; a build by hand that defines none
// of them gets every instantiation.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <string>

#include <cutlass/numeric_types.h>

#include "cuda/sm90/api_checks.h"
#include "cuda/sm90/fwd_launch_decl.h"
#include "cuda/sm90/fwd_tuning.h"
#include "cuda/sm90/sm90.h"

#if !defined(FLASH_FP16_ENABLED) && !defined(FLASH_BF16_ENABLED)
#define FLASH_HDIM_64_ENABLED 1
#define FLASH_HDIM_96_ENABLED 1
#define FLASH_HDIM_128_ENABLED 1
#define FLASH_HDIM_192_ENABLED 1
#define FLASH_HDIM_256_ENABLED 1
#define FLASH_FP16_ENABLED 1
#define FLASH_BF16_ENABLED 1
#endif

namespace flash::sm90 {

namespace {

// FLASH_SM90_FWD_VARLEN=0 sends varlen calls to the sm80 path (an escape hatch while the sm90
// varlen path is new); read once per process.
bool varlen_disabled() {
  static const bool disabled = [] {
    const char* v = std::getenv("FLASH_SM90_FWD_VARLEN");
    return v != nullptr && *v != '\0' && std::atoi(v) == 0;
  }();
  return disabled;
}

using checks::aligned16;
using checks::device_is_sm90;
using checks::fail;
using checks::tma_stride_ok;

}  // namespace

bool supports_fwd(const FwdParams& p, std::string* why) {
  if (p.device != Device::kCUDA) return fail(why, "device");
  if (p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16)
    return fail(why, "dtype");
  if (p.head_dim != 64 && p.head_dim != 96 && p.head_dim != 128 && p.head_dim != 192 &&
      p.head_dim != 256)
    return fail(why, "head_dim");
  if (!checks::instantiation_built(p.dtype, p.head_dim))  // instantiation filtered out of this build
    return fail(why, "head_dim");
  // Not yet on this path (the sm80 path takes them): paged KV, S_dmask.
  if (p.block_table != nullptr) return fail(why, "block_table");
  // Varlen: the TMA maps of k/v need their row count total_k (>= 1; a map cannot be empty).
  const bool varlen = p.cu_seqlens_q != nullptr;
  if (varlen != (p.cu_seqlens_k != nullptr)) return fail(why, "cu_seqlens_k");
  // seqused_k: rows between seqused_k and the sequence end are read by whole tiles and multiplied by
  // P = 0; they may be uninitialised (NaN * 0 = NaN), so such calls take the sm80 path, which zero-fills.
  if (p.seqused_k != nullptr) return fail(why, "seqused_k");
  if (varlen && (p.total_k < 1 || p.total_k > INT32_MAX)) return fail(why, "total_k");
  if (varlen && varlen_disabled()) return fail(why, "cu_seqlens_q");
  if (p.dropout_p > 0.f && p.rng_state == nullptr) return fail(why, "rng_state");
  if (p.attn_probs != nullptr) return fail(why, "attn_probs");
  if (!varlen && p.seqlen_k <= 0) return fail(why, "seqlen_k");  // a TMA map cannot be empty
  if (p.nheads_k <= 0 || p.nheads % p.nheads_k != 0)
    return fail(why, "nheads_k");
  if (p.nheads > 65535 || p.batch > 65535)  // grid dimensions y and z
    return fail(why, p.nheads > 65535 ? "nheads" : "batch");
  // TMA: 16-byte aligned base, strides multiples of 16 bytes.
  if (!aligned16(p.q) || !aligned16(p.k) || !aligned16(p.v))
    return fail(why, !aligned16(p.q) ? "q" : !aligned16(p.k) ? "k" : "v");
  // Extents of the TMA maps (fwd_launch.h): varlen maps (total rows, d, heads, 1).
  const int rows_q = varlen ? p.total_q : p.seqlen_q;
  const int rows_k = varlen ? int(p.total_k) : p.seqlen_k;
  const int tma_batch = varlen ? 1 : p.batch;
  if (!tma_stride_ok(p.q_row_stride, rows_q) || !tma_stride_ok(p.q_head_stride, p.nheads) ||
      !tma_stride_ok(p.q_batch_stride, tma_batch))
    return fail(why, "q");
  if (!tma_stride_ok(p.k_row_stride, rows_k) || !tma_stride_ok(p.k_head_stride, p.nheads_k) ||
      !tma_stride_ok(p.k_batch_stride, tma_batch))
    return fail(why, "k");
  if (!tma_stride_ok(p.v_row_stride, rows_k) || !tma_stride_ok(p.v_head_stride, p.nheads_k) ||
      !tma_stride_ok(p.v_batch_stride, tma_batch))
    return fail(why, "v");
  // The epilogue stores 2 adjacent elements (4 bytes) at a time.
  if ((reinterpret_cast<uintptr_t>(p.out) & 3u) != 0 || p.out_row_stride % 2 != 0 ||
      p.out_head_stride % 2 != 0 || p.out_batch_stride % 2 != 0)
    return fail(why, "out");
  if (!device_is_sm90(p.device_index))
    return fail(why, "device_index");
  return true;
}

size_t fwd_workspace_size(const FwdParams&) { return 0; }

namespace {

// The tile of a d=128 call (fwd_traits.h, kTile); switches of fwd_tuning.h. Calls with a window
// always take tile 0 (128 x 128, 2 stages, 2 Q buffers). Without a window:
// FLASH_SM90_FWD_D128_TILE=1 (or the older FLASH_SM90_FWD_WIDE_N=1): 128 x 176. Off by default: on
// the H100 it measured 8-12 % slower than the 128 x 128 ping-pong tile (2026-11-24, mid round: nc
// 16K 599 vs ~650 before; 148 B of spills).
// FLASH_SM90_FWD_D128_TILE=2: 128 x 128 with 3 K/V stages and 1 Q buffer (session 5, opt-in until
// an interleaved A/B shows it faster).
int d128_tile(const FwdParams& p) {
  static const tuning::Switch wide_n("FLASH_SM90_FWD_WIDE_N", 0);
  static const tuning::Switch tile("FLASH_SM90_FWD_D128_TILE", 0);
  if (p.window_left >= 0 || p.window_right >= 0) return 0;
  const int t = tile.get();
  if (t == 1 || t == 2) return t;
  return wide_n.get() != 0 ? 1 : 0;
}
// d=64: 192 x 128 with three consumer warpgroups for calls with seqlen_q (varlen: max_seqlen_q)
// >= N: N = FLASH_SM90_FWD_D64_M192 without a window (default 1: always), and
// FLASH_SM90_FWD_D64_M192_WINDOW with one (causal included; default 4096); 0 = never. Only the
// lean kernel (no softcap / ALiBi / dropout): the score-modifier kernel of that tile passed the
// feature grid (softcap, ALiBi) but its speed was never measured (68 B of spills) and its dropout
// path never ran on the GPU, so those calls keep the 128 x 128 tile.
// H100, pass 4 (bf16, in-process A/B vs the 128 x 128 tile): no window 1K +3 %, 4K +12 %, 16K
// +15 % (round 3); causal 16K +11.5 %, 1K -15 %, 2K -9 % (round 1). Causal 4K / 8K looked +4 / +10 %
// in round 2, but that run had the ILP softmax switched on in every variant (an A/B script bug).
// Session 5 round 1 (clean, the 192-row tile with the pinned P V wait, fwd_launch.h) vs the
// 128-row tile: causal 1K -17 %, 2K -10 %, 4K +3.7 %, 8K +7.1 %: threshold 4096. README Pass 5.
bool use_d64_m192(const FwdParams& p) {
  static const tuning::Switch min_seqlen_q("FLASH_SM90_FWD_D64_M192", 1);
  static const tuning::Switch min_seqlen_q_window("FLASH_SM90_FWD_D64_M192_WINDOW", 4096);
  const bool lean = p.softcap <= 0.f && p.alibi_slopes == nullptr && p.dropout_p <= 0.f;
  const bool windowed = p.window_left >= 0 || p.window_right >= 0;
  const int n = windowed ? min_seqlen_q_window.get() : min_seqlen_q.get();
  return lean && n > 0 && p.seqlen_q >= n;
}

}  // namespace

void run_fwd(const FwdParams& p, void* stream_ptr) {
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  const bool bf16 = p.dtype == DType::kBFloat16;
  switch (p.head_dim) {
#if defined(FLASH_HDIM_64_ENABLED)
    case 64:
#if defined(FLASH_BF16_ENABLED)
      if (bf16 && use_d64_m192(p)) return run_fwd_hdim<cutlass::bfloat16_t, 64, 1>(p, stream);
      if (bf16) return run_fwd_hdim<cutlass::bfloat16_t, 64>(p, stream);
#endif
#if defined(FLASH_FP16_ENABLED)
      if (!bf16 && use_d64_m192(p)) return run_fwd_hdim<cutlass::half_t, 64, 1>(p, stream);
      if (!bf16) return run_fwd_hdim<cutlass::half_t, 64>(p, stream);
#endif
      break;
#endif
#if defined(FLASH_HDIM_96_ENABLED)
    case 96:
#if defined(FLASH_BF16_ENABLED)
      if (bf16) return run_fwd_hdim<cutlass::bfloat16_t, 96>(p, stream);
#endif
#if defined(FLASH_FP16_ENABLED)
      if (!bf16) return run_fwd_hdim<cutlass::half_t, 96>(p, stream);
#endif
      break;
#endif
#if defined(FLASH_HDIM_128_ENABLED)
    case 128:
    {
      const int tile = d128_tile(p);
#if defined(FLASH_BF16_ENABLED)
      if (bf16 && tile == 1) return run_fwd_hdim<cutlass::bfloat16_t, 128, 1>(p, stream);
      if (bf16 && tile == 2) return run_fwd_hdim<cutlass::bfloat16_t, 128, 2>(p, stream);
      if (bf16) return run_fwd_hdim<cutlass::bfloat16_t, 128>(p, stream);
#endif
#if defined(FLASH_FP16_ENABLED)
      if (!bf16 && tile == 1) return run_fwd_hdim<cutlass::half_t, 128, 1>(p, stream);
      if (!bf16 && tile == 2) return run_fwd_hdim<cutlass::half_t, 128, 2>(p, stream);
      if (!bf16) return run_fwd_hdim<cutlass::half_t, 128>(p, stream);
#endif
    }
      break;
#endif
#if defined(FLASH_HDIM_192_ENABLED)
    case 192:
#if defined(FLASH_BF16_ENABLED)
      if (bf16) return run_fwd_hdim<cutlass::bfloat16_t, 192>(p, stream);
#endif
#if defined(FLASH_FP16_ENABLED)
      if (!bf16) return run_fwd_hdim<cutlass::half_t, 192>(p, stream);
#endif
      break;
#endif
#if defined(FLASH_HDIM_256_ENABLED)
    case 256:
    {
      // The 128 x 48 tile with two Q buffers (fwd_traits.h, kTile 1): FLASH_SM90_FWD_D256_TILE=0|1;
      // default (-1): calls with a window (causal) and seqlen_q, seqlen_k <= 1024 (varlen: the
      // maxima). H100, session 5 round 2 (in-process A/B, pinned): causal 1K +7.6 % (410 vs 381
      // TFLOP/s); causal 2K -2 %, non-causal 1K / 2K -6 / -6.5 %, 16K -12 %: the narrow blocks
      // only pay where the default tile's single Q buffer exposes the Q load at short tiles.
      static const tuning::Switch d256_tile("FLASH_SM90_FWD_D256_TILE", -1);
      const int t = d256_tile.get();
      const bool windowed = p.window_left >= 0 || p.window_right >= 0;
      const bool n48 = t < 0 ? (windowed && p.seqlen_q <= 1024 && p.seqlen_k <= 1024) : t == 1;
#if defined(FLASH_BF16_ENABLED)
      if (bf16 && n48) return run_fwd_hdim<cutlass::bfloat16_t, 256, 1>(p, stream);
      if (bf16) return run_fwd_hdim<cutlass::bfloat16_t, 256>(p, stream);
#endif
#if defined(FLASH_FP16_ENABLED)
      if (!bf16 && n48) return run_fwd_hdim<cutlass::half_t, 256, 1>(p, stream);
      if (!bf16) return run_fwd_hdim<cutlass::half_t, 256>(p, stream);
#endif
    }
      break;
#endif
    default:
      break;
  }
  // Unreachable when the caller checked supports_fwd first.
}

}  // namespace flash::sm90
