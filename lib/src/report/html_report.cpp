#include "ctcal/report/html_report.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>

#include "ctcal/error.h"

namespace ctcal {

using nlohmann::json;

namespace {

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"};

std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

struct Series {
  std::string label, color;
  std::vector<std::pair<double, double>> points;  // (x, y)
  bool line = false;
};

// A plain SVG chart: axes with min/max ticks, points or polylines, a legend.
std::string svg_chart(const std::string& title, const std::string& ylabel, const std::vector<Series>& series,
                      double xmax) {
  const double W = 560, H = 260, L = 64, R = 16, T = 28, B = 40;
  double ymin = std::numeric_limits<double>::infinity(), ymax = -ymin;
  for (const auto& s : series)
    for (auto [x, y] : s.points)
      if (std::isfinite(y)) { ymin = std::min(ymin, y); ymax = std::max(ymax, y); }
  if (!std::isfinite(ymin)) { ymin = 0; ymax = 1; }
  if (ymax == ymin) { ymax += 1; ymin -= ymin == 0 ? 0 : 1; }
  const double pad = 0.05 * (ymax - ymin);
  ymin -= pad;
  ymax += pad;
  auto px = [&](double x) { return L + (W - L - R) * (xmax > 0 ? x / xmax : 0.5); };
  auto py = [&](double y) { return H - B - (H - T - B) * (y - ymin) / (ymax - ymin); };
  std::string s = fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}" role="img">)", W, H, W, H);
  s += fmt::format(R"(<rect x="0" y="0" width="{}" height="{}" fill="#fff"/><text x="{}" y="18" font-size="14" font-weight="bold">{}</text>)", W, H, L, esc(title));
  s += fmt::format(R"(<line x1="{0}" y1="{1}" x2="{2}" y2="{1}" stroke="#333"/><line x1="{0}" y1="{3}" x2="{0}" y2="{1}" stroke="#333"/>)", L, H - B, W - R, T);
  for (int i = 0; i <= 4; ++i) {
    const double y = ymin + (ymax - ymin) * i / 4.0;
    s += fmt::format(R"(<line x1="{}" y1="{:.1f}" x2="{}" y2="{:.1f}" stroke="#eee"/><text x="{}" y="{:.1f}" font-size="10" text-anchor="end">{:.3g}</text>)",
                     L, py(y), W - R, py(y), L - 4, py(y) + 3, y);
  }
  for (int x = 0; x <= static_cast<int>(xmax); x += std::max(1, static_cast<int>(xmax) / 10))
    s += fmt::format(R"(<text x="{:.1f}" y="{}" font-size="10" text-anchor="middle">{}</text>)", px(x), H - B + 14, x);
  s += fmt::format(R"(<text x="{:.1f}" y="{}" font-size="11" text-anchor="middle">layer</text>)", (L + W - R) / 2, H - 6);
  s += fmt::format(R"svg(<text x="12" y="{:.1f}" font-size="11" transform="rotate(-90 12 {:.1f})" text-anchor="middle">{}</text>)svg", (T + H - B) / 2, (T + H - B) / 2, esc(ylabel));
  for (std::size_t k = 0; k < series.size(); ++k) {
    const Series& se = series[k];
    if (se.line) {
      std::string pts;
      for (auto [x, y] : se.points)
        if (std::isfinite(y)) pts += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
      s += fmt::format(R"(<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>)", pts, se.color);
    }
    for (auto [x, y] : se.points)
      if (std::isfinite(y)) s += fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="3" fill="{}"/>)", px(x), py(y), se.color);
    s += fmt::format(R"(<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}" font-size="10">{}</text>)",
                     W - R - 170, T + 4 + 14 * k, se.color, W - R - 156, T + 13 + 14 * k,
                     esc(se.label.size() > 28 ? "..." + se.label.substr(se.label.size() - 25) : se.label));
  }
  return s + "</svg>";
}

std::string metric(const json& r, const char* key, const char* f) {
  return r.contains(key) && r[key].is_number() ? fmt::format(fmt::runtime(f), r[key].get<double>()) : "";
}

}  // namespace

