#include "commands/calibrate_command.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "commands/inspect_command.h"
#include "ctcal/data/dataset.h"
#include "ctcal/dtype.h"
#include "ctcal/error.h"
#include "ctcal/eval/eval_run.h"
#include "ctcal/eval/evaluate.h"
#include "ctcal/eval/nvfp4_scale_search.h"
#include "ctcal/eval/unit_scales_verdict.h"
#include "ctcal/inspect/inspect.h"
#include "ctcal/inspect/vllm_verdict.h"
#include "ctcal/io/checkpoint.h"
#include "ctcal/io/output_dir.h"
#include "ctcal/model/compute_device.h"
#include "ctcal/model/cuda_backend.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/onednn_matmul.h"
#include "ctcal/pipeline/calibrate.h"
#include "ctcal/pipeline/plan.h"
#include "ctcal/pipeline/quant_config.h"
#include "ctcal/pipeline/range_shortfall.h"
#include "ctcal/pipeline/write_checkpoint.h"
#include "ctcal/quant/nvfp4.h"
#include "ctcal/quant/nvfp4_record.h"
#include "ctcal/recipe/recipe.h"
#include "ctcal/recipe/recipe_emit.h"
#include "ctcal/report/calibrate_report.h"
#include "ctcal/report/scheme_words.h"
#include "ctcal/run_defaults.h"
#include "ctcal/util/progress_line.h"
#include "ctcal/util/ranks.h"
#include "ctcal/util/sha256.h"
#include "ctcal/version.h"

