#include "ctcal/model/llama4_experts.h"

#include "ctcal/error.h"

namespace ctcal {

namespace {

// Layer `p`'s fused gate_up and down tensor names ("...feed_forward.experts.gate_up_proj").
std::pair<std::string, std::string> fused_names(const ModelConfig& c, const std::string& p) {
  const ExpertNames& n = c.family->experts;
  const std::string block = p + std::string(n.fused_block) + ".";
  return {block + std::string(n.fused_gate_up), block + std::string(n.fused_down)};
}

void expect(const Checkpoint& ckpt, const std::string& name, const std::vector<int64_t>& shape) {
  const TensorInfo& t = ckpt.info(name);  // throws InputError naming a missing tensor
  const std::string file = ckpt.shard_of(name).path().string();
  if (t.shape != shape)
    throw InputError(fmt::format("{}: tensor '{}' has shape {}; expected {} from config.json (Llama 4 stores its "
                                 "experts input-major)", file, name, shape_str(t.shape), shape_str(shape)));
  if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16)
    throw InputError(fmt::format("{}: tensor '{}' has dtype {}; expected F32, F16 or BF16", file, name, dtype_name(t.dtype)));
}

}  // namespace

void check_llama4_experts(const Checkpoint& ckpt, const ModelConfig& c, const std::string& p) {
  const int64_t e = c.num_experts, h = c.hidden_size, f = c.moe_intermediate_size;
  const auto [gu, dn] = fused_names(c, p);
  expect(ckpt, gu, {e, h, 2 * f});
  expect(ckpt, dn, {e, f, h});
}

void load_llama4_experts(const Checkpoint& ckpt, const ModelConfig& c, const std::string& p, bool bf16,
                         ExpertWeights* x) {
  check_llama4_experts(ckpt, c, p);
  const int64_t n = c.num_experts, h = c.hidden_size, f = c.moe_intermediate_size;
  const auto [gu_name, d_name] = fused_names(c, p);
  const unsigned char* gu = ckpt.shard_of(gu_name).data(ckpt.info(gu_name));
  const unsigned char* dn = ckpt.shard_of(d_name).data(ckpt.info(d_name));
  const DType gu_t = ckpt.info(gu_name).dtype, d_t = ckpt.info(d_name).dtype;
  x->gate.resize(static_cast<std::size_t>(n));
  x->up.resize(static_cast<std::size_t>(n));
  x->down.resize(static_cast<std::size_t>(n));
  // Experts in parallel: each fills only its own Linears.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t e = 0; e < n; ++e) {
    const auto i = static_cast<std::size_t>(e);
    Linear &gate = x->gate[i], &up = x->up[i], &down = x->down[i];
    gate.w.resize(f, h);  // [I, H]: gate_up_proj[e][:, j] is gate row j
    up.w.resize(f, h);    // [I, H]: gate_up_proj[e][:, I + j] is up row j
    const auto base = static_cast<std::size_t>(e * h * 2 * f);
    for (int64_t k = 0; k < h; ++k)
      for (int64_t j = 0; j < f; ++j) {
        gate.w(j, k) = load_as_f32(gu, gu_t, base + static_cast<std::size_t>(k * 2 * f + j));
        up.w(j, k) = load_as_f32(gu, gu_t, base + static_cast<std::size_t>(k * 2 * f + f + j));
      }
    down.w.resize(h, f);  // [H, I]: down_proj[e] [I, H] transposed
    const auto dbase = static_cast<std::size_t>(e * f * h);
    for (int64_t k = 0; k < f; ++k)
      for (int64_t o = 0; o < h; ++o) down.w(o, k) = load_as_f32(dn, d_t, dbase + static_cast<std::size_t>(k * h + o));
    gate.b.resize(0);
    up.b.resize(0);
    down.b.resize(0);
    gate.w_bf16.reset();
    up.w_bf16.reset();
    down.w_bf16.reset();
  }
  for (int64_t e = 0; e < n; ++e) {
    const auto i = static_cast<std::size_t>(e);
    for (Linear* l : {&x->gate[i], &x->up[i], &x->down[i]}) {
      if (!l->w.allFinite())
        throw InputError(fmt::format("{}: tensor '{}' contains NaN or Inf; the checkpoint is corrupt",
                                     ckpt.shard_of(l == &x->down[i] ? d_name : gu_name).path().string(),
                                     l == &x->down[i] ? d_name : gu_name));
      if (bf16) pack_weights_bf16(l);
    }
  }
}

}  // namespace ctcal
