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

namespace {

// --kv-cache-dtype nvfp4: the run's KV cache in each format, one row each, with the blocks whose
// scale saturated at 448 and the non-zero blocks flushed to zero, summed over layers.
void print_kv_cache_dtypes(const json& list, std::ostream& out) {
  out << fmt::format("  {:<42} {:>9} {:>10} {:>9} {:>10} {:>7} {:>9} {:>9}  {}\n", "KV cache (vLLM --kv-cache-dtype)", "NLL",
                     "dNLL", "PPL", "KL", "top1", "K SQNR", "V SQNR", "blocks saturated / flushed (K; V)");
  for (const auto& d : list) {
    double ks = 0, vs = 0;
    int n = 0;
    int64_t blocks[2] = {0, 0}, sat[2] = {0, 0}, flushed[2] = {0, 0};
    for (const auto& l : d["layers"]) {
      if (l["k_sqnr_db"].is_number() && l["v_sqnr_db"].is_number()) {
        ks += l["k_sqnr_db"].get<double>();
        vs += l["v_sqnr_db"].get<double>();
        ++n;
      }
      for (int i = 0; i < 2; ++i) {
        const std::string p = i == 0 ? "k_" : "v_";
        blocks[i] += l.value(p + "blocks", int64_t{0});
        sat[i] += l.value(p + "saturated_blocks", int64_t{0});
        flushed[i] += l.value(p + "flushed_blocks", int64_t{0});
      }
    }
    // A checkpoint written for NVFP4 (ctcal's nvfp4_kv record) has NVFP4 s as its scales: its fp8 row is them served as FP8.
    std::string name = d["name"].get<std::string>() != "fp8" ? d["name"].get<std::string>()
                       : d.contains("note")                 ? "fp8 (its NVFP4 s served as FP8)"
                                                            : "fp8 (calibrated scales)";
    std::string blocks_words = blocks[0] ? fmt::format("{} / {}; {} / {} of {}", sat[0], flushed[0], sat[1], flushed[1], blocks[0]) : "";
    out << fmt::format("  {:<42} {:>9.5f} {:>+10.5f} {:>9.4f} {:>10.3g} {:>7.4f} {:>7.2f}dB {:>7.2f}dB  {}\n", name,
                       d["nll"].get<double>(), d["delta_nll"].get<double>(), d["ppl"].get<double>(), d["kl"].get<double>(),
                       d["top1"].get<double>(), n ? ks / n : 0.0, n ? vs / n : 0.0, blocks_words);
    if (d.contains("kl_diff_vs_fp8") && d["kl_diff_vs_fp8"]["kl_diff_ci95"].is_array()) {
      const json& c = d["kl_diff_vs_fp8"];
      out << fmt::format("    KL - fp8: {:+.4g}, 95 % interval [{:+.4g}, {:+.4g}] (paired bootstrap)\n", c["kl_diff"].get<double>(),
                         c["kl_diff_ci95"][0].get<double>(), c["kl_diff_ci95"][1].get<double>());
    }
    if (d.contains("kl_diff_vs_searched") && d["kl_diff_vs_searched"]["kl_diff_ci95"].is_array()) {
      const json& c = d["kl_diff_vs_searched"];
      out << fmt::format("    KL - nvfp4 s=searched: {:+.4g}, 95 % interval [{:+.4g}, {:+.4g}]: what R3 would buy (evidence "
                         "only: mainline vLLM 0.34 cannot apply R3)\n", c["kl_diff"].get<double>(),
                         c["kl_diff_ci95"][0].get<double>(), c["kl_diff_ci95"][1].get<double>());
    }
    if (d.contains("kl_diff_vs_best_fixed") && d["kl_diff_vs_best_fixed"]["kl_diff_ci95"].is_array()) {
      const json& c = d["kl_diff_vs_best_fixed"];
      out << fmt::format("    KL - {}: {:+.4g}, 95 % interval [{:+.4g}, {:+.4g}] -> {}\n", c["best_fixed"].get<std::string>(),
                         c["kl_diff"].get<double>(), c["kl_diff_ci95"][0].get<double>(), c["kl_diff_ci95"][1].get<double>(),
                         c["worse_beyond_noise"].get<bool>() ? "worse beyond the noise" : "not worse beyond the noise");
    }
  }
}

}  // namespace

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
    if (r.contains("kv_cache_dtypes")) print_kv_cache_dtypes(r["kv_cache_dtypes"], out);
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
