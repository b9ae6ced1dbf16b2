// config.json parsing of issue 29's families, as transformers 5.17's config classes derive their
// fields: SmolLM3's NoPE layers (SmolLM3Config.__post_init__) and OLMo 3's RoPE per layer type
// (Olmo3Config.convert_rope_params_to_dict) and default layer_types.
#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/model/model_config.h"
#include "ctcal/model/rope.h"
#include "config_error.h"

namespace ctcal {
namespace {

using nlohmann::json;

json base(const char* arch) {
  json j = json::parse(R"({"vocab_size": 100, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2})");
  j["architectures"] = {arch};
  return j;
}

std::string error_of(const json& j) { return test::config_error(j); }

TEST(ModelConfig2026, SmolLM3NoRopeLayersByIntervalOrList) {
  json j = base("SmolLM3ForCausalLM");
  ModelConfig c = parse_model_config(j, "c");
  // no_rope_layer_interval 4 by default: layer 3 has no RoPE; theta 2e6 and tied embeddings by default
  EXPECT_EQ(c.layer_nope, (std::vector<bool>{false, false, false, true}));
  EXPECT_TRUE(c.uses_rope(0));
  EXPECT_FALSE(c.uses_rope(3));
  EXPECT_EQ(c.rope.theta, 2000000.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  // a NoPE layer's RoPE rotates nothing: its table has no dimensions
  EXPECT_EQ(c.rope_of(3).rotary_dim(c.head_dim), 0);
  EXPECT_EQ(make_rope_table(c.rope_of(3), c.head_dim, c.max_position_embeddings, 5).half, 0);
  EXPECT_EQ(c.rope_of(0).rotary_dim(c.head_dim), c.head_dim);
  j["no_rope_layer_interval"] = 2;
  EXPECT_EQ(parse_model_config(j, "c").layer_nope, (std::vector<bool>{false, true, false, true}));
  j["no_rope_layers"] = {0, 1, 1, 1};  // the list wins over the interval
  EXPECT_EQ(parse_model_config(j, "c").layer_nope, (std::vector<bool>{true, false, false, false}));
  j["no_rope_layers"] = {0, 1, 2, 1};
  EXPECT_NE(error_of(j).find("no_rope_layers"), std::string::npos);
  j["no_rope_layers"] = {0, 1};
  EXPECT_NE(error_of(j).find("no_rope_layers"), std::string::npos);
}

TEST(ModelConfig2026, SmolLM3SlidesTheNoRopeLayersWhenAsked) {
  json j = base("SmolLM3ForCausalLM");
  j["sliding_window"] = 8;
  // without use_sliding_window and layer_types nothing slides
  EXPECT_EQ(parse_model_config(j, "c").layer_sliding, (std::vector<bool>(4, false)));
  j["use_sliding_window"] = true;
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.layer_sliding, (std::vector<bool>{false, false, false, true}));
  EXPECT_EQ(*c.window(3), 8);
  // layer_types as saved win (the eager mask follows them whatever use_sliding_window says)
  j["use_sliding_window"] = false;
  j["layer_types"] = {"sliding_attention", "full_attention", "full_attention", "full_attention"};
  EXPECT_EQ(parse_model_config(j, "c").layer_sliding, (std::vector<bool>{true, false, false, false}));
}

TEST(ModelConfig2026, Olmo3DefaultsLayerTypesAndWindow) {
  json j = base("Olmo3ForCausalLM");
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.layer_sliding, (std::vector<bool>{true, true, true, false}));  // every 4th layer full
  EXPECT_EQ(*c.sliding_window, 4096);  // Olmo3Config's default window
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope_of(3).theta, 500000.0);
  EXPECT_EQ(c.rope_of(0).theta, 500000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  j["sliding_window"] = nullptr;  // an explicit null: no window anywhere
  EXPECT_EQ(parse_model_config(j, "c").layer_sliding, (std::vector<bool>(4, false)));
}

TEST(ModelConfig2026, Olmo3RopePerLayerTypeInBothSpellings) {
  json j = base("Olmo3ForCausalLM");
  j["sliding_window"] = 8;
  // classic: rope_theta and rope_scaling reach the full layers only; the sliding ones keep 500000
  j["rope_theta"] = 10000.0;
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  ModelConfig classic = parse_model_config(j, "c");
  EXPECT_EQ(classic.rope_of(3).theta, 10000.0);
  EXPECT_EQ(classic.rope_of(3).type, RopeType::kLinear);
  EXPECT_EQ(classic.rope_of(0).theta, 500000.0);
  EXPECT_EQ(classic.rope_of(0).type, RopeType::kDefault);
  json v5 = j;
  v5.erase("rope_theta");
  v5.erase("rope_scaling");
  v5["rope_parameters"] = {{"full_attention", {{"rope_type", "linear"}, {"factor", 2.0}, {"rope_theta", 10000.0}}},
                           {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 500000.0}}}};
  ModelConfig b = parse_model_config(v5, "c");
  for (int64_t l : {0, 3})
    EXPECT_EQ(rope_inv_freq(b.rope_of(l), b.head_dim, b.max_position_embeddings, 8),
              rope_inv_freq(classic.rope_of(l), classic.head_dim, classic.max_position_embeddings, 8));
  v5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};  // one flat dict: not Olmo3's
  EXPECT_NE(error_of(v5).find("rope_parameters"), std::string::npos);
}

