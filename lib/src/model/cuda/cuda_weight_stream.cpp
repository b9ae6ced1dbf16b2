#include "cuda_weight_stream.h"

#include <chrono>
#include <cstring>

namespace ctcal::cuda {

namespace {

constexpr std::size_t kAlign = 256;  // cuBLAS and vector loads like 256-byte aligned operands

std::size_t align_up(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// An upper bound of one dense layer's packed bytes: bf16 projections, fp32 biases and norms.
std::size_t layer_bytes_bound(const ModelConfig& c) {
  const auto h = static_cast<std::size_t>(c.hidden_size), q = static_cast<std::size_t>(c.q_dim()),
             kv = static_cast<std::size_t>(c.kv_dim()), f = static_cast<std::size_t>(c.intermediate_size),
             d = static_cast<std::size_t>(c.head_dim);
  const std::size_t bf16 = 2 * (h * (q + 2 * kv) + q * h + 3 * h * f);
  const std::size_t f32 = 4 * ((q + 2 * kv) + h + 2 * f + h + 5 * h + 2 * d);
  return bf16 + f32 + 24 * kAlign;
}

}  // namespace

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
  auto vec = [&](const Vector& v) { return static_cast<const float*>(put(v.data(), 4 * static_cast<std::size_t>(v.size()))); };
  auto lin = [&](const Linear& l) {
    DeviceLinear d;
    const std::span<const uint16_t> rows = l.bf16_rows();  // [out, in]
    d.w = static_cast<const uint16_t*>(put(rows.data(), 2 * rows.size()));
    d.b = vec(l.b);
    return d;
  };
  DeviceLayer& L = *out;
  L.input_norm = vec(w.input_norm);
  L.q = lin(w.q);
  L.k = lin(w.k);
  L.v = lin(w.v);
  L.o = lin(w.o);
  L.q_norm = vec(w.q_norm);
  L.k_norm = vec(w.k_norm);
  L.attn_out_norm = vec(w.attn_out_norm);
  L.has_mlp = w.has_mlp;
  L.mlp_norm = w.has_mlp ? vec(w.mlp_norm) : nullptr;
  L.gate = w.has_mlp ? lin(w.gate) : DeviceLinear{};
  L.up = w.has_mlp ? lin(w.up) : DeviceLinear{};
  L.down = w.has_mlp ? lin(w.down) : DeviceLinear{};
  L.mlp_out_norm = w.has_mlp ? vec(w.mlp_out_norm) : nullptr;
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
