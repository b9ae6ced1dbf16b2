#pragma once
// What counts as the attention module in a target, and which attention config groups vLLM drops.
#include <string>
#include <vector>

namespace ctcal::ct {

// An attention module: its name and class. The defaults stand for any model: the Llama layout's
// name, which llm-compressor's regexes are written against, and any `...Attention` class name.
struct AttentionModule {
  std::string name = "model.layers.0.self_attn";
  std::string cls;  // "LlamaAttention"; empty: any class name ending in "Attention"
};

// llm-compressor's KV_CACHE_TARGETS (compressed-tensors >= 0.13; "re:.*self_attn$" before).
inline constexpr const char* kKvCacheTarget = "re:.*(self_attn|attention)$";
// The target SpinQuant's R3 scheme gives q_attn / k_cache.
inline constexpr const char* kSelfAttnTarget = "re:.*self_attn$";

// A class name such as "LlamaAttention": a Python identifier ending in "Attention", not the bare word.
bool is_attention_class_name(const std::string& target);

// `target` picks out the attention module as compressed-tensors' is_narrow_match does: it matches
// the module (its name, or its class) but not its parent layer nor its projections. So
// "re:.*self_attn$" does, "re:.*self_attn" (it also matches self_attn.q_proj) does not.
bool targets_attention(const std::string& target, const AttentionModule& m = {});
// Some target does / every target does (a group that quantizes attention only).
bool any_targets_attention(const std::vector<std::string>& targets, const AttentionModule& m = {});
bool all_target_attention(const std::vector<std::string>& targets, const AttentionModule& m = {});

// vLLM's CompressedTensorsConfig.from_config drops a config group from its Linear schemes only when
// it has exactly one target and that target ends with "Attention".
bool vllm_drops_group(const std::vector<std::string>& targets);

}  // namespace ctcal::ct
