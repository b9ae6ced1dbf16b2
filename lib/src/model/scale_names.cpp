#include "ctcal/model/scale_names.h"

#include <fmt/format.h>

namespace ctcal {

std::string scale_name(const std::string& attention_module, Site site) {
  return fmt::format("{}.{}_scale", attention_module, site_name(site));
}
std::string zero_point_name(const std::string& attention_module, Site site) {
  return fmt::format("{}.{}_zero_point", attention_module, site_name(site));
}

}  // namespace ctcal
