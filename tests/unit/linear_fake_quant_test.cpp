// Linear-input fake quantization (eval's FP8 W8A8) against an independent computation:
// round_to_dtype(x / s, F8E4M3) * s in double (the frexp/nearbyint path, not the bit path of
// f32_to_f8e4m3), with s per tensor (static), per token, per group of columns.
#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include "ctcal/dtype.h"
#include "ctcal/eval/linear_fake_quant.h"

namespace ctcal {
namespace {

float reference(float x, float s) {
  const float scaled = std::clamp(x / s, -448.0f, 448.0f);  // fp32 quotient, as torch and vLLM
  return static_cast<float>(round_to_dtype(scaled, DType::kF8E4M3)) * s;
}

// [2 tokens, 6 columns] with row stride 8 (the two padding columns must stay untouched).
std::vector<float> sample() {
  return {0.013f, -1.7f, 3.3f, 250.0f, -0.0004f, 7.77f, 99.0f, 99.0f,
          -2.5f,  0.31f, 0.0f, 1e-6f,  11.1f,   -0.9f, 99.0f, 99.0f};
}

TEST(LinearFakeQuant, StaticPerTensorScale) {
  std::vector<float> x = sample(), want = sample();
  LinearInputFakeQuant q({{{3, Site::kOProjInput}, InputQuantSpec{0.05, Strategy::kToken, 0}}}, nullptr);
  EXPECT_TRUE(q.quantizes(3, Site::kOProjInput));
  EXPECT_FALSE(q.quantizes(2, Site::kOProjInput));
  EXPECT_FALSE(q.quantizes(3, Site::kKey));  // no inner quantizer
  q.apply(3, Site::kOProjInput, x.data(), 2, 1, 6, 8);
  for (int t = 0; t < 2; ++t)
    for (int c = 0; c < 6; ++c) want[t * 8 + c] = reference(want[t * 8 + c], 0.05f);
  EXPECT_EQ(x, want);  // 250 / 0.05 = 5000 saturates at 448 * 0.05
}

TEST(LinearFakeQuant, DynamicPerTokenAndPerGroup) {
  for (int64_t group : {0, 4}) {
    std::vector<float> x = sample(), want = sample();
    InputQuantSpec spec{std::nullopt, group ? Strategy::kGroup : Strategy::kToken, group};
    LinearInputFakeQuant q({{{0, Site::kDownInput}, spec}}, nullptr);
    q.apply(0, Site::kDownInput, x.data(), 2, 1, 6, 8);
    for (int t = 0; t < 2; ++t) {
      const int span = group ? static_cast<int>(group) : 6;
      for (int c0 = 0; c0 < 6; c0 += span) {
        float a = 0;
        for (int c = c0; c < std::min(6, c0 + span); ++c) a = std::max(a, std::fabs(want[t * 8 + c]));
        const float s = a / 448.0f;
        for (int c = c0; c < std::min(6, c0 + span); ++c) want[t * 8 + c] = reference(want[t * 8 + c], s);
      }
    }
    EXPECT_EQ(x, want) << "group " << group;
    EXPECT_EQ(x[6], 99.0f);  // padding untouched
  }
}

}  // namespace
}  // namespace ctcal