namespace ctcal::app {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// The run's settings: each flag over the recipe's `ctcal:` block over the defaults.
struct Resolved {
  fs::path model, dataset, output;
  std::optional<fs::path> tokenizer;
  SamplingOptions sampling;
  std::string key_range = kDefaultKeyRange;  // or "envelope"
  std::string propagate = kDefaultPropagate;  // or "quantized"
};

// Flags override the recipe's `ctcal:` block; relative paths in the block are relative to the
// recipe file's directory.
Resolved resolve(const CalibrateRequest& req, const Recipe& r) {
  const fs::path base = fs::path(req.recipe).parent_path();
  auto pick = [&](const std::optional<std::string>& flag, const std::optional<std::string>& block,
                  const char* name, bool required) -> std::optional<fs::path> {
    if (flag) return fs::path(*flag);
    if (block) return fs::path(*block).is_absolute() ? fs::path(*block) : base / *block;
    if (required)
      throw UsageError(fmt::format("--{} is required (or set ctcal.{} in the recipe)", name, name));
    return std::nullopt;
  };
  Resolved o;
  o.model = *pick(req.model, r.ctcal.model, "model", true);
  o.dataset = *pick(req.dataset, r.ctcal.dataset, "dataset", true);
  o.output = pick(req.output, r.ctcal.output, "output", !req.dry_run).value_or(fs::path());
  o.tokenizer = pick(req.tokenizer, r.ctcal.tokenizer, "tokenizer", false);
  o.sampling.num_samples = req.num_samples.value_or(r.ctcal.num_samples.value_or(kDefaultNumSamples));
  o.sampling.max_seq_length = req.max_seq_length.value_or(r.ctcal.max_seq_length.value_or(kDefaultMaxSeqLength));
  o.sampling.seed = req.seed.value_or(r.ctcal.seed.value_or(kDefaultSeed));
  o.sampling.shuffle = req.no_shuffle ? false : r.ctcal.shuffle.value_or(kDefaultShuffle);
  o.key_range = req.key_range.value_or(r.ctcal.key_range.value_or(kDefaultKeyRange));
  if (o.key_range != "observed" && o.key_range != "envelope")
    throw UsageError(fmt::format("--key-range {}: expected observed or envelope", o.key_range));
  o.propagate = req.propagate.value_or(r.ctcal.propagate.value_or(kDefaultPropagate));
  if (o.propagate != "unquantized" && o.propagate != "quantized")
    throw UsageError(fmt::format("--propagate {}: expected unquantized or quantized", o.propagate));
  if (o.sampling.num_samples <= 0) throw UsageError("--num-samples must be positive");
  if (o.sampling.max_seq_length <= 0) throw UsageError("--max-seq-length must be positive");
  return o;
}

json run_block(const Resolved& o) {
  return {{"num_samples", o.sampling.num_samples}, {"max_seq_length", o.sampling.max_seq_length},
          {"seed", o.sampling.seed}, {"shuffle", o.sampling.shuffle}, {"key_range", o.key_range}};
}

// run_block, plus `propagate` when it is not the default (recipes without FP8 Linear layers, and
// the default, keep the block they always had).
json run_block(const Resolved& o, const CalibrationPlan& plan) {
  json b = run_block(o);
  if (o.propagate != kDefaultPropagate && !plan.linear.empty()) b["propagate"] = o.propagate;
  return b;
}

std::string fmt_range(const std::vector<double>& v) {
  const auto [mn, mx] = std::minmax_element(v.begin(), v.end());
  if (v.size() == 1) return fmt::format("{:.4g}", *mn);
  return fmt::format("{:.4g}..{:.4g}", *mn, *mx);
}

void print_plan(std::ostream& out, const CalibrationPlan& plan, const Resolved& o) {
  const ModelConfig& m = plan.model;
  out << fmt::format("model      {} ({}, {} layers, {} heads / {} kv heads, head_dim {}, scale dtype {})\n",
                     o.model.string(), m.architecture, m.num_hidden_layers, m.num_attention_heads,
                     m.num_key_value_heads, m.head_dim, dtype_name(plan.storage));
  out << fmt::format("dataset    {} ({} samples max, {} tokens max each, seed {}, shuffle {})\n",
                     o.dataset.string(), o.sampling.num_samples, o.sampling.max_seq_length,
                     o.sampling.seed, o.sampling.shuffle);
  auto args = [](const QuantArgs& a) {
    return fmt::format("{}{} {} {}, observer {}", quant_type_name(a.type), a.num_bits,
                       a.symmetric ? "symmetric" : "asymmetric", strategy_name(*a.strategy),
                       a.observer.value_or("-"));
  };
  out << fmt::format("kv cache   {}\n", args(plan.kv_args));
  if (plan.query_args) out << fmt::format("attention  {} (group '{}')\n", args(*plan.query_args), *plan.attention_group);
  if (plan.r3) out << fmt::format("R3         {} {}x{} on queries and keys after RoPE{}\n", plan.r3->type, plan.r3->size, plan.r3->size,
                                  plan.rotations_observed ? "" : " (observed before rotation)");
  if (plan.r2) out << fmt::format("R2         {} {}x{} folded into v_proj / o_proj\n", plan.r2->type, plan.r2->size, plan.r2->size);
  if (!plan.linear.empty()) {
    std::map<std::string, int> per_group;
    for (const auto& lp : plan.linear) ++per_group[lp.group];
    for (const auto& [g, count] : per_group)
      out << fmt::format("linear     group '{}': {} Linear layers to FP8 (weights {}; inputs {}); ignore {}\n", g, count,
                         plan.linear_groups[g]["weights"]["strategy"].get<std::string>(),
                         plan.linear_groups[g]["input_activations"].is_null() ? std::string("not quantized")
                         : plan.linear_groups[g]["input_activations"]["dynamic"] == true ? std::string("dynamic")
                                                                                          : std::string("static, observed"),
                         json(plan.ignore).dump());
    out << fmt::format("propagate  {}\n", o.propagate == "quantized"
                                              ? "quantized: the forward runs on the FP8 weights written (inputs unquantized)"
                                              : "unquantized: the forward runs on the original weights, as llm-compressor 0.14 "
                                                "calibrates");
  }
  std::string sites;
  for (Site s : plan.sites()) sites += fmt::format("{}{}", sites.empty() ? "" : ", ", site_name(s));
  out << fmt::format("observe    {} per layer, layers 0..{}\n", sites, m.num_hidden_layers - 1);
  // A hybrid's linear-attention, Mamba2 and (Nemotron-H) MLP-block layers, by kind.
  std::map<std::string_view, std::vector<int64_t>> no_kv;
  for (int64_t l = 0; l < m.num_hidden_layers; ++l)
    if (!m.has_kv_cache(l)) no_kv[m.layer_kind(l)].push_back(l);
  for (const auto& [kind, layers] : no_kv)
    out << fmt::format("no KV      layers {}: {}: no KV cache (no Q/K/V observed, no scales)\n",
                       fmt::join(layers, ", "), kind);
  if (!plan.expert_sites().empty())
    out << fmt::format("experts    {} per expert of each MoE layer, on its routed tokens\n",
                       plan.expert_sites().size() == 2 ? "expert_gate_up_input, expert_down_input"
                                                       : std::string(site_name(plan.expert_sites()[0])));
  out << fmt::format("output     {}\n", o.output.empty() ? std::string("(none: --output not given)") : o.output.string());
}

// The plan's line for --kv-cache-dtype nvfp4.
constexpr const char* kNvfp4PlanLine =
    "nvfp4      --kv-cache-dtype nvfp4: after the FP8 calibration, the NVFP4 decode multipliers s searched on up to 32 "
    "calibration samples are written as k/v scales (declared FP8 per tensor; ctcal_report.json nvfp4_kv says so)\n";

void print_summary(std::ostream& out, const CalibrationPlan& plan, const CalibrationResult& r) {
  std::string header = fmt::format("{:>5}", "layer");
  for (Site s : plan.sites())
    header += fmt::format("  {:>9} {:>21}", fmt::format("{} absmax", site_name(s)), fmt::format("{}_scale", site_name(s)));
  out << header << "\n";
  for (const auto& l : r.layers) {
    std::string row = fmt::format("{:>5}", l.layer);
    // A layer without a KV cache (a hybrid's linear attention) observes fewer sites: its columns
    // stay under their headers, blank where nothing is observed, and the row says why at its end.
    const std::vector<Site> here = plan.sites(l.layer);
    for (Site s : plan.sites()) {
      if (std::find(here.begin(), here.end(), s) == here.end()) {
        row += fmt::format("  {:>9} {:>21}", "", "");
        continue;
      }
      const SiteResult* sr = l.find(s);
      if (sr->observations == 0) {  // e.g. a dense MLP's input on an MoE layer (its experts are apart)
        row += fmt::format("  {:>9} {:>21}", "-", "-");
        continue;
      }
      double absmax = 0;
      for (std::size_t h = 0; h < sr->head_min.size(); ++h)
        absmax = std::max({absmax, std::fabs(sr->head_min[h]), std::fabs(sr->head_max[h])});
      row += fmt::format("  {:>9.4g} {:>21}", absmax, fmt_range(sr->qparams.scale));
    }
    if (!plan.model.has_kv_cache(l.layer)) row += fmt::format("  {}: no KV cache", plan.model.layer_kind(l.layer));
    out << row << "\n";
  }
}

// The calibration samples the after-calibration evidence runs on (layer ranking, scale-1.0
// baseline): the first 32, which bounds the extra forward passes on large calibration sets.
std::vector<std::vector<int32_t>> evidence_samples(const std::vector<std::vector<int32_t>>& samples) {
  const std::size_t n = std::min<std::size_t>(32, samples.size());
  return {samples.begin(), samples.begin() + static_cast<std::ptrdiff_t>(n)};
}

// Observers whose range is not the range of every sample: memoryless ones keep the last sample's,
// minmax keeps a moving average (0.01 per sample), which trails the extremes.
bool under_ranges(const std::optional<QuantArgs>& a) {
  return a && a->observer && (a->observer->starts_with("memoryless_minmax") || *a->observer == "minmax");
}

// The recipe is honoured, but a memoryless or moving-average observer does not keep the range of
// every sample: say how much of the full range the scales miss, and where.
void warn_range_shortfall(const CalibrationPlan& plan, const CalibrationResult& result) {
  if (!under_ranges(plan.kv_args) && !under_ranges(plan.query_args)) return;
  const auto worst = largest_range_shortfall(result);
  if (!worst) return;
  const std::string kind = plan.kv_args.observer.value_or(plan.query_args ? plan.query_args->observer.value_or("") : "");
  spdlog::warn("observer {} {}: the written scales miss up to {:.1f} % of the "
               "range seen over all {} samples (worst: layer {} {}{}, absmax {:.4g} kept vs {:.4g} seen), so the "
               "largest values will saturate. Use observer: static_minmax for the range of every sample.",
               kind, kind == "minmax" ? "keeps a moving average of each sample's range" : "keeps only the LAST sample's range",
               100 * worst->fraction(), result.samples, worst->layer, site_name(worst->site),
               worst->head > 0 ? fmt::format(" head {}", worst->head) : std::string(), worst->observed_absmax,
               worst->full_absmax);
}

// The GEMM inputs' dtype: the GPU's GEMMs are bf16 (tensor cores, fp32 accumulation) whatever
// --compute-dtype says.
std::string compute_dtype_name(const CalibrateRequest& req, const ComputeDevice& device) {
  return device.is_cuda() ? "bf16" : req.compute_dtype;
}

// The device --device names for this process.
ComputeDevice calibrate_device(const CalibrateRequest& req) {
  ComputeDevice device = ComputeDevice::parse(req.device);
  // Under mpirun, a bare --device cuda gives each rank of a host its own GPU (local rank modulo
  // the GPUs there; with one GPU the ranks share it).
  if (device.is_cuda() && req.device == "cuda") device.index = cuda_device_for_local_rank(Ranks::local_rank());
  return device;
}

// What preflight read and checked, for the run and the writer.
struct Checked {
  ComputeDevice device;
  std::future<void> gpu_context;  // the GPU's context, opening while the data is read
  std::unique_ptr<Checkpoint> ckpt;
  ModelConfig cfg;
  DType storage = DType::kF32;
  CalibrationPlan plan;
  std::unique_ptr<StagingDir> staging;  // rank 0 of a run that writes
};

// The flags that need no model, the device, and every output path.
void check_device_and_outputs(const CalibrateRequest& req, const Resolved& o, Checked& c) {
  if (req.compute_dtype != "fp32" && req.compute_dtype != "bf16")
    throw UsageError(fmt::format("--compute-dtype {}: expected fp32 or bf16", req.compute_dtype));
  c.device = calibrate_device(req);
  const ComputeDevice& device = c.device;
  if (req.max_gpu_memory_mb && !device.is_cuda())
    throw UsageError("--max-gpu-memory applies to --device cuda; this run is on the CPU (--max-memory bounds it)");
  if (device.is_cuda()) spdlog::info("device: {}", cuda_device_description(device.index));
  // The GPU's context (0.1-0.3 s) is created while this thread reads the model and tokenizes.
  if (device.is_cuda() && !req.dry_run)
    c.gpu_context = std::async(std::launch::async, [index = device.index] { cuda_open_device(index); });
  if (req.compute_dtype == "bf16" && !device.is_cuda() && !cpu_has_native_bf16())
    throw UsageError("--compute-dtype bf16 needs a CPU with AVX512-BF16 or AMX; this one has neither (use the "
                     "default fp32 mode)");
  // Every output path is checked before any work (also with --dry-run): a bad --output or
  // --report fails now, not after an hour of calibration, and never leaves a half-written output.
  if (!o.output.empty()) check_output_destination(o.output, o.model, req.overwrite);
  if (req.report) check_writable_file(*req.report, "--report");
  if (req.kv_cache_dtype != "auto" && req.kv_cache_dtype != "nvfp4")
    throw UsageError(fmt::format("--kv-cache-dtype {}: expected auto (the recipe's kv_cache_scheme) or nvfp4 (vLLM's "
                                 "NVFP4 KV cache; vLLM's nvfp4_4over6 searches its own block scales and is not "
                                 "modelled)", req.kv_cache_dtype));
  if (req.kv_cache_dtype == "nvfp4" && req.report)
    throw UsageError("--kv-cache-dtype nvfp4 with --report: the calibrate page plots FP8 scales against their ranges, "
                     "which NVFP4 decode multipliers are not; use ctcal eval --kv-cache-dtype nvfp4 --report for the "
                     "NVFP4 costs");
}

// --kv-cache-dtype nvfp4: what the NVFP4 scales are written under and searched from. vLLM takes
// one s per layer for K and one for V (layer._k_scale, a scalar), declared as an FP8 per-tensor
// kv_cache_scheme; the search starts from the FP8 calibration's amax (scale x 448). Under MPI the
// search runs on rank 0 after the ranks' static_minmax ranges are combined, on the same samples
// as one process (the first 32 calibration samples), so it needs nothing combined.
void check_nvfp4_plan(const CalibrateRequest& req, const CalibrationPlan& plan) {
  const QuantArgs& a = plan.kv_args;
  if (!(a.type == QuantType::kFloat && a.num_bits == 8 && a.symmetric))
    throw UsageError(fmt::format("--kv-cache-dtype nvfp4: {}'s kv_cache_scheme is {}{} {}; ctcal writes the NVFP4 "
                                 "decode multipliers as the k/v scales of a symmetric FP8 per-tensor kv_cache_scheme "
                                 "(what vLLM 0.34 loads) and searches them from its amax: use one "
                                 "(recipes/fp8_kv_per_tensor.yaml)",
                                 req.recipe, quant_type_name(a.type), a.num_bits, a.symmetric ? "symmetric" : "asymmetric"));
  if (a.strategy != Strategy::kTensor)
    throw UsageError(fmt::format("--kv-cache-dtype nvfp4: {}'s kv_cache_scheme has strategy {}; vLLM's NVFP4 KV cache "
                                 "takes one decode multiplier per layer for K and one for V (layer._k_scale), so the "
                                 "scheme must be per tensor", req.recipe, strategy_name(*a.strategy)));
  const ModelConfig& m = plan.model;
  for (int64_t l = 0; l < m.num_hidden_layers; ++l)  // every layer's (Gemma 4's differ)
    if (m.head_dim_of(l) % nvfp4::kBlockSize != 0)
      throw InputError(fmt::format("--kv-cache-dtype nvfp4: the model has head_dim {} (layer {}), not a multiple of 16; "
                                   "vLLM's NVFP4 KV cache quantizes each head in 16-element blocks and refuses it",
                                   m.head_dim_of(l), l));
  if (m.head_dim == 64)
    spdlog::warn("--kv-cache-dtype nvfp4: vLLM 0.34 refuses NVFP4 at head_size 64 on FlashInfer's FA2 path (Hopper: "
                 "'fa2 prefill misreads NVFP4 at head_size 64'); only SM100's trtllm-gen path serves this model");
  if (plan.r3)
    spdlog::warn("--kv-cache-dtype nvfp4 with R3: the scales are searched on rotated keys, and mainline vLLM applies "
                 "no rotation; the checkpoint is evidence, not something vLLM 0.34 serves");
}

// The model's tensors and the plan: what the recipe asks of this model, and the flags that need
// the model.
void check_model_and_plan(const CalibrateRequest& req, const Recipe& recipe, const Resolved& o, Checked& c) {
  const ComputeDevice& device = c.device;
  c.ckpt = std::make_unique<Checkpoint>(o.model);
  const Checkpoint& ckpt = *c.ckpt;
  c.cfg = load_model_config(ckpt);
  const ModelConfig& cfg = c.cfg;
  c.storage = cfg.dtype.value_or(ckpt.weight_dtype());
  check_model_tensors(ckpt, cfg);  // every tensor present, right shape: fail before any work
  if (device.is_cuda()) check_cuda_supports(cfg, ForwardOptions{});
  c.plan = make_plan(recipe, cfg, c.storage, o.sampling.seed);
  CalibrationPlan& plan = c.plan;
  // The output's quantization_config, built now so that a checkpoint ctcal reads but cannot write
  // (gpt-oss in MXFP4: quant_method "mxfp4", which vLLM needs to keep) fails before any work.
  if (!o.output.empty()) (void)build_quantization_config(ckpt.config(), plan, ckpt.config_path().string());
  if (req.kv_skip_layers < 0 || req.kv_skip_layers >= cfg.num_hidden_layers)
    throw UsageError(fmt::format("--kv-skip-layers {}: expected 0 to {} (the model has {} layers)", req.kv_skip_layers,
                                 cfg.num_hidden_layers - 1, cfg.num_hidden_layers));
  if (o.key_range == "envelope") {
    // Llama 4's RoPE layers L2-normalise K after RoPE (Llama4TextL2Norm): the pre-RoPE pair norms no
    // longer bound the cached K.
    if (cfg.family->llama4_attention && cfg.l2_qk_norm)
      throw UsageError(fmt::format("--key-range envelope takes K's range from the pre-RoPE pair norms, but {} "
                                   "L2-normalises K after RoPE (use_qk_norm), so they do not bound it; use the "
                                   "default --key-range", cfg.architecture));
    // Gemma 4's KV-shared layers read an earlier layer's cached K: they have no pre-RoPE keys of their own.
    if (!cfg.layer_kv_source.empty())
      throw UsageError(fmt::format("--key-range envelope takes K's range from the pre-RoPE pair norms, but {}'s "
                                   "KV-shared layers (num_kv_shared_layers) compute no keys of their own; use the "
                                   "default --key-range", cfg.architecture));
    const std::string kobs = plan.kv_args.observer.value_or("static_minmax");
    if (kobs == "mse" || kobs == "memoryless_mse")
      throw UsageError(fmt::format("--key-range envelope takes K's range from the pre-RoPE pair norms; observer {} "
                                   "searches over the values themselves and cannot use it (use a minmax observer)",
                                   kobs));
    plan.key_envelope = true;
    spdlog::info("key range: envelope (the pre-RoPE pair norms of K{}): k_scale holds at every position",
                 plan.r3 && plan.rotations_observed ? ", bounded after the R3 rotation" : "");
  }
  if (req.kv_cache_dtype == "nvfp4") check_nvfp4_plan(req, plan);
}

// What the writer can write from this checkpoint (experts by name, unquantized weights, room on
// the output's file system) and what the MPI ranks can combine.
void check_writer_and_ranks(const CalibrateRequest& req, const Resolved& o, const Checked& c) {
  const Checkpoint& ckpt = *c.ckpt;
  const CalibrationPlan& plan = c.plan;
  check_groups_stay_in_language_model(plan, ckpt, req.recipe);
  for (const auto& lp : plan.linear)
    if (lp.expert >= 0 && !ckpt.has(lp.module + ".weight"))
      // transformers 5 saves MoE experts as one 3-D parameter per layer (mlp.experts.gate_up_proj
      // [E, 2I, H], mlp.experts.down_proj [E, H, I]); compressed-tensors quantizes Linear modules,
      // which those are not, and vLLM's MoE loaders read FP8 experts by per-expert names.
      throw InputError(fmt::format(
          "{}: FP8 MoE experts are written by their per-expert names ('{}.weight', as hub checkpoints "
          "store them), but this checkpoint fuses every expert of a layer into one 3-D tensor "
          "(transformers 5's mlp.experts.gate_up_proj / down_proj), which ctcal does not split; "
          "calibrate a checkpoint with per-expert tensors, ignore the experts, or use a "
          "kv_cache_scheme-only recipe", o.model.string(), lp.module));
  if (const WeightQuantization& wq = ckpt.weight_quantization(); !wq.empty()) {
    if (!plan.linear.empty())
      throw InputError(fmt::format("{}: the weights are already quantized ({}); ctcal quantizes "
                                   "unquantized Linear weights to FP8 (remove the Linear group or "
                                   "scheme from the recipe to calibrate the KV cache only)",
                                   o.model.string(), fmt::join(wq.formats(), ", ")));
    if (plan.r2)
      throw RecipeError(fmt::format("{}: R2 rewrites v_proj and o_proj, which {} stores quantized ({}); "
                                    "use R3 only, or an unquantized model", req.recipe,
                                    o.model.string(), fmt::join(wq.formats(), ", ")));
    spdlog::info("input weights: compressed-tensors {}, dequantized one layer at a time; their "
                 "shards are kept as they are", fmt::join(wq.formats(), ", "));
  }
  if (!o.output.empty()) {
    const OutputSize size = estimate_output_size(ckpt, plan);
    check_free_space(o.output, o.model, size.new_bytes, size.linked_bytes);
  }
  if (Ranks::size() > 1) {
    // Only static_minmax combines exactly across ranks (min of minima, max of maxima).
    std::vector<const QuantArgs*> observed = {&plan.kv_args};
    if (plan.query_args) observed.push_back(&*plan.query_args);
    for (const auto& [site, args] : plan.input_args) observed.push_back(&args);
    for (const auto* a : observed)
      if (a->observer.value_or("static_minmax") != "static_minmax")
        throw UsageError(fmt::format("mpirun with {} ranks: observer {} depends on the order of the samples and "
                                     "cannot be combined across ranks; use observer: static_minmax, or one rank",
                                     Ranks::size(), a->observer.value_or("")));
    spdlog::info("{} MPI ranks: each calibrates its share of the samples; observers are combined per layer",
                 Ranks::size());
  }
}

// Every refusal, before any work, in this order: the flags and the output paths, then the model
// and the plan. Ends by creating the staging directory.
Checked preflight(const CalibrateRequest& req, const Recipe& recipe, const Resolved& o) {
  Checked c;
  check_device_and_outputs(req, o, c);
  check_model_and_plan(req, recipe, o, c);
  check_writer_and_ranks(req, o, c);
  const CalibrationPlan& plan = c.plan;
  // Only rank 0 writes; the other ranks calibrate their share and stop.
  if (!req.dry_run && Ranks::root()) c.staging = std::make_unique<StagingDir>(o.output, o.model, req.overwrite);
  for (const auto& note : plan.kv_args.notes) spdlog::info("kv_cache_scheme: {}", note);
  // Warnings about the plan are the same on every rank: rank 0 gives them once.
  if (Ranks::root() && (plan.kv_args.type == QuantType::kInt || !plan.kv_args.symmetric))
    spdlog::warn("{} {} KV quantization: vLLM serves only symmetric FP8 KV caches; these scales are "
                 "for research and `ctcal eval`", quant_type_name(plan.kv_args.type),
                 plan.kv_args.symmetric ? "symmetric" : "asymmetric");
  if (Ranks::root() && plan.r3 && !plan.rotations_observed)
    spdlog::warn("SpinQuantModifier comes after QuantizationModifier: keys are observed before the "
                 "R3 rotation, as llm-compressor does; the scales will not fit rotated keys");
  return c;
}

// The calibration samples: the dataset's rows, tokenized (the model's tokenizer only when some
// row is text), selected and cut as `o.sampling` says.
CalibrationSamples read_samples(Resolved& o, const ModelConfig& cfg) {
  std::unique_ptr<Tokenizer> tokenizer;
  if (o.tokenizer) tokenizer = load_tokenizer(*o.tokenizer);
  const auto rows = read_dataset_rows(o.dataset);
  bool need_tokenizer = false;
  for (const auto& row : rows) need_tokenizer = need_tokenizer || !row.has_ids;
  if (need_tokenizer && !tokenizer) tokenizer = load_tokenizer(o.model);
  if (tokenizer) spdlog::info("tokenizer: {}", tokenizer->describe());
  o.sampling.vocab_size = cfg.vocab_size;
  o.sampling.max_position_embeddings = cfg.max_position_embeddings;
  CalibrationSamples data = make_calibration_samples(o.dataset, rows, tokenizer.get(), o.sampling);
  spdlog::info("calibration data: {} samples, {} tokens (from {} rows; {} empty skipped, {} truncated to {})",
               data.samples.size(), data.tokens(), data.rows, data.skipped_empty, data.truncated,
               std::min(o.sampling.max_seq_length, cfg.max_position_embeddings));
  if (static_cast<int64_t>(data.samples.size()) < o.sampling.num_samples)
    spdlog::info("the dataset has fewer usable rows ({}) than --num-samples ({})", data.samples.size(),
                 o.sampling.num_samples);
  return data;
}

// The two evidence passes are eval's, run where the calibration ran (--device): the run as
// calibrated, on (up to 32 of) the calibration samples.
EvalRun calibrated_run(const Checked& c, const CalibrationResult& result) {
  return make_recipe_run("calibrated", *c.ckpt, c.plan, result);
}

// --kv-skip-layers: the layers ranked by the KL each costs quantized alone, most first.
std::vector<int64_t> rank_layers(const Checked& c, const CalibrationResult& result,
                                 const std::vector<std::vector<int32_t>>& samples) {
  ForwardOptions fwd;
  fwd.device = c.device;
  std::vector<int64_t> layers;
  for (const auto& x : rank_layers_by_kl(*c.ckpt, c.plan.model, samples, calibrated_run(c, result), nullptr, fwd))
    layers.push_back(x["layer"].get<int64_t>());
  return layers;
}

// --report: the calibrated scales against every scale 1.0 ({calibrated_kl, unit_kl, wins, ...}):
// KL of both runs, the paired-bootstrap verdict, and each layer's clamped fractions.
json compare_unit_scales(const Checked& c, const CalibrationResult& result,
                         const std::vector<std::vector<int32_t>>& samples) {
  std::vector<EvalRun> runs;
  runs.push_back(calibrated_run(c, result));
  runs.push_back(unit_scales_run(runs.front()));
  ForwardOptions fwd;
  fwd.device = c.device;
  return unit_scales_evidence(evaluate_runs(*c.ckpt, c.plan.model, samples, runs, nullptr, fwd));
}

// Calibrates (every rank its share), then, on rank 0, leaves the --kv-skip-layers out of the plan
// and says what the observers kept. Prints the plan first.
CalibrationResult run(const CalibrateRequest& req, const Resolved& o, Checked& c, const CalibrationSamples& data,
                      ProgressLine& line, std::ostream& out) {
  const ModelConfig& cfg = c.cfg;
  CalibrationPlan& plan = c.plan;
  if (Ranks::root()) {
    print_plan(out, plan, o);
    if (req.kv_cache_dtype == "nvfp4") out << kNvfp4PlanLine;
  }
  out << std::flush;
  CalibrateOptions copt;
  copt.forward.chunk_tokens = req.chunk_tokens;
  copt.forward.device = c.device;
  if (req.max_gpu_memory_mb) copt.forward.gpu_memory_bytes = static_cast<int64_t>(*req.max_gpu_memory_mb * 1048576.0);
  // The GPU's GEMMs are bf16 (tensor cores, fp32 accumulation) whatever --compute-dtype says.
  copt.bf16_compute = req.compute_dtype == "bf16" || c.device.is_cuda();
  copt.quantized_forward = o.propagate == "quantized";
  if (req.max_memory_mb) {
    int64_t longest = 0;
    for (const auto& s : data.samples) longest = std::max<int64_t>(longest, static_cast<int64_t>(s.size()));
    copt.forward.chunk_tokens = chunk_tokens_for_budget(cfg, data.tokens(), longest, *req.max_memory_mb * 1048576.0,
                                                        copt.bf16_compute);
    spdlog::info("--max-memory {:.0f} MB: {} tokens per chunk", *req.max_memory_mb, copt.forward.chunk_tokens);
  }
  copt.cancel = req.cancel;
  spdlog::debug("compute: {} threads, {} tokens per chunk, {} GEMM inputs, weights {} ({} shards)", omp_get_max_threads(),
                copt.forward.chunk_tokens, compute_dtype_name(req, c.device), dtype_name(c.storage),
                c.ckpt->shard_paths().size());
  line.start_clock();  // tokens/s and ETA count the calibration only
  copt.on_status = [&](const std::string& s) { line.status(s); };
  copt.on_progress = [&](const Progress& p) {
    const double done = static_cast<double>((p.layer - 1) * p.tokens + p.layer_tokens_done);
    line.update(fmt::format("layer {}/{}, {}/{} tokens, {} samples", p.layer, p.layers, p.layer_tokens_done, p.tokens,
                            p.samples),
                done, static_cast<double>(p.layers * p.tokens), static_cast<int64_t>(done), p.layer_done);
    if (p.layer_done && p.layer == p.layers) line.finish();
  };
  if (c.gpu_context.valid()) c.gpu_context.get();  // rethrows a failure to open the GPU
  CalibrationResult result = run_calibration(*c.ckpt, plan, data.samples, copt);
  if (!Ranks::root()) return result;
  if (req.kv_skip_layers > 0) {
    // Rank the layers by the KL each costs quantized alone, on (up to 32 of) the calibration
    // samples, and leave the most sensitive ones unquantized.
    line.status(fmt::format("ranking {} layers by KL for --kv-skip-layers {}", cfg.num_hidden_layers, req.kv_skip_layers));
    const auto some = evidence_samples(data.samples);
    const std::vector<int64_t> ranked = rank_layers(c, result, some);
    line.clear();
    plan.kv_skip_layers.assign(ranked.begin(), ranked.begin() + req.kv_skip_layers);
    std::sort(plan.kv_skip_layers.begin(), plan.kv_skip_layers.end());
    spdlog::info("--kv-skip-layers {}: layers {} (most KL when quantized alone, on {} samples) stay unquantized: in "
                 "ignore, no scales; serve with {}", req.kv_skip_layers,
                 fmt::join(plan.kv_skip_layers, ", "), some.size(), vllm_skip_layers_flag(plan.kv_skip_layers));
  }
  warn_range_shortfall(plan, result);
  // -v: what each observer saw and the scale it gave, per layer and site.
  for (const auto& l : result.layers)
    for (const auto& sr : l.sites)
      spdlog::debug("layer {} {}: range [{:.6g}, {:.6g}] over {} observations -> scale {}", l.layer, site_name(sr.site),
                    *std::min_element(sr.head_min.begin(), sr.head_min.end()),
                    *std::max_element(sr.head_max.begin(), sr.head_max.end()), sr.observations,
                    fmt_range(sr.qparams.scale));
  return result;
}

// --kv-cache-dtype nvfp4: eval's scale search (eval/nvfp4_scale_search.h) on the run as
// calibrated, over `samples` (the evidence samples, as eval searches the first 32 of its
// calibration data), and the result with each written K/V scale replaced by its s (one value:
// the scheme is per tensor). Layers left unquantized (--kv-skip-layers) and layers without a KV
// cache get no scales and no record.
CalibrationResult with_nvfp4_scales(const Checked& c, const CalibrationResult& result,
                                    const std::vector<std::vector<int32_t>>& samples, ProgressLine& line,
                                    std::optional<Nvfp4KvRecord>* record) {
  const CalibrationPlan& plan = c.plan;
  const EvalRun run = calibrated_run(c, result);
  const auto amax = nvfp4_amax_of_run(run);  // [layers] {site: FP8 scale x 448}
  ForwardOptions fwd;
  fwd.device = c.device;
  line.status(fmt::format("searching the NVFP4 decode multipliers on {} calibration samples", samples.size()));
  Nvfp4Search found = search_nvfp4_scales(*c.ckpt, run, amax, samples, fwd);
  line.clear();
  CalibrationResult out = result;
  Nvfp4KvRecord rec;
  rec.rule = found.kv.rule;
  rec.search = std::move(found.evidence);
  for (auto& layer : out.layers) {
    const auto l = static_cast<std::size_t>(layer.layer);
    if (!plan.model.has_kv_cache(layer.layer) ||
        std::binary_search(plan.kv_skip_layers.begin(), plan.kv_skip_layers.end(), layer.layer))
      continue;
    Nvfp4LayerRecord lr;
    lr.layer = layer.layer;
    for (auto& sr : layer.sites) {
      if (sr.site != Site::kKey && sr.site != Site::kValue) continue;
      // The searched s (an fp32 value, as the kernel takes it) as the scale tensor stores it: in
      // the model's dtype (scale_dtype), which is what vLLM reads and serves (bf16 rounds it by up
      // to 2^-9 relative; fp32 keeps it exact). The record holds that stored value.
      const double s = round_to_dtype(found.kv.s.at(l).at(sr.site), plan.storage);
      sr.qparams.scale.assign(sr.qparams.scale.size(), s);
      (sr.site == Site::kKey ? lr.k : lr.v) = Nvfp4SiteRecord{s, amax.at(l).at(sr.site)};
    }
    rec.layers.push_back(lr);
  }
  const auto clips = fp8_clipping(rec);
  spdlog::info("--kv-cache-dtype nvfp4: k/v scales are the searched NVFP4 decode multipliers (rule {}); {} of {} are "
               "below amax/448 and would clip if served as FP8", rec.rule, clips.size(), nvfp4_record_sites(rec));
  *record = std::move(rec);
  return out;
}

// The smallest and largest amax / s over the record (448 for ModelOpt's rule, 2688 for auto-round's).
std::pair<double, double> nvfp4_divisor_range(const Nvfp4KvRecord& r) {
  double lo = INFINITY, hi = 0;
  for (const auto& l : r.layers)
    for (const auto* site : {&l.k, &l.v})
      if (*site) {
        lo = std::min(lo, (*site)->amax / (*site)->s);
        hi = std::max(hi, (*site)->amax / (*site)->s);
      }
  return {lo, hi};
}

// --report's page, from the same document as ctcal_report.json (`layers` added as the writer adds
// them), so the two never disagree.
void write_report_page(const fs::path& html, const CalibrationPlan& plan, const CalibrationResult& result,
                       const json& report, const CalibrateReportInputs& in) {
  json doc = report;
  doc["layers"] = layers_report_json(plan, result);
  Provenance p{kVersion, doc.contains("seed") ? doc["seed"].dump() : "?", utc_now(), {}};
  if (doc.value("recipe_sha256", json()).is_string()) p.inputs.push_back({"recipe " + in.recipe, doc["recipe_sha256"]});
  if (doc.value("dataset_sha256", json()).is_string()) p.inputs.push_back({"dataset " + in.dataset, doc["dataset_sha256"]});
  write_report_file(html, render_calibrate_report(doc, in, p));
  spdlog::info("wrote {}", html.string());
}

// Writes the checkpoint (and the --report page, whose failure keeps the checkpoint from being
// committed), commits it, prints the scales and the serving verdict.
void write(const CalibrateRequest& req, const Resolved& o, Checked& c, const CalibrationSamples& data,
           const CalibrationResult& result, const std::string& recipe_yaml, const json& transform_config,
           Clock::time_point t0, ProgressLine& line, std::ostream& out) {
  const CalibrationPlan& plan = c.plan;
  const auto t_write = Clock::now();
  OutputExtras extras;
  extras.recipe_yaml = recipe_yaml;
  extras.report = {
      {"ctcal_version", kVersion},
      {"samples", result.samples},
      {"tokens", result.tokens},
      {"rows", data.rows},
      {"skipped_empty", data.skipped_empty},
      {"truncated", data.truncated},
      {"seed", o.sampling.seed},
      {"shuffle", o.sampling.shuffle},
      {"num_samples", o.sampling.num_samples},
      {"max_seq_length", o.sampling.max_seq_length},
      {"recipe_sha256", sha256_file_hex(req.recipe)},
      {"dataset_sha256", sha256_file_hex(o.dataset)},
      {"model", o.model.string()},
      {"kv_cache_scheme", quant_args_to_json(plan.kv_args)},
      {"scale_dtype", dtype_name(plan.storage)},
      {"compute_dtype", compute_dtype_name(req, c.device)},
      {"device", c.device.name()},
      {"ranks", Ranks::size()},  // mpirun -np N: the samples were split across N processes
  };
  const double total_before_write = std::chrono::duration<double>(t_write - t0).count();
  extras.report["timings"] = {{"calibration_s", result.forward_seconds},
                              {"setup_s", total_before_write - result.forward_seconds},
                              {"tokens_per_s", result.forward_seconds > 0 ? static_cast<double>(result.tokens) / result.forward_seconds : 0.0}};
  if (req.report) {
    // The evidence --report shows: do the calibrated scales beat vLLM's default of 1.0 here?
    line.status("comparing the calibrated scales with scale 1.0");
    extras.report["unit_scales_baseline"] = compare_unit_scales(c, result, evidence_samples(data.samples));
    line.clear();
  }
  // --kv-cache-dtype nvfp4: the searched decode multipliers replace the FP8 scales in what is
  // written, and ctcal_report.json says so (the one record inspect and eval read).
  std::optional<Nvfp4KvRecord> nvfp4;
  const CalibrationResult written_result =
      req.kv_cache_dtype == "nvfp4" ? with_nvfp4_scales(c, result, evidence_samples(data.samples), line, &nvfp4) : result;
  if (nvfp4) extras.report[kNvfp4RecordKey] = nvfp4_record_to_json(*nvfp4);
  const WrittenCheckpoint written =
      write_calibrated_checkpoint(c.staging->path(), *c.ckpt, plan, written_result, extras);
  for (const auto& f : written.files) spdlog::debug("wrote {}", (o.output / f).string());
  // The report first: if it cannot be written, the checkpoint is not committed either.
  if (req.report)
    write_report_page(*req.report, plan, result, extras.report,
                      {req.recipe, o.dataset.string(), o.output.string(), plan.kv_args, plan.query_args,
                       transforms_phrase(transform_config)});
  if (req.cancel && req.cancel->load()) throw Cancelled();
  c.staging->commit();

  out << "\n";
  print_summary(out, plan, written_result);
  if (nvfp4)
    out << fmt::format("(k/v scales: NVFP4 decode multipliers s, searched on {} calibration samples; each s is between "
                       "amax/{:.0f} and amax/{:.0f} here)\n",
                       nvfp4->search.value("samples", 0), nvfp4_divisor_range(*nvfp4).first,
                       nvfp4_divisor_range(*nvfp4).second);
  out << fmt::format("\nwrote {} ({} files) in {:.2f}s: {} samples, {} tokens\n", o.output.string(), written.files.size(),
                     std::chrono::duration<double>(Clock::now() - t0).count(), result.samples, result.tokens);
  // The verdict `ctcal inspect` gives, for every run (FP8, R3, int and asymmetric alike), decided
  // from the config.json and tensor names just written, by the same function inspect uses; the
  // output is not read back (e2e.serving_verdict holds it to inspect's on each of its calibrate runs).
  out << "\n";
  print_serving_verdict({{"serving", serving_verdicts(written.config, written.tensors, o.output.string(), false, nvfp4)}},
                        out, /*color=*/false);
}

}  // namespace

