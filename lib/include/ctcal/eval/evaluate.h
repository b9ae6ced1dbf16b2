#pragma once
// What the scales cost in accuracy (the document `ctcal eval` prints). The baseline (unquantized)
// model and each quantized run go over the same held-out samples; K/V (and Q) are fake-quantized
// in the forward pass as vLLM applies the scales, with the run's rotations. Metrics: token-weighted NLL and
// perplexity, mean per-token KL(baseline || quantized), top-1 agreement, per-layer SQNR and
// clamped fractions; per sample (`sample_tokens`, each run's `sample_kl`), what the verdict
// against scale 1.0 resamples (eval/unit_scales_verdict.h).
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/eval/eval_run.h"
#include "ctcal/run_defaults.h"
#include "ctcal/util/progress_line.h"

namespace ctcal {

struct EvalRequest {
  std::string model, dataset;
  std::vector<std::string> quantized;   // checkpoint directories
  std::vector<std::string> recipes;     // calibrated on the fly on calibration_dataset
  std::optional<std::string> calibration_dataset, tokenizer;
  int64_t num_samples = 64;
  int64_t max_seq_length = 512;
  uint64_t seed = kDefaultSeed;
  bool no_shuffle = false;
  int threads = 0;
  bool progress_tty = false;          // live progress line (stderr is a terminal)
  bool no_unit_scales = false;        // skip the scale-1.0 baseline beside each run
  int64_t position_offset = 0;        // samples start at this position (long-context ranges)
  bool layer_sensitivity = false;     // each layer quantized alone: ranked KL contributions
  std::string device = "cpu";         // --device: cpu, cuda, cuda:N
  // --kv-cache-dtype, as vLLM spells it: "auto" (each checkpoint's own KV scheme) or "nvfp4":
  // beside each FP8 run, the same run with vLLM's NVFP4 KV cache at s = 1.0, amax/448, amax/2688
  // and, with calibration_dataset, the searched s (`kv_cache_dtypes` in the document;
  // eval/nvfp4_fake_quant.h, eval/nvfp4_scale_search.h).
  std::string kv_cache_dtype = "auto";
};

// The metrics document (also what --json prints).
nlohmann::json evaluate(const EvalRequest& req);
// The same over runs already loaded (tests, and --recipe runs).
// `forward`: its position_offset and device apply to every pass (the rest is eval's own).
// `progress` (may be null) shows each forward pass (baseline, then every run) layer by layer.
nlohmann::json evaluate_runs(const Checkpoint& base, const ModelConfig& cfg,
                             const std::vector<std::vector<int32_t>>& samples, std::vector<EvalRun>& runs,
                             ProgressLine* progress = nullptr, const ForwardOptions& forward = {});
// The same run with every scale 1.0 and every zero point 0 (vLLM's default without scales).
EvalRun unit_scales_run(const EvalRun& run);

// Each layer of `run` quantized alone (the others full precision): [{layer, kl}] ranked by KL
// against the unquantized model, most sensitive first. One forward pass per layer.
nlohmann::json rank_layers_by_kl(const Checkpoint& base, const ModelConfig& cfg,
                                 const std::vector<std::vector<int32_t>>& samples, const EvalRun& run,
                                 ProgressLine* progress = nullptr, const ForwardOptions& forward = {});

}  // namespace ctcal
