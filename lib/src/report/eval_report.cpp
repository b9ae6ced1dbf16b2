#include "ctcal/report/eval_report.h"

#include <cmath>
#include <map>
#include <set>

#include <fmt/format.h>

#include "ctcal/report/clipped_section.h"
#include "ctcal/report/kv_dtype_section.h"
#include "ctcal/report/metric_definitions.h"
#include "ctcal/report/range_section.h"
#include "ctcal/report/scheme_words.h"
#include "ctcal/report/svg_chart.h"
#include "ctcal/report/verdict_words.h"
#include "ctcal/util/sha256.h"
#include "ctcal/version.h"

namespace ctcal {

using nlohmann::json;

namespace {

std::string num(const json& r, const char* key, const char* f) {
  return r.contains(key) && r[key].is_number() ? fmt::format(fmt::runtime(f), r[key].get<double>()) : "";
}

// The mean over layers the terminal table prints: layers where both K and V SQNR are finite
// (a lossless layer's +inf is null in the document and left out).
struct MeanSqnr {
  std::string k = "—", v = "—", q;
};
MeanSqnr mean_sqnr(const json& run) {
  double k = 0, v = 0, q = 0;
  int n = 0, nq = 0;
  for (const auto& l : run.value("layers", json::array())) {
    if (l.value("k_sqnr_db", json()).is_number() && l.value("v_sqnr_db", json()).is_number()) {
      k += l["k_sqnr_db"].get<double>();
      v += l["v_sqnr_db"].get<double>();
      ++n;
    }
    if (l.value("q_sqnr_db", json()).is_number()) q += l["q_sqnr_db"].get<double>(), ++nq;
  }
  MeanSqnr m;
  if (n) m.k = fmt::format("{:.2f}", k / n), m.v = fmt::format("{:.2f}", v / n);
  if (nq) m.q = fmt::format("{:.2f}", q / nq);
  return m;
}

std::string metrics_table(const json& doc, const std::vector<EvalRunInfo>& runs) {
  const json& list = doc["quantized"];
  bool any_q = false;
  for (const auto& r : list) any_q = any_q || !mean_sqnr(r).q.empty();
  std::string h = "<table class=\"metrics\"><tr><th class=\"l\">run</th><th class=\"l\">scheme</th><th>NLL</th><th>&Delta;NLL</th>"
                  "<th>PPL</th><th>KL(baseline&#8214;quantized)</th><th>top-1 agreement</th><th>K SQNR (dB)</th><th>V SQNR (dB)</th>";
  if (any_q) h += "<th>Q SQNR (dB)</th>";
  h += "</tr>";
  const json& b = doc["baseline"];
  h += "<tr class=\"baseline\"><td class=\"l\">baseline</td><td class=\"l\">unquantized</td><td>" + num(b, "nll", "{:.5f}") +
       "</td><td></td><td>" + num(b, "ppl", "{:.4f}") + "</td><td></td><td></td><td></td><td></td>" + (any_q ? "<td></td>" : "") + "</tr>";
  for (std::size_t i = 0; i < list.size(); ++i) {
    const json& r = list[i];
    const EvalRunInfo& info = runs[i];
    const MeanSqnr m = mean_sqnr(r);
    h += fmt::format("<tr class=\"run\" data-run=\"{0}\"><td class=\"l name\" title=\"{0}\">{1}</td><td class=\"l scheme\">{2}</td>",
                     html_escape(info.source), html_escape(info.label), html_escape(scheme_phrase(info.kv, info.q, info.transforms)));
    h += "<td>" + num(r, "nll", "{:.5f}") + "</td><td>" + num(r, "delta_nll", "{:+.5f}") + "</td><td>" + num(r, "ppl", "{:.4f}") +
         "</td><td>" + num(r, "kl", "{:.4g}") + "</td><td>" + num(r, "top1", "{:.4f}") + "</td><td class=\"k-sqnr\">" + m.k +
         "</td><td class=\"v-sqnr\">" + m.v + "</td>";
    if (any_q) h += "<td class=\"q-sqnr\">" + m.q + "</td>";
    h += "</tr>";
    if (r.contains("unit_scales")) {
      // The run's scheme with every scale 1.0, on the same tokens: what vLLM does without scales.
      const json& u = r["unit_scales"];
      const MeanSqnr mu = mean_sqnr(u);
      h += fmt::format("<tr class=\"unit-scales\" data-run=\"{}\"><td class=\"l name\">&nbsp;&nbsp;same scheme, every "
                       "scale 1.0</td><td class=\"l scheme\"></td>",
                       html_escape(info.source));
      h += "<td>" + num(u, "nll", "{:.5f}") + "</td><td>" + num(u, "delta_nll", "{:+.5f}") + "</td><td>" + num(u, "ppl", "{:.4f}") +
           "</td><td>" + num(u, "kl", "{:.4g}") + "</td><td>" + num(u, "top1", "{:.4f}") + "</td><td>" + mu.k + "</td><td>" +
           mu.v + "</td>";
      if (any_q) h += "<td>" + mu.q + "</td>";
      h += "</tr>";
    }
  }
  return h + "</table><p class=\"note\">SQNR columns: the mean over layers of the per-layer values plotted below, as "
             "<code>ctcal eval</code> prints them. Hover a run's name for its full path. Indented rows: the run's scheme with "
             "every scale 1.0 and zero point 0, what vLLM uses when a checkpoint has no scales.</p>";
}

// Calibrated against scale 1.0, per run: the KL difference, its paired-bootstrap interval over
// samples, and a winner only where the interval leaves zero out (eval/unit_scales_verdict.h).
std::string unit_scales_verdicts(const json& doc, const std::vector<EvalRunInfo>& runs) {
  std::string rows;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const json& r = doc["quantized"][i];
    if (!r.contains("unit_scales") || !r.contains("kl_diff")) continue;
    const json ci = r.value("kl_diff_ci95", json());
    rows += fmt::format("<tr data-run=\"{}\"><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{:+.3g}</td><td>{}</td>"
                        "<td class=\"l verdict\">{}</td></tr>",
                        html_escape(runs[i].source), html_escape(runs[i].label), num(r, "kl", "{:.4g}"),
                        num(r["unit_scales"], "kl", "{:.4g}"), r["kl_diff"].get<double>(),
                        ci.is_array() ? fmt::format("[{:+.3g}, {:+.3g}]", ci[0].get<double>(), ci[1].get<double>()) : "—",
                        verdict_words(r.value("wins", "")));
  }
  if (rows.empty()) return "";
  const json& b = doc["quantized"][0].value("kl_diff_bootstrap", json::object());
  return "<h2>Calibrated scales against scale 1.0</h2><table class=\"verdicts\"><tr><th class=\"l\">run</th>"
         "<th>KL, calibrated</th><th>KL, every scale 1.0</th><th>difference</th><th>95 % interval</th>"
         "<th class=\"l\">verdict</th></tr>" +
         rows +
         fmt::format("</table><p class=\"note\">Difference: KL(calibrated) − KL(scale 1.0), nats/token; below zero the "
                     "calibrated scales are closer to the unquantized model. Interval: paired bootstrap over the {} "
                     "samples ({} resamples, seed {}; both runs' per-sample KL resampled together), 95 % percentile "
                     "interval. A winner is named only when the interval leaves zero out: FP8's relative step is the same "
                     "across its range, so scales a few percent apart often differ by rounding luck alone.</p>",
                     b.value("samples", json("?")).dump(), b.value("resamples", json("?")).dump(),
                     b.value("seed", json("?")).dump());
}

// SQNR per layer, one panel per number format: runs a format apart differ by ~6 dB per bit, and
// on one axis the format with the higher SQNR was flattened into a line.
std::string sqnr_panels(const json& doc, const std::vector<EvalRunInfo>& runs) {
  std::vector<std::string> formats;
  std::map<std::string, std::vector<std::size_t>> members;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const std::string f = format_name(runs[i].kv);
    if (!members.count(f)) formats.push_back(f);
    members[f].push_back(i);
  }
  std::string h = "<h2>SQNR per layer</h2><p class=\"note\">One panel per number format, each with its own axis: a format's "
                  "SQNR sits about 6 dB per bit away from another's, and one shared axis would flatten the closer runs "
                  "together. Gaps in a line are lossless layers (infinite SQNR).</p>";
  for (const auto& f : formats) {
    h += fmt::format("<h3>{} runs</h3><div class=\"charts\">", html_escape(f));
    for (const char* site : {"k", "v", "q"}) {  // K and V side by side, Q (rarer) after
      const std::string key = std::string(site) + "_sqnr_db";
      ChartSpec spec;
      spec.title = fmt::format("{} SQNR per layer — {}", site[0] == 'q' ? "Q" : site[0] == 'k' ? "K" : "V", f);
      spec.x_label = "layer";
      spec.y_label = "SQNR (dB)";
      for (std::size_t i : members[f]) {
        ChartSeries s{ChartSeries::Kind::kLine, runs[i].label, series_color(i), {}, {}};
        for (const auto& l : doc["quantized"][i].value("layers", json::array())) {
          if (!l.contains(key)) continue;
          const double x = l["layer"].get<double>();
          const double y = l[key].is_number() ? l[key].get<double>() : std::nan("");
          s.points.push_back({x, y, fmt::format("{}, layer {}: {:.2f} dB", runs[i].label, x, y)});
          spec.categories = std::max<int64_t>(spec.categories, static_cast<int64_t>(x) + 1);
        }
        if (!s.points.empty()) spec.series.push_back(std::move(s));
      }
      if (!spec.series.empty()) h += render_chart(spec);
    }
    h += "</div>";
  }
  return h;
}

