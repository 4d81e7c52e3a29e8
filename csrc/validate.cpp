// Validation and canonicalisation of the params structs (see validate.h).
//
// Two kinds of checks:
//  * scalar and pointer checks, always (cheap, no device access);
//  * per-sequence index checks (cu_seqlens, seqused_k, cache_seqlens, cache_batch_idx,
//    cache_leftpad, block_table values). These live in the tensors' memory: on the CPU they are
//    read directly (always); on CUDA reading them would cost a device sync, so they are only
//    checked in the opt-in debug mode FLASH_ATTN_CHECK_INDICES=1, which copies them to the host.
//    Without it the CUDA kernels must stay in bounds whatever the values (RELIABILITY notes).
#include "validate.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "flash/errors.h"

#if defined(FLASH_ATTN_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace flash::detail {
namespace {

std::string str(long long v) { return std::to_string(v); }

bool is_varlen(const FwdParams& p) { return p.cu_seqlens_q != nullptr; }

// FLASH_ATTN_CHECK_INDICES set to anything but "" or "0". Read on every call (getenv is cheap
// next to a kernel launch) so a process can switch it on and off, e.g. around one suspicious call.
bool index_debug_mode() {
  const char* v = std::getenv("FLASH_ATTN_CHECK_INDICES");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

// ---- host views of the index arrays ---------------------------------------------------------

// Copies `n` int32 values of argument `name` to the host. CPU tensors are used in place.
class IndexReader {
 public:
  explicit IndexReader(const FwdParams& p) : device_(p.device), device_index_(p.device_index) {}

  const int32_t* read(const int32_t* src, int64_t n, const char* name) {
    if (src == nullptr || device_ == Device::kCPU || n <= 0) return src;
    copies_.emplace_back(static_cast<size_t>(n));
    copy_from_device(copies_.back().data(), src, n, name);
    return copies_.back().data();
  }

 private:
  void copy_from_device(int32_t* dst, const int32_t* src, int64_t n, const char* name) {
#if defined(FLASH_ATTN_WITH_CUDA)
    if (!synced_) {
      // The values may still be in flight on any stream: wait for the whole device (debug mode
      // only; this is why it cannot run inside CUDA-graph capture).
      int previous = 0;
      cudaGetDevice(&previous);
      cudaSetDevice(device_index_);
      const cudaError_t err = cudaDeviceSynchronize();
      cudaSetDevice(previous);
      if (err != cudaSuccess) {
        cudaGetLastError();
        throw Error("FLASH_ATTN_CHECK_INDICES",
                    std::string("cannot synchronise the device to read the index tensors (not "
                                "usable during CUDA-graph capture): ") + cudaGetErrorString(err));
      }
      synced_ = true;
    }
    const cudaError_t err = cudaMemcpy(dst, src, sizeof(int32_t) * static_cast<size_t>(n), cudaMemcpyDefault);
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw Error(name, std::string("cannot be read (") + cudaGetErrorString(err) + ")");
    }
#else
    (void)dst, (void)src, (void)n;
    throw Error("device", std::string("cannot read ") + name + ": this build has no CUDA backend");
#endif
  }

  Device device_;
  int device_index_;
  bool synced_ = false;
  std::vector<std::vector<int32_t>> copies_;
};

// Debug mode, CUDA params: no pointer may be host memory or memory of another device (pointers the
// runtime cannot classify get no verdict).
// A host query (cudaPointerGetAttributes), no synchronisation; the C++ API has no other way to see
// where a raw pointer lives.
struct NamedPointer {
  const void* ptr;
  const char* name;
};
void check_device_pointers(const FwdParams& p, std::initializer_list<NamedPointer> pointers) {
#if defined(FLASH_ATTN_WITH_CUDA)
  for (const NamedPointer& np : pointers) {
    if (np.ptr == nullptr) continue;
    cudaPointerAttributes attr{};
    const cudaError_t err = cudaPointerGetAttributes(&attr, np.ptr);
    if (err != cudaSuccess) {
      cudaGetLastError();
      continue;  // the runtime cannot classify it: no verdict (a debug aid must not reject valid memory)
    }
    const bool host = attr.type == cudaMemoryTypeUnregistered || attr.type == cudaMemoryTypeHost;
    const bool other_device = attr.type == cudaMemoryTypeDevice && attr.device != p.device_index;
    check_arg(!host && !other_device, np.name,
              std::string(host ? "is host memory" : "is memory of CUDA device " + str(attr.device)) +
                  ", not of CUDA device " + str(p.device_index) + " (every tensor must be on the same device)");
  }
#else
  (void)p, (void)pointers;
#endif
}

void check_fwd_pointers(const FwdParams& p) {
  check_device_pointers(p, {{p.q, "q"}, {p.k, "k"}, {p.v, "v"}, {p.out, "out"}, {p.softmax_lse, "softmax_lse"},
                            {p.cu_seqlens_q, "cu_seqlens_q"}, {p.cu_seqlens_k, "cu_seqlens_k"},
                            {p.seqused_k, "seqused_k"}, {p.block_table, "block_table"},
                            {p.alibi_slopes, "alibi_slopes"}, {p.rng_state, "rng_state"},
                            {p.attn_probs, "attn_probs"}, {p.workspace, "workspace"}});
}

// Pages in [first, last) of row b of the (host) block table must lie in [0, num_pages).
void check_pages(const FwdParams& p, const int32_t* table, int b, int64_t first, int64_t last) {
  const int32_t* row = table + static_cast<int64_t>(b) * p.block_table_batch_stride;
  for (int64_t i = first; i < last; ++i) {
    check_arg(row[i] >= 0 && row[i] < p.num_pages, "block_table",
              "entry (" + str(b) + ", " + str(i) + ") = " + str(row[i]) + " is not a page id in [0, " +
                  str(p.num_pages) + ")");
  }
}

int64_t pages_for(int64_t keys, int page_size) { return keys <= 0 ? 0 : (keys + page_size - 1) / page_size; }

// Offsets: start at 0, non-decreasing, no sequence longer than max_len.
void check_cu_seqlens(const int32_t* cu, int batch, int max_len, const char* name, const char* max_name) {
  check_arg(cu[0] == 0, name, "must start at 0, got " + str(cu[0]));
  for (int b = 0; b < batch; ++b) {
    const int64_t len = static_cast<int64_t>(cu[b + 1]) - cu[b];
    check_arg(len >= 0, name,
              "must be non-decreasing, entry " + str(b + 1) + " = " + str(cu[b + 1]) + " < " + str(cu[b]));
    check_arg(len <= max_len, name,
              "sequence " + str(b) + " has length " + str(len) + " > " + max_name + " " + str(max_len));
  }
}

// Per-sequence checks of fwd/bwd params (varlen offsets, seqused_k, block-table capacity and,
// with check_page_ids, the page ids the sequences use).
void check_sequence_indices(const FwdParams& p, bool check_page_ids) {
  if (p.batch <= 0) return;
  IndexReader reader(p);
  const int32_t* cu_q = reader.read(p.cu_seqlens_q, int64_t(p.batch) + 1, "cu_seqlens_q");
  const int32_t* cu_k = reader.read(p.cu_seqlens_k, int64_t(p.batch) + 1, "cu_seqlens_k");
  const int32_t* used = reader.read(p.seqused_k, p.batch, "seqused_k");
  if (cu_q != nullptr) {
    check_cu_seqlens(cu_q, p.batch, p.seqlen_q, "cu_seqlens_q", "max_seqlen_q");
    check_arg(cu_q[p.batch] == p.total_q, "cu_seqlens_q",
              "last entry " + str(cu_q[p.batch]) + " must equal the number of rows of q (" + str(p.total_q) + ")");
  }
  if (cu_k != nullptr) {
    check_cu_seqlens(cu_k, p.batch, p.seqlen_k, "cu_seqlens_k", "max_seqlen_k");
    if (p.block_table == nullptr && p.total_k >= 0) {
      check_arg(cu_k[p.batch] <= p.total_k, "cu_seqlens_k",
                "last entry " + str(cu_k[p.batch]) + " exceeds the rows of k (total_k = " + str(p.total_k) + ")");
    }
  }

  const bool paged = p.block_table != nullptr;
  // A row of the block table has at least block_table_batch_stride entries only where rows are
  // packed (the Python API makes it contiguous); the stride is the bound C++ can know.
  const int64_t row_capacity = paged ? p.block_table_batch_stride * p.page_size : 0;
  int64_t max_pages = 0;
  for (int b = 0; b < p.batch; ++b) {
    const int64_t len = cu_k != nullptr ? static_cast<int64_t>(cu_k[b + 1]) - cu_k[b] : p.seqlen_k;
    int64_t keys = len;
    if (used != nullptr) {
      check_arg(used[b] >= 0 && used[b] <= len, "seqused_k",
                "entry " + str(b) + " = " + str(used[b]) + " outside [0, " + str(len) +
                    "] (the sequence's key count)");
      keys = used[b];
    }
    if (paged) {
      check_arg(keys <= row_capacity, "block_table",
                "sequence " + str(b) + " has " + str(keys) + " keys but a row maps at most " +
                    str(row_capacity) + " (" + str(p.block_table_batch_stride) + " pages of " +
                    str(p.page_size) + ")");
      max_pages = std::max(max_pages, pages_for(keys, p.page_size));
    }
  }
  if (paged && check_page_ids && max_pages > 0) {
    const int64_t n = int64_t(p.batch - 1) * p.block_table_batch_stride + max_pages;
    const int32_t* table = reader.read(p.block_table, n, "block_table");
    for (int b = 0; b < p.batch; ++b) {
      const int64_t len = cu_k != nullptr ? static_cast<int64_t>(cu_k[b + 1]) - cu_k[b] : p.seqlen_k;
      check_pages(p, table, b, 0, pages_for(used != nullptr ? used[b] : len, p.page_size));
    }
  }
}

// Per-sequence checks of kvcache params: room for the appended keys, leftpad, cache rows and,
// with check_page_ids, the page ids of the attended and appended keys.
void check_kvcache_indices(const KvcacheParams& p, bool check_page_ids) {
  if (p.batch <= 0) return;
  IndexReader reader(p);
  const int32_t* seqlens = reader.read(p.cache_seqlens, p.batch, "cache_seqlens");
  const int32_t* leftpad = reader.read(p.cache_leftpad, p.batch, "cache_leftpad");
  const int32_t* batch_idx = reader.read(p.cache_batch_idx, p.batch, "cache_batch_idx");
  const bool paged = p.block_table != nullptr;
  const int32_t* table = nullptr;
  if (paged && check_page_ids) {
    // kvcache: seqlen_k = (pages per row) * page_size, so a row has ceil(seqlen_k / page_size) entries.
    const int64_t cols = pages_for(p.seqlen_k, p.page_size);
    table = reader.read(p.block_table, int64_t(p.batch - 1) * p.block_table_batch_stride + cols, "block_table");
  }
  for (int b = 0; b < p.batch; ++b) {
    const int64_t cached = seqlens ? seqlens[b] : p.cache_seqlen_const;
    check_arg(cached >= 0 && cached + p.seqlen_new <= p.seqlen_k, "cache_seqlens",
              "entry " + str(b) + " = " + str(cached) + " leaves no room for " + str(p.seqlen_new) +
                  " new keys in a cache of " + str(p.seqlen_k));
    int64_t first_key = 0;
    if (leftpad != nullptr) {
      check_arg(leftpad[b] >= 0 && leftpad[b] <= cached, "cache_leftpad",
                "entry " + str(b) + " = " + str(leftpad[b]) + " outside [0, cache_seqlens[b] = " + str(cached) + "]");
      first_key = leftpad[b];
    }
    if (batch_idx != nullptr) {
      check_arg(batch_idx[b] >= 0 && batch_idx[b] < p.batch_cache, "cache_batch_idx",
                "entry " + str(b) + " = " + str(batch_idx[b]) + " outside the cache batch [0, " +
                    str(p.batch_cache) + ")");
    }
    if (table != nullptr) {
      const int64_t end = cached + p.seqlen_new;
      if (end > first_key) check_pages(p, table, b, first_key / p.page_size, pages_for(end, p.page_size));
    }
  }
}

void check_common(FwdParams& p) {
  check_arg(p.device == Device::kCPU || p.device == Device::kCUDA, "device", "unknown device");
  check_arg(p.dtype == DType::kFloat32 || p.dtype == DType::kFloat16 || p.dtype == DType::kBFloat16,
            "dtype", "unknown dtype");
  if (p.device == Device::kCUDA) {
    check_arg(p.device_index >= 0, "device_index", "must be >= 0, got " + str(p.device_index));
    check_arg(p.dtype != DType::kFloat32, "q",
              "CUDA tensors must be float16 or bfloat16 (float32 runs on the CPU backend only)");
  }
  check_arg(p.batch >= 0, "batch", "must be >= 0, got " + str(p.batch));
  // Varlen: the fields hold max_seqlen_q / max_seqlen_k; name them as the Python API does.
  check_arg(p.seqlen_q >= 0, is_varlen(p) ? "max_seqlen_q" : "seqlen_q", "must be >= 0, got " + str(p.seqlen_q));
  check_arg(p.seqlen_k >= 0, is_varlen(p) ? "max_seqlen_k" : "seqlen_k", "must be >= 0, got " + str(p.seqlen_k));
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

  // Paged KV (before the pointer checks: a page size of 0 leaves k/v without elements).
  if (p.block_table != nullptr) {
    check_arg(p.page_size >= 1, "page_size", "must be >= 1 with a block_table, got " + str(p.page_size));
    check_arg(p.num_pages >= 1, "num_pages", "must be >= 1 with a block_table, got " + str(p.num_pages));
    check_arg(p.block_table_batch_stride >= 1, "block_table", "batch stride must be >= 1");
  }

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
  if (is_varlen(p)) check_arg(p.total_q >= 0, "total_q", "must be >= 0, got " + str(p.total_q));
  // Kernels clamp device-held cu_seqlens_k into [0, total_k] (common/varlen.h), so it must be known.
  if (is_varlen(p) && p.block_table == nullptr) {
    check_arg(p.total_k >= 0, "total_k", "rows of k/v are required with cu_seqlens_k, got " + str(p.total_k));
  }
}

// Canonical masks: causal is a window with right edge 0; a side that can never bind is -1.
void canonicalise_masks(FwdParams& p) {
  if (p.causal) p.window_right = 0;
  p.causal = false;
  if (p.window_left >= p.seqlen_k) p.window_left = -1;
  if (p.window_right >= p.seqlen_k && p.window_right >= p.seqlen_q) p.window_right = -1;
}

// Host memory is checked always; device memory only in the debug mode.
void check_fwd_bwd_indices(const FwdParams& p) {
  const bool debug = index_debug_mode();
  if (debug && p.device == Device::kCUDA) check_fwd_pointers(p);
  if (p.device == Device::kCPU || debug) check_sequence_indices(p, /*check_page_ids=*/debug);
}

}  // namespace

