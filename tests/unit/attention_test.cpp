// Blocked flash-style attention (model/attention.h) against the textbook formula in double:
// softmax(q k^T / sqrt(d) + causal/window mask) v, one [S, S] matrix per head. Lengths cross
// query and key block edges; GQA and sliding windows included. Agreement with transformers
// itself is checked by the golden tests (ForwardGolden.BlockedAttentionMatchesGolden). The bf16
// variant (causal_attention_bf16) is held to the same formula on its bf16-rounded inputs, within
// the bound that rounding its probabilities to bf16 allows.
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <cstring>
#include <optional>
#include <limits>
#include <random>
#include <vector>

#include "ctcal/dtype.h"
#include "ctcal/model/attention.h"
#include "ctcal/model/onednn_matmul.h"

namespace ctcal {
namespace {

AttentionShape shape_of(const ModelConfig& c) {
  return AttentionShape::plain(c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.sliding_window);
}

// out[S, H*D] in double for q[S, H*D], k/v[S, Hkv*D]: lib's plain path (causal_attention_plain).
std::vector<double> naive_attention(const std::vector<float>& q, const std::vector<float>& k,
                                    const std::vector<float>& v, int64_t seq, const ModelConfig& c) {
  std::vector<double> out(static_cast<std::size_t>(seq * c.q_dim()));
  causal_attention_plain(q.data(), k.data(), v.data(), out.data(), seq, shape_of(c));
  return out;
}

ModelConfig attention_config(int64_t heads, int64_t kv_heads, int64_t head_dim, std::optional<int64_t> window = {}) {
  ModelConfig c;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = head_dim;
  c.hidden_size = heads * head_dim;
  c.sliding_window = window;
  return c;
}

// Normal q/k/v with standard deviation `sd` for `rows` tokens of config c.
struct Qkv {
  std::vector<float> q, k, v;  // [rows, q_dim], [rows, kv_dim], [rows, kv_dim]
  Qkv(const ModelConfig& c, int64_t rows, unsigned seed, float sd)
      : q(static_cast<std::size_t>(rows * c.q_dim())), k(static_cast<std::size_t>(rows * c.kv_dim())), v(k.size()) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, sd);
    for (auto* buf : {&q, &k, &v})
      for (float& x : *buf) x = nd(rng);
  }
};

struct Case {
  int64_t heads, kv_heads, head_dim, seq, block, key_block;
  std::optional<int64_t> window;
};

class AttentionBlocks : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionBlocks, MatchesNaiveFormula) {
  const Case& t = GetParam();
  const ModelConfig c = attention_config(t.heads, t.kv_heads, t.head_dim, t.window);
  const Qkv in(c, t.seq, 42, 2.0f);  // wide scores: softmax far from uniform
  std::vector<float> out(in.q.size());
  causal_attention(in.q.data(), in.k.data(), in.v.data(), out.data(), {{0, t.seq}}, shape_of(c), t.block, t.key_block);
  const std::vector<double> want = naive_attention(in.q, in.k, in.v, t.seq, c);
  // fp32 accumulation over at most seq * head_dim terms of |v| <~ 8: 1e-4 absolute leaves two
  // orders of magnitude above the observed error (~1e-6) and catches any masking or rescaling
  // bug, which shifts outputs by O(1).
  constexpr double kTol = 1e-4;
  double worst = 0;
  for (std::size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::fabs(out[i] - want[i]));
  EXPECT_LE(worst, kTol);
}

const auto kCases = ::testing::Values(Case{4, 4, 8, 1, 64, 256, {}},            // one token
                                      Case{4, 2, 8, 37, 64, 256, {}},           // one block
                                      Case{4, 1, 16, 300, 64, 256, {}},         // crosses both block edges (MQA)
                                      Case{8, 2, 8, 130, 7, 11, {}},            // odd blocks, GQA
                                      Case{4, 2, 8, 130, 7, 11, int64_t{9}},    // sliding window < blocks
                                      Case{4, 2, 8, 300, 64, 32, int64_t{50}},  // window skips whole key blocks
                                      Case{2, 2, 4, 70, 128, 16, int64_t{1}},   // window of 1: only itself
                                      Case{8, 2, 32, 200, 64, 100, {}});        // key blocks past one 64-key granule
INSTANTIATE_TEST_SUITE_P(Shapes, AttentionBlocks, kCases,
                         [](const auto& param_info) { return "case" + std::to_string(param_info.index); });

