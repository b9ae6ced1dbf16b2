// Kernels of the CUDA backend; see cuda_kernels.h for the contracts. The arithmetic of each
// element follows the CPU path's (model/layer_ops.cpp, rope.cpp, attention.cpp) step for step;
// results differ only where the hardware rounds differently (FMA contraction, expf/tanhf ulps).
#include "cuda_kernels.h"
#include "kernel_launch.cuh"

#include <cuda_bf16.h>

#include <cfloat>
#include <cmath>

namespace ctcal::cuda {

namespace {

// A grid of rows (gridDim.y, at most 65535: larger counts loop) by column blocks.
dim3 row_grid(int64_t rows, int64_t cols) {
  const int64_t bx = (cols + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(bx), static_cast<unsigned>(rows < 65535 ? rows : 65535));
}

// Block-wide reductions with a fixed tree: warp shuffles, then one warp over the warp results.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T identity) {
  __shared__ T partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = threadIdx.x < warps ? partial[lane] : identity;
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __shared__ T result;
  if (threadIdx.x == 0) result = v;
  __syncthreads();
  const T out = result;
  __syncthreads();  // `partial` and `result` may be reused by the next call
  return out;
}

struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct Min {
  __device__ float operator()(float a, float b) const { return fminf(a, b); }
};
struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

__global__ void rms_norm_kernel(const float* x, int64_t ld_x, const float* w, double eps, float* y, int64_t ld_y,
                                uint16_t* y_bf16, int64_t width) {
  const int64_t r = blockIdx.x;
  const float* xr = x + r * ld_x;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
  ss = block_reduce(ss, Sum{}, 0.0);
  const auto inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(width) + eps));
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) {
    const float v = __fmul_rn(__fmul_rn(xr[i], inv), w[i]);
    if (y) y[r * ld_y + i] = v;
    if (y_bf16) y_bf16[r * width + i] = bf16_bits(v);
  }
}

__global__ void add_bias_kernel(float* y, const float* b, int64_t n, int64_t cols) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    y[i] += b[i % cols];
}

__global__ void to_bf16_kernel(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    y[i] = bf16_bits(x[i]);
}

__global__ void add_into_kernel(float* x, const float* y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    x[i] += y[i];
}

__device__ float bf16_float(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }

__device__ float activate(int act, float g) {
  if (act == static_cast<int>(Act::kSilu)) return __fdiv_rn(g, 1.0f + expf(-g));
  const float k = 0.7978845608028654f;  // sqrt(2 / pi) in fp32, as the CPU path
  return 0.5f * g * (1.0f + tanhf(k * (g + 0.044715f * g * g * g)));
}

__global__ void gated_act_kernel(int act, float* gate, const float* up, uint16_t* gate_bf16, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float v = __fmul_rn(activate(act, gate[i]), up[i]);
    gate[i] = v;
    gate_bf16[i] = bf16_bits(v);
  }
}

// Eight elements per thread (16-byte loads and stores) where n allows, else one.
__global__ void gated_act_bf16_kernel(int act, const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  if (n % 8 == 0) {
    const auto* g8 = reinterpret_cast<const uint4*>(gate);
    const auto* u8 = reinterpret_cast<const uint4*>(up);
    auto* o8 = reinterpret_cast<uint4*>(out);
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n / 8; i += stride) {
      const uint4 g = g8[i], u = u8[i];
      const uint32_t gw[4] = {g.x, g.y, g.z, g.w}, uw[4] = {u.x, u.y, u.z, u.w};
      uint32_t ow[4];
      for (int j = 0; j < 4; ++j) {
        const float lo = __fmul_rn(activate(act, bf16_float(gw[j] & 0xffffu)), bf16_float(uw[j] & 0xffffu));
        const float hi = __fmul_rn(activate(act, bf16_float(gw[j] >> 16)), bf16_float(uw[j] >> 16));
        ow[j] = static_cast<uint32_t>(bf16_bits(lo)) | (static_cast<uint32_t>(bf16_bits(hi)) << 16);
      }
      o8[i] = make_uint4(ow[0], ow[1], ow[2], ow[3]);
    }
    return;
  }
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += stride)
    out[i] = bf16_bits(__fmul_rn(activate(act, bf16_float(gate[i])), bf16_float(up[i])));
}

// Rows r = blockIdx.y, gridDim.y apart; columns by the block's threads.
__global__ void to_bf16_rows_kernel(const float* x, int64_t ld, uint16_t* y, int64_t rows, int64_t cols) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < cols; i += int64_t{gridDim.x} * blockDim.x)
      y[r * cols + i] = bf16_bits(x[r * ld + i]);
}

