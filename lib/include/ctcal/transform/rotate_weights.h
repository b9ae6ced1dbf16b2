#pragma once
// Offline SpinQuant R2 (reference §5.7): v_proj <- blockdiag(H)^T v_proj (weight_output, bias
// too) and o_proj <- o_proj blockdiag(H) (inverse weight_input), H = Hadamard / sqrt(head_dim),
// in float64, then cast back. The model's output is unchanged; values come out rotated per head.
#include <cstdint>
#include <vector>

#include "ctcal/model/tensor_types.h"

namespace ctcal {

// w: [kv_dim, hidden] row-major values (any float storage converted to double by the caller).
// Rotates each head block of rows: W_blk <- H^T W_blk. bias: [kv_dim] or empty.
void rotate_output_rows(std::vector<double>* w, int64_t rows, int64_t cols, const RowMatrixD& h_norm);
// w: [hidden, q_dim]: each head block of columns W_blk <- W_blk H (the inverse of H^T).
void rotate_input_cols(std::vector<double>* w, int64_t rows, int64_t cols, const RowMatrixD& h_norm);

}  // namespace ctcal
