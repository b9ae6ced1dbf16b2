#pragma once
// Fused causal attention on the GPU (flash_attention.cu), the FlashAttention-2 scheme: a block of
// 64 or 128 query rows of one head walks its keys a tile at a time, Q K^T and P V on the
// tensor cores (bf16 operands, fp32 accumulation), the softmax online in registers (running max
// and sum, base 2), so no score matrix ever reaches memory. GQA (query head h reads kv head
// h / (heads / kv_heads)), sliding windows and attention sinks (gpt-oss) as the CPU's
// causal_attention (model/attention.h) computes them; the probabilities are rounded to bf16
// before P V, as transformers' bf16 attention does.
//
// Every output element is one fixed sequence of tensor-core operations over the key tiles in
// order, so results are identical run to run.
#include <cstdint>
#include <vector>

#include <cuda_runtime_api.h>

#include "ctcal/model/sample_span.h"

namespace ctcal::cuda {

// Query rows per block (4 or 8 warps of 16 rows): 64 measured faster than 128 (docs/performance.md).
constexpr int kFlashQueryRows = 64;

// One query block: rows [row0 + q0, row0 + min(q0 + query_rows, length)) of a chunk, in a sample
// whose first row is row0. Ints: a chunk's rows fit in 32 bits.
struct FlashItem {
  int32_t row0, length, q0, unused;
};

// Whether the kernel takes this head_dim: a multiple of 8 (16-byte rows) and at most 256.
bool flash_attention_supports(int64_t head_dim);

// The query blocks of a chunk's samples (`spans`: rows of the chunk), heaviest first (the last
// blocks of the longest samples see the most keys), so the GPU's tail is short blocks.
std::vector<FlashItem> flash_items(const std::vector<SampleSpan>& spans, int query_rows = kFlashQueryRows);

// Where the attention output goes: fp32, or bf16 (each fp32 value rounded to nearest even, the
// bits to_bf16 would give) when only the next GEMM reads it: half the bytes written, and no
// separate rounding pass. Exactly one is set.
struct FlashOutput {
  float* f32 = nullptr;
  uint16_t* bf16 = nullptr;
};

// q: [rows, q_ld] with head h at columns [h * head_dim, (h + 1) * head_dim), k/v: [rows, kv_ld]
// likewise per kv head, all bf16 -> out: [rows, q_ld] (only the rows of `items` written).
// `window`: key k is seen by query q when k <= q and q - k < window. `scale`: scores = q k^T *
// scale. `sinks`: [heads] on the device, or null. `items`: [n_items] on the device, made by
// flash_items with the same `query_rows` (64 or 128). Enqueues on `stream` and returns.
void flash_attention(const uint16_t* q, const uint16_t* k, const uint16_t* v, FlashOutput out, int64_t q_ld, int64_t kv_ld,
                     int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window, float scale,
                     const float* sinks, const FlashItem* items, int64_t n_items, int query_rows,
                     cudaStream_t stream);

}  // namespace ctcal::cuda
