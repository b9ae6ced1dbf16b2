// Blocked flash-style attention (model/attention.h) against the textbook formula in double:
// softmax(q k^T / sqrt(d) + causal/window mask) v, one [S, S] matrix per head. Lengths cross
// query and key block edges; GQA and sliding windows included. Agreement with transformers
// itself is checked by the golden tests (ForwardGolden.BlockedAttentionMatchesGolden).
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <limits>
#include <random>
#include <vector>

#include "ctcal/model/attention.h"

namespace ctcal {
namespace {

// out[S, H*D] in double for q[S, H*D], k/v[S, Hkv*D].
std::vector<double> naive_attention(const std::vector<float>& q, const std::vector<float>& k,
                                    const std::vector<float>& v, int64_t seq, const LlamaConfig& c) {
  const int64_t d = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim();
  const int64_t window = c.sliding_window.value_or(std::numeric_limits<int64_t>::max());
  std::vector<double> out(static_cast<std::size_t>(seq * qd), 0.0);
  for (int64_t h = 0; h < c.num_attention_heads; ++h) {
    const int64_t g = h / c.n_rep();
    for (int64_t i = 0; i < seq; ++i) {
      std::vector<double> p(static_cast<std::size_t>(seq), 0.0);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j <= i; ++j) {
        if (i - j >= window) continue;  // transformers' sliding window: keys within window - 1
        double s = 0;
        for (int64_t x = 0; x < d; ++x) s += double(q[i * qd + h * d + x]) * k[j * kvd + g * d + x];
        p[j] = s / std::sqrt(double(d));
        mx = std::max(mx, p[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j <= i; ++j) {
        if (i - j >= window) { p[j] = 0; continue; }
        p[j] = std::exp(p[j] - mx);
        sum += p[j];
      }
      for (int64_t j = 0; j <= i; ++j)
        for (int64_t x = 0; x < d; ++x) out[i * qd + h * d + x] += p[j] / sum * v[j * kvd + g * d + x];
    }
  }
  return out;
}

struct Case {
  int64_t heads, kv_heads, head_dim, seq, block, key_block;
  std::optional<int64_t> window;
};

class AttentionBlocks : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionBlocks, MatchesNaiveFormula) {
  const Case& t = GetParam();
  LlamaConfig c;
  c.num_attention_heads = t.heads;
  c.num_key_value_heads = t.kv_heads;
  c.head_dim = t.head_dim;
  c.hidden_size = t.heads * t.head_dim;
  c.sliding_window = t.window;
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 2.0f);  // wide scores: softmax far from uniform
  std::vector<float> q(t.seq * c.q_dim()), k(t.seq * c.kv_dim()), v(t.seq * c.kv_dim()), out(q.size());
  for (auto* buf : {&q, &k, &v})
    for (float& x : *buf) x = nd(rng);
  causal_attention(q.data(), k.data(), v.data(), out.data(), {{0, t.seq}}, c, t.block, t.key_block);
  const std::vector<double> want = naive_attention(q, k, v, t.seq, c);
  // fp32 accumulation over at most seq * head_dim terms of |v| <~ 8: 1e-4 absolute leaves two
  // orders of magnitude above the observed error (~1e-6) and catches any masking or rescaling
  // bug, which shifts outputs by O(1).
  constexpr double kTol = 1e-4;
  double worst = 0;
  for (std::size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::fabs(out[i] - want[i]));
  EXPECT_LE(worst, kTol);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionBlocks,
    ::testing::Values(Case{4, 4, 8, 1, 64, 256, {}},            // one token
                      Case{4, 2, 8, 37, 64, 256, {}},           // one block
                      Case{4, 1, 16, 300, 64, 256, {}},         // crosses both block edges (MQA)
                      Case{8, 2, 8, 130, 7, 11, {}},            // odd blocks, GQA
                      Case{4, 2, 8, 130, 7, 11, int64_t{9}},    // sliding window < blocks
                      Case{4, 2, 8, 300, 64, 32, int64_t{50}},  // window skips whole key blocks
                      Case{2, 2, 4, 70, 128, 16, int64_t{1}}),  // window of 1: only itself
    [](const auto& param_info) { return "case" + std::to_string(param_info.index); });

// Several samples in one call (as run_layer passes a chunk): each attends only within itself.
TEST(AttentionBlocks, SamplesAttendWithinThemselves) {
  LlamaConfig c;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.hidden_size = 32;
  const std::vector<int64_t> lengths = {5, 70, 1, 33};
  std::vector<SampleSpan> spans;
  int64_t rows = 0;
  for (int64_t n : lengths) {
    spans.push_back({rows, n});
    rows += n;
  }
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> q(rows * c.q_dim()), k(rows * c.kv_dim()), v(rows * c.kv_dim()), out(q.size());
  for (auto* buf : {&q, &k, &v})
    for (float& x : *buf) x = nd(rng);
  causal_attention(q.data(), k.data(), v.data(), out.data(), spans, c, 16, 32);
  for (const SampleSpan& s : spans) {
    auto slice = [&](const std::vector<float>& b, int64_t w) {
      return std::vector<float>(b.begin() + s.offset * w, b.begin() + (s.offset + s.length) * w);
    };
    const auto want = naive_attention(slice(q, c.q_dim()), slice(k, c.kv_dim()), slice(v, c.kv_dim()), s.length, c);
    for (std::size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(out[static_cast<std::size_t>(s.offset * c.q_dim()) + i], want[i], 1e-4) << "sample at row " << s.offset;
  }
}

TEST(AttentionBlocks, SameResultForAnyThreadCount) {
  LlamaConfig c;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.hidden_size = 128;
  const int64_t seq = 333;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> q(seq * c.q_dim()), k(seq * c.kv_dim()), v(seq * c.kv_dim()), a(q.size()), b(q.size());
  for (auto* buf : {&q, &k, &v})
    for (float& x : *buf) x = nd(rng);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  causal_attention(q.data(), k.data(), v.data(), a.data(), {{0, seq}}, c, 64, 256);
  omp_set_num_threads(3);
  causal_attention(q.data(), k.data(), v.data(), b.data(), {{0, seq}}, c, 64, 256);
  omp_set_num_threads(saved);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));  // bit for bit
}

}  // namespace
}  // namespace ctcal