// Llama 4's chunked local attention (create_chunked_causal_mask) as an independent formula: each
// chunk [a, b) of positions is an ordinary causal sequence of its own, so the blocked kernel with
// the chunk must equal the plain unchunked attention run on each chunk's rows alone. Chunk
// boundaries fall where (t + origin) % chunk == 0 (origin: the sample's first absolute position).
TEST(AttentionChunks, EachChunkIsItsOwnCausalSequence) {
  const ModelConfig c = attention_config(4, 2, 8);
  const int64_t seq = 130;
  const Qkv in(c, seq, 7, 2.0f);
  for (const int64_t origin : {int64_t{0}, int64_t{5}}) {
    AttentionShape chunked = shape_of(c);
    chunked.chunk = 16;
    chunked.chunk_origin = origin;
    std::vector<float> out(in.q.size());
    causal_attention(in.q.data(), in.k.data(), in.v.data(), out.data(), {{0, seq}}, chunked, 7, 11);
    double worst = 0;
    for (int64_t a = 0; a < seq;) {
      const int64_t b = std::min(seq, (a + origin) / 16 * 16 + 16 - origin);  // the chunk's end
      std::vector<double> want(static_cast<std::size_t>((b - a) * c.q_dim()));
      causal_attention_plain(in.q.data() + a * c.q_dim(), in.k.data() + a * c.kv_dim(), in.v.data() + a * c.kv_dim(),
                             want.data(), b - a, shape_of(c));
      for (std::size_t i = 0; i < want.size(); ++i)
        worst = std::max(worst, std::fabs(out[static_cast<std::size_t>(a * c.q_dim()) + i] - want[i]));
      a = b;
    }
    EXPECT_LE(worst, 1e-4) << "origin " << origin;  // the fp32 tolerance of MatchesNaiveFormula
  }
}

// x with every value rounded to bf16 (nearest even), as causal_attention_bf16 rounds its inputs.
std::vector<float> rounded_to_bf16(const std::vector<float>& x) {
  std::vector<float> r(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) r[i] = bf16_to_f32(f32_to_bf16(x[i]));
  return r;
}

// The largest |out - naive(rounded q, k, v)| the bf16 variant may show: each probability is
// rounded to bf16 (relative error <= 2^-9) before p v, so an output, a weighted mean of v,
// moves by at most 2^-9 max|v|; 1e-4 more for the fp32 sums, as in the fp32 test.
double bf16_bound(const std::vector<float>& v) {
  double vmax = 0;
  for (float x : v) vmax = std::max(vmax, double(std::fabs(x)));
  return std::ldexp(vmax, -9) + 1e-4;
}

class AttentionBlocksBf16 : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionBlocksBf16, MatchesNaiveFormulaOnRoundedInputs) {
  if (!cpu_has_native_bf16()) GTEST_SKIP() << "no AVX512-BF16/AMX on this CPU";
  const Case& t = GetParam();
  const ModelConfig c = attention_config(t.heads, t.kv_heads, t.head_dim, t.window);
  const Qkv in(c, t.seq, 42, 2.0f);
  std::vector<float> out(in.q.size());
  std::vector<uint16_t> scratch(static_cast<std::size_t>(attention_bf16_scratch(shape_of(c), t.seq, t.key_block)));
  causal_attention_bf16(in.q.data(), in.k.data(), in.v.data(), out.data(), {{0, t.seq}}, shape_of(c), t.block,
                        t.key_block, scratch.data());
  const std::vector<float> v16 = rounded_to_bf16(in.v);
  const std::vector<double> want = naive_attention(rounded_to_bf16(in.q), rounded_to_bf16(in.k), v16, t.seq, c);
  double worst = 0;
  for (std::size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::fabs(out[i] - want[i]));
  EXPECT_LE(worst, bf16_bound(v16));
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionBlocksBf16, kCases,
                         [](const auto& param_info) { return "case" + std::to_string(param_info.index); });

// Samples of these lengths, one after another in one activation matrix.
std::vector<SampleSpan> consecutive_spans(const std::vector<int64_t>& lengths) {
  std::vector<SampleSpan> spans;
  int64_t rows = 0;
  for (int64_t n : lengths) {
    spans.push_back({rows, n});
    rows += n;
  }
  return spans;
}

