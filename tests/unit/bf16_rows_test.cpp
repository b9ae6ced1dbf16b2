// The CUDA backend's weight form (Linear::bf16_rows(), layer_weights.h): a bf16 checkpoint's rows
// are read in place with the same bits oneDNN's packed path starts from, other dtypes are rounded
// once, and a NaN/Inf in a bf16 tensor is refused with the tensor's name (the in-place path's own
// four-values-per-word check).
#include <cstring>
#include <fstream>

#include <gtest/gtest.h>

#include "ctcal/dtype.h"
#include "ctcal/error.h"
#include "ctcal/io/checkpoint.h"
#include "ctcal/model/layer_weights.h"
#include "test_util.h"

namespace ctcal {
namespace {

namespace fs = std::filesystem;

fs::path model(const char* name) { return test::golden_dir() / "models" / name; }

TEST(Bf16Rows, Bf16CheckpointIsReadInPlaceBitForBit) {
  const Checkpoint ck(model("qwen2_bias_bf16"));
  const ModelConfig cfg = load_model_config(ck);
  LayerWeights w;
  reload_layer_weights_bf16_rows(ck, cfg, 1, true, &w);
  const std::string name = cfg.layer_prefix(1) + "self_attn.k_proj.weight";
  const TensorInfo& t = ck.info(name);
  ASSERT_EQ(t.dtype, DType::kBF16);
  const std::span<const uint16_t> rows = w.k.bf16_rows();  // [kv_dim, hidden]
  ASSERT_EQ(rows.size(), t.numel());
  EXPECT_FALSE(w.k.w_bf16_view.empty());  // in place, no copy
  EXPECT_EQ(std::memcmp(rows.data(), ck.shard_of(name).data(t), t.nbytes()), 0);
  EXPECT_EQ(w.k.b.size(), cfg.kv_dim());  // Qwen2's q/k/v biases still come along
}

TEST(Bf16Rows, Fp32CheckpointIsRoundedOnce) {
  const Checkpoint ck(model("qwen2_sliding_fp32"));
  const ModelConfig cfg = load_model_config(ck);
  LayerWeights w;
  reload_layer_weights_bf16_rows(ck, cfg, 0, true, &w);
  const std::vector<float> ref = ck.shard_of(cfg.layer_prefix(0) + "mlp.down_proj.weight")
                                     .read_f32(cfg.layer_prefix(0) + "mlp.down_proj.weight");
  const std::span<const uint16_t> rows = w.down.bf16_rows();
  ASSERT_EQ(rows.size(), ref.size());
  EXPECT_TRUE(w.down.w_bf16_view.empty());
  for (std::size_t i = 0; i < ref.size(); ++i) ASSERT_EQ(rows[i], f32_to_bf16(ref[i])) << i;
}

// A NaN at each position of a 4-value word (and in the tail) is found, by the GPU's plain-rows
// loader and by the CPU bf16 mode's packing loader (both scan a bf16 tensor word by word).
TEST(Bf16Rows, NanInABf16TensorNamesTheTensor) {
  const fs::path src = model("qwen2_bias_bf16");
  const Checkpoint orig(src);
  const ModelConfig cfg = load_model_config(orig);
  const std::string name = cfg.layer_prefix(0) + "self_attn.q_proj.weight";
  const std::size_t numel = orig.info(name).numel();
  for (std::size_t at : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{7}, numel - 1}) {
    test::TempDir dir;
    for (const auto& e : fs::directory_iterator(src)) fs::copy(e.path(), dir.path() / e.path().filename());
    // The data section starts after the 8-byte length and the JSON header.
    std::fstream f(dir.path() / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    uint64_t header = 0;
    f.read(reinterpret_cast<char*>(&header), 8);
    const std::size_t pos = 8 + header + orig.info(name).begin + 2 * at;
    const uint16_t nan = 0x7FC0;
    f.seekp(static_cast<std::streamoff>(pos));
    f.write(reinterpret_cast<const char*>(&nan), 2);
    f.close();
    const Checkpoint ck(dir.path());
    LayerWeights w;
    try {
      reload_layer_weights_bf16_rows(ck, cfg, 0, true, &w);
      ADD_FAILURE() << "plain rows: no error for a NaN at element " << at;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
    try {
      w = load_layer_weights_bf16(ck, cfg, 0, true);
      ADD_FAILURE() << "packed: no error for a NaN at element " << at;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace ctcal
