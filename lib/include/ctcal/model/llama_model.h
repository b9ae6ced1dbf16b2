#pragma once
// The fp32 Llama forward pass, identical in math to transformers' LlamaForCausalLM
// (reference §7): pre-norm RMSNorm, half-split RoPE at positions 0..S-1 per sample, GQA,
// causal softmax attention, SwiGLU MLP. Built to run layer by layer over many samples: the
// caller owns the hidden states of every sample and streams one layer's weights at a time.
#include <cstdint>
#include <functional>
#include <vector>

#include "ctcal/io/checkpoint.h"
#include "ctcal/model/llama_config.h"
#include "ctcal/model/llama_weights.h"
#include "ctcal/model/observation.h"
#include "ctcal/model/sample_span.h"
#include "ctcal/model/tensor_types.h"
#include "ctcal/util/uninit_buffer.h"

namespace ctcal {

struct ForwardOptions {
  // Online rotation of queries and keys after RoPE (SpinQuant R3): each head's row vector x
  // becomes x * rotation. [head_dim, head_dim], already divided by sqrt(head_dim). Null: none.
  const RowMatrix* qk_rotation = nullptr;
  // Observers see Q/K before the rotation (a recipe that lists SpinQuant after the
  // QuantizationModifier observes unrotated keys, as llm-compressor's hook order does).
  bool observe_before_rotation = false;
  // Fake quantization of Q/K/V after rotation and observation (eval). Null: none.
  ActivationQuantizer* quantizer = nullptr;
  // Tokens per GEMM chunk; bounds the activation working set ([chunk, intermediate] floats).
  int64_t chunk_tokens = 4096;
  // Flash-style attention blocking (model/attention.h): query rows per task and keys per step.
  int64_t attention_block = 64;
  int64_t attention_key_block = 256;
};

class LlamaModel {
 public:
  LlamaModel(const Checkpoint& ckpt, LlamaConfig cfg);

  const LlamaConfig& config() const { return cfg_; }
  const Checkpoint& checkpoint() const { return ckpt_; }

  // Looks up token embeddings. Returns [total_tokens, hidden]; fills `spans`.
  RowMatrix embed(const std::vector<std::vector<int32_t>>& samples,
                  std::vector<SampleSpan>* spans) const;

  // Runs decoder layer `layer` over every sample, updating hidden [total_tokens, hidden] in
  // place. Q/K/V of each sample are shown to `observer` (may be null) in sample order.
  // Throws InputError naming the layer when an activation becomes NaN or Inf.
  void run_layer(const LayerWeights& w, int64_t layer, const std::vector<SampleSpan>& spans,
                 RowMatrix& hidden, ActivationObserver* observer,
                 const ForwardOptions& options) const;

  // Final norm and lm_head: hidden [tokens, hidden] -> logits [tokens, vocab].
  RowMatrix logits(const RowMatrix& hidden) const;

  // Whole forward for one sample with every layer: logits [seq, vocab].
  RowMatrix forward(const std::vector<int32_t>& ids, ActivationObserver* observer,
                    const ForwardOptions& options,
                    const std::function<void(int64_t, LayerWeights&)>& edit_weights = {}) const;

 private:
  // Activation buffers reused across chunks and layers (one run_layer at a time per model).
  struct Scratch {
    UninitBuffer<float> xn, q, k, v, attn, proj, gate, up;
    UninitBuffer<uint16_t> bf16;  // bf16 mode only: the rounded input of the next projections
    int64_t rows = 0;
    void reserve(int64_t rows_needed, const LlamaConfig& c);
    static Eigen::Map<RowMatrix> view(UninitBuffer<float>& buf, int64_t rows, int64_t cols) {
      return Eigen::Map<RowMatrix>(buf.data(), rows, cols);
    }
  };
  const Checkpoint& ckpt_;
  LlamaConfig cfg_;
  mutable Scratch scratch_;
};

// Final norm + lm_head, loaded once (tied embeddings reuse embed_tokens.weight).
class LmHead {
 public:
  LmHead(const Checkpoint& ckpt, const LlamaConfig& cfg);
  // hidden [tokens, hidden] -> logits [tokens, vocab]
  RowMatrix logits(const Eigen::Ref<const RowMatrix>& hidden) const;

 private:
  double eps_;
  Vector norm_;   // [hidden]
  Linear head_;   // [vocab, hidden]
};

// y = x * rsqrt(mean(x^2) + eps) * weight, row by row. x, y: [rows, hidden].
void rms_norm(const Eigen::Ref<const RowMatrix>& x, const Vector& weight, double eps, RowMatrix* y);
void rms_norm_into(const Eigen::Ref<const RowMatrix>& x, const Vector& weight, double eps, Eigen::Ref<RowMatrix> y);

}  // namespace ctcal
