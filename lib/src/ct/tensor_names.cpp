#include "ctcal/ct/tensor_names.h"

#include <fmt/format.h>

namespace ctcal::ct {

std::string scale_name(const std::string& attention_module, std::string_view cache) {
  return fmt::format("{}.{}_scale", attention_module, cache);
}
std::string zero_point_name(const std::string& attention_module, std::string_view cache) {
  return fmt::format("{}.{}_zero_point", attention_module, cache);
}

std::string weight_scale_name(const std::string& module) { return module + ".weight_scale"; }
std::string weight_zero_point_name(const std::string& module) { return module + ".weight_zero_point"; }
std::string input_scale_name(const std::string& module) { return module + ".input_scale"; }

std::string transform_weight_name(const std::string& module, const std::string& group, const std::string& location) {
  return fmt::format("{}.{}_{}.weight", module, group, location);
}

}  // namespace ctcal::ct
