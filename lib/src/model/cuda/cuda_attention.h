#pragma once
// Causal (optionally sliding-window) softmax attention of a chunk's samples on the GPU, blocked by
// query rows: for each block of up to `kQueryBlock` query positions, the scores against the keys it
// may see ([bq, sk], never the whole [S, S] beyond them) are one bf16 tensor-core GEMM per head
// (fp32 accumulation), a masked softmax in fp32 gives bf16 probabilities, and a second GEMM
// multiplies them by V. Blocks of the same geometry across samples and heads go in one batched
// cuBLAS call (pointer arrays), so a 64 x 2048-token chunk is a few dozen calls per layer.
// Unlike a fused flash kernel, a block's scores are materialised (bounded by `scores_budget`).
#include <cstdint>
#include <vector>

#include <cublas_v2.h>

#include "ctcal/model/attention.h"
#include "ctcal/model/sample_span.h"
#include "cuda_support.h"

namespace ctcal::cuda {

class BlockedAttention {
 public:
  // scores_budget_bytes bounds the [entries, bq, sk] scores (fp32) plus probabilities (bf16).
  BlockedAttention(cublasHandle_t blas, std::size_t scores_budget_bytes);
  // q: [n, q_dim], k/v: [n, kv_dim] bf16 -> out: [n, q_dim] fp32; `spans` are rows of the chunk.
  // Runs on `stream`; returns after enqueuing. The next call waits only for this call's staging
  // copy of the pointer tables before reusing the staging buffer.
  void run(const uint16_t* q, const uint16_t* k, const uint16_t* v, float* out, const std::vector<SampleSpan>& spans,
           const AttentionShape& shape, cudaStream_t stream);

  static constexpr int64_t kQueryBlock = 512;

 private:
  cublasHandle_t blas_;
  std::size_t budget_elems_;          // scores elements per call
  DeviceBuffer<float> scores_;        // [entries, bq, sk]
  DeviceBuffer<uint16_t> probs_;      // [entries, bq, sk] bf16
  PinnedBuffer host_ptrs_;            // the pointer tables, staged
  DeviceBuffer<const void*> ptrs_;    // the pointer tables on the device
  Event tables_copied_;               // the last staging copy of the tables is done
  bool tables_pending_ = false;
};

}  // namespace ctcal::cuda
