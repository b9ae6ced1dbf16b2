#pragma once
// Orchestrates a calibration: layer by layer over all samples, observers on the plan's sites,
// qparams at the end of each layer (llm-compressor >= 0.11: accumulate, then compute once;
// no fake quantization while calibrating).
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "ctcal/data/dataset.h"
#include "ctcal/error.h"
#include "ctcal/io/checkpoint.h"
#include "ctcal/model/decoder.h"
#include "ctcal/pipeline/plan.h"
#include "ctcal/quant/qparams.h"

namespace ctcal {

struct SiteResult {
  Site site;
  QParams qparams;                 // what is written
  std::vector<double> obs_min;     // observer statistics the qparams came from [qparams]
  std::vector<double> obs_max;
  std::vector<double> head_min;    // raw running min/max per head over all tokens [heads]
  std::vector<double> head_max;
  int64_t observations = 0;
};

struct LayerResult {
  int64_t layer = 0;
  std::vector<SiteResult> sites;
  // MoE layers with FP8 experts: each expert's input (kExpertGateUpInput, kExpertDownInput),
  // observed on the tokens routed to it; [experts] per site. An expert no token reached has
  // observations 0 and the largest scale of the layer's other experts at that site (vLLM's
  // W8A8 FP8 MoE uses the max over the experts' input scales anyway).
  std::map<Site, std::vector<SiteResult>> experts;
  const SiteResult* find(Site s) const;
};

struct CalibrationResult {
  std::vector<LayerResult> layers;
  int64_t samples = 0;
  int64_t tokens = 0;
  double forward_seconds = 0.0;
};

struct Progress {
  int64_t layer = 0, layers = 0, samples = 0, tokens = 0;  // layer: 1-based, the one running
  int64_t layer_tokens_done = 0;  // tokens of `layer` through so far (all of them when layer_done)
  bool layer_done = false;
  double elapsed_s = 0.0;
};

struct CalibrateOptions {
  ForwardOptions forward;
  // bf16 GEMM inputs (fp32 accumulation) for the projections; everything else stays fp32.
  bool bf16_compute = false;
  // With bf16_compute on the CPU: attention's q k^T and p v as bf16 GEMMs too (the default);
  // false keeps them in fp32 (the numerics before issue 17; calib_bench --bf16-attention 0).
  bool bf16_attention = true;
  // --propagate quantized: the forward runs on the FP8 weights the output will hold
  // (dequantize(quantize(W)) for every planned FP8 Linear layer), so the KV scales are those of
  // the quantized model and an FP8 output read back reproduces them. false (default): the
  // unquantized model, as llm-compressor 0.14 calibrates (pipelines/sequential/pipeline.py runs
  // every calibration and propagation pass under DisableQuantization).
  bool quantized_forward = false;
  std::function<void(const Progress&)> on_progress;    // after every chunk and every layer
  std::function<void(const std::string&)> on_status;   // phases without a fraction (loading)
  const std::atomic<bool>* cancel = nullptr;           // set by SIGINT/SIGTERM; checked every chunk
};

// Thrown when `cancel` was set; the caller removes partial output.
class Cancelled : public Error {
 public:
  Cancelled() : Error(ExitCode::kOther, "interrupted by a signal; nothing was written") {}
};

// Applies the plan's R2 rotation to a layer's v_proj / o_proj weights (float64 math, rounded
// back to `storage` so the forward sees what the written checkpoint holds).
void apply_r2(const CalibrationPlan& plan, LayerWeights* w);

// Memory model of a calibration (bytes): hidden states of every token, one layer's fp32
// weights, and per-token activation scratch for a GEMM chunk. Used by --max-memory to pick the
// number of tokens that go through a layer at once.
struct MemoryEstimate {
  double hidden_bytes = 0;       // [total_tokens, hidden] fp32
  double layer_bytes = 0;        // one layer's weights in fp32
  double per_token_bytes = 0;    // activation scratch per token of a chunk
};
MemoryEstimate estimate_memory(const ModelConfig& cfg, int64_t total_tokens, bool bf16_compute);
// The chunk size (tokens) that fits `budget_bytes`; throws UsageError naming the minimum
// budget when even one sample of `longest` tokens does not fit.
int64_t chunk_tokens_for_budget(const ModelConfig& cfg, int64_t total_tokens, int64_t longest, double budget_bytes,
                                bool bf16_compute);

CalibrationResult run_calibration(const Checkpoint& ckpt, const CalibrationPlan& plan,
                                  const std::vector<std::vector<int32_t>>& samples,
                                  const CalibrateOptions& options);

}  // namespace ctcal
