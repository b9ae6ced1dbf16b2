#pragma once
// The subset of a Hugging Face decoder config (Llama, Mistral, Qwen2, Qwen3, Gemma 3, gpt-oss: see
// model/family.h) that the forward pass needs, parsed from config.json with HF key names. Both
// RoPE spellings are accepted: classic `rope_theta` + `rope_scaling` (with `rope_type` or legacy
// `type`) and transformers-5 `rope_parameters` (per layer type for Gemma 3).
#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/dtype.h"
#include "ctcal/model/family.h"
#include "ctcal/model/mamba2_config.h"

namespace ctcal {

// kProportional: transformers 5.17's _compute_proportional_rope_parameters (Gemma 4's full layers):
// rotate-half over the whole head, the first int(proportion * head_dim // 2) frequencies
// 1 / theta^(2i / head_dim), the rest 0 (those pairs pass through), all / factor.
enum class RopeType { kDefault, kLinear, kDynamic, kLlama3, kLongRope, kYarn, kProportional };
std::string rope_type_name(RopeType t);

struct RopeConfig {
  RopeType type = RopeType::kDefault;
  double theta = 10000.0;
  double factor = 1.0;                          // linear, dynamic, llama3, yarn
  double low_freq_factor = 1.0;                 // llama3
  double high_freq_factor = 4.0;                // llama3
  int64_t original_max_position_embeddings = 0; // llama3, longrope, yarn
  std::vector<double> short_factor, long_factor;  // longrope: [rotary_dim / 2] each
  double attention_factor = 1.0;                // longrope, yarn: cos and sin are multiplied by it
  double beta_fast = 32.0, beta_slow = 1.0;     // yarn: rotations bounding the interpolation ramp
  bool truncate = true;                         // yarn: floor/ceil the ramp's ends
  double partial_rotary_factor = 1.0;           // RoPE on the first int(head_dim * f) dims (Phi-3)
  double rope_proportion = 1.0;                 // proportional: the share of the head's angles that rotate
  // Dimensions of each head that RoPE rotates (the rest pass through).
  int64_t rotary_dim(int64_t head_dim) const {
    return static_cast<int64_t>(static_cast<double>(head_dim) * partial_rotary_factor);
  }
};

// A gated DeltaNet mixer's hyper-parameters (Qwen3_5TextConfig's linear_* keys; model/gated_deltanet.h).
struct LinearAttentionConfig {
  int64_t num_k_heads = 0;  // linear_num_key_heads
  int64_t num_v_heads = 0;  // linear_num_value_heads (a multiple of num_k_heads)
  int64_t head_k_dim = 0;   // linear_key_head_dim
  int64_t head_v_dim = 0;   // linear_value_head_dim
  int64_t conv_kernel = 0;  // linear_conv_kernel_dim
  int64_t key_dim() const { return num_k_heads * head_k_dim; }
  int64_t value_dim() const { return num_v_heads * head_v_dim; }
  int64_t conv_dim() const { return 2 * key_dim() + value_dim(); }  // in_proj_qkv rows
};

struct ModelConfig {
  std::string architecture;         // e.g. "Qwen3ForCausalLM" (one of model/family.h)
  const FamilySpec* family = nullptr;  // never null after parse_model_config
  std::string weight_prefix = "model.";  // family->weight_prefix, or its alternative (load_model_config)
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  // The window of the sliding layers (keys at positions > q - window are seen); null = none.
  std::optional<int64_t> sliding_window;
  std::vector<bool> layer_sliding;  // [num_hidden_layers]: true = sliding_window applies
  double rms_norm_eps = 1e-6;
  bool attention_bias = false;
  bool qkv_bias = false;  // q/k/v_proj have biases
  bool o_bias = false;    // o_proj has a bias
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  bool qk_norm = false;  // q_norm / k_norm before RoPE: FamilySpec::qk_norm, or its qk_norm_flag set in config.json
  RopeConfig rope;                       // global (full-attention) layers
  std::optional<RopeConfig> rope_local;  // sliding layers, when they differ (Gemma 3)
  // Scores are q k^T * attn_scale: head_dim^-0.5, or query_pre_attn_scalar^-0.5 (Gemma 3).
  std::optional<double> query_pre_attn_scalar;
  std::optional<double> final_logit_softcapping;  // logits = tanh(l / cap) * cap (Gemma 3)
  std::optional<DType> dtype;  // `dtype` / `torch_dtype`, when present
  // Sparse MoE (family->mlp == kMoe): experts, experts per token, expert width, renormalised
  // top-k weights, and which layers have the MoE MLP (others: dense, intermediate_size).
  int64_t num_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;
  bool norm_topk_prob = false;
  // MoeKind::kSigmoidGrouped (GLM-4.5): the experts in n_group groups, the choice within the
  // topk_group best groups, the weights times routed_scaling_factor.
  int64_t n_group = 1, topk_group = 1;
  double routed_scaling_factor = 1.0;
  std::vector<bool> layer_moe;  // [num_hidden_layers]
  // The shared expert's width on MoE layers (FamilySpec::moe_shared_expert), else 0.
  int64_t shared_expert_intermediate_size = 0;
  // The widest gated-MLP intermediate a layer computes outside the routed experts: the dense MLP's
  // or the shared expert's (the Decoder's gate/up scratch).
  int64_t mlp_scratch_width() const {
    int64_t w = std::max(intermediate_size, shared_expert_intermediate_size);
    for (int64_t f : layer_intermediate_size) w = std::max(w, f);  // Gemma 4's double-wide MLPs
    return w;
  }
  double swiglu_limit = 7.0;    // gpt-oss's expert activation clamp (MlpAct::kClampedSwiglu)
  bool is_moe(int64_t l) const { return !layer_moe.empty() && layer_moe[static_cast<std::size_t>(l)]; }
  // Hybrids (FamilySpec::hybrid_linear_attention): which layers are gated DeltaNet linear attention
  // (no KV cache: no Q/K/V observed, no scales); empty for every other family.
  std::vector<bool> layer_linear_attention;  // [num_hidden_layers]
  LinearAttentionConfig linear_attention;
  bool is_linear_attention(int64_t l) const {
    return !layer_linear_attention.empty() && layer_linear_attention[static_cast<std::size_t>(l)];
  }
  // Mamba2 hybrids (FamilySpec::hybrid_mamba): which layers run a Mamba2 mixer instead of
  // attention (no KV cache), the mixer's sizes, and its projections' / convolution's biases.
  std::vector<bool> layer_mamba;  // [num_hidden_layers]
  Mamba2Config mamba;
  bool mamba_proj_bias = false;  // in_proj / out_proj biases (Nemotron-H use_bias, Granite mamba_proj_bias)
  bool mamba_conv_bias = true;   // conv1d.bias (use_conv_bias / mamba_conv_bias)
  bool is_mamba(int64_t l) const { return !layer_mamba.empty() && layer_mamba[static_cast<std::size_t>(l)]; }
  // Nemotron-H (FamilySpec::one_block_per_layer): the layers that are an MLP block, with no mixer.
  std::vector<bool> layer_mlp_block;  // [num_hidden_layers]
  bool is_mlp_block(int64_t l) const { return !layer_mlp_block.empty() && layer_mlp_block[static_cast<std::size_t>(l)]; }
  // Whether layer `l` has a token mixer (attention, linear attention or Mamba2) / an MLP block.
  bool has_mixer(int64_t l) const { return !is_mlp_block(l); }
  bool has_mlp_block(int64_t l) const { return !family || !family->one_block_per_layer || is_mlp_block(l); }
  bool has_kv_cache(int64_t l) const { return !is_linear_attention(l) && !is_mamba(l) && has_mixer(l); }
  // What a layer without a KV cache is, for the plan, the report and inspect: "linear attention",
  // "Mamba2", "MLP" or "MoE" (Nemotron-H's blocks); "attention" for the others.
  std::string_view layer_kind(int64_t l) const {
    return is_linear_attention(l) ? "linear attention"
           : is_mamba(l)          ? "Mamba2"
           : !has_mixer(l)        ? (is_moe(l) ? "MoE" : "MLP")
                                  : "attention";
  }
  // Attention layers apply RoPE (Nemotron-H never; Granite 4 hybrid by position_embedding_type).
  bool rope_on = true;
  // Granite's multipliers (FamilySpec::granite_multipliers; 1 elsewhere): the softmax scale
  // replaced by attention_multiplier when set, embeddings * embedding_multiplier, each residual
  // branch * residual_multiplier, logits / logits_scaling.
  std::optional<double> attention_multiplier;
  double embedding_multiplier = 1.0;
  double residual_multiplier = 1.0;
  double logits_scaling = 1.0;
  // q_proj rows: q_dim, or 2 q_dim when each head's rows are [query | gate] (attention_output_gate).
  int64_t q_proj_rows() const { return family && family->attention_output_gate ? 2 * q_dim() : q_dim(); }

