#pragma once
// compressed-tensors' calculate_range / calculate_qparams (reference §3.1-3.2) and the
// quantize-dequantize round trip vLLM applies (reference §3.3, §4.4).
#include <cstdint>
#include <vector>

#include "ctcal/quant/quant_args.h"

namespace ctcal {

struct QuantRange {
  double q_min;
  double q_max;
  double bit_range() const { return q_max - q_min; }
};
QuantRange calculate_range(const QuantArgs& a);  // int8: [-128, 127]; fp8: [-448, 448]

struct QParams {
  std::vector<double> scale;       // one per qparam (1 for tensor, heads for attn_head), already
                                   // rounded to `scale_storage` (and scale_dtype, when set)
  std::vector<double> zero_point;  // same length; zeros for symmetric args
  DType scale_storage = DType::kF32;  // dtype written to the checkpoint (the model's dtype)
};

// min_vals/max_vals: observed per-qparam minima and maxima.
// 1. zero is put inside the range; 2. symmetric: scale = absmax / (bit_range / 2);
//    asymmetric: scale = (max - min) / bit_range, zp = q_min - min / scale;
// 4. scale_dtype rounding; then one rounding into `storage`; 6. exact-zero scale -> eps of the
// scale dtype; 7. zp clamped to [q_min, q_max], rounded half to even.
// Deviation (documented): the arithmetic is in double and rounds once, where compressed-tensors
// rounds each op to bf16 (at most one ulp apart); an all-zero asymmetric range gets zp = q_min
// where compressed-tensors computes 0/0 = NaN.
QParams calculate_qparams(const std::vector<double>& min_vals, const std::vector<double>& max_vals,
                          const QuantArgs& a, DType storage);

// Fake quantization of one value as vLLM / compressed-tensors apply it: x / scale (+ zp),
// clamp to the range, fp8 round-to-nearest-even (saturating) or integer round-half-even, back.
double fake_quantize(double x, double scale, double zero_point, const QuantArgs& a,
                     const QuantRange& r);

}  // namespace ctcal
