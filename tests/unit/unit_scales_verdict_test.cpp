// compare_with_unit_scales: eval's verdict names a winner only when the paired-bootstrap interval
// leaves zero out, never from one sample, and says what is wrong with a document it cannot read.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "ctcal/error.h"
#include "ctcal/eval/unit_scales_verdict.h"
#include "ctcal/report/verdict_words.h"

namespace ctcal {
namespace {

using nlohmann::json;

// An evaluate_runs entry: per-sample KL and the token-weighted mean the `kl` column holds.
json run(const std::vector<double>& sample_kl, const std::vector<double>& tokens) {
  double s = 0, t = 0;
  for (std::size_t i = 0; i < tokens.size(); ++i) s += sample_kl[i] * tokens[i], t += tokens[i];
  return {{"kl", s / t}, {"sample_kl", sample_kl}};
}

TEST(UnitScalesVerdict, NamesTheRunWithLowerKlOnlyBeyondTheNoise) {
  const std::vector<double> tokens(20, 50);
  std::vector<double> noisy, shifted, base;
  for (int i = 0; i < 20; ++i) {
    base.push_back(0.03 + 0.01 * (i % 3));
    noisy.push_back(base.back() + (i % 2 ? 0.002 : -0.002));  // differences +-0.002 around 0
    shifted.push_back(base.back() - 0.004);                  // 0.004 lower on every sample
  }
  json v = compare_with_unit_scales(run(noisy, tokens), run(base, tokens), tokens);
  EXPECT_EQ(v["wins"], "no_significant_difference");
  EXPECT_FALSE(v["significant"].get<bool>());
  EXPECT_LE(v["kl_diff_ci95"][0].get<double>(), 0);
  EXPECT_GE(v["kl_diff_ci95"][1].get<double>(), 0);

  v = compare_with_unit_scales(run(shifted, tokens), run(base, tokens), tokens);
  EXPECT_EQ(v["wins"], "calibrated");
  EXPECT_TRUE(v["significant"].get<bool>());
  EXPECT_NEAR(v["kl_diff"].get<double>(), -0.004, 1e-12);
  v = compare_with_unit_scales(run(base, tokens), run(shifted, tokens), tokens);
  EXPECT_EQ(v["wins"], "unit_scales");
  EXPECT_EQ(verdict_words("unit_scales"), "scale 1.0 wins");
  EXPECT_EQ(v["kl_diff_bootstrap"]["resamples"], 2000);
  EXPECT_EQ(v["kl_diff_bootstrap"]["samples"], 20);
}

TEST(UnitScalesVerdict, NoIntervalAndNoWinnerFromOneSample) {
  // One sample resamples only to itself: a point "interval" would call any gap significant.
  const json v = compare_with_unit_scales(run({0.01}, {40}), run({0.05}, {40}), json::array({40}));
  EXPECT_TRUE(v["kl_diff_ci95"].is_null());
  EXPECT_FALSE(v["significant"].get<bool>());
  EXPECT_EQ(v["wins"], "no_significant_difference");
  EXPECT_NE(kl_diff_words(v).find("no interval from 1 sample"), std::string::npos) << kl_diff_words(v);
}

TEST(UnitScalesVerdict, NonFiniteKlGivesNoWinner) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  json a = {{"kl", nan}, {"sample_kl", {0.01, nan}}};
  const json v = compare_with_unit_scales(a, run({0.01, 0.02}, {5, 5}), json::array({5, 5}));
  EXPECT_TRUE(v["kl_diff_ci95"].is_null());
  EXPECT_EQ(v["wins"], "no_significant_difference");
}

TEST(UnitScalesVerdict, RefusesADocumentWithoutPerSampleKl) {
  try {
    compare_with_unit_scales(json{{"kl", 0.1}}, run({0.1, 0.2}, {1, 1}), json::array({1, 1}));
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("calibrated run's sample_kl"), std::string::npos) << e.what();
  }
  EXPECT_THROW(compare_with_unit_scales(run({0.1, 0.2}, {1, 1}), run({0.1, 0.2}, {1, 1}), json::array({1, 1, 1})), InputError);
}

TEST(UnitScalesVerdict, EvidenceCarriesBothRunsClampedFractionsPerLayer) {
  const json doc = {
      {"samples", 2},
      {"sample_tokens", {3, 3}},
      {"baseline", {{"nll", 1.0}}},
      {"quantized",
       {{{"kl", 0.02}, {"nll", 1.1}, {"sample_kl", {0.01, 0.03}},
         {"layers", {{{"layer", 0}, {"k_clipped_fraction", 0.001}, {"v_clipped_fraction", 0.0}}}}},
        {{"kl", 0.03}, {"nll", 1.2}, {"sample_kl", {0.02, 0.04}},
         {"layers", {{{"layer", 0}, {"k_clipped_fraction", 0.0}, {"v_clipped_fraction", 0.5}}}}}}}};
  const json e = unit_scales_evidence(doc);
  EXPECT_EQ(e["calibrated_kl"], 0.02);
  EXPECT_EQ(e["unit_kl"], 0.03);
  EXPECT_TRUE(e.contains("kl_diff_ci95"));
  ASSERT_EQ(e["layers"].size(), 1u);
  EXPECT_EQ(e["layers"][0]["k_clipped_fraction"], 0.001);
  EXPECT_EQ(e["layers"][0]["unit_v_clipped_fraction"], 0.5);
  EXPECT_FALSE(e["layers"][0].contains("q_clipped_fraction"));
}

}  // namespace
}  // namespace ctcal
