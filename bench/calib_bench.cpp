// Calibration speed and memory on a Llama-shaped random bf16 model (issue 6), beside the
// machine's sgemm peak measured in the same run.
//
//   calib_bench make DIR [--layers 8] [--hidden 1024] [--heads 16] [--kv-heads 4]
//                        [--intermediate 2816] [--vocab 32000]
//   calib_bench run DIR [--samples 32] [--seq 512] [--threads T] [--bf16 1] [--max-memory MB]
//                       [--bf16-attention 0]   (bf16 mode with fp32 attention, as before issue 17)
//   CTCAL_CPU_PROFILE=1 also logs the wall time of each phase of the layers
//
// FLOPs counted: 2 x multiply-adds of the projections calibration needs (q, k, v, o every layer;
// gate, up, down for all but the last layer; no lm_head) plus causal attention (QK^T and PV over
// the lower triangle).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include <cblas.h>
#include <omp.h>

#include <nlohmann/json.hpp>

#include "bench_args.h"
#include "ctcal/data/sampling.h"
#include "ctcal/io/checkpoint.h"
#include "ctcal/io/safetensors.h"
#include "ctcal/pipeline/calibrate.h"
#include "ctcal/pipeline/plan.h"
#include "ctcal/recipe/recipe.h"
#include "ctcal/util/sha256.h"

namespace {

using bench::arg;
using bench::arg_str;

using Clock = std::chrono::steady_clock;

// N(0, std) bf16 values from SplitMix64 (Box-Muller).
ctcal::TensorBlob random_blob(ctcal::SplitMix64& rng, std::vector<int64_t> shape, float stddev, float mean = 0) {
  std::size_t n = 1;
  for (auto d : shape) n *= static_cast<std::size_t>(d);
  ctcal::TensorBlob b{ctcal::DType::kBF16, shape, std::vector<unsigned char>(2 * n)};
  for (std::size_t i = 0; i < n; ++i) {
    const double u1 = (static_cast<double>(rng.next() >> 11) + 0.5) / 9007199254740992.0;
    const double u2 = static_cast<double>(rng.next() >> 11) / 9007199254740992.0;
    const auto v = static_cast<float>(mean + stddev * std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2));
    const uint16_t h = ctcal::f32_to_bf16(v);
    std::memcpy(b.bytes.data() + 2 * i, &h, 2);
  }
  return b;
}

