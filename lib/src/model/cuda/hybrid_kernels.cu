// Kernels of the hybrid families' token mixers; see hybrid_kernels.h for the contracts. Each
// element's arithmetic follows the CPU function named in the header (sums of squares in double,
// gates in double rounded once); the recurrences run token by token with the state in shared
// memory, each thread owning whole columns (DeltaNet) or rows (Mamba2) of it, so no thread reads
// what another writes within a token and sums run in a fixed order: bitwise reproducible.
#include "hybrid_kernels.h"
#include "kernel_launch.cuh"

#include <cuda_bf16.h>

#include <cmath>

namespace ctcal::cuda {

namespace {

// Shared memory a recurrence's state may take (the H100 allows 227 KiB per block with opt-in).
constexpr int64_t kMaxStateBytes = 192 * 1024;

__device__ float silu(float x) { return x / (1.0f + expf(-x)); }

// A block-wide sum in double with a fixed tree (warp shuffles, then one warp over the warps').
__device__ double block_sum(double v) {
  __shared__ double partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = threadIdx.x < warps ? partial[lane] : 0.0;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __shared__ double result;
  if (threadIdx.x == 0) result = v;
  __syncthreads();
  const double out = result;
  __syncthreads();  // partial and result may be reused by the next call
  return out;
}

// Threads per block for a per-row/per-head reduction over `width` elements: a multiple of 32.
int reduce_threads(int64_t width) {
  int t = 32;
  while (t < width && t < kThreads) t *= 2;
  return t;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The shared causal convolution.

__global__ void conv1d_silu_kernel(const float* x, int64_t ld_x, const float* w, const float* bias, int64_t taps,
                                   float* y, int64_t ld_y, int64_t len, int64_t channels) {
  const int64_t n = len * channels;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / channels, c = i % channels;
    // F.conv1d(padding=K-1)[:T]: output t reads inputs t - K + 1 .. t; taps before row 0 read zeros.
    const int64_t j0 = taps - 1 - t > 0 ? taps - 1 - t : 0;
    float acc = 0.0f;
    for (int64_t j = j0; j < taps; ++j) acc = fmaf(w[c * taps + j], x[(t - taps + 1 + j) * ld_x + c], acc);
    if (bias) acc += bias[c];
    y[t * ld_y + c] = silu(acc);
  }
}

// ---------------------------------------------------------------------------------------------
// Gated DeltaNet.

// One block per (row, part, key head): part 0 = q (l2-normed, then scaled), 1 = k.
__global__ void l2norm_qk_kernel(float* qkv, int64_t ld, int64_t num_k_heads, int64_t dk, float scale) {
  const int64_t r = blockIdx.x, part = blockIdx.y / num_k_heads, h = blockIdx.y % num_k_heads;
  float* x = qkv + r * ld + part * num_k_heads * dk + h * dk;  // [dk]
  double ss = 0;
  for (int64_t i = threadIdx.x; i < dk; i += blockDim.x) ss += static_cast<double>(x[i]) * x[i];
  ss = block_sum(ss);
  const auto inv = static_cast<float>(1.0 / sqrt(ss + 1e-6));  // kGatedDeltaL2Eps
  for (int64_t i = threadIdx.x; i < dk; i += blockDim.x) {
    const float v = x[i] * inv;
    x[i] = part == 0 ? v * scale : v;  // query = l2norm(query) * scaling: two roundings, as torch
  }
}

__global__ void deltanet_gates_kernel(float* a, float* b, const float* dt_bias, const float* A_log, int64_t rows,
                                      int64_t heads) {
  const int64_t n = rows * heads;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t h = i % heads;
    const double x = static_cast<double>(a[i]) + static_cast<double>(dt_bias[h]);
    const double softplus = x > 20.0 ? x : log1p(exp(x));  // F.softplus, threshold 20
    a[i] = static_cast<float>(-exp(static_cast<double>(A_log[h])) * softplus);
    b[i] = static_cast<float>(1.0 / (1.0 + exp(-static_cast<double>(b[i]))));
  }
}

// grid (num_v_heads, samples); thread j owns columns j, j + blockDim, ... of the state S [dk, dv]
// (stored S[i * dv + j]: a warp reads consecutive columns of one row, no bank conflicts).
__global__ void deltanet_recurrence_kernel(const float* qkv, int64_t ld, const float* g, const float* beta,
                                           const int64_t* offsets, const int64_t* lengths, int64_t num_k_heads,
                                           int64_t num_v_heads, int64_t dk, int64_t dv, float* out) {
  extern __shared__ float smem[];
  float* S = smem;             // [dk, dv]
  float* kq = smem + dk * dv;  // [2, dk]: this token's k, then q
  const int64_t h = blockIdx.x, s = blockIdx.y;
  const int64_t kh = h / (num_v_heads / num_k_heads);  // repeat_interleave: key head of value head h
  const int64_t r0 = offsets[s], len = lengths[s], key_dim = num_k_heads * dk, vd = num_v_heads * dv;
  for (int64_t i = threadIdx.x; i < dk * dv; i += blockDim.x) S[i] = 0.0f;
  for (int64_t t = 0; t < len; ++t) {
    const int64_t r = r0 + t;
    __syncthreads();  // every thread is done with the last token's k and q (and S is zeroed)
    for (int64_t i = threadIdx.x; i < dk; i += blockDim.x) {
      kq[i] = qkv[r * ld + key_dim + kh * dk + i];  // k
      kq[dk + i] = qkv[r * ld + kh * dk + i];       // q (l2-normed and scaled)
    }
    __syncthreads();
    const float decay = expf(g[r * num_v_heads + h]), bt = beta[r * num_v_heads + h];
    for (int64_t j = threadIdx.x; j < dv; j += blockDim.x) {
      // S *= exp(g_t); kv_mem = S^T k
      float kv = 0.0f;
      for (int64_t i = 0; i < dk; ++i) {
        const float sij = S[i * dv + j] * decay;
        S[i * dv + j] = sij;
        kv = fmaf(sij, kq[i], kv);
      }
      const float delta = (qkv[r * ld + 2 * key_dim + h * dv + j] - kv) * bt;
      // S += k delta^T; o = S^T q
      float o = 0.0f;
      for (int64_t i = 0; i < dk; ++i) {
        const float sij = fmaf(kq[i], delta, S[i * dv + j]);
        S[i * dv + j] = sij;
        o = fmaf(sij, kq[dk + i], o);
      }
      out[r * vd + h * dv + j] = o;
    }
  }
}

// One block per (row, value head).
__global__ void deltanet_gated_norm_kernel(const float* o, const float* z, const float* w, double eps, int64_t heads,
                                           int64_t dv, uint16_t* out) {
  const int64_t r = blockIdx.x, h = blockIdx.y, at = r * heads * dv + h * dv;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < dv; i += blockDim.x) ss += static_cast<double>(o[at + i]) * o[at + i];
  ss = block_sum(ss);
  const auto inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(dv) + eps));
  for (int64_t i = threadIdx.x; i < dv; i += blockDim.x)
    out[at + i] = bf16_bits((w[i] * (o[at + i] * inv)) * silu(z[at + i]));  // weight * normed, then * silu(z)
}

