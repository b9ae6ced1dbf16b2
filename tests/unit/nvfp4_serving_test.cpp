// NVFP4 serving (issue 31 items 4-5): the R3 rotation eval's `nvfp4 s=searched +R3` row applies,
// against the Hadamard written out as a formula; ctcal's record that the k/v scales are NVFP4
// decode multipliers (quant/nvfp4_record.h); and the vLLM verdict it gives (serve line with
// --kv-cache-dtype nvfp4, the FP8 clipping count).
#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/inspect/vllm_verdict.h"
#include "ctcal/model/layer_ops.h"
#include "ctcal/quant/nvfp4_record.h"
#include "ctcal/recipe/recipe.h"
#include "ctcal/transform/hadamard.h"

namespace ctcal {
namespace {

using nlohmann::json;

// eval's R3 row rotates each head of Q and K (after RoPE) by the normalised Sylvester Hadamard,
// x <- x H / sqrt(d) (evaluate.cpp, then rotate_heads in the layer). Checked against
// H[j][i] = (-1)^popcount(i & j) written out, and against what R3 must keep: q . k per head.
TEST(Nvfp4R3, RotationIsTheHadamardFormulaAndKeepsScores) {
  const int64_t seq = 7, heads = 4, kv_heads = 2, d = 64, rep = heads / kv_heads;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.f, 1.f);
  RowMatrix q(seq, heads * d), k(seq, kv_heads * d);  // [seq, heads * d], [seq, kv_heads * d]
  for (int64_t i = 0; i < q.size(); ++i) q.data()[i] = nd(rng);
  for (int64_t i = 0; i < k.size(); ++i) k.data()[i] = nd(rng) * (i % 17 == 0 ? 20.f : 1.f);  // outliers
  // A key channel with an outlier: R3 spreads it over the head (its max shrinks).
  const RowMatrix r = (sylvester_hadamard(d) / std::sqrt(static_cast<double>(d))).cast<float>();  // [d, d]
  RowMatrix qr = q, kr = k;
  rotate_heads(qr.data(), seq, heads, d, heads * d, r);
  rotate_heads(kr.data(), seq, kv_heads, d, kv_heads * d, r);
  // The formula, in double: (x H)_i = sum_j x_j (-1)^popcount(i & j) / sqrt(d). fp32 rotation of
  // 64 terms of size ~1 (outliers 20): absolute error well under 64 * 2^-24 * 20 * 8 ~ 1e-3; 2e-5
  // relative to the head's norm is the bound used.
  for (int64_t t = 0; t < seq; ++t)
    for (int64_t h = 0; h < kv_heads; ++h) {
      double norm = 0;
      for (int64_t j = 0; j < d; ++j) norm += double(k(t, h * d + j)) * k(t, h * d + j);
      for (int64_t i = 0; i < d; ++i) {
        double want = 0;
        for (int64_t j = 0; j < d; ++j)
          want += double(k(t, h * d + j)) * (std::popcount(static_cast<uint64_t>(i & j)) % 2 ? -1.0 : 1.0);
        want /= std::sqrt(double(d));
        EXPECT_NEAR(kr(t, h * d + i), want, 2e-5 * std::sqrt(norm)) << "t " << t << " head " << h << " i " << i;
      }
    }
  // Scores: each query head against its KV head, every (query, key) pair, unchanged within fp32
  // rounding of a d-term dot product (relative to |q| |k|: d * 2^-24 ~ 4e-6, bound 1e-5).
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t t = 0; t < seq; ++t)
      for (int64_t j = 0; j < seq; ++j) {
        const auto qa = q.row(t).segment(h * d, d).cast<double>(), ka = k.row(j).segment(h / rep * d, d).cast<double>();
        const auto qb = qr.row(t).segment(h * d, d).cast<double>(), kb = kr.row(j).segment(h / rep * d, d).cast<double>();
        EXPECT_NEAR(qb.dot(kb), qa.dot(ka), 1e-5 * qa.norm() * ka.norm()) << "head " << h << " q " << t << " k " << j;
      }
  EXPECT_LT(kr.cwiseAbs().maxCoeff(), k.cwiseAbs().maxCoeff());  // the outliers are spread
}

