#pragma once
// The fp32 decoder forward pass of every family in model/family.h, identical in math to
// transformers 5.17 (reference §7 for Llama): pre-norm RMSNorm, half-split RoPE at positions
// 0..S-1 per sample, GQA, causal (optionally sliding-window) softmax attention, gated MLP; the
// family's extras (q/k norms, sandwich norms, (1 + w) norms, scaled embeddings, GELU-tanh) are
// branches of the one layer function (model/layer.cpp). Built to run layer by layer over many
// samples: the hidden states of every sample stay resident and one layer's weights at a time
// are streamed through THE layer loop, run_layers(), which calibration, eval and forward() share.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <vector>

#include "ctcal/io/checkpoint.h"
#include "ctcal/model/compute_device.h"
#include "ctcal/model/gated_deltanet.h"
#include "ctcal/model/model_config.h"
#include "ctcal/model/layer_ops.h"
#include "ctcal/model/mamba2.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/observation.h"
#include "ctcal/model/phase_times.h"
#include "ctcal/model/sample_span.h"
#include "ctcal/model/tensor_types.h"
#include "ctcal/util/uninit_buffer.h"

namespace ctcal {

struct ForwardOptions {
  // Where run_layers() runs the layers: the CPU, or a GPU through model/cuda_backend.h (bf16
  // tensor-core GEMMs with fp32 accumulation; everything else fp32).
  ComputeDevice device;
  // Online rotation of queries and keys after RoPE (SpinQuant R3): each head's row vector x
  // becomes x * rotation. [head_dim, head_dim], already divided by sqrt(head_dim). Null: none.
  const RowMatrix* qk_rotation = nullptr;
  // Observers see Q/K before the rotation (a recipe that lists SpinQuant after the
  // QuantizationModifier observes unrotated keys, as llm-compressor's hook order does).
  bool observe_before_rotation = false;
  // Fake quantization of Q/K/V after rotation and observation, and of dense Linear inputs (eval).
  // Null: none.
  ActivationQuantizer* quantizer = nullptr;
  // Tokens per GEMM chunk; bounds the activation working set ([chunk, intermediate] floats).
  int64_t chunk_tokens = 4096;
  // Flash-style attention blocking (model/attention.h): query rows per task and keys per step.
  int64_t attention_block = 64;
  int64_t attention_key_block = 256;
  // CPU --compute-dtype bf16: Q K^T and P V as bf16 GEMMs (causal_attention_bf16) instead of fp32.
  bool bf16_attention = false;
  // Every sample's first token at this position instead of 0 (eval at long positions: RoPE'd
  // K and Q move, attention scores do not, since RoPE depends on relative positions only).
  int64_t position_offset = 0;
  // Tokens per chunk on a GPU (GEMM efficiency wants large chunks; the GPU's memory bounds them).
  int64_t gpu_chunk_tokens = 16384;
  // The GPU memory the run may count on beyond its weight slots and scratch (bytes; 0: whatever is
  // free): decides whether every sample's hidden states stay on the device, and the attention
  // blocks' size.
  int64_t gpu_memory_bytes = 0;
  // The token ids of the hidden states' rows [total_tokens], when run_layers() is handed empty
  // hidden states and embeds them itself: the CPU first thing; a GPU while its loader already
  // reads the first layers' weights (the embedding of 64 x 2048 tokens of a 1B-70B model, 1-4 GB
  // of fp32 rows, takes 0.1-0.4 s). Null: hidden is already embedded.
  const std::vector<int32_t>* token_ids = nullptr;
  // Called after each chunk of a layer with the tokens of that layer done so far: progress, and
  // cancellation within a layer (it may throw). Empty: nothing.
  std::function<void(int64_t layer, int64_t tokens_done)> after_chunk;
};

// How run_layers() streams the layers, and what it calls around each one. Every hook may be empty.
struct LayerLoop {
  // Projections packed to bf16 straight from the checkpoint (--compute-dtype bf16 without R2);
  // otherwise fp32, reusing the previous layer's buffers.
  bool load_bf16 = false;
  bool last_layer_mlp = true;   // false: calibration skips the last MLP (it feeds only the head)
  bool release_pages = true;    // drop each layer's mmap pages after it ran
  // false: the caller does not read the hidden states afterwards (calibration), so a GPU run
  // need not copy them back.
  bool keep_hidden = true;
  std::function<void(int64_t layer)> before_layer;                  // e.g. cancellation (may throw)
  // R2 rotation, bf16 packing. Set only when it changes something: the CUDA backend streams the
  // checkpoint's bf16 bits straight to the GPU when there is nothing to edit.
  std::function<void(int64_t layer, LayerWeights&)> edit_weights;
  std::function<ActivationObserver*(int64_t layer)> observer;       // null: nothing observed
  std::function<void(int64_t layer)> after_layer;                   // collect the layer's results
};

class Decoder {
 public:
  Decoder(const Checkpoint& ckpt, ModelConfig cfg);

