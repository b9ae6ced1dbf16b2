#include "ctcal/model/layer_ops.h"

#include <cmath>
#include <cstdlib>
#include <numbers>
#include <string>

#include "ctcal/error.h"
#include "ctcal/model/fixed_order_gemm.h"
#include "ctcal/model/onednn_matmul.h"

namespace ctcal {

namespace {
using StridedMap = Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>>;

// CTCAL_GEMM=eigen: Eigen's GEMM for the fp32 projections instead, for comparisons only (its
// k blocking, and so its summation order, depends on the thread count).
bool use_fixed_order_f32() {
  static const bool on = [] {
    const char* v = std::getenv("CTCAL_GEMM");
    return !(v && std::string(v) == "eigen");
  }();
  return on;
}
}  // namespace

const uint16_t* ProjectionInput::bf16() {
  CTCAL_ASSERT(scratch_ != nullptr, "bf16 weights need a bf16 activation buffer");
  if (!rounded_) round_rows_to_bf16(x_, scratch_);
  rounded_ = true;
  return scratch_;
}

void linear(ProjectionInput& x, const Linear& l, Eigen::Ref<RowMatrix> y) {
  if (l.w_bf16) {
    CTCAL_ASSERT(y.outerStride() == y.cols(), "bf16 matmul writes a dense [n, out] view");
    matmul_bf16(x.bf16(), x.f32().rows(), *l.w_bf16, y.data());
  } else if (use_fixed_order_f32()) {
    const auto& xf = x.f32();
    CTCAL_ASSERT(l.w.cols() == xf.cols() && y.rows() == xf.rows() && y.cols() == l.w.rows(), "linear: shapes");
    matmul_f32_fixed_order(xf.data(), xf.outerStride(), xf.rows(), xf.cols(), l.w.data(), l.w.rows(), y.data(),
                           y.outerStride());
  } else {
    y.noalias() = x.f32() * l.w.transpose();
  }
  if (l.b.size() > 0) y.rowwise() += l.b.transpose();
}

void linear(const Eigen::Ref<const RowMatrix>& x, const Linear& l, RowMatrix* y) {
  y->resize(x.rows(), l.out_features());
  ProjectionInput in(x, nullptr);
  linear(in, l, Eigen::Ref<RowMatrix>(*y));
}

void rms_norm(const Eigen::Ref<const RowMatrix>& x, const Vector& weight, double eps, RowMatrix* y) {
  y->resize(x.rows(), x.cols());
  rms_norm_into(x, weight, eps, *y);
}

void rms_norm_into(const Eigen::Ref<const RowMatrix>& x, const Vector& weight, double eps, Eigen::Ref<RowMatrix> out) {
#pragma omp parallel for schedule(static)
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    // Sum of squares in double (the golden reference is float64), vectorised by Eigen.
    const double ss = x.row(r).cast<double>().squaredNorm();
    const auto inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(x.cols()) + eps));
    out.row(r) = (x.row(r) * inv).cwiseProduct(weight.transpose());
  }
}

void add_into(Eigen::Ref<RowMatrix> x, const Eigen::Ref<const RowMatrix>& y) {
#pragma omp parallel for schedule(static)
  for (Eigen::Index r = 0; r < x.rows(); ++r) x.row(r) += y.row(r);
}

void gated_act_into(MlpAct act, Eigen::Ref<RowMatrix> gate, const Eigen::Ref<const RowMatrix>& up) {
  CTCAL_ASSERT(act != MlpAct::kClampedSwiglu, "the clamped SwiGLU needs its limit: clamped_swiglu_into");
  if (act == MlpAct::kSilu) {
#pragma omp parallel for schedule(static)
    for (Eigen::Index r = 0; r < gate.rows(); ++r) {
      auto g = gate.row(r).array();
      g = g / (1.0f + (-g).exp()) * up.row(r).array();
    }
    return;
  }
  // PyTorch's gelu(approximate="tanh"), in fp32.
  const float k = std::sqrt(2.0f / std::numbers::pi_v<float>);
#pragma omp parallel for schedule(static)
  for (Eigen::Index r = 0; r < gate.rows(); ++r) {
    auto g = gate.row(r).array();
    g = 0.5f * g * (1.0f + (k * (g + 0.044715f * g * g * g)).tanh()) * up.row(r).array();
  }
}

void relu2_into(Eigen::Ref<RowMatrix> x) {
#pragma omp parallel for schedule(static)
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    auto v = x.row(r).array().max(0.0f);  // torch.square(relu(x))
    x.row(r).array() = v * v;
  }
}

void add_scaled_into(Eigen::Ref<RowMatrix> x, const Eigen::Ref<const RowMatrix>& y, double m) {
  if (m == 1.0) {
    add_into(x, y);
    return;
  }
  const auto f = static_cast<float>(m);  // residual + hidden * multiplier: the product rounded to fp32 first
#pragma omp parallel for schedule(static)
  for (Eigen::Index r = 0; r < x.rows(); ++r) x.row(r).array() += (y.row(r).array() * f).eval();
}

void clamped_swiglu_into(Eigen::Ref<RowMatrix> gate, const Eigen::Ref<const RowMatrix>& up, float limit) {
  constexpr float kAlpha = 1.702f;  // GptOssExperts.alpha
#pragma omp parallel for schedule(static)
  for (Eigen::Index r = 0; r < gate.rows(); ++r) {
    auto g = gate.row(r).array();
    const auto u = up.row(r).array().max(-limit).min(limit);  // up.clamp(-limit, limit)
    g = g.min(limit);                                            // gate.clamp(max=limit)
    // glu = gate * sigmoid(gate * alpha); out = (up + 1) * glu
    g = (u + 1.0f) * (g / (1.0f + (-kAlpha * g).exp()));
  }
}

void check_finite(const Eigen::Ref<const RowMatrix>& m, int64_t layer, const std::string& module, const char* what) {
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
  for (Eigen::Index r = 0; r < m.rows(); ++r) finite = finite && m.row(r).allFinite();
  if (!finite)
    throw InputError(fmt::format("layer {}: {} contains NaN or Inf ({}); the "
                                 "weights or the input are not usable", layer, what, module));
}

void rotate_heads(float* x, int64_t seq, int64_t heads, int64_t d, int64_t stride, const RowMatrix& r) {
  RowMatrix tmp(seq, d);
  for (int64_t h = 0; h < heads; ++h) {
    StridedMap xh(x + h * d, seq, d, Eigen::OuterStride<>(stride));
    tmp.noalias() = xh * r;
    xh = tmp;
  }
}

}  // namespace ctcal
