// The GPU MoE MLP (cuda_moe.h): router GEMM on the device, routing on the host with the CPU's
// code, then per expert one gate, one up and one down GEMM over the rows routed to it, and a
// fixed-order weighted sum back into token order.
#include "cuda_moe.h"

#include <algorithm>
#include <cstring>

#include "ctcal/model/family.h"
#include "ctcal/model/moe.h"
#include "cuda_kernels.h"
#include "moe_kernels.h"

namespace ctcal::cuda {

namespace {

std::size_t sz(int64_t a, int64_t b) { return static_cast<std::size_t>(a) * static_cast<std::size_t>(b); }

}  // namespace

MoeMlp::MoeMlp(const ModelConfig& c, int64_t rows, cublasHandle_t blas, cudaStream_t stream)
    : c_(c), blas_(blas), stream_(stream), rows_(rows) {
  const int64_t h = c.hidden_size, f = c.moe_intermediate_size, e = c.num_experts, k = c.num_experts_per_tok;
  const int64_t routed = rows * k;  // every token goes to exactly top_k distinct experts
  logits_.resize(sz(rows, e));
  xg_.resize(sz(routed, h));
  gate_.resize(sz(routed, f));
  up_down_.resize(sz(routed, std::max(f, h)));
  act_b_.resize(sz(routed, f));
  token_.resize(sz(routed, 1));
  weight_.resize(sz(routed, 1));
  in_scale_.resize(sz(routed, 1));
  slots_.resize(sz(rows, k));
  host_logits_.resize(4 * sz(rows, e));
  host_tables_.resize(4 * sz(routed, 4));  // token, weight, slots, input scale: 4 bytes each
}

void MoeMlp::gemm_bf16(const uint16_t* x, int64_t m, int64_t in, const uint16_t* w, const float* b, int64_t out,
                       float* y) {
  xwt_gemm(blas_, x, m, in, w, out, y, CUDA_R_32F, 0.0f, "expert GEMM");  // y [m, out]
  if (b) add_bias(y, b, m, out, stream_);
}

void MoeMlp::run(const DeviceExperts& w, int64_t layer, const float* xn, const uint16_t* xb, int64_t n,
                 ActivationObserver* obs, float* out) {
  CTCAL_ASSERT(n <= rows_, "a chunk larger than the MoE buffers");
  CTCAL_ASSERT(w.router && w.gate && w.up && w.down, "a MoE layer without its router or experts in the slot");
  if (n == 0) return;
  const int64_t h = c_.hidden_size, f = c_.moe_intermediate_size, ne = c_.num_experts, k = c_.num_experts_per_tok;
  const bool want_in = obs && obs->wants(layer, Site::kExpertGateUpInput);
  const bool want_down = obs && obs->wants(layer, Site::kExpertDownInput);

  // --- router: logits [n, E] = xn W_r^T (+ b_r), fp32 throughout ---
  // The handle's math mode is the default (CUBLAS_DEFAULT_MATH): no TF32, so the logits are fp32
  // products, as the CPU's fp32 router (a TF32 router would flip near-tied routing decisions).
  const float one = 1.0f, zero = 0.0f;
  check(cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(ne), static_cast<int>(n), static_cast<int>(h),
                    &one, w.router, static_cast<int>(h), xn, static_cast<int>(h), &zero, logits_.get(),
                    static_cast<int>(ne)),
        "router GEMM");
  if (w.router_b) add_bias(logits_.get(), w.router_b, n, ne, stream_);
  check(cudaGetLastError(), "launching the router bias kernel");
  auto* logits = reinterpret_cast<float*>(host_logits_.get());  // [n, E]
  check(copy_on_stream(logits, logits_.get(), 4 * sz(n, ne), cudaMemcpyDeviceToHost, stream_),
        "copying router logits from the GPU");
  const float* x_host = nullptr;  // [n, hidden] fp32: the expert inputs the observers see
  if (want_in) {
    host_x_.resize(4 * sz(n, h));
    check(copy_on_stream(host_x_.get(), xn, 4 * sz(n, h), cudaMemcpyDeviceToHost, stream_),
          "copying expert inputs from the GPU");
    x_host = reinterpret_cast<const float*>(host_x_.get());
  }

  // --- routing on the host: the CPU's decisions, grouped by expert as the CPU runs them ---
  const Routing r = route_logits(c_, Eigen::Map<const RowMatrix>(logits, n, ne),
                                 w.correction_bias.size() > 0 ? &w.correction_bias : nullptr);
  const ExpertBatches b = group_by_expert(r, n, ne, k);
  const int64_t routed = n * k;
  // Llama4TextMoe scales each routed row BEFORE its expert (routed_in = x * score) and sums the
  // outputs unweighted; the others weight the expert's output (model/moe.cpp).
  const bool weight_on_input = c_.family && c_.family->moe_kind == MoeKind::kLlama4;
  // slots [n, top_k]: each token's routed rows, filled while walking the rows in ascending order,
  // so each token's list is ascending, which is ascending expert order (rows are grouped so).
  auto* tokens = reinterpret_cast<int32_t*>(host_tables_.get());  // [routed]
  auto* weights = reinterpret_cast<float*>(tokens + routed);       // [routed]
  auto* slots = reinterpret_cast<int32_t*>(weights + routed);      // [n, top_k]
  auto* in_scales = reinterpret_cast<float*>(slots + n * k);       // [routed] (Llama 4)
  std::copy(b.token.begin(), b.token.end(), tokens);
  if (weight_on_input) {
    std::copy(b.weight.begin(), b.weight.end(), in_scales);
    std::fill(weights, weights + routed, 1.0f);  // 1 * y: exact, the CPU's unweighted sum
  } else {
    std::copy(b.weight.begin(), b.weight.end(), weights);
  }
  std::vector<int64_t> filled(static_cast<std::size_t>(n), 0);  // [n] slots written per token
  for (int64_t i = 0; i < routed; ++i) {
    const int32_t t = tokens[i];
    slots[t * k + filled[static_cast<std::size_t>(t)]++] = static_cast<int32_t>(i);
  }
  for (int64_t t = 0; t < n; ++t) CTCAL_ASSERT(filled[static_cast<std::size_t>(t)] == k, "a token without top_k experts");
  // One upload of the three tables (contiguous on the host, three device buffers).
  check(cudaMemcpyAsync(token_.get(), tokens, 4 * sz(routed, 1), cudaMemcpyHostToDevice, stream_), "copying routing to the GPU");
  check(cudaMemcpyAsync(weight_.get(), weights, 4 * sz(routed, 1), cudaMemcpyHostToDevice, stream_), "copying routing to the GPU");
  check(cudaMemcpyAsync(slots_.get(), slots, 4 * sz(n, k), cudaMemcpyHostToDevice, stream_), "copying routing to the GPU");
  if (weight_on_input)
    check(cudaMemcpyAsync(in_scale_.get(), in_scales, 4 * sz(routed, 1), cudaMemcpyHostToDevice, stream_),
          "copying routing to the GPU");
  // host_tables_ must stay unchanged until these copies ran: the next call waits on the stream
  // (the router logits' download) before rewriting it.

