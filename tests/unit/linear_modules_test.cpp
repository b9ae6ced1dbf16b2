// The one enumeration of a layer's Linear modules (model/linear_modules.h), from the family table's
// names, against the tensors transformers 5.17's save_pretrained wrote into the committed tiny
// checkpoints (tests/golden/data/models/): every enumerated module is there with its shape and
// bias, every 2-D weight of a layer is enumerated, and each family's names are spelled out once
// more here as the hub checkpoints and vLLM's loaders spell them.
#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "ctcal/io/checkpoint.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/linear_modules.h"
#include "test_util.h"

namespace ctcal {
namespace {

namespace fs = std::filesystem;

fs::path model(const std::string& name) { return test::golden_dir() / "models" / name; }

std::vector<std::string> names(const std::vector<LinearModule>& modules) {
  std::vector<std::string> n;
  for (const auto& m : modules) n.push_back(m.name);
  return n;
}

// Every committed tiny model: each layer's enumeration matches the checkpoint's tensors both ways.
TEST(LinearModules, MatchEveryCommittedCheckpointsTensors) {
  int models = 0;
  for (const auto& entry : fs::directory_iterator(test::golden_dir() / "models")) {
    const std::string dir = entry.path().filename().string();
    SCOPED_TRACE(dir);
    const Checkpoint ck(entry.path());
    const ModelConfig c = load_model_config(ck);
    std::set<std::string> enumerated;  // weight and bias tensors of the enumerated modules
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const ExpertLayout layout = expert_layout(ck, c, l);
      for (const LinearModule& m : linear_modules(c, l, true, layout)) {
        SCOPED_TRACE(m.name);
        const std::string w = m.weight_tensor();
        ASSERT_TRUE(ck.has(w)) << "enumerated, but not in the checkpoint";
        const std::vector<int64_t> want = m.tensor_shape.empty() ? std::vector<int64_t>{m.out, m.in} : m.tensor_shape;
        EXPECT_EQ(ck.info(w).shape, want);
        int64_t rows = 0;
        for (int64_t r : m.parts) rows += r;
        EXPECT_EQ(rows, m.out) << "the parts' rows add up to the module's";
        EXPECT_EQ(ck.has(m.name + ".bias"), m.bias);
        if (m.bias) {
          EXPECT_EQ(ck.info(m.name + ".bias").shape, std::vector<int64_t>{m.out});
        }
        EXPECT_EQ(m.kind == LinearKind::kRouter || m.kind == LinearKind::kLinearAttention ||
                      m.kind == LinearKind::kPerLayerInput,
                  !m.input_site.has_value());
        enumerated.insert(w);
        if (m.bias) enumerated.insert(m.name + ".bias");
      }
    }
    // The other way: every 2-D ".weight" under a layer (a Linear's, whatever its name) and every
    // Linear bias is enumerated; gpt-oss's and Llama 4's fused input-major experts (3-D, read by
    // model/gpt_oss_experts.h and model/llama4_experts.h) are not Linears.
    for (const std::string& t : ck.tensor_names()) {
      if (!t.starts_with(c.weight_prefix + "layers.")) continue;
      const bool linear_weight = t.ends_with(".weight") && ck.info(t).shape.size() == 2;
      const bool fused_experts = t.find(".experts.gate_up_proj") != std::string::npos ||
                                 t.find(".experts.down_proj") != std::string::npos;
      const bool input_major = c.family->moe_kind == MoeKind::kGptOss || c.family->moe_kind == MoeKind::kLlama4;
      if ((linear_weight || (fused_experts && !input_major)) && !t.ends_with("_bias")) {
        EXPECT_TRUE(enumerated.count(t)) << t << " is in the checkpoint but not enumerated";
      }
    }
    ++models;
  }
  EXPECT_GE(models, 20) << "the committed tiny models";
}

TEST(LinearModules, LlamaLayout) {
  const Checkpoint ck(model("gqa_bf16_classic"));
  const ModelConfig c = load_model_config(ck);
  const auto m = linear_modules(c, 1);
  EXPECT_EQ(names(m), (std::vector<std::string>{
                          "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj",
                          "model.layers.1.self_attn.v_proj", "model.layers.1.self_attn.o_proj",
                          "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"}));
  EXPECT_TRUE(m[0].input_site == Site::kQkvInput);
  EXPECT_TRUE(m[3].input_site == Site::kOProjInput);
  EXPECT_TRUE(m[5].input_site == Site::kGateUpInput);
  EXPECT_TRUE(m[6].input_site == Site::kDownInput);
  EXPECT_EQ(m[1].out, c.kv_dim());
  EXPECT_EQ(m[6].in, c.intermediate_size);
  // Without the MLP (the last layer when no MLP input is observed): the attention block only.
  EXPECT_EQ(linear_modules(c, 1, /*with_mlp=*/false).size(), 4u);
  EXPECT_EQ(c.attention_module(1), "model.layers.1.self_attn");
}

TEST(LinearModules, Phi3FusedProjectionsAreOneLinearEach) {
  const Checkpoint ck(model("phi3_longrope_fp32"));
  const ModelConfig c = load_model_config(ck);
  const auto m = linear_modules(c, 0);
  EXPECT_EQ(names(m), (std::vector<std::string>{"model.layers.0.self_attn.qkv_proj", "model.layers.0.self_attn.o_proj",
                                                "model.layers.0.mlp.gate_up_proj", "model.layers.0.mlp.down_proj"}));
  EXPECT_EQ(m[0].role, LinearRole::kQkv);
  EXPECT_EQ(m[0].parts, (std::vector<int64_t>{c.q_dim(), c.kv_dim(), c.kv_dim()}));
  EXPECT_EQ(m[2].parts, (std::vector<int64_t>{c.intermediate_size, c.intermediate_size}));
  LayerWeights w;
  EXPECT_EQ(linear_parts(&w, LinearRole::kQkv), (std::vector<Linear*>{&w.q, &w.k, &w.v}));
  EXPECT_EQ(linear_parts(&w, LinearRole::kGateUp), (std::vector<Linear*>{&w.gate, &w.up}));
}

TEST(LinearModules, Gemma3MultimodalPrefix) {
  const Checkpoint ck(model("gemma3_mm_fp32"));
  const ModelConfig c = load_model_config(ck);
  EXPECT_EQ(linear_modules(c, 0).front().name, "language_model.model.layers.0.self_attn.q_proj");
  EXPECT_EQ(c.attention_module(0), "language_model.model.layers.0.self_attn");
}

// Qwen3.5 (transformers' Qwen3_5DecoderLayer, vLLM's qwen3_5.py): a linear-attention layer's mixer
// is linear_attn with in_proj_qkv / in_proj_z / in_proj_b / in_proj_a / out_proj; a full-attention
// layer's q_proj holds [query | gate] per head (2 q_dim rows); both have the dense MLP.
TEST(LinearModules, Qwen3_5LinearAndGatedAttentionLayers) {
  const Checkpoint ck(model("qwen3_5_text_fp32"));
  const ModelConfig c = load_model_config(ck);
  ASSERT_TRUE(c.is_linear_attention(0));
  ASSERT_FALSE(c.is_linear_attention(2));
  EXPECT_EQ(layer_blocks(c, 0), (std::vector<LayerBlock>{LayerBlock::kLinearAttention, LayerBlock::kDenseMlp}));
  EXPECT_EQ(layer_blocks(c, 2), (std::vector<LayerBlock>{LayerBlock::kAttention, LayerBlock::kDenseMlp}));
  const auto lin = linear_modules(c, 0);
  EXPECT_EQ(names(lin), (std::vector<std::string>{
                            "model.layers.0.linear_attn.in_proj_qkv", "model.layers.0.linear_attn.in_proj_z",
                            "model.layers.0.linear_attn.in_proj_b", "model.layers.0.linear_attn.in_proj_a",
                            "model.layers.0.linear_attn.out_proj", "model.layers.0.mlp.gate_proj",
                            "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"}));
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(lin[static_cast<std::size_t>(i)].kind, LinearKind::kLinearAttention);
    EXPECT_FALSE(lin[static_cast<std::size_t>(i)].input_site.has_value());
  }
  const LinearAttentionConfig& la = c.linear_attention;
  EXPECT_EQ(lin[0].out, 2 * la.num_k_heads * la.head_k_dim + la.num_v_heads * la.head_v_dim);
  EXPECT_EQ(lin[4].in, la.num_v_heads * la.head_v_dim);
  const auto att = linear_modules(c, 2);
  EXPECT_EQ(att[0].name, "model.layers.2.self_attn.q_proj");
  EXPECT_EQ(att[0].out, 2 * c.q_dim());  // [query | gate] per head
  EXPECT_EQ(att[3].in, c.q_dim());       // o_proj reads the gated query-sized output
  const Checkpoint mm(model("qwen3_5_mm_bf16"));
  const ModelConfig cm = load_model_config(mm);
  EXPECT_EQ(linear_modules(cm, 0).front().name, "model.language_model.layers.0.linear_attn.in_proj_qkv");
  EXPECT_EQ(cm.attention_module(1), "model.language_model.layers.1.self_attn");
}

