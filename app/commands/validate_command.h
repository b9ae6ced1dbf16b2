#pragma once
// `ctcal validate`: parses and checks a recipe (recipe/), then prints the effective recipe, YAML
// with every default marked, or JSON with the defaults listed.
#include <ostream>
#include <string>

namespace ctcal::app {

// Returns 0; throws RecipeError (exit 3) listing every problem of the recipe.
int run_validate(const std::string& recipe_path, bool json, std::ostream& out);

}  // namespace ctcal::app
