#include "ctcal/io/checkpoint.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "ctcal/error.h"

namespace ctcal {

namespace fs = std::filesystem;
using nlohmann::json;

json read_json_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: cannot open", path.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::parse_error& e) {
    throw InputError(fmt::format("{}: not valid JSON: {}", path.string(), e.what()));
  }
}

Checkpoint::Checkpoint(const fs::path& dir) : dir_(dir) {
  if (!fs::is_directory(dir)) {
    // "org/name" that is not a local path is most likely a Hugging Face hub id.
    const std::string s = dir.string();
    const bool hub_id = !fs::exists(dir) && std::count(s.begin(), s.end(), '/') == 1 && s.front() != '/' &&
                        s.front() != '.';
    throw InputError(fmt::format("{}: model directory does not exist or is not a directory{}", s,
                                 hub_id ? fmt::format("; ctcal reads local directories only (it never downloads). "
                                                      "Download the model first, e.g. `huggingface-cli download {} "
                                                      "--local-dir ./{}`, then pass --model ./{}",
                                                      s, dir.filename().string(), dir.filename().string())
                                        : std::string()));
  }
  config_path_ = dir / "config.json";
  if (!fs::is_regular_file(config_path_))
    throw InputError(fmt::format("{}: no config.json; expected a Hugging Face checkpoint "
                                 "directory", dir.string()));
  config_ = read_json_file(config_path_);
  if (!config_.is_object())
    throw InputError(fmt::format("{}: expected a JSON object", config_path_.string()));

  fs::path index_path = dir / "model.safetensors.index.json";
  std::vector<std::string> files;
  if (fs::is_regular_file(index_path)) {
    json index = read_json_file(index_path);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      throw InputError(fmt::format("{}: field 'weight_map' missing or not an object",
                                   index_path.string()));
    if (index.contains("metadata") && index["metadata"].is_object())
      index_metadata_ = index["metadata"];
    std::map<std::string, std::string> listed;
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string())
        throw InputError(fmt::format("{}: weight_map['{}'] must be a file name", index_path.string(),
                                     name));
      auto f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f == "." || f == "..")
        throw InputError(fmt::format("{}: weight_map['{}'] = '{}' must be a plain file name inside "
                                     "the directory", index_path.string(), name, f));
      listed[name] = f;
      if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(f);
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files)
      if (!fs::is_regular_file(dir / f))
        throw InputError(fmt::format("{}: lists shard '{}', which does not exist in {}",
                                     index_path.string(), f, dir.string()));
    for (const auto& f : files) shards_.push_back(std::make_unique<SafetensorsFile>(dir / f));
    for (std::size_t s = 0; s < shards_.size(); ++s)
      for (const auto& [name, _] : shards_[s]->tensors()) {
        auto [it, inserted] = where_.emplace(name, s);
        if (!inserted)
          throw InputError(fmt::format("{}: tensor '{}' appears in both {} and {}", dir.string(),
                                       name, shards_[it->second]->path().filename().string(),
                                       shards_[s]->path().filename().string()));
      }
    for (const auto& [name, f] : listed) {
      auto it = where_.find(name);
      if (it == where_.end() || shards_[it->second]->path().filename() != f)
        throw InputError(fmt::format("{}: lists '{}' in {}, but that shard does not hold it",
                                     index_path.string(), name, f));
    }
  } else if (fs::is_regular_file(dir / "model.safetensors")) {
    shards_.push_back(std::make_unique<SafetensorsFile>(dir / "model.safetensors"));
    for (const auto& [name, _] : shards_[0]->tensors()) where_[name] = 0;
  } else {
    throw InputError(fmt::format("{}: no model.safetensors or model.safetensors.index.json; "
                                 "ctcal reads safetensors weights only", dir.string()));
  }
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
  return shard_of(name).info(name);
}

const SafetensorsFile& Checkpoint::shard_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end())
    throw InputError(fmt::format("{}: tensor '{}' is missing from the checkpoint", dir_.string(),
                                 name));
  return *shards_[it->second];
}

std::vector<float> Checkpoint::read_f32(const std::string& name) const {
  return shard_of(name).read_f32(name);
}

std::vector<fs::path> Checkpoint::shard_paths() const {
  std::vector<fs::path> out;
  for (const auto& s : shards_) out.push_back(s->path());
  return out;
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : where_) out.push_back(name);
  return out;
}

const WeightQuantization& Checkpoint::weight_quantization() const {
  if (!quantization_) quantization_ = WeightQuantization::from_config(config_, config_path_.string());
  return *quantization_;
}

std::optional<QuantizedWeightSpec> Checkpoint::quantized_weight(const std::string& module) const {
  const WeightQuantization& wq = weight_quantization();
  if (wq.empty()) return std::nullopt;
  return wq.spec_for(tensor_getter(*this), module);
}

DType Checkpoint::weight_dtype() const {
  if (has("model.embed_tokens.weight")) return info("model.embed_tokens.weight").dtype;
  for (const auto& [name, s] : where_) {
    DType t = shards_[s]->info(name).dtype;
    if (dtype_is_float(t)) return t;
  }
  return DType::kF32;
}

}  // namespace ctcal