__global__ void rope_kernel(float* x, int heads, int head_dim, int64_t ld, const float* cos, const float* sin,
                            int half) {
  // Block t: position t; its threads walk the (head, i < half) pairs (32-bit division: a 64-bit
  // one per element cost more than the arithmetic).
  const int64_t t = blockIdx.x;
  for (int j = static_cast<int>(threadIdx.x); j < heads * half; j += static_cast<int>(blockDim.x)) {
    const int h = j / half, i = j - h * half;
    float* v = x + t * ld + static_cast<int64_t>(h) * head_dim;
    const float c = cos[t * half + i], s = sin[t * half + i];
    const float a = v[i], b = v[i + half];
    v[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    v[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
  }
}

// Block (split, head) of one sample: rows [t0, t1) of q|k|v head `head` (q heads first, then k,
// then v), thread (row lane, i) on the pair (i, i + half) of rows t0 + lane, t0 + lane + lanes, ...
__global__ void rope_qkv_kernel(const float* x, int64_t len, int64_t ld, int heads, int kv_heads, int head_dim,
                                const float* cos, const float* sin, uint16_t* qb, uint16_t* kb, uint16_t* vb,
                                QkvRanges rg) {
  const int split = static_cast<int>(blockIdx.x), hh = static_cast<int>(blockIdx.y);
  const int half = head_dim / 2, lanes = kThreads / half;
  const int kind = hh < heads ? 0 : hh < heads + kv_heads ? 1 : 2;  // q, k, v
  const int head = kind == 0 ? hh : kind == 1 ? hh - heads : hh - heads - kv_heads;
  const int64_t width = static_cast<int64_t>(kind == 0 ? heads : kv_heads) * head_dim;
  uint16_t* out = kind == 0 ? qb : kind == 1 ? kb : vb;                        // [len, width]
  const float* in = x + (kind == 0 ? 0 : static_cast<int64_t>(heads) * head_dim +
                                           (kind == 2 ? static_cast<int64_t>(kv_heads) * head_dim : 0));
  const int64_t t0 = len * split / kMinMaxSplits, t1 = len * (split + 1) / kMinMaxSplits;
  const int i = static_cast<int>(threadIdx.x) % half, lane = static_cast<int>(threadIdx.x) / half;
  float pre_lo = FLT_MAX, pre_hi = -FLT_MAX, lo = FLT_MAX, hi = -FLT_MAX;
  if (lane < lanes) {
    for (int64_t t = t0 + lane; t < t1; t += lanes) {
      const int64_t at = static_cast<int64_t>(head) * head_dim + i;
      float a = in[t * ld + at], b = in[t * ld + at + half];
      if (kind != 2) {
        pre_lo = fminf(pre_lo, fminf(a, b));
        pre_hi = fmaxf(pre_hi, fmaxf(a, b));
      }
      if (kind != 2 && cos) {  // rope_kernel's arithmetic, step for step (no table: a NoPE layer)
        const float c = cos[t * half + i], s = sin[t * half + i];
        const float ra = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        const float rb = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
        a = ra;
        b = rb;
      }
      lo = fminf(lo, fminf(a, b));
      hi = fmaxf(hi, fmaxf(a, b));
      out[t * width + at] = bf16_bits(a);
      out[t * width + at + half] = bf16_bits(b);
    }
  }
  // Partials in head_min_max's layout: [2][samples, site heads, kMinMaxSplits] (minima, maxima).
  auto put = [&](float* part, int site_heads, float vlo, float vhi) {
    vlo = block_reduce(vlo, Min{}, FLT_MAX);
    vhi = block_reduce(vhi, Max{}, -FLT_MAX);
    if (threadIdx.x == 0) {
      const int64_t n = rg.samples * site_heads;
      const int64_t at2 = (rg.sample * site_heads + head) * kMinMaxSplits + split;
      part[at2] = vlo;
      part[n * kMinMaxSplits + at2] = vhi;
    }
  };
  // (Every thread of the block takes the same branches: the reductions' barriers are uniform.)
  if (kind == 1 && rg.key_pre_rope) put(rg.key_pre_rope, kv_heads, pre_lo, pre_hi);
  float* post = kind == 0 ? rg.query : kind == 1 ? rg.key : rg.value;
  if (post) put(post, kind == 0 ? heads : kv_heads, lo, hi);
}

// Pass 1: block (s, h, split) reduces its share of sample s's rows of head h into partial.
__global__ void head_min_max_partial_kernel(const float* x, int64_t ld, int64_t heads, int64_t head_dim,
                                            const int64_t* offsets, const int64_t* lengths, float* part_min,
                                            float* part_max) {
  const int64_t s = blockIdx.x, h = blockIdx.y, split = blockIdx.z;
  const int64_t len = lengths[s];
  const int64_t t0 = len * split / kMinMaxSplits, t1 = len * (split + 1) / kMinMaxSplits;
  const float* base = x + (offsets[s] + t0) * ld + h * head_dim;
  // Element i = (row r, column c) of the [t1 - t0, head_dim] block, r and c stepped instead of
  // divided (a 64-bit division per element cost more than the reads).
  const int64_t rows = t1 - t0;
  const auto step = static_cast<int64_t>(blockDim.x);
  const int64_t step_r = step / head_dim, step_c = step % head_dim;
  int64_t r = threadIdx.x / head_dim, c = threadIdx.x % head_dim;
  float lo = FLT_MAX, hi = -FLT_MAX;
  while (r < rows) {
    const float v = base[r * ld + c];
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
    r += step_r;
    c += step_c;
    if (c >= head_dim) {
      c -= head_dim;
      ++r;
    }
  }
  lo = block_reduce(lo, Min{}, FLT_MAX);
  hi = block_reduce(hi, Max{}, -FLT_MAX);
  if (threadIdx.x == 0) {
    const int64_t at = (s * heads + h) * kMinMaxSplits + split;
    part_min[at] = lo;
    part_max[at] = hi;
  }
}

// Pass 2: one thread per (s, h) folds its splits (min and max are exact: any order is the same).
__global__ void head_min_max_final_kernel(const float* part_min, const float* part_max, int64_t n, int64_t heads,
                                          float* out_min, float* out_max, int64_t out_stride) {
  const int64_t sh = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (sh >= n) return;
  float lo = FLT_MAX, hi = -FLT_MAX;
  for (int k = 0; k < kMinMaxSplits; ++k) {
    lo = fminf(lo, part_min[sh * kMinMaxSplits + k]);
    hi = fmaxf(hi, part_max[sh * kMinMaxSplits + k]);
  }
  out_min[(sh / heads) * out_stride + sh % heads] = lo;
  out_max[(sh / heads) * out_stride + sh % heads] = hi;
}

__global__ void masked_softmax_kernel(const float* scores, uint16_t* p, int64_t bq, int64_t sk, int64_t q0,
                                      int64_t k0, int64_t window, float scale) {
  const int64_t row = blockIdx.x;  // batch * bq rows
  const int64_t q = q0 + row % bq;
  // Keys k0 + j seen by query q: k <= q and q - k < window.
  const int64_t j_hi = q - k0;                                       // inclusive
  const int64_t j_lo = q - window + 1 - k0 > 0 ? q - window + 1 - k0 : 0;
  const float* sr = scores + row * sk;
  uint16_t* pr = p + row * sk;
  float m = -FLT_MAX;
  for (int64_t j = j_lo + threadIdx.x; j <= j_hi && j < sk; j += blockDim.x) m = fmaxf(m, sr[j] * scale);
  m = block_reduce(m, Max{}, -FLT_MAX);
  float sum = 0;
  for (int64_t j = j_lo + threadIdx.x; j <= j_hi && j < sk; j += blockDim.x) sum += expf(sr[j] * scale - m);
  sum = block_reduce(sum, Sum{}, 0.0f);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < sk; j += blockDim.x) {
    const bool seen = j >= j_lo && j <= j_hi;
    pr[j] = bf16_bits(seen ? expf(sr[j] * scale - m) * inv : 0.0f);
  }
}

__global__ void scale_rows_kernel(float* x, int64_t ld, const float* s, int64_t rows, int64_t cols) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < cols; i += int64_t{gridDim.x} * blockDim.x)
      x[r * ld + i] = __fmul_rn(x[r * ld + i], s[r]);
}