// Qwen3.5-MoE (Qwen3_5MoeSparseMoeBlock, vLLM's qwen3_5.py / qwen3_next.py): every layer's MLP is
// mlp.gate (router), mlp.experts.{e}.{gate,up,down}_proj (or the fused experts.gate_up_proj /
// down_proj), mlp.shared_expert.{gate,up,down}_proj (Linears on the block's input, like a dense MLP)
// and mlp.shared_expert_gate [1, hidden] (never quantized, like the router).
TEST(LinearModules, Qwen3_5MoeRouterExpertsSharedExpertAndItsGate) {
  const Checkpoint ck(model("qwen3_5_moe_text_fp32"));
  const ModelConfig c = load_model_config(ck);
  ASSERT_TRUE(c.is_linear_attention(0));
  EXPECT_EQ(layer_blocks(c, 0), (std::vector<LayerBlock>{LayerBlock::kLinearAttention, LayerBlock::kMoe}));
  EXPECT_EQ(layer_blocks(c, 2), (std::vector<LayerBlock>{LayerBlock::kAttention, LayerBlock::kMoe}));
  ASSERT_EQ(expert_layout(ck, c, 0), ExpertLayout::kPerExpert);
  const auto m = linear_modules(c, 0);
  const std::size_t e = static_cast<std::size_t>(c.num_experts);
  ASSERT_EQ(m.size(), 5 + 1 + 3 * e + 4);
  EXPECT_EQ(m[5].name, "model.layers.0.mlp.gate");
  EXPECT_EQ(m[6].name, "model.layers.0.mlp.experts.0.gate_proj");
  const std::size_t s = 6 + 3 * e;  // after the router and the experts
  EXPECT_EQ(names(std::vector<LinearModule>(m.begin() + static_cast<std::ptrdiff_t>(s), m.end())),
            (std::vector<std::string>{"model.layers.0.mlp.shared_expert.gate_proj", "model.layers.0.mlp.shared_expert.up_proj",
                                      "model.layers.0.mlp.shared_expert.down_proj", "model.layers.0.mlp.shared_expert_gate"}));
  EXPECT_EQ(m[s].kind, LinearKind::kMlp);
  EXPECT_EQ(m[s].role, LinearRole::kGate);
  EXPECT_TRUE(m[s].input_site == Site::kGateUpInput);
  EXPECT_EQ(m[s].out, c.shared_expert_intermediate_size);
  EXPECT_TRUE(m[s + 2].input_site == Site::kDownInput);
  EXPECT_EQ(m[s + 2].in, c.shared_expert_intermediate_size);
  EXPECT_EQ(m[s + 3].kind, LinearKind::kRouter);
  EXPECT_EQ(m[s + 3].role, LinearRole::kSharedExpertGate);
  EXPECT_EQ(m[s + 3].out, 1);
  LayerWeights w;
  EXPECT_EQ(linear_parts(&w, LinearRole::kSharedExpertGate), (std::vector<Linear*>{&w.experts.shared_gate}));
  EXPECT_EQ(linear_parts(&w, LinearRole::kGate), (std::vector<Linear*>{&w.gate}));
  // The wrapper, experts fused: the shared expert keeps its Linears.
  const Checkpoint mm(model("qwen3_5_moe_mm_bf16"));
  const ModelConfig cm = load_model_config(mm);
  ASSERT_EQ(expert_layout(mm, cm, 0), ExpertLayout::kFused);
  const auto f = linear_modules(cm, 0, true, ExpertLayout::kFused);
  EXPECT_EQ(f[6].weight_tensor(), "model.language_model.layers.0.mlp.experts.gate_up_proj");
  EXPECT_EQ(f.back().name, "model.language_model.layers.0.mlp.shared_expert_gate");
  EXPECT_EQ(f[f.size() - 2].weight_tensor(), "model.language_model.layers.0.mlp.shared_expert.down_proj.weight");
}

