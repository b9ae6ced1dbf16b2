#include "commands/inspect_command.h"

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ctcal/inspect/inspect.h"
#include "ctcal/inspect/vllm_verdict.h"

namespace ctcal::app {

using nlohmann::json;

int run_inspect(const InspectRequest& req, std::ostream& out) {
  const json doc = inspect_checkpoint(req.path);
  if (req.json) out << doc.dump(2) << "\n";
  else print_inspect(doc, out, req.color);
  return inspect_exit_code(doc, req.strict, *serving_engine_from_name(req.engine));
}

void print_serving_verdict(const json& doc, std::ostream& out, bool color) {
  auto c = [&](const char* code, const std::string& s) { return color ? fmt::format("\033[{}m{}\033[0m", code, s) : s; };
  const json& v = doc["serving"]["vllm"];
  const std::string engine = v.value("engine", "vllm");
  const std::string head = fmt::format("{:<18}", engine);
  const std::string pad(18, ' ');
  out << head
      << (v["serves_as_calibrated"].get<bool>() ? c("32", "loads this checkpoint and serves its KV scales as calibrated")
          : v["loadable"].get<bool>()           ? c("31", "loads this checkpoint but does NOT serve its KV scales as calibrated")
                                                : c("31", "cannot load this checkpoint"))
      << "\n";
  for (const auto& r : v["reasons"]) out << pad << "- " << r.get<std::string>() << "\n";
  for (const auto& r : v.value("conditions", json::array())) out << pad << "only if: " << r.get<std::string>() << "\n";
  for (const auto& r : v["ignored"]) out << pad << "ignores: " << r.get<std::string>() << "\n";
  if (!v["command"].is_null()) out << pad << "serve with: " << v["command"].get<std::string>() << "\n";
  if (v.contains("without_skip_flag") && !v["without_skip_flag"].is_null())
    out << pad << c("33", "warning: ") << v["without_skip_flag"]["words"].get<std::string>() << "\n";
  if (v.contains("nvfp4"))  // scales written for --kv-cache-dtype nvfp4: what FP8 serving would cost
    out << pad << c("33", "warning: ") << v["nvfp4"]["served_as_fp8"]["words"].get<std::string>() << "\n";
  for (const auto& r : v.value("notes", json::array())) out << pad << "note: " << r.get<std::string>() << "\n";
  const json& r3 = doc["serving"]["vllm_r3"];
  if (r3["applicable"].get<bool>()) {
    out << "vLLM R3 branch    "
        << (r3["meets"].get<bool>() ? c("32", "can serve it (a vLLM fork's \"Deterministic Hadamard KQ rotation\" change)")
                                    : c("33", "cannot serve it either (a vLLM fork's \"Deterministic Hadamard KQ rotation\" change)"))
        << "\n";
    for (const auto& r : r3["reasons"]) out << "                  - " << r.get<std::string>() << "\n";
  }
}

void print_inspect(const json& doc, std::ostream& out, bool color) {
  auto c = [&](const char* code, const std::string& s) { return color ? fmt::format("\033[{}m{}\033[0m", code, s) : s; };
  out << c("1", doc["path"].get<std::string>()) << "\n";
  if (doc["model"].is_object()) {
    const json& m = doc["model"];
    out << fmt::format("model          {}, {} layers, {} heads / {} kv heads, head_dim {}, vocab {}, dtype {}\n",
                       m["architecture"].get<std::string>(), m["layers"].get<int64_t>(), m["heads"].get<int64_t>(),
                       m["kv_heads"].get<int64_t>(), m["head_dim"].get<int64_t>(), m["vocab_size"].get<int64_t>(),
                       m["dtype"].is_null() ? "unset" : m["dtype"].get<std::string>());
  }
  if (!doc["quantized"].get<bool>()) {
    out << "quantization   none (config.json has no quantization_config)\n";
  } else {
    const json& q = doc["quantization"];
    out << fmt::format("quantization   {}, format version {}\n", q.value("quant_method", "?"),
                       q.value("version", json("")).is_string() ? q["version"].get<std::string>() : "unset");
    if (q.contains("kv_cache")) out << "kv cache       " << q["kv_cache"].get<std::string>() << "\n";
    for (const auto& g : q.value("config_groups", json::array())) out << "config group   " << g.get<std::string>() << "\n";
    for (const auto& t : q.value("transforms", json::array())) out << "rotation       " << t.get<std::string>() << "\n";
  }
  if (!doc["layers"].empty()) {
    // One column group per quantized site: its scale(s), its zero point(s) when stored, dtype, shape.
    std::vector<std::string> sites;
    std::map<std::string, bool> has_zp;
    for (const char* s : {"q", "k", "v"})
      for (const auto& l : doc["layers"])
        if (l.contains(s)) {
          sites.push_back(s);
          break;
        }
    for (const auto& l : doc["layers"])
      for (const auto& s : sites) has_zp[s] = has_zp[s] || (l.contains(s) && l[s].contains("zero_point"));
    auto values = [](const json& list) {
      if (list.empty()) return std::string("-");
      double mn = list[0].is_number() ? list[0].get<double>() : NAN, mx = mn;
      for (const auto& x : list)
        if (x.is_number()) mn = std::min(mn, x.get<double>()), mx = std::max(mx, x.get<double>());
      return list.size() == 1 || mn == mx ? fmt::format("{:.5g}", mn) : fmt::format("{:.4g}..{:.4g}", mn, mx);
    };
    std::string header = fmt::format("\n{:>5}", "layer");
    for (const auto& s : sites) {
      header += fmt::format("  {:>18}", s + "_scale");
      if (has_zp[s]) header += fmt::format("  {:>14}", s + "_zero_point");
      header += fmt::format("  {:>5}  {:>9}", "dtype", "shape");
    }
    out << header << "\n";
    for (const auto& l : doc["layers"]) {
      out << fmt::format("{:>5}", l["layer"].get<int64_t>());
      if (l.value("ignored", false)) {
        out << "  not quantized (its attention module is in ignore)\n";
        continue;
      }
      if (l.contains("kv_cache")) {  // a hybrid's linear-attention / Mamba layer
        out << "  " << l["kv_cache"].get<std::string>() << "\n";
        continue;
      }
      for (const auto& s : sites) {
        if (!l.contains(s)) {
          out << fmt::format("  {:>18}", "MISSING") << (has_zp[s] ? fmt::format("  {:>14}", "") : "")
              << fmt::format("  {:>5}  {:>9}", "", "");
          continue;
        }
        const json& e = l[s];
        out << fmt::format("  {:>18}", e.contains("values") ? values(e["values"]) : "-");
        if (has_zp[s]) out << fmt::format("  {:>14}", e.contains("zero_point") ? values(e["zero_point"]) : "-");
        out << fmt::format("  {:>5}  {:>9}", e["dtype"].get<std::string>(), json(e["shape"]).dump());
      }
      out << "\n";
    }
    out << "(a range a..b spans the per-head values)\n";
  }
  if (doc.contains("linear") && !doc["linear"].empty()) {
    // FP8 Linear layers: one line per module with its weight and input scales.
    out << "\n" << fmt::format("{:<44} {:>21} {:>9} {:>12}\n", "FP8 Linear", "weight_scale", "shape", "input_scale");
    for (const auto& [m, e] : doc["linear"].items()) {
      const json& ws = e["weight_scale"];
      const std::string wv = !ws.contains("min") ? "-" : ws["min"] == ws["max"] ? fmt::format("{:.5g}", ws["min"].get<double>())
                             : fmt::format("{:.4g}..{:.4g}", ws["min"].get<double>(), ws["max"].get<double>());
      const std::string iv = e.contains("input_scale") && e["input_scale"].contains("min")
                                 ? fmt::format("{:.5g}", e["input_scale"]["min"].get<double>()) : "-";
      out << fmt::format("{:<44} {:>21} {:>9} {:>12}\n", m, wv, json(ws["shape"]).dump(), iv);
    }
  }
  out << "\n";
  if (doc["problems"].empty() && doc["serving"]["vllm"]["serves_as_calibrated"].get<bool>()) {
    out << c("32", "no problems found") << "\n";
  } else if (doc["problems"].empty()) {
    out << c("33", fmt::format("the files are consistent, but vLLM {} cannot load them or serve them as calibrated "
                               "(below; --strict exits 5 for this)", kVllmRulesVersion)) << "\n";
  } else {
    out << c("1", fmt::format("{} problem(s):", doc["problems"].size())) << "\n";
    for (const auto& pr : doc["problems"])
      out << "  " << (pr["severity"] == "error" ? c("31", "error") : c("33", "warning")) << " [" << pr["code"].get<std::string>()
          << "] " << pr["message"].get<std::string>() << "\n";
  }
  out << "\n";
  print_serving_verdict(doc, out, color);
}

}  // namespace ctcal::app
