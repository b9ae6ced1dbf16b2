// config.json parsing of Gemma 4's text model (issue 29) as transformers 5.17's Gemma4TextConfig
// derives it (__post_init__: layer types, per_layer_config from global_head_dim /
// num_global_key_value_heads, the default RoPE per layer type) and the proportional RoPE's
// frequencies (_compute_proportional_rope_parameters), with the named refusals of what ctcal does
// not run yet.
#include <cmath>

#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/model/model_config.h"
#include "ctcal/model/rope.h"
#include "config_error.h"

namespace ctcal {
namespace {

using nlohmann::json;

// A Gemma 4 text config without per-layer input embeddings (what stage 1 runs).
json gemma4(int64_t layers = 4) {
  json j = json::parse(R"({"architectures": ["Gemma4ForCausalLM"], "vocab_size": 128, "hidden_size": 64,
    "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "hidden_size_per_layer_input": 0, "sliding_window": 5})");
  j["num_hidden_layers"] = layers;
  return j;
}

std::string error_of(const json& j) { return test::config_error(j); }

TEST(ModelConfigGemma4, PerLayerConfigAsSavedByTransformers) {
  // tests/golden's gemma4_text_fp32 config as save_pretrained writes it.
  json j = gemma4();
  j["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention", "full_attention"};
  j["per_layer_config"] = {{"1", {{"head_dim", 32}, {"num_key_value_heads", 1}}},
                           {"3", {{"head_dim", 32}, {"num_key_value_heads", 1}}}};
  j["attention_k_eq_v"] = true;
  const ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.layer_head_dim, (std::vector<int64_t>{16, 32, 16, 32}));
  EXPECT_EQ(c.layer_kv_heads, (std::vector<int64_t>{2, 1, 2, 1}));
  EXPECT_EQ(c.layer_k_eq_v, (std::vector<bool>{false, true, false, true}));
  EXPECT_EQ(c.layer_sliding, (std::vector<bool>{true, false, true, false}));
  EXPECT_EQ(c.at_layer(1).q_dim(), 128);
  EXPECT_EQ(c.at_layer(1).kv_dim(), 32);
  EXPECT_EQ(c.at_layer(2).kv_dim(), 32);
  EXPECT_EQ(c.widest_q_dim(), 128);
  EXPECT_EQ(c.widest_kv_dim(), 32);
  EXPECT_TRUE(c.tie_word_embeddings);  // Gemma4TextConfig's default
  EXPECT_EQ(*c.query_pre_attn_scalar, 1.0);  // Gemma4TextAttention.scaling = 1.0
  // Default rope_parameters: sliding {default, 1e4}, full {proportional 0.25, 1e6}.
  EXPECT_EQ(c.rope_of(0).type, RopeType::kDefault);
  EXPECT_EQ(c.rope_of(0).theta, 10000.0);
  EXPECT_EQ(c.rope_of(1).type, RopeType::kProportional);
  EXPECT_EQ(c.rope_of(1).theta, 1000000.0);
  EXPECT_EQ(c.rope_of(1).rope_proportion, 0.25);
  EXPECT_EQ(c.rope_of(1).rotary_dim(32), 32);  // proportional rotates over the whole head
}

TEST(ModelConfigGemma4, DefaultsLikeGemma4TextConfigPostInit) {
  // No layer_types: every 6th layer full, and the last one forced full; no per_layer_config: the
  // full layers take global_head_dim (default 512), and num_global_key_value_heads only with k_eq_v.
  json j = gemma4(8);
  j["num_global_key_value_heads"] = 1;
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.layer_sliding, (std::vector<bool>{true, true, true, true, true, false, true, false}));
  EXPECT_EQ(c.layer_head_dim, (std::vector<int64_t>{16, 16, 16, 16, 16, 512, 16, 512}));
  EXPECT_EQ(c.layer_kv_heads, (std::vector<int64_t>(8, 2)));  // no k_eq_v: the global KV heads unused
  EXPECT_TRUE(c.layer_k_eq_v.empty());
  j["attention_k_eq_v"] = true;
  j["global_head_dim"] = 64;
  c = parse_model_config(j, "c");
  EXPECT_EQ(c.layer_head_dim, (std::vector<int64_t>{16, 16, 16, 16, 16, 64, 16, 64}));
  EXPECT_EQ(c.layer_kv_heads, (std::vector<int64_t>{2, 2, 2, 2, 2, 1, 2, 1}));
  EXPECT_EQ(c.layer_k_eq_v, (std::vector<bool>{false, false, false, false, false, true, false, true}));
  // model_type alone resolves to the text model
  j.erase("architectures");
  j["model_type"] = "gemma4_text";
  EXPECT_EQ(parse_model_config(j, "c").architecture, "Gemma4ForCausalLM");
}

