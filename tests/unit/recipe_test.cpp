// Recipe grammar (llm-compressor layout), strictness (unknown keys with YAML path and line), and
// the shipped recipes.
#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/recipe/recipe.h"
#include "ctcal/recipe/recipe_emit.h"
#include "test_util.h"

namespace ctcal {
namespace {

std::string error_of(const std::string& yaml) {
  try {
    parse_recipe(yaml, "r.yaml");
  } catch (const RecipeError& e) {
    return e.what();
  }
  return "";
}

TEST(Recipe, ShippedRecipesParse) {
  for (const auto& e : std::filesystem::directory_iterator(test::source_dir() / "recipes")) {
    SCOPED_TRACE(e.path().string());
    Recipe r = load_recipe(e.path());
    EXPECT_TRUE(r.kv_args().has_value());
  }
}

TEST(Recipe, KvOnly) {
  Recipe r = parse_recipe(R"(
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      kv_cache_scheme: {num_bits: 8, type: FLOAT, strategy: Attn_Head}
)", "r.yaml");
  ASSERT_EQ(r.modifiers.size(), 1u);
  EXPECT_EQ(r.modifiers[0].stage, "quant");
  EXPECT_EQ(r.modifiers[0].group, "quant");
  auto kv = *r.kv_args();
  EXPECT_EQ(kv.type, QuantType::kFloat);             // enum values case-folded
  EXPECT_EQ(kv.strategy, Strategy::kAttnHead);
  EXPECT_EQ(kv.observer, "static_minmax");           // filled in, and written
  EXPECT_FALSE(r.query_args().has_value());
}

TEST(Recipe, AttentionGroupImpliesKv) {
  Recipe r = parse_recipe(R"(
s_stage:
  m_modifiers:
    SpinQuantModifier: {rotations: [r3]}
    QuantizationModifier:
      config_groups:
        attention:
          targets: ["re:.*self_attn$"]
          input_activations: {num_bits: 8, type: float, strategy: tensor}
)", "r.yaml");
  EXPECT_TRUE(r.query_args().has_value());
  EXPECT_EQ(quant_args_to_json(*r.kv_args()), quant_args_to_json(*r.query_args()));
  EXPECT_TRUE(r.rotation_before_quantization());
  EXPECT_EQ(r.spinquant()->rotations, std::vector<std::string>{"R3"});
}

TEST(Recipe, UnknownKeyNamesPathLineAndValidKeys) {
  const std::string e = error_of(R"(
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      kv_cache_scheme:
        num_bits: 8
        typo_key: 1
)");
  EXPECT_NE(e.find("quant_stage.quant_modifiers.QuantizationModifier.kv_cache_scheme.typo_key"), std::string::npos) << e;
  EXPECT_NE(e.find("line 7"), std::string::npos) << e;
  EXPECT_NE(e.find("num_bits"), std::string::npos) << e;  // lists the valid keys
}

TEST(Recipe, SyntaxErrorNamesLine) {
  const std::string e = error_of("quant_stage:\n  quant_modifiers:\n    QuantizationModifier: {a: [1, 2\n");
  EXPECT_NE(e.find("YAML syntax error at line"), std::string::npos) << e;
}

TEST(Recipe, CollectsAllErrors) {
  const std::string e = error_of(R"(
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      kv_cache_scheme: {num_bits: eight, type: double, strategy: tensor}
      scheme: W4A16
)");
  EXPECT_NE(e.find("3 errors"), std::string::npos) << e;
  EXPECT_NE(e.find("expected an integer"), std::string::npos) << e;
  EXPECT_NE(e.find("expected 'int' or 'float'"), std::string::npos) << e;
  EXPECT_NE(e.find("preset scheme 'W4A16' is not supported"), std::string::npos) << e;
}

TEST(Recipe, InvalidCombinations) {
  EXPECT_NE(error_of(R"(
a_stage:
  b_modifiers:
    QuantizationModifier:
      kv_cache_scheme: {num_bits: 8, type: float, strategy: channel}
)").find("not supported for the KV cache"), std::string::npos);
  EXPECT_NE(error_of(R"(
a_stage:
  b_modifiers:
    QuantizationModifier:
      kv_cache_scheme: {num_bits: 8, type: int, strategy: token}
)").find("requires dynamic"), std::string::npos);
  EXPECT_NE(error_of(R"(
a_stage:
  b_modifiers:
    QuantizationModifier:
      kv_cache_scheme: {num_bits: 8, type: float, group_size: 64}
)").find("KV cache"), std::string::npos);
  EXPECT_NE(error_of(R"(
a_stage:
  b_modifiers:
    GPTQModifier: {}
)").find("'GPTQModifier' is not supported"), std::string::npos);
  EXPECT_NE(error_of(R"(
a_stage:
  b_modifiers:
    SpinQuantModifier: {rotations: [R1, R3]}
    QuantizationModifier: {kv_cache_scheme: {type: float}}
)").find("R1 is not supported yet"), std::string::npos);
  EXPECT_NE(error_of(R"(
a_stage:
  b_modifiers:
    SpinQuantModifier: {rotations: [R3], randomize: true}
    QuantizationModifier: {kv_cache_scheme: {type: float}}
)").find("randomize: true is not supported"), std::string::npos);
  EXPECT_NE(error_of(R"(
a_stage:
  b_modifiers:
    QuantizationModifier:
      kv_cache_scheme: {type: float}
      config_groups:
        g: {targets: [Linear], weights: {num_bits: 4}}
)").find("FP8 only"), std::string::npos);
  EXPECT_NE(error_of("typo_stge: {}\n").find("unknown top-level key"), std::string::npos);
}

TEST(Recipe, CtcalBlock) {
  Recipe r = parse_recipe(R"(
ctcal: {num_samples: 16, max_seq_length: 128, seed: 7, shuffle: false, model: m, dataset: d.jsonl}
q_stage:
  q_modifiers:
    QuantizationModifier: {kv_cache_scheme: {type: float}}
)", "r.yaml");
  EXPECT_EQ(r.ctcal.num_samples, 16);
  EXPECT_EQ(r.ctcal.seed, 7u);
  EXPECT_EQ(r.ctcal.shuffle, false);
  EXPECT_NE(error_of("ctcal: {num_sample: 3}\n").find("ctcal.num_sample"), std::string::npos);
}

TEST(Recipe, CtcalPropagate) {
  // ctcal.propagate: the calibration forward's Linear weights (calibrate --propagate).
  Recipe r = parse_recipe("ctcal: {propagate: quantized}\nq_stage:\n  q_modifiers:\n"
                          "    QuantizationModifier: {kv_cache_scheme: {type: float}}\n", "r.yaml");
  EXPECT_EQ(r.ctcal.propagate, std::optional<std::string>("quantized"));
  EXPECT_NE(error_of("ctcal: {propagate: sideways}\n").find("expected unquantized or quantized"), std::string::npos);
}

TEST(Recipe, EffectiveRecipeRoundTrips) {
  Recipe r = load_recipe(test::source_dir() / "recipes/r3_fp8_attention.yaml");
  const std::string yaml = effective_recipe_yaml(r, nullptr, nlohmann::json::object());
  Recipe again = parse_recipe(yaml, "effective.yaml");  // re-parsed by the strict parser
  EXPECT_EQ(quant_args_to_json(*again.query_args()), quant_args_to_json(*r.query_args()));
  EXPECT_EQ(again.modifiers.size(), r.modifiers.size());
  EXPECT_EQ(again.modifiers[0].type, "SpinQuantModifier");  // order kept
}

// llm-compressor's llama3_fp8_kv_example.py recipe, as shipped in recipes/.
TEST(Recipe, Fp8LinearGroupWithKv) {
  Recipe r = load_recipe(test::source_dir() / "recipes/fp8_w8a8_fp8_kv.yaml");
  const auto* q = r.quantization();
  ASSERT_EQ(q->linear_groups.size(), 1u);
  const LinearGroup& g = q->linear_groups[0];
  EXPECT_EQ(g.name, "group_0");
  EXPECT_EQ(g.targets, std::vector<std::string>{"Linear"});
  EXPECT_EQ(q->ignore, std::vector<std::string>{"lm_head"});
  // Weights: compressed-tensors' default observer; static inputs: ctcal's static_minmax.
  EXPECT_EQ(g.weights.observer, "memoryless_minmax");
  ASSERT_TRUE(g.input_activations);
  EXPECT_EQ(g.input_activations->observer, "static_minmax");
  EXPECT_TRUE(r.kv_args().has_value());
  EXPECT_FALSE(r.query_args().has_value());
  const auto j = linear_group_json(g);
  EXPECT_EQ(j["weights"]["strategy"], "tensor");
  EXPECT_TRUE(j["output_activations"].is_null());
  EXPECT_TRUE(j["format"].is_null());
  // The effective recipe re-parses with the strict parser.
  Recipe again = parse_recipe(effective_recipe_yaml(r, nullptr, nlohmann::json::object()), "effective.yaml");
  ASSERT_EQ(again.quantization()->linear_groups.size(), 1u);
  EXPECT_EQ(linear_group_json(again.quantization()->linear_groups[0]), j);
}

// Presets expand exactly as compressed-tensors' PRESET_SCHEMES (quant_scheme.py), dumped as
// compressed-tensors 0.18 writes QuantizationArgs.
TEST(Recipe, Fp8PresetsExpandAsCompressedTensors) {
  auto group_of = [](const std::string& scheme) {
    Recipe r = parse_recipe(fmt::format(R"(
s_stage:
  m_modifiers:
    QuantizationModifier:
      targets: Linear
      scheme: {}
      ignore: [lm_head]
      kv_cache_scheme: {{num_bits: 8, type: float, strategy: attn_head}}
)", scheme), "r.yaml");
    EXPECT_EQ(r.quantization()->linear_groups.size(), 1u);
    return linear_group_json(r.quantization()->linear_groups.at(0));
  };
  using nlohmann::json;
  auto args = [](const char* strategy, bool dynamic, json group_size, json block, json observer) {
    return json{{"num_bits", 8}, {"type", "float"}, {"symmetric", true}, {"group_size", group_size},
                {"strategy", strategy}, {"block_structure", block}, {"dynamic", dynamic},
                {"actorder", nullptr}, {"scale_dtype", nullptr}, {"zp_dtype", nullptr},
                {"observer", observer}, {"observer_kwargs", json::object()}};
  };
  const json fp8 = group_of("FP8");
  EXPECT_EQ(fp8["targets"], json::array({"Linear"}));
  EXPECT_EQ(fp8["weights"], args("tensor", false, nullptr, nullptr, "memoryless_minmax"));
  EXPECT_EQ(fp8["input_activations"], args("tensor", false, nullptr, nullptr, "static_minmax"));
  const json dyn = group_of("fp8_dynamic");  // names are case-insensitive
  EXPECT_EQ(dyn["weights"], args("channel", false, nullptr, nullptr, "memoryless_minmax"));
  EXPECT_EQ(dyn["input_activations"], args("token", true, nullptr, nullptr, nullptr));
  const json block = group_of("FP8_BLOCK");
  EXPECT_EQ(block["weights"], args("block", false, nullptr, json::array({128, 128}), "memoryless_minmax"));
  EXPECT_EQ(block["input_activations"], args("group", true, 128, nullptr, nullptr));
  EXPECT_EQ(group_of("{FP8: [\"re:.*mlp.*\"]}")["targets"], json::array({"re:.*mlp.*"}));
}

TEST(Recipe, LinearQuantizationRefusals) {
  auto err = [](const std::string& body) {
    return error_of("s_stage:\n  m_modifiers:\n    QuantizationModifier:\n      kv_cache_scheme: {type: float}\n" + body);
  };
  EXPECT_NE(err("      scheme: W4A16\n").find("preset scheme 'W4A16' is not supported"), std::string::npos);
  EXPECT_NE(err("      scheme: FP9\n").find("unknown preset scheme 'FP9'"), std::string::npos);
  EXPECT_NE(err("      scheme: FP8\n      config_groups: {g: {targets: [Linear], weights: {type: float}}}\n")
                .find("cannot both be set"), std::string::npos);
  EXPECT_NE(err("      config_groups: {g: {targets: [Linear], weights: {type: float, strategy: group, group_size: 64}}}\n")
                .find("strategy 'group' is not supported"), std::string::npos);
  EXPECT_NE(err("      config_groups: {g: {targets: [Linear], weights: {type: float}, input_activations: {type: float, strategy: token, dynamic: false}}}\n")
                .find("static token quantization"), std::string::npos);
  EXPECT_NE(err("      config_groups: {g: {targets: [Linear], input_activations: {type: float}}}\n")
                .find("required for a group targeting Linear"), std::string::npos);
  EXPECT_NE(error_of("s_stage:\n  m_modifiers:\n    GPTQModifier: {}\n").find("QuantizationModifier that has only the kv_cache_scheme"),
            std::string::npos);
}

}  // namespace
}  // namespace ctcal
