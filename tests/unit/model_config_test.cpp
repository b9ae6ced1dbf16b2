// config.json parsing: both RoPE spellings, defaults, and clear errors naming the field.
#include <cmath>

#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/model/model_config.h"
#include "ctcal/model/rope.h"
#include "config_error.h"

namespace ctcal {
namespace {

using nlohmann::json;

json base() {
  return json::parse(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2})");
}

std::string error_of(const json& j) { return test::config_error(j); }

TEST(ModelConfig, DefaultsAndDerived) {
  ModelConfig c = parse_model_config(base(), "config.json");
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.n_rep(), 2);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.rope.theta, 10000.0);
  EXPECT_EQ(c.rope.type, RopeType::kDefault);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.dtype.has_value());
}

TEST(ModelConfig, BothRopeSpellings) {
  json classic = base();
  classic["rope_theta"] = 500000.0;
  classic["rope_scaling"] = {{"type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                             {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  classic["torch_dtype"] = "bfloat16";
  json v5 = base();
  v5["rope_parameters"] = {{"rope_type", "llama3"}, {"rope_theta", 500000.0}, {"factor", 8.0},
                           {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                           {"original_max_position_embeddings", 8192}};
  v5["dtype"] = "bfloat16";
  ModelConfig a = parse_model_config(classic, "c"), b = parse_model_config(v5, "c");
  EXPECT_EQ(a.rope.type, RopeType::kLlama3);
  EXPECT_EQ(b.rope.type, RopeType::kLlama3);
  EXPECT_EQ(rope_inv_freq(a, 10), rope_inv_freq(b, 10));
  EXPECT_EQ(a.dtype, DType::kBF16);
  EXPECT_EQ(b.dtype, DType::kBF16);
}

TEST(ModelConfig, Errors) {
  json j = base();
  j["architectures"] = {"GPT2LMHeadModel"};
  EXPECT_NE(error_of(j).find("'GPT2LMHeadModel' is not supported"), std::string::npos);
  j = base();
  j["num_key_value_heads"] = 3;
  EXPECT_NE(error_of(j).find("must be divisible by num_key_value_heads"), std::string::npos);
  j = base();
  j.erase("hidden_size");
  EXPECT_NE(error_of(j).find("'hidden_size': missing"), std::string::npos);
  j = base();
  j["num_hidden_layers"] = -2;
  EXPECT_NE(error_of(j).find("positive integer"), std::string::npos);
  j = base();
  j["rope_scaling"] = {{"rope_type", "mrope"}, {"factor", 4.0}};
  EXPECT_NE(error_of(j).find("rope type 'mrope' is not supported"), std::string::npos);
  j = base();
  j["rope_scaling"] = {{"rope_type", "linear"}};
  EXPECT_NE(error_of(j).find("rope_scaling.factor"), std::string::npos);
}

TEST(Rope, LinearDividesAndDynamicGrowsBaseOnlyPastContext) {
  json j = base();
  j["max_position_embeddings"] = 16;
  ModelConfig d = parse_model_config(j, "c");
  const auto def = rope_inv_freq(d, 8);
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  const auto lin = rope_inv_freq(parse_model_config(j, "c"), 8);
  for (std::size_t i = 0; i < def.size(); ++i) EXPECT_FLOAT_EQ(lin[i], def[i] / 2);
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  ModelConfig dyn = parse_model_config(j, "c");
  EXPECT_EQ(rope_inv_freq(dyn, 16), def);   // within the trained context: unchanged
  EXPECT_LT(rope_inv_freq(dyn, 32)[1], def[1]);  // longer: larger base, lower frequencies
}

// Families (model/family.h): the per-layer sliding window and RoPE each transformers config's
// __post_init__ derives, biases, and the refusal that lists what is supported.
TEST(ModelConfigFamilies, UnsupportedArchitectureListsTheSupportedOnes) {
  json j = base();
  j["architectures"] = {"DeepseekV3ForCausalLM"};
  const std::string e = error_of(j);
  EXPECT_NE(e.find("'DeepseekV3ForCausalLM' is not supported"), std::string::npos) << e;
  for (const char* a : {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                        "Gemma3ForCausalLM", "Gemma3ForConditionalGeneration", "Phi3ForCausalLM",
                        "Qwen3MoeForCausalLM", "MixtralForCausalLM", "GptOssForCausalLM"})
    EXPECT_NE(e.find(a), std::string::npos) << a;
}

TEST(ModelConfigFamilies, Qwen2WindowNeedsUseSlidingWindowAndStartsAtMaxWindowLayers) {
  json j = base();
  j["architectures"] = {"Qwen2ForCausalLM"};
  j["num_hidden_layers"] = 4;
  j["sliding_window"] = 8;
  j["max_window_layers"] = 2;
  ModelConfig off = parse_model_config(j, "c");
  EXPECT_FALSE(off.sliding_window.has_value());  // use_sliding_window defaults to false
  EXPECT_TRUE(off.qkv_bias);
  EXPECT_FALSE(off.o_bias);
  EXPECT_EQ(off.family->attention_class, "Qwen2Attention");
  j["use_sliding_window"] = true;
  ModelConfig on = parse_model_config(j, "c");
  EXPECT_EQ(on.layer_sliding, (std::vector<bool>{false, false, true, true}));
  EXPECT_FALSE(on.window(1).has_value());
  EXPECT_EQ(on.window(3), 8);
  j["layer_types"] = {"sliding_attention", "full_attention", "full_attention", "sliding_attention"};
  EXPECT_EQ(parse_model_config(j, "c").layer_sliding, (std::vector<bool>{true, false, false, true}));
}

TEST(ModelConfigFamilies, MistralWindowsEveryLayerWhateverLayerTypesSay) {
  json j = base();
  j["architectures"] = {"MistralForCausalLM"};
  j["sliding_window"] = 4;
  j["layer_types"] = {"full_attention", "full_attention"};  // transformers warns and ignores it
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.window(0), 4);
  EXPECT_EQ(c.window(1), 4);
}

TEST(ModelConfigFamilies, Gemma3BothRopeSpellingsAndPattern) {
  json j = base();
  j["architectures"] = {"Gemma3ForCausalLM"};
  j["num_hidden_layers"] = 4;
  j["sliding_window"] = 16;
  j["sliding_window_pattern"] = 2;
  j["rope_theta"] = 1000000.0;
  j["rope_local_base_freq"] = 10000.0;
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
  j["query_pre_attn_scalar"] = 24;
  ModelConfig classic = parse_model_config(j, "c");
  EXPECT_EQ(classic.layer_sliding, (std::vector<bool>{true, false, true, false}));
  EXPECT_EQ(classic.rope_of(1).theta, 1000000.0);
  EXPECT_EQ(classic.rope_of(1).type, RopeType::kLinear);
  EXPECT_EQ(classic.rope_of(0).theta, 10000.0);
  EXPECT_EQ(classic.rope_of(0).type, RopeType::kDefault);
  EXPECT_TRUE(classic.tie_word_embeddings);  // Gemma 3's default
  EXPECT_EQ(*classic.query_pre_attn_scalar, 24.0);
  json v5 = j;
  for (const char* k : {"rope_theta", "rope_local_base_freq", "rope_scaling", "sliding_window_pattern"}) v5.erase(k);
  v5["layer_types"] = {"sliding_attention", "full_attention", "sliding_attention", "full_attention"};
  v5["rope_parameters"] = {{"full_attention", {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 1000000.0}}},
                           {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 10000.0}}}};
  ModelConfig b = parse_model_config(v5, "c");
  EXPECT_EQ(b.layer_sliding, classic.layer_sliding);
  EXPECT_EQ(rope_inv_freq(b.rope_of(1), b.head_dim, b.max_position_embeddings, 8),
            rope_inv_freq(classic.rope_of(1), classic.head_dim, classic.max_position_embeddings, 8));
  EXPECT_EQ(rope_inv_freq(b.rope_of(0), b.head_dim, b.max_position_embeddings, 8),
            rope_inv_freq(classic.rope_of(0), classic.head_dim, classic.max_position_embeddings, 8));
}