TEST(ModelConfigGemma4, KvSharedLayersReadTheLastEarlierLayerOfTheirType) {
  // Gemma4TextAttention: the last num_kv_shared_layers read the K/V of the last non-shared layer
  // of their type (store_full_length_kv); use_double_wide_mlp doubles their MLP (Gemma4TextMLP).
  json j = gemma4(6);
  j["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention", "sliding_attention",
                      "sliding_attention", "full_attention"};
  j["num_kv_shared_layers"] = 3;
  j["use_double_wide_mlp"] = true;
  const ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.layer_kv_source, (std::vector<int64_t>{-1, -1, -1, 2, 2, 1}));
  EXPECT_TRUE(c.kv_shared_by_later(1));
  EXPECT_TRUE(c.kv_shared_by_later(2));
  EXPECT_FALSE(c.kv_shared_by_later(0));
  EXPECT_EQ(c.layer_intermediate_size, (std::vector<int64_t>{96, 96, 96, 192, 192, 192}));
  EXPECT_EQ(c.at_layer(4).intermediate_size, 192);
  EXPECT_EQ(c.mlp_scratch_width(), 192);
}

TEST(ModelConfigGemma4, MultimodalWrapperReadsTextConfig) {
  // Gemma4ForConditionalGeneration: the text model's keys under text_config, its tensors under
  // model.language_model. (transformers 5.17's save_pretrained), the wrapper's tie flag.
  json text = gemma4();
  text["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention", "full_attention"};
  json mm = {{"architectures", {"Gemma4ForConditionalGeneration"}}, {"model_type", "gemma4"}, {"text_config", text},
             {"tie_word_embeddings", false}};
  const ModelConfig c = parse_model_config(mm, "c");
  EXPECT_EQ(c.architecture, "Gemma4ForConditionalGeneration");
  EXPECT_EQ(c.layer_prefix(1), "model.language_model.layers.1.");
  EXPECT_EQ(c.layer_head_dim, (std::vector<int64_t>{16, 512, 16, 512}));
  EXPECT_FALSE(c.tie_word_embeddings);
}

TEST(ModelConfigGemma4, ProportionalRopeFrequencies) {
  // _compute_proportional_rope_parameters: int(0.25 * 32 // 2) = 4 angles 1 / theta^(2i / 32) in
  // fp32, the other 12 zero (cos 1, sin 0), all / factor.
  RopeConfig r;
  r.type = RopeType::kProportional;
  r.theta = 1000000.0;
  r.rope_proportion = 0.25;
  r.factor = 2.0;
  const std::vector<float> inv = rope_inv_freq(r, 32, 64, 24);
  ASSERT_EQ(inv.size(), 16u);
  for (std::size_t i = 0; i < inv.size(); ++i) {
    const float want = i < 4 ? 1.0f / std::pow(1000000.0f, static_cast<float>(2 * i) / 32.0f) / 2.0f : 0.0f;
    EXPECT_FLOAT_EQ(inv[i], want) << i;
  }
}

TEST(ModelConfigGemma4, NamedRefusals) {
  json j = gemma4();
  // Gemma4TextConfig's default: per-layer input embeddings of 256 over a 262144-row table, which
  // must cover the vocabulary exactly (vLLM and transformers differ beyond it)
  j.erase("hidden_size_per_layer_input");
  EXPECT_NE(error_of(j).find("vocab_size_per_layer_input"), std::string::npos);
  j["vocab_size_per_layer_input"] = 128;
  EXPECT_EQ(parse_model_config(j, "c").per_layer_input_size, 256);
  j = gemma4();  // layers 0-2 slide, 3 is full: a shared last layer finds no earlier full layer
  j["num_kv_shared_layers"] = 1;
  EXPECT_NE(error_of(j).find("no earlier layer of its type"), std::string::npos);
  j = gemma4();
  j["enable_moe_block"] = true;  // without num_experts: vLLM 0.34 would build no MoE block
  EXPECT_NE(error_of(j).find("vLLM 0.34 by the second"), std::string::npos);
  j["num_experts"] = 4;
  j["top_k_experts"] = 2;
  j["moe_intermediate_size"] = 24;
  const ModelConfig moe = parse_model_config(j, "c");
  EXPECT_TRUE(moe.is_moe(0) && moe.is_moe(3));
  EXPECT_TRUE(moe.norm_topk_prob);
  EXPECT_EQ(moe.num_experts_per_tok, 2);
  j = gemma4();
  j["per_layer_config"] = {{"3", {{"intermediate_size", 8}}}};
  EXPECT_NE(error_of(j).find("only head_dim and num_key_value_heads"), std::string::npos);
  j = gemma4();
  j["rope_parameters"] = {{"sliding_attention", {{"rope_type", "default"}, {"partial_rotary_factor", 0.5}}},
                          {"full_attention", {{"rope_type", "proportional"}}}};
  EXPECT_NE(error_of(j).find("vLLM 0.34 would not"), std::string::npos);
  j = gemma4();
  j["attn_logit_softcapping"] = 50.0;
  EXPECT_NE(error_of(j).find("attn_logit_softcapping"), std::string::npos);
  j = gemma4();
  j["use_bidirectional_attention"] = "all";
  EXPECT_NE(error_of(j).find("causal"), std::string::npos);
  json mm = {{"architectures", {"Gemma4UnifiedForConditionalGeneration"}}, {"text_config", gemma4()}};
  EXPECT_NE(error_of(mm).find("Gemma4ForCausalLM"), std::string::npos);
}

}  // namespace
}  // namespace ctcal