// Qwen3-Next (Qwen3NextGatedDeltaNet, vLLM's qwen3_next.py): the DeltaNet's in-projections are the
// fused in_proj_qkvz [2 key_dim + 2 value_dim, hidden] and in_proj_ba [2 num_v_heads, hidden]; no
// projection holds their interleaved rows as a block (the loader splits them). Layer 1 is a dense
// Qwen3NextMLP (mlp_only_layers).
TEST(LinearModules, Qwen3NextFusedInProjectionsAndDenseLayers) {
  const Checkpoint ck(model("qwen3_next_fp32"));
  const ModelConfig c = load_model_config(ck);
  const LinearAttentionConfig& la = c.linear_attention;
  const auto m = linear_modules(c, 1);
  EXPECT_EQ(names(m), (std::vector<std::string>{
                          "model.layers.1.linear_attn.in_proj_qkvz", "model.layers.1.linear_attn.in_proj_ba",
                          "model.layers.1.linear_attn.out_proj", "model.layers.1.mlp.gate_proj",
                          "model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"}));
  EXPECT_EQ(m[0].out, 2 * la.key_dim() + 2 * la.value_dim());
  EXPECT_EQ(m[1].out, 2 * la.num_v_heads);
  EXPECT_EQ(m[0].role, LinearRole::kInProjQkvz);
  EXPECT_EQ(m[0].kind, LinearKind::kLinearAttention);
  EXPECT_EQ(m[3].out, c.intermediate_size);
  LayerWeights w;
  EXPECT_TRUE(linear_parts(&w, LinearRole::kInProjQkvz).empty());
  EXPECT_TRUE(linear_parts(&w, LinearRole::kInProjBa).empty());
  const auto moe = linear_modules(c, 2);
  EXPECT_EQ(moe[0].name, "model.layers.2.self_attn.q_proj");
  EXPECT_EQ(moe[0].out, 2 * c.q_dim());
  EXPECT_EQ(moe.back().name, "model.layers.2.mlp.shared_expert_gate");
  EXPECT_EQ(c.attention_module(2), "model.layers.2.self_attn");
}