// A random bf16 checkpoint of one family (--family llama|qwen3|gemma3|qwen3_moe|gpt_oss): Llama's
// shapes plus the family's extra tensors (q/k norms; Gemma 3's (1 + w) sandwich norms; MoE
// experts; gpt-oss: biases, sinks, biased router, fused [E, H, 2I] experts, YaRN, window 128 on
// even layers).
int make(const std::string& dir, int argc, char** argv) {
  const int64_t L = arg(argc, argv, "--layers", 8), H = arg(argc, argv, "--hidden", 1024);
  const int64_t nh = arg(argc, argv, "--heads", 16), nkv = arg(argc, argv, "--kv-heads", 4);
  const int64_t F = arg(argc, argv, "--intermediate", 2816), V = arg(argc, argv, "--vocab", 32000);
  const int64_t E = arg(argc, argv, "--experts", 16), K = arg(argc, argv, "--top-k", 4);
  const int64_t FE = arg(argc, argv, "--moe-intermediate", 512);
  const std::string family = arg_str(argc, argv, "--family", "llama");
  const bool qwen3 = family == "qwen3" || family == "qwen3_moe", gemma = family == "gemma3", moe = family == "qwen3_moe";
  const bool oss = family == "gpt_oss";
  if (!qwen3 && !gemma && !oss && family != "llama") {
    std::fprintf(stderr, "--family: llama, qwen3, gemma3, qwen3_moe or gpt_oss\n");
    return 2;
  }
  const int64_t d = H / nh;
  std::filesystem::create_directories(dir);
  const char* arch = oss ? "GptOssForCausalLM" : moe ? "Qwen3MoeForCausalLM" : qwen3 ? "Qwen3ForCausalLM"
                     : gemma ? "Gemma3ForCausalLM" : "LlamaForCausalLM";
  nlohmann::json cfg = {{"architectures", {arch}}, {"hidden_size", H},
                        {"intermediate_size", F}, {"num_hidden_layers", L}, {"num_attention_heads", nh},
                        {"num_key_value_heads", nkv}, {"head_dim", d}, {"vocab_size", V}, {"rms_norm_eps", 1e-5},
                        {"max_position_embeddings", 4096}, {"rope_theta", 500000.0}, {"torch_dtype", "bfloat16"},
                        {"tie_word_embeddings", gemma}};
  if (gemma) {
    cfg["hidden_activation"] = "gelu_pytorch_tanh";
    cfg["query_pre_attn_scalar"] = d;
    cfg["sliding_window"] = 256;  // layers 0-4 of every 6 local, as Gemma 3
    cfg["rope_local_base_freq"] = 10000.0;
  } else {
    cfg["hidden_act"] = "silu";
  }
  if (oss) {  // experts of width --moe-intermediate, as intermediate_size
    cfg["intermediate_size"] = FE;
    cfg["num_local_experts"] = E;
    cfg["num_experts_per_tok"] = K;
    cfg["sliding_window"] = 128;
    cfg["attention_bias"] = true;
    cfg["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 32.0}, {"beta_fast", 32.0}, {"beta_slow", 1.0},
                           {"truncate", false}, {"original_max_position_embeddings", 4096}};
    cfg["rope_theta"] = 150000.0;
  }
  if (moe) {
    cfg["num_experts"] = E;
    cfg["num_experts_per_tok"] = K;
    cfg["moe_intermediate_size"] = FE;
    cfg["norm_topk_prob"] = true;
  }
  std::ofstream(dir + "/config.json") << cfg.dump(2);
  ctcal::SplitMix64 rng(1);
  nlohmann::json weight_map;
  // One shard per layer keeps each write small.
  auto shard = [&](const std::string& name, std::map<std::string, ctcal::TensorBlob> t) {
    ctcal::write_safetensors(dir + "/" + name, t);
    for (const auto& [k, _] : t) weight_map[k] = name;
  };
  const float norm_mean = gemma ? 0.0f : 1.0f;  // Gemma 3 norms multiply by (1 + w)
  std::map<std::string, ctcal::TensorBlob> top = {{"model.embed_tokens.weight", random_blob(rng, {V, H}, 0.02f)},
                                                  {"model.norm.weight", random_blob(rng, {H}, 0.02f, norm_mean)}};
  if (!gemma) top["lm_head.weight"] = random_blob(rng, {V, H}, 0.02f);
  shard("embed.safetensors", top);
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::map<std::string, ctcal::TensorBlob> t = {
        {p + "input_layernorm.weight", random_blob(rng, {H}, 0.02f, norm_mean)},
        {p + "post_attention_layernorm.weight", random_blob(rng, {H}, 0.02f, norm_mean)},
        {p + "self_attn.q_proj.weight", random_blob(rng, {nh * d, H}, 0.05f)},
        {p + "self_attn.k_proj.weight", random_blob(rng, {nkv * d, H}, 0.05f)},
        {p + "self_attn.v_proj.weight", random_blob(rng, {nkv * d, H}, 0.05f)},
        {p + "self_attn.o_proj.weight", random_blob(rng, {H, nh * d}, 0.02f)}};
    if (qwen3 || gemma) {
      t[p + "self_attn.q_norm.weight"] = random_blob(rng, {d}, 0.02f, norm_mean);
      t[p + "self_attn.k_norm.weight"] = random_blob(rng, {d}, 0.02f, norm_mean);
    }
    if (gemma) {
      t[p + "pre_feedforward_layernorm.weight"] = random_blob(rng, {H}, 0.02f, norm_mean);
      t[p + "post_feedforward_layernorm.weight"] = random_blob(rng, {H}, 0.02f, norm_mean);
    }
    if (oss) {
      for (const char* b : {"q_proj", "k_proj", "v_proj"})
        t[p + "self_attn." + b + ".bias"] = random_blob(rng, {std::string(b) == "q_proj" ? nh * d : nkv * d}, 0.02f);
      t[p + "self_attn.o_proj.bias"] = random_blob(rng, {H}, 0.02f);
      t[p + "self_attn.sinks"] = random_blob(rng, {nh}, 0.5f);
      t[p + "mlp.router.weight"] = random_blob(rng, {E, H}, 0.05f);
      t[p + "mlp.router.bias"] = random_blob(rng, {E}, 0.05f);
      t[p + "mlp.experts.gate_up_proj"] = random_blob(rng, {E, H, 2 * FE}, 0.02f);
      t[p + "mlp.experts.gate_up_proj_bias"] = random_blob(rng, {E, 2 * FE}, 0.02f);
      t[p + "mlp.experts.down_proj"] = random_blob(rng, {E, FE, H}, 0.02f);
      t[p + "mlp.experts.down_proj_bias"] = random_blob(rng, {E, H}, 0.02f);
    } else if (moe) {
      t[p + "mlp.gate.weight"] = random_blob(rng, {E, H}, 0.05f);
      for (int64_t e = 0; e < E; ++e) {
        const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
        t[x + "gate_proj.weight"] = random_blob(rng, {FE, H}, 0.02f);
        t[x + "up_proj.weight"] = random_blob(rng, {FE, H}, 0.02f);
        t[x + "down_proj.weight"] = random_blob(rng, {H, FE}, 0.02f);
      }
    } else {
      t[p + "mlp.gate_proj.weight"] = random_blob(rng, {F, H}, 0.02f);
      t[p + "mlp.up_proj.weight"] = random_blob(rng, {F, H}, 0.02f);
      t[p + "mlp.down_proj.weight"] = random_blob(rng, {H, F}, 0.02f);
    }
    shard("layer" + std::to_string(l) + ".safetensors", t);
  }
  std::ofstream(dir + "/model.safetensors.index.json") << nlohmann::json({{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}}).dump(1);
  std::printf("wrote %s: %s, %ld layers, hidden %ld, %ld/%ld heads, intermediate %ld, vocab %ld\n", dir.c_str(), arch,
              static_cast<long>(L), static_cast<long>(H), static_cast<long>(nh), static_cast<long>(nkv),
              static_cast<long>(moe || oss ? FE : F), static_cast<long>(V));
  return 0;
}

