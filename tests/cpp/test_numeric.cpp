// fp16 / bf16 conversions: exact bit patterns, round-to-nearest-even ties, subnormals, specials.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "common/numeric.h"

using namespace flash::numeric;

TEST(Numeric, HalfKnownValues) {
  EXPECT_EQ(float_to_half(0.f), 0x0000);
  EXPECT_EQ(float_to_half(-0.f), 0x8000);
  EXPECT_EQ(float_to_half(1.f), 0x3C00);
  EXPECT_EQ(float_to_half(-2.f), 0xC000);
  EXPECT_EQ(float_to_half(65504.f), 0x7BFF);
  EXPECT_EQ(float_to_half(65519.f), 0x7BFF);  // below the midpoint to inf
  EXPECT_EQ(float_to_half(65520.f), 0x7C00);  // the midpoint ties to even: inf
  EXPECT_EQ(float_to_half(1e6f), 0x7C00);
  EXPECT_EQ(float_to_half(std::numeric_limits<float>::infinity()), 0x7C00);
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(NAN))));
  EXPECT_EQ(float_to_half(std::ldexp(1.f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(float_to_half(std::ldexp(1.f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_half(std::ldexp(1.f, -25)), 0x0000);  // tie to even: 0
  EXPECT_EQ(float_to_half(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(float_to_half(std::ldexp(3.f, -25)), 0x0002);  // 1.5 ulp ties to 2
}

TEST(Numeric, HalfTiesToEven) {
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
  EXPECT_EQ(float_to_half(1.f + std::ldexp(1.f, -11)), 0x3C00);
  // 1 + 3 * 2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
  EXPECT_EQ(float_to_half(1.f + 3 * std::ldexp(1.f, -11)), 0x3C02);
  EXPECT_EQ(float_to_half(1.f + std::ldexp(1.f, -11) + std::ldexp(1.f, -20)), 0x3C01);
}

TEST(Numeric, HalfRoundTripAllPatterns) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float f = half_to_float(bits);
    if (std::isnan(f)) continue;
    EXPECT_EQ(float_to_half(f), bits) << std::hex << h;
  }
}

TEST(Numeric, HalfMatchesNearestByBruteForce) {
  // For many floats the result must be a nearest representable half.
  for (int t = -30000; t <= 30000; ++t) {
    const float f = static_cast<float>(t) * 0.0137f + static_cast<float>(t % 7) * 1e-6f;
    const float r = half_to_float(float_to_half(f));
    const uint16_t bits = float_to_half(f);
    const float up = half_to_float(static_cast<uint16_t>(bits + 1));
    const float down = half_to_float(static_cast<uint16_t>(bits - 1));
    if (f == 0.f) continue;
    EXPECT_LE(std::fabs(r - f), std::fabs(up - f)) << f;
    EXPECT_LE(std::fabs(r - f), std::fabs(down - f)) << f;
  }
}

TEST(Numeric, Bf16) {
  EXPECT_EQ(float_to_bf16(1.f), 0x3F80);
  EXPECT_EQ(float_to_bf16(-1.f), 0xBF80);
  EXPECT_EQ(float_to_bf16(1.f + std::ldexp(1.f, -8)), 0x3F80);      // tie to even
  EXPECT_EQ(float_to_bf16(1.f + 3 * std::ldexp(1.f, -8)), 0x3F82);  // tie to even (up)
  EXPECT_EQ(float_to_bf16(1.f + std::ldexp(1.f, -8) + std::ldexp(1.f, -20)), 0x3F81);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_EQ(float_to_bf16(3.3895314e38f), 0x7F7F);  // max finite stays finite
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = bf16_to_float(static_cast<uint16_t>(b));
    if (!std::isnan(f)) {
      EXPECT_EQ(float_to_bf16(f), b);
    }
  }
}