TEST(ModelConfigFamilies, Gemma3WrapperReadsTextConfigAndNamesItsModules) {
  json text = base();
  text.erase("architectures");
  json j = {{"architectures", {"Gemma3ForConditionalGeneration"}}, {"text_config", text}, {"dtype", "bfloat16"}};
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.dtype, DType::kBF16);
  EXPECT_EQ(c.attention_module(3), "language_model.model.layers.3.self_attn");
  EXPECT_EQ(c.family->attention_class, "Gemma3Attention");
  j.erase("text_config");
  EXPECT_NE(error_of(j).find("text_config"), std::string::npos);
}

TEST(ModelConfigFamilies, Phi3LongropeInBothSpellingsWithPartialRotary) {
  json j = base();
  j["architectures"] = {"Phi3ForCausalLM"};
  j["max_position_embeddings"] = 64;
  j["original_max_position_embeddings"] = 16;
  j["partial_rotary_factor"] = 0.5;  // head_dim 16 -> 8 rotated dims, 4 factors
  j["rope_scaling"] = {{"type", "su"}, {"short_factor", {1.0, 1.5, 2.0, 3.0}}, {"long_factor", {1.0, 2.0, 4.0, 8.0}}};
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.rope.type, RopeType::kLongRope);
  EXPECT_EQ(c.rope.rotary_dim(c.head_dim), 8);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 16);
  EXPECT_DOUBLE_EQ(c.rope.attention_factor, std::sqrt(1.0 + std::log(4.0) / std::log(16.0)));
  EXPECT_EQ(c.family->attention_class, "Phi3Attention");
  // Short factors up to the original context, long ones past it (per sample length).
  const auto short_inv = rope_inv_freq(c, 16), long_inv = rope_inv_freq(c, 17);
  ASSERT_EQ(short_inv.size(), 4u);
  EXPECT_FLOAT_EQ(short_inv[1] * 1.5f, long_inv[1] * 2.0f);
  const RopeTable t = make_rope_table(c, 4);
  EXPECT_EQ(t.half, 4);
  EXPECT_FLOAT_EQ(t.cos[0], static_cast<float>(c.rope.attention_factor));  // cos(0) * attention factor
  json wrong = j;
  wrong["rope_scaling"]["short_factor"] = {1.0, 2.0};
  EXPECT_NE(error_of(wrong).find("4 entries"), std::string::npos) << error_of(wrong);
}

