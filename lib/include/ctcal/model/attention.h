#pragma once
// Causal (optionally sliding-window) softmax attention of each sample, as transformers' eager
// attention computes it (scores = q k^T / sqrt(d), masked softmax in fp32, times v), blocked
// flash-style so that no [S, S] score matrix exists: a task takes `block` query positions of the
// n_rep query heads that share one kv head and walks the keys `key_block` at a time with an
// online softmax (running max and sum), holding [n_rep * block, key_block] scores. Memory and
// cache footprint are independent of the sequence length; the result does not depend on the
// thread count (fixed summation order).
#include <cstdint>
#include <vector>

#include "ctcal/model/llama_config.h"
#include "ctcal/model/sample_span.h"

namespace ctcal {

// q: [rows, heads * d], k/v: [rows, kv_heads * d] -> out: [rows, heads * d] (dense row-major,
// d = cfg.head_dim); each span of rows is one sample, attending within itself. All samples'
// tasks run in one parallel loop, largest first: per-sample loops left 16 threads idle behind
// the last query block of each sample. `block`: query rows per task; `key_block`: keys per step.
void causal_attention(const float* q, const float* k, const float* v, float* out,
                      const std::vector<SampleSpan>& samples, const LlamaConfig& cfg, int64_t block,
                      int64_t key_block);

}  // namespace ctcal