TEST(ModelConfig2026, Glm4MoeDefaultsDenseLayersAndGroups) {
  json j = base("Glm4MoeForCausalLM");
  ModelConfig c = parse_model_config(j, "c");
  // Glm4MoeConfig's defaults: 128 experts of 1408, top 8 in 1 of 1 group, renormalised, x1.0, one
  // shared expert, layer 0 dense; partial rotary 0.5; no q/k norms; q/k/v biases only with attention_bias
  EXPECT_EQ(c.num_experts, 128);
  EXPECT_EQ(c.num_experts_per_tok, 8);
  EXPECT_EQ(c.moe_intermediate_size, 1408);
  EXPECT_EQ(c.shared_expert_intermediate_size, 1408);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.n_group, 1);
  EXPECT_EQ(c.routed_scaling_factor, 1.0);
  EXPECT_EQ(c.layer_moe, (std::vector<bool>{false, true, true, true}));
  EXPECT_EQ(c.rope.rotary_dim(c.head_dim), c.head_dim / 2);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  j["use_qk_norm"] = true;
  j["attention_bias"] = true;
  j["n_routed_experts"] = 16;
  j["n_group"] = 4;
  j["topk_group"] = 2;
  j["num_experts_per_tok"] = 4;
  j["n_shared_experts"] = 2;
  j["moe_intermediate_size"] = 32;
  j["first_k_dense_replace"] = 0;
  j["routed_scaling_factor"] = 2.5;
  c = parse_model_config(j, "c");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);  // Glm4MoeAttention's o_proj has none
  EXPECT_EQ(c.shared_expert_intermediate_size, 64);
  EXPECT_EQ(c.layer_moe, (std::vector<bool>(4, true)));
  EXPECT_EQ(c.routed_scaling_factor, 2.5);
  j["num_experts_per_tok"] = 9;  // more than the 2 chosen groups of 4 hold
  EXPECT_NE(error_of(j).find("num_experts_per_tok"), std::string::npos);
  j["num_experts_per_tok"] = 4;
  j["n_group"] = 3;
  EXPECT_NE(error_of(j).find("n_group"), std::string::npos);
}

TEST(ModelConfig2026, MiniMaxM2EveryLayerSparseAndRotaryDim) {
  json j = base("MiniMaxM2ForCausalLM");
  j["intermediate_size"] = 32;
  j["num_local_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5000000.0}, {"partial_rotary_factor", 0.5}};
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.layer_moe, (std::vector<bool>(4, true)));
  EXPECT_EQ(c.moe_intermediate_size, 32);  // the experts' width is intermediate_size (as Mixtral's)
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.n_group, 1);
  EXPECT_EQ(c.shared_expert_intermediate_size, 0);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.rope.rotary_dim(c.head_dim), 8);
  j["rotary_dim"] = 8;  // the hub's key, agreeing
  EXPECT_EQ(parse_model_config(j, "c").rope.rotary_dim(c.head_dim), 8);
  j["rotary_dim"] = 16;  // vLLM would read one thing, transformers another: refused
  EXPECT_NE(error_of(j).find("rotary_dim"), std::string::npos);
  j.erase("rotary_dim");
  j.erase("rope_parameters");  // MiniMaxM2Config's defaults: theta 5e6, full rotary
  c = parse_model_config(j, "c");
  EXPECT_EQ(c.rope.theta, 5000000.0);
  EXPECT_EQ(c.rope.rotary_dim(c.head_dim), c.head_dim);
}