TEST(ModelConfigFamilies, Qwen3MoeSparseLayersAndWindow) {
  json j = base();
  j["architectures"] = {"Qwen3MoeForCausalLM"};
  j["num_hidden_layers"] = 6;
  j["num_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  j["moe_intermediate_size"] = 32;
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = {3};
  j["use_sliding_window"] = true;
  j["sliding_window"] = 16;
  j["max_window_layers"] = 4;  // not used by Qwen3-MoE: its attention windows every layer
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.layer_moe, (std::vector<bool>{false, true, false, false, false, true}));
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.moe_intermediate_size, 32);
  for (int64_t l = 0; l < 6; ++l) EXPECT_EQ(c.window(l), 16);
  j["mlp_only_layers"] = {9};
  EXPECT_NE(error_of(j).find("mlp_only_layers"), std::string::npos);
}

// Qwen3_5TextConfig: layer_types, else every full_attention_interval-th layer full (default 4);
// partial_rotary_factor 0.25 when absent; the DeltaNet's linear_* sizes; the wrapper under text_config.
TEST(ModelConfigFamilies, Qwen3_5LayerTypesIntervalAndDefaults) {
  json j = base();
  j["architectures"] = {"Qwen3_5ForCausalLM"};
  j["num_hidden_layers"] = 8;
  j["head_dim"] = 32;
  j["linear_num_key_heads"] = 2;
  j["linear_num_value_heads"] = 4;
  j["linear_key_head_dim"] = 16;
  j["linear_value_head_dim"] = 24;
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.layer_linear_attention, (std::vector<bool>{true, true, true, false, true, true, true, false}));
  EXPECT_FALSE(c.has_kv_cache(0));
  EXPECT_TRUE(c.has_kv_cache(3));
  EXPECT_EQ(c.rope.partial_rotary_factor, 0.25);
  EXPECT_EQ(c.rope.rotary_dim(c.head_dim), 8);
  EXPECT_EQ(c.q_proj_rows(), 2 * c.q_dim());
  EXPECT_EQ(c.linear_attention.conv_dim(), 2 * 32 + 96);
  EXPECT_EQ(c.linear_attention.conv_kernel, 4);
  for (int64_t l = 0; l < 8; ++l) EXPECT_EQ(c.window(l), std::nullopt);
  j["full_attention_interval"] = 2;
  EXPECT_EQ(parse_model_config(j, "c").layer_linear_attention,
            (std::vector<bool>{true, false, true, false, true, false, true, false}));
  j["layer_types"] = {"full_attention", "linear_attention", "full_attention", "full_attention",
                      "linear_attention", "linear_attention", "full_attention", "linear_attention"};
  EXPECT_EQ(parse_model_config(j, "c").layer_linear_attention,
            (std::vector<bool>{false, true, false, false, true, true, false, true}));
  j["layer_types"][0] = "sliding_attention";
  EXPECT_NE(error_of(j).find("layer_types"), std::string::npos);
  j.erase("layer_types");
  j["linear_num_value_heads"] = 3;
  EXPECT_NE(error_of(j).find("linear_num_value_heads"), std::string::npos);
  j["linear_num_value_heads"] = 4;
  j["rope_parameters"] = {{"rope_type", "linear"}, {"rope_theta", 10000.0}, {"factor", 2.0}};
  EXPECT_NE(error_of(j).find("rope_type"), std::string::npos);
  json mm = {{"architectures", {"Qwen3_5ForConditionalGeneration"}}, {"text_config", base()}};
  mm["text_config"]["num_hidden_layers"] = 4;
  const ModelConfig w = parse_model_config(mm, "c");
  EXPECT_EQ(w.weight_prefix, "model.language_model.");
  EXPECT_EQ(w.layer_linear_attention, (std::vector<bool>{true, true, true, false}));
}

