#pragma once
// Reading compressed-tensors' quantized Linear weights and dequantizing one tensor at a time to
// float, exactly as compressed-tensors' `decompress` does (compressors/naive_quantized,
// pack_quantized, nvfp4; lifecycle/forward.py `dequantize`):
//   naive-quantized / int-quantized / float-quantized:
//       <m>.weight (I8 or F8_E4M3), <m>.weight_scale, [<m>.weight_zero_point], [<m>.weight_g_idx]
//   pack-quantized (INT 1..8 bit): <m>.weight_packed (I32, see packed_int.h), <m>.weight_shape,
//       <m>.weight_scale, [<m>.weight_zero_point packed along rows], [<m>.weight_g_idx]
//   nvfp4-pack-quantized: <m>.weight_packed (U8, two E2M1 codes per byte, low nibble first),
//       <m>.weight_scale (F8_E4M3 per 16-column group), <m>.weight_global_scale (F32 [1])
// value = dtype((q - zp) * scale) with dtype = the scale's dtype (bf16 for nvfp4, whose scale is
// (fp8 scale as bf16) / global_scale in fp32). Which scale covers an element follows the scale's
// shape as compressed-tensors infers it ([1]: tensor; [rows, 1]: channel; [rows, G]: groups of
// cols/G columns, or by g_idx; otherwise blocks of `block_structure`).
// This module knows the tensor layout only: which modules are quantized and with which config
// group is decided by the caller.
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/error.h"
#include "ctcal/io/safetensors.h"

namespace ctcal {

class Checkpoint;

enum class WeightFormat {
  kDense,              // unquantized
  kNaiveQuantized,
  kIntQuantized,       // compressed-tensors' alias of naive-quantized for int W8A8
  kFloatQuantized,     // alias of naive-quantized for FP8 W8A8
  kPackQuantized,
  kNvfp4PackQuantized,
};

// A compressed-tensors format ctcal cannot read (exit 4, naming the format).
class UnsupportedFormatError : public InputError {
 public:
  using InputError::InputError;
};

// "float-quantized" -> kFloatQuantized; anything else throws UnsupportedFormatError naming
// `where` (e.g. "config.json: quantization_config.format"), the format and the supported ones.
WeightFormat weight_format_from_name(const std::string& name, const std::string& where);
std::string weight_format_name(WeightFormat f);

// The parts of a config group's `weights` QuantizationArgs that decoding needs.
struct QuantizedWeightSpec {
  WeightFormat format = WeightFormat::kDense;
  int64_t num_bits = 8;
  bool is_float = false;
  bool symmetric = true;
  std::string strategy;                                   // "tensor", "channel", "group", ...
  std::optional<std::array<int64_t, 2>> block_structure;  // [rows, cols] of a block
};
// Reads `weights` (a QuantizationArgs JSON object); throws InputError naming `where` and the
// field when it is missing or malformed, UnsupportedFormatError when the format cannot hold it.
QuantizedWeightSpec quantized_weight_spec(const nlohmann::json& weights, WeightFormat format,
                                          const std::string& where);

// A tensor of a checkpoint: header entry and raw bytes; nullopt when absent.
struct RawTensor {
  const TensorInfo* info;
  const unsigned char* data;
  std::string file;  // for messages
};
using TensorGetter = std::function<std::optional<RawTensor>(const std::string& name)>;
TensorGetter tensor_getter(const Checkpoint& ck);
TensorGetter tensor_getter(const SafetensorsFile& f);

struct DequantizedWeight {
  std::vector<float> values;   // [rows, cols], each value exact in `dtype`
  std::vector<int64_t> shape;  // [rows, cols]
  DType dtype = DType::kF32;   // the dtype compressed-tensors decompresses to
};

// Whether `module` has the tensors of a quantized weight in `format` (weight_packed or
// weight_scale present).
bool has_quantized_weight(const TensorGetter& get, const std::string& module);

// Dequantizes `<module>.weight*`. Throws InputError naming the file, tensor and what was expected
// (missing tensor, wrong dtype or shape, scales that do not tile the weight).
DequantizedWeight dequantize_weight(const TensorGetter& get, const std::string& module,
                                    const QuantizedWeightSpec& spec);

// [rows, cols] of the dequantized weight, from the headers (and pack-quantized's weight_shape)
// without dequantizing. Throws InputError like dequantize_weight.
std::vector<int64_t> quantized_weight_shape(const TensorGetter& get, const std::string& module,
                                            const QuantizedWeightSpec& spec);

// Names of the tensors a quantized `module` stores in `format` (for keeping them verbatim).
std::vector<std::string> quantized_weight_tensor_names(WeightFormat format, const std::string& module);

}  // namespace ctcal
