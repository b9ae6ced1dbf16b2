#pragma once
// The CUDA backend of Decoder::run_layers() (model/layer_backend.h): the same loop, hooks and
// observation points as the CPU path, with the layers computed on one GPU. Built with
// -DCTCAL_CUDA=ON; without it every entry point says so (UsageError) and nothing else changes.
//
// What runs where (lib/src/model/cuda/):
//   host thread "loader": mmap -> bf16 LayerWeights -> a ring of small pinned pieces -> async H2D
//     copies into one of 2 device weight slots, on its own stream: layer l+1 is read and copied
//     while layer l computes, and the GPU never holds more than two layers of weights;
//   GPU, compute stream: RMSNorm, cuBLAS bf16 GEMMs (fp32 accumulation, fp32 outputs), RoPE,
//     fused flash attention (bf16 tensor cores, online softmax in registers, sinks; a cuBLAS-
//     blocked attention for head_dims the kernel does not take), gated MLP or MoE experts
//     (router fp32 on the GPU, routing on the host with the CPU's code, one GEMM per expert),
//     residual adds; observers' per-sample per-head min/max reduced on the device.
//   GPU, compute stream: q, k and v as one GEMM over their concatenated weights where nothing
//     needs them dense (no q/k norms, no R3, no biases); then RoPE, the q/k/v range observers and
//     attention's bf16 operands in one pass per sample.
// A/B environment variables, for benchmarks: CTCAL_CUDA_ATTENTION=blocked, CTCAL_CUDA_FUSED_GEMMS=0,
// CTCAL_CUDA_CHUNK_TOKENS=N (rows per chunk; ForwardOptions::gpu_chunk_tokens otherwise).
// Hidden states of every sample stay on the device when they fit (a host thread "upload" sends
// them chunk by chunk beside layer 0's kernels), else they go chunk by chunk every layer. Given
// token ids (ForwardOptions::token_ids), the host embeds them while the loader reads layers 0-1.
#include <memory>
#include <string>
#include <vector>

#include "ctcal/model/decoder.h"
#include "ctcal/model/layer_backend.h"

namespace ctcal {

// True when this binary was built with -DCTCAL_CUDA=ON.
bool cuda_backend_built();

// "NVIDIA H200 (cuda:0), 139.8 GiB, compute capability 9.0"; throws UsageError when the binary
// has no CUDA backend, no driver or GPU is present, or the ordinal is out of range.
std::string cuda_device_description(int index);

// Creates the device's CUDA context (~0.1 s the first time in a process): a caller may do it early,
// on another thread, while the host does other work. Throws as cuda_device_description.
void cuda_open_device(int index);

// The GPU of a host's `local_rank`-th process: local_rank modulo the number of GPUs (0 without
// any; cuda_device_description then says why).
int cuda_device_for_local_rank(int local_rank);

// Throws InputError (exit 4) naming what the CUDA backend does not run for this model (attention
// sinks without the fused attention kernel; see docs/cuda.md), and UsageError (exit 2) for
// an A/B variable set to anything but its values, so that a run fails before any work. Makes no
// CUDA call.
void check_cuda_supports(const ModelConfig& cfg, const ForwardOptions& options);

// The backend of Decoder::run_layers() on options.device (model/layer_backend.h): checks what it
// runs (check_cuda_supports) and opens the device first. hidden [total_tokens, hidden] is updated in
// place; the loop's hooks run on the calling thread in layer order, except loop.edit_weights,
// which runs on the loader thread (it must not touch shared state).
std::unique_ptr<LayerBackend> make_cuda_layers(const Decoder& model, const std::vector<SampleSpan>& spans,
                                               const LayerLoop& loop, const ForwardOptions& options);

}  // namespace ctcal
