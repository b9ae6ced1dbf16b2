#include "ctcal/quant/fp8_weight.h"

#include <algorithm>
#include <cmath>

#include "ctcal/error.h"
#include "ctcal/quant/qparams.h"

namespace ctcal {

void check_fp8_weight_args(const QuantArgs& a, const std::string& where) {
  auto fail = [&](const std::string& what) { return RecipeError(fmt::format("{}: {}", where, what)); };
  if (a.type != QuantType::kFloat || a.num_bits != 8)
    throw fail(fmt::format("ctcal quantizes Linear weights to FP8 only (type: float, num_bits: 8); "
                           "got type {} with {} bits", quant_type_name(a.type), a.num_bits));
  if (!a.symmetric) throw fail("FP8 weights must be symmetric (symmetric: true)");
  if (a.dynamic != Dynamic::kFalse) throw fail("weights cannot be dynamic; expected dynamic: false");
  const Strategy s = a.strategy.value_or(Strategy::kTensor);
  if (s != Strategy::kTensor && s != Strategy::kChannel && s != Strategy::kBlock)
    throw fail(fmt::format("FP8 weight strategy '{}' is not supported; expected tensor, channel or "
                           "block", strategy_name(s)));
  if (s == Strategy::kBlock && ((*a.block_structure)[0] <= 0 || (*a.block_structure)[1] <= 0))
    throw fail("block_structure must be two positive sizes, e.g. [128, 128]");
  if (a.observer && *a.observer != "minmax" && *a.observer != "memoryless_minmax" &&
      *a.observer != "static_minmax")
    throw fail(fmt::format("weight observer '{}' is not supported; FP8 weight scales use min-max "
                           "(memoryless_minmax, static_minmax or minmax, equal on one weight)",
                           *a.observer));
}

void check_fp8_input_args(const QuantArgs& a, const std::string& where) {
  auto fail = [&](const std::string& what) { return RecipeError(fmt::format("{}: {}", where, what)); };
  if (a.type != QuantType::kFloat || a.num_bits != 8 || !a.symmetric)
    throw fail(fmt::format("ctcal quantizes Linear inputs to symmetric FP8 only (type: float, "
                           "num_bits: 8, symmetric: true); got {} {}-bit{}", quant_type_name(a.type),
                           a.num_bits, a.symmetric ? "" : " asymmetric"));
  const Strategy s = a.strategy.value_or(Strategy::kTensor);
  if (a.dynamic == Dynamic::kFalse && s != Strategy::kTensor)
    throw fail(fmt::format("static input scales are observed per tensor; strategy '{}' needs "
                           "dynamic: true (or use strategy: tensor)", strategy_name(s)));
  if (a.dynamic == Dynamic::kLocal) throw fail("dynamic: local is for NVFP4 inputs, not FP8");
  if (a.dynamic == Dynamic::kFalse && a.observer && *a.observer != "static_minmax" &&
      *a.observer != "minmax" && *a.observer != "memoryless_minmax")
    throw fail(fmt::format("input observer '{}' is not supported for Linear inputs; expected "
                           "static_minmax, minmax or memoryless_minmax", *a.observer));
}

namespace {

ScaleLayout layout_for(const QuantArgs& a, int64_t rows, int64_t cols, std::vector<int64_t>* shape) {
  switch (a.strategy.value_or(Strategy::kTensor)) {
    case Strategy::kChannel:
      *shape = {rows, 1};
      return {1, cols, 1};
    case Strategy::kBlock: {
      const int64_t bh = (*a.block_structure)[0], bw = (*a.block_structure)[1];
      const int64_t nr = (rows + bh - 1) / bh, nc = (cols + bw - 1) / bw;
      *shape = {nr, nc};
      return {bh, bw, nc};
    }
    default:
      *shape = {1};
      return {rows, cols, 1};
  }
}

}  // namespace

Fp8WeightScales fp8_weight_scales(const float* w, int64_t rows, int64_t cols, const QuantArgs& args,
                                  DType weight_dtype) {
  Fp8WeightScales out;
  out.dtype = weight_dtype;
  out.layout = layout_for(args, rows, cols, &out.shape);
  std::size_t n = 1;
  for (int64_t d : out.shape) n *= static_cast<std::size_t>(d);
  // Per-scale minima and maxima (zero is put inside the range by calculate_qparams), each
  // thread over its rows, then combined (min and max are exact, in any order).
  std::vector<double> mins(n, 0.0), maxs(n, 0.0);  // [scales]
  const ScaleLayout& lay = out.layout;
#pragma omp parallel
  {
    std::vector<float> lo(n, 0.0f), hi(n, 0.0f);  // [scales], this thread's
#pragma omp for schedule(static) nowait
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = w + r * cols;  // [cols]
      const auto first = static_cast<std::size_t>((r / lay.rows_per_scale) * lay.scale_cols);
      for (int64_t c0 = 0; c0 < cols; c0 += lay.cols_per_scale) {
        const std::size_t i = first + static_cast<std::size_t>(c0 / lay.cols_per_scale);
        float a = lo[i], b = hi[i];
        for (int64_t c = c0; c < std::min(cols, c0 + lay.cols_per_scale); ++c) {
          a = std::min(a, row[c]);
          b = std::max(b, row[c]);
        }
        lo[i] = a;
        hi[i] = b;
      }
    }
#pragma omp critical
    for (std::size_t i = 0; i < n; ++i) {
      mins[i] = std::min(mins[i], static_cast<double>(lo[i]));
      maxs[i] = std::max(maxs[i], static_cast<double>(hi[i]));
    }
  }
  out.scale = calculate_qparams(mins, maxs, args, weight_dtype).scale;
  return out;
}

