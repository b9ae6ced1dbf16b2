#include "cuda_weight_stream.h"

#include <algorithm>
#include <chrono>
#include <span>

#include "cuda_hybrid.h"

namespace ctcal::cuda {

namespace {

constexpr std::size_t kAlign = 256;  // cuBLAS and vector loads like 256-byte aligned operands

std::size_t align_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// l's weights [out, in] as bf16 bits. fp32 weights, where the loader kept them (after
// loop.edit_weights: R2, FP8 fake quantization; gpt-oss's de-interleaved experts), are the current
// ones and are rounded to nearest even into `scratch` (the expert Linears of a reused LayerWeights
// may still hold an earlier layer's rows); otherwise the bf16 rows the loader read.
std::span<const uint16_t> bf16_rows_of(const Linear& l, int64_t out, int64_t in, std::vector<uint16_t>* scratch) {
  const auto n = static_cast<std::size_t>(out * in);
  if (l.w.size() > 0) {
    CTCAL_ASSERT(l.w.rows() == out && l.w.cols() == in, "an expert's fp32 weights have the wrong shape");
    scratch->resize(n);
    round_weights_to_bf16(l.w, scratch->data());
    return {scratch->data(), n};
  }
  const std::span<const uint16_t> rows = l.bf16_rows();  // [out, in]
  CTCAL_ASSERT(rows.size() == n, "an expert has neither fp32 weights nor bf16 rows of its shape");
  return rows;
}

}  // namespace

std::size_t layer_bytes_bound(const ModelConfig& c) {
  const auto h = static_cast<std::size_t>(c.hidden_size), q = static_cast<std::size_t>(c.q_dim()),
             kv = static_cast<std::size_t>(c.kv_dim()), f = static_cast<std::size_t>(c.intermediate_size),
             heads = static_cast<std::size_t>(c.num_attention_heads);
  // Attention: bf16 q/k/v/o, fp32 biases, norms (input, q/k: [head_dim] each, or [q_dim] / [kv_dim]
  // over the whole projection, attention output, the MLP's two) and sinks.
  const std::size_t attention = 2 * (h * (q + 2 * kv) + q * h) + 4 * ((q + 2 * kv) + h + 4 * h + (q + kv) + heads);
  bool any_dense = false, any_moe = false;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) (c.is_moe(l) ? any_moe : any_dense) = true;
  // Dense MLP: bf16 gate/up/down, fp32 biases.
  const std::size_t dense = any_dense ? 2 * 3 * h * f + 4 * (2 * f + h) : 0;
  std::size_t moe = 0;
  if (any_moe) {
    // Router fp32 [E, hidden] + [E]; each expert's bf16 gate/up [f, hidden] and down [hidden, f] at
    // an aligned stride; fp32 biases [E, f] x 2 and [E, hidden].
    const auto e = static_cast<std::size_t>(c.num_experts), fm = static_cast<std::size_t>(c.moe_intermediate_size);
    moe = 4 * (e * h + e) + e * (2 * align_up(2 * fm * h) + align_up(2 * h * fm)) + 4 * e * (2 * fm + h);
    // The shared expert: bf16 gate/up/down of width shared_expert_intermediate_size, its fp32 gate [1, hidden].
    if (c.family && c.family->moe_shared_expert)
      moe += 2 * 3 * h * static_cast<std::size_t>(c.shared_expert_intermediate_size) + 4 * h;
  }
  // 32: more than the puts of a layer, each aligned up; hybrid_extra_bytes: a DeltaNet / Mamba2 mixer's
  return attention + hybrid_extra_bytes(c) + std::max(dense, moe) + 32 * kAlign;
}

WeightStream::WeightStream(const Decoder& model, const LayerLoop& loop, int device)
    : model_(model), loop_(loop), device_(device), slot_bytes_(layer_bytes_bound(model.config())) {
  for (auto& slot : dev_) slot.resize(slot_bytes_);
  for (int64_t l = 0; l < model.config().num_hidden_layers; ++l)
    copy_events_.emplace_back(std::make_unique<Event>(), std::make_unique<Event>());
  loader_ = std::thread([this] { run_loader(); });
}

WeightStream::~WeightStream() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  loader_.join();
  cudaStreamSynchronize(copy_.get());  // no copy may outlive the buffers
}

