#pragma once
// `ctcal calibrate` as a library call: resolves flags over the recipe's `ctcal:` block, reads the
// model and dataset, plans, runs, writes. The app only parses flags and maps errors to exit codes.
#include <atomic>
#include <functional>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/model/compute_device.h"

namespace ctcal {

class Checkpoint;
struct CalibrationPlan;
struct CalibrationResult;

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
  std::optional<double> max_memory_mb;
  std::string compute_dtype = "fp32";  // or "bf16"
  std::string device = "cpu";          // --device: cpu, cuda, cuda:N (the GPU computes bf16 GEMMs)
  std::optional<double> max_gpu_memory_mb;  // --max-gpu-memory: what the GPU run may count on
  std::optional<std::string> key_range;
  std::optional<std::string> propagate;  // "unquantized" (default) or "quantized"; overrides ctcal.propagate
  // --kv-skip-layers N: keep the N layers whose KV quantization costs most KL unquantized.
  // `rank_layers` (set by the app, which sees eval) ranks the layers, most sensitive first.
  int64_t kv_skip_layers = 0;
  std::function<std::vector<int64_t>(const Checkpoint&, const CalibrationPlan&, const CalibrationResult&,
                                     const std::vector<std::vector<int32_t>>&)>
      rank_layers;
  // With --report: the calibrated scales against every scale 1.0 on the calibration samples
  // ({calibrated_kl, unit_kl, wins, ...}; set by the app, which sees eval).
  std::function<nlohmann::json(const Checkpoint&, const CalibrationPlan&, const CalibrationResult&,
                               const std::vector<std::vector<int32_t>>&)>
      compare_unit_scales;  // "observed" (default) or "envelope"; overrides ctcal.key_range
  std::optional<std::string> report;  // HTML file with the scale plots  // picks chunk_tokens from a memory budget
  const std::atomic<bool>* cancel = nullptr;
};

// Returns 0; throws ctcal::Error subclasses (mapped to exit codes by the app).
// The device --device names for this process (under mpirun, a bare `cuda` picks the rank's GPU).
ComputeDevice calibrate_device(const CalibrateRequest& req);
int run_calibrate(const CalibrateRequest& req, std::ostream& out);

// `ctcal validate`: prints the effective recipe (YAML, or JSON with `json`).
int run_validate(const std::string& recipe_path, bool json, std::ostream& out);

}  // namespace ctcal
