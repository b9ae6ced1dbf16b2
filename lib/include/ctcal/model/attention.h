#pragma once
// Causal (optionally sliding-window) softmax attention of each sample, as transformers' eager
// attention computes it (scores = q k^T / sqrt(d), masked softmax in fp32, times v), blocked
// flash-style so that no [S, S] score matrix exists: a task takes `block` query positions of the
// n_rep query heads that share one kv head and walks the keys `key_block` at a time with an
// online softmax (running max and sum), holding [n_rep * block, key_block] scores. Memory and
// cache footprint are independent of the sequence length; the result does not depend on the
// thread count (fixed summation order).
#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "ctcal/model/model_config.h"
#include "ctcal/model/sample_span.h"

namespace ctcal {

// What one layer's attention needs to know.
struct AttentionShape {
  int64_t heads = 0, kv_heads = 0, head_dim = 0;
  std::optional<int64_t> window;  // position q sees keys k with q - window < k <= q; null: all k <= q
  float scale = 0;                // scores = q k^T * scale
  // [heads] attention sinks (gpt-oss), or null: one more logit per query head in each row's
  // softmax, whose probability is dropped (the row's weights then sum to less than 1).
  const float* sinks = nullptr;
  // Chunked local attention (Llama 4's RoPE layers, create_chunked_causal_mask): position q sees
  // only keys k <= q of its own chunk, floor((k + chunk_origin) / chunk) == floor((q + chunk_origin)
  // / chunk); chunk_origin is the absolute position of the sample's first token. null: no chunks.
  std::optional<int64_t> chunk;
  int64_t chunk_origin = 0;
  // The first key position q may see (window and chunk cut the causal range [0, q]).
  int64_t first_visible(int64_t q) const {
    int64_t lo = window ? std::max<int64_t>(0, q - *window + 1) : 0;
    if (chunk) lo = std::max<int64_t>(lo, (q + chunk_origin) / *chunk * *chunk - chunk_origin);
    return lo;
  }
  // Layer `layer` of a model: its window (sliding layers only) and the family's scale
  // (1/sqrt(head_dim), or query_pre_attn_scalar^-0.5 for Gemma 3).
  static AttentionShape of(const ModelConfig& cfg, int64_t layer);
  // The default scale 1/sqrt(head_dim), computed in fp32 as ctcal always has.
  static AttentionShape plain(int64_t heads, int64_t kv_heads, int64_t head_dim, std::optional<int64_t> window);
  int64_t q_dim() const { return heads * head_dim; }
  int64_t kv_dim() const { return kv_heads * head_dim; }
};

// q: [rows, heads * d], k/v: [rows, kv_heads * d] -> out: [rows, heads * d] (dense row-major,
// d = shape.head_dim); each span of rows is one sample, attending within itself. All samples'
// tasks run in one parallel loop, largest first: per-sample loops left 16 threads idle behind
// the last query block of each sample. `block`: query rows per task; `key_block`: keys per step.
void causal_attention(const float* q, const float* k, const float* v, float* out,
                      const std::vector<SampleSpan>& samples, const AttentionShape& shape, int64_t block,
                      int64_t key_block);

// The plain path the fast ones are tested against, as gemma.cpp keeps one beside its fast path:
// the textbook formula for one sample, in double, with one [S, S] score matrix per head:
// softmax(q k^T * shape.scale + causal/window mask [+ sink logit, dropped]) v. q: [seq, heads * d],
// k/v: [seq, kv_heads * d] -> out: [seq, heads * d]. O(S^2) memory and no blocking: for tests and
// for reading, never for a run.
void causal_attention_plain(const float* q, const float* k, const float* v, double* out, int64_t seq,
                            const AttentionShape& shape);

// The same with bf16 products for --compute-dtype bf16 (CPU): q, k, v rounded to bf16, q k^T
// and p v as oneDNN bf16 GEMMs (AMX or AVX512-BF16) with fp32 accumulation, the softmax in fp32
// and its probabilities rounded to bf16 before p v, as PyTorch's bf16 CPU attention computes
// it. Every task's GEMMs have one padded shape (rep * block rows, key_block keys), each run by
// one thread with one kernel: the result does not depend on the thread count either.
// scratch: room for attention_bf16_scratch(shape, rows, key_block) bf16 values (the rounded q, k,
// v), rows = the end of the last span. The caller lends it (the layer's projection-input
// buffer, free while attention runs): a buffer of its own kept 50 MB more resident on the 8B
// shape and measured slower in the GEMMs that followed.
void causal_attention_bf16(const float* q, const float* k, const float* v, float* out,
                           const std::vector<SampleSpan>& samples, const AttentionShape& shape, int64_t block,
                           int64_t key_block, uint16_t* scratch);
int64_t attention_bf16_scratch(const AttentionShape& shape, int64_t rows, int64_t key_block);

}  // namespace ctcal