  const ModelConfig& config() const { return cfg_; }
  const Checkpoint& checkpoint() const { return ckpt_; }

  // Looks up token embeddings. Returns [total_tokens, hidden]; fills `spans`.
  RowMatrix embed(const std::vector<std::vector<int32_t>>& samples,
                  std::vector<SampleSpan>* spans) const;
  // The samples' token ids in row order [total_tokens] (the rows embed() would return); fills `spans`.
  static std::vector<int32_t> token_rows(const std::vector<std::vector<int32_t>>& samples,
                                         std::vector<SampleSpan>* spans);
  // Embeddings of ids [total_tokens] -> [total_tokens, hidden] (embed() from token_rows()).
  RowMatrix embed_ids(const std::vector<int32_t>& ids) const;

  // Runs decoder layer `layer` over every sample, updating hidden [total_tokens, hidden] in
  // place. Q/K/V of each sample are shown to `observer` (may be null) in sample order.
  // Throws InputError naming the layer when an activation becomes NaN or Inf.
  void run_layer(const LayerWeights& w, int64_t layer, const std::vector<SampleSpan>& spans,
                 RowMatrix& hidden, ActivationObserver* observer,
                 const ForwardOptions& options) const;

  // THE layer loop, for every device: for each layer, the caller's hooks around the backend's
  // load (stream, edit) -> run -> release (model/layer_backend.h says the order). hidden:
  // [total_tokens, hidden] from embed(), updated in place; or empty with options.token_ids set,
  // and then embedded here.
  void run_layers(const std::vector<SampleSpan>& spans, RowMatrix& hidden, const LayerLoop& loop,
                  const ForwardOptions& options) const;

  // Final norm and lm_head: hidden [tokens, hidden] -> logits [tokens, vocab].
  RowMatrix logits(const RowMatrix& hidden) const;

  // Whole forward for one sample with every layer (through run_layers): logits [seq, vocab].
  RowMatrix forward(const std::vector<int32_t>& ids, ActivationObserver* observer,
                    const ForwardOptions& options,
                    const std::function<void(int64_t, LayerWeights&)>& edit_weights = {}) const;

 private:
  friend class CpuLayers;  // the CPU backend of run_layers (decoder.cpp)
  // Activation buffers reused across chunks and layers (one run_layer at a time per model).
  struct Scratch {
    UninitBuffer<float> xn, q, k, v, attn, proj, gate, up;
    UninitBuffer<float> q_gate;  // [rows, 2 q_dim] gated attention's q_proj output (attention_output_gate)
    GatedDeltaNetScratch deltanet;  // linear-attention layers' buffers
    Mamba2Buffers mamba;            // Mamba2 layers' buffers
    UninitBuffer<uint16_t> bf16;  // bf16 mode only: the rounded input of the next projections
    int64_t rows = 0;
    void reserve(int64_t rows_needed, const ModelConfig& c);
    static Eigen::Map<RowMatrix> view(UninitBuffer<float>& buf, int64_t rows, int64_t cols) {
      return Eigen::Map<RowMatrix>(buf.data(), rows, cols);
    }
  };
  const Checkpoint& ckpt_;
  ModelConfig cfg_;
  mutable Scratch scratch_;
  mutable PhaseTimes phases_;  // CTCAL_CPU_PROFILE=1: wall time per phase of run_layers
  // Gemma 4's per-layer input embeddings: the token id of each hidden-state row [total_tokens],
  // kept by embed_ids (each layer recomputes its per-layer input from them); empty otherwise.
  mutable std::vector<int32_t> row_ids_;
  // Gemma 4's KV-shared layers: the K and V [total_tokens, kv_dim] of each layer a later layer
  // shares, as cached (model/layer.cpp), keyed by that layer.
  mutable std::map<int64_t, std::pair<RowMatrix, RowMatrix>> shared_kv_;
};

// Final norm + lm_head, loaded once (tied embeddings reuse embed_tokens.weight), with the
// family's final logit softcapping when the config has one.
class LmHead {
 public:
  LmHead(const Checkpoint& ckpt, const ModelConfig& cfg);
  // hidden [tokens, hidden] -> logits [tokens, vocab]
  RowMatrix logits(const Eigen::Ref<const RowMatrix>& hidden) const;

 private:
  double eps_;
  std::optional<double> softcap_;
  double logits_scaling_ = 1.0;  // logits are divided by it (Granite; 1 elsewhere)
  Vector norm_;   // [hidden], the norm's multiplier (w or 1 + w)
  Linear head_;   // [vocab, hidden]
};

}  // namespace ctcal
