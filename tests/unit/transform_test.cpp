// Hadamard constructions (H·Hᵀ = n·I for every supported size), R3 score invariance and the R2
// weight rotation's output invariance.
#include <cmath>

#include <gtest/gtest.h>

#include "ctcal/error.h"
#include "ctcal/transform/hadamard.h"
#include "ctcal/transform/paley.h"
#include "ctcal/transform/rotate_weights.h"

namespace ctcal {
namespace {

bool is_hadamard(const RowMatrixD& h) {
  const auto n = h.rows();
  if (!(h.array().abs() == 1.0).all()) return false;
  return (h * h.transpose() - RowMatrixD::Identity(n, n) * static_cast<double>(n)).cwiseAbs().maxCoeff() == 0.0;
}

TEST(Paley, EveryConstructedOrderIsHadamard) {
  const auto orders = paley_orders(260);
  // Paley I and II orders named in the issue, including prime powers 27 (28) and 25 (52).
  for (int64_t k : {12, 20, 28, 36, 44, 52, 60, 68, 76, 84, 100, 108})
    EXPECT_NE(std::find(orders.begin(), orders.end(), k), orders.end()) << k;
  for (int64_t k : orders) {
    auto h = paley_hadamard(k);
    ASSERT_TRUE(h.has_value()) << k;
    EXPECT_TRUE(is_hadamard(*h)) << k;
  }
  EXPECT_FALSE(paley_hadamard(92).has_value());  // 91 and 45 are not prime powers
}

TEST(TransformMatrix, RandomHadamardSizesAndSeeds) {
  for (int64_t n : {8, 64, 96, 112, 160, 192, 80}) {
    RowMatrixD w = transform_matrix("random-hadamard", n, 42);
    EXPECT_TRUE(is_hadamard(w)) << n;
  }
  EXPECT_TRUE(transform_matrix("random-hadamard", 96, 1).isApprox(transform_matrix("random-hadamard", 96, 1)));
  EXPECT_FALSE(transform_matrix("random-hadamard", 96, 1).isApprox(transform_matrix("random-hadamard", 96, 2)));
  EXPECT_TRUE(transform_matrix("hadamard", 64, 0).isApprox(sylvester_hadamard(64)));
}

TEST(TransformMatrix, UnsupportedSizesNameTheSupportedOnes) {
  try {
    transform_matrix("hadamard", 96, 0);
    FAIL();
  } catch (const RecipeError& e) {
    EXPECT_NE(std::string(e.what()).find("powers of two"), std::string::npos) << e.what();
  }
  try {
    transform_matrix("random-hadamard", 184, 0);  // 184 = 92 * 2, 92 has no Paley construction
    FAIL();
  } catch (const RecipeError& e) {
    EXPECT_NE(std::string(e.what()).find("12, 20, 24, 28"), std::string::npos) << e.what();
  }
}

// R3: (q W/√d)(k W/√d)ᵀ = q kᵀ for both matrix types: within 1e-12 in fp64, 1e-5 in fp32.
TEST(R3, ScoresUnchanged) {
  for (const char* type : {"hadamard", "random-hadamard"}) {
    const int64_t d = 64, s = 32;
    RowMatrixD w = transform_matrix(type, d, 7) / std::sqrt(static_cast<double>(d));
    RowMatrixD q(s, d), k(s, d);
    for (int64_t i = 0; i < s; ++i)
      for (int64_t j = 0; j < d; ++j) {
        q(i, j) = std::sin(0.1 * static_cast<double>(i * d + j)) * 3;
        k(i, j) = std::cos(0.07 * static_cast<double>(i * d + j) + 1) * (j == 5 ? 40 : 1);
      }
    RowMatrixD ref = q * k.transpose();
    RowMatrixD rot = (q * w) * (k * w).transpose();
    EXPECT_LE((rot - ref).norm() / ref.norm(), 1e-12) << type;
    RowMatrix qf = q.cast<float>(), kf = k.cast<float>(), wf = w.cast<float>();
    RowMatrix rotf = (qf * wf) * (kf * wf).transpose();
    EXPECT_LE((rotf.cast<double>() - ref).norm() / ref.norm(), 1e-5) << type;
  }
}

// R2: v' = Wᵀ v per head (output rows), o' = o W per head (input columns): o' v' = o v.
TEST(R2, WeightRotationPreservesTheProduct) {
  const int64_t d = 16, heads = 3, hidden = 20;
  RowMatrixD w = transform_matrix("random-hadamard", d, 3) / std::sqrt(static_cast<double>(d));
  std::vector<double> v(heads * d * hidden), o(hidden * heads * d);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.3 * static_cast<double>(i));
  for (std::size_t i = 0; i < o.size(); ++i) o[i] = std::cos(0.2 * static_cast<double>(i));
  Eigen::Map<RowMatrixD> vm(v.data(), heads * d, hidden), om(o.data(), hidden, heads * d);
  RowMatrixD ref = om * vm;
  rotate_output_rows(&v, heads * d, hidden, w);
  rotate_input_cols(&o, hidden, heads * d, w);
  EXPECT_LE((om * vm - ref).norm() / ref.norm(), 1e-13);
}

}  // namespace
}  // namespace ctcal
