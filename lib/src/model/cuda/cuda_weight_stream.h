#pragma once
// Streams the layers' weights to the GPU: a loader thread reads layer l+1 from the checkpoint
// (mmap -> bf16 rows, or fp32 -> the loop's edit -> bf16 rows) and, once one of the two device
// slots is free, copies it there on its own stream through a small pinned ring (StagedUpload),
// while the compute stream runs layer l. Two device slots are all the GPU ever holds of the
// weights; a slot is refilled only after the kernels of the layer that used it have run.
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "ctcal/model/decoder.h"
#include "cuda_hybrid.h"
#include "cuda_support.h"
#include "staged_upload.h"

namespace ctcal::cuda {

struct DeviceLinear {
  const uint16_t* w = nullptr;  // [out, in] bf16, row-major
  const float* b = nullptr;     // [out], null without a bias
};

// A MoE layer's router and experts in a device slot (from LayerWeights::experts, whatever the
// checkpoint's layout: per-expert tensors, fused 3-D experts, gpt-oss's interleaved or MXFP4
// experts). Expert e's matrix sits a fixed stride after expert 0's, each 256-byte aligned.
struct DeviceExperts {
  const float* router = nullptr;     // [num_experts, hidden] fp32: routing decisions as the CPU's fp32 router
  const float* router_b = nullptr;   // [num_experts] (gpt-oss), else null
  const uint16_t* gate = nullptr;    // [num_experts] x [moe_intermediate, hidden] bf16, expert e at gate + e * gate_up_stride
  const uint16_t* up = nullptr;      // [num_experts] x [moe_intermediate, hidden] bf16, expert e at up + e * gate_up_stride
  const uint16_t* down = nullptr;    // [num_experts] x [hidden, moe_intermediate] bf16, expert e at down + e * down_stride
  const float* gate_b = nullptr;     // [num_experts, moe_intermediate] (gpt-oss), else null
  const float* up_b = nullptr;       // [num_experts, moe_intermediate] (gpt-oss), else null
  const float* down_b = nullptr;     // [num_experts, hidden] (gpt-oss), else null
  int64_t gate_up_stride = 0;        // elements from one expert's gate (or up) matrix to the next's
  int64_t down_stride = 0;           // elements from one expert's down matrix to the next's
  // [1, hidden] fp32 shared_expert_gate (Qwen3-Next, Qwen3.5-MoE: the shared expert's output times
  // sigmoid(x . g)), else null; the shared expert itself is DeviceLayer::gate/up/down.
  const float* shared_gate = nullptr;
  // [num_experts] e_score_correction_bias (MoeKind::kSigmoidGrouped), on the HOST: the routing runs
  // there (route_logits); empty without one.
  Vector correction_bias;
};

// An upper bound of the packed bytes of any layer of the model (the size of a weight slot): the
// attention, plus the larger of a dense MLP and a MoE MLP (router and every expert) where the
// model has such layers.
std::size_t layer_bytes_bound(const ModelConfig& c);

// One layer's weights in a device slot; null pointers for what the layer does not have.
struct DeviceLayer {
  const float* input_norm = nullptr;     // [hidden]
  DeviceLinear q, k, v, o;               // q: [q_dim, hidden], k/v: [kv_dim, hidden], o: [hidden, q_dim]
  const float* q_norm = nullptr;         // [head_dim]
  const float* k_norm = nullptr;         // [head_dim]
  const float* sinks = nullptr;          // [heads] attention sink logits (gpt-oss)
  const float* attn_out_norm = nullptr;  // [hidden]
  const float* mlp_norm = nullptr;       // [hidden]
  // gate/up: [intermediate, hidden], down: [hidden, intermediate]: the dense MLP, or on a MoE layer
  // the shared expert (FamilySpec::moe_shared_expert; width shared_expert_intermediate_size), else null
  DeviceLinear gate, up, down;
  DeviceExperts experts;                 // MoE layers (ModelConfig::is_moe)
  const float* mlp_out_norm = nullptr;   // [hidden]
  DeviceMixer mixer;                     // linear-attention and Mamba2 layers' mixer (cuda_hybrid.h)
  bool has_mlp = false;
};

class WeightStream {
 public:
  // Starts the loader at layer 0. `device`: the CUDA ordinal the loader thread binds to.
  WeightStream(const Decoder& model, const LayerLoop& loop, int device);
  ~WeightStream();  // stops the loader, waits for it and for copies in flight
  WeightStream(const WeightStream&) = delete;
  WeightStream& operator=(const WeightStream&) = delete;

  // Blocks until layer l's copy has been issued and makes `compute` wait for it; rethrows the
  // loader's error (a bad tensor) on the calling thread.
  const DeviceLayer& acquire(int64_t l, cudaStream_t compute);
  // Called once every kernel of layer l is on `compute`: its slot is refilled after they ran.
  void release(int64_t l, cudaStream_t compute);

  std::size_t slot_bytes() const { return slot_bytes_; }
  // Seconds the loader spent reading and copying, and waiting for a free slot (for the bench).
  double load_seconds() const { return load_seconds_; }
  double wait_seconds() const { return wait_seconds_; }
  // Layer l's host-to-device copy on the copy stream: [start, end] events (after the run).
  cudaEvent_t copy_start(int64_t l) const { return copy_events_[static_cast<std::size_t>(l)].first->get(); }
  cudaEvent_t copy_end(int64_t l) const { return copy_events_[static_cast<std::size_t>(l)].second->get(); }

 private:
  void run_loader();
  // Copies layer `w` into device slot `slot` through `up`; fills *out with its tensors' places.
  std::size_t upload(const LayerWeights& w, int slot, StagedUpload& up, DeviceLayer* out);

  const Decoder& model_;
  const LayerLoop& loop_;
  int device_;
  std::size_t slot_bytes_ = 0;
  DeviceBuffer<unsigned char> dev_[2];
  DeviceLayer layers_[2];
  Stream copy_;
  Event copied_[2], computed_[2];

  std::mutex mu_;
  std::condition_variable cv_;
  int64_t issued_ = 0;    // layers whose copy is issued
  int64_t released_ = 0;  // layers whose kernels are all launched
  bool stop_ = false;
  std::exception_ptr error_;
  double load_seconds_ = 0, wait_seconds_ = 0;
  std::vector<std::pair<std::unique_ptr<Event>, std::unique_ptr<Event>>> copy_events_;  // [layers]
  std::thread loader_;
};

}  // namespace ctcal::cuda
