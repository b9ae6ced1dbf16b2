// One decoder layer, for every family of model/family.h, reading top to bottom:
//
//   x += [attn_out_norm]( o_proj( attention( rope( [qk_norm]( q/k/v_proj( input_norm(x) ))))))
//   x += [mlp_out_norm]( down_proj( act(gate_proj(xn)) * up_proj(xn) )),  xn = mlp_norm(x)
//        (MoE layers: the router's top-k experts' SwiGLU MLPs, weighted: model/moe.h; Qwen3-Next and
//        Qwen3.5-MoE add a shared expert times sigmoid(shared_expert_gate(xn)), GLM-4.5 one ungated)
//
// Bracketed steps exist only where the family has them (Qwen3 and Gemma 3 have q/k norms; Gemma 3
// has the sandwich norms; OLMo 3 has only the output norms, no input/mlp norm, and its q/k norms
// span the whole projection; SmolLM3's NoPE layers skip RoPE). Qwen3.5's gated attention splits q_proj's rows per head into [query |
// gate] and multiplies the attention output by sigmoid(gate) before o_proj; its linear-attention
// layers run the gated DeltaNet (model/gated_deltanet.h) instead of the attention block:
//
//   x += out_proj( deltanet( input_norm(x) ))        (no Q/K/V, no KV cache: nothing observed)
//
// Nemotron-H and Granite 4 hybrid's Mamba2 layers run the Mamba2 mixer (model/mamba2.h) the same
// way. Nemotron-H's layers are one block each (a mixer, or an MLP down(relu(up(x))^2) without a
// gate); Granite adds its shared_mlp to the MoE output and scales each residual branch by
// residual_multiplier. The mixer's in_proj and out_proj inputs are hook points like any Linear
// input (FP8 W8A8), out_proj's shown from inside the mixer.
// Q, K, V are announced to the observer after RoPE (and R3), exactly
// where the KV cache stores them; every Linear input is announced once per shared input (one
// place per projection group below, MoE experts' routed inputs in model/moe.cpp: the hook
// points of observation.h).
#include <algorithm>
#include <cmath>
#include <vector>

#include "ctcal/error.h"
#include "ctcal/model/attention.h"
#include "ctcal/model/decoder.h"
#include "ctcal/model/deltanet_shape.h"
#include "ctcal/model/gated_deltanet.h"
#include "ctcal/model/layer_ops.h"
#include "ctcal/model/mamba2.h"
#include "ctcal/model/moe.h"
#include "ctcal/model/per_layer_input.h"
#include "ctcal/model/rope.h"

namespace ctcal {

namespace {

// Shows a Linear input x [n, width] (the chunk's rows) to the observer, sample by sample.
void announce_input(ActivationObserver* observer, int64_t layer, Site site, const Eigen::Ref<const RowMatrix>& x,
                    const std::vector<SampleSpan>& rows) {
  if (!observer || !observer->wants(layer, site)) return;
  for (const auto& s : rows)
    observer->observe(layer, site, {x.data() + s.offset * x.outerStride(), s.length, 1, x.cols(), x.outerStride()});
}

// FP8 W8A8 in eval: fake-quantizes a Linear input x [n, width] in place, sample by sample, where
// the quantizer asks for it (after the observer saw the unquantized input).
void quantize_input(ActivationQuantizer* q, int64_t layer, Site site, Eigen::Ref<RowMatrix> x,
                    const std::vector<SampleSpan>& rows) {
  if (!q || !q->quantizes(layer, site)) return;
  for (const auto& s : rows)
    q->apply(layer, site, x.data() + s.offset * x.outerStride(), s.length, 1, x.cols(), x.outerStride());
}

// Gated attention (Qwen3_5Attention): q_proj's output [n, heads, 2 head_dim] is per head [query |
// gate]; the query half goes to q [n, heads, head_dim], the gate half to gate [n, heads, head_dim].
void split_query_gate(const float* qg, int64_t n, int64_t heads, int64_t d, float* q, float* gate) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      const float* src = qg + (t * heads + h) * 2 * d;
      std::copy(src, src + d, q + (t * heads + h) * d);
      std::copy(src + d, src + 2 * d, gate + (t * heads + h) * d);
    }
}

