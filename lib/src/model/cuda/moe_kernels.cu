// Kernels of the GPU MoE MLP; see moe_kernels.h for the contracts. Each element's arithmetic is
// the CPU's (model/moe.cpp, layer_ops.cpp) step for step, with explicit round-to-nearest
// intrinsics so that no multiply-add is contracted into an FMA the CPU does not do.
#include "moe_kernels.h"
#include "kernel_launch.cuh"

#include <cuda_bf16.h>

namespace ctcal::cuda {

namespace {

__global__ void gather_rows_bf16_kernel(const uint16_t* x, int64_t ld, const int32_t* rows, int64_t cols,
                                        uint16_t* out, int64_t n) {
  // One thread per output element (i, c): n = m * cols.
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = e / cols, c = e % cols;
    out[e] = x[int64_t{rows[i]} * ld + c];
  }
}

__global__ void gather_scaled_rows_bf16_kernel(const float* x, int64_t ld, const int32_t* rows, const float* scale,
                                               int64_t cols, uint16_t* out, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = e / cols, c = e % cols;
    out[e] = bf16_bits(__fmul_rn(scale[i], x[int64_t{rows[i]} * ld + c]));
  }
}

__global__ void add_shared_expert_kernel(float* out, const float* y, const float* gate, int64_t cols, int64_t n) {
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    const float s = gate ? __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-gate[e / cols]))) : 1.0f;
    out[e] = __fadd_rn(out[e], __fmul_rn(s, y[e]));
  }
}

__global__ void clamped_swiglu_kernel(float* gate, const float* up, uint16_t* gate_bf16, int64_t n, float limit) {
  constexpr float kAlpha = 1.702f;  // GptOssExperts.alpha
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float g = fminf(gate[i], limit);               // gate.clamp(max=limit)
    const float u = fminf(fmaxf(up[i], -limit), limit);  // up.clamp(-limit, limit)
    // glu = gate * sigmoid(gate * alpha); out = (up + 1) * glu
    const float glu = __fdiv_rn(g, __fadd_rn(1.0f, expf(__fmul_rn(-kAlpha, g))));
    const float v = __fmul_rn(__fadd_rn(u, 1.0f), glu);
    gate[i] = v;
    gate_bf16[i] = bf16_bits(v);
  }
}

__global__ void combine_experts_kernel(const float* y, const int32_t* slots, const float* weight, int64_t top_k,
                                       int64_t cols, float* out, int64_t n) {
  // One thread per output element (t, c): n = tokens * cols; its top_k terms in slot order.
  for (int64_t e = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; e < n; e += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = e / cols, c = e % cols;
    float acc = 0.0f;
    for (int64_t j = 0; j < top_k; ++j) {
      const int64_t s = slots[t * top_k + j];
      acc = __fadd_rn(acc, __fmul_rn(weight[s], y[s * cols + c]));
    }
    out[e] = acc;
  }
}

}  // namespace

void gather_rows_bf16(const uint16_t* x, int64_t ld, const int32_t* rows, int64_t m, int64_t cols, uint16_t* out,
                      cudaStream_t stream) {
  const int64_t n = m * cols;
  if (n) gather_rows_bf16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, ld, rows, cols, out, n);
}

void gather_scaled_rows_bf16(const float* x, int64_t ld, const int32_t* rows, const float* scale, int64_t m,
                             int64_t cols, uint16_t* out, cudaStream_t stream) {
  const int64_t n = m * cols;
  if (n) gather_scaled_rows_bf16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, ld, rows, scale, cols, out, n);
}

void add_shared_expert(float* out, const float* y, const float* gate, int64_t n, int64_t cols, cudaStream_t stream) {
  const int64_t total = n * cols;
  if (total) add_shared_expert_kernel<<<blocks_for(total), kThreads, 0, stream>>>(out, y, gate, cols, total);
}

void clamped_swiglu(float* gate, const float* up, uint16_t* gate_bf16, int64_t n, float limit, cudaStream_t stream) {
  if (n) clamped_swiglu_kernel<<<blocks_for(n), kThreads, 0, stream>>>(gate, up, gate_bf16, n, limit);
}

void combine_experts(const float* y, const int32_t* slots, const float* weight, int64_t n, int64_t top_k, int64_t cols,
                     float* out, cudaStream_t stream) {
  const int64_t total = n * cols;
  if (total) combine_experts_kernel<<<blocks_for(total), kThreads, 0, stream>>>(y, slots, weight, top_k, cols, out, total);
}

}  // namespace ctcal::cuda