Nvfp4KvRecord sample_record() {
  Nvfp4KvRecord r;
  r.rule = "searched";
  r.search = {{"samples", 8}};
  r.layers.push_back({0, Nvfp4SiteRecord{10.0 / 2688, 10.0}, Nvfp4SiteRecord{2.0 / 448, 2.0}});  // K clips in FP8
  r.layers.push_back({1, Nvfp4SiteRecord{4.0 / 300, 4.0}, Nvfp4SiteRecord{1.0 / 1000, 1.0}});    // V clips
  r.layers.push_back({2, std::nullopt, std::nullopt});                                            // no KV cache
  return r;
}

TEST(Nvfp4Record, RoundTripsAndCountsWhatFp8Clips) {
  const Nvfp4KvRecord r = sample_record();
  const json j = nvfp4_record_to_json(r);
  EXPECT_EQ(j["kv_cache_dtype"], "nvfp4");
  const Nvfp4KvRecord back = nvfp4_record_from_json(j, "test");
  ASSERT_EQ(back.layers.size(), 3u);
  EXPECT_EQ(back.rule, "searched");
  EXPECT_EQ(back.layers[0].k->s, 10.0 / 2688);
  EXPECT_EQ(back.layers[1].v->amax, 1.0);
  EXPECT_FALSE(back.layers[2].k.has_value());
  EXPECT_EQ(nvfp4_record_sites(back), 4);
  // FP8 represents |x| <= 448 s: s = amax/2688 keeps 1/6 of the range, amax/448 all of it.
  const auto clips = fp8_clipping(back);
  ASSERT_EQ(clips.size(), 2u);
  EXPECT_EQ(clips[0].layer, 0);
  EXPECT_EQ(clips[0].site, 'k');
  EXPECT_NEAR(clips[0].kept(), 1.0 / 6, 1e-12);
  EXPECT_EQ(clips[1].layer, 1);
  EXPECT_EQ(clips[1].site, 'v');
  EXPECT_NEAR(clips[1].kept(), 0.448, 1e-12);
  json bad = j;
  bad["kv_cache_dtype"] = "fp8";
  EXPECT_THROW(nvfp4_record_from_json(bad, "test"), InputError);
  bad = j;
  bad["layers"][0]["k_amax"] = -1;
  EXPECT_THROW(nvfp4_record_from_json(bad, "test"), InputError);
}

TEST(Nvfp4Record, VerdictServesWithTheFlagAndWarnsAboutFp8) {
  VllmFacts f;
  f.served_path = "/out";
  f.architecture = "LlamaForCausalLM";
  f.quant_method = "compressed-tensors";
  f.scheme.kv = parse_quant_args(R"({"num_bits": 8, "type": "float", "symmetric": true, "strategy": "tensor"})", "test");
  for (int l = 0; l < 3; ++l) {
    f.attention_modules.push_back("model.layers." + std::to_string(l) + ".self_attn");
    f.tensors.push_back(f.attention_modules.back() + ".k_scale");
    f.tensors.push_back(f.attention_modules.back() + ".v_scale");
  }
  const json plain = vllm_verdict(f);
  EXPECT_EQ(plain["command"], "vllm serve /out");
  EXPECT_FALSE(plain.contains("nvfp4"));
  f.nvfp4 = sample_record();
  const json v = vllm_verdict(f);
  EXPECT_TRUE(v["serves_as_calibrated"].get<bool>());
  EXPECT_EQ(v["command"], "vllm serve /out --kv-cache-dtype nvfp4");
  for (const auto& l : v["kv_layers"]) EXPECT_EQ(l["cache"], "nvfp4");
  EXPECT_EQ(v["nvfp4"]["served_as_fp8"]["clipped_sites"], 2);
  EXPECT_EQ(v["nvfp4"]["served_as_fp8"]["sites"], 4);
  EXPECT_EQ(v["nvfp4"]["served_as_fp8"]["worst"]["layer"], 0);  // 1/6 kept is the least
  EXPECT_NE(v["nvfp4"]["served_as_fp8"]["words"].get<std::string>().find("2 of 4"), std::string::npos);
}

}  // namespace
}  // namespace ctcal
