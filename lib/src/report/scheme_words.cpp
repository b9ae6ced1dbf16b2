#include "ctcal/report/scheme_words.h"

#include <set>

#include <fmt/format.h>

namespace ctcal {

std::string format_name(const QuantArgs& a) {
  // ctcal quantizes KV as 8-bit floats only in E4M3, as vLLM's fp8 KV cache does.
  return a.type == QuantType::kFloat ? fmt::format("FP{} E4M3", a.num_bits) : fmt::format("INT{}", a.num_bits);
}

std::string args_phrase(const QuantArgs& a) {
  const bool per_head = a.strategy && *a.strategy == Strategy::kAttnHead;
  return fmt::format("{} {}, {}, {}", format_name(a), a.symmetric ? "symmetric" : "asymmetric",
                     per_head ? "per-head" : "per-tensor", a.observer.value_or("static_minmax"));
}

std::string transforms_phrase(const nlohmann::json& tc) {
  if (!tc.is_object() || !tc.contains("config_groups") || !tc["config_groups"].is_object()) return "";
  std::string out;
  for (const auto& [name, scheme] : tc["config_groups"].items()) {
    std::set<std::string> locations;
    for (const auto& a : scheme.value("apply", nlohmann::json::array()))
      if (a.is_object()) locations.insert(a.value("location", ""));
    // Named by what the transform does, as SpinQuant names them, whatever the group is called.
    std::string what = name;
    if (locations.count("q_attn") && locations.count("k_cache")) what = "R3";
    else if (locations.count("weight_output") && locations.count("weight_input")) what = "R2";
    std::string s = what + " " + scheme.value("type", "?");
    if (scheme.contains("head_dim") && scheme["head_dim"].is_number_integer())
      s += fmt::format(" {0}x{0}", scheme["head_dim"].get<int64_t>());
    out += (out.empty() ? "" : " + ") + s;
  }
  return out;
}

std::string scheme_phrase(const QuantArgs& kv, const std::optional<QuantArgs>& q, const std::string& transforms) {
  std::string s = "KV " + args_phrase(kv);
  if (q) s += (*q == kv ? "; Q quantized the same way" : "; Q " + args_phrase(*q));
  if (!transforms.empty()) s += "; " + transforms;
  return s;
}

}  // namespace ctcal