// attn *= sigmoid(gate), elementwise over [n, q_dim] (torch.sigmoid in fp32: 1 / (1 + exp(-g))).
// dst = norm(src) with the block's pre-norm, or src as is where the family has none (OLMo 3).
void pre_norm_into(const Eigen::Ref<const RowMatrix>& src, const Vector& w, double eps, Eigen::Ref<RowMatrix> dst) {
  if (w.size() > 0) rms_norm_into(src, w, eps, dst);
  else dst = src;
}

// Llama 4: each head of x [n, heads, d] from interleaved pairs (2i, 2i+1) to [even dims | odd dims],
// the order vLLM 0.34's permute_qk_weight_for_rotary gives q_proj / k_proj rows; interleaved RoPE
// on the pairs is then the rotate-half RoPE with the same frequencies (pair i <-> dims i, d/2 + i).
void deinterleave_heads(float* x, int64_t n, int64_t heads, int64_t d) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < n; ++t) {
    std::vector<float> tmp(static_cast<std::size_t>(d));  // [d] one head
    for (int64_t h = 0; h < heads; ++h) {
      float* head = x + (t * heads + h) * d;
      for (int64_t i = 0; i < d / 2; ++i) {
        tmp[static_cast<std::size_t>(i)] = head[2 * i];
        tmp[static_cast<std::size_t>(d / 2 + i)] = head[2 * i + 1];
      }
      std::copy(tmp.begin(), tmp.end(), head);
    }
  }
}

// Llama4TextL2Norm on every head of x [len, heads, d] (row stride `stride`): x * rsqrt(mean(x^2) + eps)
// in fp32, no weight (a permutation of the head's dims does not change it).
void l2_norm_heads(float* x, int64_t len, int64_t heads, int64_t d, int64_t stride, double eps) {
  for (int64_t t = 0; t < len; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      float* head = x + t * stride + h * d;
      float ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += head[i] * head[i];
      const float inv = 1.0f / std::sqrt(ss / static_cast<float>(d) + static_cast<float>(eps));
      for (int64_t i = 0; i < d; ++i) head[i] *= inv;
    }
}

// x [rows, d] row by row: x * (mean(x^2) + eps)^-0.5, no weight (Gemma4RMSNorm with_scale=False,
// in fp32 as it computes; the sum of squares in double as rms_norm_into's).
void rms_normalize_heads(float* x, int64_t rows, int64_t d, double eps) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float* head = x + r * d;
    double ss = 0;
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(head[i]) * head[i];
    const auto inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps));
    for (int64_t i = 0; i < d; ++i) head[i] *= inv;
  }
}

// Llama 4's NoPE-layer query temperature (Llama4TextAttention, in fp32 as torch computes it):
// q *= log1p(floor((pos + 1) / floor_scale)) * attn_scale + 1, pos the token's absolute position.
void temperature_tune(float* q, int64_t len, int64_t q_dim, int64_t first_pos, double floor_scale, double attn_scale) {
  for (int64_t t = 0; t < len; ++t) {
    const float pos = static_cast<float>(first_pos + t);
    const float s = std::log1p(std::floor((pos + 1.0f) / static_cast<float>(floor_scale))) * static_cast<float>(attn_scale) + 1.0f;
    for (int64_t i = 0; i < q_dim; ++i) q[t * q_dim + i] *= s;
  }
}

void apply_output_gate(Eigen::Ref<RowMatrix> attn, const float* gate) {
  const int64_t cols = attn.cols();
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < attn.rows(); ++t)
    for (int64_t i = 0; i < cols; ++i) attn(t, i) *= 1.0f / (1.0f + std::exp(-gate[t * cols + i]));
}

}  // namespace