  // Gemma 4 (FamilySpec::gemma4_attention): each layer's head_dim and KV heads (per_layer_config);
  // empty for every other family (head_dim and num_key_value_heads hold for every layer).
  std::vector<int64_t> layer_head_dim, layer_kv_heads;  // [num_hidden_layers] each
  // Gemma 4's attention_k_eq_v full layers: no v_proj, V is k_proj's output (before k_norm).
  std::vector<bool> layer_k_eq_v;  // [num_hidden_layers]; empty: none
  // Gemma 4's per-layer input embeddings (hidden_size_per_layer_input, P): 0 = none.
  int64_t per_layer_input_size = 0;
  // Gemma 4's KV-shared layers (the last num_kv_shared_layers): the layer whose K/V (after its
  // norms and RoPE, as cached) each layer attends with, -1 for a layer's own; empty: none.
  std::vector<int64_t> layer_kv_source;  // [num_hidden_layers]
  int64_t kv_source_of(int64_t l) const { return layer_kv_source.empty() ? -1 : layer_kv_source[static_cast<std::size_t>(l)]; }
  // Whether a later layer reads layer l's K/V.
  bool kv_shared_by_later(int64_t l) const {
    return std::find(layer_kv_source.begin(), layer_kv_source.end(), l) != layer_kv_source.end();
  }
  // Gemma 4's use_double_wide_mlp: the KV-shared layers' dense MLP is 2 intermediate_size wide;
  // empty: intermediate_size on every layer.
  std::vector<int64_t> layer_intermediate_size;  // [num_hidden_layers]
  bool k_eq_v(int64_t l) const { return !layer_k_eq_v.empty() && layer_k_eq_v[static_cast<std::size_t>(l)]; }
  bool per_layer_heads() const { return !layer_head_dim.empty(); }
  int64_t head_dim_of(int64_t l) const { return per_layer_heads() ? layer_head_dim[static_cast<std::size_t>(l)] : head_dim; }
  int64_t kv_heads_of(int64_t l) const { return per_layer_heads() ? layer_kv_heads[static_cast<std::size_t>(l)] : num_key_value_heads; }
  // This config as layer `l` sees it: head_dim and num_key_value_heads set to the layer's own (a
  // copy; the same config for families without per-layer heads). Every per-layer consumer (the
  // layer, its weights, its Linears, its scales) reads the layer's attention through it.
  ModelConfig at_layer(int64_t l) const {
    ModelConfig v = *this;
    v.head_dim = head_dim_of(l);
    v.num_key_value_heads = kv_heads_of(l);
    if (!layer_intermediate_size.empty()) v.intermediate_size = layer_intermediate_size[static_cast<std::size_t>(l)];
    return v;
  }
  // The widest q / k-v projection of any layer (scratch buffers).
  int64_t widest_q_dim() const;
  int64_t widest_kv_dim() const;