// ---------------------------------------------------------------------------------------------
// Gated attention.

__global__ void split_query_gate_kernel(const float* qg, int64_t n, int64_t heads, int64_t d, float* q, float* gate) {
  const int64_t total = n * heads * d;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t th = i / d, e = i % d;  // th: token * heads + head
    q[i] = qg[th * 2 * d + e];
    gate[i] = qg[th * 2 * d + d + e];
  }
}

__global__ void sigmoid_gate_mul_kernel(float* attn, const float* gate, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    attn[i] *= 1.0f / (1.0f + expf(-gate[i]));
}

// ---------------------------------------------------------------------------------------------
// Mamba2.

__global__ void mamba2_dt_kernel(const float* dt, int64_t ld, const float* dt_bias, double lo, double hi,
                                 int64_t rows, int64_t heads, float* out) {
  const int64_t n = rows * heads;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / heads, h = i % heads;
    const double x = static_cast<double>(dt[r * ld + h]) + static_cast<double>(dt_bias[h]);
    const double v = x > 20.0 ? x : log1p(exp(x));
    out[i] = static_cast<float>(fmin(fmax(v, lo), hi));
  }
}

// grid (heads, samples); thread p owns rows p, p + blockDim, ... of the state S [head_dim, state]
// (stored S[n * head_dim + p]: a warp touches consecutive p of one n, no bank conflicts).
__global__ void mamba2_recurrence_kernel(const float* xbc, int64_t ld, const float* dt, const float* A_log,
                                         const float* D, const int64_t* offsets, const int64_t* lengths, int64_t heads,
                                         int64_t P, int64_t groups, int64_t N, float* y) {
  extern __shared__ float smem[];
  float* S = smem;          // [N, P]
  float* bc = smem + N * P;  // [2, N]: this token's B, then C
  const int64_t h = blockIdx.x, s = blockIdx.y, g = h / (heads / groups);
  const int64_t r0 = offsets[s], len = lengths[s], I = heads * P;
  const float A = static_cast<float>(-exp(static_cast<double>(A_log[h])));
  const float Dh = D[h];
  for (int64_t i = threadIdx.x; i < N * P; i += blockDim.x) S[i] = 0.0f;
  for (int64_t t = 0; t < len; ++t) {
    const int64_t r = r0 + t;
    __syncthreads();  // the last token's B and C are read by every thread (and S is zeroed)
    for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
      bc[n] = xbc[r * ld + I + g * N + n];              // B
      bc[N + n] = xbc[r * ld + I + groups * N + g * N + n];  // C
    }
    __syncthreads();
    const float d = dt[r * heads + h];
    const float dA = expf(A * d);
    for (int64_t p = threadIdx.x; p < P; p += blockDim.x) {
      const float x = xbc[r * ld + h * P + p];
      const float dx = d * x;
      float acc = 0.0f;
      for (int64_t n = 0; n < N; ++n) {
        const float v = fmaf(dx, bc[n], S[n * P + p] * dA);
        S[n * P + p] = v;
        acc = fmaf(v, bc[N + n], acc);
      }
      y[r * I + h * P + p] = fmaf(Dh, x, acc);
    }
  }
}

