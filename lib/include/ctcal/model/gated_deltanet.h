#pragma once
// The gated DeltaNet linear-attention layer of Qwen3-Next and Qwen3.5 (dense and MoE), as
// transformers 5.17's pure-torch path computes it (Qwen3NextGatedDeltaNet / Qwen3_5GatedDeltaNet
// .forward without a cache: each sample a prefill from zero conv and recurrent state):
//
//   q|k|v = in_proj_qkv(x), z = in_proj_z(x), b = in_proj_b(x), a = in_proj_a(x)
//   q|k|v = silu(causal depthwise conv1d(q|k|v))                     (kernel conv_kernel, no bias)
//   beta = sigmoid(b), g = -exp(A_log) * softplus(a + dt_bias)        (per token and value head)
//   q = l2norm(q) * head_k_dim^-0.5, k = l2norm(k)                    (eps 1e-6, per key head)
//   key head h / (num_v_heads / num_k_heads) serves value head h      (repeat_interleave)
//   S_t = exp(g_t) S_{t-1} + k_t beta_t (v_t - exp(g_t) S_{t-1}^T k_t)^T,  o_t = S_t^T q_t
//     (S: [head_k_dim, head_v_dim] per value head, S_0 = 0), computed chunk by chunk as
//     torch_chunk_gated_delta_rule does (chunk 64: a UT transform per chunk, GEMMs, one state
//     update per chunk), not token by token
//   o = norm.weight * rms_normalise(o) * silu(z)                      (RMSNormGated, per value head)
//   y = out_proj(o)
//
// Qwen3-Next stores the in-projections fused and interleaved per key head (in_proj_qkvz,
// in_proj_ba); split_qwen3_next_in_proj turns them into Qwen3.5's four (a row permutation).
// Everything runs in fp32; tasks (sample, value head) run in parallel, each on one thread with a
// fixed summation order, so results do not depend on the thread count.
#include <cstdint>
#include <string>
#include <vector>

#include "ctcal/model/layer_ops.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/sample_span.h"
#include "ctcal/model/tensor_types.h"
#include "ctcal/util/uninit_buffer.h"

