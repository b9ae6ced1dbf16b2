#pragma once
// The kernels of the GPU MoE MLP (moe_kernels.cu; the host side is cuda_moe.h). Plain pointers
// and sizes, as cuda_kernels.h: row-major tensors, bf16 values as uint16_t bits, every kernel
// enqueued on `stream`. No atomics: each output element is written by one thread, in a fixed
// order, so results are identical run to run.
#include <cstdint>

#include <cuda_runtime_api.h>

namespace ctcal::cuda {

// out[i, :] = x[rows[i], :] for i < m. x: [*, cols] bf16 (row stride ld), rows: [m] on the
// device, out: [m, cols] bf16 dense.
void gather_rows_bf16(const uint16_t* x, int64_t ld, const int32_t* rows, int64_t m, int64_t cols, uint16_t* out,
                      cudaStream_t stream);

// Llama 4's routed inputs (Llama4TextMoe: routed_in = x * score, in fp32, before the expert):
// out[i, :] = bf16(scale[i] * x[rows[i], :]) for i < m. x: [*, cols] fp32 (row stride ld), rows /
// scale: [m] on the device, out: [m, cols] bf16 dense.
void gather_scaled_rows_bf16(const float* x, int64_t ld, const int32_t* rows, const float* scale, int64_t m,
                             int64_t cols, uint16_t* out, cudaStream_t stream);

// out[t, :] += sigmoid(gate[t]) * y[t, :] (gate null: out += y), the shared expert's output y added to
// the routed experts' out as the CPU's layer.cpp does (F.sigmoid in fp32, then the product, then the
// sum). out, y: [n, cols] dense, gate: [n] (x . shared_expert_gate^T) or null.
void add_shared_expert(float* out, const float* y, const float* gate, int64_t n, int64_t cols, cudaStream_t stream);

// gpt-oss's expert activation (the CPU's clamped_swiglu_into, layer_ops.h), element by element:
// g = min(gate, limit), u = clamp(up, -limit, limit), gate = (u + 1) * g * sigmoid(1.702 g), and
// gate_bf16 = bf16(gate). gate/up/gate_bf16: [n].
void clamped_swiglu(float* gate, const float* up, uint16_t* gate_bf16, int64_t n, float limit, cudaStream_t stream);

// The weighted sum of each token's expert outputs, in ascending expert order as the CPU's
// index_add_ loop (model/moe.cpp): out[t, c] = sum over j < top_k of weight[s] * y[s, c],
// s = slots[t, j] (ascending: the routed rows are grouped by ascending expert), starting from 0.
// y: [routed rows, cols] dense, slots: [n, top_k], weight: [routed rows], out: [n, cols] dense.
void combine_experts(const float* y, const int32_t* slots, const float* weight, int64_t n, int64_t top_k, int64_t cols,
                     float* out, cudaStream_t stream);

}  // namespace ctcal::cuda
