// ctcal's NVFP4 KV-cache quantization (quant/nvfp4.h) against tests/golden/make_nvfp4_golden.py:
// an independent numpy/torch implementation of FlashInfer's nvfp4_append_quantize_block formulas
// (bit-exact by design: EXPECT on bits is intended; both do the same IEEE fp32 operations in the
// same order, and E4M3 / E2M1 rounding is exact), and vLLM 0.34's own ref_nvfp4_quant
// (nvfp4_emulation_utils.py, global scale 1 / s), whose different operation order may round apart
// only where the golden script found a quotient within 2^-20 of a rounding midpoint.
#include <cmath>
#include <cstring>

#include <gtest/gtest.h>

#include "ctcal/io/safetensors.h"
#include "ctcal/quant/nvfp4.h"
#include "test_util.h"

namespace ctcal {
namespace {

const SafetensorsFile& golden() {
  static const SafetensorsFile f(test::golden_dir() / "nvfp4" / "nvfp4.safetensors");
  return f;
}

std::vector<uint8_t> read_u8(const std::string& name) {
  const TensorInfo& t = golden().info(name);
  EXPECT_EQ(t.dtype, DType::kU8) << name;
  const unsigned char* p = golden().data(t);
  return {p, p + t.numel()};
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

TEST(Nvfp4Golden, E4m3SatfiniteMatchesTorch) {
  const std::vector<float> in = golden().read_f32("e4m3_in");  // [M]
  const std::vector<uint8_t> want = read_u8("e4m3_code");      // [M]
  ASSERT_EQ(in.size(), want.size());
  int64_t bad = 0;
  for (std::size_t i = 0; i < in.size(); ++i)
    if (nvfp4::e4m3_satfinite(in[i]) != want[i] && ++bad < 5)
      ADD_FAILURE() << in[i] << ": 0x" << std::hex << int(nvfp4::e4m3_satfinite(in[i])) << " vs 0x" << int(want[i]);
  EXPECT_EQ(bad, 0);
  EXPECT_GT(in.size(), 1000u);  // every code, every midpoint and its neighbours, both signs
}

TEST(Nvfp4Golden, E2m1RoundNearestEvenMatchesTable) {
  const std::vector<float> in = golden().read_f32("e2m1_in");  // [P]
  const std::vector<uint8_t> want = read_u8("e2m1_code");      // [P]
  ASSERT_EQ(in.size(), want.size());
  int64_t bad = 0;
  for (std::size_t i = 0; i < in.size(); ++i)
    if (nvfp4::e2m1_rn_satfinite(in[i]) != want[i] && ++bad < 5)
      ADD_FAILURE() << in[i] << ": " << int(nvfp4::e2m1_rn_satfinite(in[i])) << " vs " << int(want[i]);
  EXPECT_EQ(bad, 0);
}

TEST(Nvfp4Golden, BlocksBitExactAgainstFlashInferFormulas) {
  const std::vector<float> x = golden().read_f32("x");  // [N, 16]
  const std::vector<float> s = golden().read_f32("s");  // [N]
  const std::vector<uint8_t> sf = read_u8("sf"), codes = read_u8("codes");  // [N], [N, 16]
  const std::vector<float> decoded = golden().read_f32("decoded");          // [N, 16]
  const std::vector<uint8_t> saturated = read_u8("saturated"), flushed = read_u8("flushed");  // [N]
  const std::size_t n = s.size();
  ASSERT_EQ(x.size(), n * 16);
  int64_t bad = 0, n_saturated = 0, n_flushed = 0;
  for (std::size_t b = 0; b < n; ++b) {
    uint8_t c[16];    // [16] codes
    float out[16];    // [16] decoded values
    const nvfp4::BlockResult r = nvfp4::quantize_block(&x[b * 16], s[b], c, out);
    bool ok = r.sf == sf[b] && r.saturated == (saturated[b] != 0) && r.flushed == (flushed[b] != 0);
    for (int i = 0; i < 16; ++i) ok = ok && c[i] == codes[b * 16 + i] && same_bits(out[i], decoded[b * 16 + i]);
    if (!ok && ++bad < 5)
      ADD_FAILURE() << "block " << b << " (s = " << s[b] << "): sf 0x" << std::hex << int(r.sf) << " vs 0x" << int(sf[b]);
    n_saturated += r.saturated;
    n_flushed += r.flushed;
  }
  EXPECT_EQ(bad, 0) << "of " << n << " blocks";
  // The reference cases hold both kinds of degenerate block (the counters are not trivially 0).
  EXPECT_GE(n_saturated, 3);
  EXPECT_GE(n_flushed, 2);
}

TEST(Nvfp4Golden, AgreesWithVllmRefNvfp4QuantOffRoundingBoundaries) {
  const std::vector<float> x = golden().read_f32("x");  // [N, 16]
  const std::vector<float> s = golden().read_f32("s");  // [N]
  const std::vector<uint8_t> vsf = read_u8("vllm_sf"), near = read_u8("near_boundary");  // [N]
  const std::vector<float> vq = golden().read_f32("vllm_q");  // [N, 16] E2M1 values, float
  const std::size_t n = s.size();
  int64_t off_boundary_disagree = 0, near_count = 0;
  for (std::size_t b = 0; b < n; ++b) {
    uint8_t c[16];  // [16] codes
    const nvfp4::BlockResult r = nvfp4::quantize_block(&x[b * 16], s[b], c, nullptr);
    bool same = r.sf == vsf[b];
    // Values, not bits: vLLM's cast_to_fp4 writes sign(x) * 0, which is +0 for x = -0.0.
    for (int i = 0; i < 16; ++i) same = same && nvfp4::e2m1_value(c[i]) == vq[b * 16 + i];
    near_count += near[b];
    if (!same && !near[b] && ++off_boundary_disagree < 5) ADD_FAILURE() << "block " << b << " (s = " << s[b] << ")";
  }
  EXPECT_EQ(off_boundary_disagree, 0);
  EXPECT_LT(near_count, static_cast<int64_t>(n) / 10);  // the exemption covers few blocks
}

}  // namespace
}  // namespace ctcal
