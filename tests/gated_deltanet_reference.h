#pragma once
// The gated DeltaNet layer in double, token by token: transformers' torch_recurrent_gated_delta_rule
// (the decode path) instead of the chunked rule the library runs, and every other step written
// out from the module's Python. Test-only: a per-token loop is far too slow for calibration (the
// issue-28 speed bound), and a reference that shares no code and no formulation with
// model/gated_deltanet.cpp catches a formulation bug there that a copy would repeat.
#include <cmath>
#include <cstdint>
#include <vector>

#include "ctcal/model/gated_deltanet.h"
#include "ctcal/model/tensor_types.h"

namespace ctcal::test {

// torch_recurrent_gated_delta_rule from zero state for rows [r0, r0 + len) of one sample, all value
// heads: S = S exp(g_t); delta = (v_t - S^T k_t) beta_t; S += k_t delta^T; o_t = S^T q_t.
// q, k: [rows, key_dim] (l2-normalised, q scaled), v: [rows, value_dim], g, beta: [rows, num_v_heads]
// -> out rows [r0, r0 + len) of [rows, value_dim].
inline void sequential_delta_rule(const RowMatrixD& q, const RowMatrixD& k, const RowMatrixD& v, const RowMatrixD& g,
                                  const RowMatrixD& beta, int64_t r0, int64_t len, const GatedDeltaNetShape& s,
                                  RowMatrixD* out) {
  const int64_t dk = s.head_k_dim, dv = s.head_v_dim, rep = s.num_v_heads / s.num_k_heads;
  for (int64_t h = 0; h < s.num_v_heads; ++h) {
    const int64_t kh = h / rep;
    RowMatrixD state = RowMatrixD::Zero(dk, dv);  // [head_k_dim, head_v_dim]
    for (int64_t t = r0; t < r0 + len; ++t) {
      state *= std::exp(g(t, h));
      for (int64_t j = 0; j < dv; ++j) {
        double mem = 0;  // (S * k[:, None]).sum(-2)
        for (int64_t i = 0; i < dk; ++i) mem += state(i, j) * k(t, kh * dk + i);
        const double delta = (v(t, h * dv + j) - mem) * beta(t, h);
        for (int64_t i = 0; i < dk; ++i) state(i, j) += k(t, kh * dk + i) * delta;
      }
      for (int64_t j = 0; j < dv; ++j) {
        double o = 0;
        for (int64_t i = 0; i < dk; ++i) o += state(i, j) * q(t, kh * dk + i);
        (*out)(t, h * dv + j) = o;
      }
    }
  }
}

inline double silu(double x) { return x / (1.0 + std::exp(-x)); }

// The whole module (Qwen3_5GatedDeltaNet.forward, no cache) in double for one sample x [T, hidden]
// with the fp32 weights `w` -> y [T, hidden]; `core` (if set) gets the delta rule's output
// [T, value_dim] (the gated norm's input).
inline RowMatrixD reference_gated_deltanet(const RowMatrixD& x, const GatedDeltaNetWeights& w,
                                           const GatedDeltaNetShape& s, RowMatrixD* core = nullptr) {
  const int64_t n = x.rows(), kd = s.key_dim(), vd = s.value_dim(), taps = s.conv_kernel;
  const RowMatrixD proj = x * w.in_proj_qkv.w.cast<double>().transpose();  // [T, conv_dim]
  const RowMatrixD z = x * w.in_proj_z.w.cast<double>().transpose();       // [T, value_dim]
  const RowMatrixD b = x * w.in_proj_b.w.cast<double>().transpose();       // [T, num_v_heads]
  const RowMatrixD a = x * w.in_proj_a.w.cast<double>().transpose();       // [T, num_v_heads]
  // Depthwise causal conv (zero left padding) and SiLU.
  RowMatrixD qkv(n, s.conv_dim());  // [T, conv_dim]
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < s.conv_dim(); ++c) {
      double acc = 0;
      for (int64_t j = 0; j < taps; ++j)
        if (t - taps + 1 + j >= 0) acc += double(w.conv1d(c, j)) * proj(t - taps + 1 + j, c);
      qkv(t, c) = silu(acc);
    }
  // l2norm(q) * head_k_dim^-0.5, l2norm(k).
  RowMatrixD q = qkv.leftCols(kd), k = qkv.middleCols(kd, kd);  // [T, key_dim]
  const RowMatrixD v = qkv.rightCols(vd);                         // [T, value_dim]
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < s.num_k_heads; ++h) {
      auto qh = q.row(t).segment(h * s.head_k_dim, s.head_k_dim);
      auto kh = k.row(t).segment(h * s.head_k_dim, s.head_k_dim);
      qh /= std::sqrt(qh.squaredNorm() + 1e-6);
      qh /= std::sqrt(double(s.head_k_dim));
      kh /= std::sqrt(kh.squaredNorm() + 1e-6);
    }
  RowMatrixD g(n, s.num_v_heads), beta(n, s.num_v_heads);  // [T, num_v_heads]
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < s.num_v_heads; ++h) {
      const double u = a(t, h) + double(w.dt_bias[h]);
      g(t, h) = -std::exp(double(w.A_log[h])) * (u > 20 ? u : std::log1p(std::exp(u)));
      beta(t, h) = 1.0 / (1.0 + std::exp(-b(t, h)));
    }
  RowMatrixD o(n, vd);  // [T, value_dim]
  sequential_delta_rule(q, k, v, g, beta, 0, n, s, &o);
  if (core) *core = o;
  // RMSNormGated per value head: weight * (o / rms(o)) * silu(z).
  RowMatrixD gated(n, vd);  // [T, value_dim]
  const int64_t dv = s.head_v_dim;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < s.num_v_heads; ++h) {
      const double var = o.row(t).segment(h * dv, dv).squaredNorm() / double(dv);
      for (int64_t j = 0; j < dv; ++j)
        gated(t, h * dv + j) = double(w.norm[j]) * (o(t, h * dv + j) / std::sqrt(var + s.eps)) * silu(z(t, h * dv + j));
    }
  return gated * w.out_proj.w.cast<double>().transpose();  // [T, hidden]
}

}  // namespace ctcal::test
