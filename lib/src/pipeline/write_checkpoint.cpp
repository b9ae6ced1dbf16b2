#include "ctcal/pipeline/write_checkpoint.h"

#include <algorithm>
#include <fstream>
#include <set>

#include "ctcal/error.h"
#include "ctcal/io/output_dir.h"
#include "ctcal/ct/tensor_names.h"
#include "ctcal/pipeline/existing_scales.h"
#include "ctcal/pipeline/quant_config.h"
#include "ctcal/io/safetensors.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/linear_modules.h"
#include "ctcal/quant/fp8_weight.h"

namespace ctcal {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw InputError(fmt::format("{}: write failed (disk full?)", p.string()));
}

std::string shard_file_name(std::size_t k, std::size_t n) {
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", k, n);
}

std::vector<int64_t> scale_shape(const CalibrationPlan& plan, Site s, int64_t layer) {
  const Strategy st = *plan.site_args(s).strategy;
  if (st == Strategy::kAttnHead) return {plan.heads(s, layer), 1, 1};
  return {1};
}

// Scales (+ zero points, + R3 matrices) for every layer.
std::map<std::string, TensorBlob> scale_tensors(const CalibrationPlan& plan, const CalibrationResult& r) {
  std::map<std::string, TensorBlob> out;
  for (const auto& layer : r.layers)
    for (const auto& s : layer.sites) {
      if (plan.input_args.count(s.site)) continue;  // Linear inputs: input_scale per module below
      if (std::find(plan.kv_skip_layers.begin(), plan.kv_skip_layers.end(), layer.layer) != plan.kv_skip_layers.end())
        continue;  // left unquantized: in `ignore`, no scales
      const auto shape = scale_shape(plan, s.site, layer.layer);
      std::vector<float> scale(s.qparams.scale.begin(), s.qparams.scale.end());
      out[ct::scale_name(plan.model.attention_module(layer.layer), site_name(s.site))] = make_blob_f32(scale, shape, plan.storage);
      if (plan.write_zero_points) {
        const QuantArgs& a = s.site == Site::kQuery ? *plan.query_args : plan.kv_args;
        std::vector<float> zp(s.qparams.zero_point.begin(), s.qparams.zero_point.end());
        out[ct::zero_point_name(plan.model.attention_module(layer.layer), site_name(s.site))] = make_blob_f32(zp, shape, *a.zp_dtype);
      }
    }
  // FP8 Linear layers with static inputs: `<module>.input_scale` [1], the shared input's scale.
  for (const auto& lp : plan.linear) {
    if (!lp.input) continue;
    const LayerResult& layer = r.layers.at(static_cast<std::size_t>(lp.layer));
    const SiteResult* s = lp.expert >= 0 ? &layer.experts.at(lp.input_site).at(static_cast<std::size_t>(lp.expert))
                                         : layer.find(lp.input_site);
    CTCAL_ASSERT(s != nullptr, "planned input site observed");
    out[ct::input_scale_name(lp.module)] = make_blob_f32({static_cast<float>(s->qparams.scale.at(0))}, {1}, plan.storage);
  }
  if (plan.r3) {
    // Unnormalised ±1 entries in F64 (the scheme's precision), one copy per layer (SPEC §6).
    const RowMatrixD& h = plan.r3->matrix;
    std::vector<float> v(h.data(), h.data() + h.size());
    const DType t = dtype_from_torch_name(plan.r3->precision).value_or(DType::kF64);
    for (int64_t l = 0; l < plan.model.num_hidden_layers; ++l)
      for (const char* loc : {"q_attn", "k_cache"})
        out[ct::transform_weight_name(plan.model.attention_module(l), plan.r3->group, loc)] =
            make_blob_f32(v, {h.rows(), h.cols()}, t);
  }
  return out;
}

// The modules R2 rewrites in layer l: v (or the fused qkv it is part of) and o, by
// model/linear_modules.h; `fused`: v is rows of a fused qkv.
struct R2Modules {
  std::string v, o;
  bool fused = false;
};
R2Modules r2_modules(const ModelConfig& m, int64_t l) {
  R2Modules r;
  for (const LinearModule& x : linear_modules(m, l, /*with_mlp=*/false)) {
    if (x.role == LinearRole::kV || x.role == LinearRole::kQkv) r.v = x.name;
    if (x.role == LinearRole::kQkv) r.fused = true;
    if (x.role == LinearRole::kO) r.o = x.name;
  }
  CTCAL_ASSERT(!r.v.empty() && !r.o.empty(), "an attention block has v (or qkv) and o");
  return r;
}

