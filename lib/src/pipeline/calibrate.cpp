#include "ctcal/pipeline/calibrate.h"

#include "ctcal/util/ranks.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "ctcal/error.h"
#include "ctcal/pipeline/fake_quant_weights.h"
#include "ctcal/quant/key_envelope.h"
#include "ctcal/quant/observer.h"
#include "ctcal/transform/rotate_weights.h"
#include "ctcal/util/ranks.h"

namespace ctcal {

const SiteResult* LayerResult::find(Site s) const {
  for (const auto& r : sites)
    if (r.site == s) return &r;
  return nullptr;
}

namespace {

// Routes each layer's Q/K/V (and Linear-input) views to that layer's observers.
class LayerObservers : public ActivationObserver {
 public:
  LayerObservers(const CalibrationPlan& plan, int64_t layer, const RowMatrix* r3) : layer_(layer) {
    for (Site s : plan.sites(layer)) observers_[s] = std::make_unique<Observer>(plan.site_args(s), plan.heads(s, layer));
    // One observer per expert, on MoE layers only (all of them on every rank, so that ranks
    // combine the same list).
    if (plan.model.is_moe(layer))
      for (Site s : plan.expert_sites()) {
        auto& list = experts_[s];
        for (int64_t e = 0; e < plan.model.num_experts; ++e) list.push_back(std::make_unique<Observer>(plan.site_args(s), 1));
      }
    if (plan.key_envelope && plan.model.has_kv_cache(layer)) {
      envelope_ = true;
      half_ = plan.model.rope_of(layer).rotary_dim(plan.model.head_dim_of(layer)) / 2;
      // The bound after R3 when the keys are observed rotated (SpinQuant listed first).
      rotation_ = plan.rotations_observed ? r3 : nullptr;
    }
  }
  bool wants(int64_t layer, Site site) const override {
    if (layer != layer_) return false;
    // With the envelope, K's statistics come from the keys before RoPE instead.
    if (envelope_ && site == Site::kKeyPreRope) return true;
    if (envelope_ && site == Site::kKey) return false;
    return observers_.count(site) != 0 || experts_.count(site) != 0;
  }
  void observe_expert(int64_t, Site site, int64_t expert, const HeadsView& v) override {
    experts_.at(site).at(static_cast<std::size_t>(expert))->observe(v);
  }
  bool needs_values(int64_t, Site site) const override {
    if (site == Site::kKeyPreRope) return true;  // the envelope works on the values
    auto it = observers_.find(site);
    return it == observers_.end() || it->second->needs_values();
  }
  void observe(int64_t, Site site, const HeadsView& v) override {
    if (site == Site::kKeyPreRope) {
      std::vector<double> env;  // [kv_heads]
      key_envelope(v, half_, rotation_, &env);
      std::vector<double> lo(env.size());
      std::transform(env.begin(), env.end(), lo.begin(), [](double e) { return -e; });
      observers_.at(Site::kKey)->observe_range(lo, env);
      return;
    }
    observers_.at(site)->observe(v);
  }
  const std::map<Site, std::unique_ptr<Observer>>& observers() const { return observers_; }
  const std::map<Site, std::vector<std::unique_ptr<Observer>>>& experts() const { return experts_; }

