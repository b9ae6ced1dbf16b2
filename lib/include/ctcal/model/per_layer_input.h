#pragma once
// Gemma 4's per-layer input embeddings (PLE), as transformers 5.17's Gemma4TextModel and
// Gemma4TextDecoderLayer compute them (vLLM 0.34's gemma4.py the same). For layer l and token id t
// with its scaled embedding e = embed_tokens[t] * sqrt(hidden):
//
//   ple_l(t) = (rms_norm(per_layer_model_projection_l(e) * hidden^-0.5, per_layer_projection_norm)
//               + embed_tokens_per_layer[t, l P : (l + 1) P] * sqrt(P)) * 2^-0.5          [P]
//
// and after the layer's MLP block (before layer_scalar):
//
//   x += post_per_layer_input_norm(per_layer_projection(gelu_tanh(per_layer_input_gate(x)) * ple_l))
//
// Computed per layer and chunk from the token ids (not stored for every layer: L P floats per token).
#include <cstdint>

#include "ctcal/io/checkpoint.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/model_config.h"

namespace ctcal {

// The PLE weights of layer `layer` (fp32): its slice of per_layer_model_projection, the shared
// per_layer_projection_norm, and the layer's gate, projection and post norm.
void read_per_layer_input_weights(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer, PerLayerInputWeights* w);

// ple_l for the tokens `ids` [n] -> out [n, P].
void per_layer_input_rows(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer, const PerLayerInputWeights& w,
                          const int32_t* ids, int64_t n, RowMatrix* out);

// x [n, hidden] += post_norm(proj(gelu_tanh(gate(x)) * ple)), ple [n, P].
void add_per_layer_input(const ModelConfig& c, const PerLayerInputWeights& w, const RowMatrix& ple, Eigen::Ref<RowMatrix> x);

// The top-level PLE tensors' names: "<prefix>embed_tokens_per_layer.weight" [vocab, L P],
// "<prefix>per_layer_model_projection.weight" [L P, hidden], "<prefix>per_layer_projection_norm.weight" [P].
std::string per_layer_embedding_name(const ModelConfig& c);
std::string per_layer_model_projection_name(const ModelConfig& c);  // without ".weight"
std::string per_layer_projection_norm_name(const ModelConfig& c);

}  // namespace ctcal
