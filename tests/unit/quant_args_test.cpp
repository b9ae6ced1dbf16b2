// QuantizationArgs inference and validation rules of compressed-tensors 0.18 (reference §2.1)
// and its JSON dump.
#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/quant/quant_args.h"

namespace ctcal {
namespace {

QuantArgs fin(QuantArgs a) {
  finalize_quant_args(&a, "where");
  return a;
}

void expect_invalid(QuantArgs a, const std::string& needle) {
  try {
    finalize_quant_args(&a, "where");
    FAIL() << "accepted; expected error with '" << needle << "'";
  } catch (const RecipeError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(QuantArgs, StrategyInferredFromGroupSize) {
  EXPECT_EQ(fin({}).strategy, Strategy::kTensor);
  QuantArgs g;
  g.group_size = 128;
  EXPECT_EQ(fin(g).strategy, Strategy::kGroup);
  QuantArgs c;
  c.group_size = -1;
  EXPECT_EQ(fin(c).strategy, Strategy::kChannel);
}

TEST(QuantArgs, Rules) {
  QuantArgs a;
  a.strategy = Strategy::kToken;
  expect_invalid(a, "requires dynamic");
  a = {};
  a.strategy = Strategy::kGroup;
  expect_invalid(a, "positive group_size");
  a = {};
  a.strategy = Strategy::kTensor;
  a.group_size = 64;
  expect_invalid(a, "only valid with strategy 'group'");
  a = {};
  a.strategy = Strategy::kBlock;
  expect_invalid(a, "requires block_structure");
  a = {};
  a.block_structure = std::array<int64_t, 2>{128, 128};
  expect_invalid(a, "only valid with strategy 'block'");
  a = {};
  a.actorder = "group";
  expect_invalid(a, "actorder 'group'");
  a = {};
  a.strategy = Strategy::kAttnHead;
  a.dynamic = Dynamic::kTrue;
  expect_invalid(a, "cannot be dynamic");
  a = {};
  a.observer = "histogram";
  expect_invalid(a, "not supported");
  a = {};
  a.observer = "minmax";
  a.observer_kwargs = {{"maxshrink", 0.1}};
  expect_invalid(a, "observer_kwargs.maxshrink");
}

TEST(QuantArgs, ObserverDefaultsToStaticMinmaxAndDynamicDropsIt) {
  EXPECT_EQ(fin({}).observer, "static_minmax");  // ctcal's explicit choice (SPEC §2)
  QuantArgs d;
  d.dynamic = Dynamic::kTrue;
  d.observer = "minmax";
  EXPECT_FALSE(fin(d).observer.has_value());
}

TEST(QuantArgs, ZpDtypeInference) {
  QuantArgs f;
  f.type = QuantType::kFloat;
  EXPECT_EQ(fin(f).zp_dtype, DType::kF8E4M3);
  EXPECT_EQ(fin({}).zp_dtype, DType::kI8);
  QuantArgs i16;
  i16.num_bits = 16;
  EXPECT_EQ(fin(i16).zp_dtype, DType::kI16);
}

TEST(QuantArgs, JsonDumpMatchesCompressedTensors) {
  QuantArgs a;
  a.type = QuantType::kFloat;
  a.strategy = Strategy::kTensor;
  auto j = quant_args_to_json(fin(a));
  const nlohmann::json want = nlohmann::json::parse(R"({
    "actorder": null, "block_structure": null, "dynamic": false, "group_size": null,
    "num_bits": 8, "observer": "static_minmax", "observer_kwargs": {},
    "scale_dtype": null, "strategy": "tensor", "symmetric": true, "type": "float", "zp_dtype": null})");
  EXPECT_EQ(j, want);
  QuantArgs asym;
  asym.symmetric = false;
  asym.scale_dtype = DType::kBF16;
  j = quant_args_to_json(fin(asym));
  EXPECT_EQ(j["zp_dtype"], "torch.int8");
  EXPECT_EQ(j["scale_dtype"], "torch.bfloat16");
}

TEST(QuantArgs, AttentionChecks) {
  QuantArgs a;
  a.group_size = -1;
  EXPECT_THROW(check_attention_args(fin(a), "w"), RecipeError);  // channel
  QuantArgs f4;
  f4.type = QuantType::kFloat;
  f4.num_bits = 4;
  EXPECT_THROW(check_attention_args(fin(f4), "w"), RecipeError);
  QuantArgs ok;
  ok.type = QuantType::kFloat;
  ok.strategy = Strategy::kAttnHead;
  EXPECT_NO_THROW(check_attention_args(fin(ok), "w"));
}

}  // namespace
}  // namespace ctcal
