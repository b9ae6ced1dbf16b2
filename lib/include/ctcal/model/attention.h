#pragma once
// Causal (optionally sliding-window) softmax attention of one sample, as transformers' eager
// attention computes it (scores = q k^T / sqrt(d), masked softmax in fp32, times v), blocked
// flash-style so that no [S, S] score matrix exists: a task takes `block` query positions of the
// n_rep query heads that share one kv head and walks the keys `key_block` at a time with an
// online softmax (running max and sum), holding [n_rep * block, key_block] scores. Memory and
// cache footprint are independent of the sequence length; the result does not depend on the
// thread count (fixed summation order).
#include <cstdint>

#include "ctcal/model/llama_config.h"

namespace ctcal {

// q: [seq, heads * d], k/v: [seq, kv_heads * d] -> out: [seq, heads * d] (all dense row-major,
// d = cfg.head_dim). `block`: query rows per task; `key_block`: keys per step.
void causal_attention(const float* q, const float* k, const float* v, float* out, int64_t seq,
                      const LlamaConfig& cfg, int64_t block, int64_t key_block);

}  // namespace ctcal
