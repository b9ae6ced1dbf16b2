#pragma once
// `ctcal eval --report`: the metrics table (every run with its scheme and K/V SQNR, the terminal
// table's columns), what each metric means, SQNR per layer with one panel per number format (an
// INT4 run sits ~20 dB below FP8 ones: a shared axis flattened the FP8 runs), each run's
// activation ranges against its scales' representable range, zero points, and provenance.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/report/eval_run_info.h"
#include "ctcal/report/html_page.h"

namespace ctcal {

// What the eval was asked to do, for the page's facts and footer.
struct EvalReportInputs {
  std::string model, dataset;
  std::optional<std::string> calibration_dataset;  // with --recipe runs
  uint64_t seed = 42;
  int64_t max_seq_length = 0;
};

// `doc`: what evaluate() returns (baseline, samples, quantized[]); `runs`: one per doc entry.
std::string render_eval_report(const nlohmann::json& doc, const std::vector<EvalRunInfo>& runs,
                               const EvalReportInputs& in, const Provenance& provenance);

// Reads each run's files, hashes the inputs, renders, writes atomically. Throws InputError.
void write_eval_report(const std::filesystem::path& path, const nlohmann::json& doc, const EvalReportInputs& in);

}  // namespace ctcal
