// Validation and canonicalisation of the params structs (see validate.h).
#include "validate.h"

#include <cmath>
#include <string>

#include "flash/errors.h"

namespace flash::detail {
namespace {

std::string str(long long v) { return std::to_string(v); }

bool is_varlen(const FwdParams& p) { return p.cu_seqlens_q != nullptr; }

// Offsets in host memory: start at 0, non-decreasing, no sequence longer than max_len.
void check_cu_seqlens(const int32_t* cu, int batch, int max_len, const char* name) {
  check_arg(cu[0] == 0, name, "must start at 0");
  for (int b = 0; b < batch; ++b) {
    const int len = cu[b + 1] - cu[b];
    check_arg(len >= 0, name, "must be non-decreasing");
    check_arg(len <= max_len, name,
              "sequence " + str(b) + " has length " + str(len) + " > max_seqlen " + str(max_len));
  }
}

void check_common(FwdParams& p) {
  check_arg(p.device == Device::kCPU || p.device == Device::kCUDA, "device", "unknown device");
  check_arg(p.dtype == DType::kFloat32 || p.dtype == DType::kFloat16 || p.dtype == DType::kBFloat16,
            "dtype", "unknown dtype");
  if (p.device == Device::kCUDA) {
    check_arg(p.dtype != DType::kFloat32, "q",
              "CUDA tensors must be float16 or bfloat16 (float32 runs on the CPU backend only)");
  }
  check_arg(p.batch >= 0, "batch", "must be >= 0, got " + str(p.batch));
  check_arg(p.seqlen_q >= 0, "seqlen_q", "must be >= 0, got " + str(p.seqlen_q));
  check_arg(p.seqlen_k >= 0, "seqlen_k", "must be >= 0, got " + str(p.seqlen_k));
  check_arg(p.nheads >= 1, "nheads", "must be >= 1, got " + str(p.nheads));
  check_arg(p.nheads_k >= 1, "nheads_k", "must be >= 1, got " + str(p.nheads_k));
  check_arg(p.nheads % p.nheads_k == 0, "nheads_k",
            "number of query heads (" + str(p.nheads) + ") must be divisible by the number of "
            "key/value heads (" + str(p.nheads_k) + ")");
  check_arg(p.head_dim >= 1 && p.head_dim <= 256, "head_dim",
            "must be in [1, 256], got " + str(p.head_dim));
  if (p.device == Device::kCUDA) {
    check_arg(p.head_dim % 8 == 0, "head_dim",
              "CUDA kernels need a multiple of 8 (the Python API pads), got " + str(p.head_dim));
  }
  check_arg(std::isfinite(p.softmax_scale), "softmax_scale", "must be finite");
  check_arg(p.window_left >= -1, "window_size", "left must be >= -1, got " + str(p.window_left));
  check_arg(p.window_right >= -1, "window_size", "right must be >= -1, got " + str(p.window_right));
  check_arg(std::isfinite(p.softcap) && p.softcap >= 0.f, "softcap", "must be finite and >= 0");
  check_arg(std::isfinite(p.dropout_p) && p.dropout_p >= 0.f && p.dropout_p < 1.f, "dropout_p",
            "must be in [0, 1)");
  if (p.dropout_p > 0.f) check_arg(p.rng_state != nullptr, "rng_state", "required when dropout_p > 0");
  check_arg(p.alibi_batch_stride >= 0, "alibi_slopes", "batch stride must be >= 0");

  const bool empty = p.batch == 0 || (is_varlen(p) ? p.total_q == 0 : p.seqlen_q == 0);
  if (!empty) {
    check_arg(p.q != nullptr, "q", "null pointer");
    check_arg(p.out != nullptr, "out", "null pointer");
    check_arg(p.softmax_lse != nullptr, "softmax_lse", "null pointer");
    if (p.seqlen_k > 0) {
      check_arg(p.k != nullptr, "k", "null pointer");
      check_arg(p.v != nullptr, "v", "null pointer");
    }
  }

  // Variable length.
  check_arg((p.cu_seqlens_q == nullptr) == (p.cu_seqlens_k == nullptr), "cu_seqlens_k",
            "cu_seqlens_q and cu_seqlens_k must be given together");
  if (is_varlen(p)) check_arg(p.total_q >= 0, "total_q", "must be >= 0");
  if (p.device == Device::kCPU && is_varlen(p)) {
    // Host memory: the offsets can be checked without a device sync.
    check_cu_seqlens(p.cu_seqlens_q, p.batch, p.seqlen_q, "cu_seqlens_q");
    check_cu_seqlens(p.cu_seqlens_k, p.batch, p.seqlen_k, "cu_seqlens_k");
    check_arg(p.cu_seqlens_q[p.batch] == p.total_q, "cu_seqlens_q",
              "last entry must equal the number of rows of q (" + str(p.total_q) + ")");
  }

  // Paged KV.
  if (p.block_table != nullptr) {
    check_arg(p.page_size >= 1, "page_size", "must be >= 1 with a block_table");
    check_arg(p.num_pages >= 1, "num_pages", "must be >= 1 with a block_table");
    check_arg(p.block_table_batch_stride >= 1, "block_table", "batch stride must be >= 1");
  }

  // Canonical masks: causal is a window with right edge 0; a side that can never bind is -1.
  if (p.causal) p.window_right = 0;
  p.causal = false;
  if (p.window_left >= p.seqlen_k) p.window_left = -1;
  if (p.window_right >= p.seqlen_k && p.window_right >= p.seqlen_q) p.window_right = -1;
}

}  // namespace

void validate_fwd(FwdParams& p) {
  check_common(p);
  if (p.attn_probs != nullptr) {
    check_arg(p.probs_row_stride >= p.seqlen_k, "attn_probs", "row stride smaller than seqlen_k");
  }
}

void validate_bwd(BwdParams& p) {
  check_common(p);
  check_arg(p.block_table == nullptr, "block_table", "paged K/V has no backward");
  const bool empty = p.batch == 0 || (is_varlen(p) ? p.total_q == 0 : p.seqlen_q == 0);
  if (!empty) {
    check_arg(p.dout != nullptr, "dout", "null pointer");
    check_arg(p.dq != nullptr, "dq", "null pointer");
  }
  if (p.batch > 0 && p.seqlen_k > 0) {
    check_arg(p.dk != nullptr, "dk", "null pointer");
    check_arg(p.dv != nullptr, "dv", "null pointer");
  }
}

void validate_kvcache(KvcacheParams& p) {
  check_arg(p.cu_seqlens_q == nullptr && p.cu_seqlens_k == nullptr, "cu_seqlens_q",
            "flash_attn_with_kvcache takes fixed-length q");
  check_arg(p.dropout_p == 0.f, "dropout_p", "flash_attn_with_kvcache has no dropout");
  check_arg(p.attn_probs == nullptr, "attn_probs", "not available with the kv cache");
  check_arg(p.seqlen_new >= 0, "k", "seqlen_new must be >= 0");
  check_arg((p.k_new == nullptr) == (p.v_new == nullptr), "v", "k and v must be given together");
  if (p.k_new == nullptr) p.seqlen_new = 0;
  check_arg(p.cache_seqlen_const >= 0, "cache_seqlens", "must be >= 0");
  if (p.block_table != nullptr) {
    check_arg(p.cache_batch_idx == nullptr, "cache_batch_idx", "cannot be combined with block_table");
  } else {
    check_arg(p.batch_cache >= 1 || p.batch == 0, "k_cache", "cache batch must be >= 1");
    if (p.cache_batch_idx == nullptr) {
      check_arg(p.batch_cache >= p.batch, "k_cache",
                "cache batch (" + str(p.batch_cache) + ") smaller than q batch (" + str(p.batch) +
                    ") and no cache_batch_idx");
    }
  }
  check_arg((p.rotary_cos == nullptr) == (p.rotary_sin == nullptr), "rotary_sin",
            "rotary_cos and rotary_sin must be given together");
  if (p.rotary_cos != nullptr) {
    check_arg(p.rotary_dim > 0 && p.rotary_dim % 2 == 0 && p.rotary_dim <= p.head_dim, "rotary_cos",
              "rotary_dim must be even and in (0, head_dim], got " + str(p.rotary_dim));
    check_arg(p.seqlen_rotary >= 1, "rotary_cos", "needs at least one row");
  }
  // The causal/local rule of kvcache is the same as the forward's; canonicalise the same way.
  check_common(p);
  check_arg(p.seqlen_k >= p.seqlen_new, "k_cache", "cache smaller than the new keys");
  if (p.device == Device::kCPU) {
    for (int b = 0; b < p.batch; ++b) {
      const int used = p.cache_seqlens ? p.cache_seqlens[b] : p.cache_seqlen_const;
      check_arg(used >= 0 && used + p.seqlen_new <= p.seqlen_k, "cache_seqlens",
                "entry " + str(b) + " = " + str(used) + " leaves no room for " + str(p.seqlen_new) +
                    " new keys in a cache of " + str(p.seqlen_k));
      if (p.cache_leftpad) {
        check_arg(p.cache_leftpad[b] >= 0 && p.cache_leftpad[b] <= used, "cache_leftpad",
                  "entry " + str(b) + " outside [0, cache_seqlens]");
      }
      if (p.cache_batch_idx) {
        check_arg(p.cache_batch_idx[b] >= 0 && p.cache_batch_idx[b] < p.batch_cache,
                  "cache_batch_idx", "entry " + str(b) + " outside the cache batch");
      }
    }
  }
}

void check_workspace(const FwdParams& p, size_t needed) {
  check_arg(needed == 0 || (p.workspace != nullptr && p.workspace_bytes >= needed), "workspace",
            "needs " + std::to_string(needed) + " bytes, got " + std::to_string(p.workspace_bytes));
}

}  // namespace flash::detail
