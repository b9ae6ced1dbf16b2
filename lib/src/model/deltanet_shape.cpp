#include "ctcal/model/deltanet_shape.h"

namespace ctcal {

GatedDeltaNetShape deltanet_shape(const ModelConfig& c) {
  const LinearAttentionConfig& la = c.linear_attention;
  GatedDeltaNetShape s;
  s.hidden = c.hidden_size;
  s.num_k_heads = la.num_k_heads;
  s.num_v_heads = la.num_v_heads;
  s.head_k_dim = la.head_k_dim;
  s.head_v_dim = la.head_v_dim;
  s.conv_kernel = la.conv_kernel;
  s.eps = c.rms_norm_eps;  // Qwen3_5GatedDeltaNet's RMSNormGated(eps=config.rms_norm_eps)
  return s;
}

}  // namespace ctcal
