// qparam tables small enough to check by hand (reference §3.1-3.2), for every type, strategy
// and symmetry ctcal supports, including all-zero observations.
#include <cmath>

#include <gtest/gtest.h>

#include "ctcal/quant/qparams.h"

namespace ctcal {
namespace {

QuantArgs args(QuantType t, int64_t bits, bool sym, Strategy s = Strategy::kTensor) {
  QuantArgs a;
  a.type = t;
  a.num_bits = bits;
  a.symmetric = sym;
  a.strategy = s;
  finalize_quant_args(&a, "test");
  return a;
}

TEST(QParams, Ranges) {
  EXPECT_EQ(calculate_range(args(QuantType::kInt, 8, true)).q_min, -128);
  EXPECT_EQ(calculate_range(args(QuantType::kInt, 8, true)).q_max, 127);
  EXPECT_EQ(calculate_range(args(QuantType::kInt, 4, true)).bit_range(), 15);
  EXPECT_EQ(calculate_range(args(QuantType::kFloat, 8, true)).q_max, 448);
}

TEST(QParams, Fp8SymmetricIsAbsmaxOver448) {
  // absmax 4.48 (from the negative side) -> 0.01 before rounding to the storage dtype.
  auto qp = calculate_qparams({-4.48}, {2.0}, args(QuantType::kFloat, 8, true), DType::kF32);
  EXPECT_EQ(qp.scale[0], static_cast<double>(static_cast<float>(4.48 / 448.0)));
  EXPECT_EQ(qp.zero_point[0], 0.0);
  // bf16 storage: one rounding of 0.01 to bf16 = 0.010009765625.
  qp = calculate_qparams({-4.48}, {2.0}, args(QuantType::kFloat, 8, true), DType::kBF16);
  EXPECT_EQ(qp.scale[0], 0.010009765625);
}

TEST(QParams, IntSymmetricUsesHalfTheFullRange) {
  // int8: scale = absmax / 127.5; int4: absmax / 7.5 (compressed-tensors' convention).
  EXPECT_EQ(calculate_qparams({-255.0}, {1.0}, args(QuantType::kInt, 8, true), DType::kF32).scale[0], 2.0);
  EXPECT_EQ(calculate_qparams({0.0}, {15.0}, args(QuantType::kInt, 4, true), DType::kF32).scale[0], 2.0);
}

TEST(QParams, IntAsymmetric) {
  // int8: [-1, 254] -> scale 255/255 = 1, zp = -128 - (-1)/1 = -127.
  auto qp = calculate_qparams({-1.0}, {254.0}, args(QuantType::kInt, 8, false), DType::kF32);
  EXPECT_EQ(qp.scale[0], 1.0);
  EXPECT_EQ(qp.zero_point[0], -127.0);
  // int4: [-3, 12] -> scale 1, zp = -8 + 3 = -5.
  qp = calculate_qparams({-3.0}, {12.0}, args(QuantType::kInt, 4, false), DType::kF32);
  EXPECT_EQ(qp.scale[0], 1.0);
  EXPECT_EQ(qp.zero_point[0], -5.0);
  // Positive-only range: zero is put in the range, so zp = q_min.
  qp = calculate_qparams({2.0}, {15.0}, args(QuantType::kInt, 4, false), DType::kF32);
  EXPECT_EQ(qp.scale[0], 1.0);
  EXPECT_EQ(qp.zero_point[0], -8.0);
}

TEST(QParams, ZeroPointRoundsHalfToEven) {
  // int8 [-0.5, 254.5] -> scale 1, zp = -128 + 0.5 = -127.5 -> -128 (even).
  auto qp = calculate_qparams({-0.5}, {254.5}, args(QuantType::kInt, 8, false), DType::kF32);
  EXPECT_EQ(qp.zero_point[0], -128.0);
  // [-1.5, 253.5] -> zp = -126.5 -> -126.
  qp = calculate_qparams({-1.5}, {253.5}, args(QuantType::kInt, 8, false), DType::kF32);
  EXPECT_EQ(qp.zero_point[0], -126.0);
}

TEST(QParams, AllZeroObservationGetsDtypeEps) {
  const auto fp8 = args(QuantType::kFloat, 8, true);
  EXPECT_EQ(calculate_qparams({0.0}, {0.0}, fp8, DType::kBF16).scale[0], 0.0078125);
  EXPECT_EQ(calculate_qparams({0.0}, {0.0}, fp8, DType::kF16).scale[0], 0.0009765625);
  EXPECT_EQ(calculate_qparams({0.0}, {0.0}, fp8, DType::kF32).scale[0], std::ldexp(1.0, -23));
  auto asym = calculate_qparams({0.0}, {0.0}, args(QuantType::kInt, 8, false), DType::kBF16);
  EXPECT_EQ(asym.scale[0], 0.0078125);
  EXPECT_EQ(asym.zero_point[0], -128.0);  // ctcal: q_min (compressed-tensors: NaN, 0/0)
}

TEST(QParams, PerHeadIsElementwise) {
  auto qp = calculate_qparams({-448.0, 0.0, -1.0}, {1.0, 0.0, 896.0},
                              args(QuantType::kFloat, 8, true, Strategy::kAttnHead), DType::kF32);
  ASSERT_EQ(qp.scale.size(), 3u);
  EXPECT_EQ(qp.scale[0], 1.0);
  EXPECT_EQ(qp.scale[1], std::ldexp(1.0, -23));
  EXPECT_EQ(qp.scale[2], 2.0);
}

TEST(QParams, ScaleDtypeRoundsThenStoresInModelDtype) {
  QuantArgs a = args(QuantType::kFloat, 8, true);
  a.scale_dtype = DType::kF8E4M3;
  // 1.0625 * 448 / 448 = 1.0625 -> fp8 tie -> 1.0; stored as fp32 1.0.
  EXPECT_EQ(calculate_qparams({0.0}, {1.0625 * 448}, a, DType::kF32).scale[0], 1.0);
  // Zero scale with fp8 scale_dtype: eps = 0.125.
  EXPECT_EQ(calculate_qparams({0.0}, {0.0}, a, DType::kF32).scale[0], 0.125);
}

TEST(FakeQuantize, Fp8AndInt) {
  const auto fp8 = args(QuantType::kFloat, 8, true);
  const auto r = calculate_range(fp8);
  EXPECT_EQ(fake_quantize(17.0, 1.0, 0.0, fp8, r), 16.0);    // fp8 RNE
  EXPECT_EQ(fake_quantize(1e6, 1.0, 0.0, fp8, r), 448.0);    // saturates
  const auto i8 = args(QuantType::kInt, 8, false);
  const auto ri = calculate_range(i8);
  EXPECT_EQ(fake_quantize(2.5, 1.0, 0.0, i8, ri), 2.0);      // half to even
  EXPECT_EQ(fake_quantize(-200.0, 1.0, 0.0, i8, ri), -128.0);
  EXPECT_EQ(fake_quantize(3.2, 0.5, -10.0, i8, ri), 3.0);    // (3.2/0.5 - 10 = -3.6 -> -4 + 10) * 0.5
}

}  // namespace
}  // namespace ctcal
