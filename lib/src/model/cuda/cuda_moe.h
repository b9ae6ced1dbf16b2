#pragma once
// The sparse MoE MLP of Qwen3-MoE, Mixtral, gpt-oss, GLM-4.5, MiniMax-M2 and Llama 4 on the GPU:
// what the CPU's moe_mlp_into (model/moe.h, transformers 5.17 semantics) computes, step for step:
//
//   logits = xn W_r^T (+ b_r)        fp32 GEMM (cublasSgemm, no TF32) on the fp32 normed input
//   routing = route_logits(logits)   on the host, the CPU's own code: the same decisions (GLM-4.5,
//                                    MiniMax-M2: sigmoid grouped top-k with the correction bias)
//   per expert e, ascending, one GEMM over all rows routed to it (never token by token):
//     h_e = act(gate_e(x_e)) * up_e(x_e)   bf16 operands, fp32 accumulation and outputs (gpt-oss:
//                                          biases and the clamped SwiGLU; else SiLU)
//     y_e = down_e(h_e)
//   out[t] = sum over t's experts, ascending, of weight[t, e] * y_e[t]   (a fixed order, no atomics)
//   (Llama 4: x_e = weight[t, e] * x[t] in fp32 before the expert, and the y_e summed unweighted)
// The shared expert of GLM-4.5, Llama 4 (and Qwen3-Next's, gated) is the layer's dense MLP on the
// same input, added by cuda_layers.cpp (add_shared_expert).
//
// Expert observers (kExpertGateUpInput, kExpertDownInput) see each expert's rows on the host,
// through observe_expert, as the CPU shows them. As on the CPU, eval fake-quantizes neither the
// MoE MLP's input (the router reads it unquantized) nor the experts' inputs.
#include <cstdint>
#include <vector>

#include "ctcal/model/model_config.h"
#include "ctcal/model/observation.h"
#include "cuda_support.h"
#include "cuda_weight_stream.h"

namespace ctcal::cuda {

class MoeMlp {
 public:
  // rows: the most tokens of one chunk. Allocates the working buffers; `blas` runs on `stream`.
  MoeMlp(const ModelConfig& c, int64_t rows, cublasHandle_t blas, cudaStream_t stream);
  MoeMlp(const MoeMlp&) = delete;
  MoeMlp& operator=(const MoeMlp&) = delete;

  // xn: [n, hidden] fp32, the normed hidden state (the router's input); xb: [n, hidden] bf16 of
  // it (the experts' input) -> out: [n, hidden] fp32, overwritten (enqueued; it may still be
  // running on return). `obs` (may be null) gets each expert's inputs. Waits for the stream once
  // per call (the routing runs on the host) and, with expert observers, once or twice more.
  void run(const DeviceExperts& w, int64_t layer, const float* xn, const uint16_t* xb, int64_t n,
           ActivationObserver* obs, float* out);

 private:
  // y [m, out] = x [m, in] . W^T (+ b): bf16 x and W [out, in], fp32 accumulation and y.
  void gemm_bf16(const uint16_t* x, int64_t m, int64_t in, const uint16_t* w, const float* b, int64_t out, float* y);

  const ModelConfig& c_;
  cublasHandle_t blas_;
  cudaStream_t stream_;
  int64_t rows_;                    // the most tokens of one run() call
  DeviceBuffer<float> logits_;      // [rows, num_experts] fp32 router logits
  DeviceBuffer<uint16_t> xg_;       // [rows * top_k, hidden] bf16: each routed row's input, grouped by expert
  DeviceBuffer<float> gate_;        // [rows * top_k, moe_intermediate]: gate_e(x), then act(gate) * up
  DeviceBuffer<float> up_down_;     // [rows * top_k, max(moe_intermediate, hidden)]: up_e(x) [.., moe_intermediate],
                                    // then down_e(h) [.., hidden] (up is dead once the activation ran)
  DeviceBuffer<uint16_t> act_b_;    // [rows * top_k, moe_intermediate] bf16 of act(gate) * up: down's input
  DeviceBuffer<int32_t> token_;     // [rows * top_k] the token of each routed row
  DeviceBuffer<float> weight_;      // [rows * top_k] its routing weight on the output (Llama 4: 1)
  DeviceBuffer<float> in_scale_;    // [rows * top_k] its routing weight on the input (Llama 4 only)
  DeviceBuffer<int32_t> slots_;     // [rows, top_k] each token's routed rows, ascending (= ascending expert)
  PinnedBuffer host_logits_;        // [rows, num_experts] fp32, the routing's input on the host
  PinnedBuffer host_x_;             // [rows, hidden] fp32 copy of xn (kExpertGateUpInput observers)
  PinnedBuffer host_act_;           // [rows * top_k, moe_intermediate] fp32 copy of act(gate) * up (kExpertDownInput)
  PinnedBuffer host_tables_;        // token_, weight_, slots_ staged for their upload
  std::vector<float> xe_;           // [m, hidden] one expert's gathered input rows, for its observer
};

}  // namespace ctcal::cuda