void validate_fwd(FwdParams& p) {
  check_common(p);
  if (p.block_table != nullptr) {
    // Kernels clamp a sequence's keys to max_seqlen_k, not to its block-table row (the params carry
    // only the row stride): a larger max_seqlen_k would let bad cu_seqlens_k read past the table.
    check_arg(int64_t(p.seqlen_k) <= p.block_table_batch_stride * p.page_size,
              is_varlen(p) ? "max_seqlen_k" : "seqlen_k",
              str(p.seqlen_k) + " exceeds the keys one block_table row maps (" + str(p.block_table_batch_stride) +
                  " pages of " + str(p.page_size) + ")");
  }
  check_fwd_bwd_indices(p);
  canonicalise_masks(p);
  if (p.attn_probs != nullptr) {
    check_arg(p.probs_row_stride >= p.seqlen_k, "attn_probs", "row stride smaller than seqlen_k");
  }
}

void validate_bwd(BwdParams& p) {
  check_common(p);
  check_arg(p.block_table == nullptr, "block_table", "paged K/V has no backward");
  check_fwd_bwd_indices(p);
  canonicalise_masks(p);
  if (p.device == Device::kCUDA && index_debug_mode()) {
    check_device_pointers(p, {{p.dout, "dout"}, {p.dq, "dq"}, {p.dk, "dk"}, {p.dv, "dv"}});
  }
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
  check_arg(p.seqused_k == nullptr, "seqused_k", "not used by flash_attn_with_kvcache (use cache_seqlens)");
  check_arg(p.dropout_p == 0.f, "dropout_p", "flash_attn_with_kvcache has no dropout");
  check_arg(p.attn_probs == nullptr, "attn_probs", "not available with the kv cache");
  check_arg(p.seqlen_new >= 0, "k", "seqlen_new must be >= 0, got " + str(p.seqlen_new));
  check_arg((p.k_new == nullptr) == (p.v_new == nullptr), "v", "k and v must be given together");
  if (p.k_new == nullptr) p.seqlen_new = 0;
  check_arg(p.cache_seqlen_const >= 0, "cache_seqlens", "must be >= 0, got " + str(p.cache_seqlen_const));
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
  check_arg(p.seqlen_k >= p.seqlen_new, "k_cache",
            "cache of " + str(p.seqlen_k) + " keys smaller than the " + str(p.seqlen_new) + " new keys");
  if (p.cache_seqlens == nullptr && p.batch > 0) {
    // A host integer: checked on every device.
    check_arg(int64_t(p.cache_seqlen_const) + p.seqlen_new <= p.seqlen_k, "cache_seqlens",
              str(p.cache_seqlen_const) + " leaves no room for " + str(p.seqlen_new) + " new keys in a cache of " +
                  str(p.seqlen_k));
  }
  const bool debug = index_debug_mode();
  if (debug && p.device == Device::kCUDA) {
    check_fwd_pointers(p);
    check_device_pointers(p, {{p.k_new, "k"}, {p.v_new, "v"}, {p.rotary_cos, "rotary_cos"},
                              {p.rotary_sin, "rotary_sin"}, {p.cache_seqlens, "cache_seqlens"},
                              {p.cache_batch_idx, "cache_batch_idx"}, {p.cache_leftpad, "cache_leftpad"}});
  }
  if (p.device == Device::kCPU || debug) check_kvcache_indices(p, /*check_page_ids=*/debug);
  canonicalise_masks(p);
}

void check_workspace(const FwdParams& p, size_t needed) {
  check_arg(needed == 0 || (p.workspace != nullptr && p.workspace_bytes >= needed), "workspace",
            "needs " + std::to_string(needed) + " bytes, got " + std::to_string(p.workspace_bytes));
}

}  // namespace flash::detail
