#include "ctcal/report/kv_dtype_section.h"

#include <fmt/format.h>

#include "ctcal/report/html_page.h"

namespace ctcal {

using nlohmann::json;

namespace {

std::string num(const json& r, const char* key, const char* f) {
  return r.contains(key) && r[key].is_number() ? fmt::format(fmt::runtime(f), r[key].get<double>()) : "—";
}

// "+0.0123 [+0.01, +0.015]" from {kl_diff, kl_diff_ci95}; "—" without an interval.
std::string diff(const json& c) {
  if (!c.is_object() || !c.value("kl_diff_ci95", json()).is_array()) return "—";
  return fmt::format("{:+.4g} [{:+.3g}, {:+.3g}]", c["kl_diff"].get<double>(), c["kl_diff_ci95"][0].get<double>(),
                     c["kl_diff_ci95"][1].get<double>());
}

}  // namespace

std::string kv_dtype_section(const json& run, const std::string& label) {
  if (!run.contains("kv_cache_dtypes")) return "";
  std::string rows, notes;
  for (const auto& d : run["kv_cache_dtypes"]) {
    int64_t blocks = 0, sat = 0, flushed = 0;
    for (const auto& l : d.value("layers", json::array()))
      for (const char* p : {"k_", "v_"}) {
        blocks += l.value(std::string(p) + "blocks", int64_t{0});
        sat += l.value(std::string(p) + "saturated_blocks", int64_t{0});
        flushed += l.value(std::string(p) + "flushed_blocks", int64_t{0});
      }
    const std::string name = d.value("name", "?");
    rows += fmt::format("<tr data-format=\"{0}\"><td class=\"l\">{0}</td><td>{1}</td><td>{2}</td><td>{3}</td><td>{4}</td>"
                        "<td>{5}</td><td>{6}</td></tr>",
                        html_escape(name), num(d, "nll", "{:.5f}"), num(d, "delta_nll", "{:+.5f}"), num(d, "kl", "{:.4g}"),
                        num(d, "top1", "{:.4f}"), diff(d.value("kl_diff_vs_fp8", json())),
                        blocks ? fmt::format("{} / {} of {}", sat, flushed, blocks) : std::string("—"));
    if (d.contains("note")) notes += "<li>fp8: " + html_escape(d["note"].get<std::string>()) + "</li>";
    if (d.contains("kl_diff_vs_best_fixed")) {
      const json& c = d["kl_diff_vs_best_fixed"];
      notes += fmt::format("<li>{}: KL − {} = {}, {}</li>", html_escape(name), html_escape(c.value("best_fixed", "?")),
                           diff(c), c.value("worse_beyond_noise", false) ? "worse beyond the noise" : "not worse beyond the noise");
    }
    if (d.contains("kl_diff_vs_searched"))
      notes += fmt::format("<li>{}: KL − nvfp4 s=searched = {}: what R3 would buy. Evidence only: {}</li>", html_escape(name),
                           diff(d["kl_diff_vs_searched"]), html_escape(d.value("evidence_only", "")));
  }
  return "<h3>" + html_escape(label) + ": the KV cache in each format (vLLM --kv-cache-dtype)</h3>"
         "<table class=\"kv-dtypes\"><tr><th class=\"l\">format</th><th>NLL</th><th>&Delta;NLL</th><th>KL</th>"
         "<th>top-1 agreement</th><th>KL − fp8 [95 % interval]</th><th>blocks saturated / flushed of all (K and V)</th></tr>" +
         rows + "</table>" + (notes.empty() ? "" : "<ul class=\"note\">" + notes + "</ul>") +
         "<p class=\"note\">NVFP4 as vLLM 0.34 stores it (FlashInfer nvfp4_append_quantize_block): 16-element blocks with an "
         "E4M3 scale under the per-tensor decode multiplier s named in each row. A saturated block's amax / (6 s) passed "
         "448 and its largest values clipped; a flushed block rounded its scale to 0 and is stored as zeros. Interval: "
         "paired bootstrap over the held-out samples.</p>";
}

}  // namespace ctcal
