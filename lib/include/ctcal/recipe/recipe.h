#pragma once
// An llm-compressor recipe (reference §1.1): `<name>_stage` -> `<name>_modifiers` ->
// ModifierClass: args, plus ctcal's own top-level `ctcal:` block of run defaults. Parsed
// strictly: an unknown key anywhere is an error naming the key, its YAML path and line.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/quant/quant_args.h"

namespace ctcal {

// A config group whose targets name the attention module: attention (query) quantization,
// which implies KV quantization with the same args (llm-compressor).
struct AttentionGroup {
  std::string name;                  // config group key, kept in config_groups
  std::vector<std::string> targets;  // e.g. ["LlamaAttention"] or ["re:.*self_attn$"]
  QuantArgs input_activations;
};

// A config group whose targets are Linear layers: FP8 weights (data-free scales) and, optionally,
// FP8 input activations (static: observed in the calibration pass; dynamic: only declared).
// From `config_groups`, or expanded from a preset `scheme:` (FP8, FP8_DYNAMIC, FP8_BLOCK) as
// compressed-tensors' preset_name_to_scheme does, named `group_<i>` as llm-compressor names them.
struct LinearGroup {
  std::string name;                  // config group key
  std::vector<std::string> targets;  // e.g. ["Linear"], names or "re:" patterns
  QuantArgs weights;
  std::optional<QuantArgs> input_activations;
  std::optional<std::string> format;  // the group's `format`, when the recipe sets one
};

struct QuantizationModifierSpec {
  std::optional<QuantArgs> kv_cache_scheme;
  std::vector<AttentionGroup> attention_groups;
  std::vector<LinearGroup> linear_groups;
  std::vector<std::string> targets = {"Linear"};
  std::vector<std::string> ignore;
  bool bypass_divisibility_checks = false;
  std::optional<std::string> input_observer;
};

struct TransformArgsSpec {
  std::vector<std::string> targets;
  std::string location;   // input, weight_input, weight_output, output, k_cache, q_attn
  bool inverse = false;
  std::vector<std::string> ignore;
};

struct TransformSchemeSpec {
  std::string type;                     // hadamard, random-hadamard
  std::vector<TransformArgsSpec> apply;
  bool randomize = false;
  bool requires_grad = false;
  std::optional<int64_t> head_dim;
  std::string precision = "torch.float32";
};

struct SpinQuantSpec {
  std::vector<std::string> rotations = {"R1", "R2"};
  std::string transform_type = "hadamard";
  std::optional<int64_t> transform_block_size;
  std::string precision = "torch.float64";
  // An explicit transform_config (group name -> scheme), used verbatim when given.
  std::vector<std::pair<std::string, TransformSchemeSpec>> transform_config;
  bool explicit_config = false;
};

struct ModifierEntry {
  std::string stage;  // "quant" for `quant_stage`
  std::string group;  // "quant" for `quant_modifiers`
  std::string type;   // "QuantizationModifier" / "SpinQuantModifier"
  int line = 0;
  std::variant<QuantizationModifierSpec, SpinQuantSpec> spec;
};

// The `ctcal:` block: defaults for flags (SPEC §1); flags override it.
struct RunDefaults {
  std::optional<std::string> model, dataset, output, tokenizer;
  std::optional<int64_t> num_samples, max_seq_length;
  std::optional<uint64_t> seed;
  std::optional<bool> shuffle;
  std::optional<std::string> key_range;  // "observed" or "envelope"
  std::optional<std::string> propagate;  // "unquantized" or "quantized" (FP8 weights in the forward)
};

struct Recipe {
  std::string source;  // file path (for messages)
  std::vector<ModifierEntry> modifiers;  // YAML order (order matters)
  RunDefaults ctcal;

  const QuantizationModifierSpec* quantization() const;
  const SpinQuantSpec* spinquant() const;
  // The KV args: the kv_cache_scheme, else the attention group's args (implied KV).
  std::optional<QuantArgs> kv_args() const;
  // The attention (query) args when an attention group exists.
  std::optional<QuantArgs> query_args() const;
  // Whether the SpinQuant modifier runs before the QuantizationModifier (rotated observation).
  bool rotation_before_quantization() const;
};

// Parses a recipe file; collects every error and throws one RecipeError listing them all.
Recipe load_recipe(const std::filesystem::path& path);
Recipe parse_recipe(const std::string& yaml_text, const std::string& source);

// One QuantizationArgs mapping (YAML or JSON text, e.g. a checkpoint's kv_cache_scheme), with the
// same strict rules. Throws RecipeError.
QuantArgs parse_quant_args(const std::string& text, const std::string& where);

}  // namespace ctcal
