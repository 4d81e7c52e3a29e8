// Exact combination of split-KV partial results through their log-sum-exp.
//
// Split s attends a disjoint key range and produces a normalised partial output O_s and its
// lse_s = log(sum over its keys of exp(score)); a split that saw no key has lse_s = -inf.
// The full result is
//   lse = log(sum_s exp(lse_s)),   O = sum_s exp(lse_s - lse) * O_s
// (dropout, if any, is already inside each O_s and does not change lse). When every split is
// empty lse is -inf and O is 0; the caller turns that into the public "+inf" convention.
#pragma once

#include <cmath>

#include "hostdevice.h"

namespace flash {

// lse over `n` partials read at lse_parts[s * stride]; -inf when all are -inf.
FLASH_HD float combine_lse(const float* lse_parts, int n, int stride) {
  float m = -INFINITY;
  for (int s = 0; s < n; ++s) m = fmaxf(m, lse_parts[s * stride]);
  if (m == -INFINITY) return -INFINITY;
  float sum = 0.f;
  for (int s = 0; s < n; ++s) sum += expf(lse_parts[s * stride] - m);  // empty splits add 0
  return m + logf(sum);
}

// Weight of a split with lse_part in the combined output (0 for empty splits / empty rows).
FLASH_HD float split_weight(float lse_part, float lse_total) {
  return (lse_total == -INFINITY || lse_part == -INFINITY) ? 0.f : expf(lse_part - lse_total);
}

// Public lse convention: a row that saw no key reports +inf.
FLASH_HD float public_lse(float lse) { return lse == -INFINITY ? INFINITY : lse; }

}  // namespace flash
