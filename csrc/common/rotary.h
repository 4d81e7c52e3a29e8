// Rotary position embedding (RoPE) of the first `rotary_dim` dims of a head vector.
//
// A cos/sin row holds rotary_dim / 2 frequencies. Frequency f rotates one pair of dims:
//   interleaved (GPT-J):        dims (2f, 2f + 1)
//   not interleaved (GPT-NeoX): dims (f, f + rotary_dim / 2)
// and the pair (x0, x1) becomes (x0 * cos - x1 * sin, x0 * sin + x1 * cos). Dims at or past
// rotary_dim are left unchanged. The per-element form (rotary_partner / rotary_element) lets a
// kernel rotate the values it holds without staging the whole vector.
#pragma once

#include "hostdevice.h"

namespace flash {

// Frequency index used by dim d (d < rotary_dim).
FLASH_HD int rotary_freq(int d, int rotary_dim, bool interleaved) {
  const int half = rotary_dim / 2;
  return interleaved ? d / 2 : (d < half ? d : d - half);
}

// The other dim of d's pair.
FLASH_HD int rotary_partner(int d, int rotary_dim, bool interleaved) {
  const int half = rotary_dim / 2;
  return interleaved ? (d ^ 1) : (d < half ? d + half : d - half);
}

// Whether d is the first member (x0) of its pair.
FLASH_HD bool rotary_is_first(int d, int rotary_dim, bool interleaved) {
  return interleaved ? (d & 1) == 0 : d < rotary_dim / 2;
}

// Rotated value of dim d given its own value x, its partner's value, and the pair's cos/sin.
FLASH_HD float rotary_element(float x, float partner, float c, float s, bool is_first) {
  return is_first ? x * c - partner * s : partner * s + x * c;
}

// Rotates x[0, rotary_dim) in place; cos_row/sin_row hold rotary_dim / 2 values.
FLASH_HD void apply_rotary(float* x, const float* cos_row, const float* sin_row, int rotary_dim,
                           bool interleaved) {
  const int half = rotary_dim / 2;
  for (int f = 0; f < half; ++f) {
    const int d0 = interleaved ? 2 * f : f;
    const int d1 = interleaved ? 2 * f + 1 : f + half;
    const float x0 = x[d0], x1 = x[d1];
    const float c = cos_row[f], s = sin_row[f];
    x[d0] = x0 * c - x1 * s;
    x[d1] = x0 * s + x1 * c;
  }
}

}  // namespace flash