// One block per (row, group).
__global__ void mamba2_gated_norm_kernel(const float* y, const float* z, int64_t ld_z, const float* w, double eps,
                                         int64_t width, int64_t gs, float* out, uint16_t* out_bf16) {
  const int64_t r = blockIdx.x, g0 = blockIdx.y * gs;
  double ss = 0;
  for (int64_t j = g0 + threadIdx.x; j < g0 + gs; j += blockDim.x) {
    const float hv = y[r * width + j] * silu(z[r * ld_z + j]);
    ss += static_cast<double>(hv) * hv;
  }
  ss = block_sum(ss);
  const auto inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(gs) + eps));
  for (int64_t j = g0 + threadIdx.x; j < g0 + gs; j += blockDim.x) {
    const float hv = y[r * width + j] * silu(z[r * ld_z + j]);
    const float v = w[j] * (hv * inv);
    if (out) out[r * width + j] = v;
    out_bf16[r * width + j] = bf16_bits(v);
  }
}

__global__ void relu2_kernel(float* x, uint16_t* xb, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float r = fmaxf(x[i], 0.0f);
    x[i] = r * r;
    xb[i] = bf16_bits(r * r);
  }
}

__global__ void add_scaled_into_kernel(float* x, const float* y, float s, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    x[i] = s == 1.0f ? x[i] + y[i] : fmaf(s, y[i], x[i]);
}

// ---------------------------------------------------------------------------------------------
// Launchers.

void causal_conv1d_silu(const float* x, int64_t ld_x, const float* w, const float* bias, int64_t kernel, float* y,
                        int64_t ld_y, int64_t len, int64_t channels, cudaStream_t stream) {
  if (len <= 0) return;
  conv1d_silu_kernel<<<blocks_for(len * channels), kThreads, 0, stream>>>(x, ld_x, w, bias, kernel, y, ld_y, len,
                                                                          channels);
}

void deltanet_l2norm_qk(float* qkv, int64_t ld, int64_t rows, int64_t num_k_heads, int64_t head_k_dim,
                        cudaStream_t stream) {
  if (rows <= 0) return;
  const auto scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_k_dim)));  // head_k_dim ** -0.5
  l2norm_qk_kernel<<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(2 * num_k_heads)),
                     reduce_threads(head_k_dim), 0, stream>>>(qkv, ld, num_k_heads, head_k_dim, scale);
}

void deltanet_gates(float* a, float* b, const float* dt_bias, const float* A_log, int64_t rows, int64_t heads,
                    cudaStream_t stream) {
  if (rows <= 0) return;
  deltanet_gates_kernel<<<blocks_for(rows * heads), kThreads, 0, stream>>>(a, b, dt_bias, A_log, rows, heads);
}

bool deltanet_recurrence_supports(int64_t dk, int64_t dv) {
  return dk > 0 && dv > 0 && (dk * dv + 2 * dk) * 4 <= kMaxStateBytes;
}

