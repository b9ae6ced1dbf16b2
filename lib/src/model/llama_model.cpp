#include "ctcal/model/llama_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "ctcal/error.h"
#include "ctcal/model/attention.h"
#include "ctcal/model/onednn_matmul.h"
#include "ctcal/model/rope.h"

namespace ctcal {

namespace {

using StridedMap = Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>>;

// An activation matrix on its way into one or more projections. In bf16 mode it is rounded to
// bf16 once, on first use, however many projections read it (q/k/v share one, gate/up another).
class ProjectionInput {
 public:
  // x: [n, in]; bf16_scratch: room for n * in values, or null when no weight is bf16.
  ProjectionInput(const Eigen::Ref<const RowMatrix>& x, uint16_t* bf16_scratch) : x_(x), scratch_(bf16_scratch) {}
  const Eigen::Ref<const RowMatrix>& f32() const { return x_; }
  const uint16_t* bf16() {  // [n, in] dense
    CTCAL_ASSERT(scratch_ != nullptr, "bf16 weights need a bf16 activation buffer");
    if (!rounded_) round_rows_to_bf16(x_, scratch_);
    rounded_ = true;
    return scratch_;
  }

 private:
  Eigen::Ref<const RowMatrix> x_;
  uint16_t* scratch_;
  bool rounded_ = false;
};

// y = x W^T + b. x: [n, in], W: [out, in] -> y: [n, out], written into a pre-sized view.
// --compute-dtype bf16: oneDNN bf16 matmul on packed weights. Otherwise oneDNN's fp32 matmul
// (bench/calib_bench: 99-127 % of OpenBLAS sgemm 2048^3), or Eigen's GEMM for strided views or
// with CTCAL_GEMM=eigen.
void linear(ProjectionInput& x, const Linear& l, Eigen::Ref<RowMatrix> y) {
  if (l.w_bf16) {
    CTCAL_ASSERT(y.outerStride() == y.cols(), "bf16 matmul writes a dense [n, out] view");
    matmul_bf16(x.bf16(), x.f32().rows(), *l.w_bf16, y.data());
  } else if (use_onednn_f32() && x.f32().outerStride() == x.f32().cols()) {
    matmul_f32_onednn(x.f32(), l.w, y);
  } else {
    y.noalias() = x.f32() * l.w.transpose();
  }
  if (l.b.size() > 0) y.rowwise() += l.b.transpose();
}

// fp32 weights only (the lm_head).
void linear(const Eigen::Ref<const RowMatrix>& x, const Linear& l, RowMatrix* y) {
  y->resize(x.rows(), l.out_features());
  ProjectionInput in(x, nullptr);
  linear(in, l, Eigen::Ref<RowMatrix>(*y));
}

// x += y, rows in parallel. x, y: [n, cols].
void add_into(Eigen::Ref<RowMatrix> x, const Eigen::Ref<const RowMatrix>& y) {
#pragma omp parallel for schedule(static)
  for (Eigen::Index r = 0; r < x.rows(); ++r) x.row(r) += y.row(r);
}

// gate = silu(gate) * up, silu(g) = g / (1 + exp(-g)), rows in parallel. gate, up: [n, inter].
void swiglu_into(Eigen::Ref<RowMatrix> gate, const Eigen::Ref<const RowMatrix>& up) {
#pragma omp parallel for schedule(static)
  for (Eigen::Index r = 0; r < gate.rows(); ++r) {
    auto g = gate.row(r).array();
    g = g / (1.0f + (-g).exp()) * up.row(r).array();
  }
}

void check_finite(const Eigen::Ref<const RowMatrix>& m, int64_t layer, const char* what) {
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
  for (Eigen::Index r = 0; r < m.rows(); ++r) finite = finite && m.row(r).allFinite();
  if (!finite)
    throw InputError(fmt::format("layer {}: {} contains NaN or Inf (model.layers.{}); the "
                                 "weights or the input are not usable", layer, what, layer));
}

// Rotates each head of x: [seq, heads, head_dim] (row stride `stride`) by r: [d, d].
void rotate_heads(float* x, int64_t seq, int64_t heads, int64_t d, int64_t stride,
                  const RowMatrix& r) {
  RowMatrix tmp(seq, d);
  for (int64_t h = 0; h < heads; ++h) {
    StridedMap xh(x + h * d, seq, d, Eigen::OuterStride<>(stride));
    tmp.noalias() = xh * r;
    xh = tmp;
  }
}

// A chunk: consecutive samples from `first` whose tokens fit in chunk_tokens (at least one
// sample). Returns the index one past its last sample; *tokens: its token count.
std::size_t chunk_end(const std::vector<SampleSpan>& spans, std::size_t first, int64_t chunk_tokens, int64_t* tokens) {
  std::size_t last = first + 1;
  int64_t n = spans[first].length;
  while (last < spans.size() && n + spans[last].length <= chunk_tokens) n += spans[last++].length;
  *tokens = n;
  return last;
}

}  // namespace

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

void LlamaModel::Scratch::reserve(int64_t rows_needed, const LlamaConfig& c) {
  if (rows_needed <= rows) return;
  rows = rows_needed;
  auto fit = [&](UninitBuffer<float>& b, int64_t cols) { b.fit(rows * cols); };
  fit(xn, c.hidden_size);
  fit(q, c.q_dim());
  fit(k, c.kv_dim());
  fit(v, c.kv_dim());
  fit(attn, c.q_dim());
  fit(proj, c.hidden_size);
  fit(gate, c.intermediate_size);
  fit(up, c.intermediate_size);
  // bf16 copy of whichever activation feeds the next projections (the widest is gate * up).
  // Never touched in fp32 mode, so never resident.
  bf16.fit(rows * std::max({c.hidden_size, c.q_dim(), c.intermediate_size}));
}

LlamaModel::LlamaModel(const Checkpoint& ckpt, LlamaConfig cfg) : ckpt_(ckpt), cfg_(std::move(cfg)) {
  check_model_tensors(ckpt_, cfg_);
}

RowMatrix LlamaModel::embed(const std::vector<std::vector<int32_t>>& samples,
                            std::vector<SampleSpan>* spans) const {
  int64_t total = 0;
  spans->clear();
  for (const auto& s : samples) {
    spans->push_back({total, static_cast<int64_t>(s.size())});
    total += static_cast<int64_t>(s.size());
  }
  const std::string name = "model.embed_tokens.weight";
  const SafetensorsFile& shard = ckpt_.shard_of(name);
  const TensorInfo& t = shard.info(name);
  const unsigned char* base = shard.data(t);
  const std::size_t row_bytes = static_cast<std::size_t>(cfg_.hidden_size) * dtype_size(t.dtype);
  RowMatrix hidden(total, cfg_.hidden_size);  // [total_tokens, hidden]
  int64_t row = 0;
  for (const auto& s : samples)
    for (int32_t id : s) {
      CTCAL_ASSERT(id >= 0 && id < cfg_.vocab_size, "token id out of range (validated earlier)");
      convert_to_f32(base + static_cast<std::size_t>(id) * row_bytes, t.dtype,
                     static_cast<std::size_t>(cfg_.hidden_size), hidden.row(row++).data());
    }
  shard.release(t);  // the embedding is not needed again: drop its pages from our RSS
  return hidden;
}

void LlamaModel::run_layer(const LayerWeights& w, int64_t layer,
                           const std::vector<SampleSpan>& spans, RowMatrix& hidden,
                           ActivationObserver* observer, const ForwardOptions& opt) const {
  const LlamaConfig& c = cfg_;
  const bool want_q = observer && observer->wants(layer, Site::kQuery);
  const bool want_k = observer && observer->wants(layer, Site::kKey);
  const bool want_v = observer && observer->wants(layer, Site::kValue);
  std::map<int64_t, RopeTable> tables;  // by sequence length (dynamic RoPE depends on it)
  auto table_for = [&](int64_t len) -> const RopeTable& {
    // Every type but dynamic has length-independent angles: one table of the longest length.
    const int64_t key = c.rope.type == RopeType::kDynamic ? len : 0;
    auto it = tables.find(key);
    if (it == tables.end()) {
      int64_t n = len;
      if (key == 0)
        for (const auto& s : spans) n = std::max(n, s.length);
      it = tables.emplace(key, make_rope_table(c, n)).first;
    }
    return it->second;
  };

  // Scratch buffers sized for the largest chunk, reused across chunks and layers: fresh 50 MB
  // allocations per layer cost more in page faults than the GEMMs they feed.
  int64_t max_chunk = 0;
  for (std::size_t f = 0; f < spans.size();) {
    int64_t n = 0;
    f = chunk_end(spans, f, opt.chunk_tokens, &n);
    max_chunk = std::max(max_chunk, n);
  }
  scratch_.reserve(max_chunk, c);
  std::size_t first = 0;
  while (first < spans.size()) {
    int64_t n = 0;  // the chunk's tokens
    const std::size_t last = chunk_end(spans, first, opt.chunk_tokens, &n);
    const int64_t r0 = spans[first].offset;
    auto x = hidden.middleRows(r0, n);  // [n, hidden], updated in place
    auto xn = scratch_.view(scratch_.xn, n, c.hidden_size);          // [n, hidden]
    auto q = scratch_.view(scratch_.q, n, c.q_dim());                // [n, q_dim]
    auto k = scratch_.view(scratch_.k, n, c.kv_dim());               // [n, kv_dim]
    auto v = scratch_.view(scratch_.v, n, c.kv_dim());               // [n, kv_dim]
    auto attn = scratch_.view(scratch_.attn, n, c.q_dim());          // [n, q_dim]
    auto proj = scratch_.view(scratch_.proj, n, c.hidden_size);      // [n, hidden]

    // Linear-input hook: hands each sample's rows of `rows` ([n, width]) to the observer.
    auto observe_input = [&](Site site, const float* rows, int64_t width) {
      if (!observer || !observer->wants(layer, site)) return;
      for (std::size_t s = first; s < last; ++s)
        observer->observe(layer, site, {rows + (spans[s].offset - r0) * width, spans[s].length, 1, width, width});
    };

    // --- attention block ---
    rms_norm_into(x, w.input_norm, c.rms_norm_eps, xn);
    observe_input(Site::kAttnInput, xn.data(), c.hidden_size);
    {
      ProjectionInput in(xn, scratch_.bf16.data());
      linear(in, w.q, q);
      linear(in, w.k, k);
      linear(in, w.v, v);
    }
    for (std::size_t s = first; s < last; ++s) {
      const int64_t off = spans[s].offset - r0, len = spans[s].length;
      float* qs = q.data() + off * c.q_dim();
      float* ks = k.data() + off * c.kv_dim();
      float* vs = v.data() + off * c.kv_dim();
      const RopeTable& table = table_for(len);
      apply_rope(table, qs, len, c.num_attention_heads, c.head_dim, c.q_dim());
      apply_rope(table, ks, len, c.num_key_value_heads, c.head_dim, c.kv_dim());
      auto observe_qk = [&] {
        if (want_q) observer->observe(layer, Site::kQuery, {qs, len, c.num_attention_heads, c.head_dim, c.q_dim()});
        if (want_k) observer->observe(layer, Site::kKey, {ks, len, c.num_key_value_heads, c.head_dim, c.kv_dim()});
      };
      if (opt.observe_before_rotation) observe_qk();
      if (opt.qk_rotation) {
        rotate_heads(qs, len, c.num_attention_heads, c.head_dim, c.q_dim(), *opt.qk_rotation);
        rotate_heads(ks, len, c.num_key_value_heads, c.head_dim, c.kv_dim(), *opt.qk_rotation);
      }
      if (!opt.observe_before_rotation) observe_qk();
      if (want_v) observer->observe(layer, Site::kValue, {vs, len, c.num_key_value_heads, c.head_dim, c.kv_dim()});
      if (ActivationQuantizer* fq = opt.quantizer) {
        if (fq->quantizes(layer, Site::kQuery)) fq->apply(layer, Site::kQuery, qs, len, c.num_attention_heads, c.head_dim, c.q_dim());
        if (fq->quantizes(layer, Site::kKey)) fq->apply(layer, Site::kKey, ks, len, c.num_key_value_heads, c.head_dim, c.kv_dim());
        if (fq->quantizes(layer, Site::kValue)) fq->apply(layer, Site::kValue, vs, len, c.num_key_value_heads, c.head_dim, c.kv_dim());
      }
    }
    std::vector<SampleSpan> chunk_spans;  // the chunk's samples, as rows of q/k/v/attn
    for (std::size_t s = first; s < last; ++s) chunk_spans.push_back({spans[s].offset - r0, spans[s].length});
    causal_attention(q.data(), k.data(), v.data(), attn.data(), chunk_spans, c, opt.attention_block, opt.attention_key_block);
    observe_input(Site::kAttnOutput, attn.data(), c.q_dim());
    {
      ProjectionInput in(attn, scratch_.bf16.data());
      linear(in, w.o, proj);
    }
    add_into(x, proj);

    // --- MLP block (skipped for the last layer during calibration) ---
    if (w.has_mlp) {
      auto gate = scratch_.view(scratch_.gate, n, c.intermediate_size);  // [n, intermediate]
      auto up = scratch_.view(scratch_.up, n, c.intermediate_size);      // [n, intermediate]
      rms_norm_into(x, w.post_norm, c.rms_norm_eps, xn);
      observe_input(Site::kMlpInput, xn.data(), c.hidden_size);
      {
        ProjectionInput in(xn, scratch_.bf16.data());
        linear(in, w.gate, gate);
        linear(in, w.up, up);
      }
      swiglu_into(gate, up);
      observe_input(Site::kMlpHidden, gate.data(), c.intermediate_size);
      ProjectionInput in(gate, scratch_.bf16.data());
      linear(in, w.down, proj);
      add_into(x, proj);
    }
    // One finiteness check per chunk: a NaN/Inf anywhere in the layer reaches its output.
    check_finite(x, layer, w.has_mlp ? "the layer output (attention + MLP)" : "the attention output");
    first = last;
  }
}

LmHead::LmHead(const Checkpoint& ckpt, const LlamaConfig& c) : eps_(c.rms_norm_eps) {
  norm_ = Eigen::Map<Vector>(read_checked(ckpt, "model.norm.weight", {c.hidden_size}).data(), c.hidden_size);
  // Tied embeddings: lm_head reuses embed_tokens.weight.
  const std::string head = c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  std::vector<float> wv = read_checked(ckpt, head, {c.vocab_size, c.hidden_size});
  head_.w = Eigen::Map<RowMatrix>(wv.data(), c.vocab_size, c.hidden_size);  // [vocab, hidden]
}

RowMatrix LmHead::logits(const Eigen::Ref<const RowMatrix>& hidden) const {
  RowMatrix xn, out;
  rms_norm(hidden, norm_, eps_, &xn);  // [tokens, hidden]
  linear(xn, head_, &out);             // [tokens, vocab]
  return out;
}

RowMatrix LlamaModel::logits(const RowMatrix& hidden) const { return LmHead(ckpt_, cfg_).logits(hidden); }

RowMatrix LlamaModel::forward(const std::vector<int32_t>& ids, ActivationObserver* observer,
                              const ForwardOptions& options,
                              const std::function<void(int64_t, LayerWeights&)>& edit_weights) const {
  std::vector<SampleSpan> spans;
  RowMatrix hidden = embed({ids}, &spans);  // [seq, hidden]
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    LayerWeights w = load_layer_weights(ckpt_, cfg_, l, /*with_mlp=*/true);
    if (edit_weights) edit_weights(l, w);
    run_layer(w, l, spans, hidden, observer, options);
  }
  return logits(hidden);
}

}  // namespace ctcal
