#include "commands/eval_command.h"

#include <string>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "ctcal/report/eval_report.h"
#include "ctcal/report/verdict_words.h"

namespace ctcal::app {

using nlohmann::json;

int run_eval(const EvalRequest& req, const EvalOutput& output, std::ostream& out) {
  const json doc = evaluate(req);
  if (output.report) {
    write_eval_report(*output.report, doc, {req.model, req.dataset, req.calibration_dataset, req.seed, req.max_seq_length});
    spdlog::info("wrote {}", *output.report);
  }
  if (output.json) {
    // NaN/inf (a lossless layer's SQNR) are not JSON: nlohmann writes null for them.
    out << doc.dump(2) << "\n";
    return 0;
  }
  const json& b = doc["baseline"];
  out << fmt::format("{} samples, {} predicted tokens\n\n", doc["samples"].get<int64_t>(), b["tokens"].get<int64_t>());
  out << fmt::format("{:<44} {:>9} {:>10} {:>9} {:>10} {:>7} {:>9} {:>9}\n", "run", "NLL", "dNLL", "PPL", "KL", "top1",
                     "K SQNR", "V SQNR");
  out << fmt::format("{:<44} {:>9.5f} {:>10} {:>9.4f} {:>10} {:>7} {:>9} {:>9}\n", "baseline (unquantized)",
                     b["nll"].get<double>(), "", b["ppl"].get<double>(), "", "", "", "");
  const json& runs = doc["quantized"];
  for (const auto& r : runs) {
    double ks = 0, vs = 0;
    int n = 0;
    for (const auto& l : r["layers"]) {
      if (l["k_sqnr_db"].is_number() && l["v_sqnr_db"].is_number()) {
        ks += l["k_sqnr_db"].get<double>();
        vs += l["v_sqnr_db"].get<double>();
        ++n;
      }
    }
    std::string name = r["name"];
    if (name.size() > 44) name = "..." + name.substr(name.size() - 41);
    out << fmt::format("{:<44} {:>9.5f} {:>+10.5f} {:>9.4f} {:>10.3g} {:>7.4f} {:>7.2f}dB {:>7.2f}dB\n", name,
                       r["nll"].get<double>(), r["delta_nll"].get<double>(), r["ppl"].get<double>(), r["kl"].get<double>(),
                       r["top1"].get<double>(), n ? ks / n : 0.0, n ? vs / n : 0.0);
    if (r.contains("kl_contribution")) {
      std::string ranked;
      for (const auto& c : r["kl_contribution"])
        ranked += fmt::format("{}{} ({:.3g})", ranked.empty() ? "" : ", ", c["layer"].get<int64_t>(), c["kl"].get<double>());
      out << fmt::format("  layers by KL when quantized alone: {}\n", ranked);
    }
    if (r.contains("parts"))
      for (const auto& [part, label] : {std::pair{"weights", "  FP8 weights alone"}, std::pair{"activations", "  FP8 Linear inputs alone"},
                                        std::pair{"kv", "  KV cache alone"}}) {
        const json& u = r["parts"][part];
        out << fmt::format("{:<44} {:>9.5f} {:>+10.5f} {:>9.4f} {:>10.3g} {:>7.4f}\n", label, u["nll"].get<double>(),
                           u["delta_nll"].get<double>(), u["ppl"].get<double>(), u["kl"].get<double>(), u["top1"].get<double>());
      }
    if (r.contains("unit_scales")) {
      const json& u = r["unit_scales"];
      out << fmt::format("{:<44} {:>9.5f} {:>+10.5f} {:>9.4f} {:>10.3g} {:>7.4f}\n", "  same scheme, every scale 1.0",
                         u["nll"].get<double>(), u["delta_nll"].get<double>(), u["ppl"].get<double>(),
                         u["kl"].get<double>(), u["top1"].get<double>());
      out << fmt::format("  {} -> {}\n", kl_diff_words(r), verdict_words(r["wins"].get<std::string>()));
    }
  }
  if (!runs.empty() && runs[0].contains("unit_scales"))
    out << "(every scale 1.0 is what vLLM uses when a checkpoint has no scales; --no-unit-scales skips it)\n";
  return 0;
}

}  // namespace ctcal::app
