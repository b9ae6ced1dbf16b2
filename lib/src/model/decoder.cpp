#include "ctcal/model/decoder.h"

#include <algorithm>
#include <cmath>
#include <future>
#include <memory>

#include <spdlog/spdlog.h>

#include "ctcal/error.h"
#include "ctcal/model/cuda_backend.h"
#include "ctcal/model/layer_backend.h"

namespace ctcal {

void Decoder::Scratch::reserve(int64_t rows_needed, const ModelConfig& c) {
  if (rows_needed <= rows) return;
  rows = rows_needed;
  auto fit = [&](UninitBuffer<float>& b, int64_t cols) { b.fit(rows * cols); };
  fit(xn, c.hidden_size);
  fit(q, c.widest_q_dim());  // Gemma 4: the widest layer's (full layers have a larger head_dim)
  fit(k, c.widest_kv_dim());
  fit(v, c.widest_kv_dim());
  fit(attn, c.widest_q_dim());
  fit(proj, c.hidden_size);
  fit(gate, c.mlp_scratch_width());  // the dense MLP's or the shared expert's intermediate
  fit(up, c.mlp_scratch_width());
  if (c.family->attention_output_gate) fit(q_gate, c.q_proj_rows());
  // bf16 copy of whichever activation feeds the next projections (the widest is gate * up), or
  // of q, k, v for bf16 attention (run_layer grows it for those). Never touched in fp32 mode,
  // so never resident.
  bf16.fit(rows * std::max({c.hidden_size, c.widest_q_dim(), c.mlp_scratch_width()}));
}

Decoder::Decoder(const Checkpoint& ckpt, ModelConfig cfg) : ckpt_(ckpt), cfg_(std::move(cfg)) {
  check_model_tensors(ckpt_, cfg_);
}

std::vector<int32_t> Decoder::token_rows(const std::vector<std::vector<int32_t>>& samples,
                                         std::vector<SampleSpan>* spans) {
  int64_t total = 0;
  spans->clear();
  for (const auto& s : samples) {
    spans->push_back({total, static_cast<int64_t>(s.size())});
    total += static_cast<int64_t>(s.size());
  }
  std::vector<int32_t> ids;  // every token, in row order
  ids.reserve(static_cast<std::size_t>(total));
  for (const auto& s : samples) ids.insert(ids.end(), s.begin(), s.end());
  return ids;
}

RowMatrix Decoder::embed_ids(const std::vector<int32_t>& ids) const {
  const auto total = static_cast<int64_t>(ids.size());
  const std::string name = cfg_.top_tensor("embed_tokens.weight");
  const SafetensorsFile& shard = ckpt_.shard_of(name);
  const TensorInfo& t = shard.info(name);
  const unsigned char* base = shard.data(t);
  const std::size_t row_bytes = static_cast<std::size_t>(cfg_.hidden_size) * dtype_size(t.dtype);
  RowMatrix hidden(total, cfg_.hidden_size);  // [total_tokens, hidden]
  // Rows in parallel: 64 x 2048 tokens of an 8B model are 2 GiB of conversions.
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < total; ++row) {
    const int32_t id = ids[static_cast<std::size_t>(row)];
    CTCAL_ASSERT(id >= 0 && id < cfg_.vocab_size, "token id out of range (validated earlier)");
    convert_to_f32(base + static_cast<std::size_t>(id) * row_bytes, t.dtype, static_cast<std::size_t>(cfg_.hidden_size),
                   hidden.row(row).data());
  }
  shard.release(t);  // the embedding is not needed again: drop its pages from our RSS
  if (cfg_.family->embed_scale) {
    // Gemma 3: embeddings * sqrt(hidden_size), the scale held as an fp32 tensor in transformers.
    const auto scale = static_cast<float>(std::sqrt(static_cast<double>(cfg_.hidden_size)));
    hidden *= scale;
  }
  if (cfg_.per_layer_input_size > 0) row_ids_ = ids;  // Gemma 4: each layer's per-layer input reads them
  // Granite: inputs_embeds * embedding_multiplier (a Python float: one fp32 multiply).
  if (cfg_.embedding_multiplier != 1.0) hidden *= static_cast<float>(cfg_.embedding_multiplier);
  return hidden;
}

RowMatrix Decoder::embed(const std::vector<std::vector<int32_t>>& samples,
                         std::vector<SampleSpan>* spans) const {
  return embed_ids(token_rows(samples, spans));
}

// The CPU backend of the layer loop: each layer's weights read (fp32 into the previous layer's
// buffers, or packed to bf16) and edited on the calling thread, the next layer's pages read ahead
// by another thread while this one computes, then Decoder::run_layer over every chunk.
class CpuLayers final : public LayerBackend {
 public:
  CpuLayers(const Decoder& model, const std::vector<SampleSpan>& spans, const LayerLoop& loop,
            const ForwardOptions& options)
      : m_(model), spans_(spans), loop_(loop), opt_(options) {}

