#include "ctcal/report/clipped_section.h"

#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "ctcal/report/html_page.h"

namespace ctcal {

using nlohmann::json;

std::string clipped_percent(const json& f) {
  // null: the document's NaN (eval saw no value at this site), as nlohmann writes it.
  if (!f.is_number() || std::isnan(f.get<double>())) return "—";
  const double p = 100 * f.get<double>();
  return p == 0 ? "0 %" : fmt::format("{:.3g} %", p);
}

std::string clipped_table(const json& layers, const json& unit_layers, const std::string& measured_on) {
  const bool unit = unit_layers.is_array() && !unit_layers.empty();
  std::vector<std::string> sites;
  for (const char* s : {"k", "v", "q"})
    for (const auto& l : layers)
      if (l.contains(std::string(s) + "_clipped_fraction")) {
        sites.push_back(s);
        break;
      }
  std::string h = "<table class=\"clipped\"><tr><th>layer</th>";
  for (const auto& s : sites) {
    const std::string site = s == "k" ? "K" : s == "v" ? "V" : "Q";
    h += fmt::format("<th>{} clamped, calibrated</th>", site);
    if (unit) h += fmt::format("<th>{} clamped, scale 1.0</th>", site);
  }
  h += "</tr>";
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const json& l = layers[i];
    h += fmt::format("<tr data-layer=\"{0}\"><td>{0}</td>", l.value("layer", json(i)).dump());
    for (const auto& s : sites) {
      const std::string key = s + "_clipped_fraction";
      auto cell = [&](const json& f, const char* run) {
        const bool some = f.is_number() && f.get<double>() > 0;
        h += fmt::format("<td data-col=\"{}-{}\"{}>{}</td>", s, run, some ? " style=\"color:#b00\"" : "", clipped_percent(f));
      };
      cell(l.value(key, json()), "calibrated");
      if (unit) cell(i < unit_layers.size() ? unit_layers[i].value(key, json()) : json(), "unit");
    }
    h += "</tr>";
  }
  h += "</table>";
  return h + "<p class=\"note\">Clamped: the share of values whose quantization saturated — past the last code by more "
             "than half a step (FP8 E4M3: |x / scale| &gt; 464; int: beyond the code range by 0.5), where rounding alone "
             "would no longer land on the last code. Counted by <code>ctcal eval</code>'s fake quantization over every value "
             "quantized on " +
         html_escape(measured_on) + (unit ? ", for the calibrated scales and for every scale 1.0 (vLLM's default without scales)." : ".") +
         "</p>";
}

}  // namespace ctcal
