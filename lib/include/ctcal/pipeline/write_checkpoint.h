#pragma once
// Writes the calibrated checkpoint directory (SPEC §6) into a staging directory: config.json
// with quantization_config, the input weight shards (hard-linked, or rewritten when R2 changed
// tensors in them or they held the input's own attention scales, which are replaced or dropped:
// pipeline/existing_scales.h) renamed model-0000k-of-0000n, a new shard with the scales (and R3 matrices),
// model.safetensors.index.json over all of them, the other input files, recipe.yaml and
// ctcal_report.json.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/io/checkpoint.h"
#include "ctcal/pipeline/calibrate.h"
#include "ctcal/pipeline/plan.h"

namespace ctcal {

struct OutputExtras {
  std::string recipe_yaml;   // effective recipe
  nlohmann::json report;     // ctcal_report.json (layers are added by the writer)
};

// Per-layer report entries (min/max/absmax and scales per site), shared with `--json` output.
nlohmann::json layers_report_json(const CalibrationPlan& plan, const CalibrationResult& result);

// What write_calibrated_checkpoint will need on disk, known before calibrating: `new_bytes` are
// written (shards R2 rewrites, the scale shard, copied tokenizer and other files; an upper
// bound), `linked_bytes` are the untouched shards (hard links, or copies on another file system).
struct OutputSize {
  std::uintmax_t new_bytes = 0;
  std::uintmax_t linked_bytes = 0;
};
OutputSize estimate_output_size(const Checkpoint& input, const CalibrationPlan& plan);

// What write_calibrated_checkpoint wrote: its files (relative names), and the checkpoint as vLLM
// reads it (config.json, every tensor name in the index), which calibrate's serving verdict is
// decided from without reading the output back (inspect/inspect.h serving_verdicts).
struct WrittenCheckpoint {
  std::vector<std::string> files;
  nlohmann::json config;
  std::vector<std::string> tensors;
};
WrittenCheckpoint write_calibrated_checkpoint(const std::filesystem::path& staging, const Checkpoint& input,
                                              const CalibrationPlan& plan, const CalibrationResult& result,
                                              const OutputExtras& extras);

}  // namespace ctcal
