#pragma once
// The Mamba2 mixer's hyper-parameters (model/mamba2.h computes it), apart so that ModelConfig can
// hold them for the hybrid families without the mixer's weights and functions.
#include <cstdint>
#include <limits>

namespace ctcal {

// Hyper-parameters (the mixer's names; the integrator maps each family's config keys onto them).
// Activation: transformers reads mamba_hidden_act (Nemotron-H) / hidden_act (Granite); only SiLU
// is computed here, so the config parser must refuse any other value by name.
struct Mamba2Config {
  int64_t hidden_size = 0;      // model width
  int64_t num_heads = 0;        // H: SSM heads
  int64_t head_dim = 0;         // P: channels per head; intermediate I = H * P
  int64_t state_size = 0;       // N: SSM state per channel
  int64_t n_groups = 1;         // G: heads share B and C in G groups (H % G == 0)
  int64_t conv_kernel = 4;      // K: depthwise causal convolution width
  int64_t chunk_size = 256;     // L: SSD chunk length (results depend on it only by rounding)
  int64_t norm_group_size = 0;  // gated RMSNorm group (I / G for Nemotron-H, I for Granite)
  double norm_eps = 1e-6;       // gated RMSNorm epsilon
  // torch.clamp(dt, min, max) after softplus: Nemotron-H (time_step_min, inf), Granite
  // config.time_step_limit (default (0, inf)).
  double time_step_min = 0.0;
  double time_step_max = std::numeric_limits<double>::infinity();

  int64_t intermediate_size() const { return num_heads * head_dim; }                  // I
  int64_t conv_dim() const { return intermediate_size() + 2 * n_groups * state_size; }  // I + 2 G N
  int64_t in_proj_dim() const { return intermediate_size() + conv_dim() + num_heads; }  // 2 I + 2 G N + H
};

}  // namespace ctcal
