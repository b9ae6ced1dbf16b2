#pragma once
// Named observation points of the forward pass (the llama.cpp `cb(cur, "Kcur", il)` idea).
// The model announces each point and hands a read-only view to whoever asked; observers live
// outside the model and never change its state.
#include <cstdint>
#include <string_view>

namespace ctcal {

enum class Site {
  kQuery,  // post-RoPE (and post-R3) queries, [seq, num_attention_heads, head_dim]
  kKey,    // post-RoPE (and post-R3) keys, [seq, num_key_value_heads, head_dim], before GQA repeat
  kValue,  // values after v_proj (post-R2 when configured), [seq, num_key_value_heads, head_dim]
  // Inputs of the Linear layers (FP8 input scales), each handed over as one "head":
  // [seq, 1, width]. Inputs shared by several Linear layers are announced once.
  kAttnInput,   // input_layernorm output, the input of q/k/v_proj: width hidden_size
  kAttnOutput,  // attention output, the input of o_proj: width num_attention_heads * head_dim
  kMlpInput,    // post_attention_layernorm output, the input of gate/up_proj: width hidden_size
  kMlpHidden,   // act(gate) * up, the input of down_proj: width intermediate_size
};
std::string_view site_name(Site s);  // "q", "k", "v", "attn_in", "attn_out", "mlp_in", "mlp_hidden"

// A strided view of one sample's per-head activations: element (t, h, d) is at
// data[t * row_stride + h * head_dim + d].
struct HeadsView {
  const float* data;
  int64_t seq;
  int64_t heads;
  int64_t head_dim;
  int64_t row_stride;
  float at(int64_t t, int64_t h, int64_t d) const { return data[t * row_stride + h * head_dim + d]; }
};

class ActivationObserver {
 public:
  virtual ~ActivationObserver() = default;
  // The "ask" step: nothing is handed over for points nobody wants.
  virtual bool wants(int64_t layer, Site site) const = 0;
  // The "collect" step: called once per sample, in sample order.
  virtual void observe(int64_t layer, Site site, const HeadsView& view) = 0;
};

// Changes Q/K/V in place where a serving engine would quantize them (the KV cache write and,
// with attention quantization, the query): used by `ctcal eval` for fake quantization.
class ActivationQuantizer {
 public:
  virtual ~ActivationQuantizer() = default;
  virtual bool quantizes(int64_t layer, Site site) const = 0;
  // data: [seq, heads, head_dim] with row stride `row_stride`.
  virtual void apply(int64_t layer, Site site, float* data, int64_t seq, int64_t heads,
                     int64_t head_dim, int64_t row_stride) = 0;
};

}  // namespace ctcal
