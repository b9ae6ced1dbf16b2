#pragma once
// Paley constructions of Hadamard matrices over GF(q), q a prime power:
//   Paley I  (q ≡ 3 mod 4): order q + 1,     H = I + [[0, 1ᵀ], [-1, Q]]
//   Paley II (q ≡ 1 mod 4): order 2(q + 1),  H = C ⊗ [[1, 1], [1, -1]] + I ⊗ [[1, -1], [-1, -1]]
// with Q the Jacobsthal matrix Q[i][j] = χ(a_i - a_j) (χ the quadratic character) and
// C = [[0, 1ᵀ], [1, Q]] the symmetric conference matrix.
#include <cstdint>
#include <optional>
#include <vector>

#include "ctcal/model/tensor_types.h"

namespace ctcal {

// A ±1 Hadamard matrix of order k from Paley I or II, or nullopt when neither applies.
std::optional<RowMatrixD> paley_hadamard(int64_t k);

// Orders k <= max_k (k not a power of two) that Paley I or II constructs, ascending.
std::vector<int64_t> paley_orders(int64_t max_k);

}  // namespace ctcal
