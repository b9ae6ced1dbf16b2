#pragma once
// A run's quantization scheme in the words a reader compares runs by ("FP8 E4M3 symmetric,
// per-tensor; R3 hadamard 8x8"), from the same QuantArgs and transform_config a checkpoint's
// config.json holds, so that a report never identifies a run only by its directory name.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "ctcal/quant/quant_args.h"

namespace ctcal {

// The number format alone ("FP8 E4M3", "INT4"): runs of one format share a report panel.
std::string format_name(const QuantArgs& a);

// "FP8 E4M3 symmetric, per-tensor, static_minmax".
std::string args_phrase(const QuantArgs& a);

// compressed-tensors' transform_config in words: "R3 hadamard 8x8", "R2 + R3 hadamard 64x64";
// "" when it holds no groups.
std::string transforms_phrase(const nlohmann::json& transform_config);

// Everything about a run's scheme: KV args, Q args when attention is quantized, transforms.
std::string scheme_phrase(const QuantArgs& kv, const std::optional<QuantArgs>& q, const std::string& transforms);

}  // namespace ctcal
