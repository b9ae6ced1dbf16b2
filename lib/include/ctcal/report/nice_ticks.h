#pragma once
// Axis ticks at round numbers, so a reader can interpolate between them: steps of 1, 2 or 5 x 10^k
// (Heckbert's "nice numbers", Graphics Gems, 1990), the first and last tick enclosing the data.
#include <string>
#include <vector>

namespace ctcal {

struct AxisTicks {
  double lo = 0, hi = 1, step = 1;  // the axis spans [lo, hi]; both are multiples of step
  std::vector<double> values;       // lo, lo + step, ..., hi
  int decimals = 0;                 // digits after the point that write every tick exactly
};

// Ticks for data in [min, max], about `intervals` of them, never a step below `min_step` (1 for
// layer numbers). A degenerate or non-finite range still gets a usable axis.
AxisTicks nice_ticks(double min, double max, int intervals = 5, double min_step = 0);

// A tick value as its label: `decimals` digits, and never "-0".
std::string format_tick(double value, int decimals);

}  // namespace ctcal
