#include "ctcal/ct/groups.h"

#include <algorithm>
#include <map>

namespace ctcal::ct {

std::optional<std::size_t> resolve_group(const Module& m, const std::vector<std::vector<std::string>>& group_targets,
                                         const std::vector<std::string>& ignore) {
  // target_to_scheme: a later group listing the same target replaces the earlier one.
  std::map<std::string, std::size_t> owner;
  std::vector<std::string> targets;
  for (std::size_t g = 0; g < group_targets.size(); ++g)
    for (const auto& t : group_targets[g]) {
      if (!owner.count(t)) targets.push_back(t);
      owner[t] = g;
    }
  if (!is_match(m, targets, ignore)) return std::nullopt;
  // match_targets: sorted by ("re:" in target, target); names first, then classes.
  std::sort(targets.begin(), targets.end(), [](const std::string& a, const std::string& b) {
    const bool ra = a.find("re:") != std::string::npos, rb = b.find("re:") != std::string::npos;
    return ra != rb ? rb : a < b;
  });
  for (const auto& t : targets)
    if (match_name(m.name, t)) return owner.at(t);
  for (const auto& t : targets)
    if (t == m.cls) return owner.at(t);
  return std::nullopt;
}

}  // namespace ctcal::ct
