#include "ctcal/quant/nvfp4.h"

#include <cmath>

#include "ctcal/dtype.h"

namespace ctcal::nvfp4 {

uint8_t e4m3_satfinite(float v) {
  // dtype.h's encoder is already round-to-nearest-even with saturation at ±448 and NaN -> 0x7F,
  // which is what __nv_fp8_e4m3(float) (__NV_SATFINITE) does; tests/golden/nvfp4_golden_test.cpp
  // checks it against torch.float8_e4m3fn on every case, ties and saturation included.
  return f32_to_f8e4m3(v);
}

float e4m3_value(uint8_t code) { return f8e4m3_to_f32(code); }

uint8_t e2m1_rn_satfinite(float v) {
  // FlashInfer's nvfp4_append_quantize_e2m1 thresholds: the midpoints between neighbouring codes,
  // inclusive where the lower code is the even one (ties to even), exclusive where the upper is.
  const uint8_t sign = std::signbit(v) ? 0x8 : 0x0;
  const float mag = std::fabs(v);
  uint8_t code;
  if (!(mag > 0.25f)) {
    code = 0;  // also NaN
  } else if (mag < 0.75f) {
    code = 1;
  } else if (mag <= 1.25f) {
    code = 2;
  } else if (mag < 1.75f) {
    code = 3;
  } else if (mag <= 2.5f) {
    code = 4;
  } else if (mag < 3.5f) {
    code = 5;
  } else if (mag <= 5.0f) {
    code = 6;
  } else {
    code = 7;  // (5, inf]: 6, saturating
  }
  return static_cast<uint8_t>(sign | code);
}

float e2m1_value(uint8_t code) {
  static constexpr float kMagnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float m = kMagnitude[code & 0x7];
  return (code & 0x8) ? -m : m;
}

BlockResult quantize_block(const float* x, float s, uint8_t* codes, float* decoded) {
  float values[kBlockSize];  // [16]: read first, since decoded may alias x
  float amax = 0.0f;
  for (int i = 0; i < kBlockSize; ++i) {
    values[i] = x[i];
    amax = std::fmax(amax, std::fabs(values[i]));  // fmaxf: a NaN never becomes the max
  }
  BlockResult r;
  float sf_value = 0.0f;
  if (amax > 0.0f && s > 0.0f) sf_value = amax / (6.0f * s);  // fp32: 6 * s rounds, then divides
  r.sf = e4m3_satfinite(sf_value);
  r.saturated = sf_value > kE4M3Max;
  const float sf = e4m3_value(r.sf);
  r.flushed = amax > 0.0f && sf == 0.0f;
  const float out_scale = (amax > 0.0f && sf > 0.0f && s > 0.0f) ? 1.0f / (sf * s) : 0.0f;
  for (int i = 0; i < kBlockSize; ++i) {
    const uint8_t c = e2m1_rn_satfinite(values[i] * out_scale);
    if (codes) codes[i] = c;
    // q * sf is exact in fp32 (2 + 4 significant bits); the double product with s is exact too
    // (30 bits), so the cast rounds once, as an fp32 (q * sf) * s would.
    if (decoded)
      decoded[i] = static_cast<float>(static_cast<double>(e2m1_value(c) * sf) * static_cast<double>(s));
  }
  return r;
}

}  // namespace ctcal::nvfp4
