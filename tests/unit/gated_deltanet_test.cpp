// The gated DeltaNet layer (model/gated_deltanet.h): its chunked delta rule against the token-by-
// token recurrence in double (tests/gated_deltanet_reference.h) on lengths around the chunk edges
// and on decay regimes from none to underflowing, several samples in one call; the same bits for
// any thread count and whatever samples share a call; the shape checks. Agreement with
// transformers itself: tests/golden/gated_deltanet_golden_test.cpp.
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/model/gated_deltanet.h"
#include "gated_deltanet_reference.h"
#include "test_util.h"

namespace ctcal {
namespace {

unsigned test_seed() {
  const char* s = std::getenv("CTCAL_TEST_SEED");
  const unsigned seed = s ? static_cast<unsigned>(std::stoul(s)) : 28u;
  std::printf("seed %u (CTCAL_TEST_SEED)\n", seed);
  return seed;
}

GatedDeltaNetShape small_shape() {
  GatedDeltaNetShape s;
  s.hidden = 40;
  s.num_k_heads = 2;
  s.num_v_heads = 6;  // 3 value heads per key head
  s.head_k_dim = 16;
  s.head_v_dim = 24;
  s.conv_kernel = 4;
  s.eps = 1e-6;
  return s;
}

RowMatrix random_matrix(int64_t rows, int64_t cols, float scale, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, scale);
  RowMatrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = nd(rng);
  return m;
}

GatedDeltaNetWeights random_weights(const GatedDeltaNetShape& s, std::mt19937& rng) {
  GatedDeltaNetWeights w;
  w.in_proj_qkv.w = random_matrix(s.conv_dim(), s.hidden, 0.2f, rng);
  w.in_proj_z.w = random_matrix(s.value_dim(), s.hidden, 0.2f, rng);
  w.in_proj_b.w = random_matrix(s.num_v_heads, s.hidden, 0.2f, rng);
  w.in_proj_a.w = random_matrix(s.num_v_heads, s.hidden, 0.2f, rng);
  w.conv1d = random_matrix(s.conv_dim(), s.conv_kernel, 0.5f, rng);
  w.out_proj.w = random_matrix(s.hidden, s.value_dim(), 0.2f, rng);
  w.dt_bias = random_matrix(s.num_v_heads, 1, 1.0f, rng);
  w.A_log.resize(s.num_v_heads);
  for (int64_t h = 0; h < s.num_v_heads; ++h) w.A_log[h] = std::log(0.01f * std::pow(6.0f, static_cast<float>(h)));
  w.norm = (random_matrix(s.head_v_dim, 1, 0.3f, rng).array() + 1.0f).matrix();
  return w;
}

std::vector<SampleSpan> spans_of(const std::vector<int64_t>& lengths) {
  std::vector<SampleSpan> spans;
  int64_t off = 0;
  for (int64_t len : lengths) {
    spans.push_back({off, len});
    off += len;
  }
  return spans;
}

// The chunked rule's fp32 error against exact arithmetic, relative to the output's largest
// magnitude per value head: each output is a chain of ~6 fp32 GEMMs of depth <= 64 and a unit
// lower-triangular solve whose inverse stays O(1) for l2-normalised keys (|k_i . k_j| <= 1,
// beta <= 1): 4e-7 measured (seed 28); kTolFp32Op (1e-5, CTranslate2's fp32 bound) leaves a 20x margin.
constexpr double kChunkedTol = test::kTolFp32Op;

TEST(GatedDeltaRule, ChunkedEqualsSequentialRecurrence) {
  std::mt19937 rng(test_seed());
  const GatedDeltaNetShape s = small_shape();
  // Lengths at the chunk edges (1, 63, 64, 65, 128, 129) and across three chunks, in one call.
  const std::vector<SampleSpan> spans = spans_of({1, 63, 64, 65, 128, 129, 200});
  const int64_t rows = spans.back().offset + spans.back().length;
  RowMatrix q = random_matrix(rows, s.key_dim(), 1.0f, rng);    // [rows, key_dim]
  RowMatrix k = random_matrix(rows, s.key_dim(), 1.0f, rng);    // [rows, key_dim]
  const RowMatrix v = random_matrix(rows, s.value_dim(), 1.0f, rng);  // [rows, value_dim]
  RowMatrix g(rows, s.num_v_heads), beta(rows, s.num_v_heads);  // [rows, num_v_heads]
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  for (int64_t t = 0; t < rows; ++t) {
    // Decay regimes by value head: none (g = 0), mild, moderate, strong enough that exp(cumsum g)
    // underflows to 0 within a chunk, random per token over all of these, and mild with beta in {0, 1}.
    g(t, 0) = 0.0f;
    g(t, 1) = -0.01f * u01(rng);
    g(t, 2) = -0.5f * u01(rng);
    g(t, 3) = -30.0f * u01(rng);
    g(t, 4) = -std::pow(10.0f, 4.0f * u01(rng) - 3.0f);
    g(t, 5) = -0.05f * u01(rng);
    for (int64_t h = 0; h < s.num_v_heads; ++h) beta(t, h) = u01(rng);
    beta(t, 5) = (t % 3 == 0) ? 0.0f : 1.0f;
  }
  const RowMatrix qkv_raw = [&] {  // [rows, conv_dim]: q | k | v as the conv output holds them
    RowMatrix m(rows, s.conv_dim());
    m << q, k, v;
    return m;
  }();
  RowMatrix qkv = qkv_raw;
  l2norm_qk(qkv, s);
  q = qkv.leftCols(s.key_dim());
  k = qkv.middleCols(s.key_dim(), s.key_dim());
  RowMatrix out = RowMatrix::Constant(rows, s.value_dim(), std::nanf(""));  // [rows, value_dim]
  gated_delta_rule_chunked(q, k, v, g, beta, spans, s, out);

  RowMatrixD want(rows, s.value_dim());  // [rows, value_dim]
  for (const SampleSpan& sp : spans)
    test::sequential_delta_rule(q.cast<double>(), k.cast<double>(), v.cast<double>(), g.cast<double>(),
                                beta.cast<double>(), sp.offset, sp.length, s, &want);
  double worst = 0;
  for (const SampleSpan& sp : spans)
    for (int64_t h = 0; h < s.num_v_heads; ++h) {
      const auto got_h = out.block(sp.offset, h * s.head_v_dim, sp.length, s.head_v_dim).cast<double>();
      const auto want_h = want.block(sp.offset, h * s.head_v_dim, sp.length, s.head_v_dim);
      const double scale = std::max(want_h.cwiseAbs().maxCoeff(), 1e-30);
      const double err = (got_h - want_h).cwiseAbs().maxCoeff() / scale;
      EXPECT_LE(err, kChunkedTol) << "sample of " << sp.length << " tokens, value head " << h;
      EXPECT_TRUE(got_h.allFinite());
      worst = std::max(worst, err);
    }
  std::printf("chunked vs sequential: worst max |err| / max |want| of a (sample, value head): %.3g\n", worst);
}

// The l2 normalisation and q's scaling as transformers computes them: x * rsqrt(sum(x^2) + 1e-6),
// q then times head_k_dim^-0.5 (a plain formula; tolerance: one fp32 op chain).
TEST(GatedDeltaRule, L2NormOfQueriesAndKeys) {
  std::mt19937 rng(test_seed());
  const GatedDeltaNetShape s = small_shape();
  const RowMatrix x = random_matrix(5, s.conv_dim(), 1.0f, rng);  // [5, conv_dim]
  RowMatrix y = x;
  l2norm_qk(y, s);
  for (int64_t t = 0; t < x.rows(); ++t)
    for (int64_t c = 0; c < s.conv_dim(); ++c) {
      double want = x(t, c);
      if (c < 2 * s.key_dim()) {
        const int64_t h0 = c / s.head_k_dim * s.head_k_dim;
        const double ss = x.row(t).segment(h0, s.head_k_dim).cast<double>().squaredNorm();
        want /= std::sqrt(ss + 1e-6);
        if (c < s.key_dim()) want /= std::sqrt(double(s.head_k_dim));
      }
      EXPECT_NEAR(y(t, c), want, test::kTolFp32Op * std::max(1.0, std::abs(want))) << t << ", " << c;
    }
}

RowMatrix forward_with_threads(int threads, const RowMatrix& x, const std::vector<SampleSpan>& spans,
                               const GatedDeltaNetWeights& w, const GatedDeltaNetShape& s) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  RowMatrix y(x.rows(), s.hidden);  // [rows, hidden]
  gated_deltanet_forward(x, spans, w, s, y);
  omp_set_num_threads(saved);
  return y;
}