cudaError_t deltanet_recurrence(const float* qkv, int64_t ld, const float* g, const float* beta,
                                const int64_t* offsets, const int64_t* lengths, int64_t samples, int64_t num_k_heads,
                                int64_t num_v_heads, int64_t dk, int64_t dv, float* out, cudaStream_t stream) {
  if (samples <= 0) return cudaSuccess;
  const auto bytes = static_cast<int>((dk * dv + 2 * dk) * 4);
  const cudaError_t e = cudaFuncSetAttribute(deltanet_recurrence_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e != cudaSuccess) return e;
  const int threads = dv >= 256 ? 256 : static_cast<int>((dv + 31) / 32 * 32);
  deltanet_recurrence_kernel<<<dim3(static_cast<unsigned>(num_v_heads), static_cast<unsigned>(samples)), threads, bytes,
                               stream>>>(qkv, ld, g, beta, offsets, lengths, num_k_heads, num_v_heads, dk, dv, out);
  return cudaGetLastError();  // a launch the device refuses (shared memory) is reported here, not later
}

void deltanet_gated_norm(const float* o, const float* z, const float* w, double eps, int64_t rows, int64_t heads,
                         int64_t dv, uint16_t* out, cudaStream_t stream) {
  if (rows <= 0) return;
  deltanet_gated_norm_kernel<<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(heads)), reduce_threads(dv), 0,
                               stream>>>(o, z, w, eps, heads, dv, out);
}

void split_query_gate(const float* qg, int64_t n, int64_t heads, int64_t d, float* q, float* gate,
                      cudaStream_t stream) {
  if (n <= 0) return;
  split_query_gate_kernel<<<blocks_for(n * heads * d), kThreads, 0, stream>>>(qg, n, heads, d, q, gate);
}

void sigmoid_gate_mul(float* attn, const float* gate, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  sigmoid_gate_mul_kernel<<<blocks_for(n), kThreads, 0, stream>>>(attn, gate, n);
}

void mamba2_dt(const float* dt, int64_t ld, const float* dt_bias, double lo, double hi, int64_t rows, int64_t heads,
               float* out, cudaStream_t stream) {
  if (rows <= 0) return;
  mamba2_dt_kernel<<<blocks_for(rows * heads), kThreads, 0, stream>>>(dt, ld, dt_bias, lo, hi, rows, heads, out);
}

bool mamba2_recurrence_supports(int64_t head_dim, int64_t state) {
  return head_dim > 0 && state > 0 && (head_dim * state + 2 * state) * 4 <= kMaxStateBytes;
}

cudaError_t mamba2_recurrence(const float* xbc, int64_t ld, const float* dt, const float* A_log, const float* D,
                              const int64_t* offsets, const int64_t* lengths, int64_t samples, int64_t heads,
                              int64_t head_dim, int64_t groups, int64_t state, float* y, cudaStream_t stream) {
  if (samples <= 0) return cudaSuccess;
  const auto bytes = static_cast<int>((head_dim * state + 2 * state) * 4);
  const cudaError_t e = cudaFuncSetAttribute(mamba2_recurrence_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e != cudaSuccess) return e;
  const int threads = head_dim >= 256 ? 256 : static_cast<int>((head_dim + 31) / 32 * 32);
  mamba2_recurrence_kernel<<<dim3(static_cast<unsigned>(heads), static_cast<unsigned>(samples)), threads, bytes,
                             stream>>>(xbc, ld, dt, A_log, D, offsets, lengths, heads, head_dim, groups, state, y);
  return cudaGetLastError();
}

void mamba2_gated_norm(const float* y, const float* z, int64_t ld_z, const float* w, double eps, int64_t rows,
                       int64_t width, int64_t group_size, float* out, uint16_t* out_bf16, cudaStream_t stream) {
  if (rows <= 0) return;
  mamba2_gated_norm_kernel<<<dim3(static_cast<unsigned>(rows), static_cast<unsigned>(width / group_size)),
                             reduce_threads(group_size), 0, stream>>>(y, z, ld_z, w, eps, width, group_size, out,
                                                                      out_bf16);
}

void relu2(float* x, uint16_t* xb, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  relu2_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, xb, n);
}

void add_scaled_into(float* x, const float* y, float s, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  add_scaled_into_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, y, s, n);
}

}  // namespace ctcal::cuda
