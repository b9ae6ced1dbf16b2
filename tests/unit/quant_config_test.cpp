// quantization_config and transform_config exactly as compressed-tensors 0.18 dumps them
// (reference §2.3 and §6, literal layouts copied from there), and the merge into an existing
// compressed-tensors config.
#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/pipeline/quant_config.h"
#include "ctcal/pipeline/plan.h"
#include "ctcal/recipe/recipe.h"

namespace ctcal {
namespace {

using nlohmann::json;

ModelConfig llama(int64_t head_dim) {
  return parse_model_config(json::parse(fmt::format(R"({{"architectures": ["LlamaForCausalLM"], "vocab_size": 10,
    "hidden_size": {}, "intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": {}}})", 4 * head_dim, head_dim)), "c");
}

TEST(QuantConfig, Fp8KvOnlyMatchesReference23) {
  Recipe r = load_recipe(std::string(CTCAL_SOURCE_DIR) + "/recipes/fp8_kv_per_tensor.yaml");
  json qc = build_quantization_config(json::object(), make_plan(r, llama(8), DType::kBF16), "c");
  qc.erase("provider");  // ctcal's addition (SPEC §6)
  const json want = json::parse(R"({
    "config_groups": {}, "format": "dense", "global_compression_ratio": null, "ignore": [],
    "kv_cache_scheme": {"actorder": null, "block_structure": null, "dynamic": false, "group_size": null,
      "num_bits": 8, "observer": "static_minmax", "observer_kwargs": {}, "scale_dtype": null,
      "strategy": "tensor", "symmetric": true, "type": "float", "zp_dtype": null},
    "quant_method": "compressed-tensors", "quantization_status": "compressed", "sparsity_config": {},
    "transform_config": {}, "version": "0.18.0"})");
  EXPECT_EQ(qc, want) << qc.dump(2);
}

TEST(QuantConfig, R3TransformConfigMatchesReference6) {
  Recipe r = load_recipe(std::string(CTCAL_SOURCE_DIR) + "/recipes/r3_fp8_kv.yaml");
  json tc = transform_config_json(make_plan(r, llama(128), DType::kBF16));
  const json want = json::parse(R"({"config_groups": {"R3": {
    "apply": [
      {"ignore": [], "inverse": false, "location": "q_attn", "targets": ["re:.*self_attn$"]},
      {"ignore": [], "inverse": false, "location": "k_cache", "targets": ["re:.*self_attn$"]}],
    "head_dim": 128, "precision": "torch.float64", "randomize": false, "requires_grad": false,
    "type": "hadamard"}}})");
  EXPECT_EQ(tc, want) << tc.dump(2);
  // ... and the strict parser takes it back as an explicit transform_config (round trip).
  Recipe again = parse_recipe(fmt::format("s_stage:\n  m_modifiers:\n    SpinQuantModifier:\n      rotations: [R3]\n"
                                          "      transform_config: {}\n    QuantizationModifier: {{kv_cache_scheme: {{type: float}}}}\n",
                                          tc.dump()), "rt.yaml");
  EXPECT_EQ(transform_config_json(make_plan(again, llama(128), DType::kBF16)), want);
}

TEST(QuantConfig, AttentionGroupAndMergeIntoExistingConfig) {
  Recipe r = load_recipe(std::string(CTCAL_SOURCE_DIR) + "/recipes/r3_fp8_attention.yaml");
  json existing = {{"quantization_config", {{"quant_method", "compressed-tensors"}, {"format", "float-quantized"},
                                            {"config_groups", {{"group_0", {{"targets", {"Linear"}}}}}},
                                            {"ignore", {"lm_head"}}}}};
  json qc = build_quantization_config(existing, make_plan(r, llama(8), DType::kBF16), "c");
  EXPECT_EQ(qc["format"], "float-quantized");        // kept
  EXPECT_EQ(qc["ignore"], json({"lm_head"}));        // kept
  EXPECT_TRUE(qc["config_groups"].contains("group_0"));
  const json& g = qc["config_groups"]["attention"];
  EXPECT_EQ(g["targets"], json({"LlamaAttention"}));
  EXPECT_TRUE(g["weights"].is_null() && g["output_activations"].is_null() && g["format"].is_null());
  EXPECT_EQ(g["input_activations"], qc["kv_cache_scheme"]);
  json gptq = {{"quantization_config", {{"quant_method", "gptq"}}}};
  EXPECT_THROW(build_quantization_config(gptq, make_plan(r, llama(8), DType::kBF16), "c"), InputError);
}

// A checkpoint that already carries attention scales: what describes its weights stays; its
// attention group, kv_cache_scheme and attention modules in `ignore` become the new plan's.
TEST(QuantConfig, ExistingAttentionDescriptionIsReplaced) {
  Recipe r = load_recipe(std::string(CTCAL_SOURCE_DIR) + "/recipes/fp8_kv_per_head.yaml");
  CalibrationPlan plan = make_plan(r, llama(8), DType::kBF16);
  plan.kv_skip_layers = {0};
  const json fp8 = {{"num_bits", 8}, {"type", "float"}, {"strategy", "tensor"}};
  json existing = {{"quantization_config",
                    {{"quant_method", "compressed-tensors"},
                     {"format", "float-quantized"},
                     {"config_groups",
                      {{"group_0", {{"targets", {"Linear"}}, {"weights", fp8}}},
                       {"old_attention", {{"targets", {"re:.*self_attn$"}}, {"weights", nullptr}, {"input_activations", fp8}}}}},
                     {"ignore", {"lm_head", "model.layers.1.self_attn"}},
                     {"kv_cache_scheme", fp8}}}};
  json qc = build_quantization_config(existing, plan, "c");
  EXPECT_EQ(qc["config_groups"], json({{"group_0", {{"targets", {"Linear"}}, {"weights", fp8}}}})) << qc.dump(2);
  EXPECT_EQ(qc["ignore"], json({"lm_head", "model.layers.0.self_attn"}));
  EXPECT_EQ(qc["kv_cache_scheme"]["strategy"], "attn_head");
  EXPECT_EQ(qc["format"], "float-quantized");
  // An attention recipe over it: its own group, whatever the old one was called.
  Recipe attention = load_recipe(std::string(CTCAL_SOURCE_DIR) + "/tests/peer/recipes/fp8_attention.yaml");
  qc = build_quantization_config(existing, make_plan(attention, llama(8), DType::kBF16), "c");
  EXPECT_EQ(qc["config_groups"].size(), 2u);
  EXPECT_EQ(qc["config_groups"]["attention"]["targets"], json({"LlamaAttention"}));
  EXPECT_EQ(qc["ignore"], json({"lm_head"}));
}

// R3 rotates queries and keys only at serving time: new K scales observed on this checkpoint's
// unrotated keys would not fit, so a checkpoint with such a transform_config is refused.
TEST(QuantConfig, OnlineRotationInTheInputIsRefused) {
  const json r3 = transform_config_json(
      make_plan(load_recipe(std::string(CTCAL_SOURCE_DIR) + "/recipes/r3_fp8_kv.yaml"), llama(8), DType::kBF16));
  json existing = {{"quantization_config", {{"quant_method", "compressed-tensors"}, {"transform_config", r3}}}};
  const CalibrationPlan kv = make_plan(load_recipe(std::string(CTCAL_SOURCE_DIR) + "/recipes/fp8_kv_per_head.yaml"),
                                       llama(8), DType::kBF16);
  try {
    build_quantization_config(existing, kv, "c");
    FAIL() << "accepted an R3 checkpoint";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("transform_config group 'R3'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ctcal