namespace {

// Calls f(r, c0, c1, scale_index) for every run of columns [c0, c1) of row r that one scale
// covers, rows in parallel: the scale lookup once per run, not per element.
template <typename F>
void for_each_scale_run(const ScaleLayout& lay, int64_t rows, int64_t cols, F f) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const auto first = static_cast<std::size_t>((r / lay.rows_per_scale) * lay.scale_cols);
    for (int64_t c0 = 0; c0 < cols; c0 += lay.cols_per_scale)
      f(r, c0, std::min(cols, c0 + lay.cols_per_scale), first + static_cast<std::size_t>(c0 / lay.cols_per_scale));
  }
}

// round_to_dtype(x, t) for an fp32 x, with the dtype chosen once per call site.
template <typename F>
void with_rounding(DType t, F f) {
  switch (t) {
    case DType::kF32: return f([](float x) { return x; });
    case DType::kBF16: return f([](float x) { return bf16_to_f32(f32_to_bf16(x)); });
    case DType::kF16: return f([](float x) { return f16_to_f32(f32_to_f16(x)); });
    default: return f([t](float x) { return static_cast<float>(round_to_dtype(x, t)); });
  }
}

}  // namespace

std::vector<uint8_t> fp8_quantize_weight(const float* w, int64_t rows, int64_t cols,
                                         const Fp8WeightScales& s, DType weight_dtype) {
  std::vector<uint8_t> codes(static_cast<std::size_t>(rows * cols));  // [rows, cols]
  with_rounding(weight_dtype, [&](auto round) {
    for_each_scale_run(s.layout, rows, cols, [&](int64_t r, int64_t c0, int64_t c1, std::size_t i) {
      const auto scale = static_cast<float>(s.scale[i]);
      for (int64_t c = c0; c < c1; ++c) {
        // The quotient in fp32 (as torch computes it), then rounded to the weight's dtype.
        const float q = round(w[r * cols + c] / scale);
        codes[static_cast<std::size_t>(r * cols + c)] = f32_to_f8e4m3(std::clamp(q, -448.0f, 448.0f));
      }
    });
  });
  return codes;
}

std::vector<float> fp8_dequantize_weight(const uint8_t* codes, int64_t rows, int64_t cols,
                                         const Fp8WeightScales& s) {
  std::vector<float> out(static_cast<std::size_t>(rows * cols));  // [rows, cols]
  // dtype(f8 * scale): the product of a 4-bit and a scale-dtype significand is exact in double,
  // rounded once into the scale's dtype.
  for_each_scale_run(s.layout, rows, cols, [&](int64_t r, int64_t c0, int64_t c1, std::size_t i) {
    const double scale = s.scale[i];
    for (int64_t c = c0; c < c1; ++c)
      out[static_cast<std::size_t>(r * cols + c)] =
          static_cast<float>(round_to_dtype(static_cast<double>(f8e4m3_to_f32(codes[r * cols + c])) * scale, s.dtype));
  });
  return out;
}

}  // namespace ctcal
