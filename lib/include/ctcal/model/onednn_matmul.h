#pragma once
// GEMMs through oneDNN (the library PyTorch's own bf16 matmul uses). bf16: bf16 inputs, fp32
// accumulation and output. Used by `--compute-dtype bf16` for the projections and attention's
// two products (q k^T, p v); norms, RoPE, the softmax and observers stay in fp32.
#include <cstdint>
#include <memory>

#include "ctcal/model/tensor_types.h"

namespace ctcal {

// True when the CPU has native bf16 dot products (AVX512-BF16 or AMX); oneDNN would otherwise
// emulate them slowly or refuse.
bool cpu_has_native_bf16();

// A projection's weights rounded to bf16 and packed once, when the layer is loaded, into the
// blocked layout oneDNN's kernels read (VNNI pairs along `in`), one packed block per 512-column
// output tile (matmul_bf16's tiles). Packing per call instead costs 10-18 % of the GEMM time
// (bench on the Zen 4 machine: 654-737 vs 745-817 GFLOP/s). The layout does not depend on the
// number of rows, so one packing serves every row count.
class PackedBf16Weights {
 public:
  // w: [out, in] bf16 bits, row-major (PyTorch's Linear.weight layout).
  PackedBf16Weights(const uint16_t* w, int64_t out, int64_t in);
  ~PackedBf16Weights();
  PackedBf16Weights(const PackedBf16Weights&) = delete;
  PackedBf16Weights& operator=(const PackedBf16Weights&) = delete;

  int64_t out() const { return out_; }
  int64_t in() const { return in_; }
  struct Impl;
  const Impl& impl() const { return *impl_; }

 private:
  int64_t out_, in_;
  std::unique_ptr<Impl> impl_;
};

// y[n, out] = x_bf16[n, in] * W^T, accumulated and written in fp32. x and y are dense row-major.
// Computed as fixed 256 x 512 output tiles, each by one single-threaded kernel: the result is
// the same for any thread count.
void matmul_bf16(const uint16_t* x, int64_t n, const PackedBf16Weights& w, float* y);

// A small bf16 GEMM of one fixed shape, run whole by the calling thread inside a parallel loop
// (the attention's per-task products): c[m, n] = a[m, k] * b (+ c when `accumulate`), fp32
// accumulation and output. The kernel is planned once for one thread, so every call sums in the
// same order whichever thread runs it. a: [m, k] dense; c: [m, n] dense; b: [k, n] with row
// stride ldb, or, when `b_transposed`, its transpose [n, k] with row stride ldb (rows of K read
// in place). Construct outside the parallel region; run() from any thread.
class TaskMatmulBf16 {
 public:
  TaskMatmulBf16(int64_t m, int64_t n, int64_t k, bool b_transposed, int64_t ldb, bool accumulate);
  ~TaskMatmulBf16();
  TaskMatmulBf16(const TaskMatmulBf16&) = delete;
  TaskMatmulBf16& operator=(const TaskMatmulBf16&) = delete;
  void run(const uint16_t* a, const uint16_t* b, float* c) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Rounds x [n] to bf16 (nearest even) into out [n], by the calling thread. x must be finite
// (activations: every layer's output is checked; attention's probabilities), so the NaN case is
// not handled.
void round_to_bf16(const float* x, int64_t n, uint16_t* out);
// The same for x [rows, cols] into out [rows, cols], dense. Rows in parallel.
void round_rows_to_bf16(const Eigen::Ref<const RowMatrix>& x, uint16_t* out);

}  // namespace ctcal