  // --- experts: gather the routed rows (bf16), then gate/up GEMMs per expert ---
  if (weight_on_input)  // bf16(score * x) from the fp32 x, as the CPU rounds its scaled rows
    gather_scaled_rows_bf16(xn, h, token_.get(), in_scale_.get(), routed, h, xg_.get(), stream_);  // xg [routed, hidden]
  else
    gather_rows_bf16(xb, h, token_.get(), routed, h, xg_.get(), stream_);  // xg [routed, hidden]
  float* gate = gate_.get();     // [routed, f]
  float* up = up_down_.get();    // [routed, f]
  for (int64_t e = 0; e < ne; ++e) {
    const int64_t m = b.count[static_cast<std::size_t>(e)], r0 = b.first[static_cast<std::size_t>(e)];
    if (m == 0) continue;
    const uint16_t* xe = xg_.get() + r0 * h;  // [m, hidden]
    gemm_bf16(xe, m, h, w.gate + e * w.gate_up_stride, w.gate_b ? w.gate_b + e * f : nullptr, f, gate + r0 * f);
    gemm_bf16(xe, m, h, w.up + e * w.gate_up_stride, w.up_b ? w.up_b + e * f : nullptr, f, up + r0 * f);
  }
  // act over every routed row at once (elementwise, so the same as per expert): gate <- act(gate) * up.
  if (c_.family && c_.family->act == MlpAct::kClampedSwiglu)
    clamped_swiglu(gate, up, act_b_.get(), routed * f, static_cast<float>(c_.swiglu_limit), stream_);  // gpt-oss
  else
    gated_act(Act::kSilu, gate, up, act_b_.get(), routed * f, stream_);  // Qwen3-MoE, Mixtral: SiLU, whatever `act`
  check(cudaGetLastError(), "launching the expert kernels");
  const float* act_host = nullptr;  // [routed, f] fp32: the down inputs the observers see
  if (want_down) {
    host_act_.resize(4 * sz(routed, f));
    check(copy_on_stream(host_act_.get(), gate, 4 * sz(routed, f), cudaMemcpyDeviceToHost, stream_),
          "copying expert inputs from the GPU");
    act_host = reinterpret_cast<const float*>(host_act_.get());
  }

  // --- down GEMMs per expert into up_down_ [routed, hidden] (up is dead), then the weighted sum ---
  float* down = up_down_.get();
  for (int64_t e = 0; e < ne; ++e) {
    const int64_t m = b.count[static_cast<std::size_t>(e)], r0 = b.first[static_cast<std::size_t>(e)];
    if (m == 0) continue;
    gemm_bf16(act_b_.get() + r0 * f, m, f, w.down + e * w.down_stride, w.down_b ? w.down_b + e * h : nullptr, h,
              down + r0 * h);
  }
  combine_experts(down, slots_.get(), weight_.get(), n, k, h, out, stream_);  // out [n, hidden]
  check(cudaGetLastError(), "launching the expert kernels");

  // --- observers, on the host copies while the GPU runs the down GEMMs: per expert, ascending,
  // its gate/up input then its down input, as moe_mlp_into announces them ---
  if (!want_in && !want_down) return;
  for (int64_t e = 0; e < ne; ++e) {
    const int64_t m = b.count[static_cast<std::size_t>(e)], r0 = b.first[static_cast<std::size_t>(e)];
    if (m == 0) continue;
    if (want_in) {
      xe_.resize(sz(m, h));
      for (int64_t i = 0; i < m; ++i) {
        const auto row = static_cast<std::size_t>(r0 + i);
        const float* src = x_host + static_cast<int64_t>(b.token[row]) * h;  // [hidden]
        float* dst = xe_.data() + i * h;                                      // [hidden]
        if (weight_on_input)  // the scaled row the expert reads (the same fp32 product as the kernel's)
          for (int64_t j = 0; j < h; ++j) dst[j] = b.weight[row] * src[j];
        else
          std::memcpy(dst, src, 4 * static_cast<std::size_t>(h));
      }
      obs->observe_expert(layer, Site::kExpertGateUpInput, e, {xe_.data(), m, 1, h, h});
    }
    if (want_down) obs->observe_expert(layer, Site::kExpertDownInput, e, {act_host + r0 * f, m, 1, f, f});
  }
}

}  // namespace ctcal::cuda
