#pragma once
// The names of the scale tensors ctcal writes and reads (reference §4.1): one place for the
// writer, inspect and eval.
#include <string>

#include "ctcal/model/observation.h"

namespace ctcal {

// "<attention module>.k_scale" / ".k_zero_point", e.g. "model.layers.3.self_attn.k_scale" (the
// module path is the family's: ModelConfig::attention_module). vLLM's loaders of every supported
// family remap these names to "...self_attn.attn.k_scale" (maybe_remap_kv_scale_name).
std::string scale_name(const std::string& attention_module, Site site);
std::string zero_point_name(const std::string& attention_module, Site site);

}  // namespace ctcal
