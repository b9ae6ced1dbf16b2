#include "ctcal/io/mxfp4.h"

#include <cmath>

namespace ctcal {

float fp4_e2m1_value(uint8_t code) {
  // E2M1: exponent bits 2..1, mantissa bit 0, sign bit 3 (transformers' FP4_VALUES table).
  static constexpr float kMagnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float m = kMagnitude[code & 7];
  return (code & 8) ? -m : m;
}

void dequantize_mxfp4(const uint8_t* blocks, const uint8_t* scales, int64_t rows, int64_t bytes, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const int exponent = static_cast<int>(scales[r]) - 127;  // E8M0: 2^(byte - 127)
    const uint8_t* b = blocks + r * bytes;
    float* o = out + r * 2 * bytes;
    for (int64_t i = 0; i < bytes; ++i) {
      o[2 * i] = std::ldexp(fp4_e2m1_value(b[i] & 0x0F), exponent);
      o[2 * i + 1] = std::ldexp(fp4_e2m1_value(static_cast<uint8_t>(b[i] >> 4)), exponent);
    }
  }
}

}  // namespace ctcal