// Qwen3.5-MoE (Qwen3_5MoeTextConfig): every layer sparse whatever decoder_sparse_step /
// mlp_only_layers say (the config class deletes them), top-k always renormalised, no dense
// intermediate_size, a shared expert (default width 512); the wrapper reads text_config.
TEST(ModelConfigFamilies, Qwen3_5MoeEveryLayerSparseWithASharedExpert) {
  json j = base();
  j.erase("intermediate_size");
  j["architectures"] = {"Qwen3_5MoeForCausalLM"};
  j["num_hidden_layers"] = 4;
  j["num_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  j["moe_intermediate_size"] = 16;
  j["norm_topk_prob"] = false;  // not read: Qwen3VLMoeTextTopKRouter always renormalises
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = {0};
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.family->attention_class, "Qwen3_5MoeAttention");
  EXPECT_EQ(c.layer_moe, (std::vector<bool>{true, true, true, true}));
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.intermediate_size, 0);
  EXPECT_EQ(c.shared_expert_intermediate_size, 512);
  EXPECT_EQ(c.mlp_scratch_width(), 512);
  EXPECT_EQ(c.layer_linear_attention, (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ(c.rope.partial_rotary_factor, 0.25);
  EXPECT_EQ(c.q_proj_rows(), 2 * c.q_dim());
  j["shared_expert_intermediate_size"] = 24;
  EXPECT_EQ(parse_model_config(j, "c").shared_expert_intermediate_size, 24);
  j["shared_expert_intermediate_size"] = 0;
  EXPECT_NE(error_of(j).find("shared_expert_intermediate_size"), std::string::npos);
  j["shared_expert_intermediate_size"] = 24;
  json mm = {{"architectures", {"Qwen3_5MoeForConditionalGeneration"}}, {"text_config", j}};
  mm["text_config"].erase("architectures");
  const ModelConfig w = parse_model_config(mm, "c");
  EXPECT_EQ(w.weight_prefix, "model.language_model.");
  EXPECT_EQ(w.attention_module(3), "model.language_model.layers.3.self_attn");
  EXPECT_EQ(w.layer_moe, (std::vector<bool>{true, true, true, true}));
  // by model_type when architectures is absent
  json t = j;
  t.erase("architectures");
  t["model_type"] = "qwen3_5_moe_text";
  EXPECT_EQ(parse_model_config(t, "c").architecture, "Qwen3_5MoeForCausalLM");
}

// Qwen3-Next (Qwen3NextConfig): dense Qwen3NextMLP layers by mlp_only_layers / decoder_sparse_step,
// norm_topk_prob true unless the config says otherwise, Qwen3.5's hybrid layers and gated attention,
// the DeltaNet's fused in-projections; RoPE other than the default is refused by name.
// MoE sizes config.json leaves out take each config class's defaults (transformers 5.17, read with
// Qwen3NextConfig() / Qwen3_5MoeTextConfig() / Qwen3MoeConfig() in the peer venv: 512 / 10 / 512,
// 256 / 8 / 512, 128 / 8 / 768); a wrong one routes silently differently.
TEST(ModelConfigFamilies, MoeSizeDefaultsFollowEachConfigClass) {
  for (auto [arch, experts, top_k, inter] : {std::tuple{"Qwen3NextForCausalLM", 512, 10, 512},
                                            {"Qwen3_5MoeForCausalLM", 256, 8, 512},
                                            {"Qwen3MoeForCausalLM", 128, 8, 768}}) {
    json j = base();
    j["architectures"] = {arch};
    j["num_hidden_layers"] = 4;
    j["shared_expert_intermediate_size"] = 24;
    ModelConfig c = parse_model_config(j, "c");
    EXPECT_EQ(c.num_experts, experts) << arch;
    EXPECT_EQ(c.num_experts_per_tok, top_k) << arch;
    EXPECT_EQ(c.moe_intermediate_size, inter) << arch;
  }
}

TEST(ModelConfigFamilies, Qwen3NextDenseLayersAndNormTopkDefault) {
  json j = base();
  j["architectures"] = {"Qwen3NextForCausalLM"};
  j["num_hidden_layers"] = 4;
  j["num_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  j["moe_intermediate_size"] = 16;
  j["shared_expert_intermediate_size"] = 24;
  j["mlp_only_layers"] = {1};
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.family->attention_class, "Qwen3NextAttention");
  EXPECT_TRUE(c.family->linear_attention.fused());
  EXPECT_EQ(c.layer_moe, (std::vector<bool>{true, false, true, true}));
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.intermediate_size, 96);
  EXPECT_EQ(c.mlp_scratch_width(), 96);
  EXPECT_EQ(c.layer_linear_attention, (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ(c.q_proj_rows(), 2 * c.q_dim());
  j["norm_topk_prob"] = false;
  j["decoder_sparse_step"] = 2;
  j.erase("mlp_only_layers");
  c = parse_model_config(j, "c");
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.layer_moe, (std::vector<bool>{false, true, false, true}));
  j.erase("intermediate_size");  // Qwen3-Next's dense layers need it
  EXPECT_NE(error_of(j).find("intermediate_size"), std::string::npos);
  j["intermediate_size"] = 96;
  j["rope_parameters"] = {{"rope_type", "linear"}, {"rope_theta", 10000.0}, {"factor", 2.0}};
  EXPECT_NE(error_of(j).find("linear RoPE is not supported for Qwen3NextForCausalLM"), std::string::npos);
  // The hub's spelling (Qwen3-Next-80B-A3B's config.json): rope_theta, rope_scaling null and
  // partial_rotary_factor at the top, full_attention_interval, torch_dtype.
  j.erase("rope_parameters");
  j["rope_theta"] = 10000000.0;
  j["rope_scaling"] = nullptr;
  j["partial_rotary_factor"] = 0.5;
  j["full_attention_interval"] = 2;
  j["torch_dtype"] = "bfloat16";
  c = parse_model_config(j, "c");
  EXPECT_EQ(c.rope.theta, 10000000.0);
  EXPECT_EQ(c.rope.type, RopeType::kDefault);
  EXPECT_EQ(c.rope.rotary_dim(c.head_dim), c.head_dim / 2);
  EXPECT_EQ(c.layer_linear_attention, (std::vector<bool>{true, false, true, false}));
  EXPECT_EQ(c.dtype, DType::kBF16);
}

TEST(ModelConfigFamilies, MixtralEveryLayerSparseAndRenormalised) {
  json j = base();
  j["architectures"] = {"MixtralForCausalLM"};
  j["num_local_experts"] = 4;
  j["num_experts_per_tok"] = 2;
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.num_experts, 4);
  EXPECT_EQ(c.moe_intermediate_size, c.intermediate_size);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_EQ(c.layer_moe, (std::vector<bool>{true, true}));
  EXPECT_EQ(c.family->attention_class, "MixtralAttention");
  j["num_experts_per_tok"] = 5;
  EXPECT_NE(error_of(j).find("num_experts_per_tok"), std::string::npos);
}

