#pragma once
// What the golden tests (tests/golden/, tests/gpu/) capture of a forward pass, and the golden
// cases they run.
#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ctcal/io/checkpoint.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/observation.h"
#include "ctcal/quant/observer.h"
#include "test_util.h"

namespace ctcal::test {

// Collects per-head running min/max over all samples for every (layer, site), and the first
// sample's first rows.
class Capture : public ActivationObserver {
 public:
  bool wants(int64_t, Site) const override { return true; }
  void observe(int64_t layer, Site site, const HeadsView& v) override {
    std::vector<double> mn, mx;
    head_min_max(v, &mn, &mx);
    auto& s = stats_[{layer, site}];
    if (s.first.empty()) s = {mn, mx};
    for (std::size_t h = 0; h < mn.size(); ++h) {
      s.first[h] = std::min(s.first[h], mn[h]);
      s.second[h] = std::max(s.second[h], mx[h]);
    }
    if (sample_ == 0 && !rows_.count({layer, site})) {
      std::vector<std::vector<std::vector<double>>> r(v.heads);  // [heads][tokens][dims]
      for (int64_t h = 0; h < v.heads; ++h)
        for (int64_t t = 0; t < std::min<int64_t>(2, v.seq); ++t) {
          r[h].emplace_back();
          for (int64_t d = 0; d < v.head_dim; ++d) r[h].back().push_back(v.at(t, h, d));
        }
      rows_[{layer, site}] = r;
    }
  }
  void next_sample() { ++sample_; }
  std::map<std::pair<int64_t, Site>, std::pair<std::vector<double>, std::vector<double>>> stats_;
  std::map<std::pair<int64_t, Site>, std::vector<std::vector<std::vector<double>>>> rows_;
  int sample_ = 0;
};

// Normalised squared error of one sample's logits [seq, vocab] against transformers' (golden JSON
// "logits"[s], [seq][vocab]): sum (got - want)^2 / sum want^2.
inline double logits_nmse(const RowMatrix& logits, const nlohmann::json& want_rows) {
  double num = 0, den = 0;
  for (std::size_t t = 0; t < want_rows.size(); ++t)
    for (std::size_t v = 0; v < want_rows[t].size(); ++v) {
      const double want = want_rows[t][v];
      const double got = logits(static_cast<Eigen::Index>(t), static_cast<Eigen::Index>(v));
      num += (got - want) * (got - want);
      den += want * want;
    }
  return num / den;
}

// A golden case: its JSON, its model (from tests/golden/data, or $CTCAL_DATA for "$CTCAL_DATA/..."
// directories), config and samples.
struct GoldenCase {
  nlohmann::json golden;
  std::filesystem::path model_dir;
  std::unique_ptr<Checkpoint> ckpt;
  ModelConfig cfg;
  std::vector<std::vector<int32_t>> samples;
};

// Loads case `name` into *out; returns why it cannot run here (the shared data is absent), else
// nothing.
inline std::optional<std::string> load_golden_case(const std::string& name, GoldenCase* out) {
  out->golden = load_json(golden_dir() / (name + ".json"));
  const std::string dir = out->golden["model_dir"];
  if (dir.starts_with("$CTCAL_DATA/")) {
    if (!std::filesystem::is_directory(data_dir() / "hf"))
      return "shared data not found at " + data_dir().string() + " (set CTCAL_DATA)";
    out->model_dir = data_dir() / dir.substr(12);
  } else {
    out->model_dir = golden_dir() / dir;
  }
  out->ckpt = std::make_unique<Checkpoint>(out->model_dir);
  out->cfg = load_model_config(*out->ckpt);
  for (const auto& s : out->golden["samples"]) out->samples.push_back(s.get<std::vector<int32_t>>());
  return std::nullopt;
}

inline std::vector<std::string> case_names() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(golden_dir()))
    if (e.path().extension() == ".json" && !e.path().stem().string().ends_with("_eval"))  // _eval: eval golden
      names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace ctcal::test
