#include "ctcal/report/scheme_words.h"

#include <fmt/format.h>

#include "ctcal/ct/transforms.h"

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
    // Named by what the transform does, as SpinQuant names them, whatever the group is called.
    const ct::Rotation r = ct::rotation_of(ct::apply_locations(scheme));
    const std::string what = r == ct::Rotation::kR3 ? "R3" : r == ct::Rotation::kR2 ? "R2" : name;
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
