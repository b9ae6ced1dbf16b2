#include "ctcal/report/eval_run_info.h"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "ctcal/ct/quantization_config.h"
#include "ctcal/error.h"
#include "ctcal/recipe/recipe.h"
#include "ctcal/report/scheme_words.h"

namespace ctcal {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json read_json(const fs::path& p) {
  std::ifstream in(p);
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw InputError(fmt::format("{}: {}", p.string(), e.what()));
  }
}

// The attention (query) args of a checkpoint: a config group aimed at the attention module.
std::optional<QuantArgs> query_args_of(const json& qc, const std::string& where) {
  const ct::QuantizationConfig q = ct::read_quantization_config(qc);
  if (const ct::ConfigGroup* g = q.attention_group())
    return parse_quant_args(g->input_activations.dump(), where + ": config_groups." + g->name);
  return std::nullopt;
}

// A recipe's SpinQuant rotations in the words transforms_phrase gives a written transform_config.
std::string recipe_transforms(const Recipe& r) {
  const SpinQuantSpec* sq = r.spinquant();
  if (!sq) return "";
  std::string out;
  if (sq->explicit_config) {
    for (const auto& [name, scheme] : sq->transform_config) out += (out.empty() ? "" : " + ") + name + " " + scheme.type;
    return out;
  }
  for (const auto& rot : sq->rotations) out += (out.empty() ? "" : " + ") + rot;
  return out + " " + sq->transform_type;
}

}  // namespace

EvalRunInfo read_eval_run_info(const json& run) {
  EvalRunInfo info;
  info.source = run.value("name", "");
  fs::path p(info.source);
  info.label = (p.has_filename() ? p : p.parent_path()).filename().string();
  info.checkpoint = fs::is_directory(p);
  try {
    if (info.checkpoint) {
      const json config = read_json(p / "config.json");
      const json qc = config.value("quantization_config", json::object());
      const std::string where = (p / "config.json").string();
      info.kv = parse_quant_args(qc.value("kv_cache_scheme", json::object()).dump(), where + ": kv_cache_scheme");
      info.q = query_args_of(qc, where);
      info.transforms = transforms_phrase(qc.value("transform_config", json::object()));
      // llm-compressor's checkpoints have no ctcal_report.json: their ranges were never recorded.
      if (fs::exists(p / "ctcal_report.json")) {
        const json rep = read_json(p / "ctcal_report.json");
        info.layers = rep.value("layers", json());
        info.calibration = json::object();
        for (const char* k : {"ctcal_version", "seed", "samples", "tokens", "recipe_sha256", "dataset_sha256"})
          if (rep.contains(k)) info.calibration[k] = rep[k];
      }
    } else {
      info.kv = parse_quant_args(run.value("kv_cache_scheme", json::object()).dump(), info.source + ": kv_cache_scheme");
      const Recipe recipe = load_recipe(p);
      info.q = recipe.query_args();
      info.transforms = recipe_transforms(recipe);
    }
  } catch (const RecipeError& e) {
    throw InputError(e.what());
  }
  return info;
}

}  // namespace ctcal
