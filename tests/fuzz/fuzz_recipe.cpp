// libFuzzer target: the recipe parser (YAML text -> Recipe) and the effective-recipe dump.
#include <cstdint>
#include <string>

#include "ctcal/error.h"
#include "ctcal/recipe/recipe.h"
#include "ctcal/recipe/recipe_emit.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    ctcal::Recipe r = ctcal::parse_recipe(text, "fuzz.yaml");
    // Whatever is accepted must round-trip through the strict parser.
    ctcal::parse_recipe(ctcal::effective_recipe_yaml(r, nullptr, nlohmann::json::object()), "again.yaml");
  } catch (const ctcal::Error&) {
  }
  return 0;
}
