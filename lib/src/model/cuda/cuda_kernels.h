#pragma once
// The element-wise and reduction kernels of the CUDA backend (cuda_kernels.cu). Plain pointers and
// sizes only, so that host code compiles with the C++ compiler. Every kernel runs on `stream`;
// tensors are row-major with the leading dimension (elements per row) given. bf16 values travel
// as uint16_t bits. Every reduction has a fixed shape (one block per row, a fixed tree within
// it), so results are identical run to run.
#include <cstdint>

#include <cuda_runtime_api.h>

namespace ctcal::cuda {

enum class Act : int { kSilu = 0, kGeluTanh = 1 };

// y = x * rsqrt(mean(x^2) + eps) * w per row (sum of squares in double, as the CPU path).
// x: [rows, width] (ld_x), y: [rows, width] (ld_y, may alias x) or null (nothing reads the fp32
// values), y_bf16: [rows, width] dense or null (the bf16 copy that feeds the next GEMMs).
void rms_norm(const float* x, int64_t ld_x, const float* w, double eps, float* y, int64_t ld_y, uint16_t* y_bf16,
              int64_t rows, int64_t width, cudaStream_t stream);

// y[r, :] += b for every row. y: [rows, cols] dense.
void add_bias(float* y, const float* b, int64_t rows, int64_t cols, cudaStream_t stream);

// Round to nearest even: x [n] fp32 -> y [n] bf16.
void to_bf16(const float* x, uint16_t* y, int64_t n, cudaStream_t stream);

// x += y, both [n] fp32.
void add_into(float* x, const float* y, int64_t n, cudaStream_t stream);

// gate = act(gate) * up, and gate_bf16 = bf16(gate). gate/up/gate_bf16: [n].
void gated_act(Act act, float* gate, const float* up, uint16_t* gate_bf16, int64_t n, cudaStream_t stream);

// out = bf16(act(gate) * up) from bf16 gate and up, the products in fp32 (transformers' bf16 MLP
// rounds gate and up to bf16 the same way; only the product's rounding differs: it computes
// act(gate) in bf16 too). gate/up/out: [n].
void gated_act_bf16(Act act, const uint16_t* gate, const uint16_t* up, uint16_t* out, int64_t n, cudaStream_t stream);

// Round to nearest even: x [rows, cols] fp32 (row stride ld) -> y [rows, cols] bf16, dense.
void to_bf16_rows(const float* x, int64_t ld, uint16_t* y, int64_t rows, int64_t cols, cudaStream_t stream);

// Half-split RoPE on the first 2 * half dims of every head (the CPU's apply_rope).
// x: [seq, heads, head_dim] (row stride ld), cos/sin: [seq, half].
void rope(float* x, int64_t seq, int64_t heads, int64_t head_dim, int64_t ld, const float* cos, const float* sin,
          int64_t half, cudaStream_t stream);

// Per-sample, per-head minimum and maximum (observers that need only the range). x: rows of
// every sample of a chunk, [rows, heads * head_dim] (ld); sample s is rows [offsets[s],
// offsets[s] + lengths[s]). out_min/out_max: [samples, out_stride >= heads]. offsets/lengths live on
// the device. Each (sample, head) is split over kMinMaxSplits blocks (a few samples of a chunk
// would otherwise leave most of the GPU idle); `partial`: room for 2 * samples * heads *
// kMinMaxSplits floats.
constexpr int kMinMaxSplits = 16;
void head_min_max(const float* x, int64_t ld, int64_t heads, int64_t head_dim, const int64_t* offsets,
                  const int64_t* lengths, int64_t samples, float* out_min, float* out_max, int64_t out_stride,
                  float* partial, cudaStream_t stream);

// head_min_max's second pass on its own: partial [2][samples, heads, kMinMaxSplits] (minima,
// then maxima) -> out_min/out_max [samples, out_stride >= heads].
void fold_head_ranges(const float* partial, int64_t samples, int64_t heads, float* out_min, float* out_max,
                      int64_t out_stride, cudaStream_t stream);

// Where rope_qkv_to_bf16 leaves the ranges of each site it observes: a partial buffer in
// fold_head_ranges' layout, [2][samples, site heads, kMinMaxSplits], or null (not observed).
// `sample`: the sample's index among the `samples` of its chunk.
struct QkvRanges {
  float* key_pre_rope = nullptr;
  float* query = nullptr;  // after RoPE
  float* key = nullptr;    // after RoPE
  float* value = nullptr;
  int64_t samples = 0, sample = 0;
};

// Whether rope_qkv_to_bf16 takes the shape: RoPE over the whole head (head_dim = 2 * half, up to
// 512), or none at all (half 0: a NoPE layer, SmolLM3's no_rope_layers).
bool rope_qkv_supports(int64_t head_dim, int64_t half);

// One pass over one sample's rows of the fused q|k|v GEMM's output x [len, ld] fp32 (q at
// columns [0, heads * head_dim), k next, then v, kv_heads * head_dim each): RoPE on q and k
// (cos/sin [len, head_dim / 2]; both null: no RoPE, key-before-RoPE = key), the bf16 copies qb [len, heads * head_dim], kb/vb [len, kv_heads *
// head_dim] (dense), and the ranges `ranges` asks for. x is not written. The same bits as rope,
// head_min_max and to_bf16_rows in turn (the same arithmetic per element; min/max are exact),
// for about a third of their memory traffic.
void rope_qkv_to_bf16(const float* x, int64_t len, int64_t ld, int64_t heads, int64_t kv_heads, int64_t head_dim,
                      const float* cos, const float* sin, uint16_t* qb, uint16_t* kb, uint16_t* vb,
                      const QkvRanges& ranges, cudaStream_t stream);

// The masked softmax of a batch of score blocks that share one geometry: scores [batch, bq, sk]
// fp32 (q k^T, unscaled) -> p [batch, bq, sk] bf16. Row r is query position q0 + r, column j key
// position k0 + j; a key is seen when k <= q and q - k < window. Masked entries become 0.
void masked_softmax(const float* scores, uint16_t* p, int64_t batch, int64_t bq, int64_t sk, int64_t q0, int64_t k0,
                    int64_t window, float scale, cudaStream_t stream);

// x[r, :cols] *= s[r] for every row (Llama 4's NoPE-layer query temperature: one factor per
// position). x: [rows, cols] (row stride ld), s: [rows] on the device.
void scale_rows(float* x, int64_t ld, const float* s, int64_t rows, int64_t cols, cudaStream_t stream);

// Sets *flag to 1 when x [n] holds a NaN or Inf (the flag is only ever raised).
void flag_nonfinite(const float* x, int64_t n, int* flag, cudaStream_t stream);

}  // namespace ctcal::cuda
