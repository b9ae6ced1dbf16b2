// ctcal's MXFP4 dequantization (io/mxfp4.h) against transformers 5.17's
// convert_moe_packed_tensors (tests/golden/make_mxfp4_golden.py). Bit-exact by design (EXPECT_EQ
// on floats is intended): every value is an FP4 E2M1 value times a power of two, exact in fp32.
#include <cmath>
#include <cstring>

#include <gtest/gtest.h>

#include "ctcal/io/mxfp4.h"
#include "ctcal/io/safetensors.h"
#include "test_util.h"

namespace ctcal {
namespace {

TEST(Mxfp4Golden, MatchesConvertMoePackedTensors) {
  const SafetensorsFile f(test::golden_dir() / "mxfp4" / "mxfp4.safetensors");
  const TensorInfo& b = f.info("blocks");  // [E, R, G, 16]
  const TensorInfo& s = f.info("scales");  // [E, R, G]
  ASSERT_EQ(b.shape.size(), 4u);
  const int64_t e = b.shape[0], r = b.shape[1], g = b.shape[2], bytes = b.shape[3];
  ASSERT_EQ(s.shape, (std::vector<int64_t>{e, r, g}));
  // Our layout: [E, R, G * 32] (rows of the weight); transformers then transposes to [E, G * 32, R].
  std::vector<float> ours(static_cast<std::size_t>(e * r * g * 2 * bytes));
  dequantize_mxfp4(f.data(b), f.data(s), e * r * g, bytes, ours.data());
  const std::vector<float> want = f.read_f32("dequantized");
  ASSERT_EQ(f.info("dequantized").shape, (std::vector<int64_t>{e, g * 2 * bytes, r}));
  const int64_t k = g * 2 * bytes;
  int64_t mismatches = 0;
  for (int64_t x = 0; x < e; ++x)
    for (int64_t row = 0; row < r; ++row)
      for (int64_t c = 0; c < k; ++c) {
        const float got = ours[static_cast<std::size_t>((x * r + row) * k + c)];
        const float w = want[static_cast<std::size_t>((x * k + c) * r + row)];
        // Bits, so that -0.0 (code 8) is told from +0.0.
        if (std::memcmp(&got, &w, sizeof(float)) != 0 && ++mismatches < 5)
          ADD_FAILURE() << "expert " << x << " row " << row << " col " << c << ": " << got << " vs " << w;
      }
  EXPECT_EQ(mismatches, 0);
}

TEST(Mxfp4Golden, Fp4Table) {
  const float want[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  for (uint8_t c = 0; c < 16; ++c) EXPECT_EQ(fp4_e2m1_value(c), want[c]) << int(c);
  EXPECT_TRUE(std::signbit(fp4_e2m1_value(8)));
}

}  // namespace
}  // namespace ctcal
