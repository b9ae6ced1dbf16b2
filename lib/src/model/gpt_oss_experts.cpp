#include "ctcal/model/gpt_oss_experts.h"

#include <fmt/ranges.h>

#include "ctcal/error.h"
#include "ctcal/io/mxfp4.h"
#include "ctcal/model/fused_experts.h"

namespace ctcal {

namespace {

constexpr int64_t kMxfp4Block = 32;  // values per E8M0 scale (16 bytes of two FP4 codes)

const unsigned char* bytes_of(const Checkpoint& ckpt, const std::string& name) {
  return ckpt.shard_of(name).data(ckpt.info(name));
}

// Expert e's gate and up rows [I, in] and biases from the interleaved outputs 0::2 / 1::2.
// row(c, h): output c's weight for input h of expert e.
template <typename Row>
void split_gate_up(int64_t i_size, int64_t h, Row row, Linear* gate, Linear* up) {
  gate->w.resize(i_size, h);
  up->w.resize(i_size, h);
  for (int64_t j = 0; j < i_size; ++j) {
    row(2 * j, gate->w.row(j).data());
    row(2 * j + 1, up->w.row(j).data());
  }
}

}  // namespace

bool gpt_oss_experts_mxfp4(const Checkpoint& ckpt, const ModelConfig& c, const std::string& p) {
  return ckpt.has(fused_expert_names(c, p).first + "_blocks");
}

void check_gpt_oss_experts(const Checkpoint& ckpt, const ModelConfig& c, const std::string& p) {
  const int64_t e = c.num_experts, h = c.hidden_size, f = c.moe_intermediate_size;
  const auto [gu, dn] = fused_expert_names(c, p);
  if (gpt_oss_experts_mxfp4(ckpt, c, p)) {
    if (h % kMxfp4Block != 0 || f % kMxfp4Block != 0)
      throw InputError(fmt::format("{}: MXFP4 experts need hidden_size ({}) and intermediate_size ({}) divisible by 32",
                                   ckpt.config_path().string(), h, f));
    expect_expert_tensor(ckpt, gu + "_blocks", {e, 2 * f, h / kMxfp4Block, kMxfp4Block / 2}, true);
    expect_expert_tensor(ckpt, gu + "_scales", {e, 2 * f, h / kMxfp4Block}, true);
    expect_expert_tensor(ckpt, dn + "_blocks", {e, h, f / kMxfp4Block, kMxfp4Block / 2}, true);
    expect_expert_tensor(ckpt, dn + "_scales", {e, h, f / kMxfp4Block}, true);
  } else {
    expect_expert_tensor(ckpt, gu, {e, h, 2 * f});
    expect_expert_tensor(ckpt, dn, {e, f, h});
  }
  expect_expert_tensor(ckpt, gu + "_bias", {e, 2 * f});
  expect_expert_tensor(ckpt, dn + "_bias", {e, h});
}

void load_gpt_oss_experts(const Checkpoint& ckpt, const ModelConfig& c, const std::string& p, bool bf16,
                          ExpertWeights* x) {
  check_gpt_oss_experts(ckpt, c, p);
  const int64_t n = c.num_experts, h = c.hidden_size, f = c.moe_intermediate_size;
  const auto [gu_base, d_base] = fused_expert_names(c, p);
  const bool mxfp4 = gpt_oss_experts_mxfp4(ckpt, c, p);
  const std::vector<float> gu_bias = ckpt.read_f32(gu_base + "_bias");  // [E, 2 I]
  const std::vector<float> d_bias = ckpt.read_f32(d_base + "_bias");    // [E, H]
  x->gate.resize(static_cast<std::size_t>(n));
  x->up.resize(static_cast<std::size_t>(n));
  x->down.resize(static_cast<std::size_t>(n));
  const std::string gu_name = gu_base + (mxfp4 ? "_blocks" : "");
  const std::string d_name = d_base + (mxfp4 ? "_blocks" : "");
  const unsigned char* gu = bytes_of(ckpt, gu_name);
  const unsigned char* dn = bytes_of(ckpt, d_name);
  const DType gu_t = ckpt.info(gu_name).dtype, d_t = ckpt.info(d_name).dtype;
  const uint8_t* gu_scales = mxfp4 ? bytes_of(ckpt, gu_base + "_scales") : nullptr;
  const uint8_t* d_scales = mxfp4 ? bytes_of(ckpt, d_base + "_scales") : nullptr;
  // Experts in parallel (each fills only its own Linear layers); dequantization inside is serial.
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t e = 0; e < n; ++e) {
    const auto i = static_cast<std::size_t>(e);
    Linear &gate = x->gate[i], &up = x->up[i], &down = x->down[i];
    if (mxfp4) {
      // Dequantized rows of gate_up [2 I, H] are already [out, in]; so are down's [H, I].
      const int64_t gb = h / 2, db = f / 2;  // bytes per row
      split_gate_up(f, h, [&](int64_t row, float* dst) {
        const int64_t r = e * 2 * f + row;
        for (int64_t g = 0; g < h / kMxfp4Block; ++g)
          dequantize_mxfp4(gu + r * gb + g * 16, gu_scales + r * (h / kMxfp4Block) + g, 1, 16, dst + g * kMxfp4Block);
      }, &gate, &up);
      down.w.resize(h, f);
      for (int64_t row = 0; row < h; ++row) {
        const int64_t r = e * h + row;
        for (int64_t g = 0; g < f / kMxfp4Block; ++g)
          dequantize_mxfp4(dn + r * db + g * 16, d_scales + r * (f / kMxfp4Block) + g, 1, 16,
                           down.w.row(row).data() + g * kMxfp4Block);
      }
    } else {
      // gate_up_proj[e] is [H, 2 I] (x @ W): output c's weights are column c.
      const std::size_t base = static_cast<std::size_t>(e * h * 2 * f);
      split_gate_up(f, h, [&](int64_t col, float* dst) {
        for (int64_t k = 0; k < h; ++k) dst[k] = load_as_f32(gu, gu_t, base + static_cast<std::size_t>(k * 2 * f + col));
      }, &gate, &up);
      read_input_major_down(dn, d_t, e, f, h, &down);  // down_proj[e] [I, H] (x @ W) -> [H, I]
    }
    gate.b.resize(f);
    up.b.resize(f);
    for (int64_t j = 0; j < f; ++j) {
      gate.b[j] = gu_bias[static_cast<std::size_t>(e * 2 * f + 2 * j)];
      up.b[j] = gu_bias[static_cast<std::size_t>(e * 2 * f + 2 * j + 1)];
    }
    down.b = Eigen::Map<const Vector>(d_bias.data() + e * h, h);
    gate.w_bf16.reset();
    up.w_bf16.reset();
    down.w_bf16.reset();
  }
  finish_experts(ckpt, gu_name, d_name, bf16, x);
}

}  // namespace ctcal