  int64_t q_dim() const { return num_attention_heads * head_dim; }   // q_proj rows
  int64_t kv_dim() const { return num_key_value_heads * head_dim; }  // k/v_proj rows
  int64_t n_rep() const { return num_attention_heads / num_key_value_heads; }  // GQA group size
  // The window of layer `l`, or null for full causal attention.
  std::optional<int64_t> window(int64_t l) const {
    return layer_sliding[static_cast<std::size_t>(l)] ? sliding_window : std::nullopt;
  }
  // Llama 4 (FamilySpec::llama4_attention): the weightless L2 q/k norm after RoPE on RoPE layers
  // (use_qk_norm), the chunk of the RoPE layers' local attention (attention_chunk_size; null: none),
  // and the NoPE layers' query scale log(floor((pos + 1) / floor_scale) + 1) * attn_scale + 1.
  bool l2_qk_norm = false;
  std::optional<int64_t> attention_chunk_size;
  bool attn_temperature_tuning = false;
  double floor_scale = 8192.0, attn_scale = 0.1;
  std::optional<int64_t> chunk(int64_t l) const {
    return family && family->llama4_attention && uses_rope(l) ? attention_chunk_size : std::nullopt;
  }
  // Layers that apply no RoPE (FamilySpec::nope_layers: SmolLM3's no_rope_layers); empty: none.
  std::vector<bool> layer_nope;  // [num_hidden_layers]
  bool uses_rope(int64_t l) const { return layer_nope.empty() || !layer_nope[static_cast<std::size_t>(l)]; }
  // A NoPE layer's "RoPE": zero rotary dimensions, so its tables are empty and every dim passes through.
  RopeConfig no_rope = [] {
    RopeConfig r;
    r.partial_rotary_factor = 0.0;
    return r;
  }();
  // The RoPE of layer `l` (local for Gemma 3's and OLMo 3's sliding layers; none for NoPE layers).
  const RopeConfig& rope_of(int64_t l) const {
    if (!uses_rope(l)) return no_rope;
    return rope_local && layer_sliding[static_cast<std::size_t>(l)] ? *rope_local : rope;
  }
  // "model.layers.{l}." or, for Gemma 3 inside its vision wrapper, "language_model.model.layers.{l}."
  std::string layer_prefix(int64_t l) const;
  // The attention module's path, where scale and R3 tensors live: "<layer_prefix>self_attn" (the
  // family's AttentionNames::module).
  std::string attention_module(int64_t l) const;
  // "model.embed_tokens.weight" / "model.norm.weight" under the family's prefix.
  std::string top_tensor(const std::string& name) const;
  // The output head's module name ("lm_head"; the family's own where it lies elsewhere).
  std::string lm_head_module() const;
};

// Throws InputError naming `where` (the config.json path), the field and what was expected.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& where);

}  // namespace ctcal
