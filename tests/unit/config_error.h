// The model_config tests' probe: parse a config.json object and return the InputError's message
// (the file, the field and what was expected), or "" when it parses.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "ctcal/error.h"
#include "ctcal/model/model_config.h"

namespace ctcal::test {

inline std::string config_error(const nlohmann::json& j) {
  try {
    parse_model_config(j, "config.json");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace ctcal::test