// R2-rewritten v_proj / o_proj tensors (weights and biases) in their input dtype. A fused
// qkv_proj (Phi-3) is written whole: its q and k rows unchanged (they round-trip exactly through
// fp32), its v rows rotated.
std::map<std::string, TensorBlob> r2_tensors(const Checkpoint& in, const CalibrationPlan& plan) {
  std::map<std::string, TensorBlob> out;
  if (!plan.r2) return out;
  CalibrationPlan p = plan;  // p.storage: the dtype each rewritten tensor keeps
  for (int64_t l = 0; l < plan.model.num_hidden_layers; ++l) {
    const LayerWeights w = load_layer_weights(in, plan.model, l, /*with_mlp=*/false);
    const auto [v, o, fused] = r2_modules(plan.model, l);
    const DType v_dtype = in.info(v + ".weight").dtype, o_dtype = in.info(o + ".weight").dtype;
    // One rotation serves both tensors unless they are stored in different dtypes.
    LayerWeights rotated = w;
    p.storage = v_dtype;
    apply_r2(p, &rotated);
    auto blob = [](const RowMatrix& m, DType t) {
      return make_blob_f32(std::vector<float>(m.data(), m.data() + m.size()), {m.rows(), m.cols()}, t);
    };
    if (fused) {
      RowMatrix qkv(w.q.w.rows() + w.k.w.rows() + rotated.v.w.rows(), w.q.w.cols());  // [q_dim + 2 kv_dim, hidden]
      qkv << w.q.w, w.k.w, rotated.v.w;
      out[v + ".weight"] = blob(qkv, v_dtype);
    } else {
      out[v + ".weight"] = blob(rotated.v.w, v_dtype);
    }
    if (rotated.v.b.size() > 0)
      out[v + ".bias"] = make_blob_f32(std::vector<float>(rotated.v.b.data(), rotated.v.b.data() + rotated.v.b.size()),
                                       {rotated.v.b.size()}, in.info(v + ".bias").dtype);
    if (o_dtype != v_dtype) {
      rotated = w;
      p.storage = o_dtype;
      apply_r2(p, &rotated);
    }
    out[o + ".weight"] = blob(rotated.o.w, o_dtype);
  }
  return out;
}

}  // namespace

// One FP8 Linear weight: returns its F8_E4M3 codes (the blob replacing `<module>.weight`) and adds
// `<module>.weight_scale` (the weight's dtype, as compressed-tensors stores it) to `scales`. Called
// shard by shard while writing, so only one weight's codes are held at a time.
TensorBlob fp8_weight_blob(const Checkpoint& in, const LinearQuantPlan& lp,
                           std::map<std::string, TensorBlob>* scales) {
  const std::string name = lp.module + ".weight";
  const TensorInfo& t = in.info(name);
  const int64_t rows = t.shape.at(0), cols = t.shape.at(1);
  const std::vector<float> w = in.read_f32(name);  // [rows, cols]
  const Fp8WeightScales s = fp8_weight_scales(w.data(), rows, cols, lp.weights, t.dtype);
  const std::vector<uint8_t> codes = fp8_quantize_weight(w.data(), rows, cols, s, t.dtype);  // [rows, cols]
  const std::vector<float> sv(s.scale.begin(), s.scale.end());
  (*scales)[ct::weight_scale_name(lp.module)] = make_blob_f32(sv, s.shape, s.dtype);
  return TensorBlob{DType::kF8E4M3, {rows, cols}, std::vector<unsigned char>(codes.begin(), codes.end())};
}