std::string ranges(const json& doc, const std::vector<EvalRunInfo>& runs) {
  std::string h = "<h2>Activation ranges and scales</h2>" + range_section_note("under each run's ranges");
  const std::string measured_on = fmt::format("the held-out data ({} samples, {} predicted tokens)",
                                              doc.value("samples", json("?")).dump(), doc["baseline"].value("tokens", json("?")).dump());
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const EvalRunInfo& r = runs[i];
    h += fmt::format("<h3 class=\"run-ranges\">{}</h3><p class=\"note\">{}", html_escape(r.label),
                     html_escape(scheme_phrase(r.kv, r.q, r.transforms)));
    const json& c = r.calibration;
    if (c.is_object())
      h += html_escape(fmt::format(". Calibrated by ctcal {} on {} samples, {} tokens, seed {}.", c.value("ctcal_version", "?"),
                                   c.value("samples", json("?")).dump(), c.value("tokens", json("?")).dump(),
                                   c.value("seed", json("?")).dump()));
    h += "</p>";
    if (r.layers.is_array() && !r.layers.empty()) {
      h += range_section(r.layers, r.kv, r.q, r.label + ": ");
    } else if (r.checkpoint) {
      h += "<p class=\"note\">This checkpoint has no <code>ctcal_report.json</code> (not written by ctcal), so its "
           "activation ranges were never recorded; its scales are in the SQNR panels' runs only.</p>";
    } else {
      h += "<p class=\"note\">Calibrated on the fly from the recipe: <code>ctcal eval</code> keeps no activation ranges "
           "for such runs. Calibrate the recipe with <code>ctcal calibrate</code> and evaluate the checkpoint with "
           "<code>--quantized</code> to see them here.</p>";
    }
    // Every run, ranges or not: the clamped fractions this eval counted.
    const json& run = doc["quantized"][i];
    h += clipped_table(run.value("layers", json::array()), run.value("unit_scales", json::object()).value("layers", json()),
                       measured_on);
  }
  return h;
}

}  // namespace

