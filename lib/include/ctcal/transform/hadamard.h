#pragma once
// Hadamard matrices for SpinQuant rotations (reference §5.5). Entries are ±1 (unnormalised, as
// compressed-tensors >= 0.11 stores them); the 1/sqrt(n) is applied where they are used.
#include <cstdint>

#include "ctcal/model/tensor_types.h"

namespace ctcal {

bool is_power_of_two(int64_t n);

// Sylvester construction, H[i][j] = (-1)^popcount(i & j). n must be a power of two. [n, n]
RowMatrixD sylvester_hadamard(int64_t n);

// In-place fast Walsh-Hadamard transform of x (length n, a power of two): x <- x * H_n, i.e. the
// same as multiplying the row vector by the Sylvester matrix, in n log n operations.
void fwht_inplace(double* x, int64_t n);

}  // namespace ctcal
