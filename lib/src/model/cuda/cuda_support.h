#pragma once
// CUDA/cuBLAS error checks that throw ctcal errors, and RAII owners of device and pinned memory.
#include <cstddef>
#include <cstdint>
#include <utility>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "ctcal/error.h"

namespace ctcal::cuda {

// A failed CUDA call is an environment problem (driver, memory), not bad input: exit 1 with
// the call and CUDA's own words.
inline void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  // A failed call also stays this thread's "last error", which the next kernel launch's check
  // (cudaGetLastError) would report as its own; clear it (sticky errors stay regardless).
  cudaGetLastError();
  throw Error(ExitCode::kOther, fmt::format("CUDA: {} failed: {} ({})", what, cudaGetErrorString(e),
                                            cudaGetErrorName(e)));
}
inline void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(ExitCode::kOther, fmt::format("cuBLAS: {} failed: {}", what, cublasGetStatusString(s)));
}

// Every host<->device copy of the compute stream's data goes on that stream (cudaMemcpy runs on
// the legacy default stream, which a non-blocking stream does not wait for: a pageable upload may
// still be in flight when the stream's kernels start), and returns when it is done.
inline cudaError_t copy_on_stream(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                                  cudaStream_t stream) {
  const cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, stream);
  return e != cudaSuccess ? e : cudaStreamSynchronize(stream);
}

// The same for `rows` rows of `width` floats, row strides ld_dst and ld_src (floats): a view into
// a wider row (q, k or v within a fused q|k|v row) without its neighbours or the buffer's end.
inline cudaError_t copy_rows_on_stream(float* dst, int64_t ld_dst, const float* src, int64_t ld_src, int64_t width,
                                       int64_t rows, cudaMemcpyKind kind, cudaStream_t stream) {
  const auto bytes = [](int64_t n) { return static_cast<std::size_t>(n) * sizeof(float); };
  const cudaError_t e = cudaMemcpy2DAsync(dst, bytes(ld_dst), src, bytes(ld_src), bytes(width),
                                          static_cast<std::size_t>(rows), kind, stream);
  return e != cudaSuccess ? e : cudaStreamSynchronize(stream);
}

// Every projection of the backend: row-major y [n, out] = x [n, in] . W^T + beta * y, with W
// [out, in] and x bf16, fp32 accumulation, y of type y_type (CUDA_R_32F or CUDA_R_16BF; beta 0 or,
// for fp32 y, 1 to add into it). In cuBLAS's column-major terms: y^T [out, n] = W . x^T.
inline void xwt_gemm(cublasHandle_t blas, const uint16_t* x, int64_t n, int64_t in, const uint16_t* w, int64_t out,
                     void* y, cudaDataType y_type, float beta, const char* what) {
  const float one = 1.0f;
  check(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(n), static_cast<int>(in),
                     &one, w, CUDA_R_16BF, static_cast<int>(in), x, CUDA_R_16BF, static_cast<int>(in), &beta, y, y_type,
                     static_cast<int>(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        what);
}

// Device memory of `count` elements of T (uninitialised).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count) { resize(count); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  ~DeviceBuffer() { cudaFree(p_); }
  // Grows to at least `count` elements (contents are not kept).
  void resize(std::size_t count) {
    if (count <= n_) return;
    cudaFree(p_);
    p_ = nullptr;
    n_ = 0;
    check(cudaMalloc(reinterpret_cast<void**>(&p_), count * sizeof(T)), "cudaMalloc");
    n_ = count;
  }
  T* get() const { return p_; }
  std::size_t size() const { return n_; }
  std::size_t bytes() const { return n_ * sizeof(T); }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

// Page-locked host memory (the source of asynchronous host-to-device copies).
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() { cudaFreeHost(p_); }
  void resize(std::size_t bytes) {
    if (bytes <= n_) return;
    cudaFreeHost(p_);
    p_ = nullptr;
    n_ = 0;
    check(cudaMallocHost(&p_, bytes), "cudaMallocHost");
    n_ = bytes;
  }
  unsigned char* get() const { return static_cast<unsigned char*>(p_); }
  std::size_t bytes() const { return n_; }

 private:
  void* p_ = nullptr;
  std::size_t n_ = 0;
};

class Event {
 public:
  Event() { check(cudaEventCreate(&e_), "cudaEventCreate"); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event() { cudaEventDestroy(e_); }
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_{};
};

class Stream {
 public:
  Stream() { check(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking), "cudaStreamCreate"); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { cudaStreamDestroy(s_); }
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_{};
};

}  // namespace ctcal::cuda
