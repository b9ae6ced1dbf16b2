// The key envelope (quant/key_envelope.h) against brute force: keys rotated by the model's own
// RoPE tables at every position up to max_position_embeddings (and by a Hadamard R3 after RoPE)
// never exceed the bound, and the bound is reached closely by some position (it is not loose).
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "ctcal/model/model_config.h"
#include "ctcal/model/rope.h"
#include "ctcal/quant/key_envelope.h"
#include "ctcal/transform/hadamard.h"

namespace ctcal {
namespace {

// Pre-RoPE keys [seq, heads, head_dim] with a few large channels, like trained models have.
std::vector<float> make_keys(int64_t seq, int64_t heads, int64_t d, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> k(static_cast<std::size_t>(seq * heads * d));
  for (auto& x : k) x = n(rng);
  for (int64_t t = 0; t < seq; ++t) k[static_cast<std::size_t>(t * heads * d + 3)] *= 8.f;  // an outlier pair
  return k;
}

// max |K| after RoPE at positions [p0, p0 + seq) for every position block up to max_pos.
double brute_force_absmax(const std::vector<float>& pre, int64_t seq, int64_t heads, int64_t d, int64_t max_pos,
                          const RowMatrix* rotation) {
  RopeConfig rope;
  rope.theta = 10000.0;
  double worst = 0;
  // Every token of the sample is placed at every position 0..max_pos-1 (stride 1).
  const RopeTable table = make_rope_table(rope, d, max_pos, max_pos);
  for (int64_t pos = 0; pos < max_pos; ++pos)
    for (int64_t t = 0; t < seq; ++t) {
      std::vector<float> x(pre.begin() + t * heads * d, pre.begin() + (t + 1) * heads * d);  // [heads, d]
      RopeTable one;
      one.half = table.half;
      one.cos.assign(table.cos.begin() + pos * table.half, table.cos.begin() + (pos + 1) * table.half);
      one.sin.assign(table.sin.begin() + pos * table.half, table.sin.begin() + (pos + 1) * table.half);
      apply_rope(one, x.data(), 1, heads, d, heads * d);
      for (int64_t h = 0; h < heads; ++h) {
        Eigen::Map<const RowMatrix> row(x.data() + h * d, 1, d);  // [1, d]
        const RowMatrix y = rotation ? RowMatrix(row * *rotation) : RowMatrix(row);
        worst = std::max(worst, static_cast<double>(y.cwiseAbs().maxCoeff()));
      }
    }
  return worst;
}

TEST(KeyEnvelope, BoundsKeysAtEveryPositionWithoutRotation) {
  const int64_t seq = 6, heads = 2, d = 16, max_pos = 4096;
  const auto pre = make_keys(seq, heads, d, 1);
  std::vector<double> env;
  key_envelope({pre.data(), seq, heads, d, heads * d}, d / 2, nullptr, &env);
  const double bound = std::max(env[0], env[1]);
  const double seen = brute_force_absmax(pre, seq, heads, d, max_pos, nullptr);
  EXPECT_LE(seen, bound * (1 + 1e-6));
  EXPECT_GE(seen, bound * 0.99);  // the pair norm is reached at some position
}

TEST(KeyEnvelope, BoundsKeysAfterR3AtEveryPosition) {
  const int64_t seq = 4, heads = 1, d = 8, max_pos = 8192;
  const auto pre = make_keys(seq, heads, d, 2);
  const RowMatrix r3 = (sylvester_hadamard(d) / std::sqrt(static_cast<double>(d))).cast<float>();  // [d, d]
  std::vector<double> env;
  key_envelope({pre.data(), seq, heads, d, heads * d}, d / 2, &r3, &env);
  const double seen = brute_force_absmax(pre, seq, heads, d, max_pos, &r3);
  EXPECT_LE(seen, env[0] * (1 + 1e-6));
  // Observed post-R3 keys at the first positions only: the bound is what covers the rest.
  EXPECT_GT(env[0], brute_force_absmax(pre, seq, heads, d, 16, &r3));
}

TEST(KeyEnvelope, PartialRopeChannelsPassThrough) {
  // half = 2 of head_dim 8: channels 4..7 are not rotated and bound themselves.
  const std::vector<float> k = {3.f, 0.f, 4.f, 0.f, 0.f, 0.f, -9.f, 1.f};  // [1, 1, 8]
  std::vector<double> env;
  key_envelope({k.data(), 1, 1, 8, 8}, 2, nullptr, &env);
  EXPECT_DOUBLE_EQ(env[0], 9.0);  // pair (0, 2) has norm 5; channel 6 has |-9|
}

}  // namespace
}  // namespace ctcal
