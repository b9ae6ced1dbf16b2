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
  kKeyPreRope,  // keys after k_norm, before RoPE, [seq, num_key_value_heads, head_dim] (key envelope)
  // Linear inputs (for static input scales of quantized Linear layers), each shown once per
  // shared input as a view with heads = 1 and head_dim = the input width:
  kQkvInput,     // input of q/k/v_proj (the normed hidden state), [seq, 1, hidden]
  kOProjInput,   // input of o_proj (the attention output), [seq, 1, q_dim]
  kGateUpInput,  // input of gate/up_proj (the normed hidden state), [seq, 1, hidden]
  kDownInput,    // input of down_proj (act(gate) * up), [seq, 1, intermediate]
  // MoE layers (observe_expert): one expert's routed rows, from every sample of a chunk together.
  kExpertGateUpInput,  // input of the expert's gate/up_proj, [routed rows, 1, hidden]
  kExpertDownInput,    // input of the expert's down_proj, [routed rows, 1, moe_intermediate]
  // Mamba2 mixers (Nemotron-H, Granite 4 hybrid; model/mamba2.h), once per sample like the above:
  kMambaInProjInput,   // input of in_proj (the normed hidden state), [seq, 1, hidden]
  kMambaOutProjInput,  // input of out_proj (the gated RMSNorm's output), [seq, 1, mamba intermediate]
};
// "q", "k", "v", "qkv_input", "o_proj_input", "gate_up_input", "down_input",
// "expert_gate_up_input", "expert_down_input", "mamba_in_proj_input", "mamba_out_proj_input"
std::string_view site_name(Site s);

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
  // Whether observe() needs the values themselves for (layer, site), or only each head's
  // minimum and maximum over the view: a view of two rows, every head's minimum then maximum
  // (heads, head_dim 1), is then the same observation. The CUDA backend reduces on the device
  // when this is false and copies the values back when it is true. Default: the values.
  virtual bool needs_values(int64_t /*layer*/, Site /*site*/) const { return true; }
  // MoE experts' inputs (kExpertGateUpInput, kExpertDownInput): the rows routed to `expert`
  // (tokens of any sample of the chunk, ascending), once per expert and chunk; asked through
  // wants(layer, site) like every other point. Default: ignored.
  virtual void observe_expert(int64_t /*layer*/, Site /*site*/, int64_t /*expert*/, const HeadsView& /*view*/) {}
};

// Changes Q/K/V in place where a serving engine would quantize them (the KV cache write and,
// with attention quantization, the query), and the dense Linear inputs (kQkvInput, kOProjInput,
// kGateUpInput, kDownInput, kMambaInProjInput, kMambaOutProjInput: FP8 W8A8, each shown as [seq, 1, width] after the observer saw it;
// an MoE layer's MLP input is not, as its router reads it unquantized): used by `ctcal eval`.
class ActivationQuantizer {
 public:
  virtual ~ActivationQuantizer() = default;
  virtual bool quantizes(int64_t layer, Site site) const = 0;
  // data: [seq, heads, head_dim] with row stride `row_stride`.
  virtual void apply(int64_t layer, Site site, float* data, int64_t seq, int64_t heads,
                     int64_t head_dim, int64_t row_stride) = 0;
};

}  // namespace ctcal