// GptOssConfig's defaults (attention_bias true, eps 1e-5, alternating windows, YaRN with theta
// 150000) and YaRN frequencies as transformers 5.17's _compute_yarn_parameters gives them
// (printed by the peer venv for these two configs).
TEST(ModelConfigFamilies, GptOssDefaultsAndYarn) {
  json j = base();
  j["architectures"] = {"GptOssForCausalLM"};
  j["head_dim"] = 16;
  j["num_local_experts"] = 4;
  j["sliding_window"] = 8;
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.family->attention_class, "GptOssAttention");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.o_bias);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.layer_sliding, (std::vector<bool>{true, false}));
  EXPECT_EQ(c.num_experts_per_tok, 4);
  EXPECT_EQ(c.moe_intermediate_size, 96);
  EXPECT_EQ(c.layer_moe, (std::vector<bool>{true, true}));
  ASSERT_EQ(c.rope.type, RopeType::kYarn);
  EXPECT_EQ(c.rope.theta, 150000.0);
  EXPECT_DOUBLE_EQ(c.rope.attention_factor, 1.3465735902799727);
  const std::vector<float> want = {1.0f, 0.22541800141334534f, 0.05081327259540558f, 0.006794959306716919f,
                                   0.0004564839182421565f, 1.818833698052913e-05f, 4.099978468730114e-06f,
                                   9.242089618055616e-07f};
  std::vector<float> got = rope_inv_freq(c, 16);
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << i;
  // truncate defaulting to true, mscale / mscale_all_dim
  j["rope_parameters"] = json::parse(R"({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "beta_fast": 8.0,
    "beta_slow": 1.0, "original_max_position_embeddings": 64, "mscale": 2.0, "mscale_all_dim": 1.0})");
  c = parse_model_config(j, "c");
  EXPECT_DOUBLE_EQ(c.rope.attention_factor, 1.121751143713058);
  const std::vector<float> want2 = {1.0f, 0.23717081546783447f, 0.04999999701976776f, 0.007905694656074047f,
                                    0.0024999999441206455f, 0.0007905694656074047f, 0.0002500000118743628f,
                                    7.905694656074047e-05f};
  got = rope_inv_freq(c, 16);
  for (std::size_t i = 0; i < want2.size(); ++i) EXPECT_FLOAT_EQ(got[i], want2[i]) << i;
  j["swiglu_limit"] = 5.0;
  EXPECT_NE(error_of(j).find("swiglu_limit"), std::string::npos);
}

