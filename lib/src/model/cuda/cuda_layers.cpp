// The CUDA backend's layer loop and layer (model/cuda_backend.h). The layer reads as the CPU's
// (model/layer.cpp) does, top to bottom, with each step a kernel or a cuBLAS call on one stream:
//
//   x += [attn_out_norm]( o_proj( attention( rope( [qk_norm]( q/k/v_proj( input_norm(x) ))))))
//   x += [mlp_out_norm]( down_proj( act(gate_proj(xn)) * up_proj(xn) )),  xn = mlp_norm(x)
//        (MoE layers: the router's top-k experts' MLPs, weighted: cuda_moe.h)
//
// Projections: bf16 inputs and weights, fp32 accumulation and outputs (cuBLAS). Norms, RoPE,
// activations and residuals: fp32. Observation points and their order are the CPU's.
#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>

#include <spdlog/spdlog.h>

#include "ctcal/model/cuda_backend.h"
#include "ctcal/model/rope.h"
#include "cuda_attention.h"
#include "cuda_hybrid.h"
#include "cuda_kernels.h"
#include "cuda_moe.h"
#include "cuda_support.h"
#include "cuda_timers.h"
#include "cuda_weight_stream.h"
#include "flash_attention.h"
#include "hybrid_kernels.h"
#include "moe_kernels.h"
#include "staged_upload.h"

namespace ctcal {

namespace {

using cuda::check;
using cuda::copy_on_stream;
using cuda::copy_rows_on_stream;
using cuda::DeviceBuffer;
using cuda::EventTimer;
using cuda::PhaseTimers;

// An A/B switch from the environment (to compare two ways of computing the same thing): true
// when `name` is set to `value`; any other setting is refused, so that a typo does not quietly
// run the default.
bool env_switch(const char* name, const char* value) {
  const char* v = std::getenv(name);
  if (!v || !*v) return false;
  if (std::string(v) == value) return true;
  throw UsageError(fmt::format("{}={}: expected {} (or unset)", name, v, value));
}

// The fused attention kernel where it takes the head_dim (and it has the sinks), unless
// CTCAL_CUDA_ATTENTION=blocked asks for the cuBLAS-blocked one (to compare the two).
bool use_flash_attention(const ModelConfig& c) {
  const bool blocked = env_switch("CTCAL_CUDA_ATTENTION", "blocked");  // checked whatever the head_dim
  return cuda::flash_attention_supports(c.head_dim) && !blocked;
}

// q/k/v as one GEMM over their concatenated weights where the layer allows it, unless
// CTCAL_CUDA_FUSED_GEMMS=0 asks for one GEMM per projection (to compare the two).
bool use_fused_gemms() { return !env_switch("CTCAL_CUDA_FUSED_GEMMS", "0"); }

// What of a model the CUDA backend runs only through paths that have never run on a GPU, or null.
// The hybrids' mixers and gated attention (cuda_hybrid.h, 4d7eee7) and issue 29's attention and MoE
// variants (3e7bd95, 396d5fc) compile and have GPU tests (tests/gpu/), but stop 36 was lent no GPU
// machine to run them: until those tests pass on one, the models that need them are refused by
// name, and CTCAL_CUDA_UNVERIFIED=1 (set by scripts/gpu_remote.sh) runs them for the tests.
const char* unverified_cuda_path(const ModelConfig& c) {
  const FamilySpec& f = *c.family;
  if (f.hybrid_linear_attention) return "gated DeltaNet layers and gated attention";
  if (f.hybrid_mamba) return "Mamba2 layers";
  if (f.llama4_attention) return "Llama 4's attention (permuted q/k heads, L2 q/k norm, chunked attention, NoPE temperature) and MoE";
  if (std::find(c.layer_nope.begin(), c.layer_nope.end(), true) != c.layer_nope.end()) return "layers without RoPE";
  if (f.qk_norm_whole) return "q/k norms over the whole projection";
  if (f.norms.input.empty() || f.norms.mlp.empty()) return "blocks without an input norm";
  if (f.moe_kind == MoeKind::kSigmoidGrouped) return "sigmoid routing with a correction bias";
  if (f.moe_shared_expert) return "a shared-expert MoE";
  if (c.qk_norm != f.qk_norm) return "q/k norms switched on by config.json";
  return nullptr;
}

// Rows per chunk (the GEMMs' row count): `fallback` unless CTCAL_CUDA_CHUNK_TOKENS sets another
// positive count (to compare chunk sizes); anything else is refused.
int64_t chunk_tokens(int64_t fallback) {
  const char* v = std::getenv("CTCAL_CUDA_CHUNK_TOKENS");
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  if (*end != '\0' || n <= 0 || n > (1LL << 30))
    throw UsageError(
        fmt::format("CTCAL_CUDA_CHUNK_TOKENS={}: expected a number of tokens from 1 to {} (or unset)", v, 1LL << 30));
  return n;
}

// Seconds the host thread spends in each part of the layer loop.
struct HostTimes {
  double prologue = 0, acquire = 0, enqueue = 0, wait = 0, epilogue = 0, download = 0;
  double to_layer0 = 0;  // from the start of run() to layer 0's first kernel being queued
};

class CudaLayers final : public LayerBackend {
 public:
  CudaLayers(const Decoder& model, const std::vector<SampleSpan>& spans, const LayerLoop& loop,
             const ForwardOptions& opt);
  ~CudaLayers() override {
    // The threads that write into our buffers stop first, then cuBLAS goes.
    upload_.reset();
    weights_.reset();
    cublasDestroy(blas_);
  }
  CudaLayers(const CudaLayers&) = delete;
  CudaLayers& operator=(const CudaLayers&) = delete;
  void begin(RowMatrix& hidden) override;
  void load(int64_t layer) override;
  void run(int64_t layer, ActivationObserver* obs) override;
  void release(int64_t layer, ActivationObserver* obs) override;
  void end(RowMatrix& hidden) override;

 private:
  using Clock = std::chrono::steady_clock;
  // Adds the host time since the last lap to *into (HostTimes).
  void lap(double* into) {
    const auto now = Clock::now();
    *into += std::chrono::duration<double>(now - mark_).count();
    mark_ = now;
  }
  void run_chunk(const cuda::DeviceLayer& w, int64_t layer, const SampleChunk& ch, float* x,
                 ActivationObserver* obs, RopeTableCache& tables);
  // The attention block of run_chunk: x [n, hidden] += o_proj(attention(...)).
  void run_attention(const cuda::DeviceLayer& w, int64_t layer, const SampleChunk& ch, float* x,
                     ActivationObserver* obs, RopeTableCache& tables);
  // A hybrid's token mixer instead (cuda_hybrid.h): x [n, hidden] += [residual_multiplier] mixer(input_norm(x)).
  void run_mixer(const cuda::DeviceLayer& w, int64_t layer, const SampleChunk& ch, float* x, ActivationObserver* obs);
  void linear(const uint16_t* x, int64_t n, int64_t in, const cuda::DeviceLinear& l, int64_t out, float* y);
  // The same with bf16 outputs (rounded from the fp32 accumulators); l must have no bias.
  void linear_bf16(const uint16_t* x, int64_t n, int64_t in, const cuda::DeviceLinear& l, int64_t out, uint16_t* y);
  // The residual add of a block's output projection: x [n, hidden] += [out_norm](in . W^T + b).
  // Without a norm or bias the add is the GEMM's epilogue (beta = 1: the fp32 accumulator plus x,
  // rounded once, as add_into after linear gives) and no [n, hidden] output is written and read.
  void add_projection(const uint16_t* in, int64_t n, int64_t width, const cuda::DeviceLinear& l,
                      const float* out_norm, float* x);
  // A block's pre-norm of x [n, hidden]: xn [n, hidden] fp32 (null: nothing reads it) and xb its bf16
  // copy, the next GEMMs' input. Without a norm (w null: OLMo 3's blocks have post-norms only) both
  // are x itself, as the CPU's pre_norm_into.
  void pre_norm(const float* x, const float* w, int64_t n, float* xn, uint16_t* xb);
  // The gated MLP's first half on xb [n, hidden] (bf16, the normed input): xb [n, width] <-
  // bf16(act(gate(xb)) * up(xb)), down_proj's input, observed and fake-quantized there
  // (Site::kDownInput) as the CPU's dense_mlp. The dense MLP (width intermediate_size) and a MoE
  // layer's shared expert (width shared_expert_intermediate_size).
  void gated_mlp(const cuda::DeviceLayer& w, int64_t layer, const SampleChunk& ch, int64_t width,
                 ActivationObserver* obs);
  void observe(ActivationObserver* obs, int64_t layer, Site site, const float* x, int64_t ld, int64_t heads,
               int64_t head_dim, const SampleChunk& ch);
  // The slot of `site` in red_min_/red_max_ (taken on first use in a layer): where the ranges of
  // chunk ch's samples go, [samples, max_heads_] each.
  std::pair<float*, float*> reduced_slot(Site site, int64_t heads, const SampleChunk& ch);
  void deliver_reduced(ActivationObserver* obs, int64_t layer);
  // Whether rope_qkv_one_pass computes this layer's RoPE, bf16 copies and q/k/v observations: q|k|v
  // came from one GEMM, RoPE covers whole heads, the q/k/v observers need only ranges and eval
  // fake-quantizes none of q/k/v (those read fp32 values).
  bool rope_qkv_in_one_pass(bool fused_qkv, int64_t layer, ActivationObserver* obs, const SampleChunk& ch,
                            RopeTableCache& tables);
  // qkv [n, ld] (the fused GEMM's output) -> qb_, kb_, vb_ (RoPE applied) and the ranges of the
  // observed sites among key-before-RoPE, query, key and value: one kernel per sample.
  void rope_qkv_one_pass(int64_t layer, const float* qkv, int64_t ld, ActivationObserver* obs, const SampleChunk& ch,
                         RopeTableCache& tables);
  // The same step by step, for every layer: [q/k norms applied before] key-before-RoPE observed,
  // RoPE, [R3], q/k/v observed and fake-quantized, bf16 copies. q [n, ld_q], k/v [n, ld_kv].
  void rope_qkv_in_steps(int64_t layer, float* q, float* k, float* v, int64_t ld_q, int64_t ld_kv,
                         ActivationObserver* obs, const SampleChunk& ch, RopeTableCache& tables);
  // Copies a chunk's rows x [n, width] (row stride ld) into the pinned staging buffer, dense
  // [n, width], and waits: the host's view.
  float* download(const float* x, int64_t ld, int64_t width, const SampleChunk& ch);
  // eval's fake quantization of one site on the host (copied down, quantized, copied up);
  // returns whether it changed anything. x: [n, heads * head_dim] with row stride ld.
  bool host_quantize(int64_t layer, Site site, float* x, int64_t ld, int64_t heads, int64_t head_dim,
                     const SampleChunk& ch);
  void rotate(float* x, int64_t rows, int64_t d);  // x [rows, d] <- x . R3
  // Llama 4 between RoPE and the Q/K observers, as the CPU's layer.cpp: RoPE layers' weightless L2
  // norm per head (use_qk_norm), NoPE layers' query temperature (attn_temperature_tuning). q [n,
  // q_dim], k [n, kv_dim] dense.
  void llama4_after_rope(int64_t layer, float* q, float* k, const SampleChunk& ch);
  // Llama 4's chunked spans and query blocks, its temperature table and the L2 norm's unit weights.
  void llama4_setup(const ForwardOptions& opt);
  // The cos/sin table [len, half] of `layer` on the device (uploaded once per RoPE config and key).
  struct DeviceRope {
    const float* cos;
    const float* sin;
    int64_t half;
  };
  DeviceRope rope_table(int64_t layer, RopeTableCache& tables, int64_t len);

