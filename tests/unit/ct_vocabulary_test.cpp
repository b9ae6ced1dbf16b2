// The compressed-tensors vocabulary (lib/include/ctcal/ct/): target matching, group resolution
// with `ignore`, the attention-module rule, R3/R2 detection and tensor names. The matching tables
// are compressed-tensors' own answers (tests/golden/make_ct_match_golden.py, run in the peer venv).
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ctcal/ct/attention.h"
#include "ctcal/ct/groups.h"
#include "ctcal/ct/match.h"
#include "ctcal/ct/quantization_config.h"
#include "ctcal/ct/tensor_names.h"
#include "ctcal/ct/transforms.h"

namespace ctcal {
namespace {

using nlohmann::json;

const json& golden() {
  static const json g = [] {
    std::ifstream in(std::string(CTCAL_SOURCE_DIR) + "/tests/golden/data/ct/ct_match.json");
    return json::parse(in);
  }();
  return g;
}

std::vector<std::string> strings(const json& j) { return j.get<std::vector<std::string>>(); }

TEST(CtMatch, MatchNameAsCompressedTensors) {
  ASSERT_FALSE(golden()["match_name"].empty());
  for (const auto& c : golden()["match_name"])
    EXPECT_EQ(ct::match_name(c["name"], c["target"]), c["match"].get<bool>()) << c.dump();
}

TEST(CtMatch, IsMatchAsCompressedTensors) {
  ASSERT_FALSE(golden()["is_match"].empty());
  for (const auto& c : golden()["is_match"])
    EXPECT_EQ(ct::is_match({c["name"], c["class"]}, strings(c["targets"]), strings(c["ignore"])),
              c["match"].get<bool>())
        << c.dump();
}

TEST(CtMatch, InvalidPatternMatchesNothing) {
  // Python's re raises on it; compressed-tensors would fail to load such a config at all.
  EXPECT_FALSE(ct::match_name("model.layers.0.self_attn", "re:["));
}

// Today's copies disagreed on `Linear` in `ignore`: compressed-tensors matches ignore entries by
// class too, so it skips every Linear layer.
TEST(CtMatch, LinearInIgnoreSkipsEveryLinear) {
  EXPECT_FALSE(ct::is_match({"model.layers.0.mlp.down_proj", ct::kLinearClass}, {"Linear"}, {"Linear"}));
  EXPECT_FALSE(ct::resolve_group({"model.layers.0.mlp.down_proj", ct::kLinearClass}, {{"Linear"}}, {"Linear"}));
}

TEST(CtGroups, ResolveGroupAsCompressedTensors) {
  ASSERT_FALSE(golden()["group"].empty());
  for (const auto& c : golden()["group"]) {
    std::vector<std::vector<std::string>> groups;
    for (const auto& g : c["groups"]) groups.push_back(strings(g));
    const auto got = ct::resolve_group({c["name"], c["class"]}, groups, strings(c["ignore"]));
    if (c["group"].is_null())
      EXPECT_FALSE(got.has_value()) << c.dump();
    else
      EXPECT_EQ(got, std::optional<std::size_t>(c["group"].get<std::size_t>())) << c.dump();
  }
}

TEST(CtAttention, NarrowMatchAsCompressedTensors) {
  ASSERT_FALSE(golden()["narrow"].empty());
  for (const auto& c : golden()["narrow"])
    EXPECT_EQ(ct::targets_attention(c["target"], {c["module"], c["class"]}), c["narrow"].get<bool>()) << c.dump();
}

// Today's copies disagreed: some took any target containing `self_attn` for the attention module.
TEST(CtAttention, ProjectionsAreNotTheAttentionModule) {
  EXPECT_TRUE(ct::targets_attention("re:.*self_attn$"));
  EXPECT_TRUE(ct::targets_attention(ct::kKvCacheTarget));
  EXPECT_TRUE(ct::targets_attention(ct::kSelfAttnTarget));
  EXPECT_FALSE(ct::targets_attention("re:.*self_attn"));  // matches self_attn.q_proj too
  EXPECT_FALSE(ct::targets_attention("re:.*self_attn.q_proj$"));
  EXPECT_FALSE(ct::targets_attention("re:.*self_attn.*_proj$"));
  EXPECT_FALSE(ct::any_targets_attention({"re:.*self_attn.(q|k|v)_proj$", "Linear"}));
}

TEST(CtAttention, ClassNames) {
  EXPECT_TRUE(ct::is_attention_class_name("LlamaAttention"));
  EXPECT_TRUE(ct::is_attention_class_name("Qwen3MoeAttention"));
  EXPECT_TRUE(ct::is_attention_class_name("Qwen3_5Attention"));  // Python class names take underscores
  EXPECT_FALSE(ct::is_attention_class_name("Attention"));
  EXPECT_FALSE(ct::is_attention_class_name("re:.*Attention"));
  // Without a model: any ...Attention class; with one: its own class only.
  EXPECT_TRUE(ct::targets_attention("Qwen3Attention"));
  EXPECT_FALSE(ct::targets_attention("Qwen3Attention", {"model.layers.0.self_attn", "LlamaAttention"}));
  EXPECT_TRUE(ct::targets_attention("LlamaAttention", {"model.layers.0.self_attn", "LlamaAttention"}));
  // A family whose layers sit under another prefix (Gemma 3 multimodal).
  EXPECT_TRUE(ct::targets_attention("re:.*self_attn$", {"model.language_model.layers.0.self_attn", "Gemma3Attention"}));
  EXPECT_TRUE(ct::all_target_attention({"LlamaAttention", "re:.*self_attn$"}));
  EXPECT_FALSE(ct::all_target_attention({"LlamaAttention", "Linear"}));
  EXPECT_FALSE(ct::all_target_attention({}));
}

TEST(CtAttention, VllmDropsOnlyOneAttentionTarget) {
  EXPECT_TRUE(ct::vllm_drops_group({"LlamaAttention"}));
  EXPECT_FALSE(ct::vllm_drops_group({"re:.*self_attn$"}));
  EXPECT_FALSE(ct::vllm_drops_group({"LlamaAttention", "re:.*self_attn$"}));
  EXPECT_FALSE(ct::vllm_drops_group({}));
}

TEST(CtTransforms, RotationByLocations) {
  EXPECT_EQ(ct::rotation_of({"q_attn", "k_cache"}), ct::Rotation::kR3);
  EXPECT_EQ(ct::rotation_of({"weight_output", "weight_input"}), ct::Rotation::kR2);
  EXPECT_EQ(ct::rotation_of({"q_attn"}), ct::Rotation::kOther);
  EXPECT_EQ(ct::rotation_of({"input", "weight_input"}), ct::Rotation::kOther);
  const json r3 = json::parse(R"({"apply": [{"location": "q_attn", "targets": ["re:.*self_attn$"]},
                                            {"location": "k_cache", "targets": ["re:.*self_attn$"]}, 7]})");
  EXPECT_EQ(ct::apply_locations(r3), (std::set<std::string>{"q_attn", "k_cache"}));
  EXPECT_TRUE(ct::apply_locations(json::array()).empty());
  EXPECT_TRUE(ct::is_attention_location("k_cache"));
  EXPECT_FALSE(ct::is_attention_location("weight_output"));
}

