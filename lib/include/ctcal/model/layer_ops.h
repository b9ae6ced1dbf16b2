#pragma once
// The building blocks of a decoder layer (model/layer.cpp): norms, projections, the gated MLP
// activations, residual adds. Rows run in parallel; each row's arithmetic has a fixed order, so
// results do not depend on the thread count.
#include <cstdint>
#include <string>

#include "ctcal/model/family.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/tensor_types.h"

namespace ctcal {

// An activation matrix on its way into one or more projections. In bf16 mode it is rounded to
// bf16 once, on first use, however many projections read it (q/k/v share one, gate/up another).
class ProjectionInput {
 public:
  // x: [n, in]; bf16_scratch: room for n * in values, or null when no weight is bf16.
  ProjectionInput(const Eigen::Ref<const RowMatrix>& x, uint16_t* bf16_scratch) : x_(x), scratch_(bf16_scratch) {}
  const Eigen::Ref<const RowMatrix>& f32() const { return x_; }
  const uint16_t* bf16();  // [n, in] dense

 private:
  Eigen::Ref<const RowMatrix> x_;
  uint16_t* scratch_;
  bool rounded_ = false;
};

// y = x W^T + b. x: [n, in], W: [out, in] -> y: [n, out], written into a pre-sized view.
// --compute-dtype bf16: oneDNN bf16 matmul on packed weights. Otherwise the fixed-order fp32 GEMM
// (model/fixed_order_gemm.h: the same bits for any thread count, rows per call or SIMD width),
// or Eigen's GEMM with CTCAL_GEMM=eigen (comparisons only: its order depends on the thread count).
void linear(ProjectionInput& x, const Linear& l, Eigen::Ref<RowMatrix> y);
// fp32 weights only (the lm_head): y is resized to [n, out].
void linear(const Eigen::Ref<const RowMatrix>& x, const Linear& l, RowMatrix* y);

// y = x * rsqrt(mean(x^2) + eps) * weight, row by row (sum of squares in double). x, y:
// [rows, width]; y may alias x. `weight` is the norm's multiplier (w, or 1 + w: layer_weights.h).
void rms_norm(const Eigen::Ref<const RowMatrix>& x, const Vector& weight, double eps, RowMatrix* y);
void rms_norm_into(const Eigen::Ref<const RowMatrix>& x, const Vector& weight, double eps, Eigen::Ref<RowMatrix> y);

// x += y, rows in parallel. x, y: [n, cols].
void add_into(Eigen::Ref<RowMatrix> x, const Eigen::Ref<const RowMatrix>& y);

// gate = act(gate) * up (SiLU: g / (1 + exp(-g)); GELU-tanh: 0.5 g (1 + tanh(sqrt(2/pi)
// (g + 0.044715 g^3)))), rows in parallel. gate, up: [n, intermediate].
void gated_act_into(MlpAct act, Eigen::Ref<RowMatrix> gate, const Eigen::Ref<const RowMatrix>& up);
// x = relu(x)^2 in place (Nemotron-H's ungated MLP: ReLUSquaredActivation), rows in parallel. x: [n, intermediate].
void relu2_into(Eigen::Ref<RowMatrix> x);
// x += m * y (Granite's residual_multiplier; add_into when m == 1). x, y: [n, hidden].
void add_scaled_into(Eigen::Ref<RowMatrix> x, const Eigen::Ref<const RowMatrix>& y, double m);
// gpt-oss's expert activation (GptOssExperts._apply_gate, on gate/up already de-interleaved):
// gate = min(gate, limit), up = clamp(up, -limit, limit), gate = (up + 1) * gate * sigmoid(1.702 gate).
// gate, up: [n, intermediate].
void clamped_swiglu_into(Eigen::Ref<RowMatrix> gate, const Eigen::Ref<const RowMatrix>& up, float limit);

// Throws InputError naming the layer and its module (e.g. "model.layers.3") when m [n, cols]
// holds a NaN or Inf.
void check_finite(const Eigen::Ref<const RowMatrix>& m, int64_t layer, const std::string& module, const char* what);

// Rotates each head of x: [seq, heads, head_dim] (row stride `stride`) by r: [d, d].
void rotate_heads(float* x, int64_t seq, int64_t heads, int64_t d, int64_t stride, const RowMatrix& r);

}  // namespace ctcal
