#include "ctcal/report/range_section.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "ctcal/quant/qparams.h"
#include "ctcal/report/html_page.h"
#include "ctcal/report/svg_chart.h"

namespace ctcal {

using nlohmann::json;

namespace {

constexpr double kLayerWidth = 0.84;  // of one x unit: a layer's heads share it, left to right
// A scale is rounded once into the model's dtype, so a range that was fitted to the data can end
// a few ulps short of it; such slivers are not called clamping.
constexpr double kReachTolerance = 5e-5;

std::vector<double> numbers(const json& j, const char* key) {
  std::vector<double> v;
  if (j.contains(key) && j[key].is_array())
    for (const auto& x : j[key]) v.push_back(x.is_number() ? x.get<double>() : std::nan(""));
  return v;
}

// One site of one layer as ctcal_report.json records it, each observed head paired with the
// scale and zero point that apply to it (one pair for per-tensor scales).
struct SiteRanges {
  std::vector<double> head_min, head_max;
  std::vector<Representable> range;  // [heads]
  std::vector<double> scale, zero_point;
};

SiteRanges read_site(const json& s, const QuantArgs& a) {
  SiteRanges r;
  r.head_min = numbers(s, "head_min");
  r.head_max = numbers(s, "head_max");
  if (r.head_min.empty() && s.contains("min")) r.head_min = {s["min"].get<double>()}, r.head_max = {s["max"].get<double>()};
  r.scale = numbers(s, "scale");
  r.zero_point = numbers(s, "zero_point");
  if (r.zero_point.size() != r.scale.size()) r.zero_point.assign(r.scale.size(), 0.0);
  const std::size_t n = r.head_min.size();
  for (std::size_t h = 0; h < n && !r.scale.empty(); ++h) {
    // Per-head scales map onto observed heads in order; a per-tensor scale applies to all.
    const std::size_t k = std::min(r.scale.size() - 1, h * r.scale.size() / n);
    r.range.push_back(representable_range(a, r.scale[k], r.zero_point[k]));
  }
  return r;
}

// How far a head's observed values reach into its representable range: 1 = they touch its end,
// above 1 = values beyond it were clamped. Each side of zero is measured against the range's end
// on that side; zero itself is inside every range (calculate_qparams puts it there).
double reach(double mn, double mx, const Representable& r) {
  const double inf = std::numeric_limits<double>::infinity();
  const double above = mx <= 0 ? 0 : r.hi > 0 ? mx / r.hi : inf;  // positive values against the top
  const double below = mn >= 0 ? 0 : r.lo < 0 ? mn / r.lo : inf;  // negative values against the bottom
  return std::max(above, below);
}

std::string span_text(const std::vector<double>& v) {
  if (v.empty()) return "";
  const auto [mn, mx] = std::minmax_element(v.begin(), v.end());
  return *mn == *mx ? fmt::format("{:.4g}", *mn) : fmt::format("{:.4g} … {:.4g}", *mn, *mx);
}

std::string zero_points_text(const std::vector<double>& v) {
  if (v.size() > 8) return span_text(v);
  std::string s;
  for (double z : v) s += (s.empty() ? "" : ", ") + fmt::format("{:g}", z + 0.0);  // + 0.0: -0 prints as 0
  return s;
}

const char* site_label(const std::string& site) { return site == "q" ? "Q" : site == "k" ? "K" : "V"; }

std::string site_chart(const json& layers, const std::string& site, const QuantArgs& a, const std::string& title) {
  ChartSeries band{ChartSeries::Kind::kBand, "representable range\n" + representable_words(a), "#0072B2", {}, {}};
  ChartSeries seen{ChartSeries::Kind::kBar, "observed min … max", "#333333", {}, {}};
  ChartSeries over{ChartSeries::Kind::kBar, "observed beyond range\n(clamped)", "#D55E00", {}, {}};
  std::vector<std::pair<double, SiteRanges>> rows;  // (layer, its ranges)
  int64_t categories = 0;
  std::size_t heads = 1;
  for (const auto& l : layers) {
    if (!l.contains(site)) continue;
    rows.emplace_back(l["layer"].get<double>(), read_site(l[site], a));
    categories = std::max<int64_t>(categories, static_cast<int64_t>(rows.back().first) + 1);
    heads = std::max<std::size_t>(heads, rows.back().second.head_min.size());
  }
  // Past 128 bars (32 layers x 4 heads) a bar per head is a pixel or two wide: one bar per layer
  // then spans all its heads, clamped parts still per head (the table keeps each head's reach).
  const bool merged = heads > 1 && static_cast<std::size_t>(categories) * heads > 128;
  for (const auto& [x, r] : rows) {
    if (r.range.empty()) continue;
    const double w = merged ? kLayerWidth : kLayerWidth / static_cast<double>(std::max<std::size_t>(r.head_min.size(), 1));
    if (merged) {
      // One band from the lowest to the highest representable value of the layer's heads, one bar
      // over everything they produced.
      Representable all = r.range[0];
      for (const auto& rr : r.range) all.lo = std::min(all.lo, rr.lo), all.hi = std::max(all.hi, rr.hi);
      const double mn = *std::min_element(r.head_min.begin(), r.head_min.end());
      const double mx = *std::max_element(r.head_max.begin(), r.head_max.end());
      const std::string tip = fmt::format("layer {}, all heads: observed [{:.4g}, {:.4g}], representable [{:.4g}, {:.4g}]", x, mn,
                                          mx, all.lo, all.hi);
      band.bars.push_back({x, all.lo, all.hi, w * 0.9, tip});
      seen.bars.push_back({x, mn, mx, w * 0.45, tip});
    }
    for (std::size_t h = 0; h < r.range.size(); ++h) {
      const double cx = merged ? x : x - kLayerWidth / 2 + w * (static_cast<double>(h) + 0.5);
      const Representable& rr = r.range[h];
      const std::string where = r.head_min.size() > 1 ? fmt::format("layer {} head {}", x, h) : fmt::format("layer {}", x);
      const std::string tip = fmt::format("{}: observed [{:.4g}, {:.4g}], representable [{:.4g}, {:.4g}]", where,
                                          r.head_min[h], r.head_max[h], rr.lo, rr.hi);
      if (!merged) {
        // A per-tensor scale gives every head one range: one band across the layer says so.
        if (r.scale.size() > 1) band.bars.push_back({cx, rr.lo, rr.hi, w * 0.9, tip});
        else if (h == 0) band.bars.push_back({x, rr.lo, rr.hi, kLayerWidth, fmt::format("layer {}: representable [{:.4g}, {:.4g}], scale {:.4g}", x, rr.lo, rr.hi, r.scale[0])});
        seen.bars.push_back({cx, r.head_min[h], r.head_max[h], w * 0.45, tip});
      }
      if (r.head_max[h] > rr.hi + kReachTolerance * std::fabs(rr.hi)) over.bars.push_back({cx, rr.hi, r.head_max[h], w * 0.45, tip});
      if (r.head_min[h] < rr.lo - kReachTolerance * std::fabs(rr.lo)) over.bars.push_back({cx, r.head_min[h], rr.lo, w * 0.45, tip});
    }
  }
  ChartSpec spec;
  spec.title = fmt::format("{}{} range per layer", title, site_label(site));
  spec.x_label = merged      ? fmt::format("layer (bars: heads 0–{} together)", heads - 1)
                 : heads > 1 ? fmt::format("layer (bars: heads 0–{}, left to right)", heads - 1)
                             : "layer";
  spec.y_label = std::string(site_label(site)) + " value";
  spec.categories = std::max<int64_t>(categories, 1);
  spec.series = {band, seen};
  if (!over.bars.empty()) spec.series.push_back(over);
  return render_chart(spec);
}

std::string range_table(const json& layers, const std::vector<std::string>& sites, const QuantArgs& kv,
                        const std::optional<QuantArgs>& q) {
  bool zero_points = !kv.symmetric || (q && !q->symmetric);
  std::string h = "<table class=\"ranges\"><tr><th>layer</th><th class=\"l\">site</th><th>observed min</th><th>observed max</th>"
                  "<th>scale</th><th>representable range</th><th>reach (worst head)</th>";
  if (zero_points) h += "<th>zero point</th>";
  h += "</tr>";
  for (const auto& l : layers)
    for (const auto& site : sites) {
      if (!l.contains(site)) continue;
      const QuantArgs& a = site == "q" && q ? *q : kv;
      const SiteRanges r = read_site(l[site], a);
      if (r.range.empty()) continue;
      double worst = 0;
      for (std::size_t hd = 0; hd < r.range.size(); ++hd) worst = std::max(worst, reach(r.head_min[hd], r.head_max[hd], r.range[hd]));
      double lo = r.range[0].lo, hi = r.range[0].hi;
      for (const auto& rr : r.range) lo = std::min(lo, rr.lo), hi = std::max(hi, rr.hi);
      h += fmt::format("<tr><td>{}</td><td class=\"l\">{}</td><td>{:.4g}</td><td>{:.4g}</td><td>{}</td><td>[{:.4g}, {:.4g}]</td>",
                       l["layer"].get<int64_t>(), site_label(site), *std::min_element(r.head_min.begin(), r.head_min.end()),
                       *std::max_element(r.head_max.begin(), r.head_max.end()), span_text(r.scale), lo, hi);
      h += worst > 1 + kReachTolerance ? fmt::format("<td style=\"color:#b00\">{:.4f} (clamped)</td>", worst) : fmt::format("<td>{:.4f}</td>", worst);
      if (zero_points) h += "<td>" + zero_points_text(r.zero_point) + "</td>";
      h += "</tr>";
    }
  return h + "</table>";
}

// Why reach can exceed 1 with these args even though the observer saw every value.
std::string reach_explanation(const QuantArgs& a) {
  const std::string obs = a.observer.value_or("static_minmax");
  if (obs.find("mse") != std::string::npos)
    return "The " + html_escape(obs) + " observer shrinks the range where that lowers the total error: values past it "
           "are clamped by design.";
  std::string s;
  if (obs.find("memoryless") != std::string::npos)
    s = "The " + html_escape(obs) + " observer keeps only the last calibration batch's range: earlier batches can reach past it. ";
  else if (obs == "minmax")
    s = "The minmax observer's moving average ends short of the extremes of single batches. ";
  if (!a.symmetric)
    return s + "The zero point is rounded to an integer, which shifts the range by up to half a step: one end can "
               "stop short of the observed extreme (compressed-tensors computes it so).";
  if (a.type == QuantType::kInt)
    return s + "Symmetric int scales divide the absmax by (q_max − q_min)/2, so the positive end, q_max × scale, "
               "stops half a step short of it (compressed-tensors computes it so).";
  return s + "A symmetric FP8 scale is absmax / 448: the range ends at the observed absmax, up to the rounding of the "
             "scale into the model's dtype.";
}

}  // namespace

Representable representable_range(const QuantArgs& a, double scale, double zero_point) {
  const QuantRange q = calculate_range(a);
  return {(q.q_min - zero_point) * scale, (q.q_max - zero_point) * scale};
}

std::string representable_words(const QuantArgs& a) {
  const QuantRange q = calculate_range(a);
  return a.symmetric ? fmt::format("scale × [{:g}, {:g}]", q.q_min, q.q_max)
                     : fmt::format("scale × ([{:g}, {:g}] − zp)", q.q_min, q.q_max);
}

std::string range_section(const json& layers, const QuantArgs& kv, const std::optional<QuantArgs>& q,
                          const std::string& title) {
  std::vector<std::string> sites;
  for (const char* s : {"k", "v", "q"})  // K and V side by side, Q (rarer) after
    if (std::any_of(layers.begin(), layers.end(), [&](const json& l) { return l.contains(s); })) sites.push_back(s);
  std::string h = "<div class=\"charts\">";
  for (const auto& s : sites) h += site_chart(layers, s, s == "q" && q ? *q : kv, title);
  h += "</div>" + range_table(layers, sites, kv, q);
  std::string why = reach_explanation(kv);
  if (q && !(*q == kv)) why += " Q: " + reach_explanation(*q);
  return h + "<p class=\"note reach\">" + why + "</p>";
}

std::string range_section_note(const std::string& clipped_where) {
  std::string h = "<p class=\"note\">Dark bars: the smallest and largest value each head produced on the calibration data, "
                  "where ctcal observes it (after RoPE and any rotation). Light bands: what the stored scale and zero point can "
                  "represent; quantization clamps values outside them. <b>Reach</b> = observed extreme ÷ representable extreme, "
                  "for the worst head: at most 1, nothing was clamped on the calibration data; past 1.00005 (more than the "
                  "rounding of a scale into the model's dtype), some values were. Reach says whether any value went past the "
                  "range, not how many did: ";
  // Calibration records ranges, not counts; only an eval pass counts the clamped values.
  if (clipped_where.empty())
    return h + "this report was made without an eval pass, so the share of clamped values was not counted. "
               "<code>ctcal eval --report</code>, and <code>ctcal calibrate --report</code> from the command line, count "
               "it.</p>";
  return h + "the share of clamped values, as eval counted it, is in the <i>clamped</i> table " + html_escape(clipped_where) + ".</p>";
}

}  // namespace ctcal