int run_calibrate(const CalibrateRequest& req, std::ostream& out) {
  const auto t0 = Clock::now();
  if (req.threads > 0) omp_set_num_threads(req.threads);
  ProgressLine line(req.progress_tty);
  line.status("reading the recipe, the model and the dataset");  // visible at once on a terminal
  const Recipe recipe = load_recipe(req.recipe);
  Resolved o = resolve(req, recipe);
  Checked c = preflight(req, recipe, o);
  const CalibrationSamples data = read_samples(o, c.cfg);

  // The effective recipe, emitted once: printed by --dry-run, written as recipe.yaml (with the
  // model and dataset as absolute paths).
  json run_settings = run_block(o, c.plan);
  if (!req.dry_run) {
    run_settings["model"] = fs::absolute(o.model).lexically_normal().string();
    run_settings["dataset"] = fs::absolute(o.dataset).lexically_normal().string();
  }
  const json transform_config = transform_config_json(c.plan);
  const std::string recipe_yaml = effective_recipe_yaml(recipe, run_settings, transform_config);

  line.clear();
  if (req.dry_run) {
    // The effective recipe (as `ctcal validate` prints it), then the plan.
    out << "# effective recipe\n" << recipe_yaml << "\n# plan\n";
    print_plan(out, c.plan, o);
    if (req.kv_cache_dtype == "nvfp4") out << kNvfp4PlanLine;
    out << fmt::format("samples    {} samples, {} tokens\n", data.samples.size(), data.tokens());
    out << "files      config.json, model-0000k-of-0000n.safetensors (input shards + 1 with scales), "
           "model.safetensors.index.json, recipe.yaml, ctcal_report.json, other input files\n";
    return 0;
  }
  const CalibrationResult result = run(req, o, c, data, line, out);
  if (!Ranks::root()) return 0;  // only rank 0 writes
  write(req, o, c, data, result, recipe_yaml, transform_config, t0, line, out);
  return 0;
}

}  // namespace ctcal::app
