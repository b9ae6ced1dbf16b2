#include "ctcal/transform/hadamard.h"

#include <bit>

#include "ctcal/error.h"

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

}  // namespace ctcal
