#pragma once
// The hybrid families' token mixers on the GPU: Qwen3.5 / Qwen3-Next's gated DeltaNet
// (model/gated_deltanet.h) and Nemotron-H / Granite 4's Mamba2 mixer (model/mamba2.h), run where
// the CPU's layer.cpp runs them instead of the attention block:
//
//   DeltaNet: q|k|v, z, b, a = in_proj_*(xn)     bf16 GEMMs, fp32 outputs
//             q|k|v = silu(conv1d(q|k|v)); l2-normed q, k; beta, g   (hybrid_kernels.h)
//             o = delta rule, token by token;  gated = bf16(norm(o) * silu(z));  y = out_proj(gated)
//   Mamba2:   [z | xBC | dt] = in_proj(xn);  xBC = silu(conv1d(xBC) + b);  dt = clamp(softplus(dt + bias))
//             y = SSM recurrence + D x, token by token;  g = norm(y * silu(z));  y = out_proj(g)
//
// The projections are bf16 operands with fp32 accumulation, as every projection of the backend
// (the CPU keeps these mixers' projections in fp32; the GPU tests hold the result to the bf16
// tolerances against float64). The recurrences run one block per (sample, head), sequential over
// the sample's tokens, the state in shared memory: correct and simple, not the chunked GEMM form
// the CPU uses; no speed is claimed for them.
#include <cstdint>
#include <functional>
#include <string>

#include "ctcal/model/gated_deltanet.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/model_config.h"
#include "ctcal/model/sample_span.h"
#include "cuda_support.h"

namespace ctcal::cuda {

// A hybrid layer's token mixer in a weight slot (cuda_weight_stream.h's DeviceLayer::mixer): bf16
// projections [out, in], fp32 everything else; null where the layer has none.
struct DeviceDeltaNet {        // Qwen3.5 / Qwen3-Next linear_attn (model/gated_deltanet.h)
  const uint16_t* in_qkv = nullptr;    // [2 key_dim + value_dim, hidden]
  const uint16_t* in_z = nullptr;      // [value_dim, hidden]
  const uint16_t* in_b = nullptr;      // [num_v_heads, hidden]
  const uint16_t* in_a = nullptr;      // [num_v_heads, hidden]
  const uint16_t* out_proj = nullptr;  // [hidden, value_dim]
  const float* conv = nullptr;         // [conv_dim, K]
  const float* dt_bias = nullptr;      // [num_v_heads]
  const float* A_log = nullptr;        // [num_v_heads]
  const float* norm = nullptr;         // [head_v_dim]
};
struct DeviceMamba2 {          // Nemotron-H / Granite 4 mixer (model/mamba2.h)
  const uint16_t* in_proj = nullptr;   // [in_proj_dim, hidden]: rows [z | xBC | dt]
  const float* in_proj_b = nullptr;    // [in_proj_dim] or null
  const float* conv_w = nullptr;       // [conv_dim, K]
  const float* conv_b = nullptr;       // [conv_dim] or null
  const float* dt_bias = nullptr;      // [H]
  const float* A_log = nullptr;        // [H]
  const float* D = nullptr;            // [H]
  const float* norm_w = nullptr;       // [I]
  const uint16_t* out_proj = nullptr;  // [hidden, I]
  const float* out_proj_b = nullptr;   // [hidden] or null
};
struct DeviceMixer {
  DeviceDeltaNet deltanet;
  DeviceMamba2 mamba;
};

// Bytes a layer of `c` may need in a weight slot beyond layer_bytes_bound's attention and MLP
// terms: the larger of a DeltaNet and a Mamba2 mixer, q_proj's gate half (gated attention) and
// Granite's shared_mlp beside its experts. 0 for the other families.
std::size_t hybrid_extra_bytes(const ModelConfig& c);

// Copies w's mixer (w.linear_attn or w.mamba, if any) through `put` (the weight stream's: copies
// `bytes` from the host into the slot, returns where) and returns where its tensors lie. fp32
// projections are rounded to bf16 rows (round to nearest even).
using PutBytes = std::function<const void*(const void* src, std::size_t bytes)>;
DeviceMixer upload_mixer(const LayerWeights& w, const ModelConfig& c, const PutBytes& put);

// Why the backend cannot run `c`'s mixers (a head size whose recurrent state does not fit in shared
// memory), or empty.
std::string hybrid_unsupported(const ModelConfig& c);

class HybridMixers {
 public:
  // rows: the most tokens of one chunk. Allocates the working buffers of the mixers c has.
  HybridMixers(const ModelConfig& c, int64_t rows, cublasHandle_t blas, cudaStream_t stream);
  HybridMixers(const HybridMixers&) = delete;
  HybridMixers& operator=(const HybridMixers&) = delete;

  // xb [n, hidden] bf16 (the normed block input) -> y [n, hidden] fp32 (out_proj's output,
  // overwritten). offsets/lengths: the chunk's samples' rows, on the device.
  void deltanet(const DeviceDeltaNet& w, const uint16_t* xb, const SampleChunk& ch, const int64_t* offsets,
                const int64_t* lengths, float* y);
  // The same for a Mamba2 mixer. out_proj_input, if set, is shown out_proj's input g [n, I] fp32
  // on the device (the hook point kMambaOutProjInput) and returns whether it changed the values
  // (eval's fake quantization); it is called only when `want_out_proj_input` is true.
  using DeviceHook = std::function<bool(float* g)>;
  void mamba2(const DeviceMamba2& w, const uint16_t* xb, const SampleChunk& ch, const int64_t* offsets,
              const int64_t* lengths, bool want_out_proj_input, const DeviceHook& out_proj_input, float* y);

 private:
  // y [n, out] = x [n, in] . W^T (+ b): bf16 x and W, fp32 accumulation and y.
  void linear(const uint16_t* x, int64_t n, int64_t in, const uint16_t* w, const float* b, int64_t out, float* y);

  const ModelConfig& c_;
  GatedDeltaNetShape dn_;
  cublasHandle_t blas_;
  cudaStream_t stream_;
  // DeltaNet: proj_ [rows, conv_dim] in_proj_qkv(x), then the recurrence's output [rows, value_dim];
  // qkv_ [rows, conv_dim] after the conv and the norms; z_ [rows, value_dim]; a_/b_ [rows,
  // num_v_heads] (then g / beta). Mamba2: proj_ [rows, in_proj_dim] [z | xBC | dt]; qkv_ [rows,
  // conv_dim] xBC after the conv; a_ [rows, heads] dt; z_ [rows, I] the scan's output, then the
  // gated norm's.
  DeviceBuffer<float> proj_, qkv_, z_, a_, b_;
  DeviceBuffer<uint16_t> out_b_;  // [rows, value_dim or I] bf16: out_proj's input
};

}  // namespace ctcal::cuda
