// Counter-based dropout RNG shared by every backend, so a seed gives the same mask on CPU and GPU.
//
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
// One call yields four 32-bit words; we assign them to a 2x2 group of the attention matrix that
// matches the register layout of a 16x8 mma.sync / wgmma accumulator fragment:
//   element (i, j) of head (batch b, head h) belongs to the group with
//     counter = { j >> 1, (i >> 4) * 8 + (i & 7), b * nheads + h, offset_lo }
//     key     = { seed_lo, seed_hi + offset_hi }
//   and takes word  ((i >> 3) & 1) * 2 + (j & 1)  of the result.
// So one thread that holds rows (r, r + 8) x cols (c, c + 1) of a fragment makes one call.
// Element (i, j) is kept iff word < keep_threshold(p). i, j are positions inside the sequence
// (varlen: relative to the sequence start).
#pragma once

#include <cstdint>

#include "hostdevice.h"

namespace flash {

struct Philox4 {
  uint32_t x, y, z, w;
};

FLASH_HD uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}

FLASH_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t key0, uint32_t key1) {
  constexpr uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int round = 0; round < 10; ++round) {
    const uint32_t hi0 = mulhi32(kMul0, ctr.x), lo0 = kMul0 * ctr.x;
    const uint32_t hi1 = mulhi32(kMul1, ctr.z), lo1 = kMul1 * ctr.z;
    ctr = Philox4{hi1 ^ ctr.y ^ key0, lo1, hi0 ^ ctr.w ^ key1, lo0};
    key0 += kWeyl0;
    key1 += kWeyl1;
  }
  return ctr;
}

// The four words for the 2x2 group holding element (row, col) of head `bh` = b * nheads + h.
FLASH_HD Philox4 dropout_group_bits(uint64_t seed, uint64_t offset, uint32_t bh, uint32_t row,
                                    uint32_t col) {
  const Philox4 ctr{col >> 1, (row >> 4) * 8u + (row & 7u), bh, static_cast<uint32_t>(offset)};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32) + static_cast<uint32_t>(offset >> 32));
}

// Index (0..3) of element (row, col) inside its group's four words.
FLASH_HD int dropout_word_index(uint32_t row, uint32_t col) {
  return static_cast<int>(((row >> 3) & 1u) * 2u + (col & 1u));
}

FLASH_HD uint32_t dropout_word(const Philox4& r, int index) {
  return index == 0 ? r.x : index == 1 ? r.y : index == 2 ? r.z : r.w;
}

// Words below this are kept: floor((1 - p) * 2^32), saturated (p == 0 keeps everything).
inline uint32_t dropout_keep_threshold(float p) {
  const double t = (1.0 - static_cast<double>(p)) * 4294967296.0;
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

// Reference per-element query (slow path; kernels use dropout_group_bits once per group).
FLASH_HD bool dropout_keep(uint64_t seed, uint64_t offset, uint32_t bh, uint32_t row, uint32_t col,
                           uint32_t keep_threshold) {
  const Philox4 r = dropout_group_bits(seed, offset, bh, row, col);
  return dropout_word(r, dropout_word_index(row, col)) < keep_threshold;
}

}  // namespace flash
