#include "ctcal/report/calibrate_report.h"

#include <fmt/format.h>

#include "ctcal/report/range_section.h"
#include "ctcal/report/scheme_words.h"

namespace ctcal {

using nlohmann::json;

namespace {

std::string field(const json& j, const char* key) {
  if (!j.contains(key)) return "?";
  return j[key].is_string() ? j[key].get<std::string>() : j[key].dump();
}

}  // namespace

std::string render_calibrate_report(const json& report, const CalibrateReportInputs& in, const Provenance& provenance) {
  std::string h = page_begin("ctcal calibrate report");
  const json t = report.value("timings", json::object());
  h += "<h2>Plan</h2>";
  h += facts_list({
      {"model", field(report, "model")},
      {"recipe", in.recipe},
      {"scheme", scheme_phrase(in.kv, in.q, in.transforms)},
      {"dataset", in.dataset},
      {"calibrated on", fmt::format("{} samples, {} tokens (asked for {} samples of at most {} tokens)", field(report, "samples"),
                                    field(report, "tokens"), field(report, "num_samples"), field(report, "max_seq_length"))},
      {"dataset rows", fmt::format("{} rows, {} empty skipped, {} truncated", field(report, "rows"), field(report, "skipped_empty"),
                                   field(report, "truncated"))},
      {"sampling", fmt::format("seed {}, {}", field(report, "seed"),
                               report.value("shuffle", true) ? "shuffled" : "file order (--no-shuffle)")},
      {"scales stored as", field(report, "scale_dtype")},
      {"compute", field(report, "compute_dtype")},
      {"time", t.contains("calibration_s")
                   ? fmt::format("{:.2f} s calibrating ({:.0f} tokens/s), {:.2f} s setup", t["calibration_s"].get<double>(),
                                 t.value("tokens_per_s", 0.0), t.value("setup_s", 0.0))
                   : "?"},
      {"output", in.output},
  });
  if (report.contains("unit_scales_baseline")) {
    // Evidence that calibration paid off here: vLLM uses scale 1.0 when a checkpoint has none.
    const json& u = report["unit_scales_baseline"];
    h += "<h2>Calibrated scales against scale 1.0</h2>";
    h += facts_list({
        {"KL(unquantized ‖ calibrated)", fmt::format("{:.4g} nats/token", u.value("calibrated_kl", 0.0))},
        {"KL(unquantized ‖ every scale 1.0)", fmt::format("{:.4g} nats/token", u.value("unit_kl", 0.0))},
        {"winner", u.value("wins", "") == "calibrated" ? "the calibrated scales" : "scale 1.0 (vLLM's default without scales)"},
        {"measured on", fmt::format("{} calibration samples, the same scheme and fake quantization as ctcal eval",
                                    field(u, "samples"))},
    });
  }
  h += "<h2>Activation ranges against the chosen scales</h2>" + range_section_note();
  h += range_section(report.value("layers", json::array()), in.kv, in.q, "");
  return h + page_end(provenance);
}

}  // namespace ctcal
