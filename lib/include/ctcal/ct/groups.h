#pragma once
// Which config group compressed-tensors applies to a module (quantization/lifecycle/apply.py:
// apply_quantization_config with match_targets and _scheme_from_targets).
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "ctcal/ct/match.h"

namespace ctcal::ct {

// The index into `group_targets` (each group's targets, in the config's order) of the group that
// quantizes `m`, or nullopt when no target matches or `ignore` does. Among several matching
// targets the most specific wins: exact names, then `re:` patterns (each kind in string order),
// then class names; a target listed by several groups belongs to the last of them.
std::optional<std::size_t> resolve_group(const Module& m, const std::vector<std::vector<std::string>>& group_targets,
                                         const std::vector<std::string>& ignore);

}  // namespace ctcal::ct