__global__ void flag_nonfinite_kernel(const float* x, int64_t n, int* flag) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    if (!isfinite(x[i])) *flag = 1;
}

}  // namespace

void rms_norm(const float* x, int64_t ld_x, const float* w, double eps, float* y, int64_t ld_y, uint16_t* y_bf16,
              int64_t rows, int64_t width, cudaStream_t stream) {
  if (rows == 0) return;
  rms_norm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, ld_x, w, eps, y, ld_y, y_bf16, width);
}

void add_bias(float* y, const float* b, int64_t rows, int64_t cols, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n) add_bias_kernel<<<blocks_for(n), kThreads, 0, stream>>>(y, b, n, cols);
}

void to_bf16(const float* x, uint16_t* y, int64_t n, cudaStream_t stream) {
  if (n) to_bf16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, y, n);
}

void add_into(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n) add_into_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, y, n);
}

void gated_act(Act act, float* gate, const float* up, uint16_t* gate_bf16, int64_t n, cudaStream_t stream) {
  if (n) gated_act_kernel<<<blocks_for(n), kThreads, 0, stream>>>(static_cast<int>(act), gate, up, gate_bf16, n);
}

void gated_act_bf16(Act act, const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n, cudaStream_t stream) {
  if (n) gated_act_bf16_kernel<<<blocks_for(n % 8 == 0 ? n / 8 : n), kThreads, 0, stream>>>(static_cast<int>(act), gate, up, out, n);
}