std::string render_html_report(const json& doc) {
  std::string h = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>" + esc(doc.value("title", "ctcal report")) +
                  "</title><style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:12px 0}"
                  "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
                  ".charts{display:flex;flex-wrap:wrap;gap:12px}h2{margin-top:28px}</style></head><body>";
  h += "<h1>" + esc(doc.value("title", "ctcal report")) + "</h1><p>" + esc(doc.value("subtitle", "")) + "</p>";
  const json runs = doc.value("runs", json::array());
  if (doc.contains("baseline") || std::any_of(runs.begin(), runs.end(), [](const json& r) { return r.contains("nll"); })) {
    h += "<h2>Accuracy</h2><table><tr><th>run</th><th>NLL</th><th>&Delta;NLL</th><th>PPL</th><th>KL</th><th>top-1</th></tr>";
    if (doc.contains("baseline")) {
      const json& b = doc["baseline"];
      h += "<tr><td>baseline (unquantized)</td><td>" + metric(b, "nll", "{:.5f}") + "</td><td></td><td>" + metric(b, "ppl", "{:.4f}") + "</td><td></td><td></td></tr>";
    }
    for (const auto& r : runs)
      h += "<tr><td>" + esc(r.value("name", "")) + "</td><td>" + metric(r, "nll", "{:.5f}") + "</td><td>" + metric(r, "delta_nll", "{:+.5f}") +
           "</td><td>" + metric(r, "ppl", "{:.4f}") + "</td><td>" + metric(r, "kl", "{:.4g}") + "</td><td>" + metric(r, "top1", "{:.4f}") + "</td></tr>";
    h += "</table>";
  }
  // SQNR per layer, all runs on one chart per site.
  bool any_sqnr = false;
  for (const auto& r : runs)
    for (const auto& l : r.value("layers", json::array())) any_sqnr = any_sqnr || l.contains("k_sqnr_db");
  if (any_sqnr) {
    h += "<h2>SQNR per layer</h2><div class=\"charts\">";
    for (const char* site : {"k", "v"}) {
      std::vector<Series> series;
      double xmax = 0;
      for (std::size_t i = 0; i < runs.size(); ++i) {
        Series s{runs[i].value("name", ""), kColors[i % 8], {}, true};
        for (const auto& l : runs[i].value("layers", json::array())) {
          const std::string key = std::string(site) + "_sqnr_db";
          const double y = l.contains(key) && l[key].is_number() ? l[key].get<double>() : std::nan("");
          s.points.emplace_back(l["layer"].get<double>(), y);
          xmax = std::max(xmax, l["layer"].get<double>());
        }
        series.push_back(s);
      }
      h += svg_chart(fmt::format("{} SQNR (dB)", site == std::string("k") ? "K" : "V"), "dB", series, xmax);
    }
    h += "</div>";
  }
  // Scales per head, one chart per run and site.
  for (std::size_t i = 0; i < runs.size(); ++i) {
    h += "<h2>Scales: " + esc(runs[i].value("name", "")) + "</h2><div class=\"charts\">";
    for (const char* site : {"q", "k", "v"}) {
      const std::string key = std::string(site) + "_scale";
      std::vector<Series> series;
      double xmax = 0;
      std::size_t heads = 0;
      for (const auto& l : runs[i].value("layers", json::array()))
        if (l.contains(key)) heads = std::max(heads, l[key].size());
      if (heads == 0) continue;
      for (std::size_t hd = 0; hd < heads; ++hd) {
        Series s{heads == 1 ? "per tensor" : fmt::format("head {}", hd), kColors[hd % 8], {}, heads == 1};
        for (const auto& l : runs[i].value("layers", json::array())) {
          if (!l.contains(key) || hd >= l[key].size()) continue;
          s.points.emplace_back(l["layer"].get<double>(), l[key][hd].get<double>());
          xmax = std::max(xmax, l["layer"].get<double>());
        }
        series.push_back(s);
        if (series.size() == 8 && heads > 8) break;  // the legend stays readable; the rest are in the JSON
      }
      h += svg_chart(std::string(site) + "_scale per layer" + (heads > 8 ? " (first 8 heads)" : ""), key, series, xmax);
    }
    h += "</div>";
  }
  h += "<p style=\"color:#888\">Written by ctcal. Self-contained: no scripts, no network.</p></body></html>\n";
  return h;
}

void write_html_report(const std::filesystem::path& path, const json& doc) {
  const auto tmp = std::filesystem::path(path.string() + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << render_html_report(doc);
    if (!out) throw InputError(fmt::format("{}: cannot write the report", path.string()));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw InputError(fmt::format("{}: cannot write the report: {}", path.string(), ec.message()));
}

}  // namespace ctcal