namespace ctcal {

// torch_chunk_gated_delta_rule's chunk_size (the module passes none; the default is 64).
inline constexpr int64_t kGatedDeltaChunk = 64;
// l2norm's eps in torch_chunk_gated_delta_rule (use_qk_l2norm_in_kernel=True).
inline constexpr double kGatedDeltaL2Eps = 1e-6;

// Hyper-parameters under config.json's names (Qwen3NextConfig / Qwen3_5TextConfig).
struct GatedDeltaNetShape {
  int64_t hidden = 0;       // hidden_size
  int64_t num_k_heads = 0;  // linear_num_key_heads
  int64_t num_v_heads = 0;  // linear_num_value_heads (a multiple of num_k_heads)
  int64_t head_k_dim = 0;   // linear_key_head_dim
  int64_t head_v_dim = 0;   // linear_value_head_dim
  int64_t conv_kernel = 0;  // linear_conv_kernel_dim
  double eps = 1e-6;        // rms_norm_eps: RMSNormGated's variance_epsilon
  int64_t key_dim() const { return num_k_heads * head_k_dim; }
  int64_t value_dim() const { return num_v_heads * head_v_dim; }
  int64_t conv_dim() const { return 2 * key_dim() + value_dim(); }  // q | k | v channels
};

// One layer's weights (module linear_attn). Row orders are Qwen3.5's: q, k and v heads in head
// order. The conv's activation is SiLU (config hidden_act "silu"; the loader refuses another).
struct GatedDeltaNetWeights {
  Linear in_proj_qkv;  // [2 key_dim + value_dim, hidden]: rows q (key heads) | k (key heads) | v (value heads)
  Linear in_proj_z;    // [value_dim, hidden]: the gate of the norm, value heads in order
  Linear in_proj_b;    // [num_v_heads, hidden]: beta = sigmoid(b)
  Linear in_proj_a;    // [num_v_heads, hidden]: the decay's input
  RowMatrix conv1d;    // [conv_dim, conv_kernel]: conv1d.weight [conv_dim, 1, conv_kernel] squeezed
  Vector dt_bias;      // [num_v_heads]
  Vector A_log;        // [num_v_heads]: A = -exp(A_log)
  Vector norm;         // [head_v_dim] RMSNormGated.weight, multiplied as is (not 1 + w)
  Linear out_proj;     // [hidden, value_dim]
};

// Throws InputError naming `module` (e.g. "model.layers.0.linear_attn") when the shape is not one
// the module can have (num_v_heads not a multiple of num_k_heads, a non-positive size) or a weight
// has another shape than the comments above say. fp32 projections only (w set).
void check_gated_deltanet(const GatedDeltaNetWeights& w, const GatedDeltaNetShape& s, const std::string& module);

// Qwen3-Next's fused in-projections -> Qwen3.5's four (Qwen3NextGatedDeltaNet.fix_query_key_value_ordering):
// in_proj_qkvz [2 key_dim + 2 value_dim, hidden] is, per key head g, [q_g (head_k_dim) | k_g
// (head_k_dim) | v of value heads g r .. g r + r - 1 (r head_v_dim) | z of the same (r head_v_dim)],
// r = num_v_heads / num_k_heads; in_proj_ba [2 num_v_heads, hidden] is, per key head g, [b of those
// r value heads | a of them]. The rows are copied, so the result is exact.
struct QwenNextInProjRows {
  std::vector<int64_t> qkv;  // [2 key_dim + value_dim]: the in_proj_qkvz row of each in_proj_qkv row
  std::vector<int64_t> z;    // [value_dim]: the in_proj_qkvz row of each in_proj_z row
  std::vector<int64_t> b;    // [num_v_heads]: the in_proj_ba row of each in_proj_b row
  std::vector<int64_t> a;    // [num_v_heads]: the in_proj_ba row of each in_proj_a row
};
QwenNextInProjRows qwen3_next_in_proj_rows(const GatedDeltaNetShape& s);
// The same applied to fp32 weights: qkvz [2 key_dim + 2 value_dim, hidden], ba [2 num_v_heads, hidden]
// -> w->in_proj_qkv, in_proj_z, in_proj_b, in_proj_a (fp32, no bias).
void split_qwen3_next_in_proj(const RowMatrix& qkvz, const RowMatrix& ba, const GatedDeltaNetShape& s,
                              GatedDeltaNetWeights* w);

// The buffers of one call, for the caller to keep across calls (layers, chunks): allocated
// afresh, the ~(2 conv_dim + 2 value_dim) floats per token page-faulted on every call cost ~10 % of
// the layer at 2048 tokens (bench/gated_deltanet_bench). Grown on use, never shrunk.
struct GatedDeltaNetScratch {
  UninitBuffer<float> proj;   // [rows, conv_dim] in_proj_qkv(x), then the delta rule's output [rows, value_dim]
  UninitBuffer<float> qkv;    // [rows, conv_dim] after the conv and the l2 norms
  UninitBuffer<float> z;      // [rows, value_dim]
  UninitBuffer<float> b, a;   // [rows, num_v_heads]: in_proj_b / in_proj_a, then beta / g
  UninitBuffer<float> gated;  // [rows, value_dim] the out_proj input (gated_deltanet_forward only)
};

// The whole layer: x [rows, hidden] -> y [rows, hidden] (a pre-sized view), each span of rows one
// sample from zero state; the spans tile the rows in order (as make_chunks' spans do). bf16_scratch: room for rows * max(hidden, value_dim) values when the
// projections are bf16 (layer_ops.h ProjectionInput), else null. scratch: the caller's buffers, or
// null for buffers of this call's own. Bits depend on the inputs' values only: not on the thread
// count, on which samples share the call, or on where the buffers lie.
void gated_deltanet_forward(const Eigen::Ref<const RowMatrix>& x, const std::vector<SampleSpan>& samples,
                            const GatedDeltaNetWeights& w, const GatedDeltaNetShape& s, Eigen::Ref<RowMatrix> y,
                            uint16_t* bf16_scratch = nullptr, GatedDeltaNetScratch* scratch = nullptr);

// Everything before out_proj: x [rows, hidden] -> gated [rows, value_dim] (a pre-sized view), the
// out_proj input (the place a Linear-input observer of out_proj looks).
void gated_deltanet_mix(ProjectionInput& x, const std::vector<SampleSpan>& samples, const GatedDeltaNetWeights& w,
                        const GatedDeltaNetShape& s, Eigen::Ref<RowMatrix> gated,
                        GatedDeltaNetScratch* scratch = nullptr);

// The steps, for tests and for the CUDA backend's comparisons.
using StridedConstRef = Eigen::Ref<const RowMatrix, 0, Eigen::OuterStride<>>;
using StridedRef = Eigen::Ref<RowMatrix, 0, Eigen::OuterStride<>>;

// causal_conv1d_fn with SiLU, per sample: out(t, c) = silu(sum_j weight(c, j) x(t - K + 1 + j, c))
// over j in [0, K) with rows before the sample's first as zeros. x, out: [rows, conv_dim] (out must
// not alias x); weight: [conv_dim, K].
void causal_conv1d_silu(const StridedConstRef& x, const RowMatrix& weight, const std::vector<SampleSpan>& samples,
                        StridedRef out);

// beta = sigmoid(b), g = -exp(A_log) * softplus(a + dt_bias) (torch softplus: threshold 20),
// in double, rounded to fp32 once. a, b, beta, g: [rows, num_v_heads] (g, beta may alias a, b).
void gated_delta_gates(const StridedConstRef& a, const StridedConstRef& b, const Vector& dt_bias, const Vector& A_log,
                       StridedRef g, StridedRef beta);

// In place on the conv output qkv [rows, conv_dim]: each key head's q and k divided by its l2 norm
// (sqrt(sum x^2 + 1e-6)), then q scaled by head_k_dim^-0.5, as torch_chunk_gated_delta_rule does.
void l2norm_qk(StridedRef qkv, const GatedDeltaNetShape& s);

// torch_chunk_gated_delta_rule from zero state, per sample and value head. q, k: [rows, key_dim]
// (l2-normalised; q scaled), v: [rows, value_dim], g, beta: [rows, num_v_heads]
// -> out: [rows, value_dim] (may not alias the inputs).
void gated_delta_rule_chunked(const StridedConstRef& q, const StridedConstRef& k, const StridedConstRef& v,
                              const StridedConstRef& g, const StridedConstRef& beta,
                              const std::vector<SampleSpan>& samples, const GatedDeltaNetShape& s, StridedRef out);

// RMSNormGated per value head: out = weight * (o * rsqrt(mean(o^2) + eps)) * silu(z), in that
// order. o, z, out: [rows, value_dim] (out may alias o); weight: [head_v_dim].
void gated_rms_norm(const StridedConstRef& o, const StridedConstRef& z, const Vector& weight, const GatedDeltaNetShape& s,
                    StridedRef out);

}  // namespace ctcal
