#include "ctcal/report/verdict_words.h"

#include <fmt/format.h>

namespace ctcal {

using nlohmann::json;

std::string verdict_words(const std::string& wins) {
  if (wins == "calibrated") return "calibration wins";
  if (wins == "unit_scales") return "scale 1.0 wins";
  return "no significant difference";
}

std::string kl_diff_words(const json& c) {
  const int64_t n = c.value("kl_diff_bootstrap", json::object()).value("samples", int64_t{0});
  const std::string diff = fmt::format("KL calibrated - scale 1.0: {:+.3g}", c.value("kl_diff", 0.0));
  if (!c.value("kl_diff_ci95", json()).is_array()) return diff + fmt::format(", no interval from {} sample", n);
  return diff + fmt::format(", 95 % interval [{:+.3g}, {:+.3g}] over {} samples (paired bootstrap)",
                            c["kl_diff_ci95"][0].get<double>(), c["kl_diff_ci95"][1].get<double>(), n);
}

}  // namespace ctcal
