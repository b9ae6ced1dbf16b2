#include "ctcal/eval/evaluate.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <tuple>

#include <spdlog/spdlog.h>

#include "ctcal/data/dataset.h"
#include "ctcal/error.h"
#include "ctcal/model/cuda_backend.h"
#include "ctcal/eval/eval_run.h"
#include "ctcal/eval/nvfp4_fake_quant.h"
#include "ctcal/eval/nvfp4_scale_search.h"
#include "ctcal/eval/unit_scales_verdict.h"
#include "ctcal/io/checkpoint.h"
#include "ctcal/model/decoder.h"
#include "ctcal/quant/nvfp4.h"
#include "ctcal/quant/nvfp4_record.h"
#include "ctcal/recipe/recipe.h"
#include "ctcal/transform/hadamard.h"

namespace ctcal {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Final hidden states of every sample through every layer: [total_tokens, hidden].
// `pass` of `passes` (baseline first, then each run) drives the progress line, if any.
RowMatrix final_hidden(const Checkpoint& ck, const ModelConfig& cfg, const std::vector<std::vector<int32_t>>& samples,
                       ForwardOptions opt, const std::function<void(int64_t, LayerWeights&)>& edit,
                       ProgressLine* progress, int64_t pass, int64_t passes, const std::string& name) {
  Decoder model(ck, cfg);
  std::vector<SampleSpan> spans;
  RowMatrix hidden = model.embed(samples, &spans);
  LayerLoop loop;
  loop.edit_weights = edit;
  if (progress) {
    const int64_t layers = cfg.num_hidden_layers, tokens = hidden.rows();
    auto show = [=](int64_t l, int64_t done, bool layer_done) {
      const double units = static_cast<double>((pass * layers + l) * tokens + done);
      progress->update(fmt::format("pass {}/{} ({}), layer {}/{}", pass + 1, passes, name, l + 1, layers), units,
                       static_cast<double>(passes * layers * tokens), static_cast<int64_t>(units), layer_done);
    };
    loop.before_layer = [=](int64_t l) {
      progress->status(fmt::format("pass {}/{} ({}): layer {}/{}, reading weights", pass + 1, passes, name, l + 1, layers));
    };
    opt.after_chunk = [=](int64_t l, int64_t done) { show(l, done, false); };
    loop.after_layer = [=](int64_t l) { show(l, tokens, true); };
  }
  model.run_layers(spans, hidden, loop, opt);
  return hidden;
}

// log_softmax of one logits row, in double.
std::vector<double> log_softmax(const float* row, int64_t n) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(row[i]));
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(row[i] - mx);
  const double lse = mx + std::log(sum);
  std::vector<double> out(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = row[i] - lse;
  return out;
}

struct Totals {
  double nll = 0, kl = 0;
  int64_t tokens = 0, agree = 0;
};

void check_same_shape(const ModelConfig& a, const ModelConfig& b, const std::string& name) {
  if (a.vocab_size != b.vocab_size || a.hidden_size != b.hidden_size || a.num_hidden_layers != b.num_hidden_layers ||
      a.num_attention_heads != b.num_attention_heads || a.num_key_value_heads != b.num_key_value_heads)
    throw InputError(fmt::format("{}: not the same model shape as --model (vocab, hidden, layers or heads differ)", name));
}

CalibrationSamples load_samples(const std::string& path, const Tokenizer* tok, const EvalRequest& req, const ModelConfig& cfg) {
  SamplingOptions o;
  o.num_samples = req.num_samples;
  o.max_seq_length = req.max_seq_length;
  o.seed = req.seed;
  o.shuffle = !req.no_shuffle;
  o.vocab_size = cfg.vocab_size;
  o.max_position_embeddings = cfg.max_position_embeddings;
  return make_calibration_samples(path, read_dataset_rows(path), tok, o);
}

// Parts of an FP8 W8A8 run: the same run with only some of weights, Linear inputs and K/V (and
// Q) quantized. Without weights, the forward runs on `base` (--model, the unquantized weights).
EvalRun part_run(const EvalRun& r, const Checkpoint& base, const std::string& part, bool weights, bool inputs, bool kv) {
  EvalRun u = borrowed_copy(r, r.name + " [" + part + "]");
  if (!weights) {
    if (r.fp8_weights) u.checkpoint = &base;  // an FP8 checkpoint's weights are FP8
    u.quantize_weights = {};
    u.fp8_weights = false;
  }
  if (!inputs) u.inputs.clear();
  if (!kv)
    for (auto& layer : u.scales) layer.sites.clear();
  return u;
}

