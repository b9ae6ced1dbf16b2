// KvFakeQuant's clipped share (eval's `clipped_fraction`): values whose code falls outside the
// format's range, counted against hand-computed expectations.
#include <cmath>

#include <gtest/gtest.h>

#include "ctcal/eval/kv_fake_quant.h"

namespace ctcal {
namespace {

QuantArgs args(QuantType type, int64_t bits, bool symmetric) {
  QuantArgs a;
  a.type = type;
  a.num_bits = bits;
  a.symmetric = symmetric;
  a.strategy = Strategy::kTensor;
  finalize_quant_args(&a, "test");
  return a;
}

LayerScales one_scale(double scale, double zp) {
  LayerScales l;
  l.sites[Site::kKey] = {{scale}, {zp}};
  l.sites[Site::kValue] = {{scale}, {zp}};
  return l;
}

TEST(KvFakeQuant, Fp8ClipsBeyondHalfAStepPast448) {
  KvFakeQuant q(args(QuantType::kFloat, 8, true), std::nullopt, {one_scale(0.5, 0.0)});
  // scale 0.5: codes 2x. 224.5 -> 449 rounds to 448 anyway (top step 32); -300 -> -600 and
  // 233 -> 466 are saturated: two of eight.
  float k[8] = {0.f, 1.f, -223.f, 224.f, 224.5f, -300.f, 10.f, 233.f};  // [seq 8, 1 head, dim 1]
  q.apply(0, Site::kKey, k, 8, 1, 1, 1);
  EXPECT_DOUBLE_EQ(q.clipped_fraction(0, Site::kKey), 2.0 / 8.0);
  EXPECT_TRUE(std::isnan(q.clipped_fraction(0, Site::kValue)));  // nothing seen
  EXPECT_FLOAT_EQ(k[5], -224.f);  // saturated, not wrapped
}

TEST(KvFakeQuant, IntRoundingToTheLastCodeIsNotClipping) {
  // int8 symmetric: codes [-128, 127]; scale 1.
  KvFakeQuant q(args(QuantType::kInt, 8, true), std::nullopt, {one_scale(1.0, 0.0)});
  float v[4] = {127.4f, 127.6f, -128.4f, -128.6f};  // only 127.6 and -128.6 leave the range
  q.apply(0, Site::kValue, v, 4, 1, 1, 1);
  EXPECT_DOUBLE_EQ(q.clipped_fraction(0, Site::kValue), 0.5);
}

}  // namespace
}  // namespace ctcal
