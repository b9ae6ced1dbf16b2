#include "commands/validate_command.h"

#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "ctcal/quant/quant_args.h"
#include "ctcal/recipe/recipe.h"
#include "ctcal/recipe/recipe_emit.h"
#include "ctcal/run_defaults.h"

namespace ctcal::app {

using nlohmann::json;

int run_validate(const std::string& recipe_path, bool as_json, std::ostream& out) {
  const Recipe recipe = load_recipe(recipe_path);
  json run = nullptr;
  const RunDefaults& d = recipe.ctcal;
  if (d.model || d.dataset || d.output || d.num_samples || d.max_seq_length || d.seed || d.shuffle || d.key_range) {
    run = {{"num_samples", d.num_samples.value_or(kDefaultNumSamples)},
           {"max_seq_length", d.max_seq_length.value_or(kDefaultMaxSeqLength)},
           {"seed", d.seed.value_or(kDefaultSeed)}, {"shuffle", d.shuffle.value_or(kDefaultShuffle)},
           {"key_range", d.key_range.value_or(kDefaultKeyRange)}};
    if (d.model) run["model"] = *d.model;
    if (d.dataset) run["dataset"] = *d.dataset;
    if (d.output) run["output"] = *d.output;
  }
  // Transform config without a model: head_dim unknown until a model is given.
  json tc = json::object();
  if (as_json) {
    json doc = effective_recipe_json(recipe, run, tc);
    json defaults = json::object();
    if (auto kv = recipe.kv_args()) {
      json unset = json::array();
      // Keep the dump alive for the loop: items() of a temporary dangles (it crashed here).
      const json dumped = quant_args_to_json(*kv);
      for (const auto& [k, _] : dumped.items())
        if (!kv->user_set.count(k)) unset.push_back(k);
      defaults["kv_cache_scheme"] = unset;
    }
    out << json({{"valid", true}, {"recipe", doc}, {"defaults", defaults}}).dump(2) << "\n";
    return 0;
  }
  std::string yaml = effective_recipe_yaml(recipe, run, tc);
  // Mark defaults: every QuantizationArgs key the recipe did not write.
  if (auto kv = recipe.kv_args()) {
    std::istringstream in(yaml);
    std::string line, marked;
    bool in_args = false;
    while (std::getline(in, line)) {
      const auto key_end = line.find(':');
      const std::string key = key_end == std::string::npos ? "" : line.substr(line.find_first_not_of(' '), key_end - line.find_first_not_of(' '));
      // Linear groups' args are not the KV args: only the KV scheme and the attention group's
      // input_activations (the same args) are marked.
      if (key == "kv_cache_scheme" || (key == "input_activations" && recipe.query_args())) in_args = true;
      else if (key == "weights" || key == "input_activations") in_args = false;
      else if (in_args && !line.empty() && line.find_first_not_of(' ') <= 6 && key != "") in_args = quant_args_to_json(*kv).contains(key);
      if (in_args && quant_args_to_json(*kv).contains(key) && !kv->user_set.count(key)) line += "  # default";
      marked += line + "\n";
    }
    yaml = marked;
  }
  out << "# " << recipe_path << ": valid\n" << yaml;
  return 0;
}

}  // namespace ctcal::app
