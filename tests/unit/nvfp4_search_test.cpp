// The NVFP4 scale search's objective (eval/nvfp4_scale_search.h) against the formulas written
// out: K as every causal (query, key) score error summed directly (O(seq^2 d), where the search
// uses suffix sums of q q^T), V as the difference of two textbook attentions in double
// (causal_attention_plain with v_hat and with v), where the search multiplies its fp32
// probabilities by v_hat - v.
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "ctcal/eval/nvfp4_scale_search.h"
#include "ctcal/model/attention.h"
#include "ctcal/quant/nvfp4.h"
#include "test_util.h"

namespace ctcal {
namespace {

// x [seq, width] quantized as NVFP4 at s, block by block.
RowMatrix nvfp4_round_trip(const RowMatrix& x, float s) {
  RowMatrix q(x.rows(), x.cols());
  for (int64_t t = 0; t < x.rows(); ++t)
    for (int64_t c = 0; c < x.cols(); c += 16) nvfp4::quantize_block(&x(t, c), s, nullptr, &q(t, c));
  return q;
}

void check_against_formulas(std::optional<int64_t> window) {
  const int64_t seq = 23, heads = 4, kv_heads = 2, d = 32;
  const AttentionShape shape = AttentionShape::plain(heads, kv_heads, d, window);
  std::mt19937 rng(31);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  RowMatrix q(seq, heads * d), k(seq, kv_heads * d), v(seq, kv_heads * d);  // [seq, heads * d], [seq, kv_heads * d] x2
  for (auto* m : {&q, &k, &v})
    for (int64_t i = 0; i < m->size(); ++i) m->data()[i] = n01(rng) * (i % 7 == 0 ? 8.0f : 1.0f);  // outliers
  const std::vector<double> s_k = nvfp4_search_candidates(k.cwiseAbs().maxCoeff());
  const std::vector<double> s_v = nvfp4_search_candidates(v.cwiseAbs().maxCoeff());
  const auto [ek, ev] = nvfp4_attention_errors(shape, q, k, v, s_k, s_v);
  ASSERT_EQ(ek.size(), s_k.size());
  const int64_t w = window.value_or(seq);
  std::vector<double> base(static_cast<std::size_t>(seq * heads * d));  // [seq, heads * d]
  causal_attention_plain(q.data(), k.data(), v.data(), base.data(), seq, shape);
  for (std::size_t i = 0; i < s_k.size(); ++i) {
    const RowMatrix dk = nvfp4_round_trip(k, static_cast<float>(s_k[i])) - k;  // [seq, kv_heads * d]
    double want_k = 0;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t t = 0; t < seq; ++t)
        for (int64_t j = std::max<int64_t>(0, t - w + 1); j <= t; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(q(t, h * d + c)) * dk(j, h / (heads / kv_heads) * d + c);
          want_k += std::pow(static_cast<double>(shape.scale) * dot, 2);
        }
    // Both sum the same fp32 products in double, in another order: far below 1e-9.
    EXPECT_NEAR(ek[i], want_k, 1e-9 * want_k) << "candidate " << i;
    const RowMatrix vq = nvfp4_round_trip(v, static_cast<float>(s_v[i]));  // [seq, kv_heads * d]
    std::vector<double> out(base.size());                                   // [seq, heads * d]
    causal_attention_plain(q.data(), k.data(), vq.data(), out.data(), seq, shape);
    double want_v = 0;
    for (std::size_t e = 0; e < out.size(); ++e) want_v += std::pow(out[e] - base[e], 2);
    // The search's probabilities are fp32 (relative error ~1e-7 each); squared: a few 1e-7.
    EXPECT_NEAR(ev[i], want_v, test::kTolFp32Op * want_v) << "candidate " << i;
  }
  // The objective is not flat: the smallest s (block scales saturate) costs most.
  EXPECT_GT(ek.back(), 2 * ek[4]);
  EXPECT_GT(ev.back(), 2 * ev[4]);
}

TEST(Nvfp4Search, ErrorsMatchTheFormulasCausal) { check_against_formulas(std::nullopt); }
TEST(Nvfp4Search, ErrorsMatchTheFormulasSlidingWindow) { check_against_formulas(5); }

TEST(Nvfp4Search, CandidatesHoldBothFixedRules) {
  const double amax = 3.7;
  const std::vector<double> c = nvfp4_search_candidates(amax);
  ASSERT_EQ(c.size(), 17u);
  EXPECT_EQ(c[4], static_cast<double>(static_cast<float>(amax / 448.0)));   // i = 0
  EXPECT_EQ(c[12], static_cast<double>(static_cast<float>(amax / 2688.0)));  // i = 8
  EXPECT_NEAR(c[0], amax / 448.0 * std::sqrt(6.0), 1e-6 * c[0]);
  EXPECT_NEAR(c[16], amax / 2688.0 / std::sqrt(6.0), 1e-6 * c[16]);
  for (std::size_t i = 1; i < c.size(); ++i) EXPECT_LT(c[i], c[i - 1]);
}

}  // namespace
}  // namespace ctcal
