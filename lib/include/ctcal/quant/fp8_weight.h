#pragma once
// FP8 E4M3 weight quantization of one Linear weight, with compressed-tensors' math
// (quantization/utils/helpers.py `calculate_qparams`, lifecycle/forward.py `quantize`,
// compressors/naive_quantized `compress`):
//   scale = absmax / 448 per tensor, per output channel (row) or per block of
//           block_structure = [block_rows, block_cols] (edge blocks cover what is left: the
//           weight is zero-padded, and zero never raises an absmax); computed in double and rounded
//           once into the scale dtype (the weight's dtype, or `scale_dtype` first when set); an
//           exact-zero scale becomes that dtype's eps;
//   code  = fp8_e4m3(clamp(dtype(w / scale), -448, 448)), where dtype() is the weight's dtype:
//           torch divides a bf16 weight by a bf16 scale in bf16, so the quotient is rounded to
//           bf16 before the fp8 cast (round to nearest even, saturating).
// Dequantization (`dequantize`): dtype(fp8_value * scale), the value compressed-tensors'
// decompress and transformers hold.
#include <cstdint>
#include <string>
#include <vector>

#include "ctcal/dtype.h"
#include "ctcal/quant/quant_args.h"

namespace ctcal {

// Which scale covers element (r, c) of a [rows, cols] weight.
struct ScaleLayout {
  int64_t rows_per_scale;  // 1 for channel; block rows for block; rows for tensor
  int64_t cols_per_scale;  // block cols for block; cols otherwise
  int64_t scale_cols;      // scales per row of scales
  std::size_t index(int64_t r, int64_t c) const {
    return static_cast<std::size_t>((r / rows_per_scale) * scale_cols + c / cols_per_scale);
  }
};
// Weight scales for `args` (float, 8-bit, symmetric; strategy tensor, channel or block).
struct Fp8WeightScales {
  std::vector<double> scale;           // [scale_shape...], row-major, values exact in `dtype`
  std::vector<int64_t> shape;          // tensor: [1]; channel: [rows, 1]; block: [ceil(rows/bh), ceil(cols/bw)]
  DType dtype = DType::kBF16;          // the scale's stored dtype (the weight's dtype)
  ScaleLayout layout{};
};

// Checks that `args` is an FP8 weight scheme ctcal can quantize; throws RecipeError naming
// `where` otherwise (int, 4-bit, asymmetric, group/token strategies, dynamic weights).
void check_fp8_weight_args(const QuantArgs& args, const std::string& where);

// Checks the input_activations of an FP8 Linear group: float 8-bit symmetric; static args are
// observed per tensor (strategy tensor), dynamic ones (token, group, tensor) are only declared for
// the serving engine. Throws RecipeError naming `where`.
void check_fp8_input_args(const QuantArgs& args, const std::string& where);

// w: [rows, cols] row-major, values exact in `weight_dtype` (F32, F16 or BF16).
Fp8WeightScales fp8_weight_scales(const float* w, int64_t rows, int64_t cols, const QuantArgs& args,
                                  DType weight_dtype);

// Returns the F8_E4M3 codes [rows, cols] of w with the given scales.
std::vector<uint8_t> fp8_quantize_weight(const float* w, int64_t rows, int64_t cols,
                                         const Fp8WeightScales& s, DType weight_dtype);

// dtype(f8(code) * scale) for every element: [rows, cols].
std::vector<float> fp8_dequantize_weight(const uint8_t* codes, int64_t rows, int64_t cols,
                                         const Fp8WeightScales& s);

}  // namespace ctcal