// Several samples in one call (as run_layer passes a chunk): each attends only within itself.
TEST(AttentionBlocks, SamplesAttendWithinThemselves) {
  const ModelConfig c = attention_config(4, 2, 8);
  const std::vector<SampleSpan> spans = consecutive_spans({5, 70, 1, 33});
  const int64_t rows = spans.back().offset + spans.back().length;
  const Qkv in(c, rows, 3, 2.0f);
  std::vector<float> out(in.q.size());
  causal_attention(in.q.data(), in.k.data(), in.v.data(), out.data(), spans, shape_of(c), 16, 32);
  for (const SampleSpan& s : spans) {
    auto slice = [&](const std::vector<float>& b, int64_t w) {
      return std::vector<float>(b.begin() + s.offset * w, b.begin() + (s.offset + s.length) * w);
    };
    const auto want = naive_attention(slice(in.q, c.q_dim()), slice(in.k, c.kv_dim()), slice(in.v, c.kv_dim()), s.length, c);
    for (std::size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(out[static_cast<std::size_t>(s.offset * c.q_dim()) + i], want[i], 1e-4) << "sample at row " << s.offset;
  }
}

// Attention sinks (gpt-oss) and a sliding window: the blocked path against the plain one, with a
// sink per head large enough that it takes most of some rows' probability (those rows' outputs
// shrink; a sink dropped from the denominator or kept in the output would show at 1e-1).
TEST(AttentionBlocks, SinksAndWindowMatchThePlainPath) {
  const ModelConfig c = attention_config(4, 2, 8, 19);
  const int64_t seq = 150;
  const Qkv in(c, seq, 11, 1.5f);
  const std::vector<float> sinks = {-1.0f, 0.5f, 3.0f, 6.0f};  // [heads]
  AttentionShape shape = shape_of(c);
  shape.sinks = sinks.data();
  std::vector<float> out(in.q.size());
  causal_attention(in.q.data(), in.k.data(), in.v.data(), out.data(), {{0, seq}}, shape, 16, 32);
  std::vector<double> want(in.q.size());
  causal_attention_plain(in.q.data(), in.k.data(), in.v.data(), want.data(), seq, shape);
  std::vector<double> no_sinks(in.q.size());
  causal_attention_plain(in.q.data(), in.k.data(), in.v.data(), no_sinks.data(), seq, shape_of(c));
  double moved = 0;  // how far the sinks moved the plain result: the test's power
  for (std::size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(out[i], want[i], 1e-4) << "at " << i;
    moved = std::max(moved, std::abs(want[i] - no_sinks[i]));
  }
  EXPECT_GT(moved, 0.1);
}

// The bf16 variant reads a sample's last key block whole, past the sample's end (into the next
// sample's rows or the zero tail): those keys must not count.
TEST(AttentionBlocksBf16, SamplesAttendWithinThemselves) {
  if (!cpu_has_native_bf16()) GTEST_SKIP() << "no AVX512-BF16/AMX on this CPU";
  const ModelConfig c = attention_config(4, 2, 8);
  const std::vector<SampleSpan> spans = consecutive_spans({5, 70, 1, 33});
  const int64_t rows = spans.back().offset + spans.back().length;
  const Qkv in(c, rows, 3, 2.0f);
  std::vector<float> out(in.q.size());
  std::vector<uint16_t> scratch(static_cast<std::size_t>(attention_bf16_scratch(shape_of(c), rows, 32)));
  causal_attention_bf16(in.q.data(), in.k.data(), in.v.data(), out.data(), spans, shape_of(c), 16, 32, scratch.data());
  const std::vector<float> q16 = rounded_to_bf16(in.q), k16 = rounded_to_bf16(in.k), v16 = rounded_to_bf16(in.v);
  for (const SampleSpan& s : spans) {
    auto slice = [&](const std::vector<float>& b, int64_t w) {
      return std::vector<float>(b.begin() + s.offset * w, b.begin() + (s.offset + s.length) * w);
    };
    const auto want = naive_attention(slice(q16, c.q_dim()), slice(k16, c.kv_dim()), slice(v16, c.kv_dim()), s.length, c);
    for (std::size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(out[static_cast<std::size_t>(s.offset * c.q_dim()) + i], want[i], bf16_bound(v16)) << "sample at row " << s.offset;
  }
}

TEST(AttentionBlocksBf16, SameResultForAnyThreadCount) {
  if (!cpu_has_native_bf16()) GTEST_SKIP() << "no AVX512-BF16/AMX on this CPU";
  const ModelConfig c = attention_config(8, 2, 128);  // Llama's head_dim: the AMX kernels' shape
  const std::vector<SampleSpan> spans = {{0, 333}, {333, 200}};
  const Qkv in(c, 533, 7, 1.0f);
  std::vector<float> a(in.q.size()), b(in.q.size());
  std::vector<uint16_t> scratch(static_cast<std::size_t>(attention_bf16_scratch(shape_of(c), 533, 256)));
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  causal_attention_bf16(in.q.data(), in.k.data(), in.v.data(), a.data(), spans, shape_of(c), 64, 256, scratch.data());
  omp_set_num_threads(3);
  causal_attention_bf16(in.q.data(), in.k.data(), in.v.data(), b.data(), spans, shape_of(c), 64, 256, scratch.data());
  omp_set_num_threads(saved);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));  // bit for bit
}

TEST(AttentionBlocks, SameResultForAnyThreadCount) {
  const ModelConfig c = attention_config(8, 2, 16);
  const int64_t seq = 333;
  const Qkv in(c, seq, 7, 1.0f);
  std::vector<float> a(in.q.size()), b(in.q.size());
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  causal_attention(in.q.data(), in.k.data(), in.v.data(), a.data(), {{0, seq}}, shape_of(c), 64, 256);
  omp_set_num_threads(3);
  causal_attention(in.q.data(), in.k.data(), in.v.data(), b.data(), {{0, seq}}, shape_of(c), 64, 256);
  omp_set_num_threads(saved);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));  // bit for bit
}

}  // namespace
}  // namespace ctcal
