#include "ctcal/quant/quant_args.h"

#include <map>

#include "ctcal/error.h"

namespace ctcal {

namespace {
const std::map<Strategy, std::string>& strategy_names() {
  static const std::map<Strategy, std::string> m = {
      {Strategy::kTensor, "tensor"},   {Strategy::kChannel, "channel"},
      {Strategy::kGroup, "group"},     {Strategy::kBlock, "block"},
      {Strategy::kToken, "token"},     {Strategy::kTensorGroup, "tensor_group"},
      {Strategy::kAttnHead, "attn_head"}};
  return m;
}
}  // namespace

std::string quant_type_name(QuantType t) { return t == QuantType::kInt ? "int" : "float"; }
std::string strategy_name(Strategy s) { return strategy_names().at(s); }
std::optional<Strategy> strategy_from_name(const std::string& lower) {
  for (const auto& [s, n] : strategy_names())
    if (n == lower) return s;
  return std::nullopt;
}

bool QuantArgs::operator==(const QuantArgs& o) const {
  return quant_args_to_json(*this) == quant_args_to_json(o);
}

bool is_known_observer(const std::string& name) {
  return name == "static_minmax" || name == "minmax" || name == "memoryless_minmax" ||
         name == "mse" || name == "memoryless_mse";
}

const std::set<std::string>& observer_kwarg_keys(const std::string& observer) {
  static const std::set<std::string> none;
  static const std::set<std::string> ema = {"averaging_constant"};
  static const std::set<std::string> mse = {"maxshrink", "patience", "grid", "norm"};
  static const std::set<std::string> mse_ema = {"maxshrink", "patience", "grid", "norm",
                                                "averaging_constant"};
  if (observer == "minmax") return ema;
  if (observer == "memoryless_mse") return mse;
  if (observer == "mse") return mse_ema;
  return none;
}

void finalize_quant_args(QuantArgs* a, const std::string& where, const std::string& static_observer) {
  auto fail = [&](const std::string& what) { return RecipeError(fmt::format("{}: {}", where, what)); };
  if (a->num_bits <= 0) throw fail(fmt::format("num_bits must be positive, got {}", a->num_bits));
  if (a->group_size && *a->group_size < -1)
    throw fail(fmt::format("group_size must be -1 (channel), a positive integer or null, got {}",
                           *a->group_size));
  // 1. Strategy inference from group_size.
  if (!a->strategy) {
    if (!a->group_size) a->strategy = Strategy::kTensor;
    else if (*a->group_size > 0) a->strategy = Strategy::kGroup;
    else if (*a->group_size == -1) a->strategy = Strategy::kChannel;
    else throw fail("group_size 0 is not valid; use null, -1 or a positive group size");
    a->notes.insert(fmt::format("strategy inferred as '{}'", strategy_name(*a->strategy)));
  }
  const Strategy s = *a->strategy;
  // 2. Static token quantization does not exist.
  if (s == Strategy::kToken && a->dynamic == Dynamic::kFalse)
    throw fail("strategy 'token' requires dynamic: true (static token quantization is not allowed)");
  // 3./4. Group sizes.
  if ((s == Strategy::kGroup || s == Strategy::kTensorGroup) && (!a->group_size || *a->group_size <= 0))
    throw fail(fmt::format("strategy '{}' requires a positive group_size", strategy_name(s)));
  if (a->group_size && *a->group_size > 0 && s != Strategy::kGroup && s != Strategy::kTensorGroup)
    throw fail(fmt::format("group_size {} is only valid with strategy 'group' or 'tensor_group', "
                           "not '{}'", *a->group_size, strategy_name(s)));
  // 5. Blocks.
  if (s == Strategy::kBlock && !a->block_structure)
    throw fail("strategy 'block' requires block_structure, e.g. [128, 128]");
  if (a->block_structure && s != Strategy::kBlock)
    throw fail(fmt::format("block_structure is only valid with strategy 'block', not '{}'", strategy_name(s)));
  // 6. actorder 'group' needs groups.
  if (a->actorder == "group" && s != Strategy::kGroup && s != Strategy::kTensorGroup)
    throw fail("actorder 'group' requires strategy 'group' or 'tensor_group'");
  // 7./8. Dynamic args have no observer; static args get a default one.
  if (a->dynamic != Dynamic::kFalse) {
    if (s != Strategy::kToken && s != Strategy::kTensor && s != Strategy::kTensorGroup &&
        s != Strategy::kGroup)
      throw fail(fmt::format("strategy '{}' cannot be dynamic; dynamic args need token, tensor, "
                             "tensor_group or group", strategy_name(s)));
    if (a->dynamic == Dynamic::kLocal && s != Strategy::kTensorGroup)
      throw fail("dynamic: local is only valid with strategy 'tensor_group'");
    if (a->dynamic == Dynamic::kTrue) a->observer.reset();
    else if (!a->observer) a->observer = "minmax";
  } else if (!a->observer && static_observer != "static_minmax") {
    a->observer = static_observer;
  } else if (!a->observer) {
    // compressed-tensors 0.14-0.18 infer memoryless_minmax (only the last batch counts) and
    // llm-compressor 0.14 with compressed-tensors 0.19 runs the minmax moving average (measured
    // up to 26.6 % short of the full range, tests/peer): ctcal writes static_minmax explicitly.
    a->observer = "static_minmax";
    a->notes.insert("observer not given: using static_minmax (compressed-tensors 0.14-0.18 would infer "
                    "memoryless_minmax, which keeps only the last batch; llm-compressor 0.14 runs the minmax "
                    "moving average)");
  }
  if (a->observer && !is_known_observer(*a->observer))
    throw fail(fmt::format("observer '{}' is not supported; expected one of static_minmax, minmax, "
                           "memoryless_minmax, mse, memoryless_mse", *a->observer));
  if (a->observer) {
    const auto& keys = observer_kwarg_keys(*a->observer);
    for (const auto& [k, v] : a->observer_kwargs.items()) {
      if (!keys.count(k))
        throw fail(fmt::format("observer_kwargs.{} is not an argument of observer '{}'{}", k,
                               *a->observer,
                               keys.empty() ? std::string(" (it takes none)")
                                            : fmt::format("; expected one of {}", fmt::join(keys, ", "))));
      if (!v.is_number())
        throw fail(fmt::format("observer_kwargs.{} must be a number, got {}", k, v.dump()));
    }
  }
  // 9. zp_dtype inference.
  if (!a->zp_dtype) {
    if (a->type == QuantType::kFloat) {
      if (a->num_bits != 8 && a->num_bits != 4)
        throw fail(fmt::format("float quantization supports num_bits 8 (E4M3) or 4 (E2M1), got {}", a->num_bits));
      a->zp_dtype = DType::kF8E4M3;
    } else {
      a->zp_dtype = a->num_bits <= 8 ? DType::kI8 : a->num_bits <= 16 ? DType::kI16 : DType::kI32;
    }
  }
}

void check_attention_args(const QuantArgs& a, const std::string& where) {
  auto fail = [&](const std::string& what) { return RecipeError(fmt::format("{}: {}", where, what)); };
  if (a.strategy != Strategy::kTensor && a.strategy != Strategy::kAttnHead)
    throw fail(fmt::format("strategy '{}' is not supported for the KV cache or attention; expected "
                           "'tensor' or 'attn_head'", strategy_name(*a.strategy)));
  if (a.dynamic != Dynamic::kFalse)
    throw fail("dynamic KV cache / attention quantization has no scales to calibrate; expected "
               "dynamic: false");
  if (a.type == QuantType::kFloat && a.num_bits != 8)
    throw fail(fmt::format("float KV quantization supports num_bits 8 (FP8 E4M3), got {}", a.num_bits));
  if (a.type == QuantType::kInt && a.num_bits != 8 && a.num_bits != 4)
    throw fail(fmt::format("int KV quantization supports num_bits 8 or 4, got {}", a.num_bits));
  if (a.scale_dtype && !dtype_is_float(*a.scale_dtype))
    throw fail("scale_dtype must be a float dtype");
}

nlohmann::json quant_args_to_json(const QuantArgs& a) {
  using nlohmann::json;
  json j;
  j["num_bits"] = a.num_bits;
  j["type"] = quant_type_name(a.type);
  j["symmetric"] = a.symmetric;
  j["group_size"] = a.group_size ? json(*a.group_size) : json(nullptr);
  j["strategy"] = a.strategy ? json(strategy_name(*a.strategy)) : json(nullptr);
  j["block_structure"] = a.block_structure ? json(*a.block_structure) : json(nullptr);
  j["dynamic"] = a.dynamic == Dynamic::kLocal ? json("local") : json(a.dynamic == Dynamic::kTrue);
  j["actorder"] = a.actorder ? json(*a.actorder) : json(nullptr);
  j["scale_dtype"] = a.scale_dtype ? json(torch_dtype_name(*a.scale_dtype)) : json(nullptr);
  // compressed-tensors serialises zp_dtype as null whenever the args are symmetric.
  j["zp_dtype"] = (a.zp_dtype && !a.symmetric) ? json(torch_dtype_name(*a.zp_dtype)) : json(nullptr);
  j["observer"] = a.observer ? json(*a.observer) : json(nullptr);
  j["observer_kwargs"] = a.observer_kwargs;
  return j;
}

}  // namespace ctcal