// The decode-multiplier rules eval compares for an NVFP4 KV cache (issue 31): vLLM's default
// without scales, ModelOpt's amax/448 (an FP8 checkpoint's own k/v scales, served as they are),
// and auto-round's amax/2688 (= amax / (6 * 448): E4M3's full range for the block scales).
struct Nvfp4Rule {
  const char* name;
  double amax_divisor;  // s = amax / divisor; 0: s = 1.0; < 0: the checkpoint's own k/v scales
};
constexpr Nvfp4Rule kNvfp4Rules[] = {{"1.0", 0.0}, {"amax/448", 448.0}, {"amax/2688", 2688.0}};
// A checkpoint calibrated for NVFP4 (ctcal's nvfp4_kv record): the s it was written with.
constexpr Nvfp4Rule kNvfp4CheckpointRule = {"checkpoint", -1.0};
// Calibration samples the NVFP4 scale search reads (as calibrate --report's evidence pass).
constexpr std::size_t kNvfp4SearchSamples = 32;

// `r` with vLLM's NVFP4 KV cache under s = rule(amax) instead of its own KV scheme (nvfp4_kv_run).
EvalRun nvfp4_run(const EvalRun& r, const std::vector<std::map<Site, double>>& amax, const Nvfp4Rule& rule) {
  Nvfp4Kv kv{rule.name, {}};
  for (std::size_t l = 0; l < amax.size(); ++l) {
    std::map<Site, double> s;
    for (const auto& [site, m] : amax[l]) {
      // The kernel takes s as fp32; an all-zero site (amax 0) keeps s = 1.0, as vLLM would.
      const double v = rule.amax_divisor < 0 ? r.scales[l].sites.at(site).scale.at(0)
                       : rule.amax_divisor > 0 && m > 0 ? m / rule.amax_divisor : 1.0;
      s[site] = static_cast<double>(static_cast<float>(v));
    }
    kv.s.push_back(std::move(s));
  }
  return nvfp4_kv_run(r, std::string("nvfp4 s=") + rule.name, std::move(kv));
}

}  // namespace

EvalRun unit_scales_run(const EvalRun& r) {
  EvalRun u = borrowed_copy(r, r.name + " [unit scales]");
  for (auto& layer : u.scales)
    for (auto& [site, s] : layer.sites) {
      std::fill(s.scale.begin(), s.scale.end(), 1.0);
      std::fill(s.zero_point.begin(), s.zero_point.end(), 0.0);
    }
  return u;
}

namespace {

// The run with only `layer`'s K/V/Q quantized (every other layer's left in full precision, and
// FP8 Linear layers unquantized: the ranking is the KV cache's).
EvalRun single_layer_run(const EvalRun& r, const Checkpoint& base, int64_t layer) {
  EvalRun u = part_run(r, base, fmt::format("layer {} only", layer), false, false, true);
  for (std::size_t j = 0; j < u.scales.size(); ++j)
    if (static_cast<int64_t>(j) != layer) u.scales[j].sites.clear();
  return u;
}

}  // namespace

