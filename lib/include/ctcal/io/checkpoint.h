#pragma once
// A Hugging Face checkpoint directory: config.json plus either model.safetensors or shards
// listed in model.safetensors.index.json. Maps every tensor name to the shard holding it.
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/io/safetensors.h"
#include "ctcal/io/weight_quantization.h"

namespace ctcal {

class Checkpoint {
 public:
  // Throws InputError naming the directory/file when anything is missing or inconsistent:
  // no config.json, no weights, index pointing at a missing shard, a tensor in two shards, a
  // tensor the index lists but its shard lacks.
  explicit Checkpoint(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  const nlohmann::json& config() const { return config_; }
  const std::filesystem::path& config_path() const { return config_path_; }
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  const SafetensorsFile& shard_of(const std::string& name) const;
  std::vector<float> read_f32(const std::string& name) const;
  // Shard files in the order of the input (index order, or the one model.safetensors).
  std::vector<std::filesystem::path> shard_paths() const;
  std::vector<std::string> tensor_names() const;
  // The index's "metadata" object (empty for a single file).
  const nlohmann::json& index_metadata() const { return index_metadata_; }
  // Weight dtype of the checkpoint: the dtype of model.embed_tokens.weight, else the first
  // float tensor.
  DType weight_dtype() const;
  // How Linear `module` ("model.layers.0.mlp.up_proj") is stored when it is quantized
  // (compressed-tensors formats, io/quantized_weight.h); nullopt for a plain float weight. The
  // quantization_config is read on first use, so that only readers of weights refuse an
  // unsupported format (UnsupportedFormatError, exit 4).
  std::optional<QuantizedWeightSpec> quantized_weight(const std::string& module) const;
  const WeightQuantization& weight_quantization() const;

 private:
  std::filesystem::path dir_;
  std::filesystem::path config_path_;
  nlohmann::json config_;
  nlohmann::json index_metadata_ = nlohmann::json::object();
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, std::size_t> where_;  // tensor name -> index into shards_
  mutable std::optional<WeightQuantization> quantization_;  // parsed on first use
};

// Reads a JSON file; InputError naming the file (and line/column) when it is not valid JSON.
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace ctcal
