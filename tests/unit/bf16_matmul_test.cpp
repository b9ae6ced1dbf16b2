// The bf16 projection GEMM (model/onednn_matmul.h): packed weight tiles and fixed output tiles
// against a double-precision product of the same bf16-rounded inputs, on shapes that leave
// partial row blocks and column tiles; and the same bits for any thread count.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "ctcal/dtype.h"
#include "ctcal/model/onednn_matmul.h"

namespace ctcal {
namespace {

struct Shape {
  int64_t n, in, out;
};

class Bf16Matmul : public ::testing::TestWithParam<Shape> {};

TEST_P(Bf16Matmul, MatchesDoubleProductOfRoundedInputs) {
  if (!cpu_has_native_bf16()) GTEST_SKIP() << "no AVX512-BF16/AMX on this CPU";
  const Shape sh = GetParam();
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  RowMatrix x(sh.n, sh.in);                                       // [n, in] fp32
  std::vector<uint16_t> w(static_cast<std::size_t>(sh.out * sh.in));  // [out, in] bf16 bits
  for (Eigen::Index i = 0; i < x.size(); ++i) x.data()[i] = nd(rng);
  for (auto& v : w) v = f32_to_bf16(nd(rng));
  std::vector<uint16_t> xb(static_cast<std::size_t>(sh.n * sh.in));  // [n, in] bf16 bits
  round_rows_to_bf16(x, xb.data());
  const PackedBf16Weights packed(w.data(), sh.out, sh.in);
  std::vector<float> y(static_cast<std::size_t>(sh.n * sh.out));  // [n, out]
  matmul_bf16(xb.data(), sh.n, packed, y.data());
  // Products of bf16 values are exact in fp32; only the fp32 accumulation rounds: bound the
  // error by in * 2^-24 * sum |x w| (a layout or tiling bug is off by O(|y|), far above it).
  for (int64_t r = 0; r < sh.n; ++r)
    for (int64_t c = 0; c < sh.out; ++c) {
      double want = 0, mag = 0;
      for (int64_t k = 0; k < sh.in; ++k) {
        const double p = double(bf16_to_f32(xb[r * sh.in + k])) * bf16_to_f32(w[c * sh.in + k]);
        want += p;
        mag += std::fabs(p);
      }
      ASSERT_NEAR(y[r * sh.out + c], want, double(sh.in) * std::ldexp(1.0, -24) * mag + 1e-30)
          << "row " << r << " col " << c;
    }
  // Rounding itself: nearest even, as PyTorch's .to(torch.bfloat16).
  for (Eigen::Index i = 0; i < x.size(); ++i) ASSERT_EQ(xb[i], f32_to_bf16(x.data()[i]));
}

INSTANTIATE_TEST_SUITE_P(Shapes, Bf16Matmul,
                         ::testing::Values(Shape{1, 64, 64},       // one row
                                           Shape{300, 72, 530},    // partial row block and column tile
                                           Shape{513, 128, 1100},  // three row blocks, three tiles
                                           Shape{256, 32, 512}),   // exactly one tile
                         [](const auto& param_info) { return "shape" + std::to_string(param_info.index); });

TEST(Bf16MatmulThreads, SameBitsForAnyThreadCount) {
  if (!cpu_has_native_bf16()) GTEST_SKIP() << "no AVX512-BF16/AMX on this CPU";
  const int64_t n = 700, in = 256, out = 1300;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<uint16_t> x(static_cast<std::size_t>(n * in)), w(static_cast<std::size_t>(out * in));
  for (auto& v : x) v = f32_to_bf16(nd(rng));
  for (auto& v : w) v = f32_to_bf16(nd(rng));
  const PackedBf16Weights packed(w.data(), out, in);
  std::vector<float> a(static_cast<std::size_t>(n * out)), b(a.size());
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  matmul_bf16(x.data(), n, packed, a.data());
  omp_set_num_threads(3);
  matmul_bf16(x.data(), n, packed, b.data());
  omp_set_num_threads(saved);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

}  // namespace
}  // namespace ctcal