json layers_report_json(const CalibrationPlan& plan, const CalibrationResult& result) {
  json layers = json::array();
  for (const auto& layer : result.layers) {
    json l = {{"layer", layer.layer}};
    for (const auto& s : layer.sites) {
      double mn = *std::min_element(s.head_min.begin(), s.head_min.end());
      double mx = *std::max_element(s.head_max.begin(), s.head_max.end());
      json site = {{"min", mn},
                   {"max", mx},
                   {"absmax", std::max(std::fabs(mn), std::fabs(mx))},
                   {"head_min", s.head_min},
                   {"head_max", s.head_max},
                   {"observer_min", s.obs_min},
                   {"observer_max", s.obs_max},
                   {"observations", s.observations},
                   {"scale", s.qparams.scale},
                   {"scale_shape", scale_shape(plan, s.site, layer.layer)},
                   {"scale_dtype", dtype_name(plan.storage)}};
      if (plan.write_zero_points) site["zero_point"] = s.qparams.zero_point;
      l[std::string(site_name(s.site))] = site;
    }
    // MoE experts' inputs: per expert, its routed rows' absmax (null when no token reached it:
    // the scale is then the layer's largest) and the scale written.
    for (const auto& [site, list] : layer.experts) {
      json experts = json::array();
      for (const auto& s : list) {
        json absmax = nullptr;
        if (s.observations > 0)
          absmax = std::max(std::fabs(*std::min_element(s.head_min.begin(), s.head_min.end())),
                            std::fabs(*std::max_element(s.head_max.begin(), s.head_max.end())));
        experts.push_back({{"absmax", absmax}, {"observations", s.observations}, {"scale", s.qparams.scale}});
      }
      l[std::string(site_name(site))] = experts;
    }
    layers.push_back(l);
  }
  return layers;
}

OutputSize estimate_output_size(const Checkpoint& in, const CalibrationPlan& plan) {
  OutputSize size;
  std::set<fs::path> rewritten;  // shards holding a tensor R2 rewrites or an old attention scale are written in full
  for (const auto& name : attention_scales_in(in, plan.model)) rewritten.insert(in.shard_of(name).path());
  if (plan.r2)
    for (int64_t l = 0; l < plan.model.num_hidden_layers; ++l) {
      const R2Modules m = r2_modules(plan.model, l);
      for (const std::string& name : {m.v + ".weight", m.v + ".bias", m.o + ".weight"})
        if (in.has(name)) rewritten.insert(in.shard_of(name).path());
    }
  for (const auto& shard : in.shard_paths())
    (rewritten.count(shard) ? size.new_bytes : size.linked_bytes) += fs::file_size(shard);
  // Scales, zero points and R3 matrices: at most 3 sites x 2 tensors x heads x 8 bytes per layer,
  // plus two head_dim^2 F64 matrices per layer.
  const std::uintmax_t per_layer =
      6 * 8 * static_cast<std::uintmax_t>(plan.model.num_attention_heads) +
      (plan.r3 ? 2 * 8 * static_cast<std::uintmax_t>(plan.model.head_dim * plan.model.head_dim) : 0) + 4096;
  size.new_bytes += per_layer * static_cast<std::uintmax_t>(plan.model.num_hidden_layers) + (1u << 20);
  for (const auto& entry : fs::directory_iterator(in.dir()))
    if (entry.is_regular_file() && entry.path().extension() != ".safetensors") size.new_bytes += entry.file_size();
  return size;
}

