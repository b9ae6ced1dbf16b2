#include "ctcal/ct/attention.h"

#include <cctype>

#include "ctcal/ct/match.h"

namespace ctcal::ct {

bool is_attention_class_name(const std::string& t) {
  if (!t.ends_with("Attention") || t.size() == 9) return false;
  // A Python identifier: letters, digits and underscores (Qwen3_5Attention, Qwen3_5MoeAttention).
  for (char ch : t)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_') return false;
  return true;
}

bool targets_attention(const std::string& target, const AttentionModule& m) {
  if (!target.starts_with("re:")) return m.cls.empty() ? is_attention_class_name(target) : target == m.cls;
  if (!match_name(m.name, target)) return false;
  const std::string parent = m.name.substr(0, m.name.rfind('.'));
  if (match_name(parent, target)) return false;
  for (const char* child : {"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "q_norm", "k_norm"})
    if (match_name(m.name + "." + child, target)) return false;
  return true;
}

bool any_targets_attention(const std::vector<std::string>& targets, const AttentionModule& m) {
  for (const auto& t : targets)
    if (targets_attention(t, m)) return true;
  return false;
}

bool all_target_attention(const std::vector<std::string>& targets, const AttentionModule& m) {
  if (targets.empty()) return false;
  for (const auto& t : targets)
    if (!targets_attention(t, m)) return false;
  return true;
}

bool vllm_drops_group(const std::vector<std::string>& targets) {
  return targets.size() == 1 && targets[0].ends_with("Attention");
}

}  // namespace ctcal::ct