TEST(ModelConfigFamilies, Gemma3RefusesAttentionSoftcapping) {
  json j = base();
  j["architectures"] = {"Gemma3ForCausalLM"};
  j["attn_logit_softcapping"] = 50.0;
  EXPECT_NE(error_of(j).find("attn_logit_softcapping"), std::string::npos);
}

// NemotronHConfig (transformers 5.17): the layer count is the block types' length (num_hidden_layers
// ignored); layers_block_type, legacy names, or the hub's hybrid_override_pattern; the class's
// defaults for what is absent (8 KV heads, head_dim 128, layer_norm_epsilon 1e-5, Mamba2 128 heads
// x 64, 8 groups, state 128, kernel 4, chunk 128, dt >= time_step_min 0.001, no projection bias,
// conv bias); attention without RoPE or biases; MoE blocks refused by name.
TEST(ModelConfigFamilies, NemotronHBlockTypesAndDefaults) {
  json j = {{"architectures", {"NemotronHForCausalLM"}}, {"vocab_size", 100}, {"hidden_size", 64},
            {"intermediate_size", 96}, {"num_attention_heads", 16}, {"num_hidden_layers", 99},
            {"layers_block_type", {"linear_attention", "full_attention", "mlp", "mamba", "attention"}},
            {"attention_bias", true}};
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.weight_prefix, "backbone.");
  EXPECT_EQ(c.top_tensor("embed_tokens.weight"), "backbone.embeddings.weight");
  EXPECT_EQ(c.top_tensor("norm.weight"), "backbone.norm_f.weight");
  EXPECT_EQ(c.attention_module(1), "backbone.layers.1.mixer");
  EXPECT_EQ(c.num_hidden_layers, 5);
  EXPECT_EQ(c.layer_mamba, (std::vector<bool>{true, false, false, true, false}));
  EXPECT_EQ(c.layer_mlp_block, (std::vector<bool>{false, false, true, false, false}));
  for (int64_t l : {0, 2, 3}) EXPECT_FALSE(c.has_kv_cache(l)) << l;
  for (int64_t l : {1, 4}) EXPECT_TRUE(c.has_kv_cache(l)) << l;
  EXPECT_EQ(c.layer_kind(0), "Mamba2");
  EXPECT_EQ(c.layer_kind(2), "MLP");
  EXPECT_FALSE(c.has_mlp_block(1));
  EXPECT_TRUE(c.has_mlp_block(2));
  EXPECT_FALSE(c.has_mixer(2));
  EXPECT_FALSE(c.rope_on);
  EXPECT_FALSE(c.qkv_bias);  // NemotronHAttention: bias=False whatever attention_bias says
  EXPECT_FALSE(c.o_bias);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.mamba.num_heads, 128);
  EXPECT_EQ(c.mamba.head_dim, 64);
  EXPECT_EQ(c.mamba.state_size, 128);
  EXPECT_EQ(c.mamba.n_groups, 8);
  EXPECT_EQ(c.mamba.conv_kernel, 4);
  EXPECT_EQ(c.mamba.chunk_size, 128);
  EXPECT_EQ(c.mamba.norm_group_size, 128 * 64 / 8);
  EXPECT_EQ(c.mamba.time_step_min, 0.001);
  EXPECT_TRUE(std::isinf(c.mamba.time_step_max));
  EXPECT_FALSE(c.mamba_proj_bias);
  EXPECT_TRUE(c.mamba_conv_bias);
  j.erase("layers_block_type");
  j["hybrid_override_pattern"] = "M-*";
  j["mamba_d_conv"] = 3;  // legacy keys, popped by __post_init__
  j["mamba_chunk_size"] = 16;
  j["layer_norm_epsilon"] = 1e-6;
  c = parse_model_config(j, "c");
  EXPECT_EQ(c.num_hidden_layers, 3);
  EXPECT_EQ(c.layer_mamba, (std::vector<bool>{true, false, false}));
  EXPECT_EQ(c.layer_mlp_block, (std::vector<bool>{false, true, false}));
  EXPECT_EQ(c.mamba.conv_kernel, 3);
  EXPECT_EQ(c.mamba.chunk_size, 16);
  EXPECT_EQ(c.mamba.norm_eps, 1e-6);
  // A MoE block ('E'): NemotronHConfig's MoE defaults; no mixer, no KV cache.
  j["hybrid_override_pattern"] = "M*E";
  c = parse_model_config(j, "c");
  EXPECT_EQ(c.layer_moe, (std::vector<bool>{false, false, true}));
  EXPECT_EQ(c.layer_mlp_block, (std::vector<bool>{false, false, true}));
  EXPECT_FALSE(c.has_kv_cache(2));
  EXPECT_EQ(c.layer_kind(2), "MoE");
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.moe_intermediate_size, 7688);
  EXPECT_EQ(c.shared_expert_intermediate_size, 7688);
  EXPECT_EQ(c.n_group, 1);
  EXPECT_TRUE(c.norm_topk_prob);
  j["n_routed_experts"] = 6;
  j["n_group"] = 4;  // 6 experts in 4 groups
  EXPECT_NE(error_of(j).find("n_group"), std::string::npos);
  j.erase("n_group");
  j.erase("n_routed_experts");
  j["moe_latent_size"] = 32;  // NemotronHMoE's latent projections: refused by name
  EXPECT_NE(error_of(j).find("moe_latent_size"), std::string::npos);
  j["moe_latent_size"] = nullptr;
  j["n_shared_experts"] = 2;  // transformers and vLLM size the shared expert differently
  EXPECT_NE(error_of(j).find("n_shared_experts"), std::string::npos);
  j.erase("n_shared_experts");
  j.erase("moe_latent_size");
  j["hybrid_override_pattern"] = "M*X";
  EXPECT_NE(error_of(j).find("hybrid_override_pattern"), std::string::npos);
  j.erase("hybrid_override_pattern");  // the class default: Mamba2, MoE, attention, MLP
  EXPECT_EQ(parse_model_config(j, "c").layer_moe, (std::vector<bool>{false, true, false, false}));
  j["hybrid_override_pattern"] = "M*";
  j["mlp_hidden_act"] = "silu";
  EXPECT_NE(error_of(j).find("mlp_hidden_act"), std::string::npos);
  j.erase("mlp_hidden_act");
  j["mamba_hidden_act"] = "gelu";
  EXPECT_NE(error_of(j).find("mamba_hidden_act"), std::string::npos);
}