std::string render_eval_report(const json& doc, const std::vector<EvalRunInfo>& runs, const EvalReportInputs& in,
                               const Provenance& provenance) {
  std::string h = page_begin("ctcal eval report");
  std::vector<std::pair<std::string, std::string>> facts = {
      {"model", in.model},
      {"held-out dataset", in.dataset},
      {"evaluated on", fmt::format("{} samples (≤ {} tokens each), {} predicted tokens", doc.value("samples", json(0)).dump(),
                                   in.max_seq_length, doc["baseline"].value("tokens", json(0)).dump())},
  };
  if (in.calibration_dataset) facts.push_back({"recipe runs calibrated on", *in.calibration_dataset});
  h += facts_list(facts);
  h += "<h2>Accuracy of each run</h2>" + metrics_table(doc, runs);
  h += unit_scales_verdicts(doc, runs);
  std::string dtypes;  // --kv-cache-dtype nvfp4
  for (std::size_t i = 0; i < runs.size(); ++i) dtypes += kv_dtype_section(doc["quantized"][i], runs[i].label);
  if (!dtypes.empty()) h += "<h2>KV cache formats</h2>" + dtypes;
  h += "<h2>What the numbers mean</h2>" + metric_definitions();
  h += sqnr_panels(doc, runs);
  h += ranges(doc, runs);
  return h + page_end(provenance);
}

void write_eval_report(const std::filesystem::path& path, const json& doc, const EvalReportInputs& in) {
  std::vector<EvalRunInfo> runs;
  for (const auto& r : doc["quantized"]) runs.push_back(read_eval_run_info(r));
  // Two runs with the same directory name in different places: legends show the full paths.
  std::multiset<std::string> labels;
  for (const auto& r : runs) labels.insert(r.label);
  for (auto& r : runs)
    if (labels.count(r.label) > 1) r.label = r.source;

  Provenance p{kVersion, "", utc_now(), {}};
  p.seed = fmt::format("{} (sampling of the held-out{} text)", in.seed, in.calibration_dataset ? " and calibration" : "");
  p.inputs.push_back({"held-out dataset " + in.dataset, sha256_file_hex(in.dataset)});
  if (in.calibration_dataset) p.inputs.push_back({"calibration dataset " + *in.calibration_dataset, sha256_file_hex(*in.calibration_dataset)});
  for (const auto& r : runs) {
    if (!r.checkpoint) {
      p.inputs.push_back({"recipe " + r.source, sha256_file_hex(r.source)});
      continue;
    }
    const json& c = r.calibration;
    if (!c.is_object()) continue;
    if (c.contains("seed")) p.seed += fmt::format("; {} calibrated with seed {}", r.label, c["seed"].dump());
    if (c.value("recipe_sha256", json()).is_string()) p.inputs.push_back({r.label + " recipe", c["recipe_sha256"]});
    if (c.value("dataset_sha256", json()).is_string()) p.inputs.push_back({r.label + " calibration dataset", c["dataset_sha256"]});
  }
  write_report_file(path, render_eval_report(doc, runs, in, p));
}

}  // namespace ctcal
