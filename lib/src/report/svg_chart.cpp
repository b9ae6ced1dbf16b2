#include "ctcal/report/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "ctcal/report/html_page.h"
#include "ctcal/report/nice_ticks.h"

namespace ctcal {

namespace {

// Layout in SVG user units (= CSS px at the page's scale). The legend column sits right of the
// plot area: legends drawn over the data hid the values they name.
constexpr double kWidth = 600, kLeft = 78, kTop = 38, kBottom = 50, kLegendWidth = 166, kLegendGap = 14;
constexpr double kPlotWidth = kWidth - kLeft - kLegendGap - kLegendWidth;
constexpr double kMinPlotHeight = 190, kLegendLine = 13, kLegendGapY = 7;
constexpr std::size_t kLegendChars = 22;  // ~145 px at 11 px: fits the legend column
constexpr std::size_t kTitleChars = 60;   // ~500 px in bold 14 px: fits the chart's width

bool is_lead(char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }

std::size_t char_count(const std::string& s) {
  std::size_t n = 0;
  for (char c : s) n += is_lead(c);
  return n;
}

// The byte offset after the first `chars` characters of s (s.size() when it has fewer).
std::size_t char_offset(const std::string& s, std::size_t chars) {
  std::size_t i = 0;
  for (std::size_t n = 0; i < s.size(); ++i)
    if (is_lead(s[i]) && n++ == chars) break;
  return i;
}

// A line longer than `limit` characters keeps its end, where directory and recipe names differ.
std::string keep_end(const std::string& s, std::size_t limit = kLegendChars) {
  const std::size_t n = char_count(s);
  if (n <= limit) return s;
  return "\xE2\x80\xA6" + s.substr(char_offset(s, n - (limit - 1)));
}

struct LegendLine {
  std::string text;
  bool detail = false;  // a smaller grey line under the name ("scale x [-448, 448]")
};

// A legend label's lines: its name, wrapped once at a separator (- _ / . space) when longer than
// the column, then the detail lines that follow a '\n'. Counted in characters, not bytes ("×" is
// two), and never cut inside a UTF-8 sequence.
std::vector<LegendLine> label_lines(const std::string& label) {
  std::vector<LegendLine> out;
  std::size_t start = 0;
  for (bool first = true;; first = false) {
    const std::size_t nl = label.find('\n', start);
    const std::string part = label.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    if (first && char_count(part) > kLegendChars) {
      const std::size_t limit = char_offset(part, kLegendChars);
      const std::size_t cut = part.find_last_of("-_/. ", limit - 1);
      const std::size_t at = cut == std::string::npos || cut == 0 ? limit : cut + 1;
      out.push_back({part.substr(0, at), false});
      out.push_back({keep_end(part.substr(at)), false});
    } else {
      out.push_back({keep_end(part), !first});
    }
    if (nl == std::string::npos) return out;
    start = nl + 1;
  }
}

double legend_height(const ChartSpec& spec) {
  double h = 0;
  for (const auto& se : spec.series) h += kLegendLine * static_cast<double>(label_lines(se.label).size()) + kLegendGapY;
  return h;
}

std::string title_tag(const std::string& tip) { return tip.empty() ? "" : "<title>" + html_escape(tip) + "</title>"; }

struct Frame {
  double plot_h, height;
  AxisTicks y;
  double x_min, x_max;
  double px(double x) const { return kLeft + kPlotWidth * (x - x_min) / (x_max - x_min); }
  double py(double v) const { return kTop + plot_h * (1 - (v - y.lo) / (y.hi - y.lo)); }
  double ux() const { return kPlotWidth / (x_max - x_min); }  // px per x unit
};

Frame make_frame(const ChartSpec& spec) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  auto take = [&](double v) {
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  };
  for (const auto& s : spec.series) {
    for (const auto& p : s.points) take(p.y);
    for (const auto& b : s.bars) take(b.lo), take(b.hi);
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  Frame f;
  f.plot_h = std::max(kMinPlotHeight, legend_height(spec) + 8);
  f.height = kTop + f.plot_h + kBottom;
  f.y = nice_ticks(lo, hi, static_cast<int>(f.plot_h / 40));
  f.x_min = -0.5;
  f.x_max = static_cast<double>(std::max<int64_t>(spec.categories, 1)) - 0.5;
  return f;
}

std::string axes(const ChartSpec& spec, const Frame& f) {
  const double bottom = kTop + f.plot_h, right = kLeft + kPlotWidth;
  std::string s = fmt::format(R"(<rect class="plot-area" x="{}" y="{}" width="{}" height="{:.1f}" fill="#fcfcfc" stroke="#999"/>)",
                              kLeft, kTop, kPlotWidth, f.plot_h);
  s += R"(<g class="y-ticks" font-size="11" text-anchor="end">)";
  for (double v : f.y.values) {
    const double y = f.py(v);
    s += fmt::format(R"(<line x1="{}" y1="{:.1f}" x2="{}" y2="{:.1f}" stroke="{}"/>)", kLeft, y, right, y, v == 0 ? "#aaa" : "#e6e6e6");
    s += fmt::format(R"(<text class="tick" x="{}" y="{:.1f}">{}</text>)", kLeft - 6, y + 4, format_tick(v, f.y.decimals));
  }
  s += "</g>";
  // Integer categories (layers): a round step that leaves room for the labels.
  const AxisTicks xt = nice_ticks(0, static_cast<double>(std::max<int64_t>(spec.categories - 1, 1)), 8, 1);
  s += R"(<g class="x-ticks" font-size="11" text-anchor="middle">)";
  for (double v : xt.values) {
    if (v > f.x_max) break;
    s += fmt::format(R"(<line x1="{0:.1f}" y1="{1:.1f}" x2="{0:.1f}" y2="{2:.1f}" stroke="#999"/>)", f.px(v), bottom, bottom + 4);
    s += fmt::format(R"(<text class="tick" x="{:.1f}" y="{:.1f}">{}</text>)", f.px(v), bottom + 17, format_tick(v, 0));
  }
  s += "</g>";
  s += fmt::format(R"(<text class="axis-label x-label" x="{:.1f}" y="{:.1f}" font-size="12" text-anchor="middle">{}</text>)",
                   kLeft + kPlotWidth / 2, bottom + 38, html_escape(spec.x_label));
  const double cy = kTop + f.plot_h / 2;
  s += fmt::format(R"svg(<text class="axis-label y-label" x="16" y="{0:.1f}" font-size="12" text-anchor="middle" transform="rotate(-90 16 {0:.1f})">{1}</text>)svg",
                   cy, html_escape(spec.y_label));
  return s;
}

std::string bars(const ChartSeries& se, const Frame& f, bool band) {
  std::string s;
  for (const auto& b : se.bars) {
    if (!std::isfinite(b.lo) || !std::isfinite(b.hi)) continue;
    const double w = std::max(1.5, b.width * f.ux()), x = f.px(b.x) - w / 2;
    const double top = f.py(b.hi), h = std::max(1.0, f.py(b.lo) - top);
    s += band ? fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}" fill-opacity="0.16" stroke="{}">{}</rect>)",
                            x, top, w, h, se.color, se.color, title_tag(b.tip))
              : fmt::format(R"(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}">{}</rect>)", x, top, w, h,
                            se.color, title_tag(b.tip));
  }
  return s;
}

