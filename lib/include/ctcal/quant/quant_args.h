#pragma once
// QuantizationArgs of compressed-tensors 0.18 (reference §2.1), field for field, with its
// validation and inference rules applied in one place (`finalize_quant_args`) and its JSON dump.
#include <array>
#include <cstdint>
#include <optional>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "ctcal/dtype.h"

namespace ctcal {

enum class QuantType { kInt, kFloat };
enum class Strategy { kTensor, kChannel, kGroup, kBlock, kToken, kTensorGroup, kAttnHead };
enum class Dynamic { kFalse, kTrue, kLocal };

std::string quant_type_name(QuantType t);   // "int" / "float"
std::string strategy_name(Strategy s);      // "tensor", "attn_head", ...
std::optional<Strategy> strategy_from_name(const std::string& lower);

struct QuantArgs {
  int64_t num_bits = 8;
  QuantType type = QuantType::kInt;
  bool symmetric = true;
  std::optional<int64_t> group_size;
  std::optional<Strategy> strategy;                 // inferred when absent
  std::optional<std::array<int64_t, 2>> block_structure;
  Dynamic dynamic = Dynamic::kFalse;
  std::optional<std::string> actorder;              // "group" / "weight"
  std::optional<DType> scale_dtype;
  std::optional<DType> zp_dtype;                    // inferred
  std::optional<std::string> observer;              // ctcal default: "static_minmax"
  nlohmann::json observer_kwargs = nlohmann::json::object();
  std::set<std::string> user_set;                   // keys the recipe wrote (for `validate`)
  std::set<std::string> notes;                      // what inference changed, for the log

  bool operator==(const QuantArgs& o) const;
};

// Applies compressed-tensors' validate_model_after rules in its order (strategy inference,
// token/group/block/actorder/dynamic checks, observer default, zp_dtype inference).
// `where` names the recipe path for messages. Throws RecipeError.
// `static_observer`: the observer written when static args name none. ctcal's default
// static_minmax is for activations (SPEC §2); weights take compressed-tensors' own default,
// memoryless_minmax (one observation of a weight: every min-max observer agrees).
void finalize_quant_args(QuantArgs* a, const std::string& where,
                         const std::string& static_observer = "static_minmax");

// The checks ctcal adds for KV cache / attention args (SPEC §2): strategy tensor or attn_head,
// float 8-bit or int 8/4-bit, static. Throws RecipeError.
void check_attention_args(const QuantArgs& a, const std::string& where);

// The dump compressed-tensors 0.18 writes (`zp_dtype` null when symmetric).
nlohmann::json quant_args_to_json(const QuantArgs& a);

// Known observers and their observer_kwargs keys.
bool is_known_observer(const std::string& name);
const std::set<std::string>& observer_kwarg_keys(const std::string& observer);

}  // namespace ctcal
