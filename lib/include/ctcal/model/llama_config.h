#pragma once
// The subset of a Hugging Face LlamaConfig / MistralConfig that the forward pass needs, parsed
// from config.json with HF key names. Both RoPE spellings are accepted: classic `rope_theta` +
// `rope_scaling` (with `rope_type` or legacy `type`) and transformers-5 `rope_parameters`.
#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "ctcal/dtype.h"

namespace ctcal {

enum class RopeType { kDefault, kLinear, kDynamic, kLlama3 };
std::string rope_type_name(RopeType t);

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  double factor = 1.0;                          // linear, dynamic, llama3
  double low_freq_factor = 1.0;                 // llama3
  double high_freq_factor = 4.0;                // llama3
  int64_t original_max_position_embeddings = 0; // llama3 (required there)
};

struct LlamaConfig {
  std::string architecture;  // "LlamaForCausalLM" or "MistralForCausalLM"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  std::optional<int64_t> sliding_window;  // Mistral only; null = full causal attention
  double rms_norm_eps = 1e-6;
  bool attention_bias = false;
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  RopeConfig rope;
  std::optional<DType> dtype;  // `dtype` / `torch_dtype`, when present

  int64_t q_dim() const { return num_attention_heads * head_dim; }   // q_proj rows
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }  // k/v_proj rows
  int64_t n_rep() const { return num_attention_heads / num_key_value_heads; }  // GQA group size
};

// Throws InputError naming `where` (the config.json path), the field and what was expected.
LlamaConfig parse_llama_config(const nlohmann::json& j, const std::string& where);

}  // namespace ctcal