TEST(LinearModules, QwenMoeRouterThenExperts) {
  const Checkpoint ck(model("qwen3_moe_fp32"));
  const ModelConfig c = load_model_config(ck);
  int64_t l = 0;
  while (!c.is_moe(l)) ++l;
  const std::string p = c.layer_prefix(l);
  ASSERT_EQ(expert_layout(ck, c, l), ExpertLayout::kPerExpert);
  const auto m = linear_modules(c, l);
  ASSERT_EQ(m.size(), 4 + 1 + 3 * static_cast<std::size_t>(c.num_experts));
  EXPECT_EQ(m[4].name, p + "mlp.gate");
  EXPECT_EQ(m[4].kind, LinearKind::kRouter);
  EXPECT_EQ(m[5].name, p + "mlp.experts.0.gate_proj");
  EXPECT_EQ(m[6].name, p + "mlp.experts.0.up_proj");
  EXPECT_EQ(m[7].name, p + "mlp.experts.0.down_proj");
  EXPECT_TRUE(m[7].input_site == Site::kExpertDownInput);
  EXPECT_EQ(m[8].expert, 1);
}

TEST(LinearModules, MixtralHubAndFusedLayouts) {
  {
    const Checkpoint ck(model("mixtral_sliding_fp32"));
    const ModelConfig c = load_model_config(ck);
    ASSERT_EQ(expert_layout(ck, c, 0), ExpertLayout::kPerExpert);
    const auto m = linear_modules(c, 0);
    EXPECT_EQ(m[4].name, "model.layers.0.block_sparse_moe.gate");
    EXPECT_EQ(m[5].name, "model.layers.0.block_sparse_moe.experts.0.w1");  // gate
    EXPECT_EQ(m[6].name, "model.layers.0.block_sparse_moe.experts.0.w3");  // up
    EXPECT_EQ(m[7].name, "model.layers.0.block_sparse_moe.experts.0.w2");  // down
    EXPECT_EQ(m[6].role, LinearRole::kUp);
  }
  const Checkpoint ck(model("mixtral_fused_bf16"));
  const ModelConfig c = load_model_config(ck);
  ASSERT_EQ(expert_layout(ck, c, 0), ExpertLayout::kFused);
  const auto m = linear_modules(c, 0, true, ExpertLayout::kFused);
  const int64_t f = c.moe_intermediate_size;
  EXPECT_EQ(m[4].name, "model.layers.0.mlp.gate");
  // Expert 1's up rows of experts.gate_up_proj [E, 2 I, H]: after expert 0's 2 I and its own gate's I.
  const LinearModule& up1 = m[4 + 1 + 3 + 1];
  EXPECT_EQ(up1.weight_tensor(), "model.layers.0.mlp.experts.gate_up_proj");
  EXPECT_EQ(up1.expert, 1);
  EXPECT_EQ(up1.row0, 2 * f + f);
  EXPECT_EQ(up1.tensor_shape, (std::vector<int64_t>{c.num_experts, 2 * f, c.hidden_size}));
}