bool same_bits(const RowMatrix& a, const RowMatrix& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)) == 0;
}

// Results must not depend on the thread count (DEVELOPING.md, "Deterministic"): bit for bit with
// 1, 2, 3 and 4 threads, on more tasks than threads and samples of several chunks.
TEST(GatedDeltaNet, SameBitsForAnyThreadCount) {
  std::mt19937 rng(test_seed());
  const GatedDeltaNetShape s = small_shape();
  const GatedDeltaNetWeights w = random_weights(s, rng);
  const std::vector<SampleSpan> spans = spans_of({150, 70, 3, 260});
  const int64_t rows = spans.back().offset + spans.back().length;
  const RowMatrix x = random_matrix(rows, s.hidden, 1.0f, rng);  // [rows, hidden]
  const RowMatrix y1 = forward_with_threads(1, x, spans, w, s);
  ASSERT_TRUE(y1.allFinite());
  for (int threads : {2, 3, 4}) EXPECT_TRUE(same_bits(forward_with_threads(threads, x, spans, w, s), y1)) << threads;
}

// Each sample starts from zero state: a sample's output is the same bits alone or beside others
// (the projections' fixed-order GEMM gives each row the same bits whatever rows share the call).
TEST(GatedDeltaNet, SamplesAreIndependent) {
  std::mt19937 rng(test_seed());
  const GatedDeltaNetShape s = small_shape();
  const GatedDeltaNetWeights w = random_weights(s, rng);
  const std::vector<SampleSpan> spans = spans_of({90, 130});
  const RowMatrix x = random_matrix(220, s.hidden, 1.0f, rng);  // [220, hidden]
  RowMatrix both(220, s.hidden);                                // [220, hidden]
  gated_deltanet_forward(x, spans, w, s, both);
  for (const SampleSpan& sp : spans) {
    const RowMatrix xs = x.middleRows(sp.offset, sp.length);  // [len, hidden]
    RowMatrix alone(sp.length, s.hidden);                     // [len, hidden]
    gated_deltanet_forward(xs, {{0, sp.length}}, w, s, alone);
    EXPECT_TRUE(same_bits(alone, both.middleRows(sp.offset, sp.length))) << sp.offset;
  }
}