json evaluate(const EvalRequest& req) {
  if (req.threads > 0) omp_set_num_threads(req.threads);
  ProgressLine progress(req.progress_tty);
  progress.status("reading the model, the checkpoints and the held-out data");
  if (req.quantized.empty() && req.recipes.empty())
    throw UsageError("nothing to evaluate: give --quantized DIR and/or --recipe RECIPE");
  if (!req.recipes.empty() && !req.calibration_dataset)
    throw UsageError("--recipe needs --calibration-dataset FILE (the data the scales are calibrated on)");
  if (req.kv_cache_dtype != "auto" && req.kv_cache_dtype != "nvfp4")
    throw UsageError(fmt::format("--kv-cache-dtype {}: expected auto (each checkpoint's own KV scheme) or nvfp4 "
                                 "(vLLM's NVFP4 KV cache beside each FP8 run; vLLM's nvfp4_4over6 is not modelled)",
                                 req.kv_cache_dtype));
  const bool nvfp4 = req.kv_cache_dtype == "nvfp4";
  ForwardOptions forward;
  forward.position_offset = req.position_offset;
  forward.device = ComputeDevice::parse(req.device);
  if (forward.device.is_cuda()) spdlog::info("device: {}", cuda_device_description(forward.device.index));
  const Checkpoint base(req.model);
  const ModelConfig cfg = load_model_config(base);
  check_model_tensors(base, cfg);
  if (forward.device.is_cuda()) check_cuda_supports(cfg, forward);
  for (int64_t l = 0; nvfp4 && l < cfg.num_hidden_layers; ++l)  // every layer's (Gemma 4's differ)
    if (cfg.head_dim_of(l) % nvfp4::kBlockSize != 0)
      throw InputError(fmt::format("--kv-cache-dtype nvfp4: {} has head_dim {} (layer {}), not a multiple of 16; vLLM's "
                                   "NVFP4 KV cache quantizes each head in 16-element blocks and refuses it", req.model,
                                   cfg.head_dim_of(l), l));
  if (nvfp4 && cfg.head_dim == 64)
    spdlog::warn("--kv-cache-dtype nvfp4: vLLM 0.34 refuses NVFP4 at head_size 64 on FlashInfer's FA2 path (Hopper: "
                 "'fa2 prefill misreads NVFP4 at head_size 64'); eval still measures what the format costs");
  // The model's tokenizer only when some row is text (as calibrate: input_ids rows need none).
  std::unique_ptr<Tokenizer> tok;
  if (req.tokenizer) {
    tok = load_tokenizer(*req.tokenizer);
  } else {
    bool text = false;
    for (const auto& path : {std::optional<std::string>(req.dataset), req.calibration_dataset})
      if (path)
        for (const auto& row : read_dataset_rows(*path)) text = text || !row.has_ids;
    if (text) tok = load_tokenizer(req.model);
  }
  const CalibrationSamples eval_data = load_samples(req.dataset, tok.get(), req, cfg);
  if (req.position_offset < 0) throw UsageError("--position-offset must be >= 0");
  int64_t longest = 0;
  for (const auto& s : eval_data.samples) longest = std::max<int64_t>(longest, static_cast<int64_t>(s.size()));
  if (req.position_offset + longest > cfg.max_position_embeddings)
    throw UsageError(fmt::format("--position-offset {} + samples of up to {} tokens pass max_position_embeddings {} of {}",
                                 req.position_offset, longest, cfg.max_position_embeddings, req.model));

  std::vector<EvalRun> runs;
  for (const auto& dir : req.quantized) {
    runs.push_back(load_quantized_run(dir));
    check_same_shape(cfg, runs.back().config, dir);
    if (nvfp4) check_nvfp4_source(runs.back().kv_args, dir);
    if (runs.back().nvfp4_amax && !nvfp4)
      spdlog::warn("{}: its k/v scales are NVFP4 decode multipliers (ctcal_report.json {}): its run here is what "
                   "they cost served as FP8; add --kv-cache-dtype nvfp4 for what they are meant for", dir,
                   kNvfp4RecordKey);
  }
  // Calibration data: what --recipe runs calibrate on, and where the NVFP4 scale search looks.
  std::optional<CalibrationSamples> calib_data;
  if (req.calibration_dataset && (!req.recipes.empty() || nvfp4)) {
    std::error_code ec;
    if (fs::equivalent(*req.calibration_dataset, req.dataset, ec))
      spdlog::warn("--calibration-dataset is the same file as --dataset: the scales are evaluated on the "
                   "data they were calibrated on, which flatters them; use held-out text");
    calib_data = load_samples(*req.calibration_dataset, tok.get(), req, cfg);
  }
  if (!req.recipes.empty()) {
    const CalibrationSamples& calib = *calib_data;
    const DType storage = cfg.dtype.value_or(base.weight_dtype());
    for (const auto& path : req.recipes) {
      const Recipe recipe = load_recipe(path);
      CalibrationPlan plan = make_plan(recipe, cfg, storage, req.seed);
      if (nvfp4) check_nvfp4_source(plan.kv_args, path);  // before calibrating, not after
      spdlog::info("calibrating {} on {} samples", path, calib.samples.size());
      CalibrateOptions copt;
      copt.forward.device = forward.device;
      const CalibrationResult res = run_calibration(base, plan, calib.samples, copt);
      runs.push_back(make_recipe_run(path, base, plan, res));
    }
  }

  // Beside each calibrated run, the same scheme with every scale 1.0 and zero point 0: what vLLM
  // uses when a checkpoint has no scales. The two are evaluated on the same tokens.
  const std::size_t calibrated = runs.size();
  if (!req.no_unit_scales)
    for (std::size_t i = 0; i < calibrated; ++i) runs.push_back(unit_scales_run(runs[i]));
  // FP8 W8A8 runs: what each part costs alone (weights, Linear inputs, KV cache), beside the run
  // that has them together.
  struct Part {
    std::size_t run, index;
    const char* name;
  };
  std::vector<Part> parts;
  for (std::size_t i = 0; i < calibrated; ++i) {
    if (!runs[i].fp8_weights && runs[i].inputs.empty()) continue;
    const EvalRun r = borrowed_copy(runs[i], runs[i].name);
    for (const auto& [name, w, a, kv] : {std::tuple{"weights", true, false, false}, std::tuple{"activations", false, true, false},
                                         std::tuple{"kv", false, false, true}}) {
      parts.push_back({i, runs.size(), name});
      runs.push_back(part_run(r, base, std::string(name) + " only", w, a, kv));
    }
  }
  // --kv-cache-dtype nvfp4: beside each run, the same run with an NVFP4 KV cache at each rule's
  // decode multipliers. Last in `runs`, so that the lists above keep their indices.
  struct Nvfp4Variant {
    std::size_t run;
    json search;     // the searched rules' evidence; null for the fixed rules
    bool r3 = false;  // "+R3": evidence of what a rotation would buy, which vLLM cannot serve
  };
  std::vector<Nvfp4Variant> variants;
  const std::size_t nvfp4_begin = runs.size();
  if (nvfp4)
    for (std::size_t i = 0; i < calibrated; ++i) {
      const auto amax = nvfp4_amax_of_run(runs[i]);
      for (const auto& rule : kNvfp4Rules) {
        variants.push_back({i, nullptr});
        runs.push_back(nvfp4_run(runs[i], amax, rule));
      }
      if (runs[i].nvfp4_amax) {  // ctcal wrote these scales for NVFP4: the s it would serve
        variants.push_back({i, nullptr});
        runs.push_back(nvfp4_run(runs[i], amax, kNvfp4CheckpointRule));
      }
      if (!calib_data) {
        spdlog::warn("--kv-cache-dtype nvfp4: no --calibration-dataset, so no 'nvfp4 s=searched' (the scale search "
                     "runs on calibration data)");
        continue;
      }
      // The searched s, on (up to kNvfp4SearchSamples of) the calibration samples: one more
      // forward pass, per layer 17 candidates' score and output errors, and the guard's KL of up to
      // 3 candidate sets (up to 4 passes).
      const auto& cs = calib_data->samples;
      const std::vector<std::vector<int32_t>> search_samples(
          cs.begin(), cs.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(cs.size(), kNvfp4SearchSamples)));
      progress.status(fmt::format("searching the NVFP4 decode multipliers of {} on {} calibration samples", runs[i].name,
                                  search_samples.size()));
      Nvfp4Search found = search_nvfp4_scales(base, runs[i], amax, search_samples, forward);
      EvalRun searched = nvfp4_run(runs[i], amax, kNvfp4Rules[0]);
      searched.name = "nvfp4 s=searched";
      searched.nvfp4 = std::move(found.kv);
      variants.push_back({i, std::move(found.evidence)});
      runs.push_back(std::move(searched));
      // Issue 31 item 5, evidence only: the same search with R3 (SpinQuant's head-dim Hadamard on
      // Q and K after RoPE, so scores are unchanged in exact arithmetic) spreading K's outliers over
      // the head before the 4-bit blocks. K's amax is that of the rotated keys over the calibration
      // samples (what static_minmax would observe on them); V is not rotated.
      if (runs[i].qk_rotation) {
        spdlog::info("{}: rotates Q and K already (R3); no separate 'nvfp4 s=searched +R3' row", runs[i].name);
        continue;
      }
      if (cfg.per_layer_heads() || !cfg.layer_kv_source.empty()) {
        spdlog::warn("--kv-cache-dtype nvfp4: the layers differ in head_dim or share K/V (Gemma 4): no 'nvfp4 "
                     "s=searched +R3' row");
        continue;
      }
      if (!is_power_of_two(cfg.head_dim)) {
        spdlog::warn("--kv-cache-dtype nvfp4: head_dim {} is not a power of two: no Sylvester Hadamard, so no "
                     "'nvfp4 s=searched +R3' row", cfg.head_dim);
        continue;
      }
      EvalRun rotated = borrowed_copy(runs[i], runs[i].name + " +R3");
      rotated.qk_rotation = (sylvester_hadamard(cfg.head_dim) / std::sqrt(static_cast<double>(cfg.head_dim))).cast<float>();
      progress.status(fmt::format("R3 evidence: the rotated keys' amax on {} calibration samples", cs.size()));
      auto amax_r3 = amax;
      const auto rotated_amax = observe_kv_amax(rotated, cs, forward);
      for (std::size_t l = 0; l < amax_r3.size(); ++l)
        if (amax_r3[l].count(Site::kKey) && rotated_amax[l].count(Site::kKey) && rotated_amax[l].at(Site::kKey) > 0)
          amax_r3[l][Site::kKey] = rotated_amax[l].at(Site::kKey);
      Nvfp4Search found_r3 = search_nvfp4_scales(base, rotated, amax_r3, search_samples, forward);
      EvalRun searched_r3 = nvfp4_run(rotated, amax_r3, kNvfp4Rules[0]);
      searched_r3.name = "nvfp4 s=searched +R3";
      searched_r3.nvfp4 = std::move(found_r3.kv);
      variants.push_back({i, std::move(found_r3.evidence), true});
      runs.push_back(std::move(searched_r3));
    }
  progress.start_clock();
  json doc = evaluate_runs(base, cfg, eval_data.samples, runs, &progress, forward);
  json nvfp4_docs = json::array();  // [variants]: taken out; reported inside their run below
  for (std::size_t k = 0; k < variants.size(); ++k) nvfp4_docs.push_back(doc["quantized"][nvfp4_begin + k]);
  if (!variants.empty()) doc["quantized"].erase(doc["quantized"].begin() + static_cast<std::ptrdiff_t>(nvfp4_begin),
                                                doc["quantized"].end());
  doc["position_offset"] = req.position_offset;
  progress.clear();
  for (const auto& p : parts) {
    const json& alone = doc["quantized"][p.index];
    doc["quantized"][p.run]["parts"][p.name] = {{"nll", alone["nll"]}, {"delta_nll", alone["delta_nll"]},
                                               {"ppl", alone["ppl"]}, {"kl", alone["kl"]}, {"top1", alone["top1"]}};
  }
  if (!parts.empty()) {  // the part runs are reported inside their run, not as runs of their own
    json kept = json::array();
    for (std::size_t i = 0; i < parts.front().index; ++i) kept.push_back(doc["quantized"][i]);
    doc["quantized"] = kept;
  }
  if (!req.no_unit_scales) {
    json list = json::array();
    for (std::size_t i = 0; i < calibrated; ++i) {
      json run = doc["quantized"][i];
      const json& unit = doc["quantized"][calibrated + i];
      run["unit_scales"] = {{"nll", unit["nll"]}, {"delta_nll", unit["delta_nll"]}, {"ppl", unit["ppl"]},
                            {"kl", unit["kl"]},   {"top1", unit["top1"]},           {"sample_kl", unit["sample_kl"]},
                            {"layers", unit["layers"]}};
      // kl_diff, its interval, significant, wins: a winner only beyond sampling noise.
      run.update(compare_with_unit_scales(run, unit, doc["sample_tokens"]));
      list.push_back(run);
    }
    doc["quantized"] = list;
  }
  // Each run's KV cache in each format: `fp8` (the run itself, its calibrated scales), then every
  // NVFP4 rule, each with its KL difference to fp8 and that difference's bootstrap interval.
  for (std::size_t i = 0; i < calibrated && !variants.empty(); ++i) {
    json& run = doc["quantized"][i];
    json fp8 = {{"name", "fp8"},        {"kv_cache_dtype", "fp8"}, {"nll", run["nll"]},   {"delta_nll", run["delta_nll"]},
                {"ppl", run["ppl"]},    {"kl", run["kl"]},         {"top1", run["top1"]}, {"sample_kl", run["sample_kl"]},
                {"layers", run["layers"]}};
    if (runs[i].nvfp4_amax)
      fp8["note"] = "this checkpoint's k/v scales are NVFP4 decode multipliers s: served as FP8 they clip |x| above "
                    "448 s";
    json list = json::array({fp8});
    for (std::size_t k = 0; k < variants.size(); ++k) {
      if (variants[k].run != i) continue;
      json v = nvfp4_docs[k];
      const json c = compare_with_unit_scales(v, fp8, doc["sample_tokens"]);
      v["kl_diff_vs_fp8"] = {{"kl_diff", c["kl_diff"]}, {"kl_diff_ci95", c["kl_diff_ci95"]},
                             {"significant", c["significant"]}, {"bootstrap", c["kl_diff_bootstrap"]}};
      if (variants[k].r3) {
        v["search"] = variants[k].search;
        v["evidence_only"] = "R3 rotates Q and K by the head-dim Hadamard before the cache; mainline vLLM 0.34 "
                             "applies no attention rotation, so it cannot serve this (shared/reference/serving-2026.md)";
        // What R3 would buy: against the unrotated searched s, on the same held-out tokens.
        for (const auto& e : list)
          if (e["name"] == "nvfp4 s=searched") {
            const json b = compare_with_unit_scales(v, e, doc["sample_tokens"]);
            v["kl_diff_vs_searched"] = {{"kl_diff", b["kl_diff"]}, {"kl_diff_ci95", b["kl_diff_ci95"]},
                                        {"significant", b["significant"]}};
          }
      } else if (!variants[k].search.is_null()) {
        v["search"] = variants[k].search;
        // Against the better fixed convention on the held-out data: worse only beyond the noise?
        const json* best = nullptr;
        for (const auto& e : list)
          if ((e["name"] == "nvfp4 s=amax/448" || e["name"] == "nvfp4 s=amax/2688") &&
              (!best || e["kl"].get<double>() < (*best)["kl"].get<double>()))
            best = &e;
        CTCAL_ASSERT(best != nullptr, "the fixed rules come before the searched one");
        const json b = compare_with_unit_scales(v, *best, doc["sample_tokens"]);
        v["kl_diff_vs_best_fixed"] = {{"best_fixed", (*best)["name"]},
                                      {"kl_diff", b["kl_diff"]},
                                      {"kl_diff_ci95", b["kl_diff_ci95"]},
                                      {"worse_beyond_noise", b["significant"].get<bool>() && b["kl_diff"].get<double>() > 0}};
      }
      list.push_back(v);
    }
    run["kv_cache_dtypes"] = list;
  }
  if (req.layer_sensitivity) {
    // Each layer quantized alone (not leave-one-out): its KL against the unquantized model, one
    // forward pass per layer and run; ranked, most sensitive first. These are the layers to keep
    // unquantized with vLLM's --kv-cache-dtype-skip-layers.
    for (std::size_t i = 0; i < calibrated; ++i) {
      doc["quantized"][i]["kl_contribution"] =
          rank_layers_by_kl(base, cfg, eval_data.samples, runs[i], &progress, forward);
      progress.clear();
      doc["quantized"][i]["kl_contribution_method"] = "layer quantized alone";
    }
  }
  doc["dataset"] = req.dataset;
  doc["model"] = req.model;
  return doc;
}