// GraniteMoeHybridConfig: layer_types (default all Mamba2; legacy names), Mamba2 from the mamba_*
// keys (I = mamba_expand * hidden, mamba_d_head "auto" = I / heads, defaults 128 heads, 1 group,
// state 256, kernel 4, chunk 256, conv bias, no projection bias, time_step_limit (0, inf) written as
// {"__float__": "Infinity"}), experts of width intermediate_size plus shared_mlp of width
// shared_intermediate_size (num_local_experts 0: shared_mlp alone), the multipliers, RoPE only
// when position_embedding_type is "rope".
TEST(ModelConfigFamilies, GraniteMoeHybridMambaMultipliersAndMlps) {
  json j = base();
  j["architectures"] = {"GraniteMoeHybridForCausalLM"};
  j["num_hidden_layers"] = 3;
  ModelConfig c = parse_model_config(j, "c");
  EXPECT_EQ(c.weight_prefix, "model.");
  EXPECT_EQ(c.layer_mamba, (std::vector<bool>{true, true, true}));
  EXPECT_FALSE(c.rope_on);
  EXPECT_EQ(c.mamba.num_heads, 128);
  EXPECT_EQ(c.mamba.head_dim, 1);  // "auto": 2 * 64 / 128
  EXPECT_EQ(c.mamba.state_size, 256);
  EXPECT_EQ(c.mamba.n_groups, 1);
  EXPECT_EQ(c.mamba.chunk_size, 256);
  EXPECT_EQ(c.mamba.norm_group_size, 128);
  EXPECT_EQ(c.mamba.time_step_min, 0.0);
  EXPECT_TRUE(std::isinf(c.mamba.time_step_max));
  EXPECT_TRUE(c.mamba_conv_bias);
  EXPECT_FALSE(c.mamba_proj_bias);
  EXPECT_EQ(c.num_experts, 8);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.moe_intermediate_size, 96);  // intermediate_size: the experts' width
  EXPECT_EQ(c.intermediate_size, 1024);    // shared_intermediate_size: shared_mlp's
  EXPECT_EQ(c.layer_moe, (std::vector<bool>{true, true, true}));
  EXPECT_EQ(*c.attention_multiplier, 1.0);
  EXPECT_EQ(c.embedding_multiplier, 1.0);
  j["layer_types"] = {"mamba", "full_attention", "attention"};
  j["mamba_n_heads"] = 8;
  j["mamba_d_head"] = "auto";
  j["time_step_limit"] = {0.01, {{"__float__", "Infinity"}}};
  j["num_local_experts"] = 0;
  j["shared_intermediate_size"] = 48;
  j["position_embedding_type"] = "rope";
  j["attention_multiplier"] = 0.125;
  j["embedding_multiplier"] = 12.0;
  j["residual_multiplier"] = 0.22;
  j["logits_scaling"] = 6.0;
  c = parse_model_config(j, "c");
  EXPECT_EQ(c.layer_mamba, (std::vector<bool>{true, false, false}));
  EXPECT_TRUE(c.has_kv_cache(1));
  EXPECT_EQ(c.mamba.head_dim, 16);
  EXPECT_EQ(c.mamba.time_step_min, 0.01);
  EXPECT_TRUE(std::isinf(c.mamba.time_step_max));
  EXPECT_EQ(c.layer_moe, (std::vector<bool>{false, false, false}));
  EXPECT_EQ(c.intermediate_size, 48);
  EXPECT_TRUE(c.rope_on);
  EXPECT_EQ(*c.attention_multiplier, 0.125);
  EXPECT_EQ(c.embedding_multiplier, 12.0);
  EXPECT_EQ(c.residual_multiplier, 0.22);
  EXPECT_EQ(c.logits_scaling, 6.0);
  j["mamba_d_head"] = 15;
  EXPECT_NE(error_of(j).find("mamba_d_head"), std::string::npos);
  j["mamba_d_head"] = 16;
  j["position_embedding_type"] = "alibi";
  EXPECT_NE(error_of(j).find("position_embedding_type"), std::string::npos);
  j["position_embedding_type"] = "rope";
  j["layer_types"][1] = "sliding_attention";
  EXPECT_NE(error_of(j).find("layer_types"), std::string::npos);
  j["layer_types"][1] = "full_attention";
  j["rope_parameters"] = {{"rope_type", "linear"}, {"rope_theta", 10000.0}, {"factor", 2.0}};
  EXPECT_NE(error_of(j).find("rope_type"), std::string::npos);
}

}  // namespace
}  // namespace ctcal
