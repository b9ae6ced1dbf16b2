#include "ctcal/transform/hadamard.h"

#include <bit>

#include "ctcal/data/sampling.h"
#include "ctcal/error.h"
#include "ctcal/transform/paley.h"

namespace ctcal {

bool is_power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

RowMatrixD sylvester_hadamard(int64_t n) {
  CTCAL_ASSERT(is_power_of_two(n), "sylvester_hadamard needs a power of two");
  RowMatrixD h(n, n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      h(i, j) = (std::popcount(static_cast<uint64_t>(i & j)) % 2) ? -1.0 : 1.0;
  return h;
}

void fwht_inplace(double* x, int64_t n) {
  CTCAL_ASSERT(is_power_of_two(n), "fwht needs a power of two");
  for (int64_t len = 1; len < n; len <<= 1)
    for (int64_t i = 0; i < n; i += 2 * len)
      for (int64_t j = i; j < i + len; ++j) {
        const double a = x[j], b = x[j + len];
        x[j] = a + b;
        x[j + len] = a - b;
      }
}

std::string supported_hadamard_sizes() {
  return fmt::format("'hadamard': powers of two (1, 2, 4, ..., 128, 256, ...); 'random-hadamard': "
                     "K * 2^m with K = 1 or a Paley order ({}, ...)", fmt::join(paley_orders(260), ", "));
}

RowMatrixD transform_matrix(const std::string& type, int64_t n, uint64_t seed) {
  if (type == "hadamard") {
    if (!is_power_of_two(n))
      throw RecipeError(fmt::format("no 'hadamard' (Sylvester) matrix of size {}; supported sizes: {}",
                                    n, supported_hadamard_sizes()));
    return sylvester_hadamard(n);
  }
  CTCAL_ASSERT(type == "random-hadamard", "transform type validated by the recipe parser");
  // Largest Paley order K with n = K * 2^m.
  int64_t k = 1;
  for (int64_t cand : paley_orders(n))
    if (n % cand == 0 && is_power_of_two(n / cand)) k = cand;
  if (!is_power_of_two(n / k) || n % k != 0)
    throw RecipeError(fmt::format("no 'random-hadamard' matrix of size {}; supported sizes: {}", n,
                                  supported_hadamard_sizes()));
  RowMatrixD hk = k == 1 ? RowMatrixD::Ones(1, 1) : *paley_hadamard(k);
  RowMatrixD h2 = sylvester_hadamard(n / k);
  RowMatrixD a(n, n);  // kron(H_K, H_{2^m})
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) a.block(i * (n / k), j * (n / k), n / k, n / k) = hk(i, j) * h2;
  SplitMix64 rng(seed);
  for (int64_t i = 0; i < n; ++i)
    if (rng.next() >> 63) a.row(i) *= -1.0;  // diag(s) · A
  return a;
}

}  // namespace ctcal
