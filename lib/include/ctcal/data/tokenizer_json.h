#pragma once
// Hugging Face `tokenizer.json` with a BPE model, as the `tokenizers` library encodes:
// added/special tokens split out first; normalizer (Prepend, Replace, Sequence); pre-tokenizer
// (Split with a Unicode regex through PCRE2, ByteLevel, Metaspace, Sequence); BPE merges by rank
// with ignore_merges and byte_fallback; post-processor (TemplateProcessing, ByteLevel,
// Sequence) deciding BOS/EOS. Any other component type is an error naming it.
#include <filesystem>
#include <memory>

#include "ctcal/data/tokenizer.h"

namespace ctcal {

std::unique_ptr<Tokenizer> load_tokenizer_json(const std::filesystem::path& file);
// The same from JSON text; `where` names it in messages (fuzzing, tests).
std::unique_ptr<Tokenizer> parse_tokenizer_json(const std::string& text, const std::string& where);

}  // namespace ctcal