// Llama4TextConfig.__post_init__: no_rope_layers (every 4th NoPE by default), moe_layers (every
// interleave_moe_layer_step-th), layer_types derived from no_rope_layers; the dense MLP's width is
// intermediate_size_mlp, the experts' and the shared expert's intermediate_size.
TEST(ModelConfig2026, Llama4DefaultsNopeMoeLayersAndChunks) {
  json j = base("Llama4ForCausalLM");
  j["intermediate_size"] = 32;
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.layer_nope, (std::vector<bool>{false, false, false, true}));
  EXPECT_EQ(c.layer_moe, (std::vector<bool>(4, true)));  // interleave_moe_layer_step 1
  EXPECT_EQ(c.intermediate_size, 16384);                  // intermediate_size_mlp's default
  EXPECT_EQ(c.moe_intermediate_size, 32);
  EXPECT_EQ(c.shared_expert_intermediate_size, 32);
  EXPECT_EQ(c.num_experts, 16);
  EXPECT_EQ(c.num_experts_per_tok, 1);
  EXPECT_EQ(c.rope.theta, 500000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_TRUE(c.l2_qk_norm);
  EXPECT_FALSE(c.qk_norm);  // no weighted q/k norms
  EXPECT_TRUE(c.attn_temperature_tuning);
  EXPECT_EQ(c.floor_scale, 8192.0);
  EXPECT_EQ(c.attn_scale, 0.1);
  EXPECT_EQ(c.chunk(0), std::optional<int64_t>(8192));  // RoPE layers chunk
  EXPECT_EQ(c.chunk(3), std::nullopt);                   // NoPE layers attend globally
  j["interleave_moe_layer_step"] = 2;
  j["intermediate_size_mlp"] = 64;
  j["no_rope_layers"] = {1, 0, 1, 0, 1};  // at least num_hidden_layers long
  j["attention_chunk_size"] = nullptr;
  c = parse_model_config(j, "c");
  EXPECT_EQ(c.layer_moe, (std::vector<bool>{false, true, false, true}));
  EXPECT_EQ(c.intermediate_size, 64);
  EXPECT_EQ(c.layer_nope, (std::vector<bool>{false, true, false, true}));
  EXPECT_EQ(c.chunk(0), std::nullopt);
  j["moe_layers"] = {0};  // wins over the step
  EXPECT_EQ(parse_model_config(j, "c").layer_moe, (std::vector<bool>{true, false, false, false}));
  j["layer_types"] = {"chunked_attention", "full_attention", "chunked_attention", "full_attention"};
  EXPECT_NO_THROW(parse_model_config(j, "c"));
  j["layer_types"] = {"full_attention", "full_attention", "chunked_attention", "full_attention"};
  EXPECT_NE(error_of(j).find("layer_types"), std::string::npos);  // would mask unlike vLLM's chunks
  j.erase("layer_types");
  j["moe_layers"] = {4};
  EXPECT_NE(error_of(j).find("moe_layers"), std::string::npos);
  json by_type = base("Llama4ForCausalLM");  // a config with model_type only
  by_type.erase("architectures");
  by_type["model_type"] = "llama4_text";
  EXPECT_EQ(parse_model_config(by_type, "c").architecture, "Llama4ForCausalLM");
  // The multimodal checkpoint: the same text model under text_config, its tensors where transformers
  // 5.17's save_pretrained puts them (language_model.model.*, the head at language_model.lm_head).
  json text = base("Llama4ForCausalLM");
  text.erase("architectures");
  text["intermediate_size_mlp"] = 128;
  json mm = {{"architectures", {"Llama4ForConditionalGeneration"}}, {"model_type", "llama4"}, {"text_config", text}};
  const ModelConfig m = parse_model_config(mm, "c");
  EXPECT_EQ(m.architecture, "Llama4ForConditionalGeneration");
  EXPECT_EQ(m.layer_prefix(1), "language_model.model.layers.1.");
  EXPECT_EQ(m.lm_head_module(), "language_model.lm_head");
  EXPECT_EQ(m.top_tensor("embed_tokens.weight"), "language_model.model.embed_tokens.weight");
  json flat = text;
  flat["architectures"] = {"Llama4ForCausalLM"};
  EXPECT_EQ(m.layer_nope, parse_model_config(flat, "c").layer_nope);
  mm.erase("text_config");
  EXPECT_NE(error_of(mm).find("text_config"), std::string::npos);
  // Gemma 4: refused by name, with the reason
  // (more in model_config_gemma4_test.cpp: the default per-layer table of 262144 rows is refused first)
  EXPECT_NE(error_of(base("Gemma4ForCausalLM")).find("vocab_size_per_layer_input"), std::string::npos);
}

}  // namespace
}  // namespace ctcal
