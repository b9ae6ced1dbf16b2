#pragma once
// One inline SVG chart for the HTML reports: integer categories on x (layers), a linear y axis
// with round-number ticks, lines or vertical range bars, and the legend to the right of the plot
// area, never on the data. Elements carry classes (chart, plot-area, legend, tick, axis-label) so
// that tests/e2e/report_test.py can check the rendered geometry.
#include <cstdint>
#include <string>
#include <vector>

namespace ctcal {

struct ChartPoint {
  double x = 0, y = 0;  // a non-finite y breaks the line (a lossless layer's SQNR is +inf)
  std::string tip;      // hover text
};

struct ChartBar {
  double x = 0, lo = 0, hi = 0;  // a vertical span [lo, hi] centred on x
  double width = 0.6;            // in x units
  std::string tip;
};

struct ChartSeries {
  enum class Kind {
    kLine,     // polyline with a dot per point
    kBar,      // solid bars
    kBand,     // light bars with an outline, drawn under solid ones (a range that should hold them)
  };
  Kind kind = Kind::kLine;
  std::string label;  // legend text
  std::string color;
  std::vector<ChartPoint> points;
  std::vector<ChartBar> bars;
};

struct ChartSpec {
  std::string title, x_label, y_label;
  int64_t categories = 1;  // x runs over 0 .. categories-1
  std::vector<ChartSeries> series;
};

std::string render_chart(const ChartSpec& spec);

// Colours that stay apart for the colour-blind (Okabe-Ito), by index, cycling.
const char* series_color(std::size_t i);

}  // namespace ctcal
