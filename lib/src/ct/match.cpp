#include "ctcal/ct/match.h"

#include <regex>

namespace ctcal::ct {

bool match_name(const std::string& name, const std::string& target) {
  if (!target.starts_with("re:")) return target == name;
  try {
    // match_continuous: the match starts at the first character but may end anywhere (re.match).
    return std::regex_search(name, std::regex(target.substr(3)), std::regex_constants::match_continuous);
  } catch (const std::regex_error&) {
    return false;
  }
}

namespace {
bool matches_any(const Module& m, const std::vector<std::string>& targets) {
  for (const auto& t : targets)
    if (match_name(m.name, t) || t == m.cls) return true;
  return false;
}
}  // namespace

bool is_match(const Module& m, const std::vector<std::string>& targets, const std::vector<std::string>& ignore) {
  return matches_any(m, targets) && !matches_any(m, ignore);
}

}  // namespace ctcal::ct
