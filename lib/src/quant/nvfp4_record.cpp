#include "ctcal/quant/nvfp4_record.h"

#include <fstream>

#include <fmt/format.h>

#include "ctcal/error.h"

namespace ctcal {

using nlohmann::json;

json nvfp4_record_to_json(const Nvfp4KvRecord& r) {
  json layers = json::array();
  for (const auto& l : r.layers) {
    json e = {{"layer", l.layer}};
    for (const auto& [p, site] : {std::pair{"k_", &l.k}, std::pair{"v_", &l.v}})
      if (*site) {
        e[std::string(p) + "s"] = (*site)->s;
        e[std::string(p) + "amax"] = (*site)->amax;
      }
    layers.push_back(e);
  }
  return {{"kv_cache_dtype", "nvfp4"},
          {"meaning", "k_scale and v_scale are vLLM's NVFP4 KV-cache decode multipliers s (serve with "
                      "--kv-cache-dtype nvfp4), not FP8 scales amax/448; declared FP8 per tensor because "
                      "compressed-tensors cannot declare a 4-bit KV cache"},
          {"scale_rule", r.rule},
          {"layers", layers},
          {"search", r.search}};
}

Nvfp4KvRecord nvfp4_record_from_json(const json& j, const std::string& where) {
  auto bad = [&](const std::string& why) {
    return InputError(fmt::format("{}: {} is not an NVFP4 KV record ctcal writes: {}", where, kNvfp4RecordKey, why));
  };
  if (!j.is_object() || j.value("kv_cache_dtype", "") != "nvfp4") throw bad("kv_cache_dtype is not \"nvfp4\"");
  if (!j.contains("layers") || !j["layers"].is_array()) throw bad("no layers list");
  Nvfp4KvRecord r;
  r.rule = j.value("scale_rule", "");
  r.search = j.value("search", json());
  for (const auto& e : j["layers"]) {
    if (!e.is_object() || !e.contains("layer") || !e["layer"].is_number_integer()) throw bad("a layer without its index");
    Nvfp4LayerRecord l;
    l.layer = e["layer"].get<int64_t>();
    for (const auto& [p, site] : {std::pair{"k_", &l.k}, std::pair{"v_", &l.v}}) {
      const std::string s = std::string(p) + "s", a = std::string(p) + "amax";
      if (!e.contains(s)) continue;
      if (!e[s].is_number() || !e.contains(a) || !e[a].is_number() || !(e[s].get<double>() > 0) ||
          !(e[a].get<double>() > 0))
        throw bad(fmt::format("layer {}: {} and {} must be positive numbers", l.layer, s, a));
      *site = Nvfp4SiteRecord{e[s].get<double>(), e[a].get<double>()};
    }
    r.layers.push_back(l);
  }
  return r;
}

std::optional<Nvfp4KvRecord> read_nvfp4_record(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / "ctcal_report.json";
  if (!std::filesystem::is_regular_file(path)) return std::nullopt;
  std::ifstream in(path);
  json report;
  try {
    report = json::parse(in);
  } catch (const json::exception& e) {
    throw InputError(fmt::format("{}: not JSON ({})", path.string(), e.what()));
  }
  if (!report.is_object() || !report.contains(kNvfp4RecordKey)) return std::nullopt;
  return nvfp4_record_from_json(report[kNvfp4RecordKey], path.string());
}

std::vector<Fp8Clip> fp8_clipping(const Nvfp4KvRecord& r) {
  std::vector<Fp8Clip> out;
  for (const auto& l : r.layers)
    for (const auto& [c, site] : {std::pair{'k', &l.k}, std::pair{'v', &l.v}})
      if (*site && 448.0 * (*site)->s < (*site)->amax) out.push_back({l.layer, c, (*site)->s, (*site)->amax});
  return out;
}

int64_t nvfp4_record_sites(const Nvfp4KvRecord& r) {
  int64_t n = 0;
  for (const auto& l : r.layers) n += static_cast<int64_t>(l.k.has_value()) + static_cast<int64_t>(l.v.has_value());
  return n;
}

}  // namespace ctcal
