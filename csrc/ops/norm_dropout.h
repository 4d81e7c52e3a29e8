// The dropout mask of the fused norm (include/flash/ops.h, NormParams), shared by the CPU backend
// and the CUDA kernels so one (seed, offset) gives the same mask everywhere, and so the backward
// can regenerate the mask instead of storing it.
//
// Philox4x32-10 (csrc/common/philox.h). One call covers four consecutive columns 4c..4c+3 of one
// row of one input (`which`: 0 = x0, 1 = x1):
//   counter = { c, row_lo, kNormTag ^ (which << 31) ^ row_hi, offset_lo }, key = attention's.
// Column j takes word j & 3 and is kept iff word < dropout_keep_threshold(p).
#pragma once

#include <cstdint>

#include "common/philox.h"

namespace flash::ops {

constexpr uint32_t kNormTag = 0x4E4F524Du;  // "NORM": keeps these streams apart from attention's

FLASH_HD Philox4 norm_dropout_bits(uint64_t seed, uint64_t offset, uint32_t which, uint64_t row,
                                   uint64_t col) {
  const Philox4 ctr{static_cast<uint32_t>(col >> 2), static_cast<uint32_t>(row),
                    kNormTag ^ (which << 31) ^ static_cast<uint32_t>(row >> 32),
                    static_cast<uint32_t>(offset)};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32) + static_cast<uint32_t>(offset >> 32));
}

FLASH_HD bool norm_dropout_keep(uint64_t seed, uint64_t offset, uint32_t which, uint64_t row,
                                uint64_t col, uint32_t threshold) {
  const Philox4 r = norm_dropout_bits(seed, offset, which, row, col);
  return dropout_word(r, static_cast<int>(col & 3)) < threshold;
}

}  // namespace flash::ops
