#include "cuda_hybrid.h"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "ctcal/model/deltanet_shape.h"
#include "ctcal/model/mamba2.h"
#include "cuda_kernels.h"
#include "hybrid_kernels.h"

namespace ctcal::cuda {

namespace {

bool has_deltanet(const ModelConfig& c) {
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    if (c.is_linear_attention(l)) return true;
  return false;
}

bool has_mamba(const ModelConfig& c) {
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    if (c.is_mamba(l)) return true;
  return false;
}

std::size_t sz(int64_t a, int64_t b) { return static_cast<std::size_t>(a) * static_cast<std::size_t>(b); }

}  // namespace

std::size_t hybrid_extra_bytes(const ModelConfig& c) {
  const int64_t h = c.hidden_size;
  std::size_t mixer = 0;
  if (has_deltanet(c)) {
    const GatedDeltaNetShape s = deltanet_shape(c);
    // bf16 in_proj_qkv/z/b/a and out_proj; fp32 conv [conv_dim, K], dt_bias, A_log, norm.
    mixer = 2 * sz(h, s.conv_dim() + s.value_dim() + 2 * s.num_v_heads) + 2 * sz(h, s.value_dim()) +
            4 * (sz(s.conv_dim(), s.conv_kernel) + 2 * static_cast<std::size_t>(s.num_v_heads) +
                 static_cast<std::size_t>(s.head_v_dim));
  }
  if (has_mamba(c)) {
    const Mamba2Config& m = c.mamba;
    // bf16 in_proj / out_proj with fp32 biases; fp32 conv weight and bias, dt_bias, A_log, D, norm.
    const std::size_t mb = 2 * sz(h, m.in_proj_dim()) + 2 * sz(h, m.intermediate_size()) +
                           4 * (static_cast<std::size_t>(m.in_proj_dim() + h) + sz(m.conv_dim(), m.conv_kernel + 1) +
                                3 * static_cast<std::size_t>(m.num_heads) + static_cast<std::size_t>(m.intermediate_size()));
    mixer = std::max(mixer, mb);
  }
  std::size_t extra = mixer + 2 * sz(h, c.q_proj_rows() - c.q_dim());  // gated attention: q_proj's gate half
  if (c.family && c.family->moe_plus_dense_mlp) extra += 2 * 3 * sz(h, c.intermediate_size) + 4 * sz(3, c.intermediate_size);
  return extra == 0 ? 0 : extra + 16 * 256;  // the mixer's puts, each aligned up
}

DeviceMixer upload_mixer(const LayerWeights& w, const ModelConfig& c, const PutBytes& put) {
  DeviceMixer m;
  std::vector<uint16_t> bits;  // one projection's bf16 rows (the put copies them out at once)
  auto bf16 = [&](const Linear& l) -> const uint16_t* {
    if (l.w.size() == 0) {  // bf16 rows as read (the loader keeps the mixers' Linears fp32: not expected)
      const std::span<const uint16_t> rows = l.bf16_rows();
      return static_cast<const uint16_t*>(put(rows.data(), 2 * rows.size()));
    }
    bits.resize(static_cast<std::size_t>(l.w.size()));  // [out, in] bf16 bits
    round_weights_to_bf16(l.w, bits.data());
    return static_cast<const uint16_t*>(put(bits.data(), 2 * bits.size()));
  };
  auto vec = [&](const Vector& v) { return static_cast<const float*>(put(v.data(), 4 * static_cast<std::size_t>(v.size()))); };
  auto mat = [&](const RowMatrix& v) { return static_cast<const float*>(put(v.data(), 4 * static_cast<std::size_t>(v.size()))); };
  if (w.linear_attn) {
    const GatedDeltaNetWeights& x = *w.linear_attn;
    check_gated_deltanet(x, deltanet_shape(c), "linear_attn");  // the shapes the kernels assume
    DeviceDeltaNet& d = m.deltanet;
    d.in_qkv = bf16(x.in_proj_qkv);
    d.in_z = bf16(x.in_proj_z);
    d.in_b = bf16(x.in_proj_b);
    d.in_a = bf16(x.in_proj_a);
    d.out_proj = bf16(x.out_proj);
    d.conv = mat(x.conv1d);
    d.dt_bias = vec(x.dt_bias);
    d.A_log = vec(x.A_log);
    d.norm = vec(x.norm);
  }
  if (w.mamba) {
    const Mamba2Weights& x = *w.mamba;
    check_mamba2(c.mamba, x, "mixer");
    DeviceMamba2& d = m.mamba;
    d.in_proj = bf16(x.in_proj);
    d.in_proj_b = vec(x.in_proj.b);
    d.conv_w = mat(x.conv_w);
    d.conv_b = vec(x.conv_b);
    d.dt_bias = vec(x.dt_bias);
    d.A_log = vec(x.A_log);
    d.D = vec(x.D);
    d.norm_w = vec(x.norm_w);
    d.out_proj = bf16(x.out_proj);
    d.out_proj_b = vec(x.out_proj.b);
  }
  return m;
}

std::string hybrid_unsupported(const ModelConfig& c) {
  if (has_deltanet(c)) {
    const GatedDeltaNetShape s = deltanet_shape(c);
    if (!deltanet_recurrence_supports(s.head_k_dim, s.head_v_dim))
      return fmt::format("the gated DeltaNet's recurrent state [linear_key_head_dim {}, linear_value_head_dim {}] does "
                         "not fit in the CUDA kernel's shared memory", s.head_k_dim, s.head_v_dim);
  }
  if (has_mamba(c) && !mamba2_recurrence_supports(c.mamba.head_dim, c.mamba.state_size))
    return fmt::format("the Mamba2 recurrent state [head_dim {}, state_size {}] does not fit in the CUDA kernel's "
                       "shared memory", c.mamba.head_dim, c.mamba.state_size);
  return {};
}

HybridMixers::HybridMixers(const ModelConfig& c, int64_t rows, cublasHandle_t blas, cudaStream_t stream)
    : c_(c), dn_(deltanet_shape(c)), blas_(blas), stream_(stream) {
  int64_t proj = 0, conv = 0, z = 0, heads = 0, out = 0;
  if (has_deltanet(c)) {
    proj = std::max(dn_.conv_dim(), dn_.value_dim());
    conv = dn_.conv_dim();
    z = dn_.value_dim();
    heads = dn_.num_v_heads;
    out = dn_.value_dim();
  }
  if (has_mamba(c)) {
    const Mamba2Config& m = c.mamba;
    proj = std::max(proj, m.in_proj_dim());
    conv = std::max(conv, m.conv_dim());
    z = std::max(z, m.intermediate_size());
    heads = std::max(heads, m.num_heads);
    out = std::max(out, m.intermediate_size());
  }
  proj_.resize(sz(rows, proj));
  qkv_.resize(sz(rows, conv));
  z_.resize(sz(rows, z));
  a_.resize(sz(rows, heads));
  b_.resize(sz(rows, heads));
  out_b_.resize(sz(rows, out));
}

void HybridMixers::linear(const uint16_t* x, int64_t n, int64_t in, const uint16_t* w, const float* b, int64_t out,
                          float* y) {
  xwt_gemm(blas_, x, n, in, w, out, y, CUDA_R_32F, 0.0f, "hybrid mixer projection GEMM");  // y [n, out]
  if (b) add_bias(y, b, n, out, stream_);
}

void HybridMixers::deltanet(const DeviceDeltaNet& w, const uint16_t* xb, const SampleChunk& ch, const int64_t* offsets,
                            const int64_t* lengths, float* y) {
  const GatedDeltaNetShape& s = dn_;
  const int64_t n = ch.n, h = s.hidden, cd = s.conv_dim(), vd = s.value_dim(), nv = s.num_v_heads;
  float *proj = proj_.get(), *qkv = qkv_.get(), *z = z_.get(), *a = a_.get(), *b = b_.get();
  linear(xb, n, h, w.in_qkv, nullptr, cd, proj);  // [n, conv_dim]
  linear(xb, n, h, w.in_z, nullptr, vd, z);       // [n, value_dim]
  linear(xb, n, h, w.in_b, nullptr, nv, b);       // [n, num_v_heads]
  linear(xb, n, h, w.in_a, nullptr, nv, a);       // [n, num_v_heads]
  for (const SampleSpan& sp : ch.spans)  // each sample's own past only
    causal_conv1d_silu(proj + sp.offset * cd, cd, w.conv, nullptr, s.conv_kernel, qkv + sp.offset * cd, cd, sp.length,
                       cd, stream_);  // qkv [n, conv_dim]
  deltanet_l2norm_qk(qkv, cd, n, s.num_k_heads, s.head_k_dim, stream_);
  deltanet_gates(a, b, w.dt_bias, w.A_log, n, nv, stream_);  // a: g, b: beta [n, num_v_heads]
  float* core = proj;                                           // [n, value_dim]: proj is free once the conv read it
  check(deltanet_recurrence(qkv, cd, a, b, offsets, lengths, static_cast<int64_t>(ch.spans.size()), s.num_k_heads, nv,
                            s.head_k_dim, s.head_v_dim, core, stream_),
        "the gated DeltaNet recurrence kernel");
  deltanet_gated_norm(core, z, w.norm, s.eps, n, nv, s.head_v_dim, out_b_.get(), stream_);  // [n, value_dim] bf16
  linear(out_b_.get(), n, vd, w.out_proj, nullptr, h, y);                                      // y [n, hidden]
}

void HybridMixers::mamba2(const DeviceMamba2& w, const uint16_t* xb, const SampleChunk& ch, const int64_t* offsets,
                          const int64_t* lengths, bool want_out_proj_input, const DeviceHook& out_proj_input, float* y) {
  const Mamba2Config& m = c_.mamba;
  const int64_t n = ch.n, h = c_.hidden_size, I = m.intermediate_size(), cd = m.conv_dim(), H = m.num_heads;
  const int64_t ld = m.in_proj_dim();
  float *zxbcdt = proj_.get(), *xbc = qkv_.get(), *dt = a_.get(), *ys = z_.get();
  linear(xb, n, h, w.in_proj, w.in_proj_b, ld, zxbcdt);  // [n, I + conv_dim + H]: [z | xBC | dt]
  for (const SampleSpan& sp : ch.spans)
    causal_conv1d_silu(zxbcdt + sp.offset * ld + I, ld, w.conv_w, w.conv_b, m.conv_kernel, xbc + sp.offset * cd, cd,
                       sp.length, cd, stream_);  // xbc [n, conv_dim]
  mamba2_dt(zxbcdt + I + cd, ld, w.dt_bias, m.time_step_min, m.time_step_max, n, H, dt, stream_);  // dt [n, H]
  check(mamba2_recurrence(xbc, cd, dt, w.A_log, w.D, offsets, lengths, static_cast<int64_t>(ch.spans.size()), H,
                          m.head_dim, m.n_groups, m.state_size, ys, stream_),
        "the Mamba2 recurrence kernel");  // ys [n, I]
  // Gated norm in place on ys (each element reads only its own y and z): fp32 where the hook reads it.
  mamba2_gated_norm(ys, zxbcdt, ld, w.norm_w, m.norm_eps, n, I, m.norm_group_size, want_out_proj_input ? ys : nullptr,
                    out_b_.get(), stream_);
  if (want_out_proj_input && out_proj_input(ys)) to_bf16(ys, out_b_.get(), n * I, stream_);
  linear(out_b_.get(), n, I, w.out_proj, w.out_proj_b, h, y);  // y [n, hidden]
}

}  // namespace ctcal::cuda
