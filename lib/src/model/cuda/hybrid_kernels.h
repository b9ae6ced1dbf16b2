#pragma once
// The kernels of the hybrid families' token mixers on the GPU (hybrid_kernels.cu): Qwen3.5 /
// Qwen3-Next's gated DeltaNet and gated attention, Nemotron-H / Granite 4's Mamba2 mixer. Each
// computes what its CPU function computes (model/gated_deltanet.h, model/mamba2.h, model/layer.cpp)
// element for element, except the two recurrences: the CPU evaluates them chunk by chunk on GEMMs
// (torch_chunk_gated_delta_rule, the SSD scan), the GPU token by token (the same recurrence, as
// transformers' torch_recurrent_gated_delta_rule and Mamba2's step function write it), so the two
// differ by fp32 rounding only. Plain pointers and sizes, fp32 row-major with leading dimensions
// (elements per row); bf16 values travel as uint16_t bits; everything runs on `stream`.
#include <cstdint>

#include <cuda_runtime_api.h>

namespace ctcal::cuda {

// Depthwise causal conv1d + bias, then SiLU, over ONE sample's rows: y(t, c) = silu(bias_c +
// sum_j w(c, j) x(t - K + 1 + j, c)), j in [0, K), rows before the sample's first read as zeros.
// x: [len, channels] (ld_x), w: [channels, K], bias: [channels] or null, y: [len, channels] (ld_y;
// must not alias x).
void causal_conv1d_silu(const float* x, int64_t ld_x, const float* w, const float* bias, int64_t kernel, float* y,
                        int64_t ld_y, int64_t len, int64_t channels, cudaStream_t stream);

// In place on the conv output qkv [rows, ld] (q at columns [0, key_dim), k at [key_dim, 2 key_dim)):
// each key head's q and k divided by sqrt(sum x^2 + 1e-6) (sum in double), then q times
// head_k_dim^-0.5 (model/gated_deltanet.h l2norm_qk).
void deltanet_l2norm_qk(float* qkv, int64_t ld, int64_t rows, int64_t num_k_heads, int64_t head_k_dim,
                        cudaStream_t stream);

// beta = sigmoid(b), g = -exp(A_log) * softplus(a + dt_bias) (threshold 20), in double, rounded
// once; in place: a [rows, heads] becomes g, b [rows, heads] becomes beta (dense).
void deltanet_gates(float* a, float* b, const float* dt_bias, const float* A_log, int64_t rows, int64_t heads,
                    cudaStream_t stream);

// The gated delta rule from zero state, token by token, one block per (sample, value head):
//   S = exp(g_t) S;  S += k_t ((v_t - S^T k_t) beta_t)^T;  o_t = S^T q_t      (S: [dk, dv] in shared memory)
// qkv: [rows, ld] (q | k | v columns as deltanet_l2norm_qk left them), g/beta: [rows, num_v_heads],
// out: [rows, num_v_heads * dv] dense. offsets/lengths: [samples] on the device (rows of each sample).
// Value head h reads key head h / (num_v_heads / num_k_heads). Returns the launch's error (the
// state's shared memory is opted into; a device that refuses it says so here).
cudaError_t deltanet_recurrence(const float* qkv, int64_t ld, const float* g, const float* beta,
                                const int64_t* offsets, const int64_t* lengths, int64_t samples, int64_t num_k_heads,
                                int64_t num_v_heads, int64_t dk, int64_t dv, float* out, cudaStream_t stream);
// Whether deltanet_recurrence takes the head sizes: its state [dk, dv] fp32 fits in shared memory.
bool deltanet_recurrence_supports(int64_t dk, int64_t dv);

// RMSNormGated per value head: out = bf16(w * (o * rsqrt(mean(o^2) + eps)) * silu(z)) (mean in
// double). o: [rows, heads * dv] dense, z: [rows, heads * dv] dense, w: [dv], out: [rows, heads * dv].
void deltanet_gated_norm(const float* o, const float* z, const float* w, double eps, int64_t rows, int64_t heads,
                         int64_t dv, uint16_t* out, cudaStream_t stream);

// Gated attention (Qwen3_5Attention): q_proj's output qg [n, heads, 2 d] is per head [query | gate]
// -> q [n, heads * d] and gate [n, heads * d], both dense.
void split_query_gate(const float* qg, int64_t n, int64_t heads, int64_t d, float* q, float* gate,
                      cudaStream_t stream);
// attn [n] *= sigmoid(gate [n]) (1 / (1 + exp(-g)), fp32).
void sigmoid_gate_mul(float* attn, const float* gate, int64_t n, cudaStream_t stream);

// Mamba2: dt [rows, heads] (columns dt_col.. of zxbcdt, row stride ld) -> out [rows, heads] dense:
// clamp(softplus(dt + dt_bias), lo, hi) in double, rounded once.
void mamba2_dt(const float* dt, int64_t ld, const float* dt_bias, double lo, double hi, int64_t rows, int64_t heads,
               float* out, cudaStream_t stream);

// Mamba2's recurrence from zero state, token by token, one block per (sample, head h of group
// g = h / (heads / groups)), state S [head_dim, state] in shared memory:
//   S = exp(A_h dt_t) S + dt_t x_t B_t^T;  y_t = S C_t + D_h x_t,  A_h = -exp(A_log_h)
// xbc: [rows, ld] = [x (heads * head_dim) | B (groups * state) | C (groups * state)] after the
// conv; dt: [rows, heads] dense (after mamba2_dt); y: [rows, heads * head_dim] dense. Returns the
// launch's error, as deltanet_recurrence.
cudaError_t mamba2_recurrence(const float* xbc, int64_t ld, const float* dt, const float* A_log, const float* D,
                              const int64_t* offsets, const int64_t* lengths, int64_t samples, int64_t heads,
                              int64_t head_dim, int64_t groups, int64_t state, float* y, cudaStream_t stream);
// Whether mamba2_recurrence takes the sizes: its state [head_dim, state] fp32 fits in shared memory.
bool mamba2_recurrence_supports(int64_t head_dim, int64_t state);

// Mamba2's gated RMSNorm (norm_before_gate=False): h = y * silu(z), then each group of
// group_size along the row scaled by rsqrt(mean(h^2) + eps) (sum in double), times w
// -> out [rows, width] fp32 (dense; may be null) and out_bf16 [rows, width] (dense).
// y: [rows, width] dense, z: [rows, width] (ld_z), w: [width].
void mamba2_gated_norm(const float* y, const float* z, int64_t ld_z, const float* w, double eps, int64_t rows,
                       int64_t width, int64_t group_size, float* out, uint16_t* out_bf16, cudaStream_t stream);

// x [n] = max(x, 0)^2 (Nemotron-H's relu2 MLP activation), and xb [n] = bf16(x).
void relu2(float* x, uint16_t* xb, int64_t n, cudaStream_t stream);

// x [n] += s * y [n] (fp32; s = 1 is add_into's result).
void add_scaled_into(float* x, const float* y, float s, int64_t n, cudaStream_t stream);

}  // namespace ctcal::cuda