  const Decoder& model_;
  const ModelConfig& c_;
  const std::vector<SampleSpan>& spans_;
  const ForwardOptions& opt_;
  std::vector<SampleChunk> chunks_;
  cuda::Stream stream_;
  cublasHandle_t blas_ = nullptr;
  // The fused attention kernel where it takes the head_dim; cuBLAS-blocked attention otherwise (or
  // with CTCAL_CUDA_ATTENTION=blocked, to compare the two).
  bool flash_ = false;
  bool fuse_ = true;  // use_fused_gemms()
  DeviceBuffer<cuda::FlashItem> flash_items_;               // every chunk's query blocks
  std::vector<std::pair<std::size_t, int64_t>> flash_range_;  // [chunk] -> (first item, count)
  // Llama 4's RoPE layers attend within chunks (attention_chunk_size): chunked_spans_ [chunk] holds its
  // samples cut at the chunk boundaries, each piece a causal sequence of its own (as the CPU's
  // AttentionShape::chunk masks them), and flash_chunked_* their query blocks. Empty otherwise.
  std::vector<std::vector<SampleSpan>> chunked_spans_;
  DeviceBuffer<cuda::FlashItem> flash_chunked_items_;
  std::vector<std::pair<std::size_t, int64_t>> flash_chunked_range_;
  DeviceBuffer<float> temperature_;  // [longest sample] Llama 4's NoPE-layer query scale per position
  DeviceBuffer<float> ones_;         // [head_dim] 1.0f: the weight of Llama 4's weightless L2 q/k norm
  std::unique_ptr<cuda::BlockedAttention> attention_;
  std::unique_ptr<cuda::MoeMlp> moe_;                       // the MoE layers' MLP; null for a dense model
  std::unique_ptr<cuda::HybridMixers> hybrid_;              // DeltaNet / Mamba2 layers' mixers; null without
  // Gated attention (Qwen3.5, Qwen3-Next): qg_ [chunk, 2 q_dim] q_proj's [query | gate] per head,
  // out_gate_ [chunk, q_dim] the gate half.
  DeviceBuffer<float> qg_, out_gate_;
  bool resident_ = true;
  DeviceBuffer<float> hidden_;                              // [tokens, hidden], or [chunk, hidden] when not resident
  // One chunk's activations, fp32: xn_ [chunk, hidden], q_ [chunk, q_dim + 2 kv_dim] (q, or q|k|v
  // as one fused GEMM writes them), k_/v_ [chunk, kv_dim],
  // attn_ [chunk, q_dim], proj_ [chunk, hidden], gate_/up_ [chunk, intermediate], tmp_ [chunk, q_dim]
  // (R3 only).
  DeviceBuffer<float> xn_, q_, k_, v_, attn_, proj_, gate_, up_, tmp_;
  // bf16: xb_ [chunk, max(hidden, q_dim, intermediate)] (the next GEMM's input), qb_ [chunk, q_dim],
  // kb_/vb_ [chunk, kv_dim] (attention's operands).
  DeviceBuffer<uint16_t> xb_, qb_, kb_, vb_;
  DeviceBuffer<float> shared_logit_;                        // [chunk] x . shared_expert_gate^T (gated shared experts)
  DeviceBuffer<int64_t> offsets_, lengths_;                 // per sample, rows within its chunk
  DeviceBuffer<float> r3_;                                  // [head_dim, head_dim]
  DeviceBuffer<int> flag_;                                  // NaN/Inf raised in this layer
  // Observers' per-sample per-head ranges, reduced on the device: [site slot][sample][max heads].
  DeviceBuffer<float> red_min_, red_max_;
  DeviceBuffer<float> red_partial_;                         // the reductions' per-split partials
  std::vector<std::pair<Site, int64_t>> reduced_;           // (site, heads) per slot, this layer
  int64_t max_heads_ = 1;
  cuda::PinnedBuffer stage_;                                // values copied back to the host
  struct DeviceRopeTable {
    DeviceBuffer<float> cos, sin;  // [len, half] each
    int64_t half = 0;
  };
  std::map<std::pair<const RopeConfig*, int64_t>, DeviceRopeTable> rope_dev_;
  PhaseTimers phases_;
  // The run, begin() to end().
  const LayerLoop& loop_;
  RowMatrix* hidden_host_ = nullptr;                        // [tokens, hidden], the caller's
  HostTimes host_;                                          // where the host thread spends the run (CTCAL_CUDA_PROFILE)
  EventTimer compute_;                                      // each layer's kernels (CUDA events)
  Clock::time_point t0_, mark_;                             // the run's start; the last lap
  double embed_s_ = 0;                                      // host embedding of the token ids
  std::unique_ptr<RopeTableCache> tables_;                  // this layer's RoPE tables
  const cuda::DeviceLayer* w_ = nullptr;                    // this layer's weights, between load() and release()
  // Last, so that they stop first: the threads that read weights and send hidden states up.
  std::unique_ptr<cuda::WeightStream> weights_;
  std::unique_ptr<cuda::HiddenUpload> upload_;
};

CudaLayers::CudaLayers(const Decoder& model, const std::vector<SampleSpan>& spans, const LayerLoop& loop,
                       const ForwardOptions& opt)
    : model_(model), c_(model.config()), spans_(spans), opt_(opt), loop_(loop) {
  check(cublasCreate(&blas_), "cublasCreate");
  check(cublasSetStream(blas_, stream_.get()), "cublasSetStream");
  chunks_ = make_chunks(spans, chunk_tokens(opt.gpu_chunk_tokens));
  int64_t rows = 0, total = 0;
  for (const auto& ch : chunks_) rows = std::max(rows, ch.n), total += ch.n;
  // f: the widest gated MLP, the dense one or a MoE layer's shared expert.
  const int64_t h = c_.hidden_size, qd = c_.q_dim(), kvd = c_.kv_dim();
  const int64_t f = std::max(c_.intermediate_size, c_.family->moe_shared_expert ? c_.shared_expert_intermediate_size : 0);
  auto n = [](int64_t a, int64_t b) { return static_cast<std::size_t>(a * b); };
  xn_.resize(n(rows, h));
  q_.resize(n(rows, qd + 2 * kvd));
  k_.resize(n(rows, kvd));
  v_.resize(n(rows, kvd));
  attn_.resize(n(rows, qd));
  proj_.resize(n(rows, h));
  gate_.resize(n(rows, f));
  up_.resize(n(rows, f));
  if (opt.qk_rotation) tmp_.resize(n(rows, qd));
  xb_.resize(n(rows, std::max({h, qd, f})));
  qb_.resize(n(rows, qd));
  kb_.resize(n(rows, kvd));
  vb_.resize(n(rows, kvd));
  shared_logit_.resize(n(rows, 1));
  flag_.resize(1);
  max_heads_ = std::max<int64_t>(c_.num_attention_heads, 1);
  constexpr int kSites = 10;  // every Site but the experts' can be reduced in one layer
  red_min_.resize(static_cast<std::size_t>(kSites) * spans.size() * static_cast<std::size_t>(max_heads_));
  red_max_.resize(red_min_.size());
  std::size_t most_samples = 0;  // of one chunk
  for (const auto& ch : chunks_) most_samples = std::max(most_samples, ch.last - ch.first);
  // Four sites' partials at once: rope_qkv_one_pass (the others use the first quarter).
  red_partial_.resize(4 * 2 * most_samples * static_cast<std::size_t>(max_heads_) * cuda::kMinMaxSplits);
  // Rows of each sample within its chunk, for the range reductions.
  std::vector<int64_t> off, len;
  for (const auto& ch : chunks_)
    for (const auto& s : ch.spans) off.push_back(s.offset), len.push_back(s.length);
  offsets_.resize(off.size());
  lengths_.resize(len.size());
  cudaStream_t s = stream_.get();
  check(copy_on_stream(offsets_.get(), off.data(), off.size() * 8, cudaMemcpyHostToDevice, s), "copying to the GPU");
  check(copy_on_stream(lengths_.get(), len.data(), len.size() * 8, cudaMemcpyHostToDevice, s), "copying to the GPU");
  if (opt.qk_rotation) {
    const RowMatrix& r = *opt.qk_rotation;  // [d, d] row-major
    r3_.resize(static_cast<std::size_t>(r.size()));
    check(copy_on_stream(r3_.get(), r.data(), static_cast<std::size_t>(r.size()) * 4, cudaMemcpyHostToDevice, s),
          "copying to the GPU");
  }
  // The hybrids' buffers (DeltaNet / Mamba2 mixers, gated attention), before the free memory is read.
  for (int64_t l = 0; l < c_.num_hidden_layers && !hybrid_; ++l)
    if (c_.is_linear_attention(l) || c_.is_mamba(l))
      hybrid_ = std::make_unique<cuda::HybridMixers>(c_, rows, blas_, stream_.get());
  if (c_.family->attention_output_gate) {
    qg_.resize(n(rows, 2 * qd));
    out_gate_.resize(n(rows, qd));
  }
  // The MoE MLP's buffers (models with MoE layers), allocated before the free memory is read.
  for (int64_t l = 0; l < c_.num_hidden_layers && !moe_; ++l)
    if (c_.is_moe(l)) moe_ = std::make_unique<cuda::MoeMlp>(c_, rows, blas_, stream_.get());
  // Attention scores: up to 1/16 of the device's free memory (or of the budget), at most 4 GiB.
  std::size_t free_b = 0, total_b = 0;
  check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  if (opt.gpu_memory_bytes > 0) free_b = std::min(free_b, static_cast<std::size_t>(opt.gpu_memory_bytes));
  flash_ = use_flash_attention(c_);
  fuse_ = use_fused_gemms();
  if (flash_) {
    std::vector<cuda::FlashItem> items;
    for (const auto& ch : chunks_) {
      const std::vector<cuda::FlashItem> mine = cuda::flash_items(ch.spans);
      flash_range_.emplace_back(items.size(), static_cast<int64_t>(mine.size()));
      items.insert(items.end(), mine.begin(), mine.end());
    }
    flash_items_.resize(items.size());
    check(copy_on_stream(flash_items_.get(), items.data(), items.size() * sizeof(cuda::FlashItem),
                         cudaMemcpyHostToDevice, s), "copying to the GPU");
  }
  if (c_.family->llama4_attention) llama4_setup(opt);
  attention_ = std::make_unique<cuda::BlockedAttention>(blas_, std::min<std::size_t>(free_b / 16, std::size_t{4} << 30));
  // Hidden states of every sample stay on the device when they fit beside two weight slots and
  // the attention scores; otherwise each chunk goes up and down per layer.
  const std::size_t hidden_bytes = static_cast<std::size_t>(total) * static_cast<std::size_t>(h) * 4;
  const std::size_t reserve = 2 * cuda::layer_bytes_bound(c_) +
                              std::min<std::size_t>(free_b / 16, std::size_t{4} << 30) + (std::size_t{1} << 30);
  resident_ = hidden_bytes + reserve < free_b;
  hidden_.resize(resident_ ? static_cast<std::size_t>(total * h) : static_cast<std::size_t>(rows * h));
  if (!resident_)
    spdlog::info("cuda: the hidden states ({:.1f} GiB) do not fit beside the layer's working set; they go "
                 "chunk by chunk", static_cast<double>(hidden_bytes) / (1 << 30));
}

void CudaLayers::linear(const uint16_t* x, int64_t n, int64_t in, const cuda::DeviceLinear& l, int64_t out, float* y) {
  cuda::xwt_gemm(blas_, x, n, in, l.w, out, y, CUDA_R_32F, 0.0f, "projection GEMM");  // y [n, out]
  if (l.b) cuda::add_bias(y, l.b, n, out, stream_.get());
}

void CudaLayers::add_projection(const uint16_t* in, int64_t n, int64_t width, const cuda::DeviceLinear& l,
                                const float* out_norm, float* x) {
  const int64_t h = c_.hidden_size;
  if (!out_norm && !l.b && c_.residual_multiplier == 1.0) {
    cuda::xwt_gemm(blas_, in, n, width, l.w, h, x, CUDA_R_32F, 1.0f, "projection GEMM (adding into the residual)");
    return;
  }
  float* proj = proj_.get();  // [n, hidden]
  linear(in, n, width, l, h, proj);
  if (out_norm) cuda::rms_norm(proj, h, out_norm, c_.rms_norm_eps, proj, h, nullptr, n, h, stream_.get());
  // x += residual_multiplier * proj (Granite's; 1 elsewhere, where it is add_into's sum)
  cuda::add_scaled_into(x, proj, static_cast<float>(c_.residual_multiplier), n * h, stream_.get());
}

void CudaLayers::pre_norm(const float* x, const float* w, int64_t n, float* xn, uint16_t* xb) {
  const int64_t h = c_.hidden_size;
  cudaStream_t s = stream_.get();
  if (w) {
    cuda::rms_norm(x, h, w, c_.rms_norm_eps, xn, h, xb, n, h, s);  // xn, xb: [n, hidden]
    return;
  }
  if (xn)  // a copy: eval's fake quantization may edit xn, never the residual stream x
    check(cudaMemcpyAsync(xn, x, static_cast<std::size_t>(n * h) * 4, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
  cuda::to_bf16(x, xb, n * h, s);
}

void CudaLayers::linear_bf16(const uint16_t* x, int64_t n, int64_t in, const cuda::DeviceLinear& l, int64_t out,
                             uint16_t* y) {
  cuda::xwt_gemm(blas_, x, n, in, l.w, out, y, CUDA_R_16BF, 0.0f, "projection GEMM (bf16 output)");  // y [n, out]
}

void CudaLayers::rotate(float* x, int64_t rows, int64_t d) {
  const float one = 1.0f, zero = 0.0f;
  // y^T [d, rows] = R^T . x^T, i.e. row-major y = x R, in fp32 (no TF32: the default math mode).
  check(cublasSgemm(blas_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(d), static_cast<int>(rows), static_cast<int>(d),
                    &one, r3_.get(), static_cast<int>(d), x, static_cast<int>(d), &zero, tmp_.get(), static_cast<int>(d)),
        "R3 rotation GEMM");
  check(cudaMemcpyAsync(x, tmp_.get(), static_cast<std::size_t>(rows * d) * 4, cudaMemcpyDeviceToDevice, stream_.get()),
        "cudaMemcpyAsync");
}

CudaLayers::DeviceRope CudaLayers::rope_table(int64_t layer, RopeTableCache& tables, int64_t len) {
  // The host table is computed only when the device has no copy yet (layers share their RoPE).
  if (!c_.rope_on) return {nullptr, nullptr, 0};  // Nemotron-H, Granite without RoPE: half 0 rotates nothing
  auto key = std::make_pair(&c_.rope_of(layer), tables.key_of(len));
  auto it = rope_dev_.find(key);
  if (it == rope_dev_.end()) {
    const RopeTable& t = tables.for_length(len);
    DeviceRopeTable d;
    d.cos.resize(t.cos.size());
    d.sin.resize(t.sin.size());
    d.half = t.half;
    cudaStream_t s = stream_.get();
    if (!t.cos.empty()) {  // a NoPE layer's table is empty (half 0): nothing to copy, null pointers
      check(copy_on_stream(d.cos.get(), t.cos.data(), t.cos.size() * 4, cudaMemcpyHostToDevice, s), "copying to the GPU");
      check(copy_on_stream(d.sin.get(), t.sin.data(), t.sin.size() * 4, cudaMemcpyHostToDevice, s), "copying to the GPU");
    }
    it = rope_dev_.emplace(key, std::move(d)).first;
  }
  return {it->second.cos.get(), it->second.sin.get(), it->second.half};
}

void CudaLayers::observe(ActivationObserver* obs, int64_t layer, Site site, const float* x, int64_t ld, int64_t heads,
                         int64_t head_dim, const SampleChunk& ch) {
  if (!obs || !obs->wants(layer, site)) return;
  if (obs->needs_values(layer, site)) {
    // MSE observers and the key envelope read the values: copy the chunk back, sample by sample.
    const int64_t width = heads * head_dim;
    const float* host = download(x, ld, width, ch);  // [n, width]
    for (const auto& s : ch.spans) obs->observe(layer, site, {host + s.offset * width, s.length, heads, head_dim, width});
    return;
  }
  const auto [mins, maxs] = reduced_slot(site, heads, ch);
  cuda::head_min_max(x, ld, heads, head_dim, offsets_.get() + ch.first, lengths_.get() + ch.first,
                     static_cast<int64_t>(ch.last - ch.first), mins, maxs, max_heads_, red_partial_.get(),
                     stream_.get());
}

std::pair<float*, float*> CudaLayers::reduced_slot(Site site, int64_t heads, const SampleChunk& ch) {
  auto it = std::find_if(reduced_.begin(), reduced_.end(), [&](const auto& r) { return r.first == site; });
  if (it == reduced_.end()) {
    reduced_.emplace_back(site, heads);
    it = reduced_.end() - 1;
  }
  const auto slot = static_cast<std::size_t>(it - reduced_.begin());
  const std::size_t at = (slot * spans_.size() + ch.first) * static_cast<std::size_t>(max_heads_);
  return {red_min_.get() + at, red_max_.get() + at};
}

bool CudaLayers::rope_qkv_in_one_pass(bool fused_qkv, int64_t layer, ActivationObserver* obs, const SampleChunk& ch,
                                      RopeTableCache& tables) {
  if (!fused_qkv) return false;
  for (Site site : {Site::kKeyPreRope, Site::kQuery, Site::kKey, Site::kValue}) {
    if (obs && obs->wants(layer, site) && obs->needs_values(layer, site)) return false;
    if (opt_.quantizer && opt_.quantizer->quantizes(layer, site)) return false;
  }
  for (const auto& span : ch.spans)
    if (!cuda::rope_qkv_supports(c_.head_dim, rope_table(layer, tables, span.length).half)) return false;
  return true;
}

void CudaLayers::rope_qkv_one_pass(int64_t layer, const float* qkv, int64_t ld, ActivationObserver* obs,
                                   const SampleChunk& ch, RopeTableCache& tables) {
  const int64_t nh = c_.num_attention_heads, nkv = c_.num_key_value_heads, d = c_.head_dim;
  const int64_t qd = c_.q_dim(), kvd = c_.kv_dim();
  cudaStream_t s = stream_.get();
  // Each observed site's partial ranges in its own quarter of red_partial_.
  const std::size_t quarter = red_partial_.size() / 4;
  const std::pair<Site, int64_t> sites[4] = {{Site::kKeyPreRope, nkv}, {Site::kQuery, nh}, {Site::kKey, nkv},
                                             {Site::kValue, nkv}};
  float* part[4] = {};
  for (int i = 0; i < 4; ++i)
    if (obs && obs->wants(layer, sites[i].first)) part[i] = red_partial_.get() + static_cast<std::size_t>(i) * quarter;
  cuda::QkvRanges ranges{part[0], part[1], part[2], part[3], static_cast<int64_t>(ch.spans.size()), 0};
  for (std::size_t j = 0; j < ch.spans.size(); ++j) {
    const SampleSpan& span = ch.spans[j];
    const auto [cos, sin, half] = rope_table(layer, tables, span.length);  // [len, half]; half 0: NoPE
    ranges.sample = static_cast<int64_t>(j);
    cuda::rope_qkv_to_bf16(qkv + span.offset * ld, span.length, ld, nh, nkv, d, half ? cos : nullptr,
                           half ? sin : nullptr, qb_.get() + span.offset * qd,
                           kb_.get() + span.offset * kvd, vb_.get() + span.offset * kvd, ranges, s);
  }
  for (int i = 0; i < 4; ++i) {
    if (!part[i]) continue;
    const auto [mins, maxs] = reduced_slot(sites[i].first, sites[i].second, ch);
    cuda::fold_head_ranges(part[i], ranges.samples, sites[i].second, mins, maxs, max_heads_, s);
  }
}

void CudaLayers::deliver_reduced(ActivationObserver* obs, int64_t layer) {
  if (reduced_.empty()) return;
  const std::size_t n = reduced_.size() * spans_.size() * static_cast<std::size_t>(max_heads_);
  std::vector<float> mins(n), maxs(n);
  check(copy_on_stream(mins.data(), red_min_.get(), n * 4, cudaMemcpyDeviceToHost, stream_.get()), "copying from the GPU");
  check(copy_on_stream(maxs.data(), red_max_.get(), n * 4, cudaMemcpyDeviceToHost, stream_.get()), "copying from the GPU");
  for (std::size_t slot = 0; slot < reduced_.size(); ++slot) {
    const auto [site, heads] = reduced_[slot];
    std::vector<float> pair(static_cast<std::size_t>(2 * heads));  // [2, heads]: minima, then maxima
    for (std::size_t s = 0; s < spans_.size(); ++s) {
      const std::size_t at = (slot * spans_.size() + s) * static_cast<std::size_t>(max_heads_);
      std::copy_n(mins.begin() + static_cast<std::ptrdiff_t>(at), heads, pair.begin());
      std::copy_n(maxs.begin() + static_cast<std::ptrdiff_t>(at), heads, pair.begin() + heads);
      obs->observe(layer, site, {pair.data(), 2, heads, 1, heads});
    }
  }
  reduced_.clear();
}

bool CudaLayers::host_quantize(int64_t layer, Site site, float* x, int64_t ld, int64_t heads, int64_t head_dim,
                               const SampleChunk& ch) {
  ActivationQuantizer* fq = opt_.quantizer;
  if (!fq || !fq->quantizes(layer, site)) return false;
  const int64_t width = heads * head_dim;
  float* host = download(x, ld, width, ch);  // [n, width]
  for (const auto& s : ch.spans) fq->apply(layer, site, host + s.offset * width, s.length, heads, head_dim, width);
  check(copy_rows_on_stream(x, ld, host, width, width, ch.n, cudaMemcpyHostToDevice, stream_.get()),
        "copying fake-quantized values to the GPU");
  return true;
}

float* CudaLayers::download(const float* x, int64_t ld, int64_t width, const SampleChunk& ch) {
  stage_.resize(static_cast<std::size_t>(ch.n * width) * sizeof(float));
  auto* host = reinterpret_cast<float*>(stage_.get());  // [n, width]
  check(copy_rows_on_stream(host, width, x, ld, width, ch.n, cudaMemcpyDeviceToHost, stream_.get()),
        "copying values from the GPU");
  return host;
}

void CudaLayers::llama4_setup(const ForwardOptions& opt) {
  cudaStream_t s = stream_.get();
  const int64_t origin = opt.position_offset;  // the absolute position of every sample's first token
  if (c_.attention_chunk_size) {
    const int64_t size = *c_.attention_chunk_size;
    std::vector<cuda::FlashItem> items;
    for (const auto& ch : chunks_) {
      std::vector<SampleSpan> pieces;  // the chunk's samples cut where (position + origin) % size == 0
      for (const auto& sp : ch.spans)
        for (int64_t t = 0; t < sp.length;) {
          const int64_t end = std::min(sp.length, ((t + origin) / size + 1) * size - origin);
          pieces.push_back({sp.offset + t, end - t});
          t = end;
        }
      if (flash_) {
        const std::vector<cuda::FlashItem> mine = cuda::flash_items(pieces);
        flash_chunked_range_.emplace_back(items.size(), static_cast<int64_t>(mine.size()));
        items.insert(items.end(), mine.begin(), mine.end());
      }
      chunked_spans_.push_back(std::move(pieces));
    }
    if (flash_ && !items.empty()) {
      flash_chunked_items_.resize(items.size());
      check(copy_on_stream(flash_chunked_items_.get(), items.data(), items.size() * sizeof(cuda::FlashItem),
                           cudaMemcpyHostToDevice, s), "copying to the GPU");
    }
  }
  if (c_.attn_temperature_tuning) {
    // The CPU's temperature_tune, per position, in fp32 as torch: log1p(floor((pos + 1) / floor_scale))
    // * attn_scale + 1; computed here so the GPU multiplies by the same factors.
    int64_t longest = 0;
    for (const auto& sp : spans_) longest = std::max(longest, sp.length);
    std::vector<float> scale(static_cast<std::size_t>(std::max<int64_t>(longest, 1)));  // [longest]
    for (std::size_t t = 0; t < scale.size(); ++t) {
      const auto pos = static_cast<float>(origin + static_cast<int64_t>(t));
      scale[t] = std::log1p(std::floor((pos + 1.0f) / static_cast<float>(c_.floor_scale))) *
                     static_cast<float>(c_.attn_scale) + 1.0f;
    }
    temperature_.resize(scale.size());
    check(copy_on_stream(temperature_.get(), scale.data(), scale.size() * 4, cudaMemcpyHostToDevice, s),
          "copying to the GPU");
  }
  const std::vector<float> ones(static_cast<std::size_t>(c_.head_dim), 1.0f);  // [head_dim]
  ones_.resize(ones.size());
  check(copy_on_stream(ones_.get(), ones.data(), ones.size() * 4, cudaMemcpyHostToDevice, s), "copying to the GPU");
}

void CudaLayers::llama4_after_rope(int64_t layer, float* q, float* k, const SampleChunk& ch) {
  const int64_t n = ch.n, nh = c_.num_attention_heads, nkv = c_.num_key_value_heads, d = c_.head_dim;
  const int64_t qd = c_.q_dim();
  cudaStream_t s = stream_.get();
  if (c_.uses_rope(layer) && c_.l2_qk_norm) {
    // Llama4TextL2Norm: x * rsqrt(mean(x^2) + eps) per head, no weight (rms_norm with unit weights:
    // x * inv * 1 is x * inv): q as [n * heads, head_dim].
    cuda::rms_norm(q, d, ones_.get(), c_.rms_norm_eps, q, d, nullptr, n * nh, d, s);
    cuda::rms_norm(k, d, ones_.get(), c_.rms_norm_eps, k, d, nullptr, n * nkv, d, s);
  }
  if (!c_.uses_rope(layer) && c_.attn_temperature_tuning)  // where vLLM hands q to self.attn: observed scaled
    for (const auto& span : ch.spans)
      cuda::scale_rows(q + span.offset * qd, qd, temperature_.get(), span.length, qd, s);  // [len, q_dim]
}

void CudaLayers::rope_qkv_in_steps(int64_t layer, float* q, float* k, float* v, int64_t ld_q, int64_t ld_kv,
                                   ActivationObserver* obs, const SampleChunk& ch, RopeTableCache& tables) {
  const int64_t n = ch.n, nh = c_.num_attention_heads, nkv = c_.num_key_value_heads, d = c_.head_dim;
  const int64_t qd = c_.q_dim(), kvd = c_.kv_dim();
  cudaStream_t s = stream_.get();
  observe(obs, layer, Site::kKeyPreRope, k, ld_kv, nkv, d, ch);
  for (const auto& span : ch.spans) {
    const auto [cos, sin, half] = rope_table(layer, tables, span.length);  // [len, half]
    cuda::rope(q + span.offset * ld_q, span.length, nh, d, ld_q, cos, sin, half, s);
    cuda::rope(k + span.offset * ld_kv, span.length, nkv, d, ld_kv, cos, sin, half, s);
  }
  if (c_.family->llama4_attention) {
    CTCAL_ASSERT(ld_q == qd && ld_kv == kvd, "Llama 4's q/k/v are three GEMMs (dense)");
    llama4_after_rope(layer, q, k, ch);
  }
  if (opt_.observe_before_rotation) {
    observe(obs, layer, Site::kQuery, q, ld_q, nh, d, ch);
    observe(obs, layer, Site::kKey, k, ld_kv, nkv, d, ch);
  }
  if (opt_.qk_rotation) {
    rotate(q, n * nh, d);
    rotate(k, n * nkv, d);
  }
  if (!opt_.observe_before_rotation) {
    observe(obs, layer, Site::kQuery, q, ld_q, nh, d, ch);
    observe(obs, layer, Site::kKey, k, ld_kv, nkv, d, ch);
  }
  observe(obs, layer, Site::kValue, v, ld_kv, nkv, d, ch);
  host_quantize(layer, Site::kQuery, q, ld_q, nh, d, ch);
  host_quantize(layer, Site::kKey, k, ld_kv, nkv, d, ch);
  host_quantize(layer, Site::kValue, v, ld_kv, nkv, d, ch);
  cuda::to_bf16_rows(q, ld_q, qb_.get(), n, qd, s);   // qb_ [n, q_dim]
  cuda::to_bf16_rows(k, ld_kv, kb_.get(), n, kvd, s);  // kb_ [n, kv_dim]
  cuda::to_bf16_rows(v, ld_kv, vb_.get(), n, kvd, s);  // vb_ [n, kv_dim]
}

void CudaLayers::gated_mlp(const cuda::DeviceLayer& w, int64_t layer, const SampleChunk& ch, int64_t width,
                           ActivationObserver* obs) {
  const int64_t n = ch.n, h = c_.hidden_size;
  cudaStream_t s = stream_.get();
  uint16_t* xb = xb_.get();
  float *gate = gate_.get(), *up = up_.get();  // [n, width]
  if (c_.family->act == MlpAct::kRelu2) {  // Nemotron-H: relu(up(x))^2, no gate (layer.cpp's dense_mlp)
    phases_.next("7 up GEMM", s);
    linear(xb, n, h, w.up, width, gate);  // [n, width]
    phases_.next("8 activation", s);
    cuda::relu2(gate, xb, n * width, s);  // gate, xb: [n, width]
    observe(obs, layer, Site::kDownInput, gate, width, 1, width, ch);
    if (host_quantize(layer, Site::kDownInput, gate, width, 1, width, ch)) cuda::to_bf16(gate, xb, n * width, s);
    return;
  }
  const cuda::Act act = c_.family->act == MlpAct::kSilu ? cuda::Act::kSilu : cuda::Act::kGeluTanh;
  // gate and up go straight to bf16, as in transformers' bf16 forward (half the bytes written
  // and read back: 0.2-0.3 s of an 8B calibration), unless down_proj's input is observed or
  // fake-quantized (those read fp32 values) or the projections have biases.
  const bool down_input_read = (obs && obs->wants(layer, Site::kDownInput)) ||
                               (opt_.quantizer && opt_.quantizer->quantizes(layer, Site::kDownInput));
  if (!down_input_read && !w.gate.b && !w.up.b) {
    // Two GEMMs, not one gate|up GEMM: the fused one measured no faster (docs/performance.md).
    auto* gate_b = reinterpret_cast<uint16_t*>(gate);  // [n, width] bf16, in gate's buffer
    auto* up_b = reinterpret_cast<uint16_t*>(up);      // [n, width] bf16, in up's buffer
    phases_.next("7 gate/up GEMMs", s);
    linear_bf16(xb, n, h, w.gate, width, gate_b);
    linear_bf16(xb, n, h, w.up, width, up_b);
    phases_.next("8 activation", s);
    cuda::gated_act_bf16(act, gate_b, up_b, xb, n * width, s);
  } else {
    phases_.next("7 gate/up GEMMs", s);
    linear(xb, n, h, w.gate, width, gate);
    linear(xb, n, h, w.up, width, up);
    phases_.next("8 activation", s);
    cuda::gated_act(act, gate, up, xb, n * width, s);
    observe(obs, layer, Site::kDownInput, gate, width, 1, width, ch);
    if (host_quantize(layer, Site::kDownInput, gate, width, 1, width, ch)) cuda::to_bf16(gate, xb, n * width, s);
  }
}

void CudaLayers::run_attention(const cuda::DeviceLayer& w, int64_t layer, const SampleChunk& ch, float* x,
                               ActivationObserver* obs, RopeTableCache& tables) {
  const FamilySpec& fam = *c_.family;
  const int64_t n = ch.n, h = c_.hidden_size, nh = c_.num_attention_heads, nkv = c_.num_key_value_heads;
  const int64_t d = c_.head_dim, qd = c_.q_dim(), kvd = c_.kv_dim();
  const double eps = c_.rms_norm_eps;
  cudaStream_t s = stream_.get();
  float *xn = xn_.get(), *q = q_.get(), *k = k_.get(), *v = v_.get(), *attn = attn_.get();
  uint16_t* xb = xb_.get();

  // Whether anything reads a site's fp32 values (an observer or eval's fake quantization); where
  // nothing does, the kernels before it write only the bf16 copy the next GEMM reads.
  auto fp32_read = [&](Site site) {
    return (obs && obs->wants(layer, site)) || (opt_.quantizer && opt_.quantizer->quantizes(layer, site));
  };

  // --- attention block ---
  phases_.next("1 input norm", s);
  pre_norm(x, w.input_norm, n, fp32_read(Site::kQkvInput) ? xn : nullptr, xb);  // xn, xb: [n, hidden]
  observe(obs, layer, Site::kQkvInput, xn, h, 1, h, ch);
  if (host_quantize(layer, Site::kQkvInput, xn, h, 1, h, ch)) cuda::to_bf16(xn, xb, n * h, s);
  phases_.next("2 q/k/v GEMMs", s);
  // One GEMM for q, k and v when their weights lie back to back in the slot (the loader puts them
  // so; no biases) and nothing below needs them dense (the per-head q/k norms and R3 treat q as
  // [n * heads, head_dim]; whole-projection norms take a row stride): the rows of q|k|v [n, q_dim +
  // 2 kv_dim], q, k, v at row stride ld_q = ld_kv. c_.qk_norm, not the family's: GLM-4.5's
  // use_qk_norm switches them per config. Llama 4's L2 q/k norm is per head too.
  const bool per_head_qk_norm = c_.qk_norm && !fam.qk_norm_whole;
  const bool fuse_qkv = fuse_ && !per_head_qk_norm && !fam.llama4_attention && !opt_.qk_rotation && !w.q.b &&
                        !w.k.b && !w.v.b && w.k.w == w.q.w + qd * h && w.v.w == w.k.w + kvd * h;
  int64_t ld_q = qd, ld_kv = kvd;
  if (fuse_qkv) {
    ld_q = ld_kv = qd + 2 * kvd;
    linear(xb, n, h, w.q, ld_q, q);  // [n, q_dim + 2 kv_dim]: w.q, w.k, w.v are its [q_dim + 2 kv_dim, hidden]
    k = q + qd;
    v = q + qd + kvd;
  } else if (fam.attention_output_gate) {  // q_proj's rows per head: [query | gate] (Qwen3_5Attention)
    linear(xb, n, h, w.q, 2 * qd, qg_.get());                         // [n, heads, 2 head_dim]
    cuda::split_query_gate(qg_.get(), n, nh, d, q, out_gate_.get(), s);  // q, gate: [n, q_dim]
    linear(xb, n, h, w.k, kvd, k);                                    // [n, kv_dim]
    linear(xb, n, h, w.v, kvd, v);                                    // [n, kv_dim]
  } else {
    linear(xb, n, h, w.q, qd, q);   // [n, q_dim]
    linear(xb, n, h, w.k, kvd, k);  // [n, kv_dim]
    linear(xb, n, h, w.v, kvd, v);  // [n, kv_dim]
  }
  phases_.next("3 q/k norms, RoPE, R3, observers, bf16", s);
  if (c_.qk_norm && fam.qk_norm_whole) {
    // One RMSNorm over each token's whole projection (OLMo 3, MiniMax-M2): q [n, q_dim], k [n, kv_dim]
    // at their row strides, weights [q_dim] / [kv_dim].
    cuda::rms_norm(q, ld_q, w.q_norm, eps, q, ld_q, nullptr, n, qd, s);
    cuda::rms_norm(k, ld_kv, w.k_norm, eps, k, ld_kv, nullptr, n, kvd, s);
  } else if (c_.qk_norm) {  // per-head RMSNorm over head_dim: q as [n * heads, head_dim]
    cuda::rms_norm(q, d, w.q_norm, eps, q, d, nullptr, n * nh, d, s);
    cuda::rms_norm(k, d, w.k_norm, eps, k, d, nullptr, n * nkv, d, s);
  }
  if (rope_qkv_in_one_pass(fuse_qkv, layer, obs, ch, tables)) {
    rope_qkv_one_pass(layer, q, ld_q, obs, ch, tables);  // qb_ [n, q_dim], kb_/vb_ [n, kv_dim]
  } else {
    rope_qkv_in_steps(layer, q, k, v, ld_q, ld_kv, obs, ch, tables);
  }
  phases_.next("4 attention", s);
  const AttentionShape shape = AttentionShape::of(c_, layer);
  // Llama 4's RoPE layers: each chunk's piece of a sample attends as a sequence of its own.
  const bool chunked = c_.chunk(layer).has_value();
  const auto chunk_index = static_cast<std::size_t>(&ch - chunks_.data());
  CTCAL_ASSERT(!chunked || chunk_index < chunked_spans_.size(), "chunked attention without its chunked spans");
  // The fused attention writes o_proj's bf16 input itself unless something reads the fp32 output.
  const bool attn_fp32 = !flash_ || fp32_read(Site::kOProjInput) || fam.attention_output_gate;
  if (flash_) {
    const auto [first, count] = (chunked ? flash_chunked_range_ : flash_range_)[chunk_index];
    const cuda::FlashItem* items = (chunked ? flash_chunked_items_ : flash_items_).get() + first;
    const cuda::FlashOutput out = attn_fp32 ? cuda::FlashOutput{attn, nullptr} : cuda::FlashOutput{nullptr, xb};
    cuda::flash_attention(qb_.get(), kb_.get(), vb_.get(), out, qd, kvd, nh, nkv, d, shape.window.value_or(INT64_MAX),
                          shape.scale, w.sinks, items, count, cuda::kFlashQueryRows, s);  // [n, q_dim]
  } else {
    CTCAL_ASSERT(!w.sinks, "sinks need the fused attention (check_cuda_supports refuses them otherwise)");
    attention_->run(qb_.get(), kb_.get(), vb_.get(), attn, chunked ? chunked_spans_[chunk_index] : ch.spans, shape,
                    s);  // [n, q_dim]
  }
  phases_.next("5 o_proj, residual", s);
  if (fam.attention_output_gate) cuda::sigmoid_gate_mul(attn, out_gate_.get(), n * qd, s);  // attn *= sigmoid(gate)
  if (attn_fp32) {
    observe(obs, layer, Site::kOProjInput, attn, qd, 1, qd, ch);
    host_quantize(layer, Site::kOProjInput, attn, qd, 1, qd, ch);
    cuda::to_bf16(attn, xb, n * qd, s);  // xb [n, q_dim]
  }
  add_projection(xb, n, qd, w.o, w.attn_out_norm, x);  // x [n, hidden] += [norm](o_proj(attn))
}

void CudaLayers::run_mixer(const cuda::DeviceLayer& w, int64_t layer, const SampleChunk& ch, float* x,
                           ActivationObserver* obs) {
  const int64_t n = ch.n, h = c_.hidden_size;
  cudaStream_t s = stream_.get();
  float *xn = xn_.get(), *proj = proj_.get();  // [n, hidden]
  uint16_t* xb = xb_.get();                    // [n, hidden]
  const int64_t* offsets = offsets_.get() + ch.first;  // the chunk's samples' rows, on the device
  const int64_t* lengths = lengths_.get() + ch.first;
  auto fp32_read = [&](Site site) {  // as in run_attention
    return (obs && obs->wants(layer, site)) || (opt_.quantizer && opt_.quantizer->quantizes(layer, site));
  };
  if (c_.is_linear_attention(layer)) {
    // No KV cache and, as on the CPU, none of the DeltaNet's Linear inputs is shown or
    // fake-quantized (FP8 groups must leave linear_attn out: plan.cpp refuses them otherwise).
    phases_.next("1 linear attention", s);
    pre_norm(x, w.input_norm, n, nullptr, xb);                                   // xb [n, hidden]
    hybrid_->deltanet(w.mixer.deltanet, xb, ch, offsets, lengths, proj);          // proj [n, hidden]
    cuda::add_into(x, proj, n * h, s);
    return;
  }
  // Mamba2: in_proj's and out_proj's inputs are hook points (FP8 W8A8 on the mixer's projections).
  phases_.next("1 mamba2", s);
  pre_norm(x, w.input_norm, n, fp32_read(Site::kMambaInProjInput) ? xn : nullptr, xb);  // xn, xb: [n, hidden]
  observe(obs, layer, Site::kMambaInProjInput, xn, h, 1, h, ch);
  if (host_quantize(layer, Site::kMambaInProjInput, xn, h, 1, h, ch)) cuda::to_bf16(xn, xb, n * h, s);
  const int64_t width = c_.mamba.intermediate_size();
  const auto out_proj_input = [&](float* g) {  // g [n, I]: out_proj's input
    observe(obs, layer, Site::kMambaOutProjInput, g, width, 1, width, ch);
    return host_quantize(layer, Site::kMambaOutProjInput, g, width, 1, width, ch);
  };
  hybrid_->mamba2(w.mixer.mamba, xb, ch, offsets, lengths, fp32_read(Site::kMambaOutProjInput), out_proj_input,
                  proj);                                                              // proj [n, hidden]
  cuda::add_scaled_into(x, proj, static_cast<float>(c_.residual_multiplier), n * h, s);  // Granite's multiplier
}

void CudaLayers::run_chunk(const cuda::DeviceLayer& w, int64_t layer, const SampleChunk& ch, float* x,
                           ActivationObserver* obs, RopeTableCache& tables) {
  const int64_t n = ch.n, h = c_.hidden_size, f = c_.intermediate_size;
  cudaStream_t s = stream_.get();
  float *xn = xn_.get(), *proj = proj_.get();
  uint16_t* xb = xb_.get();
  auto fp32_read = [&](Site site) {  // as in run_attention
    return (obs && obs->wants(layer, site)) || (opt_.quantizer && opt_.quantizer->quantizes(layer, site));
  };

  // --- token mixer: attention, or a hybrid's gated DeltaNet / Mamba2 mixer (none: Nemotron-H's MLP blocks) ---
  if (c_.has_kv_cache(layer)) run_attention(w, layer, ch, x, obs, tables);
  else if (c_.has_mixer(layer)) run_mixer(w, layer, ch, x, obs);

  // --- MLP block (skipped for the last layer during calibration) ---
  if (w.has_mlp && c_.is_moe(layer)) {  // the router's top-k experts (cuda_moe.h), as the CPU's layer.cpp
    phases_.next("6 moe", s);
    pre_norm(x, w.mlp_norm, n, xn, xb);  // xn, xb: [n, hidden]
    // The router's and every expert's input; not fake-quantized (the router reads it as is), as on the CPU.
    observe(obs, layer, Site::kGateUpInput, xn, h, 1, h, ch);
    moe_->run(w.experts, layer, xn, xb, n, obs, proj);  // proj [n, hidden]; observers get each expert's inputs
    if (w.down.w) {
      // The shared expert (GLM-4.5's shared_experts, Llama 4's shared_expert, Qwen3-Next's gated
      // one): proj += [sigmoid(shared_expert_gate(xn))] * down(act(gate(xn)) * up(xn)), as the CPU's
      // layer.cpp. The gate reads the unquantized input (vLLM builds it without a quant config);
      // the shared expert's gate/up_proj read it fake-quantized in FP8 eval, after the router, the
      // experts and the gate have read it (all enqueued before the host edits xn).
      phases_.next("7 shared expert", s);
      const float* gate_logit = nullptr;  // [n] x . shared_expert_gate^T, fp32 (gated shared experts only)
      if (w.experts.shared_gate) {
        const float one = 1.0f, zero = 0.0f;
        check(cublasSgemm(blas_, CUBLAS_OP_T, CUBLAS_OP_N, 1, static_cast<int>(n), static_cast<int>(h), &one,
                          w.experts.shared_gate, static_cast<int>(h), xn, static_cast<int>(h), &zero,
                          shared_logit_.get(), 1),
              "shared expert gate GEMM");
        gate_logit = shared_logit_.get();
      }
      if (host_quantize(layer, Site::kGateUpInput, xn, h, 1, h, ch)) cuda::to_bf16(xn, xb, n * h, s);
      // Granite's shared_mlp (moe_plus_dense_mlp) is the dense MLP's width, ungated.
      const int64_t width = c_.family->moe_plus_dense_mlp ? c_.intermediate_size : c_.shared_expert_intermediate_size;
      gated_mlp(w, layer, ch, width, obs);  // xb [n, width]: down_proj's bf16 input
      linear(xb, n, width, w.down, h, xn);  // xn [n, hidden]: the shared expert's output
      cuda::add_shared_expert(proj, xn, gate_logit, n, h, s);  // proj [n, hidden]
    }
    cuda::add_scaled_into(x, proj, static_cast<float>(c_.residual_multiplier), n * h, s);  // Granite's; else 1
  } else if (w.has_mlp) {
    phases_.next("6 mlp norm", s);
    pre_norm(x, w.mlp_norm, n, fp32_read(Site::kGateUpInput) ? xn : nullptr, xb);  // xn, xb: [n, hidden]
    observe(obs, layer, Site::kGateUpInput, xn, h, 1, h, ch);
    if (host_quantize(layer, Site::kGateUpInput, xn, h, 1, h, ch)) cuda::to_bf16(xn, xb, n * h, s);
    gated_mlp(w, layer, ch, f, obs);  // xb [n, intermediate]: down_proj's bf16 input
    phases_.next("9 down GEMM, residual", s);
    add_projection(xb, n, f, w.down, w.mlp_out_norm, x);  // x [n, hidden] += [norm](down_proj(act))
  }
  phases_.end(s);
  cuda::flag_nonfinite(x, n * h, flag_.get(), s);
}

void CudaLayers::begin(RowMatrix& hidden) {
  t0_ = Clock::now();
  hidden_host_ = &hidden;
  weights_ = std::make_unique<cuda::WeightStream>(model_, loop_, opt_.device.index);  // the loader starts at layer 0
  // Token ids instead of hidden states: the host embeds them while the loader reads the first
  // layers (every other way tried measured slower or no faster: docs/performance.md).
  if (opt_.token_ids && hidden.rows() == 0) hidden = model_.embed_ids(*opt_.token_ids);
  embed_s_ = std::chrono::duration<double>(Clock::now() - t0_).count();
  // Resident hidden states go up once, chunk by chunk beside layer 0's kernels.
  if (resident_)
    upload_ = std::make_unique<cuda::HiddenUpload>(hidden.data(), hidden_.get(), c_.hidden_size, chunks_,
                                                   opt_.device.index);
  mark_ = Clock::now();
}

void CudaLayers::load(int64_t l) {
  // The prologue counts the loop's hooks since the last layer (after_layer, before_layer, observer).
  tables_ = std::make_unique<RopeTableCache>(c_, l, spans_, opt_.position_offset);
  lap(&host_.prologue);
  w_ = &weights_->acquire(l, stream_.get());
  lap(&host_.acquire);
  check(cudaMemsetAsync(flag_.get(), 0, sizeof(int), stream_.get()), "cudaMemsetAsync");
  if (l == 0) host_.to_layer0 = std::chrono::duration<double>(Clock::now() - t0_).count();
}

void CudaLayers::run(int64_t l, ActivationObserver* obs) {
  const int64_t h = c_.hidden_size;
  cudaStream_t s = stream_.get();
  const std::size_t row_bytes = static_cast<std::size_t>(h) * 4;
  RowMatrix& hidden = *hidden_host_;
  compute_.start(s);
  // Progress and cancellation per chunk, as on the CPU, one chunk behind: the host waits for
  // chunk i - 1 while chunk i is queued, so the GPU never drains between chunks.
  cuda::Event chunk_done[2];
  int64_t reported = -1;  // the last chunk after_chunk was told about
  auto report = [&](int64_t i) {
    lap(&host_.enqueue);
    check(cudaEventSynchronize(chunk_done[i % 2].get()), "running a layer on the GPU");
    lap(&host_.wait);
    const SampleChunk& done = chunks_[static_cast<std::size_t>(i)];
    if (opt_.after_chunk) opt_.after_chunk(l, done.r0 + done.n - spans_.front().offset);
    reported = i;
  };
  for (std::size_t i = 0; i < chunks_.size(); ++i) {
    const SampleChunk& ch = chunks_[i];
    float* x = hidden_.get() + (resident_ ? ch.r0 * h : 0);  // [n, hidden]
    if (!resident_)  // streamed hidden states go up and down every layer
      check(cudaMemcpyAsync(x, hidden.row(ch.r0).data(), static_cast<std::size_t>(ch.n) * row_bytes,
                            cudaMemcpyHostToDevice, s), "copying hidden states to the GPU");
    else if (l == 0)
      upload_->wait_for(i, s);
    run_chunk(*w_, l, ch, x, obs, *tables_);
    if (!resident_)
      check(cudaMemcpyAsync(hidden.row(ch.r0).data(), x, static_cast<std::size_t>(ch.n) * row_bytes,
                            cudaMemcpyDeviceToHost, s), "copying hidden states from the GPU");
    check(cudaEventRecord(chunk_done[i % 2].get(), s), "cudaEventRecord");
    if (i > 0) report(static_cast<int64_t>(i) - 1);
  }
  if (reported + 1 < static_cast<int64_t>(chunks_.size())) report(static_cast<int64_t>(chunks_.size()) - 1);
  compute_.stop(s);
}

void CudaLayers::release(int64_t l, ActivationObserver* obs) {
  const bool had_mlp = w_->has_mlp;  // w_'s slot may be refilled once released
  weights_->release(l, stream_.get());
  w_ = nullptr;
  int flag = 0;
  check(copy_on_stream(&flag, flag_.get(), sizeof(int), cudaMemcpyDeviceToHost, stream_.get()), "copying from the GPU");
  if (flag) {
    const std::string module = c_.layer_prefix(l).substr(0, c_.layer_prefix(l).size() - 1);
    throw InputError(fmt::format("layer {}: {} contains NaN or Inf ({}); the weights or the input are not usable", l,
                                 had_mlp ? "the layer output (attention + MLP)" : "the attention output", module));
  }
  if (obs) deliver_reduced(obs, l);
  lap(&host_.epilogue);
}

void CudaLayers::end(RowMatrix& hidden) {
  const int64_t h = c_.hidden_size, n_layers = c_.num_hidden_layers;
  cudaStream_t s = stream_.get();
  const std::size_t row_bytes = static_cast<std::size_t>(h) * 4;
  const auto t_end = Clock::now();
  if (resident_ && loop_.keep_hidden)
    check(copy_on_stream(hidden.data(), hidden_.get(), static_cast<std::size_t>(hidden.rows()) * row_bytes,
                         cudaMemcpyDeviceToHost, s), "copying the hidden states from the GPU");
  host_.download = std::chrono::duration<double>(Clock::now() - t_end).count();
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  const double wall = std::chrono::duration<double>(Clock::now() - t0_).count();
  std::size_t free_b = 0, total_b = 0;
  check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  // Overlap, from CUDA events: layer l's weight copy counts as hidden when it ended before layer
  // l-1's kernels did (it ran while they ran, or earlier).
  double copy_s = 0;
  int64_t hidden_copies = 0;
  for (int64_t l = 0; l < n_layers; ++l) {
    copy_s += cuda::seconds_between(weights_->copy_start(l), weights_->copy_end(l));
    if (l > 0)
      hidden_copies +=
          cuda::seconds_between(weights_->copy_end(l), compute_.end_of(static_cast<std::size_t>(l - 1))) >= 0 ? 1 : 0;
  }
  spdlog::info("cuda: {} layers in {:.3f} s; GPU compute {:.3f} s, weight copies {:.3f} s ({} of {} ended while the "
               "previous layer computed) (CUDA events); loader read+pack {:.3f} s, waited for a free slot {:.3f} s; "
               "weight slots 2 x {:.1f} MiB; device memory in use {:.2f} GiB",
               n_layers, wall, compute_.seconds(), copy_s, hidden_copies, n_layers - 1, weights_->load_seconds(),
               weights_->wait_seconds(), static_cast<double>(weights_->slot_bytes()) / (1 << 20),
               static_cast<double>(total_b - free_b) / (1 << 30));
  if (std::getenv("CTCAL_CUDA_PROFILE")) {
    // The GPU's idle time between layers: from layer l-1's last kernel to layer l's first.
    double idle = 0;
    for (std::size_t l = 1; l < static_cast<std::size_t>(n_layers); ++l)
      idle += cuda::seconds_between(compute_.end_of(l - 1), compute_.start_of(l));
    spdlog::info("cuda: GPU time per phase: {}", phases_.summary());
    // Layer 0 also waits for the hidden states' first upload and loads each kernel on its first
    // launch (CUDA's lazy module loading): its GPU time against the others' mean.
    const double layer0 = compute_.seconds_of(0);
    // What layer 0 waited for on the GPU: its weights' copy and the hidden states' last chunk,
    // each as the time from layer 0's start to that copy's end (negative: there before it began).
    auto after_start = [&](cudaEvent_t e) { return cuda::seconds_between(compute_.start_of(0), e); };
    const double rest = compute_.seconds() - layer0;
    spdlog::info("cuda: before layer 0: embedding on the host {:.3f} s, layer 0 queued at {:.3f} s; layer 0 took "
                 "{:.3f} s of GPU time (the others {:.3f} s on average); from its start, its weights were in at "
                 "{:.3f} s, the hidden states at {}", embed_s_, host_.to_layer0, layer0,
                 n_layers > 1 ? rest / static_cast<double>(n_layers - 1) : 0.0, after_start(weights_->copy_end(0)),
                 upload_ ? fmt::format("{:.3f} s", after_start(upload_->done(chunks_.size() - 1))) : "(streamed)");
    spdlog::info("cuda: host thread: layer prologue {:.3f} s, waiting for weights {:.3f} s, queuing kernels {:.3f} s, "
                 "waiting for chunks {:.3f} s, layer epilogue {:.3f} s, hidden states down {:.3f} s; GPU idle between "
                 "layers {:.3f} s", host_.prologue, host_.acquire, host_.enqueue, host_.wait, host_.epilogue, host_.download,
                 idle);
  }
}

}  // namespace

int cuda_device_for_local_rank(int local_rank) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) return 0;
  return local_rank % count;
}

std::string cuda_device_description(int index) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess)  // no driver (cudaErrorInsufficientDriver), no GPU (cudaErrorNoDevice), ...
    throw UsageError(fmt::format("--device cuda:{}: no CUDA device is usable here: no NVIDIA driver or GPU, or a driver "
                                 "older than this build's CUDA runtime (cudaGetDeviceCount: {})",
                                 index, cudaGetErrorString(e)));
  if (index >= count)
    throw UsageError(fmt::format("--device cuda:{}: this machine has {} CUDA device(s) (cuda:0..cuda:{})", index, count,
                                 count - 1));
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, index), "cudaGetDeviceProperties");
  return fmt::format("{} (cuda:{}), {:.1f} GiB, compute capability {}.{}", p.name, index,
                     static_cast<double>(p.totalGlobalMem) / (1 << 30), p.major, p.minor);
}