 private:
  int64_t layer_;
  std::map<Site, std::unique_ptr<Observer>> observers_;
  std::map<Site, std::vector<std::unique_ptr<Observer>>> experts_;  // [experts] per expert-input site
  bool envelope_ = false;
  int64_t half_ = 0;                    // rotary_dim / 2 of this layer
  const RowMatrix* rotation_ = nullptr;  // R3 [head_dim, head_dim] when keys are observed rotated
};

void rotate_linear(Linear* l, const RowMatrixD& h, DType storage, bool output_side) {
  std::vector<double> w(l->w.data(), l->w.data() + l->w.size());
  if (output_side) {
    rotate_output_rows(&w, l->w.rows(), l->w.cols(), h);
    if (l->b.size() > 0) {
      std::vector<double> b(l->b.data(), l->b.data() + l->b.size());
      rotate_output_rows(&b, l->b.size(), 1, h);
      for (Eigen::Index i = 0; i < l->b.size(); ++i)
        l->b[i] = static_cast<float>(round_to_dtype(b[static_cast<std::size_t>(i)], storage));
    }
  } else {
    rotate_input_cols(&w, l->w.rows(), l->w.cols(), h);
  }
  for (std::size_t i = 0; i < w.size(); ++i) l->w.data()[i] = static_cast<float>(round_to_dtype(w[i], storage));
}

}  // namespace

void apply_r2(const CalibrationPlan& plan, LayerWeights* w) {
  if (!plan.r2) return;
  const RowMatrixD h = plan.r2->matrix / std::sqrt(static_cast<double>(plan.r2->size));
  rotate_linear(&w->v, h, plan.storage, /*output_side=*/true);
  rotate_linear(&w->o, h, plan.storage, /*output_side=*/false);
}

MemoryEstimate estimate_memory(const ModelConfig& c, int64_t total_tokens, bool bf16_compute) {
  const double h = static_cast<double>(c.hidden_size), f = static_cast<double>(c.intermediate_size);
  const double q = static_cast<double>(c.widest_q_dim()), kv = static_cast<double>(c.widest_kv_dim());
  MemoryEstimate m;
  m.hidden_bytes = 4.0 * static_cast<double>(total_tokens) * h;
  // MoE: the widest MLP is every expert's (plus the router); one layer of them is resident.
  // (+ the shared expert and its gate: Qwen3-Next, Qwen3.5-MoE).
  const double shared = static_cast<double>(c.shared_expert_intermediate_size);
  const bool has_experts = c.family->mlp == MlpKind::kMoe || c.num_experts > 0;  // Nemotron-H: MoE blocks
  const double moe = has_experts
                         ? static_cast<double>(c.num_experts) * (3 * h * static_cast<double>(c.moe_intermediate_size) + h) +
                               (shared > 0 ? 3 * h * shared + h : 0.0)
                         : 0.0;
  m.layer_bytes = 4.0 * (h * (q + 2 * kv) + q * h + std::max(3 * h * f, moe) + 2 * h);
  // xn, q, k, v, attn, proj, gate, up (Decoder's scratch), plus one [hidden] row per token
  // that is no longer allocated (the residual used to be copied per chunk; it is now updated in
  // place): kept so that --max-memory picks the chunk sizes it was measured with; the model
  // overestimates by 4 * hidden bytes per chunk token.
  m.per_token_bytes = 4.0 * (h + q + 2 * kv + q + h + 2 * std::max(f, shared) + h);
  // bf16 mode: the bf16 copy of the widest projection input, or of attention's q, k, v (which
  // reuse that buffer). (Its layer weights are packed bf16, half of layer_bytes, except with R2,
  // which rotates in fp32 first: layer_bytes stays fp32.)
  if (bf16_compute) m.per_token_bytes += 2.0 * std::max({h, q, f, shared, q + 2 * kv});
  // MoE: one expert's gathered rows, its gate/up/down outputs (at most every token), the router logits.
  if (has_experts)
    m.per_token_bytes += 4.0 * (2 * h + 2 * static_cast<double>(c.moe_intermediate_size) + static_cast<double>(c.num_experts));
  return m;
}

int64_t chunk_tokens_for_budget(const ModelConfig& c, int64_t total_tokens, int64_t longest, double budget,
                                bool bf16_compute) {
  const MemoryEstimate m = estimate_memory(c, total_tokens, bf16_compute);
  constexpr double kOverhead = 64.0 * 1024 * 1024;  // program, tokenizer, page-cache slack
  const double fixed = m.hidden_bytes + m.layer_bytes + kOverhead;
  const double need_min = fixed + m.per_token_bytes * static_cast<double>(longest);
  if (budget < need_min)
    throw UsageError(fmt::format("--max-memory {:.0f} MB is too small for this model and data: at least {:.0f} MB "
                                 "(hidden states {:.0f} MB, one layer's fp32 weights {:.0f} MB, one {}-token sample "
                                 "{:.0f} MB); use fewer samples or shorter sequences", budget / 1048576, need_min / 1048576,
                                 m.hidden_bytes / 1048576, m.layer_bytes / 1048576, longest,
                                 m.per_token_bytes * static_cast<double>(longest) / 1048576));
  return static_cast<int64_t>((budget - fixed) / m.per_token_bytes);
}

CalibrationResult run_calibration(const Checkpoint& ckpt, const CalibrationPlan& plan,
                                  const std::vector<std::vector<int32_t>>& samples,
                                  const CalibrateOptions& options) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const ModelConfig& cfg = plan.model;
  ForwardOptions fwd = options.forward;
  Decoder model(ckpt, cfg);
  RowMatrix r3;  // [head_dim, head_dim], H / sqrt(d) in fp32 (applied in fp32 compute)
  if (plan.r3) {
    r3 = (plan.r3->matrix / std::sqrt(static_cast<double>(plan.r3->size))).cast<float>();
    fwd.qk_rotation = &r3;
    fwd.observe_before_rotation = !plan.rotations_observed;
  }
  CalibrationResult result;
  std::vector<SampleSpan> spans;
  // Data-parallel under mpirun: this rank's contiguous share of the samples (rank 0 first);
  // every layer's observer statistics are combined over the ranks before its qparams.
  const RankSlice mine = rank_slice(samples.size(), Ranks::rank(), Ranks::size());
  const std::vector<std::vector<int32_t>> share(samples.begin() + static_cast<std::ptrdiff_t>(mine.first),
                                                samples.begin() + static_cast<std::ptrdiff_t>(mine.last));
  // The layer loop embeds the tokens itself (decoder.h: ForwardOptions::token_ids): on a GPU,
  // while its loader already reads the first layers' weights.
  const std::vector<int32_t> ids = Decoder::token_rows(share, &spans);  // [this rank's tokens]
  RowMatrix hidden;  // [this rank's tokens, hidden], embedded by run_layers
  fwd.token_ids = &ids;
  result.samples = static_cast<int64_t>(samples.size());
  result.tokens = Ranks::sum(static_cast<int64_t>(ids.size()));
  std::unique_ptr<LayerObservers> obs;  // the current layer's
  LayerLoop loop;
  // bf16 mode with R2: rotate in fp32/fp64 first, then round (the rotated weights are not bf16).
  // (The GPU loads bf16 by itself: neither the oneDNN packing nor the bf16 edit below applies.)
  const bool cpu_bf16 = options.bf16_compute && !fwd.device.is_cuda();
  // FP8 weights in the forward (--propagate quantized): fake-quantized from fp32 first, too.
  const bool fake_quant = options.quantized_forward && !plan.linear.empty();
  loop.load_bf16 = cpu_bf16 && !plan.r2 && !fake_quant;
  fwd.bf16_attention = cpu_bf16 && options.bf16_attention;
  // The last layer's MLP only feeds the final norm and lm_head, which calibration never needs
  // (unless FP8 input scales of its MLP are observed).
  loop.last_layer_mlp = plan.observes_last_mlp();
  loop.keep_hidden = false;  // only the observers' statistics are wanted
  auto progress = [&](int64_t l, int64_t done, bool layer_done) {
    if (!options.on_progress) return;
    const double el = std::chrono::duration<double>(Clock::now() - t0).count();
    options.on_progress({l + 1, cfg.num_hidden_layers, result.samples, result.tokens, done, layer_done, el});
  };
  loop.before_layer = [&](int64_t l) {
    if (options.cancel && options.cancel->load()) throw Cancelled();
    if (options.on_status)
      options.on_status(fmt::format("layer {}/{}: reading weights", l + 1, cfg.num_hidden_layers));
  };
  // Cancellation and progress within a layer: a Ctrl-C takes effect after the current chunk.
  fwd.after_chunk = [&](int64_t l, int64_t done) {
    if (options.cancel && options.cancel->load()) throw Cancelled();
    progress(l, done, false);
  };
  // With SpinQuant listed after quantization, V is observed unrotated; R2 leaves the layer's
  // output unchanged, so propagation is the same either way. Set only when it edits something
  // (the GPU then streams the checkpoint's bf16 rows as they are).
  const bool rotate_r2 = plan.r2 && plan.rotations_observed;
  if (fake_quant || rotate_r2 || (cpu_bf16 && !loop.load_bf16))
    loop.edit_weights = [&, rotate_r2, fake_quant, cpu_bf16](int64_t l, LayerWeights& w) {
      if (fake_quant) fake_quantize_fp8_weights(ckpt, plan, l, &w);
      if (rotate_r2) apply_r2(plan, &w);
      if (cpu_bf16 && !loop.load_bf16) to_bf16_weights(&w);
    };
  loop.observer = [&](int64_t l) -> ActivationObserver* {
    obs = std::make_unique<LayerObservers>(plan, l, plan.r3 ? &r3 : nullptr);
    return obs.get();
  };
  loop.after_layer = [&](int64_t l) {
    auto combine = [](Observer& o) {
      // One all-reduce of minima and one of maxima per observer: (qparams + heads) doubles each.
      std::vector<double> mins = o.rank_minima(), maxs = o.rank_maxima();
      Ranks::min_in_place(&mins);
      Ranks::max_in_place(&maxs);
      o.set_combined(mins, maxs, Ranks::sum(o.observations()));
    };
    if (Ranks::size() > 1) {
      for (const auto& [site, o] : obs->observers()) combine(*o);
      for (const auto& [site, list] : obs->experts())
        for (const auto& o : list) combine(*o);
    }
    auto result_of = [&](Site site, const Observer& o, bool expert) {
      SiteResult sr;
      sr.site = site;
      sr.observations = o.observations();
      if (expert && sr.observations == 0) return sr;  // an expert no token reached (filled in below)
      sr.qparams = o.qparams(plan.storage);
      sr.obs_min = o.min_vals();
      sr.obs_max = o.max_vals();
      sr.head_min = o.seen_head_min();
      sr.head_max = o.seen_head_max();
      return sr;
    };
    LayerResult lr;
    lr.layer = l;
    for (const auto& [site, o] : obs->observers()) lr.sites.push_back(result_of(site, *o, false));
    for (const auto& [site, list] : obs->experts()) {
      auto& out = lr.experts[site];
      const SiteResult* widest = nullptr;
      for (const auto& o : list) out.push_back(result_of(site, *o, true));
      for (const auto& sr : out)
        if (sr.observations > 0 && (!widest || sr.qparams.scale.at(0) > widest->qparams.scale.at(0))) widest = &sr;
      CTCAL_ASSERT(widest != nullptr, "every routed token reaches num_experts_per_tok experts");
      const SiteResult fill = *widest;
      for (auto& sr : out)
        if (sr.observations == 0) {
          sr = fill;
          sr.observations = 0;
        }
    }
    result.layers.push_back(std::move(lr));
    progress(l, result.tokens, true);
  };
  model.run_layers(spans, hidden, loop, fwd);
  result.forward_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return result;
}

}  // namespace ctcal
