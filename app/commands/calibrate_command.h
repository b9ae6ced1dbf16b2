#pragma once
// `ctcal calibrate`: resolve the flags over the recipe's `ctcal:` block, refuse before any work
// what cannot be done, run the calibration (and the evidence passes eval gives), write the
// checkpoint and print what was written. It sits above pipeline/ and eval/ and calls both.
#include <atomic>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

namespace ctcal::app {

struct CalibrateRequest {
  std::string recipe;
  std::optional<std::string> model, dataset, output, tokenizer;
  std::optional<int64_t> num_samples, max_seq_length;
  std::optional<uint64_t> seed;
  bool no_shuffle = false;
  int threads = 0;  // 0: all cores
  bool overwrite = false;
  bool dry_run = false;
  bool progress_tty = false;  // redraw one progress line (stderr is a terminal)
  int64_t chunk_tokens = 4096;
  std::optional<double> max_memory_mb;  // picks chunk_tokens from a memory budget
  std::string compute_dtype = "fp32";  // or "bf16"
  std::string device = "cpu";          // --device: cpu, cuda, cuda:N (the GPU computes bf16 GEMMs)
  std::optional<double> max_gpu_memory_mb;  // --max-gpu-memory: what the GPU run may count on
  std::optional<std::string> key_range;  // "observed" (default) or "envelope"; overrides ctcal.key_range
  std::optional<std::string> propagate;  // "unquantized" (default) or "quantized"; overrides ctcal.propagate
  // --kv-skip-layers N: keep the N layers whose KV quantization costs most KL (eval's ranking,
  // each layer quantized alone) unquantized.
  int64_t kv_skip_layers = 0;
  // --kv-cache-dtype, as vLLM spells it: "auto" (the recipe's kv_cache_scheme, served as it is) or
  // "nvfp4": after the FP8 per-tensor calibration, eval's NVFP4 scale search (one s for K and one
  // for V per layer, on up to 32 calibration samples) and those s written as the k/v scales,
  // still declared FP8 per tensor, with ctcal's record (quant/nvfp4_record.h) in ctcal_report.json.
  std::string kv_cache_dtype = "auto";
  // --report: an HTML page with the plan, the ranges against the scales, the scales, and the
  // calibrated scales against every scale 1.0 on the calibration samples.
  std::optional<std::string> report;
  const std::atomic<bool>* cancel = nullptr;
};

// Returns 0; throws ctcal::Error subclasses (mapped to exit codes by main).
int run_calibrate(const CalibrateRequest& req, std::ostream& out);

}  // namespace ctcal::app