WrittenCheckpoint write_calibrated_checkpoint(const fs::path& staging, const Checkpoint& in, const CalibrationPlan& plan,
                                              const CalibrationResult& result, const OutputExtras& extras) {
  std::vector<std::string> written;
  // config.json
  json config = in.config();
  config["quantization_config"] = build_quantization_config(config, plan, in.config_path().string());
  write_text(staging / "config.json", python_json_dump(config) + "\n");
  written.push_back("config.json");

  // Weight shards: input shards keep their tensors (linked when untouched); scales go last.
  const auto replaced = r2_tensors(in, plan);
  auto scales = scale_tensors(plan, result);
  std::map<std::string, const LinearQuantPlan*> fp8;  // "<module>.weight" -> its plan
  for (const auto& lp : plan.linear) fp8[lp.module + ".weight"] = &lp;
  // The input's own q/k/v scales and zero points (a hub FP8 checkpoint, an earlier ctcal output)
  // are replaced or dropped, never copied: vLLM loads every tensor of every shard, so a shard
  // holding one is rewritten without it, the other tensors byte for byte.
  const ExistingScales existing = match_existing_scales(in, plan, scales);
  for (const auto& [name, _] : scales)
    if (in.has(name) && !existing.input_names.count(name))
      throw InputError(fmt::format("{}: the input already holds '{}', which this recipe writes; calibrate the "
                                   "checkpoint without it", in.dir().string(), name));
  std::set<fs::path> keeping;  // input shards with a tensor left (one that held old scales only goes away)
  for (const auto& name : in.tensor_names())
    if (!existing.input_names.count(name)) keeping.insert(in.shard_of(name).path());
  std::vector<fs::path> shards;
  for (const auto& path : in.shard_paths())
    if (keeping.count(path)) shards.push_back(path);
  const std::size_t n = shards.size() + 1;
  json weight_map = json::object();
  std::size_t total_size = 0, total_params = 0;
  for (std::size_t k = 0; k < shards.size(); ++k) {
    const std::string out_name = shard_file_name(k + 1, n);
    SafetensorsFile src(shards[k]);
    bool touched = false;
    for (const auto& [name, t] : src.tensors()) {
      if (existing.input_names.count(name)) {
        touched = true;
        continue;
      }
      weight_map[name] = out_name;
      const auto r = replaced.find(name);
      total_size += r != replaced.end() ? r->second.bytes.size() : fp8.count(name) ? t.numel() : t.nbytes();
      total_params += t.numel();
      touched = touched || r != replaced.end() || fp8.count(name);
    }
    if (!touched) {
      link_or_copy(shards[k], staging / out_name);
    } else {
      std::map<std::string, TensorBlob> blobs;
      for (const auto& [name, t] : src.tensors()) {
        if (existing.input_names.count(name)) continue;
        auto it = replaced.find(name);
        if (it != replaced.end()) {
          blobs[name] = it->second;
        } else if (auto f = fp8.find(name); f != fp8.end()) {
          blobs[name] = fp8_weight_blob(in, *f->second, &scales);
        } else {
          const unsigned char* p = src.data(t);
          blobs[name] = TensorBlob{t.dtype, t.shape, std::vector<unsigned char>(p, p + t.nbytes())};
        }
      }
      write_safetensors(staging / out_name, blobs, src.metadata());
    }
    written.push_back(out_name);
  }
  const std::string scale_shard = shard_file_name(n, n);
  for (const auto& [name, blob] : scales) {
    weight_map[name] = scale_shard;
    total_size += blob.bytes.size();
    std::size_t numel = 1;
    for (auto d : blob.shape) numel *= static_cast<std::size_t>(d);
    total_params += numel;
  }
  write_safetensors(staging / scale_shard, scales);
  written.push_back(scale_shard);
  log_existing_scales(existing);

  json metadata = in.index_metadata();
  metadata["total_size"] = total_size;
  if (metadata.contains("total_parameters")) metadata["total_parameters"] = total_params;
  write_text(staging / "model.safetensors.index.json",
             python_json_dump({{"metadata", metadata}, {"weight_map", weight_map}}) + "\n");
  written.push_back("model.safetensors.index.json");

  // Every other file of the input (tokenizer, generation config, chat template, ...).
  const std::set<std::string> skip = {"config.json", "model.safetensors.index.json", "recipe.yaml",
                                      "ctcal_report.json"};
  for (const auto& entry : fs::directory_iterator(in.dir())) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || skip.count(name) || entry.path().extension() == ".safetensors") continue;
    fs::copy_file(entry.path(), staging / name, fs::copy_options::overwrite_existing);
    written.push_back(name);
  }

  write_text(staging / "recipe.yaml", extras.recipe_yaml);
  written.push_back("recipe.yaml");
  json report = extras.report;
  report["layers"] = layers_report_json(plan, result);
  if (!existing.empty()) {
    report["replaced_scales"] = replaced_scales_json(existing);
    report["dropped_scales"] = dropped_scales_json(existing);
  }
  write_text(staging / "ctcal_report.json", python_json_dump(report) + "\n");
  written.push_back("ctcal_report.json");
  WrittenCheckpoint out{std::move(written), std::move(config), {}};
  for (const auto& [name, _] : weight_map.items()) out.tensors.push_back(name);
  return out;
}

}  // namespace ctcal
