#pragma once
// `--key-range envelope`: a range for K that holds at EVERY position, from the keys before RoPE.
// RoPE rotates each pair of channels (i, i + half) (transformers' rotate_half layout) by an angle
// that depends on the position; the pair's norm r = sqrt(k_i^2 + k_{i+half}^2) does not change,
// and bounds both components at every angle. Channels past 2 * half (partial RoPE) pass through.
// With an online rotation R applied after RoPE (SpinQuant R3, y = x R), output j is
//   y_j = sum_p (x_a R_aj + x_b R_bj) + sum_{unrotated i} x_i R_ij,
// and Cauchy-Schwarz on each pair gives |x_a R_aj + x_b R_bj| <= r_p sqrt(R_aj^2 + R_bj^2) for
// any angle, so |y_j| <= sum_p r_p sqrt(R_aj^2 + R_bj^2) + sum_i |x_i| |R_ij|. For a normalised
// Hadamard (entries +-1/sqrt(d)) that is sqrt(2/d) sum_p r_p + ...: at most sqrt(2) times the
// largest single component would reach, per pair.
#include <cstdint>
#include <vector>

#include "ctcal/model/observation.h"
#include "ctcal/model/tensor_types.h"

namespace ctcal {

// Per-head bound over every token of `pre_rope` ([seq, heads, head_dim] keys after k_norm,
// before RoPE): env[h] >= |K| of head h after RoPE at any position (and after `rotation`,
// [head_dim, head_dim] or null). `half`: rotary_dim / 2.
void key_envelope(const HeadsView& pre_rope, int64_t half, const RowMatrix* rotation, std::vector<double>* env);

}  // namespace ctcal