void cuda_open_device(int index) {
  cuda_device_description(index);
  check(cudaSetDevice(index), "cudaSetDevice");
  check(cudaFree(nullptr), "creating the CUDA context");
}

void check_cuda_supports(const ModelConfig& cfg, const ForwardOptions& /*options*/) {
  // A misspelt A/B switch fails here, before any work (exit 2), not when the layers start.
  const bool flash = use_flash_attention(cfg);
  (void)use_fused_gemms();
  (void)chunk_tokens(1);
  // Gemma 4: per-layer head_dim / KV heads, the weightless v_norm, k_eq_v layers, the layer_scalar
  // and proportional RoPE have no CUDA path yet.
  if (cfg.family->gemma4_attention)
    throw InputError(fmt::format("{}: the CUDA backend does not run Gemma 4's attention (per-layer head_dim and KV "
                                 "heads, v_norm, attention_k_eq_v layers, proportional RoPE) or its layer_scalar yet; "
                                 "run it on the CPU (--device cpu)", cfg.family->architecture));
  if (const char* what = unverified_cuda_path(cfg); what && !env_switch("CTCAL_CUDA_UNVERIFIED", "1"))
    throw InputError(fmt::format("{}: the CUDA backend's path for {} is written but has not run on a GPU yet (its GPU "
                                 "tests wait for one); run it on the CPU (--device cpu)", cfg.family->architecture, what));
  // The hybrids' gated DeltaNet and Mamba2 mixers (cuda_hybrid.h) keep a head's recurrent state in
  // shared memory: a state too large for it is refused by name.
  if (const std::string why = cuda::hybrid_unsupported(cfg); !why.empty())
    throw InputError(fmt::format("{}: {}; run it on the CPU (--device cpu)", cfg.family->architecture, why));
  if (cfg.family->attention_sinks && !flash)
    throw InputError(fmt::format("{}: attention sinks need the CUDA backend's fused attention, which takes head_dim a "
                                 "multiple of 8 up to 256 (this model: {}){}; run it on the CPU (--device cpu)",
                                 cfg.family->architecture, cfg.head_dim,
                                 cuda::flash_attention_supports(cfg.head_dim) ? ", and CTCAL_CUDA_ATTENTION=blocked is set" : ""));
  // Dense MLPs run gated_act (SiLU, GELU-tanh) or relu2 (Nemotron-H); MoE experts run SiLU or gpt-oss's
  // clamped SwiGLU (cuda_moe.h), not Nemotron-H's ungated relu2 experts.
  bool any_dense = false, any_moe = false;
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) (cfg.is_moe(l) ? any_moe : any_dense) = true;
  if (any_dense && cfg.family->act != MlpAct::kSilu && cfg.family->act != MlpAct::kGeluTanh &&
      cfg.family->act != MlpAct::kRelu2)
    throw InputError(fmt::format("{}: the CUDA backend has no kernel for this family's MLP activation; run it on the "
                                 "CPU (--device cpu)", cfg.family->architecture));
  if (any_moe && cfg.family->act == MlpAct::kRelu2)
    throw InputError(fmt::format("{}: the CUDA backend does not run MoE blocks with ungated relu2 experts (Nemotron-H's) "
                                 "yet; run it on the CPU (--device cpu)", cfg.family->architecture));
}

std::unique_ptr<LayerBackend> make_cuda_layers(const Decoder& model, const std::vector<SampleSpan>& spans,
                                               const LayerLoop& loop, const ForwardOptions& options) {
  using Clock = std::chrono::steady_clock;
  check_cuda_supports(model.config(), options);
  const auto t0 = Clock::now();
  cuda_device_description(options.device.index);  // a clear error when there is no such GPU
  check(cudaSetDevice(options.device.index), "cudaSetDevice");
  check(cudaFree(nullptr), "creating the CUDA context");
  if (spans.empty()) return nullptr;  // nothing to run: the loop calls its hooks only
  const auto t1 = Clock::now();
  auto layers = std::make_unique<CudaLayers>(model, spans, loop, options);
  const auto t2 = Clock::now();
  if (std::getenv("CTCAL_CUDA_PROFILE"))
    spdlog::info("cuda: setup: context {:.3f} s, buffers and cuBLAS {:.3f} s",
                 std::chrono::duration<double>(t1 - t0).count(), std::chrono::duration<double>(t2 - t1).count());
  return layers;
}

}  // namespace ctcal
