#pragma once
// `ctcal inspect`: what a checkpoint (ours or anyone's compressed-tensors output) holds, the
// problems that make KV scales silently wrong (missing, zero, NaN, all 1.0, wrong shape, names
// vLLM skips, non-orthogonal transforms, missing shards), and whether vLLM can serve it.
#include <filesystem>
#include <ostream>

#include <nlohmann/json.hpp>

namespace ctcal {

// `path`: a checkpoint directory or a config.json. Never throws for problems inside the
// checkpoint (they are reported); throws InputError when `path` is neither.
nlohmann::json inspect_checkpoint(const std::filesystem::path& path);

// Human-readable report; ANSI colour only when `color`.
void print_inspect(const nlohmann::json& doc, std::ostream& out, bool color);

// Exit code: 0, or 5 under --strict when problems (or "not quantized") were found.
int inspect_exit_code(const nlohmann::json& doc, bool strict);

}  // namespace ctcal