TEST(LinearModules, GptOssRouterHasABiasAndFusedExpertsAreNotLinears) {
  const Checkpoint ck(model("gpt_oss_classic_bf16"));
  const ModelConfig c = load_model_config(ck);
  ASSERT_EQ(expert_layout(ck, c, 0), ExpertLayout::kFused);
  const auto fused = linear_modules(c, 0, true, ExpertLayout::kFused);
  ASSERT_EQ(fused.size(), 5u);  // q, k, v, o, router
  EXPECT_EQ(fused[4].name, "model.layers.0.mlp.router");
  EXPECT_TRUE(fused[4].bias);
  // The plan's view (per-expert modules, which calibrate refuses for a fused checkpoint) names
  // the same router.
  EXPECT_EQ(linear_modules(c, 0)[4].name, "model.layers.0.mlp.router");
}

// Llama 4 (Llama4TextDecoderLayer, as transformers 5.17 saves it): the MLP module is feed_forward;
// a dense layer's gate/up/down are of width intermediate_size_mlp; an MoE layer lists its router
// feed_forward.router and its ungated shared_expert (width intermediate_size), never its fused
// input-major experts (model/llama4_experts.h reads them).
TEST(LinearModules, Llama4FeedForwardRouterAndSharedExpert) {
  const Checkpoint ck(model("llama4_text_fp32"));
  const ModelConfig c = load_model_config(ck);
  ASSERT_FALSE(c.is_moe(0));
  ASSERT_TRUE(c.is_moe(1));
  EXPECT_EQ(names(linear_modules(c, 0)),
            (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
                                      "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj",
                                      "model.layers.0.feed_forward.gate_proj", "model.layers.0.feed_forward.up_proj",
                                      "model.layers.0.feed_forward.down_proj"}));
  EXPECT_EQ(linear_modules(c, 0)[4].out, 96);  // intermediate_size_mlp
  ASSERT_EQ(expert_layout(ck, c, 1), ExpertLayout::kFused);
  const auto m = linear_modules(c, 1, true, ExpertLayout::kFused);
  EXPECT_EQ(names(std::vector<LinearModule>(m.begin() + 4, m.end())),
            (std::vector<std::string>{"model.layers.1.feed_forward.router", "model.layers.1.feed_forward.shared_expert.gate_proj",
                                      "model.layers.1.feed_forward.shared_expert.up_proj",
                                      "model.layers.1.feed_forward.shared_expert.down_proj"}));
  EXPECT_EQ(m[4].kind, LinearKind::kRouter);
  EXPECT_EQ(m[5].out, 32);  // the shared expert: intermediate_size
}

