#pragma once
// llm-compressor's observers (reference §3.7) for attention activations. One Observer owns the
// statistics of one (layer, site): per-qparam minima and maxima reduced per strategy
// (`tensor`: one value over all tokens, heads and dims; `attn_head`: one per head), updated once
// per calibration sample (llm-compressor runs batch_size 1).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ctcal/model/observation.h"
#include "ctcal/quant/qparams.h"
#include "ctcal/quant/quant_args.h"

namespace ctcal {

// Per-head minima and maxima of one view: [heads] each.
void head_min_max(const HeadsView& v, std::vector<double>* mins, std::vector<double>* maxs);

class Observer {
 public:
  Observer(const QuantArgs& args, int64_t heads);
  void observe(const HeadsView& v);
  // The same update from per-head minima and maxima [heads] instead of the values (the key
  // envelope: a range derived from pre-RoPE keys). Not for MSE observers, which need values.
  void observe_range(const std::vector<double>& hmin, const std::vector<double>& hmax);
  // MSE observers search over the values; every other rule needs only per-head min/max.
  bool needs_values() const { return kind_ == "mse" || kind_ == "memoryless_mse"; }
  // Statistics the qparams come from (after the observer's rule: running, EMA, last, MSE).
  const std::vector<double>& min_vals() const { return min_; }
  const std::vector<double>& max_vals() const { return max_; }
  // Raw running per-head min/max over everything seen, whatever the observer (for reports).
  const std::vector<double>& seen_head_min() const { return seen_min_; }
  const std::vector<double>& seen_head_max() const { return seen_max_; }
  int64_t observations() const { return count_; }
  QParams qparams(DType storage) const { return calculate_qparams(min_, max_, args_, storage); }

  // Data-parallel ranks (MPI) each observe a share of the samples. Only static_minmax combines
  // exactly (min of minima, max of maxima: the same numbers as one observer over every sample);
  // the moving-average, memoryless and MSE rules depend on the order of the samples.
  bool combines_across_ranks() const { return kind_ == "static_minmax"; }
  // This rank's contribution: [qparams] minima then maxima, [heads] seen minima then maxima.
  // A rank that saw nothing contributes +inf / -inf, the identities of min and max.
  std::vector<double> rank_minima() const;  // min_ ++ seen_min_
  std::vector<double> rank_maxima() const;  // max_ ++ seen_max_
  // Replaces the statistics with their combination over every rank (`count`: observations
  // summed over ranks).
  void set_combined(const std::vector<double>& minima, const std::vector<double>& maxima, int64_t count);

 private:
  // Reduces per-head values to per-qparam values (tensor: one value).
  void reduce(const std::vector<double>& hmin, const std::vector<double>& hmax,
              std::vector<double>* qmin, std::vector<double>* qmax) const;
  void mse_search(const HeadsView& v, std::vector<double>* qmin, std::vector<double>* qmax) const;
  // One observation: per-head minima/maxima, and the values when the observer needs them (MSE).
  void update(const std::vector<double>& hmin, const std::vector<double>& hmax, const HeadsView* values);
  double kwarg(const char* key, double def) const;

  QuantArgs args_;
  std::string kind_;
  int64_t heads_;
  int64_t count_ = 0;
  std::vector<double> min_, max_;            // [qparams]
  std::vector<double> seen_min_, seen_max_;  // [heads]
};

}  // namespace ctcal
