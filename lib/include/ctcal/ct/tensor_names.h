#pragma once
// The names of the tensors compressed-tensors stores next to a module (reference §4.1, §5.11):
// one place for the writer, inspect and eval.
#include <string>
#include <string_view>

namespace ctcal::ct {

// "<attention module>.k_scale" / ".k_zero_point", e.g. "model.layers.3.self_attn.k_scale" (the
// module path is the family's: ModelConfig::attention_module). vLLM's loaders of every supported
// family remap these names to "...self_attn.attn.k_scale" (maybe_remap_kv_scale_name).
// `cache` is "q", "k" or "v" (model/observation.h's site_name of the Q/K/V sites): ct stays below
// the model layer and names tensors from strings, as compressed-tensors does.
std::string scale_name(const std::string& attention_module, std::string_view cache);
std::string zero_point_name(const std::string& attention_module, std::string_view cache);

// A quantized Linear's "<module>.weight_scale", ".weight_zero_point", ".input_scale".
std::string weight_scale_name(const std::string& module);
std::string weight_zero_point_name(const std::string& module);
std::string input_scale_name(const std::string& module);

// An online transform's weight: "<module>.<group>_<location>.weight", e.g.
// "model.layers.0.self_attn.R3_q_attn.weight".
std::string transform_weight_name(const std::string& module, const std::string& group, const std::string& location);

}  // namespace ctcal::ct