// Nemotron-H (NemotronHBlock; vLLM's nemotron_h.py maps backbone. -> model.): one block per layer,
// every module named mixer: Mamba2 in_proj / out_proj, attention q/k/v/o, or the ungated MLP's
// up_proj / down_proj.
TEST(LinearModules, NemotronHOneMixerPerBlock) {
  const Checkpoint ck(model("nemotron_h_fp32"));
  const ModelConfig c = load_model_config(ck);
  EXPECT_EQ(layer_blocks(c, 0), (std::vector<LayerBlock>{LayerBlock::kMamba2}));
  EXPECT_EQ(layer_blocks(c, 1), (std::vector<LayerBlock>{LayerBlock::kAttention}));
  EXPECT_EQ(layer_blocks(c, 2), (std::vector<LayerBlock>{LayerBlock::kDenseMlp}));
  const auto mamba = linear_modules(c, 0);
  EXPECT_EQ(names(mamba), (std::vector<std::string>{"backbone.layers.0.mixer.in_proj", "backbone.layers.0.mixer.out_proj"}));
  EXPECT_EQ(mamba[0].kind, LinearKind::kMamba);
  EXPECT_TRUE(mamba[0].input_site == Site::kMambaInProjInput);  // the normed hidden state
  EXPECT_TRUE(mamba[1].input_site == Site::kMambaOutProjInput);  // the gated RMSNorm's output
  EXPECT_EQ(mamba[0].out, 2 * c.mamba.intermediate_size() + 2 * c.mamba.n_groups * c.mamba.state_size + c.mamba.num_heads);
  EXPECT_TRUE(mamba[0].bias);  // use_bias in this case
  EXPECT_EQ(names(linear_modules(c, 1)),
            (std::vector<std::string>{"backbone.layers.1.mixer.q_proj", "backbone.layers.1.mixer.k_proj",
                                      "backbone.layers.1.mixer.v_proj", "backbone.layers.1.mixer.o_proj"}));
  const auto mlp = linear_modules(c, 2);
  EXPECT_EQ(names(mlp), (std::vector<std::string>{"backbone.layers.2.mixer.up_proj", "backbone.layers.2.mixer.down_proj"}));
  EXPECT_EQ(mlp[0].role, LinearRole::kUp);
  EXPECT_EQ(mlp[0].input_site, Site::kGateUpInput);
  EXPECT_TRUE(linear_modules(c, 0, false).size() == 2 && layer_blocks(c, 2, false).empty());
}

// Granite 4 hybrid (GraniteMoeHybridDecoderLayer; vLLM's granitemoehybrid.py): mamba.in_proj /
// out_proj or self_attn, then block_sparse_moe (router.layer, fused input_linear [E, 2 I, H] /
// output_linear [E, H, I]) and shared_mlp (input_linear [2 I, H]: gate rows then up, output_linear);
// without experts shared_mlp alone.
TEST(LinearModules, GraniteMoeHybridMambaMoeAndSharedMlp) {
  const Checkpoint ck(model("granitemoehybrid_fp32"));
  const ModelConfig c = load_model_config(ck);
  EXPECT_EQ(expert_layout(ck, c, 0), ExpertLayout::kFused);
  EXPECT_EQ(layer_blocks(c, 0), (std::vector<LayerBlock>{LayerBlock::kMamba2, LayerBlock::kMoe, LayerBlock::kDenseMlp}));
  const auto m = linear_modules(c, 0, true, ExpertLayout::kFused);
  EXPECT_EQ(m.front().name, "model.layers.0.mamba.in_proj");
  EXPECT_EQ(m[2].name, "model.layers.0.block_sparse_moe.router.layer");
  EXPECT_EQ(m[2].kind, LinearKind::kRouter);
  EXPECT_EQ(m[3].name, "model.layers.0.block_sparse_moe.input_linear.weight");  // a 3-D tensor named weight
  EXPECT_EQ(m[3].tensor_shape, (std::vector<int64_t>{c.num_experts, 2 * c.moe_intermediate_size, c.hidden_size}));
  const auto& gate_up = m[m.size() - 2];
  EXPECT_EQ(gate_up.name, "model.layers.0.shared_mlp.input_linear");
  EXPECT_EQ(gate_up.role, LinearRole::kGateUp);
  EXPECT_EQ(gate_up.parts, (std::vector<int64_t>{c.intermediate_size, c.intermediate_size}));
  EXPECT_EQ(m.back().name, "model.layers.0.shared_mlp.output_linear");
  EXPECT_EQ(linear_modules(c, 1).front().name, "model.layers.1.self_attn.q_proj");
  const Checkpoint dense(model("granitemoehybrid_dense_nope_bf16"));
  const ModelConfig cd = load_model_config(dense);
  EXPECT_EQ(layer_blocks(cd, 1), (std::vector<LayerBlock>{LayerBlock::kMamba2, LayerBlock::kDenseMlp}));
  EXPECT_TRUE(linear_modules(cd, 1)[0].bias);  // mamba_proj_bias
}

}  // namespace
}  // namespace ctcal
