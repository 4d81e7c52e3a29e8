// Host conversions between fp32 and the 16-bit storage types (IEEE fp16, bfloat16).
// fp32 -> 16 bit rounds to nearest, ties to even (what the GPU's cvt.rn does), so the CPU
// backend rounds its outputs exactly as a kernel storing fp32 accumulators would.
#pragma once

#include <cstdint>
#include <cstring>

namespace flash::numeric {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// ---- IEEE binary16 -----------------------------------------------------------------------

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t mant = h & 0x3FFu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in fp32.
    const float mag = static_cast<float>(mant) * (1.0f / 16777216.0f);
    return sign ? -mag : mag;
  }
  if (exp == 31) return bits_float(sign | 0x7F800000u | (mant << 13));  // inf / nan
  return bits_float(sign | ((exp + 112u) << 23) | (mant << 13));        // rebias 15 -> 127
}

inline uint16_t float_to_half(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x7F800000u)  // inf stays inf; nan stays a (quiet) nan
    return static_cast<uint16_t>(sign | 0x7C00u | (ax > 0x7F800000u ? 0x200u : 0u));
  if (ax >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // >= 65520 -> inf
  if (ax < 0x38800000u) {
    // Result is a half subnormal (or zero): round(|f| * 2^24) with ties to even.
    const uint32_t e = ax >> 23;
    if (e < 102) return sign;  // |f| < 2^-25: rounds to zero (2^-25 itself ties to even 0)
    const uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
    const uint32_t shift = 126u - e;  // 14..24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;  // may carry into the min normal
    return static_cast<uint16_t>(sign | q);
  }
  // Normal: rebias the exponent, then drop 13 mantissa bits with round-half-even
  // (a carry out of the mantissa correctly bumps the exponent).
  uint32_t r = ax - 0x38000000u;
  r += 0xFFFu + ((r >> 13) & 1u);
  return static_cast<uint16_t>(sign | (r >> 13));
}

// ---- bfloat16 (the top half of an fp32) ----------------------------------------------------

inline float bf16_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

inline uint16_t float_to_bf16(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // nan
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

// Value after a round trip through the 16-bit type (what storing then reloading gives).
inline float round_to_half(float f) { return half_to_float(float_to_half(f)); }
inline float round_to_bf16(float f) { return bf16_to_float(float_to_bf16(f)); }

}  // namespace flash::numeric
