#include "ctcal/quant/qparams.h"

#include <cmath>

#include "ctcal/error.h"

namespace ctcal {

QuantRange calculate_range(const QuantArgs& a) {
  if (a.type == QuantType::kFloat) {
    if (a.num_bits == 8) return {-448.0, 448.0};
    if (a.num_bits == 4) return {-6.0, 6.0};
    CTCAL_ASSERT(false, "float num_bits validated to 8 or 4");
  }
  const double half = std::ldexp(1.0, static_cast<int>(a.num_bits) - 1);
  return {-half, half - 1.0};
}

QParams calculate_qparams(const std::vector<double>& min_vals, const std::vector<double>& max_vals,
                          const QuantArgs& a, DType storage) {
  CTCAL_ASSERT(min_vals.size() == max_vals.size(), "min/max size mismatch");
  const QuantRange r = calculate_range(a);
  const DType guard_dtype = a.scale_dtype.value_or(storage);
  QParams out;
  out.scale_storage = storage;
  for (std::size_t i = 0; i < min_vals.size(); ++i) {
    const double mn = std::min(min_vals[i], 0.0);
    const double mx = std::max(max_vals[i], 0.0);
    double scale = a.symmetric ? std::max(std::fabs(mn), std::fabs(mx)) / (r.bit_range() / 2.0)
                               : (mx - mn) / r.bit_range();
    if (a.scale_dtype) {
      const double lim = dtype_finite_max(*a.scale_dtype);
      scale = round_to_dtype(std::clamp(scale, -lim, lim), *a.scale_dtype);
    }
    scale = round_to_dtype(scale, storage);
    if (scale == 0.0) scale = round_to_dtype(dtype_eps(guard_dtype), storage);
    double zp = 0.0;
    if (!a.symmetric) {
      zp = std::clamp(r.q_min - mn / scale, r.q_min, r.q_max);
      zp = a.zp_dtype && dtype_is_float(*a.zp_dtype) ? round_to_dtype(zp, *a.zp_dtype)
                                                       : std::nearbyint(zp);  // half to even
    }
    out.scale.push_back(scale);
    out.zero_point.push_back(zp);
  }
  return out;
}

double fake_quantize(double x, double scale, double zero_point, const QuantArgs& a,
                     const QuantRange& r) {
  double q = std::clamp(x / scale + zero_point, r.q_min, r.q_max);
  q = a.type == QuantType::kFloat ? round_to_dtype(q, DType::kF8E4M3)  // KV args are 8-bit float only
                                  : std::nearbyint(q);
  return (q - zero_point) * scale;
}

}  // namespace ctcal
