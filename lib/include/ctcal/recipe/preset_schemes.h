#pragma once
// compressed-tensors' preset quantization schemes (quantization/quant_scheme.py PRESET_SCHEMES)
// that ctcal can run: the FP8 Linear presets. Other presets are refused by name with what they
// would need.
#include <optional>
#include <string>
#include <vector>

#include "ctcal/quant/quant_args.h"

namespace ctcal {

struct PresetScheme {
  QuantArgs weights;
  std::optional<QuantArgs> input_activations;
};

// `name` case-insensitive (compressed-tensors upper-cases it). Returns the finalized args:
//   FP8:         weights float8 tensor static; inputs float8 tensor static, observer static_minmax
//   FP8_DYNAMIC: weights float8 channel static; inputs float8 token dynamic
//   FP8_BLOCK:   weights float8 block [128, 128] static; inputs float8 group 128 dynamic
// Throws RecipeError naming `where`: a known preset ctcal does not run (W4A16, NVFP4, ...) is
// named with the reason, an unknown name lists the supported ones.
PresetScheme preset_scheme(const std::string& name, const std::string& where);

}  // namespace ctcal
