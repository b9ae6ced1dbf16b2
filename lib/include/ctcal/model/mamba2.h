#pragma once
// The Mamba2 mixer of Nemotron-H (NemotronHMamba2Mixer) and Granite 4 hybrid
// (GraniteMoeHybridMambaLayer), computed as transformers 5.17's pure-torch path computes a prefill
// from zero state (torch_forward's mamba2_chunk_scan; no cache):
//
//   [z | xBC | dt] = in_proj(x)                          z: [T, I], xBC: [T, conv_dim], dt: [T, H]
//   xBC = silu(causal depthwise conv1d(xBC) + conv_b)     kernel K, left zero padding
//   [xs | B | C] = xBC                                    xs: [T, H * P], B, C: [T, G * N]
//   dt = clamp(softplus(dt + dt_bias), time_step_min, time_step_max);  A = -exp(A_log)
//   per head h (group g = h / (H / G)), state S_h: [P, N] from 0:
//     S_h(t) = exp(A_h dt(t, h)) S_h(t-1) + dt(t, h) xs_h(t) B_g(t)^T
//     y_h(t) = S_h(t) C_g(t) + D_h xs_h(t)
//   out = out_proj(norm_w * group_rms_norm(y * silu(z)))  groups of norm_group_size along I
//
// The recurrence is evaluated in chunks of chunk_size tokens (the SSD form): within a chunk,
// attention-like GEMMs under the decay mask; across chunks, one [P, N] state per head carried
// forward. The two families differ only in how their configs set these values (no residual or
// multiplier inside the mixer; Granite's residual_multiplier is the decoder layer's).
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "ctcal/model/layer_weights.h"
#include "ctcal/model/mamba2_config.h"
#include "ctcal/model/sample_span.h"
#include "ctcal/model/tensor_types.h"

namespace ctcal {

// One mixer's weights in fp32 (in_proj / out_proj may instead be packed bf16: linear() runs
// either). Checkpoint names: <prefix>.in_proj.weight etc.; conv1d.weight is stored [conv_dim, 1, K].
struct Mamba2Weights {
  Linear in_proj;   // [in_proj_dim, hidden] (+ [in_proj_dim] bias); rows are [z | xBC | dt]
  RowMatrix conv_w; // [conv_dim, K] conv1d.weight with its middle axis dropped
  Vector conv_b;    // [conv_dim] conv1d.bias, or empty
  Vector dt_bias;   // [H]
  Vector A_log;     // [H] (A = -exp(A_log))
  Vector D;         // [H] skip connection
  Vector norm_w;    // [I] gated RMSNorm weight (norm.weight)
  Linear out_proj;  // [hidden, I] (+ [hidden] bias)
};

// Throws InputError naming `module` (e.g. "backbone.layers.0.mixer") when a hyper-parameter is
// impossible (H % G, I % norm_group_size, sizes < 1, min > max) or a weight's shape disagrees
// with the config.
void check_mamba2(const Mamba2Config& c, const Mamba2Weights& w, const char* module);

// The forward pass's intermediates, kept by a caller that runs many mixers (the layer loop) so
// that each call does not page-fault ~(2 I + 2 conv_dim + hidden) floats per row afresh.
struct Mamba2Buffers {
  RowMatrix zxbcdt;            // [rows, in_proj_dim] in_proj output [z | xBC | dt]
  RowMatrix xbc;               // [rows, conv_dim] after the convolution and SiLU
  RowMatrix dt;                // [rows, H] after softplus and the clamp
  RowMatrix ys;                // [rows, I] scan output, then the gated norm's
  RowMatrix out;               // [rows, hidden] out_proj output
  std::vector<uint16_t> bf16;  // [rows, max(hidden, I)] projection inputs in bf16 (bf16 weights only)
};

// y = mixer(x) for each sample of `samples` independently (each from zero state), rows of x
// [rows, hidden] -> y [rows, hidden] (pre-sized; must not alias x). Rows outside every span are
// left untouched. Threads: OpenMP over rows (projections, conv, norm) and over (sample, head
// block) tasks (the scan); the result is the same for any thread count (fixed summation orders).
// `buffers`: scratch to reuse across calls, or null. `out_proj_input`, if set, is shown out_proj's
// input [rows, I] (the gated norm's output, rows as x's) before out_proj reads it, and may change it
// in place (the FP8 input hook point and eval's fake quantization: model/layer.cpp).
using Mamba2InputHook = std::function<void(Eigen::Ref<RowMatrix>)>;
void mamba2_forward(const Mamba2Config& c, const Mamba2Weights& w, const Eigen::Ref<const RowMatrix>& x,
                    const std::vector<SampleSpan>& samples, Eigen::Ref<RowMatrix> y, Mamba2Buffers* buffers = nullptr,
                    const Mamba2InputHook& out_proj_input = {});
// One sample: x [T, hidden] -> [T, hidden].
RowMatrix mamba2_forward(const Mamba2Config& c, const Mamba2Weights& w, const Eigen::Ref<const RowMatrix>& x);

// The SSD scan alone (exposed for tests and the bench), one sample: xs [T, H * P], dt [T, H]
// (after softplus and clamp), B, C [T, G * N] (views; row strides may exceed the widths) ->
// y [T, H * P] = the recurrence above with the D skip, before the gated norm.
void mamba2_chunk_scan(const Mamba2Config& c, const Vector& A_log, const Vector& D, const Eigen::Ref<const RowMatrix>& xs,
                       const Eigen::Ref<const RowMatrix>& dt, const Eigen::Ref<const RowMatrix>& B,
                       const Eigen::Ref<const RowMatrix>& C, Eigen::Ref<RowMatrix> y);

}  // namespace ctcal