void to_bf16_rows(const float* x, int64_t ld, uint16_t* y, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows > 0 && cols > 0) to_bf16_rows_kernel<<<row_grid(rows, cols), kThreads, 0, stream>>>(x, ld, y, rows, cols);
}

void rope(float* x, int64_t seq, int64_t heads, int64_t head_dim, int64_t ld, const float* cos, const float* sin,
          int64_t half, cudaStream_t stream) {
  if (seq == 0 || heads * half == 0) return;
  rope_kernel<<<static_cast<unsigned>(seq), kThreads, 0, stream>>>(x, static_cast<int>(heads), static_cast<int>(head_dim),
                                                                    ld, cos, sin, static_cast<int>(half));
}

void head_min_max(const float* x, int64_t ld, int64_t heads, int64_t head_dim, const int64_t* offsets,
                  const int64_t* lengths, int64_t samples, float* out_min, float* out_max, int64_t out_stride,
                  float* partial, cudaStream_t stream) {
  if (samples == 0) return;
  const int64_t n = samples * heads;
  const dim3 grid(static_cast<unsigned>(samples), static_cast<unsigned>(heads), kMinMaxSplits);
  head_min_max_partial_kernel<<<grid, kThreads, 0, stream>>>(x, ld, heads, head_dim, offsets, lengths, partial,
                                                             partial + n * kMinMaxSplits);
  fold_head_ranges(partial, samples, heads, out_min, out_max, out_stride, stream);
}

void fold_head_ranges(const float* partial, int64_t samples, int64_t heads, float* out_min, float* out_max,
                      int64_t out_stride, cudaStream_t stream) {
  const int64_t n = samples * heads;
  if (n) head_min_max_final_kernel<<<blocks_for(n), kThreads, 0, stream>>>(partial, partial + n * kMinMaxSplits, n,
                                                                           heads, out_min, out_max, out_stride);
}

bool rope_qkv_supports(int64_t head_dim, int64_t half) {
  // The kernel's threads walk pairs (i, i + head_dim / 2) whatever the table: half 0 rotates nothing.
  return head_dim > 0 && head_dim % 2 == 0 && head_dim / 2 <= kThreads && (half == 0 || 2 * half == head_dim);
}

void rope_qkv_to_bf16(const float* x, int64_t len, int64_t ld, int64_t heads, int64_t kv_heads, int64_t head_dim,
                      const float* cos, const float* sin, uint16_t* qb, uint16_t* kb, uint16_t* vb,
                      const QkvRanges& ranges, cudaStream_t stream) {
  if (len == 0) return;
  const dim3 grid(kMinMaxSplits, static_cast<unsigned>(heads + 2 * kv_heads));
  rope_qkv_kernel<<<grid, kThreads, 0, stream>>>(x, len, ld, static_cast<int>(heads), static_cast<int>(kv_heads),
                                                 static_cast<int>(head_dim), cos, sin, qb, kb, vb, ranges);
}

void masked_softmax(const float* scores, uint16_t* p, int64_t batch, int64_t bq, int64_t sk, int64_t q0, int64_t k0,
                    int64_t window, float scale, cudaStream_t stream) {
  // Three passes over the row (max, sum, write) read it from L1/L2 after the first: a version
  // holding the row in registers measured slower (docs/performance.md).
  const int64_t rows = batch * bq;
  if (rows) masked_softmax_kernel<<<static_cast<unsigned>(rows), 128, 0, stream>>>(scores, p, bq, sk, q0, k0, window, scale);
}

void scale_rows(float* x, int64_t ld, const float* s, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows > 0 && cols > 0) scale_rows_kernel<<<row_grid(rows, cols), kThreads, 0, stream>>>(x, ld, s, rows, cols);
}

void flag_nonfinite(const float* x, int64_t n, int* flag, cudaStream_t stream) {
  if (n) flag_nonfinite_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, flag);
}

}  // namespace ctcal::cuda