// A bare "v_proj" is an exact module name to compressed-tensors: it matches no module.
TEST(CtTransforms, ProjectionTargets) {
  EXPECT_TRUE(ct::targets_projection("re:.*v_proj$", "v_proj"));
  EXPECT_TRUE(ct::targets_projection("re:.*o_proj$", "o_proj"));
  EXPECT_FALSE(ct::targets_projection("v_proj", "v_proj"));
  EXPECT_FALSE(ct::targets_projection("re:.*(v|o)_proj$", "v_proj"));
  EXPECT_FALSE(ct::targets_projection("Linear", "v_proj"));
}

TEST(CtTensorNames, Names) {
  EXPECT_EQ(ct::scale_name("model.layers.3.self_attn", "k"), "model.layers.3.self_attn.k_scale");
  EXPECT_EQ(ct::scale_name("model.layers.3.self_attn", "q"), "model.layers.3.self_attn.q_scale");
  EXPECT_EQ(ct::zero_point_name("model.layers.3.self_attn", "v"), "model.layers.3.self_attn.v_zero_point");
  EXPECT_EQ(ct::weight_scale_name("model.layers.0.mlp.down_proj"), "model.layers.0.mlp.down_proj.weight_scale");
  EXPECT_EQ(ct::weight_zero_point_name("lm_head"), "lm_head.weight_zero_point");
  EXPECT_EQ(ct::input_scale_name("model.layers.0.mlp.down_proj"), "model.layers.0.mlp.down_proj.input_scale");
  EXPECT_EQ(ct::transform_weight_name("model.layers.0.self_attn", "R3", "q_attn"),
            "model.layers.0.self_attn.R3_q_attn.weight");
}

TEST(CtQuantizationConfig, ReadsOneStruct) {
  const json qc = json::parse(R"({
    "quant_method": "compressed-tensors", "ignore": ["lm_head", 3],
    "kv_cache_scheme": {"num_bits": 8, "type": "float"},
    "config_groups": {
      "attention": {"targets": ["LlamaAttention"], "weights": null, "input_activations": {"num_bits": 8}},
      "group_0": {"targets": ["Linear", 5], "weights": {"num_bits": 8, "type": "float"}},
      "odd": "not an object"},
    "transform_config": {"config_groups": {
      "R2": {"type": "hadamard", "apply": [{"location": "weight_output"}, {"location": "weight_input"}]},
      "R3": {"type": "hadamard", "head_dim": 64, "randomize": false,
             "apply": [{"location": "q_attn"}, {"location": "k_cache"}]}}}})");
  const ct::QuantizationConfig c = ct::read_quantization_config(qc);
  EXPECT_EQ(c.quant_method, "compressed-tensors");
  EXPECT_EQ(c.ignore, std::vector<std::string>{"lm_head"});
  EXPECT_EQ(c.kv_cache_scheme["num_bits"], 8);
  ASSERT_EQ(c.config_groups.size(), 3u);
  EXPECT_EQ(c.group_targets(), (std::vector<std::vector<std::string>>{{"LlamaAttention"}, {"Linear"}, {}}));
  ASSERT_NE(c.attention_group(), nullptr);
  EXPECT_EQ(c.attention_group()->name, "attention");
  EXPECT_EQ(c.attention_group("model.layers.0.self_attn", "Qwen3Attention"), nullptr);
  ASSERT_NE(c.r3(), nullptr);
  EXPECT_EQ(c.r3()->name, "R3");
  EXPECT_EQ(c.r3()->head_dim, std::optional<int64_t>(64));
  EXPECT_EQ(c.transforms.at(0).rotation, ct::Rotation::kR2);
  EXPECT_FALSE(c.transforms.at(0).head_dim.has_value());
  // The FP8 group quantizes q_proj; the attention group does not.
  EXPECT_EQ(ct::resolve_group({"model.layers.0.self_attn.q_proj", ct::kLinearClass}, c.group_targets(), c.ignore),
            std::optional<std::size_t>(1));
  EXPECT_TRUE(ct::read_quantization_config(json("text")).config_groups.empty());
}

}  // namespace
}  // namespace ctcal
