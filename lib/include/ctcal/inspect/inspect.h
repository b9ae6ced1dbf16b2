#pragma once
// What a checkpoint (ours or anyone's compressed-tensors output) holds, the problems that make KV
// scales silently wrong (missing, zero, NaN, all 1.0, wrong shape, names vLLM skips,
// non-orthogonal transforms, missing shards), and whether vLLM can serve it: one document, which
// `ctcal inspect` (app/commands/inspect_command.h) prints and `calibrate` ends with.
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/quant/nvfp4_record.h"

namespace ctcal {

// `path`: a checkpoint directory or a config.json. Never throws for problems inside the
// checkpoint (they are reported); throws InputError when `path` is neither.
nlohmann::json inspect_checkpoint(const std::filesystem::path& path);

// The document's "serving" object ({"vllm": vllm_verdict, "vllm_r3": the R3 branch's}) from a
// checkpoint's config.json and its tensor names (nullopt: a config.json alone, no per-layer
// verdict), without reading any file: inspect gives it what it read, calibrate what it wrote.
// `has_errors`: inspect found the files disagreeing with their config. `nvfp4`: ctcal's record
// that the k/v scales are NVFP4 decode multipliers (quant/nvfp4_record.h), when there is one.
nlohmann::json serving_verdicts(const nlohmann::json& config, const std::optional<std::vector<std::string>>& tensors,
                                const std::string& served_path, bool has_errors,
                                const std::optional<Nvfp4KvRecord>& nvfp4 = std::nullopt);

// Whose loading rules a verdict follows: mainline vLLM (default), or the R3 serving branch (a
// vLLM fork's "Deterministic Hadamard KQ rotation" change, shared SPEC §7).
enum class ServingEngine { kVllm, kVllmR3 };
std::optional<ServingEngine> serving_engine_from_name(const std::string& name);  // "vllm", "vllm-r3"

// Whether `engine` can load the checkpoint and serve its KV scales as calibrated.
bool engine_serves(const nlohmann::json& doc, ServingEngine engine);

// Exit code: 0, or 5 under --strict when a problem was found or `engine` cannot load or serve it.
int inspect_exit_code(const nlohmann::json& doc, bool strict, ServingEngine engine = ServingEngine::kVllm);

}  // namespace ctcal
