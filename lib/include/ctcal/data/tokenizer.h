#pragma once
// Text -> token ids, as the model's own tokenizer does it. The model directory decides which
// (tokenizer.json first, then tokenizer.model); --tokenizer overrides.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace ctcal {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Ids for `text`, with BOS/EOS as the tokenizer's configuration says when `special` is true.
  virtual std::vector<int32_t> encode(const std::string& text, bool special) const = 0;
  virtual std::string piece(int32_t id) const = 0;  // readable form of one token
  virtual int64_t vocab_size() const = 0;
  virtual std::string describe() const = 0;  // "SentencePiece tokenizer.model (512 pieces)"
};

// SentencePiece model (tokenizer.model). BOS/EOS from tokenizer_config.json next to it
// (add_bos_token default true, add_eos_token default false, as Llama's tokenizer).
std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& model_file);

// Finds the tokenizer for a model directory or an explicit path (a file or a directory).
// Returns null when a directory has none. Throws InputError for unreadable or unsupported files.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path);

}  // namespace ctcal
