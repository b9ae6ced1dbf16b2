#pragma once
// compressed-tensors' target matching (compressed_tensors/utils/match.py: match_name, _match_class,
// is_match): how a config group's `targets` and the config's `ignore` pick modules.
#include <string>
#include <vector>

namespace ctcal::ct {

// The class name every Linear module matches (torch.nn.Linear; vLLM's LinearBase matches it too).
inline constexpr const char* kLinearClass = "Linear";

// A module as compressed-tensors sees it: its dotted name and its class name.
struct Module {
  std::string name;  // "model.layers.0.self_attn.q_proj"
  std::string cls;   // "Linear", "LlamaAttention"
};

// match_name: "re:<pattern>" is Python's re.match (anchored at the start of the name only; an
// invalid pattern matches nothing), any other target is the exact module name.
bool match_name(const std::string& name, const std::string& target);

// is_match: some target matches the name or the class, and no `ignore` entry does (an ignore entry
// may be a class name too: "Linear" in ignore skips every Linear module).
bool is_match(const Module& m, const std::vector<std::string>& targets, const std::vector<std::string>& ignore = {});

}  // namespace ctcal::ct
