// config.json parsing: both RoPE spellings, defaults, and clear errors naming the field.
#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/model/llama_config.h"
#include "ctcal/model/rope.h"

namespace ctcal {
namespace {

using nlohmann::json;

json base() {
  return json::parse(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 64,
    "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2})");
}

std::string error_of(const json& j) {
  try {
    parse_llama_config(j, "config.json");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(LlamaConfig, DefaultsAndDerived) {
  LlamaConfig c = parse_llama_config(base(), "config.json");
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.n_rep(), 2);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.rope.theta, 10000.0);
  EXPECT_EQ(c.rope.type, RopeType::kDefault);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.dtype.has_value());
}

TEST(LlamaConfig, BothRopeSpellings) {
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
  LlamaConfig a = parse_llama_config(classic, "c"), b = parse_llama_config(v5, "c");
  EXPECT_EQ(a.rope.type, RopeType::kLlama3);
  EXPECT_EQ(b.rope.type, RopeType::kLlama3);
  EXPECT_EQ(rope_inv_freq(a, 10), rope_inv_freq(b, 10));
  EXPECT_EQ(a.dtype, DType::kBF16);
  EXPECT_EQ(b.dtype, DType::kBF16);
}

TEST(LlamaConfig, Errors) {
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
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_NE(error_of(j).find("rope type 'yarn' is not supported"), std::string::npos);
  j = base();
  j["rope_scaling"] = {{"rope_type", "linear"}};
  EXPECT_NE(error_of(j).find("rope_scaling.factor"), std::string::npos);
}

TEST(Rope, LinearDividesAndDynamicGrowsBaseOnlyPastContext) {
  json j = base();
  j["max_position_embeddings"] = 16;
  LlamaConfig d = parse_llama_config(j, "c");
  const auto def = rope_inv_freq(d, 8);
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  const auto lin = rope_inv_freq(parse_llama_config(j, "c"), 8);
  for (std::size_t i = 0; i < def.size(); ++i) EXPECT_FLOAT_EQ(lin[i], def[i] / 2);
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  LlamaConfig dyn = parse_llama_config(j, "c");
  EXPECT_EQ(rope_inv_freq(dyn, 16), def);   // within the trained context: unchanged
  EXPECT_LT(rope_inv_freq(dyn, 32)[1], def[1]);  // longer: larger base, lower frequencies
}

}  // namespace
}  // namespace ctcal
