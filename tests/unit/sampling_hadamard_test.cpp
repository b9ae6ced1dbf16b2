#include <gtest/gtest.h>

#include "ctcal/data/sampling.h"
#include "ctcal/transform/hadamard.h"

namespace ctcal {
namespace {

TEST(Sampling, SplitMix64ReferenceOutputs) {
  // First outputs of SplitMix64 seeded with 0 (Vigna's reference implementation).
  SplitMix64 r(0);
  EXPECT_EQ(r.next(), 0xe220a8397b1dcdafull);
  EXPECT_EQ(r.next(), 0x6e789e6aa1b965f4ull);
  EXPECT_EQ(r.next(), 0x06c45d188009454full);
}

TEST(Sampling, ShuffleIsAPermutationAndSeeded) {
  auto a = select_samples(100, 100, true, 42), b = select_samples(100, 100, true, 42);
  auto c = select_samples(100, 100, true, 43);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::vector<std::size_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < 100; ++i) EXPECT_EQ(sorted[i], i);
  EXPECT_EQ(select_samples(5, 3, false, 1), (std::vector<std::size_t>{0, 1, 2}));
}

TEST(Sampling, BoundedIsUnbiasedEnough) {
  SplitMix64 r(7);
  std::vector<int> counts(3, 0);
  for (int i = 0; i < 30000; ++i) counts[r.bounded(3)]++;
  for (int c : counts) EXPECT_NEAR(c, 10000, 400);
}

TEST(Hadamard, SylvesterIsOrthogonalForEveryPowerOfTwo) {
  for (int64_t n = 1; n <= 256; n *= 2) {
    RowMatrixD h = sylvester_hadamard(n);
    RowMatrixD hh = h * h.transpose();
    EXPECT_TRUE(hh.isApprox(RowMatrixD::Identity(n, n) * static_cast<double>(n))) << n;
    EXPECT_TRUE(h.isApprox(h.transpose())) << n;
  }
}

TEST(Hadamard, FwhtEqualsDenseProduct) {
  for (int64_t n : {2, 8, 64, 128}) {
    std::vector<double> x(n);
    for (int64_t i = 0; i < n; ++i) x[i] = std::sin(0.37 * static_cast<double>(i * i + 1));
    Eigen::RowVectorXd dense = Eigen::Map<Eigen::RowVectorXd>(x.data(), n) * sylvester_hadamard(n);
    fwht_inplace(x.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(x[i], dense[i], 1e-12) << n << " " << i;
  }
}

}  // namespace
}  // namespace ctcal