std::string line(const ChartSeries& se, const Frame& f) {
  std::string s, pts;
  auto flush = [&] {
    if (!pts.empty()) s += fmt::format(R"(<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>)", pts, se.color);
    pts.clear();
  };
  for (const auto& p : se.points) {
    if (!std::isfinite(p.y)) {
      flush();
      continue;
    }
    pts += fmt::format("{:.1f},{:.1f} ", f.px(p.x), f.py(p.y));
  }
  flush();
  for (const auto& p : se.points)
    if (std::isfinite(p.y))
      s += fmt::format(R"(<circle cx="{:.1f}" cy="{:.1f}" r="3.5" fill="{}">{}</circle>)", f.px(p.x), f.py(p.y), se.color, title_tag(p.tip));
  return s;
}

std::string legend(const ChartSpec& spec) {
  const double x = kLeft + kPlotWidth + kLegendGap;
  double y = kTop + 4;
  std::string s = R"(<g class="legend" font-size="11">)";
  for (const ChartSeries& se : spec.series) {
    s += R"(<g class="legend-item">)" + title_tag(se.label);
    if (se.kind == ChartSeries::Kind::kLine)
      s += fmt::format(R"(<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2"/><circle cx="{}" cy="{}" r="3.5" fill="{}"/>)",
                       x, y + 6, x + 16, y + 6, se.color, x + 8, y + 6, se.color);
    else if (se.kind == ChartSeries::Kind::kBand)
      s += fmt::format(R"(<rect x="{}" y="{}" width="16" height="12" fill="{}" fill-opacity="0.16" stroke="{}"/>)", x, y, se.color, se.color);
    else
      s += fmt::format(R"(<rect x="{}" y="{}" width="8" height="12" fill="{}"/>)", x + 4, y, se.color);
    const auto lines = label_lines(se.label);
    s += fmt::format(R"(<text x="{}" y="{}">)", x + 22, y + 10);
    for (std::size_t i = 0; i < lines.size(); ++i)
      s += i == 0 ? html_escape(lines[i].text)
                  : fmt::format(R"(<tspan x="{}" dy="{}"{}>{}</tspan>)", x + 22, kLegendLine,
                                lines[i].detail ? R"( font-size="10" fill="#555")" : "", html_escape(lines[i].text));
    s += "</text></g>";
    y += kLegendLine * static_cast<double>(lines.size()) + kLegendGapY;
  }
  return s + "</g>";
}

}  // namespace

const char* series_color(std::size_t i) {
  static const char* kColors[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"};
  return kColors[i % (sizeof kColors / sizeof kColors[0])];
}

std::string render_chart(const ChartSpec& spec) {
  const Frame f = make_frame(spec);
  std::string s = fmt::format(
      R"(<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{0}" height="{1:.0f}" viewBox="0 0 {0} {1:.0f}" role="img" aria-label="{2}">)",
      kWidth, f.height, html_escape(spec.title));
  s += fmt::format(R"(<text class="chart-title" x="{}" y="22" font-size="14" font-weight="bold">{}</text>)", kLeft,
                   html_escape(keep_end(spec.title, kTitleChars)));
  s += axes(spec, f);
  // Bands first, so that the solid bars and lines they should hold are drawn over them.
  for (const auto& se : spec.series)
    if (se.kind == ChartSeries::Kind::kBand) s += bars(se, f, true);
  for (const auto& se : spec.series)
    if (se.kind == ChartSeries::Kind::kBar) s += bars(se, f, false);
  for (const auto& se : spec.series)
    if (se.kind == ChartSeries::Kind::kLine) s += line(se, f);
  return s + legend(spec) + "</svg>";
}

}  // namespace ctcal