std::size_t WeightStream::upload(const LayerWeights& w, int slot, StagedUpload& up, DeviceLayer* out) {
  unsigned char* dev = dev_[slot].get();
  std::size_t off = 0;
  auto put = [&](const void* src, std::size_t bytes) -> const void* {
    if (bytes == 0) return nullptr;
    CTCAL_ASSERT(off + bytes <= slot_bytes_, "a layer's weights exceed the slot bound");
    up.copy(dev + off, src, bytes);
    const void* at = dev + off;
    off = align_up(off + bytes);
    return at;
  };
  // Every expert of a MoE layer in one region, expert e at e * stride elements: [E] x [rows, cols] bf16.
  std::vector<uint16_t> scratch;  // an fp32 expert's bf16 rows
  auto experts = [&](const std::vector<Linear>& ls, int64_t rows, int64_t cols, int64_t* stride) -> const uint16_t* {
    const std::size_t each = align_up(2 * static_cast<std::size_t>(rows * cols));
    CTCAL_ASSERT(off + each * ls.size() <= slot_bytes_, "a layer's weights exceed the slot bound");
    for (std::size_t e = 0; e < ls.size(); ++e) {
      const std::span<const uint16_t> bits = bf16_rows_of(ls[e], rows, cols, &scratch);
      up.copy(dev + off + e * each, bits.data(), 2 * bits.size());
    }
    const auto* at = reinterpret_cast<const uint16_t*>(dev + off);
    off = align_up(off + each * ls.size());
    *stride = static_cast<int64_t>(each / 2);
    return at;
  };
  // Their biases, [E, rows] fp32 dense; null without biases (every expert has one, or none).
  auto expert_biases = [&](const std::vector<Linear>& ls, int64_t rows) -> const float* {
    if (ls.front().b.size() == 0) return nullptr;
    const std::size_t each = 4 * static_cast<std::size_t>(rows);
    CTCAL_ASSERT(off + each * ls.size() <= slot_bytes_, "a layer's weights exceed the slot bound");
    for (std::size_t e = 0; e < ls.size(); ++e) {
      CTCAL_ASSERT(ls[e].b.size() == rows, "an expert's bias has the wrong size");
      up.copy(dev + off + e * each, ls[e].b.data(), each);
    }
    const auto* at = reinterpret_cast<const float*>(dev + off);
    off = align_up(off + each * ls.size());
    return at;
  };
  auto vec = [&](const Vector& v) { return static_cast<const float*>(put(v.data(), 4 * static_cast<std::size_t>(v.size()))); };
  auto lin = [&](const Linear& l) {
    DeviceLinear d;
    const std::span<const uint16_t> rows = l.bf16_rows();  // [out, in]
    d.w = static_cast<const uint16_t*>(put(rows.data(), 2 * rows.size()));
    d.b = vec(l.b);
    return d;
  };
  // Llama 4: q_proj / k_proj rows of each head from interleaved pairs (2i, 2i + 1) to [even dims |
  // odd dims], as vLLM 0.34's permute_qk_weight_for_rotary permutes them and the CPU's
  // deinterleave_heads permutes the projection's output (the same values: each output is one row's
  // dot product): row h d + i <- h d + 2i, row h d + d/2 + i <- h d + 2i + 1.
  const ModelConfig& cfg = model_.config();
  std::vector<uint16_t> perm_rows;  // [out, in] the permuted bf16 rows (staged before the next use)
  std::vector<float> perm_bias;     // [out]
  auto lin_heads = [&](const Linear& l, int64_t heads) {
    if (!cfg.family->llama4_attention) return lin(l);
    const int64_t d = cfg.head_dim;
    const std::span<const uint16_t> rows = l.bf16_rows();  // [heads * d, in]
    const auto in = static_cast<int64_t>(rows.size()) / (heads * d);
    CTCAL_ASSERT(in * heads * d == static_cast<int64_t>(rows.size()) && d % 2 == 0,
                 "q/k_proj rows are not [heads * head_dim, in]");
    perm_rows.resize(rows.size());
    perm_bias.resize(static_cast<std::size_t>(l.b.size()));
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < d; ++i) {
        const int64_t src = h * d + (i < d / 2 ? 2 * i : 2 * (i - d / 2) + 1), dst = h * d + i;
        std::copy_n(rows.begin() + src * in, in, perm_rows.begin() + dst * in);
        if (l.b.size() > 0) perm_bias[static_cast<std::size_t>(dst)] = l.b[src];
      }
    DeviceLinear dl;
    dl.w = static_cast<const uint16_t*>(put(perm_rows.data(), 2 * perm_rows.size()));
    dl.b = static_cast<const float*>(put(perm_bias.data(), 4 * perm_bias.size()));
    return dl;
  };
  DeviceLayer& L = *out;
  L.input_norm = vec(w.input_norm);
  // q, k, v back to back (without biases nothing separates them; every size is a multiple of the
  // alignment for real shapes): CudaLayers runs them as one [q_dim + 2 kv_dim, hidden] GEMM where
  // it finds them so.
  L.q = lin_heads(w.q, cfg.num_attention_heads);
  L.k = lin_heads(w.k, cfg.num_key_value_heads);
  L.v = lin(w.v);
  L.o = lin(w.o);
  L.q_norm = vec(w.q_norm);
  L.k_norm = vec(w.k_norm);
  L.sinks = vec(w.sinks);
  L.attn_out_norm = vec(w.attn_out_norm);
  L.has_mlp = w.has_mlp;
  L.mlp_norm = w.has_mlp ? vec(w.mlp_norm) : nullptr;
  const bool moe = w.has_mlp && !w.experts.gate.empty();
  // The dense MLP, or a MoE layer's shared expert (the loader leaves gate/up/down empty otherwise).
  const bool mlp = w.has_mlp && (!moe || !w.down.bf16_rows().empty());
  L.gate = mlp ? lin(w.gate) : DeviceLinear{};
  L.up = mlp ? lin(w.up) : DeviceLinear{};
  L.down = mlp ? lin(w.down) : DeviceLinear{};
  L.experts = DeviceExperts{};
  if (moe) {
    const ExpertWeights& x = w.experts;
    const ModelConfig& c = model_.config();
    const int64_t h = c.hidden_size, f = c.moe_intermediate_size;
    CTCAL_ASSERT(x.router.w.rows() == c.num_experts && x.router.w.cols() == h, "the router is not fp32 [E, hidden]");
    CTCAL_ASSERT(x.gate.size() == static_cast<std::size_t>(c.num_experts) && x.up.size() == x.gate.size() &&
                 x.down.size() == x.gate.size(), "a MoE layer without num_experts experts");
    DeviceExperts& d = L.experts;
    d.router = static_cast<const float*>(put(x.router.w.data(), 4 * static_cast<std::size_t>(x.router.w.size())));
    d.router_b = vec(x.router.b);
    d.gate = experts(x.gate, f, h, &d.gate_up_stride);
    d.up = experts(x.up, f, h, &d.gate_up_stride);
    d.down = experts(x.down, h, f, &d.down_stride);
    d.gate_b = expert_biases(x.gate, f);
    d.up_b = expert_biases(x.up, f);
    d.down_b = expert_biases(x.down, h);
    if (x.shared_gate.w.size() > 0) {  // fp32 [1, hidden], as the router (a gating decision)
      CTCAL_ASSERT(x.shared_gate.w.rows() == 1 && x.shared_gate.w.cols() == h, "shared_expert_gate is not fp32 [1, hidden]");
      d.shared_gate = static_cast<const float*>(put(x.shared_gate.w.data(), 4 * static_cast<std::size_t>(h)));
    }
    d.correction_bias = x.correction_bias;  // a host copy: `w` is refilled with the next layer while this one runs
  }
  L.mlp_out_norm = w.has_mlp ? vec(w.mlp_out_norm) : nullptr;
  L.mixer = upload_mixer(w, model_.config(), put);  // a hybrid's DeltaNet or Mamba2 mixer, if the layer has one
  up.flush();
  return off;
}