  void begin(RowMatrix& hidden) override {
    hidden_ = &hidden;
    if (opt_.token_ids && hidden.rows() == 0) hidden = m_.embed_ids(*opt_.token_ids);
    m_.phases_.clear();
  }
  void load(int64_t l) override {
    const int64_t n_layers = m_.cfg_.num_hidden_layers;
    const bool with_mlp = loop_.last_layer_mlp || l + 1 < n_layers;
    PhaseScope load_phase(m_.phases_, "load+pack");
    if (loop_.load_bf16) {
      w_ = LayerWeights();  // release the previous layer's packed tiles to the pool first
      w_ = load_layer_weights_bf16(m_.ckpt_, m_.cfg_, l, with_mlp);
    } else {
      reload_layer_weights(m_.ckpt_, m_.cfg_, l, with_mlp, &w_);
    }
    if (loop_.edit_weights) loop_.edit_weights(l, w_);
  }
  void run(int64_t l, ActivationObserver* observer) override {
    // The next layer's tensors are read from disk while this one computes (queueing the reads
    // takes tens of ms of this thread, so another thread does it).
    std::future<void> prefetch;
    if (l + 1 < m_.cfg_.num_hidden_layers)
      prefetch = std::async(std::launch::async, [this, l] { prefetch_layer_pages(m_.ckpt_, m_.cfg_, l + 1); });
    m_.run_layer(w_, l, spans_, *hidden_, observer, opt_);
    if (prefetch.valid()) prefetch.get();
  }
  void release(int64_t l, ActivationObserver*) override {
    if (loop_.release_pages) release_layer_pages(m_.ckpt_, m_.cfg_, l);
  }
  void end(RowMatrix&) override {
    if (m_.phases_.on())
      spdlog::info("cpu: wall time per phase of {} layers: {}", m_.cfg_.num_hidden_layers, m_.phases_.summary());
  }

 private:
  const Decoder& m_;
  const std::vector<SampleSpan>& spans_;
  const LayerLoop& loop_;
  const ForwardOptions& opt_;
  RowMatrix* hidden_ = nullptr;
  LayerWeights w_;  // one layer at a time; fp32 buffers reused from layer to layer
};

void Decoder::run_layers(const std::vector<SampleSpan>& spans, RowMatrix& hidden, const LayerLoop& loop,
                         const ForwardOptions& options) const {
  // The CUDA backend checks what it runs and opens the device first: a bad device or an
  // unsupported model fails here even on a rank without samples.
  std::unique_ptr<LayerBackend> backend = options.device.is_cuda()
                                              ? make_cuda_layers(*this, spans, loop, options)
                                              : std::make_unique<CpuLayers>(*this, spans, loop, options);
  // A rank without samples runs no layer but still calls every hook: loop.after_layer combines the
  // observers over MPI ranks, and every rank must join each layer's collectives.
  const bool work = !spans.empty();
  if (work) backend->begin(hidden);
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    if (loop.before_layer) loop.before_layer(l);
    ActivationObserver* observer = loop.observer ? loop.observer(l) : nullptr;
    if (work) {
      backend->load(l);
      backend->run(l, observer);
      backend->release(l, observer);
    }
    if (loop.after_layer) loop.after_layer(l);
  }
  if (work) backend->end(hidden);
}

LmHead::LmHead(const Checkpoint& ckpt, const ModelConfig& c)
    : eps_(c.rms_norm_eps), softcap_(c.final_logit_softcapping), logits_scaling_(c.logits_scaling) {
  norm_ = read_norm(ckpt, c, c.top_tensor("norm.weight"), c.hidden_size);
  // Tied embeddings: lm_head reuses embed_tokens.weight.
  const std::string head = c.tie_word_embeddings ? c.top_tensor("embed_tokens.weight") : c.lm_head_module() + ".weight";
  std::vector<float> wv = read_checked(ckpt, head, {c.vocab_size, c.hidden_size});
  head_.w = Eigen::Map<RowMatrix>(wv.data(), c.vocab_size, c.hidden_size);  // [vocab, hidden]
}

RowMatrix LmHead::logits(const Eigen::Ref<const RowMatrix>& hidden) const {
  RowMatrix xn, out;
  rms_norm(hidden, norm_, eps_, &xn);  // [tokens, hidden]
  linear(xn, head_, &out);             // [tokens, vocab]
  // Granite: logits / logits_scaling (GraniteMoeHybridForCausalLM), before anything reads them.
  if (logits_scaling_ != 1.0) out /= static_cast<float>(logits_scaling_);
  if (softcap_) {
    const auto cap = static_cast<float>(*softcap_);
    out = ((out.array() / cap).tanh() * cap).matrix();
  }
  return out;
}

RowMatrix Decoder::logits(const RowMatrix& hidden) const { return LmHead(ckpt_, cfg_).logits(hidden); }

RowMatrix Decoder::forward(const std::vector<int32_t>& ids, ActivationObserver* observer,
                           const ForwardOptions& options,
                           const std::function<void(int64_t, LayerWeights&)>& edit_weights) const {
  std::vector<SampleSpan> spans;
  RowMatrix hidden = embed({ids}, &spans);  // [seq, hidden]
  LayerLoop loop;
  loop.release_pages = false;
  loop.edit_weights = edit_weights;
  if (observer) loop.observer = [observer](int64_t) { return observer; };
  run_layers(spans, hidden, loop, options);
  return logits(hidden);
}

}  // namespace ctcal
