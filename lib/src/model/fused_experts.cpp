#include "ctcal/model/fused_experts.h"

#include <fmt/format.h>

#include "ctcal/dtype.h"
#include "ctcal/error.h"
#include "ctcal/io/safetensors.h"

namespace ctcal {

std::pair<std::string, std::string> fused_expert_names(const ModelConfig& c, const std::string& p) {
  const ExpertNames& n = c.family->experts;
  const std::string block = p + std::string(n.fused_block) + ".";
  return {block + std::string(n.fused_gate_up), block + std::string(n.fused_down)};
}

void expect_expert_tensor(const Checkpoint& ckpt, const std::string& name, const std::vector<int64_t>& shape,
                          bool uint8, const std::string& layout) {
  const TensorInfo& t = ckpt.info(name);  // throws InputError naming a missing tensor
  const std::string file = ckpt.shard_of(name).path().string();
  if (t.shape != shape)
    throw InputError(fmt::format("{}: tensor '{}' has shape {}; expected {} from config.json{}", file, name,
                                 shape_str(t.shape), shape_str(shape), layout.empty() ? "" : " (" + layout + ")"));
  const bool ok = uint8 ? t.dtype == DType::kU8 : (t.dtype == DType::kF32 || t.dtype == DType::kF16 || t.dtype == DType::kBF16);
  if (!ok)
    throw InputError(fmt::format("{}: tensor '{}' has dtype {}; expected {}", file, name, dtype_name(t.dtype),
                                 uint8 ? "U8 (MXFP4 blocks / E8M0 scales)" : "F32, F16 or BF16"));
}

void read_input_major_down(const unsigned char* bytes, DType dtype, int64_t e, int64_t f, int64_t h, Linear* down) {
  down->w.resize(h, f);
  const auto base = static_cast<std::size_t>(e * f * h);
  for (int64_t k = 0; k < f; ++k)
    for (int64_t o = 0; o < h; ++o) down->w(o, k) = load_as_f32(bytes, dtype, base + static_cast<std::size_t>(k * h + o));
}

void finish_experts(const Checkpoint& ckpt, const std::string& gate_up_name, const std::string& down_name, bool bf16,
                    ExpertWeights* x) {
  for (std::size_t i = 0; i < x->down.size(); ++i)
    for (Linear* l : {&x->gate[i], &x->up[i], &x->down[i]}) {
      if (!l->w.allFinite() || (l->b.size() > 0 && !l->b.allFinite())) {
        const std::string& name = l == &x->down[i] ? down_name : gate_up_name;
        throw InputError(fmt::format("{}: tensor '{}' contains NaN or Inf; the checkpoint is corrupt",
                                     ckpt.shard_of(name).path().string(), name));
      }
      if (bf16) pack_weights_bf16(l);
    }
}

}  // namespace ctcal