// Bits do not depend on where the buffers lie: x and y in buffers one float off alignment, a
// scratch grown by an earlier, larger call, a sample alone at row 0 or after another; head widths
// (12, 20) and a conv width (84) that are no multiple of a SIMD vector, so rows land at every
// alignment (vectorised exp and sums treat unaligned leading elements with scalar code).
TEST(GatedDeltaNet, SameBitsWhereverTheBuffersLie) {
  std::mt19937 rng(test_seed());
  GatedDeltaNetShape s = small_shape();
  s.hidden = 36;
  s.head_k_dim = 12;
  s.head_v_dim = 20;
  s.num_v_heads = 3;
  s.num_k_heads = 3;
  const GatedDeltaNetWeights w = random_weights(s, rng);
  const std::vector<SampleSpan> spans = spans_of({67, 131});
  const RowMatrix x = random_matrix(198, s.hidden, 1.0f, rng);  // [198, hidden]
  RowMatrix want(198, s.hidden);                                // [198, hidden]
  gated_deltanet_forward(x, spans, w, s, want);

  GatedDeltaNetScratch scratch;
  {
    const RowMatrix big = random_matrix(300, s.hidden, 1.0f, rng);  // [300, hidden]
    RowMatrix y_big(300, s.hidden);                                 // [300, hidden]
    gated_deltanet_forward(big, {{0, 300}}, w, s, y_big, nullptr, &scratch);
  }
  std::vector<float> xbuf(static_cast<std::size_t>(198 * s.hidden + 1)), ybuf(xbuf.size());
  Eigen::Map<RowMatrix> x_off(xbuf.data() + 1, 198, s.hidden);  // [198, hidden], 4 bytes past alignment
  Eigen::Map<RowMatrix> y_off(ybuf.data() + 1, 198, s.hidden);  // [198, hidden]
  x_off = x;
  gated_deltanet_forward(x_off, spans, w, s, y_off, nullptr, &scratch);
  EXPECT_TRUE(same_bits(y_off, want));
  // The second sample alone: its rows start at row 0 instead of row 67.
  const RowMatrix x2 = x.middleRows(67, 131);  // [131, hidden]
  RowMatrix y2(131, s.hidden);                 // [131, hidden]
  gated_deltanet_forward(x2, {{0, 131}}, w, s, y2, nullptr, &scratch);
  EXPECT_TRUE(same_bits(y2, want.middleRows(67, 131)));
}

// The whole layer against the double reference on a longer sample than the goldens (four chunks).
TEST(GatedDeltaNet, ForwardMatchesDoubleReference) {
  std::mt19937 rng(test_seed());
  const GatedDeltaNetShape s = small_shape();
  const GatedDeltaNetWeights w = random_weights(s, rng);
  const RowMatrix x = random_matrix(230, s.hidden, 1.0f, rng);  // [230, hidden]
  RowMatrix y(230, s.hidden);                                   // [230, hidden]
  gated_deltanet_forward(x, {{0, 230}}, w, s, y);
  const RowMatrixD want = test::reference_gated_deltanet(x.cast<double>(), w, s);
  const double err = (y.cast<double>() - want).cwiseAbs().maxCoeff() / want.cwiseAbs().maxCoeff();
  EXPECT_LE(err, test::kAbsmaxRelTol);  // the golden tests' bound for a whole fp32 layer
}

TEST(GatedDeltaNet, RefusesShapesTheModuleCannotHave) {
  std::mt19937 rng(test_seed());
  GatedDeltaNetShape s = small_shape();
  GatedDeltaNetWeights w = random_weights(s, rng);
  EXPECT_NO_THROW(check_gated_deltanet(w, s, "model.layers.0.linear_attn"));
  GatedDeltaNetShape odd = s;
  odd.num_v_heads = 5;  // not a multiple of 2 key heads
  try {
    check_gated_deltanet(w, odd, "model.layers.0.linear_attn");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("linear_num_value_heads 5 is not a multiple of linear_num_key_heads 2"),
              std::string::npos) << e.what();
  }
  w.conv1d.resize(s.conv_dim(), 3);
  try {
    check_gated_deltanet(w, s, "model.layers.0.linear_attn");
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.linear_attn.conv1d.weight: wrong shape; expected ["),
              std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ctcal
