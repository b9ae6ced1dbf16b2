#pragma once
// Hadamard matrices for SpinQuant rotations (reference §5.5). Entries are ±1 (unnormalised, as
// compressed-tensors >= 0.11 stores them); the 1/sqrt(n) is applied where they are used.
#include <cstdint>
#include <string>

#include "ctcal/model/tensor_types.h"

namespace ctcal {

bool is_power_of_two(int64_t n);

// Sylvester construction, H[i][j] = (-1)^popcount(i & j). n must be a power of two. [n, n]
RowMatrixD sylvester_hadamard(int64_t n);

// In-place fast Walsh-Hadamard transform of x (length n, a power of two): x <- x * H_n, i.e. the
// same as multiplying the row vector by the Sylvester matrix, in n log n operations.
void fwht_inplace(double* x, int64_t n);

// The matrix a TransformScheme of `type` uses for size n (unnormalised):
//   "hadamard": Sylvester, n a power of two;
//   "random-hadamard": diag(s) · kron(H_K, H_{2^m}) with n = K·2^m, H_K the largest Paley order
//   dividing n (K = 1 when n is a power of two) and s a ±1 vector drawn from SplitMix64(seed).
// Throws RecipeError naming the supported sizes when n has no construction.
RowMatrixD transform_matrix(const std::string& type, int64_t n, uint64_t seed);

// "1, 2, 4, ... (powers of two); K·2^m for K in 12, 20, 28, ..." for messages and --help.
std::string supported_hadamard_sizes();

}  // namespace ctcal
