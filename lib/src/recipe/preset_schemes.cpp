#include "ctcal/recipe/preset_schemes.h"

#include <algorithm>
#include <set>

#include "ctcal/error.h"

namespace ctcal {

namespace {

QuantArgs fp8(Strategy s, Dynamic d) {
  QuantArgs a;
  a.num_bits = 8;
  a.type = QuantType::kFloat;
  a.symmetric = true;
  a.strategy = s;
  a.dynamic = d;
  a.user_set = {"num_bits", "type", "strategy", "symmetric", "dynamic"};  // set by the preset
  return a;
}

}  // namespace

PresetScheme preset_scheme(const std::string& name, const std::string& where) {
  std::string up = name;
  std::transform(up.begin(), up.end(), up.begin(), [](unsigned char c) { return std::toupper(c); });
  PresetScheme p;
  if (up == "FP8") {
    p.weights = fp8(Strategy::kTensor, Dynamic::kFalse);
    p.input_activations = fp8(Strategy::kTensor, Dynamic::kFalse);
    p.input_activations->observer = "static_minmax";
    p.input_activations->user_set.insert("observer");
  } else if (up == "FP8_DYNAMIC") {
    p.weights = fp8(Strategy::kChannel, Dynamic::kFalse);
    p.input_activations = fp8(Strategy::kToken, Dynamic::kTrue);
  } else if (up == "FP8_BLOCK") {
    p.weights = fp8(Strategy::kBlock, Dynamic::kFalse);
    p.weights.block_structure = std::array<int64_t, 2>{128, 128};
    p.weights.user_set.insert("block_structure");
    p.input_activations = fp8(Strategy::kGroup, Dynamic::kTrue);
    p.input_activations->group_size = 128;
    p.input_activations->user_set.insert("group_size");
  } else {
    // compressed-tensors 0.20's other presets.
    static const std::set<std::string> kOther = {
        "UNQUANTIZED", "W4A16_ASYM", "W8A8", "INT8", "W4AFP8", "NVFP4A16", "NVFP4", "MXFP4A16",
        "MXFP4", "MXFP4XFP8", "MXFP6A16", "MXFP6A8", "MXFP8A16", "MXFP8", "W2A4", "W2A8", "W2A16",
        "W3A4", "W3A8", "W3A16", "W4A4", "W4A8", "W4A16", "W5A8", "W5A16", "W6A8", "W6A16", "W7A8",
        "W7A16", "W8A16"};
    if (kOther.count(up))
      throw RecipeError(fmt::format(
          "{}: preset scheme '{}' is not supported: ctcal quantizes Linear layers to FP8 only "
          "(FP8, FP8_DYNAMIC, FP8_BLOCK); quantize the weights with llm-compressor, then calibrate "
          "the KV cache of that checkpoint with ctcal (its weights are kept)", where, name));
    throw RecipeError(fmt::format("{}: unknown preset scheme '{}'; ctcal runs FP8, FP8_DYNAMIC and "
                                  "FP8_BLOCK", where, name));
  }
  finalize_quant_args(&p.weights, where + ".weights", "memoryless_minmax");
  finalize_quant_args(&*p.input_activations, where + ".input_activations");
  return p;
}

}  // namespace ctcal