json rank_layers_by_kl(const Checkpoint& base, const ModelConfig& cfg, const std::vector<std::vector<int32_t>>& samples,
                       const EvalRun& run, ProgressLine* progress, const ForwardOptions& forward) {
  std::vector<EvalRun> singles;
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) singles.push_back(single_layer_run(run, base, l));
  const json per = evaluate_runs(base, cfg, samples, singles, progress, forward);
  json ranked = json::array();
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l)
    ranked.push_back({{"layer", l}, {"kl", per["quantized"][static_cast<std::size_t>(l)]["kl"]}});
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const json& a, const json& b) { return a["kl"].get<double>() > b["kl"].get<double>(); });
  return ranked;
}

json evaluate_runs(const Checkpoint& base, const ModelConfig& cfg, const std::vector<std::vector<int32_t>>& samples,
                   std::vector<EvalRun>& runs, ProgressLine* progress, const ForwardOptions& forward) {
  struct EvalData { const std::vector<std::vector<int32_t>>& samples; int64_t tokens() const {
    int64_t n = 0; for (const auto& s : samples) n += static_cast<int64_t>(s.size()); return n; } } eval_data{samples};
  spdlog::info("evaluating {} runs on {} samples, {} tokens", runs.size() + 1, eval_data.samples.size(), eval_data.tokens());
  const int64_t passes = static_cast<int64_t>(runs.size()) + 1;
  // Every pass runs with the caller's position offset and device, and nothing else of theirs.
  ForwardOptions plain;
  plain.position_offset = forward.position_offset;
  plain.device = forward.device;
  const ForwardOptions base_opt = plain;
  const RowMatrix base_hidden = final_hidden(base, cfg, eval_data.samples, base_opt, {}, progress, 0, passes, "baseline");
  std::vector<RowMatrix> run_hidden;
  // One per run: the FP8/int KV quantizer, or (NVFP4 runs) the NVFP4 one; the other null.
  std::vector<std::unique_ptr<KvFakeQuant>> quantizers;
  std::vector<std::unique_ptr<Nvfp4KvFakeQuant>> nvfp4_quantizers;
  for (auto& r : runs) {
    ActivationQuantizer* kv = nullptr;
    if (r.nvfp4) {
      quantizers.push_back(nullptr);
      nvfp4_quantizers.push_back(std::make_unique<Nvfp4KvFakeQuant>(r.nvfp4->s));
      kv = nvfp4_quantizers.back().get();
    } else {
      quantizers.push_back(std::make_unique<KvFakeQuant>(r.kv_args, r.query_args, r.scales));
      nvfp4_quantizers.push_back(nullptr);
      kv = quantizers.back().get();
    }
    ForwardOptions opt = plain;
    opt.quantizer = kv;
    // FP8 W8A8: Linear inputs fake-quantized too (Q/K/V still by the KV quantizer).
    std::unique_ptr<LinearInputFakeQuant> inputs;
    if (!r.inputs.empty()) {
      inputs = std::make_unique<LinearInputFakeQuant>(r.inputs, kv);
      opt.quantizer = inputs.get();
    }
    if (r.qk_rotation) opt.qk_rotation = &*r.qk_rotation;
    std::function<void(int64_t, LayerWeights&)> edit = r.edit_weights;
    if (r.quantize_weights)
      edit = [&r](int64_t l, LayerWeights& w) {
        r.quantize_weights(l, w);  // FP8 weights first (R2 is never combined with them)
        if (r.edit_weights) r.edit_weights(l, w);
      };
    run_hidden.push_back(final_hidden(*r.checkpoint, r.config, eval_data.samples, opt, edit, progress,
                                      static_cast<int64_t>(run_hidden.size()) + 1, passes, r.name));
  }

  // Metrics, sample by sample: position t predicts token t + 1.
  const LmHead base_head(base, cfg);
  std::vector<std::unique_ptr<LmHead>> heads;
  for (auto& r : runs) heads.push_back(std::make_unique<LmHead>(*r.checkpoint, r.config));
  Totals bt;
  std::vector<Totals> rt(runs.size());
  // Per sample that predicts a token: its predicted tokens, and each run's mean KL over them
  // ([samples], [runs][samples]): what the paired bootstrap of eval's verdict resamples.
  std::vector<int64_t> sample_tokens;
  std::vector<std::vector<double>> sample_kl(runs.size());
  int64_t offset = 0;
  for (const auto& ids : eval_data.samples) {
    const auto n = static_cast<int64_t>(ids.size());
    if (n >= 2) {
      sample_tokens.push_back(n - 1);
      std::vector<double> kl_sum(runs.size(), 0.0);
      RowMatrix bl = base_head.logits(base_hidden.middleRows(offset, n - 1));  // [n-1, vocab]
      std::vector<RowMatrix> ql;
      for (std::size_t r = 0; r < runs.size(); ++r) ql.push_back(heads[r]->logits(run_hidden[r].middleRows(offset, n - 1)));
      for (int64_t t = 0; t + 1 < n; ++t) {
        const auto target = static_cast<std::size_t>(ids[static_cast<std::size_t>(t + 1)]);
        const auto lp = log_softmax(bl.row(t).data(), cfg.vocab_size);
        const auto top = static_cast<std::size_t>(std::max_element(lp.begin(), lp.end()) - lp.begin());
        bt.nll -= lp[target];
        ++bt.tokens;
        for (std::size_t r = 0; r < runs.size(); ++r) {
          const auto lq = log_softmax(ql[r].row(t).data(), cfg.vocab_size);
          double kl = 0;
          for (std::size_t v = 0; v < lp.size(); ++v) kl += std::exp(lp[v]) * (lp[v] - lq[v]);
          rt[r].nll -= lq[target];
          rt[r].kl += kl;
          kl_sum[r] += kl;
          rt[r].agree += static_cast<std::size_t>(std::max_element(lq.begin(), lq.end()) - lq.begin()) == top;
          ++rt[r].tokens;
        }
      }
      for (std::size_t r = 0; r < runs.size(); ++r) sample_kl[r].push_back(kl_sum[r] / static_cast<double>(n - 1));
    }
    offset += n;
  }
  if (bt.tokens == 0) throw InputError("no evaluation sample has two or more tokens to predict");
  const double base_nll = bt.nll / static_cast<double>(bt.tokens);
  json doc = {{"baseline", {{"nll", base_nll}, {"ppl", std::exp(base_nll)}, {"tokens", bt.tokens}}},
              {"samples", eval_data.samples.size()},
              {"sample_tokens", sample_tokens}};
  json list = json::array();
  for (std::size_t r = 0; r < runs.size(); ++r) {
    const double nll = rt[r].nll / static_cast<double>(rt[r].tokens);
    json layers = json::array();
    for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
      if (!cfg.has_kv_cache(l)) {
        layers.push_back({{"layer", l}, {"kv_cache", fmt::format("{}: no KV cache", cfg.layer_kind(l))}});
        continue;
      }
      if (const Nvfp4KvFakeQuant* q4 = nvfp4_quantizers[r].get()) {
        json e = {{"layer", l}, {"k_sqnr_db", q4->sqnr_db(l, Site::kKey)}, {"v_sqnr_db", q4->sqnr_db(l, Site::kValue)}};
        const auto& s = runs[r].nvfp4->s[static_cast<std::size_t>(l)];
        for (const auto& [site, p] : {std::pair{Site::kKey, "k_"}, std::pair{Site::kValue, "v_"}}) {
          if (s.count(site)) e[std::string(p) + "s"] = s.at(site);
          const Nvfp4BlockCounts c = q4->counts(l, site);
          e[std::string(p) + "blocks"] = c.blocks;
          e[std::string(p) + "saturated_blocks"] = c.saturated;
          e[std::string(p) + "flushed_blocks"] = c.flushed;
        }
        layers.push_back(e);
        continue;
      }
      json e = {{"layer", l}, {"k_sqnr_db", quantizers[r]->sqnr_db(l, Site::kKey)},
                {"v_sqnr_db", quantizers[r]->sqnr_db(l, Site::kValue)}};
      if (runs[r].query_args) e["q_sqnr_db"] = quantizers[r]->sqnr_db(l, Site::kQuery);
      e["k_clipped_fraction"] = quantizers[r]->clipped_fraction(l, Site::kKey);
      e["v_clipped_fraction"] = quantizers[r]->clipped_fraction(l, Site::kValue);
      if (runs[r].query_args) e["q_clipped_fraction"] = quantizers[r]->clipped_fraction(l, Site::kQuery);
      // A layer left unquantized (--layer-sensitivity runs) has no scales.
      const auto& sites = runs[r].scales[static_cast<std::size_t>(l)].sites;
      if (sites.count(Site::kKey)) e["k_scale"] = sites.at(Site::kKey).scale;
      if (sites.count(Site::kValue)) e["v_scale"] = sites.at(Site::kValue).scale;
      layers.push_back(e);
    }
    json scheme = runs[r].nvfp4 ? json{{"kv_cache_dtype", "nvfp4"}, {"nvfp4_scale", runs[r].nvfp4->rule}}
                                : json{{"kv_cache_scheme", quant_args_to_json(runs[r].kv_args)}};
    json entry = {{"name", runs[r].name},
                    {"rotation", runs[r].qk_rotation.has_value()},
                    {"nll", nll},
                    {"ppl", std::exp(nll)},
                    {"delta_nll", nll - base_nll},
                    {"kl", rt[r].kl / static_cast<double>(rt[r].tokens)},
                    {"top1", static_cast<double>(rt[r].agree) / static_cast<double>(rt[r].tokens)},
                    {"tokens", rt[r].tokens},
                    {"sample_kl", sample_kl[r]},
                    {"layers", layers}};
    entry.update(scheme);
    list.push_back(entry);
  }
  doc["quantized"] = list;  // always a list, one entry per run, however many runs
  return doc;
}

}  // namespace ctcal
