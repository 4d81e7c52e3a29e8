// Where sequence b lives inside a packed (varlen) tensor, made safe against corrupt cu_seqlens.
//
// cu_seqlens live in device memory, so the host cannot check them without a sync. Every kernel
// derives a sequence's rows through this one function, which clamps them into the tensor it was
// given: [start, start + len) always lies inside [0, total), and len never exceeds max_len (the
// max_seqlen the launch was sized for: grids, S_dmask rows and workspaces assume it). For valid
// input (0 <= cu[b] <= cu[b+1] <= total, cu[b+1] - cu[b] <= max_len) it returns exactly the
// sequence; for invalid input it returns some in-bounds (possibly empty) range, so a bad value
// yields wrong numbers for that sequence but never touches memory outside the tensors.
#pragma once

#include <cstdint>

#include "common/hostdevice.h"

namespace flash {

struct PackedRange {
  int64_t start;  // first row of the sequence in the packed tensor
  int len;        // rows of the sequence
};

FLASH_HD PackedRange packed_range(const int32_t* cu_seqlens, int b, int64_t total, int max_len) {
  int64_t start = cu_seqlens[b], end = cu_seqlens[b + 1];
  start = start < 0 ? 0 : (start > total ? total : start);
  end = end < start ? start : (end > total ? total : end);
  const int64_t len = end - start;
  return {start, static_cast<int>(len < max_len ? len : (max_len < 0 ? 0 : max_len))};
}

}  // namespace flash