double sgemm_gflops(int n) {
  std::vector<float> a(static_cast<std::size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  double best = 1e9;
  for (int rep = 0; rep < 4; ++rep) {
    auto t0 = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return 2.0 * n * n * static_cast<double>(n) / best / 1e9;
}

int run(const std::string& dir, int argc, char** argv) {
  const int64_t S = arg(argc, argv, "--seq", 512), N = arg(argc, argv, "--samples", 32);
  const int threads = static_cast<int>(arg(argc, argv, "--threads", omp_get_max_threads()));
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  const double peak = sgemm_gflops(2048);
  ctcal::Checkpoint ckpt(dir);
  ctcal::ModelConfig c = ctcal::load_model_config(ckpt);
  ctcal::Recipe r = ctcal::parse_recipe(
      "q_stage:\n  q_modifiers:\n    QuantizationModifier: {kv_cache_scheme: {type: float, strategy: attn_head}}\n", "bench");
  ctcal::CalibrationPlan plan = ctcal::make_plan(r, c, ctcal::DType::kBF16);
  ctcal::SplitMix64 rng(7);
  std::vector<std::vector<int32_t>> samples(static_cast<std::size_t>(N));
  for (auto& s : samples)
    for (int64_t t = 0; t < S; ++t) s.push_back(static_cast<int32_t>(rng.bounded(static_cast<uint64_t>(c.vocab_size))));
  ctcal::CalibrateOptions copt;
  copt.bf16_compute = arg(argc, argv, "--bf16", 0) != 0;
  copt.bf16_attention = arg(argc, argv, "--bf16-attention", 1) != 0;
  if (const int64_t mb = arg(argc, argv, "--max-memory", 0); mb > 0)
    copt.forward.chunk_tokens = ctcal::chunk_tokens_for_budget(c, N * S, S, static_cast<double>(mb) * 1048576.0, copt.bf16_compute);
  const auto est = ctcal::estimate_memory(c, N * S, copt.bf16_compute);
  const auto t0 = Clock::now();
  ctcal::CalibrationResult res = ctcal::run_calibration(ckpt, plan, samples, copt);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const double T = static_cast<double>(N * S), H = static_cast<double>(c.hidden_size);
  const double proj = H * (c.q_dim() + 2.0 * c.kv_dim()) + static_cast<double>(c.q_dim()) * H;  // q, k, v, o
  // MoE: the FLOPs of the active experts (top-k of them per token) and the router.
  const double mlp = c.family->mlp == ctcal::MlpKind::kMoe
                         ? 3.0 * H * static_cast<double>(c.moe_intermediate_size) * static_cast<double>(c.num_experts_per_tok) +
                               H * static_cast<double>(c.num_experts)
                         : 3.0 * H * static_cast<double>(c.intermediate_size);
  // Per sample, summed over layers: QK^T + PV (MACs) over the keys each query sees (sliding
  // layers: at most the window).
  double attn = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const int64_t w = c.window(l).value_or(S);
    for (int64_t q = 0; q < S; ++q) attn += 2.0 * static_cast<double>(std::min(q + 1, w)) * static_cast<double>(c.head_dim * c.num_attention_heads);
  }
  const double flops = 2.0 * (T * (proj * c.num_hidden_layers + mlp * (c.num_hidden_layers - 1)) + attn * N);
  // VmHWM, not getrusage: ru_maxrss survives exec and would report a parent's size.
  double peak_mb = 0;
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) peak_mb = std::stod(line.substr(6)) / 1024.0;
  const double layer_f32_mb = 4.0 * (proj + mlp) / 1e6;
  std::printf("threads %d | sgemm 2048^3 (OpenBLAS) %.1f GFLOP/s\n", threads, peak);
  std::printf("%s ", c.architecture.c_str());
  std::printf("calibration (%s): %ld layers, %ld samples x %ld tokens: %.2f s, %.0f tokens/s, %.1f GFLOP/s = %.0f%% of sgemm\n",
              !copt.bf16_compute ? "fp32" : copt.bf16_attention ? "bf16 GEMMs" : "bf16 GEMMs, fp32 attention", static_cast<long>(c.num_hidden_layers), static_cast<long>(N), static_cast<long>(S), secs, T / secs,
              flops / secs / 1e9, 100.0 * flops / secs / 1e9 / peak);
  std::printf("peak RSS %.0f MB (one layer fp32 %.0f MB, hidden states %.0f MB)\n", peak_mb,
              layer_f32_mb, 4.0 * T * H / 1e6);
  std::printf("model of memory: hidden %.0f MB + layer %.0f MB + %ld-token chunk %.0f MB = %.0f MB\n", est.hidden_bytes / 1048576,
              est.layer_bytes / 1048576, static_cast<long>(std::min<int64_t>(copt.forward.chunk_tokens, N * S)),
              est.per_token_bytes * static_cast<double>(std::min<int64_t>(copt.forward.chunk_tokens, N * S)) / 1048576,
              (est.hidden_bytes + est.layer_bytes + est.per_token_bytes * static_cast<double>(std::min<int64_t>(copt.forward.chunk_tokens, N * S))) / 1048576);
  // Every layer's observed per-head K/V minima and maxima (fp32 values, before rounding into the
  // scale dtype): one differing activation bit at an extreme changes the digest. Compare across
  // --threads for determinism.
  std::string observed;
  for (const auto& layer : res.layers)
    for (const auto& site : layer.sites)
      for (const auto* vals : {&site.obs_min, &site.obs_max})
        observed.append(reinterpret_cast<const char*>(vals->data()), vals->size() * sizeof(double));
  std::printf("k_scale[0] %.9g, observed min/max digest %s\n", res.layers[0].find(ctcal::Site::kKey)->qparams.scale[0],
              ctcal::sha256_hex(observed).substr(0, 16).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: calib_bench make|run DIR [options]\n");
    return 2;
  }
  const std::string mode = argv[1], dir = argv[2];
  return mode == "make" ? make(dir, argc, argv) : run(dir, argc, argv);
}
