#include "ctcal/model/llama4_experts.h"

#include "ctcal/dtype.h"
#include "ctcal/model/fused_experts.h"

namespace ctcal {

void check_llama4_experts(const Checkpoint& ckpt, const ModelConfig& c, const std::string& p) {
  const int64_t e = c.num_experts, h = c.hidden_size, f = c.moe_intermediate_size;
  const auto [gu, dn] = fused_expert_names(c, p);
  const std::string layout = "Llama 4 stores its experts input-major";
  expect_expert_tensor(ckpt, gu, {e, h, 2 * f}, false, layout);
  expect_expert_tensor(ckpt, dn, {e, f, h}, false, layout);
}

void load_llama4_experts(const Checkpoint& ckpt, const ModelConfig& c, const std::string& p, bool bf16,
                         ExpertWeights* x) {
  check_llama4_experts(ckpt, c, p);
  const int64_t n = c.num_experts, h = c.hidden_size, f = c.moe_intermediate_size;
  const auto [gu_name, d_name] = fused_expert_names(c, p);
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
    read_input_major_down(dn, d_t, e, f, h, &down);  // [H, I]
    gate.b.resize(0);
    up.b.resize(0);
    down.b.resize(0);
    gate.w_bf16.reset();
    up.w_bf16.reset();
    down.w_bf16.reset();
  }
  finish_experts(ckpt, gu_name, d_name, bf16, x);
}

}  // namespace ctcal
