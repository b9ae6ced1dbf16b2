#include "ctcal/quant/observer.h"

#include <cmath>
#include <limits>

#include "ctcal/error.h"

namespace ctcal {

void head_min_max(const HeadsView& v, std::vector<double>* mins, std::vector<double>* maxs) {
  mins->assign(static_cast<std::size_t>(v.heads), std::numeric_limits<double>::infinity());
  maxs->assign(static_cast<std::size_t>(v.heads), -std::numeric_limits<double>::infinity());
  for (int64_t h = 0; h < v.heads; ++h) {
    float mn = std::numeric_limits<float>::infinity(), mx = -mn;
    // Rows in parallel for wide views (Linear inputs: [seq, 1, up to intermediate]); min and max
    // do not depend on the order.
#pragma omp parallel for schedule(static) reduction(min : mn) reduction(max : mx) if (v.seq * v.head_dim >= 65536)
    for (int64_t t = 0; t < v.seq; ++t) {
      const float* p = v.data + t * v.row_stride + h * v.head_dim;
      for (int64_t d = 0; d < v.head_dim; ++d) {
        mn = std::min(mn, p[d]);
        mx = std::max(mx, p[d]);
      }
    }
    (*mins)[static_cast<std::size_t>(h)] = mn;
    (*maxs)[static_cast<std::size_t>(h)] = mx;
  }
}

Observer::Observer(const QuantArgs& args, int64_t heads)
    : args_(args), kind_(args.observer.value_or("static_minmax")), heads_(heads) {
  const std::size_t n = args.strategy == Strategy::kAttnHead ? static_cast<std::size_t>(heads) : 1;
  min_.assign(n, 0.0);
  max_.assign(n, 0.0);
  seen_min_.assign(static_cast<std::size_t>(heads), std::numeric_limits<double>::infinity());
  seen_max_.assign(static_cast<std::size_t>(heads), -std::numeric_limits<double>::infinity());
}

double Observer::kwarg(const char* key, double def) const {
  return args_.observer_kwargs.contains(key) ? args_.observer_kwargs[key].get<double>() : def;
}

void Observer::reduce(const std::vector<double>& hmin, const std::vector<double>& hmax,
                      std::vector<double>* qmin, std::vector<double>* qmax) const {
  if (args_.strategy == Strategy::kAttnHead) {
    *qmin = hmin;
    *qmax = hmax;
    return;
  }
  qmin->assign(1, *std::min_element(hmin.begin(), hmin.end()));
  qmax->assign(1, *std::max_element(hmax.begin(), hmax.end()));
}

void Observer::mse_search(const HeadsView& v, std::vector<double>* qmin,
                          std::vector<double>* qmax) const {
  // Shrink grid p = 1 - i/grid over (p*min, p*max), error sum |fq(x) - x|^norm per qparam;
  // stops after `patience` steps in which no qparam improved (llm-compressor's global rule).
  const double maxshrink = kwarg("maxshrink", 0.20), grid = kwarg("grid", 100.0);
  const double norm = kwarg("norm", 2.4);
  const auto patience = static_cast<int64_t>(kwarg("patience", 5));
  const QuantRange range = calculate_range(args_);
  const bool per_head = args_.strategy == Strategy::kAttnHead;
  const std::size_t n = qmin->size();
  std::vector<double> best_err(n, std::numeric_limits<double>::infinity());
  std::vector<double> best_min = *qmin, best_max = *qmax;
  int64_t no_improve = 0;
  const auto steps = static_cast<int64_t>(maxshrink * grid);
  for (int64_t i = 0; i < steps; ++i) {
    const double p = 1.0 - static_cast<double>(i) / grid;
    std::vector<double> cmin(n), cmax(n);
    for (std::size_t g = 0; g < n; ++g) {
      cmin[g] = p * (*qmin)[g];
      cmax[g] = p * (*qmax)[g];
    }
    // Candidate qparams are computed like the final ones (in fp32 storage).
    QParams qp = calculate_qparams(cmin, cmax, args_, DType::kF32);
    std::vector<double> err(n, 0.0);
    for (int64_t h = 0; h < v.heads; ++h) {
      const std::size_t g = per_head ? static_cast<std::size_t>(h) : 0;
      for (int64_t t = 0; t < v.seq; ++t)
        for (int64_t d = 0; d < v.head_dim; ++d) {
          const double x = v.at(t, h, d);
          err[g] += std::pow(std::fabs(fake_quantize(x, qp.scale[g], qp.zero_point[g], args_, range) - x), norm);
        }
    }
    bool improved = false;
    for (std::size_t g = 0; g < n; ++g)
      if (err[g] < best_err[g]) {
        best_err[g] = err[g];
        best_min[g] = cmin[g];
        best_max[g] = cmax[g];
        improved = true;
      }
    no_improve = improved ? 0 : no_improve + 1;
    if (no_improve >= patience) break;
  }
  *qmin = best_min;
  *qmax = best_max;
}

std::vector<double> Observer::rank_minima() const {
  std::vector<double> v = min_;
  if (count_ == 0) v.assign(min_.size(), std::numeric_limits<double>::infinity());
  v.insert(v.end(), seen_min_.begin(), seen_min_.end());
  return v;
}

std::vector<double> Observer::rank_maxima() const {
  std::vector<double> v = max_;
  if (count_ == 0) v.assign(max_.size(), -std::numeric_limits<double>::infinity());
  v.insert(v.end(), seen_max_.begin(), seen_max_.end());
  return v;
}

void Observer::set_combined(const std::vector<double>& minima, const std::vector<double>& maxima, int64_t count) {
  CTCAL_ASSERT(combines_across_ranks(), "only static_minmax statistics combine across ranks");
  CTCAL_ASSERT(minima.size() == min_.size() + seen_min_.size() && maxima.size() == minima.size(),
               "combined statistics have the wrong size");
  const auto q = static_cast<std::ptrdiff_t>(min_.size());
  min_.assign(minima.begin(), minima.begin() + q);
  max_.assign(maxima.begin(), maxima.begin() + q);
  seen_min_.assign(minima.begin() + q, minima.end());
  seen_max_.assign(maxima.begin() + q, maxima.end());
  count_ = count;
}

void Observer::observe(const HeadsView& v) {
  CTCAL_ASSERT(v.heads == heads_, "observer head count mismatch");
  std::vector<double> hmin, hmax;
  head_min_max(v, &hmin, &hmax);
  update(hmin, hmax, &v);
}

void Observer::observe_range(const std::vector<double>& hmin, const std::vector<double>& hmax) {
  CTCAL_ASSERT(static_cast<int64_t>(hmin.size()) == heads_ && hmax.size() == hmin.size(), "observer head count mismatch");
  CTCAL_ASSERT(kind_ != "mse" && kind_ != "memoryless_mse", "MSE observers need the values, not a range");
  update(hmin, hmax, nullptr);
}

void Observer::update(const std::vector<double>& hmin, const std::vector<double>& hmax, const HeadsView* values) {
  std::vector<double> cur_min, cur_max;
  for (std::size_t h = 0; h < hmin.size(); ++h) {
    seen_min_[h] = std::min(seen_min_[h], hmin[h]);
    seen_max_[h] = std::max(seen_max_[h], hmax[h]);
  }
  reduce(hmin, hmax, &cur_min, &cur_max);
  if (kind_ == "mse" || kind_ == "memoryless_mse") mse_search(*values, &cur_min, &cur_max);
  const bool first = count_ == 0;
  ++count_;
  if (first || kind_ == "memoryless_minmax" || kind_ == "memoryless_mse") {
    min_ = cur_min;
    max_ = cur_max;
  } else if (kind_ == "static_minmax") {
    for (std::size_t g = 0; g < min_.size(); ++g) {
      min_[g] = std::min(min_[g], cur_min[g]);
      max_[g] = std::max(max_[g], cur_max[g]);
    }
  } else {  // minmax, mse: moving average, c = averaging_constant (default 0.01)
    const double c = kwarg("averaging_constant", 0.01);
    for (std::size_t g = 0; g < min_.size(); ++g) {
      min_[g] = min_[g] * (1.0 - c) + cur_min[g] * c;
      max_[g] = max_[g] * (1.0 - c) + cur_max[g] * c;
    }
  }
}

}  // namespace ctcal
