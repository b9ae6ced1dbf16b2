#include "cuda_attention.h"

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>

#include "cuda_kernels.h"

namespace ctcal::cuda {

namespace {

// One batched call: `count` (sample, head) entries of one block geometry.
struct Call {
  int64_t q0, bq, k0, sk;  // query rows [q0, q0 + bq) of their sample, keys [k0, k0 + sk)
  std::size_t first;       // index of its first entry in the pointer tables
  int64_t count;
};

}  // namespace

BlockedAttention::BlockedAttention(cublasHandle_t blas, std::size_t scores_budget_bytes)
    : blas_(blas), budget_elems_(scores_budget_bytes / (sizeof(float) + sizeof(uint16_t))) {}

void BlockedAttention::run(const uint16_t* q, const uint16_t* k, const uint16_t* v, float* out,
                           const std::vector<SampleSpan>& spans, const AttentionShape& shape, cudaStream_t stream) {
  const int64_t d = shape.head_dim, qd = shape.q_dim(), kvd = shape.kv_dim(), rep = shape.heads / shape.kv_heads;
  const int64_t window = shape.window.value_or(std::numeric_limits<int64_t>::max() / 4);
  // Group (sample, query block) pairs by geometry: samples of equal length share every call.
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::vector<int64_t>> groups;  // (q0, q1, k0) -> sample rows
  int64_t largest = 0;
  for (const auto& s : spans)
    for (int64_t q0 = 0; q0 < s.length; q0 += kQueryBlock) {
      const int64_t q1 = std::min(s.length, q0 + kQueryBlock);
      const int64_t k0 = std::max<int64_t>(0, q0 - window + 1);
      groups[{q0, q1, k0}].push_back(s.offset);
      largest = std::max(largest, (q1 - q0) * (q1 - k0));
    }
  // At least one (sample, head) entry per call, whatever the budget.
  const std::size_t cap = std::max<std::size_t>(budget_elems_, static_cast<std::size_t>(largest));
  // Pointer tables, six per call (K, Q, S for the scores; V, P, O for the output), entry-major.
  std::vector<Call> calls;
  std::vector<const void*> tab;
  for (const auto& [key, rows] : groups) {
    const auto [q0, q1, k0] = key;
    const int64_t bq = q1 - q0, sk = q1 - k0;
    const auto per_call = static_cast<int64_t>(std::max<std::size_t>(1, cap / static_cast<std::size_t>(bq * sk)));
    std::vector<std::pair<int64_t, int64_t>> entries;  // (row offset, head)
    for (int64_t r : rows)
      for (int64_t h = 0; h < shape.heads; ++h) entries.emplace_back(r, h);
    for (std::size_t e0 = 0; e0 < entries.size(); e0 += static_cast<std::size_t>(per_call)) {
      const auto count = static_cast<int64_t>(std::min<std::size_t>(static_cast<std::size_t>(per_call), entries.size() - e0));
      calls.push_back({q0, bq, k0, sk, tab.size(), count});
      std::vector<const void*> kp, qp, sp, vp, pp, op;
      for (int64_t i = 0; i < count; ++i) {
        const auto [row, h] = entries[e0 + static_cast<std::size_t>(i)];
        const int64_t g = h / rep;
        kp.push_back(k + (row + k0) * kvd + g * d);
        qp.push_back(q + (row + q0) * qd + h * d);
        sp.push_back(nullptr);  // S and P: filled below, once the buffers are sized
        vp.push_back(v + (row + k0) * kvd + g * d);
        pp.push_back(nullptr);
        op.push_back(out + (row + q0) * qd + h * d);
      }
      for (auto* part : {&kp, &qp, &sp, &vp, &pp, &op}) tab.insert(tab.end(), part->begin(), part->end());
    }
  }
  std::size_t need = 0;
  for (const Call& c : calls) need = std::max(need, static_cast<std::size_t>(c.count * c.bq * c.sk));
  scores_.resize(need);
  probs_.resize(need);
  for (const Call& c : calls)
    for (int64_t i = 0; i < c.count; ++i) {
      const std::size_t n = static_cast<std::size_t>(c.count);
      tab[c.first + 2 * n + static_cast<std::size_t>(i)] = scores_.get() + i * c.bq * c.sk;
      tab[c.first + 4 * n + static_cast<std::size_t>(i)] = probs_.get() + i * c.bq * c.sk;
    }
  // The previous call's staged tables may still be on their way up: wait for that copy (not for
  // the whole stream: the device tables are rewritten in stream order, after their last reader).
  if (tables_pending_) check(cudaEventSynchronize(tables_copied_.get()), "cudaEventSynchronize");
  host_ptrs_.resize(tab.size() * sizeof(void*));
  std::copy(tab.begin(), tab.end(), reinterpret_cast<const void**>(host_ptrs_.get()));
  ptrs_.resize(tab.size());
  check(cudaMemcpyAsync(ptrs_.get(), host_ptrs_.get(), tab.size() * sizeof(void*), cudaMemcpyHostToDevice, stream),
        "copying attention pointer tables");
  check(cudaEventRecord(tables_copied_.get(), stream), "cudaEventRecord");
  tables_pending_ = true;
  check(cublasSetStream(blas_, stream), "cublasSetStream");
  const float one = 1.0f, zero = 0.0f;
  for (const Call& c : calls) {
    const std::size_t n = static_cast<std::size_t>(c.count);
    const void* const* t = ptrs_.get() + c.first;
    // scores^T [sk, bq] (column-major) = K [sk, d] . Q^T: row-major scores [bq, sk] per entry.
    check(cublasGemmBatchedEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(c.sk), static_cast<int>(c.bq),
                              static_cast<int>(d), &one, t, CUDA_R_16BF, static_cast<int>(kvd), t + n, CUDA_R_16BF,
                              static_cast<int>(qd), &zero, const_cast<void* const*>(t + 2 * n), CUDA_R_32F,
                              static_cast<int>(c.sk), static_cast<int>(c.count), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "attention scores GEMM");
    masked_softmax(scores_.get(), probs_.get(), c.count, c.bq, c.sk, c.q0, c.k0, window, shape.scale, stream);
    // out^T [d, bq] (column-major, ld q_dim) = V^T [d, sk] . P^T [sk, bq].
    check(cublasGemmBatchedEx(blas_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(d), static_cast<int>(c.bq),
                              static_cast<int>(c.sk), &one, t + 3 * n, CUDA_R_16BF, static_cast<int>(kvd), t + 4 * n,
                              CUDA_R_16BF, static_cast<int>(c.sk), &zero, const_cast<void* const*>(t + 5 * n),
                              CUDA_R_32F, static_cast<int>(qd), static_cast<int>(c.count), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT),
          "attention output GEMM");
  }
}

}  // namespace ctcal::cuda
