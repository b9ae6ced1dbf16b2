#include "ctcal/report/calibrate_report.h"

#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "ctcal/report/clipped_section.h"
#include "ctcal/report/range_section.h"
#include "ctcal/report/scheme_words.h"
#include "ctcal/report/verdict_words.h"

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
  std::string clipped_where;  // where the page shows eval's clamped fractions; "" when it has none
  if (report.contains("unit_scales_baseline")) {
    // Evidence that calibration paid off here: vLLM uses scale 1.0 when a checkpoint has none.
    const json& u = report["unit_scales_baseline"];
    h += "<h2>Calibrated scales against scale 1.0</h2>";
    std::vector<std::pair<std::string, std::string>> facts = {
        {"KL(unquantized ‖ calibrated)", fmt::format("{:.4g} nats/token", u.value("calibrated_kl", 0.0))},
        {"KL(unquantized ‖ every scale 1.0)", fmt::format("{:.4g} nats/token", u.value("unit_kl", 0.0))},
    };
    if (u.contains("kl_diff")) {
      facts.push_back({"difference", kl_diff_words(u)});
      facts.push_back({"verdict", verdict_words(u.value("wins", "")) +
                                      (u.value("significant", false) ? ": the interval leaves zero out"
                                                                     : ": the interval contains zero, the gap is within sampling noise")});
    } else {  // a ctcal_report.json from before the bootstrap: its winner had no interval
      facts.push_back({"lower KL", u.value("wins", "") == "calibrated" ? "the calibrated scales" : "scale 1.0 (no interval computed)"});
    }
    facts.push_back({"measured on", fmt::format("{} calibration samples, the same scheme and fake quantization as ctcal eval",
                                                field(u, "samples"))});
    h += facts_list(facts);
    if (u.value("layers", json()).is_array()) {
      // ctcal_report.json keeps both runs' fractions in one list; the table takes one list per run.
      json calibrated = json::array(), unit = json::array();
      for (const auto& l : u["layers"]) {
        json c = {{"layer", l["layer"]}}, s = {{"layer", l["layer"]}};
        for (const char* site : {"k", "v", "q"}) {
          const std::string key = std::string(site) + "_clipped_fraction";
          if (!l.contains(key)) continue;
          c[key] = l[key];
          s[key] = l.value("unit_" + key, json());
        }
        calibrated.push_back(c);
        unit.push_back(s);
      }
      h += clipped_table(calibrated, unit, fmt::format("the first {} calibration samples", field(u, "samples")));
      clipped_where = "in “Calibrated scales against scale 1.0” above";
    }
  }
  h += "<h2>Activation ranges against the chosen scales</h2>" + range_section_note(clipped_where);
  h += range_section(report.value("layers", json::array()), in.kv, in.q, "");
  return h + page_end(provenance);
}

}  // namespace ctcal
