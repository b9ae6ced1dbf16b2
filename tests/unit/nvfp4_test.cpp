// NVFP4 KV-cache quantization (quant/nvfp4.h) and eval's NVFP4 KV quantizer
// (eval/nvfp4_fake_quant.h): hand-derived cases, each value worked out from the E2M1 / E4M3
// definitions (the bit-exact comparison with an independent implementation is
// tests/golden/nvfp4_golden_test.cpp). Every expected value is exact in fp32, so the comparisons
// are exact (EXPECT_EQ on floats is intended).
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest.h>

#include "ctcal/eval/nvfp4_fake_quant.h"
#include "ctcal/quant/nvfp4.h"

namespace ctcal {
namespace {

using nvfp4::e2m1_rn_satfinite;
using nvfp4::e2m1_value;
using nvfp4::e4m3_satfinite;
using nvfp4::e4m3_value;

TEST(Nvfp4, E2m1RoundsToNearestEvenAndSaturates) {
  // Midpoints go to the even code: 0 (0), 1.0 (2), 2.0 (4), 4.0 (6).
  EXPECT_EQ(e2m1_rn_satfinite(0.25f), 0);
  EXPECT_EQ(e2m1_rn_satfinite(std::nextafter(0.25f, 1.0f)), 1);
  EXPECT_EQ(e2m1_rn_satfinite(0.75f), 2);
  EXPECT_EQ(e2m1_rn_satfinite(std::nextafter(0.75f, 0.0f)), 1);
  EXPECT_EQ(e2m1_rn_satfinite(1.25f), 2);
  EXPECT_EQ(e2m1_rn_satfinite(1.75f), 4);
  EXPECT_EQ(e2m1_rn_satfinite(2.5f), 4);
  EXPECT_EQ(e2m1_rn_satfinite(3.5f), 6);
  EXPECT_EQ(e2m1_rn_satfinite(5.0f), 6);
  EXPECT_EQ(e2m1_rn_satfinite(std::nextafter(5.0f, 6.0f)), 7);
  EXPECT_EQ(e2m1_rn_satfinite(100.0f), 7);
  EXPECT_EQ(e2m1_rn_satfinite(std::numeric_limits<float>::infinity()), 7);
  EXPECT_EQ(e2m1_rn_satfinite(-std::numeric_limits<float>::infinity()), 0xF);
  EXPECT_EQ(e2m1_rn_satfinite(-3.0f), 0xD);
  // The sign bit is the input's, also where the magnitude rounds to zero (FlashInfer's signbit).
  EXPECT_EQ(e2m1_rn_satfinite(-0.0f), 0x8);
  EXPECT_EQ(e2m1_rn_satfinite(-0.1f), 0x8);
  EXPECT_EQ(e2m1_rn_satfinite(std::numeric_limits<float>::quiet_NaN()), 0);
  const float table[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  for (uint8_t c = 0; c < 16; ++c) EXPECT_EQ(e2m1_value(c), table[c]) << int(c);
  EXPECT_TRUE(std::signbit(e2m1_value(8)));
}

TEST(Nvfp4, E4m3SatfiniteRoundsToNearestEven) {
  EXPECT_EQ(e4m3_satfinite(448.0f), 0x7E);
  EXPECT_EQ(e4m3_satfinite(460.0f), 0x7E);   // nearest anyway
  EXPECT_EQ(e4m3_satfinite(1e9f), 0x7E);     // saturated, not NaN
  EXPECT_EQ(e4m3_satfinite(-std::numeric_limits<float>::infinity()), 0xFE);
  EXPECT_EQ(e4m3_satfinite(1.0625f), 0x38);  // between 1 (0x38) and 1.125 (0x39): even, 1.0
  EXPECT_EQ(e4m3_satfinite(1.1875f), 0x3A);  // between 1.125 and 1.25 (0x3A): even, 1.25
  EXPECT_EQ(e4m3_satfinite(0x1p-9f), 0x01);  // the smallest subnormal
  EXPECT_EQ(e4m3_satfinite(0x1p-10f), 0x00); // half of it: ties to 0
  EXPECT_EQ(e4m3_satfinite(0x3p-10f), 0x02); // between 2^-9 and 2^-8: even, 2^-8
  EXPECT_EQ(e4m3_value(0x7E), 448.0f);
  EXPECT_EQ(e4m3_value(0x01), 0x1p-9f);
  EXPECT_TRUE(std::isnan(e4m3_value(0x7F)));
}

TEST(Nvfp4, BlockOnTheGridIsExact) {
  // amax 6 at s = 1: sf = 6 / 6 = 1, so every E2M1 value is stored as itself.
  const float x[16] = {6, 4, 3, 2, 1.5f, 1, 0.5f, 0, -0.5f, -1, -1.5f, -2, -3, -4, -6, 0};
  uint8_t codes[16];
  float out[16];
  nvfp4::BlockResult r = nvfp4::quantize_block(x, 1.0f, codes, out);
  EXPECT_EQ(r.sf, 0x38);  // 1.0
  EXPECT_FALSE(r.saturated);
  EXPECT_FALSE(r.flushed);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(out[i], x[i]) << i;
  EXPECT_EQ(codes[0], 7);
  EXPECT_EQ(codes[14], 0xF);
  // s = 0.5 moves the block scale (sf = 6 / 3 = 2), not the values.
  r = nvfp4::quantize_block(x, 0.5f, codes, out);
  EXPECT_EQ(e4m3_value(r.sf), 2.0f);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(out[i], x[i]) << i;
}

TEST(Nvfp4, BlockRoundsThroughTheBlockScale) {
  // amax 7, s = 1: sf_value 7/6 = 1.1667 -> E4M3 1.125; out_scale 1/1.125; 7 / 1.125 = 6.22 -> 6,
  // so 7 comes back as 6 * 1.125 = 6.75; 1.7 / 1.125 = 1.511 -> 1.5 -> 1.6875; 0.2 / 1.125 -> 0.
  float x[16] = {7.0f, 1.7f, 0.2f, -2.9f};
  uint8_t codes[16];
  const nvfp4::BlockResult r = nvfp4::quantize_block(x, 1.0f, codes, x);  // in place
  EXPECT_EQ(e4m3_value(r.sf), 1.125f);
  EXPECT_EQ(x[0], 6.75f);
  EXPECT_EQ(x[1], 1.6875f);
  EXPECT_EQ(x[2], 0.0f);
  EXPECT_EQ(x[3], -3.375f);  // -2.9 / 1.125 = -2.58 -> -3
  EXPECT_EQ(codes[3], 0xD);
}

TEST(Nvfp4, SaturatedBlockClipsAtSixTimes448) {
  // s = 1, amax 3000: sf_value 500 > 448, sf saturates at 448; 3000 clips to 6 * 448 = 2688.
  const float x[16] = {3000.0f, -2000.0f, 100.0f};
  float out[16];
  const nvfp4::BlockResult r = nvfp4::quantize_block(x, 1.0f, nullptr, out);
  EXPECT_TRUE(r.saturated);
  EXPECT_EQ(r.sf, 0x7E);
  EXPECT_EQ(out[0], 2688.0f);
  EXPECT_EQ(out[1], -1792.0f);  // -2000 / 448 = -4.46 -> -4
  // sf_value exactly 448 is representable: not saturated.
  const float edge[16] = {2688.0f};
  EXPECT_FALSE(nvfp4::quantize_block(edge, 1.0f, nullptr, out).saturated);
}

TEST(Nvfp4, TinyBlockIsFlushedAndZeroBlockIsNot) {
  // amax 1e-4, s = 1: sf_value 1.7e-5 is below half of E4M3's smallest subnormal (2^-10): sf = 0.
  const float tiny[16] = {1e-4f, -5e-5f, 3e-5f};
  float out[16];
  uint8_t codes[16];
  nvfp4::BlockResult r = nvfp4::quantize_block(tiny, 1.0f, codes, out);
  EXPECT_TRUE(r.flushed);
  EXPECT_FALSE(r.saturated);
  EXPECT_EQ(r.sf, 0);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(out[i], 0.0f) << i;
  EXPECT_EQ(codes[1], 0x8);  // -5e-5 * 0: a signed zero code
  // The same block with s = amax / 2688 keeps it (sf_value = 448).
  r = nvfp4::quantize_block(tiny, 1e-4f / 2688.0f, nullptr, out);
  EXPECT_FALSE(r.flushed);
  EXPECT_NEAR(out[0], 1e-4f, 1e-4f * 1e-6f);  // 6 * 448 * s = 1e-4 up to fp32 rounding of s
  const float zero[16] = {};
  r = nvfp4::quantize_block(zero, 1.0f, nullptr, out);
  EXPECT_FALSE(r.flushed);
  EXPECT_EQ(r.sf, 0);
}

TEST(Nvfp4KvFakeQuant, CountsBlocksPerLayerAndSiteAndLeavesQAlone) {
  // Layer 0 K and V at s = 1, layer 1 not quantized.
  Nvfp4KvFakeQuant q({{{Site::kKey, 1.0}, {Site::kValue, 1.0}}, {}});
  EXPECT_TRUE(q.quantizes(0, Site::kKey));
  EXPECT_TRUE(q.quantizes(0, Site::kValue));
  EXPECT_FALSE(q.quantizes(0, Site::kQuery));  // the FA2 path keeps Q in the model dtype
  EXPECT_FALSE(q.quantizes(1, Site::kKey));
  EXPECT_FALSE(q.quantizes(2, Site::kKey));
  const int64_t seq = 2, heads = 2, head_dim = 32, stride = heads * head_dim + 16;
  std::vector<float> k(static_cast<std::size_t>(seq * stride), 1.0f);  // [seq, stride]: heads x head_dim, then 16 others
  for (int64_t t = 0; t < seq; ++t)
    for (int64_t i = heads * head_dim; i < stride; ++i) k[static_cast<std::size_t>(t * stride + i)] = 1234.5f;
  float* b = k.data();
  b[0] = 3000.0f;                                     // token 0, head 0, block 0: saturated
  for (int i = 0; i < 16; ++i) b[stride + 48 + i] = 1e-5f;  // token 1, head 1, block 1: flushed
  q.apply(0, Site::kKey, k.data(), seq, heads, head_dim, stride);
  const Nvfp4BlockCounts c = q.counts(0, Site::kKey);
  EXPECT_EQ(c.blocks, seq * heads * head_dim / 16);
  EXPECT_EQ(c.saturated, 1);
  EXPECT_EQ(c.flushed, 1);
  EXPECT_EQ(b[0], 2688.0f);
  EXPECT_EQ(b[stride + 48], 0.0f);
  for (int64_t t = 0; t < seq; ++t)  // what lies beyond the heads is not touched
    for (int64_t i = heads * head_dim; i < stride; ++i) EXPECT_EQ(k[static_cast<std::size_t>(t * stride + i)], 1234.5f);
  EXPECT_EQ(q.counts(0, Site::kValue).blocks, 0);
  EXPECT_TRUE(std::isnan(q.sqnr_db(0, Site::kValue)));
  EXPECT_TRUE(std::isfinite(q.sqnr_db(0, Site::kKey)));
  // Counts accumulate over calls; values on the grid lose nothing (SQNR +inf).
  Nvfp4KvFakeQuant exact({{{Site::kValue, 1.0}}});
  std::vector<float> v(32, 0.5f);  // [1, 2, 16]
  v[0] = 6.0f;
  v[16] = -6.0f;
  exact.apply(0, Site::kValue, v.data(), 1, 2, 16, 32);
  exact.apply(0, Site::kValue, v.data(), 1, 2, 16, 32);
  EXPECT_EQ(exact.counts(0, Site::kValue).blocks, 4);
  EXPECT_EQ(exact.sqnr_db(0, Site::kValue), std::numeric_limits<double>::infinity());
}

}  // namespace
}  // namespace ctcal