void Decoder::run_layer(const LayerWeights& w, int64_t layer, const std::vector<SampleSpan>& spans,
                        RowMatrix& hidden, ActivationObserver* observer, const ForwardOptions& opt) const {
  const ModelConfig layer_cfg = cfg_.at_layer(layer);  // the layer's own head_dim and KV heads (Gemma 4)
  const ModelConfig& c = layer_cfg;
  const bool own_kv = c.kv_source_of(layer) < 0;  // false: a Gemma 4 KV-shared layer
  const FamilySpec& fam = *c.family;
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, d = c.head_dim;
  const bool want_q = observer && observer->wants(layer, Site::kQuery);
  const bool want_k = observer && observer->wants(layer, Site::kKey);
  const bool want_v = observer && observer->wants(layer, Site::kValue);
  RopeTableCache tables(c, layer, spans, opt.position_offset);
  AttentionShape attention_shape = AttentionShape::of(c, layer);
  if (w.sinks.size() > 0) attention_shape.sinks = w.sinks.data();  // [heads] (gpt-oss)
  attention_shape.chunk = c.chunk(layer);  // Llama 4's RoPE layers
  attention_shape.chunk_origin = opt.position_offset;
  const std::string module = c.layer_prefix(layer).substr(0, c.layer_prefix(layer).size() - 1);

  // Scratch buffers sized for the largest chunk, reused across chunks and layers: fresh 50 MB
  // allocations per layer cost more in page faults than the GEMMs they feed.
  const std::vector<SampleChunk> chunks = make_chunks(spans, opt.chunk_tokens);
  int64_t max_chunk = 0;
  for (const SampleChunk& ch : chunks) max_chunk = std::max(max_chunk, ch.n);
  scratch_.reserve(max_chunk, c);
  // bf16 attention rounds q, k, v into the projection-input buffer (free between q/k/v and o_proj).
  if (opt.bf16_attention) scratch_.bf16.fit(attention_bf16_scratch(attention_shape, max_chunk, opt.attention_key_block));
  for (const SampleChunk& ch : chunks) {
    const int64_t r0 = ch.r0, n = ch.n;  // the chunk's first row and tokens
    const std::vector<SampleSpan>& rows = ch.spans;  // the chunk's samples, as rows of x/q/k/v/attn
    auto x = hidden.middleRows(r0, n);  // [n, hidden], updated in place
    auto xn = scratch_.view(scratch_.xn, n, c.hidden_size);          // [n, hidden]
    auto q = scratch_.view(scratch_.q, n, c.q_dim());                // [n, q_dim]
    auto k = scratch_.view(scratch_.k, n, c.kv_dim());               // [n, kv_dim]
    auto v = scratch_.view(scratch_.v, n, c.kv_dim());               // [n, kv_dim]
    auto attn = scratch_.view(scratch_.attn, n, c.q_dim());          // [n, q_dim]
    auto proj = scratch_.view(scratch_.proj, n, c.hidden_size);      // [n, hidden]

    if (!c.has_mixer(layer)) {
      // Nemotron-H's MLP block: no token mixer, only the MLP below.
    } else if (c.is_mamba(layer)) {
      // --- Mamba2 block: the mixer on the normed input, then the residual ---
      CTCAL_ASSERT(w.mamba != nullptr, "a Mamba2 layer's weights hold its mixer");
      PhaseScope phase(phases_, "mamba2");
      rms_norm_into(x, w.input_norm, c.rms_norm_eps, xn);
      announce_input(observer, layer, Site::kMambaInProjInput, xn, rows);
      quantize_input(opt.quantizer, layer, Site::kMambaInProjInput, xn, rows);
      // out_proj's input [n, I] exists only inside the mixer: shown there, before out_proj.
      const Mamba2InputHook out_proj_input = [&](Eigen::Ref<RowMatrix> g) {
        announce_input(observer, layer, Site::kMambaOutProjInput, g, rows);
        quantize_input(opt.quantizer, layer, Site::kMambaOutProjInput, g, rows);
      };
      mamba2_forward(c.mamba, *w.mamba, xn, rows, proj, &scratch_.mamba, out_proj_input);
      add_scaled_into(x, proj, c.residual_multiplier);
    } else if (c.is_linear_attention(layer)) {
      // --- linear-attention block: the DeltaNet on the normed input, then the residual ---
      CTCAL_ASSERT(w.linear_attn != nullptr, "a linear-attention layer's weights hold its mixer");
      PhaseScope phase(phases_, "linear_attention");
      rms_norm_into(x, w.input_norm, c.rms_norm_eps, xn);
      gated_deltanet_forward(xn, rows, *w.linear_attn, deltanet_shape(c), proj, nullptr, &scratch_.deltanet);
      add_into(x, proj);
    } else {
      // --- attention block ---
      PhaseScope rows_phase(phases_, "norm+observe");
      pre_norm_into(x, w.input_norm, c.rms_norm_eps, xn);
      announce_input(observer, layer, Site::kQkvInput, xn, rows);
      quantize_input(opt.quantizer, layer, Site::kQkvInput, xn, rows);
      rows_phase.stop();
      {
        PhaseScope phase(phases_, "qkv_proj");
        ProjectionInput in(xn, scratch_.bf16.data());
        if (fam.attention_output_gate) {
          auto qg = scratch_.view(scratch_.q_gate, n, c.q_proj_rows());  // [n, heads, 2 head_dim]: [query | gate]
          linear(in, w.q, qg);
          // the gate goes to the front of q_gate's own buffer (read after attention)
          split_query_gate(qg.data(), n, nh, d, q.data(), attn.data());
          std::copy(attn.data(), attn.data() + n * c.q_dim(), qg.data());  // gate: [n, q_dim] at q_gate's start
        } else {
          linear(in, w.q, q);
        }
        if (!own_kv) {
          // Gemma 4's KV-shared layer: the K/V its source layer cached (after that layer's norms, RoPE
          // and, in eval, fake quantization), rows [r0, r0 + n).
          const auto it = shared_kv_.find(c.kv_source_of(layer));
          CTCAL_ASSERT(it != shared_kv_.end() && it->second.first.rows() == hidden.rows(),
                       "a KV-shared layer runs after its source layer, on the same rows");
          k = it->second.first.middleRows(r0, n);
          v = it->second.second.middleRows(r0, n);
        } else {
          linear(in, w.k, k);
          if (c.k_eq_v(layer)) v = k;  // Gemma 4's attention_k_eq_v: V is k_proj's output, before k_norm
          else linear(in, w.v, v);
        }
      }
      PhaseScope rope_phase(phases_, "rope+observe");
      if (fam.llama4_attention) {  // every layer, as vLLM permutes every layer's q/k weights
        deinterleave_heads(q.data(), n, nh, d);
        deinterleave_heads(k.data(), n, nkv, d);
      }
      if (c.qk_norm && fam.qk_norm_whole) {
        // One RMSNorm over each token's whole projection (all heads) before RoPE: q [n, q_dim], k [n, kv_dim].
        rms_norm_into(q, w.q_norm, c.rms_norm_eps, q);
        rms_norm_into(k, w.k_norm, c.rms_norm_eps, k);
      } else if (c.qk_norm) {
        // Per-head RMSNorm over head_dim before RoPE: q viewed as [n * heads, head_dim].
        Eigen::Map<RowMatrix> qh(q.data(), n * nh, d), kh(k.data(), n * nkv, d);
        rms_norm_into(qh, w.q_norm, c.rms_norm_eps, qh);
        if (own_kv) rms_norm_into(kh, w.k_norm, c.rms_norm_eps, kh);
      }
      // Gemma 4's v_norm: a weightless RMSNorm over each V head, before the cache (where V is observed).
      if (fam.gemma4_attention && own_kv) rms_normalize_heads(v.data(), n * nkv, d, c.rms_norm_eps);
      for (const auto& span : rows) {
        const int64_t off = span.offset, len = span.length;
        float* qs = q.data() + off * c.q_dim();   // [len, heads, head_dim]
        float* ks = k.data() + off * c.kv_dim();  // [len, kv_heads, head_dim]
        float* vs = v.data() + off * c.kv_dim();  // [len, kv_heads, head_dim]
        if (own_kv && observer && observer->wants(layer, Site::kKeyPreRope))
          observer->observe(layer, Site::kKeyPreRope, {ks, len, nkv, d, c.kv_dim()});
        if (c.rope_on) {  // Nemotron-H (and Granite without position_embedding_type) have no RoPE
          const RopeTable& table = tables.for_length(len);
          apply_rope(table, qs, len, nh, d, c.q_dim());
          if (own_kv) apply_rope(table, ks, len, nkv, d, c.kv_dim());  // a shared layer's K is rotated already
        }
        if (fam.llama4_attention && c.uses_rope(layer) && c.l2_qk_norm) {
          l2_norm_heads(qs, len, nh, d, c.q_dim(), c.rms_norm_eps);
          l2_norm_heads(ks, len, nkv, d, c.kv_dim(), c.rms_norm_eps);
        }
        // After RoPE / the q/k norm, before attention: where vLLM 0.34's Llama4Attention scales q
        // and hands it to self.attn (so Q is observed scaled).
        if (fam.llama4_attention && !c.uses_rope(layer) && c.attn_temperature_tuning)
          temperature_tune(qs, len, c.q_dim(), opt.position_offset, c.floor_scale, c.attn_scale);
        auto observe_qk = [&] {
          if (want_q) observer->observe(layer, Site::kQuery, {qs, len, nh, d, c.q_dim()});
          if (want_k) observer->observe(layer, Site::kKey, {ks, len, nkv, d, c.kv_dim()});
        };
        if (opt.observe_before_rotation) observe_qk();
        if (opt.qk_rotation) {
          rotate_heads(qs, len, nh, d, c.q_dim(), *opt.qk_rotation);
          if (own_kv) rotate_heads(ks, len, nkv, d, c.kv_dim(), *opt.qk_rotation);
        }
        if (!opt.observe_before_rotation) observe_qk();
        if (want_v) observer->observe(layer, Site::kValue, {vs, len, nkv, d, c.kv_dim()});
        if (ActivationQuantizer* fq = opt.quantizer) {
          if (fq->quantizes(layer, Site::kQuery)) fq->apply(layer, Site::kQuery, qs, len, nh, d, c.q_dim());
          if (fq->quantizes(layer, Site::kKey)) fq->apply(layer, Site::kKey, ks, len, nkv, d, c.kv_dim());
          if (fq->quantizes(layer, Site::kValue)) fq->apply(layer, Site::kValue, vs, len, nkv, d, c.kv_dim());
        }
      }
      if (c.kv_shared_by_later(layer)) {
        // Gemma 4: later KV-shared layers attend with these K/V, as cached (store_full_length_kv).
        auto& [sk, sv] = shared_kv_[layer];  // [total_tokens, kv_dim] each
        if (sk.rows() != hidden.rows()) {
          sk.resize(hidden.rows(), c.kv_dim());
          sv.resize(hidden.rows(), c.kv_dim());
        }
        sk.middleRows(r0, n) = k;
        sv.middleRows(r0, n) = v;
      }
      rope_phase.stop();
      {
        PhaseScope phase(phases_, "attention");
        if (opt.bf16_attention)
          causal_attention_bf16(q.data(), k.data(), v.data(), attn.data(), rows, attention_shape, opt.attention_block,
                                opt.attention_key_block, scratch_.bf16.data());
        else
          causal_attention(q.data(), k.data(), v.data(), attn.data(), rows, attention_shape, opt.attention_block,
                           opt.attention_key_block);
      }
      if (fam.attention_output_gate) apply_output_gate(attn, scratch_.q_gate.data());  // gate [n, q_dim]
      announce_input(observer, layer, Site::kOProjInput, attn, rows);
      quantize_input(opt.quantizer, layer, Site::kOProjInput, attn, rows);
      {
        PhaseScope phase(phases_, "o_proj");
        ProjectionInput in(attn, scratch_.bf16.data());
        linear(in, w.o, proj);
      }
      PhaseScope attn_residual_phase(phases_, "norm+observe");
      if (w.attn_out_norm.size() > 0) rms_norm_into(proj, w.attn_out_norm, c.rms_norm_eps, proj);
      add_scaled_into(x, proj, c.residual_multiplier);
    }  // attention block
    PhaseScope residual_phase(phases_, "norm+observe");

    // --- MLP block (skipped for the last layer during calibration) ---
    // The dense MLP on xn (announced and quantized by the caller) into `out` [n, hidden] (may be xn
    // itself: xn is free once gate/up are computed): gated act(gate(xn)) * up(xn), or Nemotron-H's
    // ungated relu(up(xn))^2, then down.
    auto dense_mlp = [&](int64_t width, Eigen::Ref<RowMatrix> out) {
      auto gate = scratch_.view(scratch_.gate, n, width);  // [n, width]
      auto up = scratch_.view(scratch_.up, n, width);      // [n, width]
      const bool ungated = fam.act == MlpAct::kRelu2;
      {
        PhaseScope phase(phases_, "gate_up_proj");
        ProjectionInput in(xn, scratch_.bf16.data());
        if (!ungated) linear(in, w.gate, gate);
        linear(in, w.up, ungated ? gate : up);  // ungated: up(xn) in the gate buffer
      }
      PhaseScope act_phase(phases_, "act+observe");
      if (ungated) relu2_into(gate);
      else gated_act_into(fam.act, gate, up);
      announce_input(observer, layer, Site::kDownInput, gate, rows);
      quantize_input(opt.quantizer, layer, Site::kDownInput, gate, rows);
      act_phase.stop();
      PhaseScope down_phase(phases_, "down_proj");
      ProjectionInput in(gate, scratch_.bf16.data());
      linear(in, w.down, out);
    };
    if (w.has_mlp && c.is_moe(layer) && fam.gemma4_attention) {
      // Gemma4TextDecoderLayer with enable_moe_block, on the residual x: the dense MLP on
      // pre_feedforward_layernorm(x), normed by post_feedforward_layernorm_1; the experts on
      // pre_feedforward_layernorm_2(x), routed on rms_norm(x) * router.scale * hidden^-0.5, normed by
      // post_feedforward_layernorm_2; their sum through post_feedforward_layernorm, then the residual.
      pre_norm_into(x, w.mlp_norm, c.rms_norm_eps, xn);
      announce_input(observer, layer, Site::kGateUpInput, xn, rows);  // the dense MLP's gate/up input
      quantize_input(opt.quantizer, layer, Site::kGateUpInput, xn, rows);
      residual_phase.stop();
      RowMatrix router_x(n, c.hidden_size), experts_x(n, c.hidden_size), experts_out(n, c.hidden_size);  // [n, hidden]
      const Vector ones = Vector::Ones(c.hidden_size);
      rms_norm_into(x, ones, c.rms_norm_eps, router_x);  // Gemma4RMSNorm(with_scale=False)
      const auto root = static_cast<float>(std::pow(static_cast<double>(c.hidden_size), -0.5));
      for (int64_t t = 0; t < n; ++t) router_x.row(t) = router_x.row(t).cwiseProduct(w.experts.router_scale.transpose()) * root;
      rms_norm_into(x, w.experts_in_norm, c.rms_norm_eps, experts_x);
      dense_mlp(c.intermediate_size, proj);  // [n, hidden]
      rms_norm_into(proj, w.dense_out_moe_norm, c.rms_norm_eps, proj);
      PhaseScope phase(phases_, "moe");
      moe_mlp_into(w.experts, c, experts_x, experts_out, observer, layer, &router_x);  // announces each expert's inputs
      phase.stop();
      rms_norm_into(experts_out, w.experts_out_norm, c.rms_norm_eps, experts_out);
      proj += experts_out;
      rms_norm_into(proj, w.mlp_out_norm, c.rms_norm_eps, proj);
      add_into(x, proj);
    } else if (w.has_mlp && c.is_moe(layer)) {
      rms_norm_into(x, w.mlp_norm, c.rms_norm_eps, xn);
      announce_input(observer, layer, Site::kGateUpInput, xn, rows);  // the router's and every expert's input
      residual_phase.stop();
      PhaseScope phase(phases_, "moe");
      moe_mlp_into(w.experts, c, xn, proj, observer, layer);  // announces each expert's inputs
      phase.stop();  // dense_mlp times its own phases
      if (fam.moe_shared_expert) {
        // Qwen3NextSparseMoeBlock: proj = experts + sigmoid(shared_expert_gate(xn)) * shared_expert(xn).
        // The gate reads the unquantized input (vLLM builds it without a quant config); the shared
        // expert's gate/up_proj read it fake-quantized in FP8 eval, so xn is quantized after the
        // router, the experts and the gate have read it. Glm4MoeMoE: experts + shared_experts(xn), no gate.
        const bool gated = fam.experts.shared_expert_gated();
        RowMatrix gate_logit;  // [n, 1] shared_expert_gate(xn), fp32 (gated shared experts only)
        if (gated) linear(xn, w.experts.shared_gate, &gate_logit);
        quantize_input(opt.quantizer, layer, Site::kGateUpInput, xn, rows);
        dense_mlp(c.shared_expert_intermediate_size, xn);  // xn [n, hidden]: the shared expert's output
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < n; ++t) {  // F.sigmoid in fp32, then expert_output + shared_expert_output
          const float s = gated ? 1.0f / (1.0f + std::exp(-gate_logit(t, 0))) : 1.0f;
          proj.row(t) += s * xn.row(t);
        }
      } else if (fam.moe_plus_dense_mlp) {
        // GraniteMoeHybridDecoderLayer: block_sparse_moe(xn) + shared_mlp(xn); shared_mlp's
        // input_linear reads xn fake-quantized in FP8 eval (after the router and experts read it).
        quantize_input(opt.quantizer, layer, Site::kGateUpInput, xn, rows);
        dense_mlp(c.intermediate_size, xn);  // xn [n, hidden]: shared_mlp's output
        add_into(proj, xn);                  // moe_hidden_states + shared_mlp(hidden_states)
      }
      add_scaled_into(x, proj, c.residual_multiplier);
    } else if (w.has_mlp) {
      pre_norm_into(x, w.mlp_norm, c.rms_norm_eps, xn);
      announce_input(observer, layer, Site::kGateUpInput, xn, rows);
      quantize_input(opt.quantizer, layer, Site::kGateUpInput, xn, rows);
      residual_phase.stop();
      dense_mlp(c.intermediate_size, proj);
      PhaseScope out_phase(phases_, "norm+observe");
      if (w.mlp_out_norm.size() > 0) rms_norm_into(proj, w.mlp_out_norm, c.rms_norm_eps, proj);
      add_scaled_into(x, proj, c.residual_multiplier);
    }
    residual_phase.stop();
    // Gemma 4's per-layer input after the MLP block (model/per_layer_input.h), from the rows' token ids.
    if (w.has_ple) {
      CTCAL_ASSERT(static_cast<int64_t>(row_ids_.size()) == hidden.rows(), "the hidden states come from embed_ids");
      PhaseScope phase(phases_, "per_layer_input");
      RowMatrix ple;  // [n, P]
      per_layer_input_rows(ckpt_, c, layer, w.ple, row_ids_.data() + r0, n, &ple);
      add_per_layer_input(c, w.ple, ple, x);
    }
    // Gemma4TextDecoderLayer: hidden_states *= layer_scalar, the whole residual stream.
    if (w.layer_scalar != 1.0f) x *= w.layer_scalar;
    // One finiteness check per chunk: a NaN/Inf anywhere in the layer reaches its output.
    PhaseScope check_phase(phases_, "norm+observe");
    check_finite(x, layer, module, w.has_mlp ? "the layer output (attention + MLP)" : "the attention output");
    if (opt.after_chunk) opt.after_chunk(layer, r0 + n - spans.front().offset);
  }
}

}  // namespace ctcal
