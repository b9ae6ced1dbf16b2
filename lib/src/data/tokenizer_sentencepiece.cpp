#include <sentencepiece_processor.h>

#include <nlohmann/json.hpp>

#include "ctcal/data/tokenizer.h"
#include "ctcal/data/tokenizer_json.h"
#include "ctcal/error.h"
#include "ctcal/io/checkpoint.h"

namespace ctcal {

namespace fs = std::filesystem;

namespace {

class SentencePieceTokenizer : public Tokenizer {
 public:
  SentencePieceTokenizer(const fs::path& file, bool add_bos, bool add_eos)
      : file_(file), add_bos_(add_bos), add_eos_(add_eos) {
    const auto status = sp_.Load(file.string());
    if (!status.ok())
      throw InputError(fmt::format("{}: not a readable SentencePiece model: {}", file.string(),
                                   status.ToString()));
  }
  std::vector<int32_t> encode(const std::string& text, bool special) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    if (!status.ok()) throw InputError(fmt::format("{}: cannot encode text: {}", file_.string(), status.ToString()));
    std::vector<int32_t> out;
    out.reserve(ids.size() + 2);
    if (special && add_bos_ && sp_.bos_id() >= 0) out.push_back(sp_.bos_id());
    out.insert(out.end(), ids.begin(), ids.end());
    if (special && add_eos_ && sp_.eos_id() >= 0) out.push_back(sp_.eos_id());
    return out;
  }
  std::string piece(int32_t id) const override { return sp_.IdToPiece(id); }
  int64_t vocab_size() const override { return sp_.GetPieceSize(); }
  std::string describe() const override {
    return fmt::format("SentencePiece {} ({} pieces, add_bos={}, add_eos={})", file_.string(),
                       sp_.GetPieceSize(), add_bos_, add_eos_);
  }

 private:
  fs::path file_;
  sentencepiece::SentencePieceProcessor sp_;
  bool add_bos_, add_eos_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const fs::path& model_file) {
  bool add_bos = true, add_eos = false;  // Llama tokenizer defaults
  const fs::path cfg = model_file.parent_path() / "tokenizer_config.json";
  if (fs::is_regular_file(cfg)) {
    nlohmann::json j = read_json_file(cfg);
    if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean()) add_bos = j["add_bos_token"].get<bool>();
    if (j.contains("add_eos_token") && j["add_eos_token"].is_boolean()) add_eos = j["add_eos_token"].get<bool>();
  }
  return std::make_unique<SentencePieceTokenizer>(model_file, add_bos, add_eos);
}

std::unique_ptr<Tokenizer> load_tokenizer(const fs::path& path) {
  if (fs::is_directory(path)) {
    if (fs::is_regular_file(path / "tokenizer.json")) return load_tokenizer_json(path / "tokenizer.json");
    if (fs::is_regular_file(path / "tokenizer.model")) return load_sentencepiece(path / "tokenizer.model");
    return nullptr;
  }
  if (!fs::is_regular_file(path))
    throw InputError(fmt::format("{}: tokenizer file does not exist", path.string()));
  if (path.extension() == ".model") return load_sentencepiece(path);
  if (path.extension() == ".json") return load_tokenizer_json(path);
  throw InputError(fmt::format("{}: unsupported tokenizer file; expected a tokenizer.json or a "
                               "SentencePiece tokenizer.model", path.string()));
}

}  // namespace ctcal