void WeightStream::run_loader() {
  using Clock = std::chrono::steady_clock;
  try {
    check(cudaSetDevice(device_), "cudaSetDevice (loader thread)");
    const ModelConfig& c = model_.config();
    const int64_t n_layers = c.num_hidden_layers;
    StagedUpload up(copy_.get());
    LayerWeights w;  // reused from layer to layer
    for (int64_t l = 0; l < n_layers; ++l) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stop_) return;
      }
      const auto t0 = Clock::now();
      const bool with_mlp = loop_.last_layer_mlp || l + 1 < n_layers;
      if (loop_.edit_weights) {  // R2: rotate in fp32/fp64, then round to bf16 rows
        reload_layer_weights(model_.checkpoint(), c, l, with_mlp, &w);
        loop_.edit_weights(l, w);
        to_bf16_rows(&w);
      } else {
        reload_layer_weights_bf16_rows(model_.checkpoint(), c, l, with_mlp, &w);
      }
      const int slot = static_cast<int>(l % 2);
      const auto t1 = Clock::now();
      {
        // The device slot is free once layer l - 2 (its last user) has released it.
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || released_ >= l - 1; });
        if (stop_) return;
      }
      const auto t2 = Clock::now();
      if (l >= 2) check(cudaStreamWaitEvent(copy_.get(), computed_[slot].get(), 0), "cudaStreamWaitEvent");
      check(cudaEventRecord(copy_start(l), copy_.get()), "cudaEventRecord");
      DeviceLayer layer;
      upload(w, slot, up, &layer);  // staged piece by piece, copied while the next piece fills
      check(cudaEventRecord(copy_end(l), copy_.get()), "cudaEventRecord");
      check(cudaEventRecord(copied_[slot].get(), copy_.get()), "cudaEventRecord");
      if (loop_.release_pages) release_layer_pages(model_.checkpoint(), c, l);
      {
        std::lock_guard<std::mutex> lock(mu_);
        layers_[slot] = layer;
        issued_ = l + 1;
        load_seconds_ += std::chrono::duration<double>(t1 - t0 + Clock::now() - t2).count();
        wait_seconds_ += std::chrono::duration<double>(t2 - t1).count();
      }
      cv_.notify_all();
    }
  } catch (...) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::current_exception();
    cv_.notify_all();
  }
}

const DeviceLayer& WeightStream::acquire(int64_t l, cudaStream_t compute) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return error_ || issued_ > l; });
  if (issued_ <= l) std::rethrow_exception(error_);
  const int slot = static_cast<int>(l % 2);
  check(cudaStreamWaitEvent(compute, copied_[slot].get(), 0), "cudaStreamWaitEvent");
  return layers_[slot];
}

void WeightStream::release(int64_t l, cudaStream_t compute) {
  check(cudaEventRecord(computed_[l % 2].get(), compute), "cudaEventRecord");
  {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = l + 1;
  }
  cv_.notify_all();
}

}  // namespace ctcal::cuda
