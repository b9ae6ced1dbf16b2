#include "ctcal/eval/unit_scales_verdict.h"

#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "ctcal/error.h"
#include "ctcal/eval/paired_bootstrap.h"

namespace ctcal {

using nlohmann::json;

namespace {

// Fixed, so that the same eval prints the same interval every time (eval's --seed picks the
// samples; this only draws the resamples).
constexpr uint64_t kBootstrapSeed = 42;
constexpr int64_t kResamples = 2000;
constexpr double kLevel = 0.95;

std::vector<double> numbers(const json& j, const char* what) {
  if (!j.is_array()) throw InputError(fmt::format("eval document: {} must be a list of numbers, got {}", what, j.type_name()));
  std::vector<double> v;
  for (const auto& x : j) {
    // A sample's KL is null only if it was NaN: no honest interval can be drawn through it.
    if (!x.is_number()) throw InputError(fmt::format("eval document: {} holds {}; expected numbers", what, x.dump()));
    v.push_back(x.get<double>());
  }
  return v;
}

}  // namespace

json compare_with_unit_scales(const json& calibrated, const json& unit, const json& sample_tokens) {
  const std::vector<double> a = numbers(calibrated.value("sample_kl", json()), "the calibrated run's sample_kl");
  const std::vector<double> b = numbers(unit.value("sample_kl", json()), "the scale-1.0 run's sample_kl");
  const std::vector<double> w = numbers(sample_tokens, "sample_tokens");
  if (a.size() != w.size() || b.size() != w.size())
    throw InputError(fmt::format("eval document: sample_kl has {} and {} entries, sample_tokens {}; expected one per sample",
                                 a.size(), b.size(), w.size()));
  json out;
  out["kl_diff"] = calibrated.at("kl").get<double>() - unit.at("kl").get<double>();
  out["kl_diff_bootstrap"] = {{"method", "paired bootstrap over samples, token-weighted, percentile interval"},
                              {"resamples", kResamples},
                              {"seed", kBootstrapSeed},
                              {"level", kLevel},
                              {"samples", w.size()}};
  bool finite = true;
  for (std::size_t i = 0; i < w.size(); ++i) finite = finite && std::isfinite(a[i]) && std::isfinite(b[i]);
  if (w.size() < 2 || !finite) {
    // One sample resamples to itself: the interval would be a point and call any gap significant.
    // A non-finite KL (a run whose logits overflowed) has no interval either.
    out["kl_diff_ci95"] = nullptr;
    out["significant"] = false;
    out["wins"] = "no_significant_difference";
    return out;
  }
  PairedBootstrapOptions o;
  o.resamples = kResamples;
  o.seed = kBootstrapSeed;
  o.level = kLevel;
  const BootstrapInterval ci = paired_bootstrap(a, b, w, o);
  out["kl_diff_ci95"] = {ci.lo, ci.hi};
  out["significant"] = ci.excludes_zero();
  // Lower KL against the unquantized model wins, when the interval knows the sign.
  out["wins"] = ci.hi < 0 ? "calibrated" : ci.lo > 0 ? "unit_scales" : "no_significant_difference";
  return out;
}

json unit_scales_evidence(const json& doc) {
  const json &calibrated = doc.at("quantized").at(0), &unit = doc.at("quantized").at(1);
  json out = {{"samples", doc["samples"]},
              {"calibrated_kl", calibrated["kl"]},
              {"unit_kl", unit["kl"]},
              {"calibrated_nll", calibrated["nll"]},
              {"unit_nll", unit["nll"]},
              {"baseline_nll", doc["baseline"]["nll"]}};
  out.update(compare_with_unit_scales(calibrated, unit, doc.at("sample_tokens")));
  json layers = json::array();
  const json &cl = calibrated.at("layers"), &ul = unit.at("layers");
  for (std::size_t i = 0; i < cl.size() && i < ul.size(); ++i) {
    json e = {{"layer", cl[i]["layer"]}};
    for (const char* site : {"k", "v", "q"}) {
      const std::string key = std::string(site) + "_clipped_fraction";
      if (!cl[i].contains(key)) continue;
      e[key] = cl[i][key];
      e["unit_" + key] = ul[i].value(key, json());
    }
    layers.push_back(e);
  }
  out["layers"] = layers;
  return out;
}

}  // namespace ctcal
