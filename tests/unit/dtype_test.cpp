#include <bit>
#include <cmath>
#include <cstdint>
#include <map>

#include <gtest/gtest.h>

#include "ctcal/dtype.h"

namespace ctcal {
namespace {

TEST(DType, NamesRoundTrip) {
  for (auto t : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3, DType::kI8, DType::kI32}) {
    EXPECT_EQ(dtype_from_name(dtype_name(t)), t);
    EXPECT_EQ(dtype_from_torch_name(torch_dtype_name(t)), t);
  }
  EXPECT_EQ(dtype_from_torch_name("bfloat16"), DType::kBF16);
  EXPECT_FALSE(dtype_from_name("F4").has_value());
}

TEST(DType, Bf16RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to even (1).
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + std::ldexp(1.0f, -8))), 1.0f);
  // 1 + 3*2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 (even): goes up.
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))), 1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

TEST(DType, F16KnownValues) {
  EXPECT_EQ(f32_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(f32_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(1e6f), 0x7C00);                       // overflow -> inf
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);      // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_f32(0x3555), 0.333251953125f);
  for (uint32_t h = 0; h < 0x7C00; ++h)  // every finite positive half survives the round trip
    ASSERT_EQ(f32_to_f16(f16_to_f32(static_cast<uint16_t>(h))), h) << h;
}

TEST(DType, Fp8E4M3AllCodesRoundTrip) {
  for (int c = 0; c < 256; ++c) {
    const float v = f8e4m3_to_f32(static_cast<uint8_t>(c));
    if (std::isnan(v)) continue;
    if (v == 0.0f) continue;  // +0 / -0 both fine
    EXPECT_EQ(f32_to_f8e4m3(v), c) << c;
  }
  EXPECT_EQ(f8e4m3_to_f32(0x7E), 448.0f);
  EXPECT_EQ(f8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(f8e4m3_to_f32(0x7F)));
}

TEST(DType, Fp8CodesEqualRoundToDtypeOverASweepOfFloats) {
  // f32_to_f8e4m3 works on the float's bits; the reference is round_to_dtype (frexp / nearbyint
  // in double) followed by a lookup of the code with that value: every 97th float bit pattern
  // (44 million, both signs, every binade, ties included via the exact grid below).
  std::map<float, uint8_t> code_of;
  for (int c = 0; c < 256; ++c) {
    const float v = f8e4m3_to_f32(static_cast<uint8_t>(c));
    if (!std::isnan(v) && !(v == 0.0f && c != 0 && c != 0x80)) code_of.emplace(v, static_cast<uint8_t>(c));
  }
  auto reference = [&](float v) -> int {
    if (std::isnan(v)) return 0x7F;
    const auto r = static_cast<float>(round_to_dtype(v, DType::kF8E4M3));
    if (r == 0.0f) return std::signbit(v) ? 0x80 : 0x00;
    return code_of.at(r);
  };
  for (uint64_t b = 0; b <= 0xFFFFFFFFull; b += 97) {
    const float v = std::bit_cast<float>(static_cast<uint32_t>(b));
    ASSERT_EQ(f32_to_f8e4m3(v), reference(v)) << v;
  }
  // Ties: midpoints between neighbouring codes (normal and subnormal), both signs.
  for (int c = 0; c < 0x7E; ++c)
    for (float s : {1.0f, -1.0f}) {
      const float mid = s * 0.5f * (f8e4m3_to_f32(static_cast<uint8_t>(c)) + f8e4m3_to_f32(static_cast<uint8_t>(c + 1)));
      ASSERT_EQ(f32_to_f8e4m3(mid), reference(mid)) << mid;
    }
}

TEST(DType, Fp8SaturatesAndRoundsHalfToEven) {
  EXPECT_EQ(round_to_dtype(1000.0, DType::kF8E4M3), 448.0);
  EXPECT_EQ(round_to_dtype(-460.0, DType::kF8E4M3), -448.0);
  // Between 1.0 and 1.125 (quantum 1/8): 1.0625 is a tie -> even mantissa (1.0).
  EXPECT_EQ(round_to_dtype(1.0625, DType::kF8E4M3), 1.0);
  EXPECT_EQ(round_to_dtype(1.1875, DType::kF8E4M3), 1.25);  // tie between 1.125 (odd) and 1.25
  EXPECT_EQ(round_to_dtype(17.0, DType::kF8E4M3), 16.0);    // quantum 2 at [16, 32): tie to even
  EXPECT_EQ(round_to_dtype(std::ldexp(3.0, -11), DType::kF8E4M3), std::ldexp(1.0, -9));  // subnormal
}

TEST(DType, EpsMatchesTorchFinfo) {
  EXPECT_EQ(dtype_eps(DType::kBF16), 0.0078125);
  EXPECT_EQ(dtype_eps(DType::kF16), 0.0009765625);
  EXPECT_EQ(dtype_eps(DType::kF32), std::ldexp(1.0, -23));
  EXPECT_EQ(dtype_eps(DType::kF8E4M3), 0.125);
}

}  // namespace
}  // namespace ctcal
