// tokenizer.json components on small hand-checked tokenizers (the seed corpus of the fuzzer):
// byte-level BPE with Split + ignore_merges + TemplateProcessing BOS, and SentencePiece-style
// Prepend/Replace + Metaspace + byte_fallback. The real Llama-3 file is checked against HF
// tokenizers in tests/golden/tokenizer_golden_test.cpp.
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "ctcal/data/tokenizer_json.h"
#include "ctcal/error.h"
#include "test_util.h"

namespace ctcal {
namespace {

std::unique_ptr<Tokenizer> corpus(const std::string& name) {
  std::ifstream in(test::source_dir() / "tests/fuzz/corpus/tokenizer" / name, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_tokenizer_json(ss.str().substr(1), name);  // first byte: the fuzzer's mode
}

TEST(TokenizerJson, ByteLevelSplitIgnoreMergesAndTemplate) {
  auto tok = corpus("bytelevel.json");
  // "ab" is a vocabulary word (ignore_merges); " " becomes byte-level "Ġ"; <s> from the template.
  EXPECT_EQ(tok->encode("ab c", true), (std::vector<int32_t>{5, 2, 3, 4}));
  EXPECT_EQ(tok->encode("ab c", false), (std::vector<int32_t>{2, 3, 4}));
  EXPECT_EQ(tok->encode("<s>ab", false), (std::vector<int32_t>{5, 2}));  // added token split first
}

TEST(TokenizerJson, MetaspacePrependReplaceByteFallback) {
  auto tok = corpus("metaspace.json");
  // Prepend + Replace give "▁ab▁a"; Metaspace splits before each ▁; merges give "ab".
  EXPECT_EQ(tok->encode("ab a", true), (std::vector<int32_t>{5, 3, 2, 3, 0}));
  // 'A' is not in the vocabulary: byte fallback to <0x41>.
  EXPECT_EQ(tok->encode("A", false), (std::vector<int32_t>{3, 4}));
  // 'Z' has neither a piece nor a byte token, and there is no unk_token.
  EXPECT_THROW(tok->encode("Z", false), InputError);
}

TEST(TokenizerJson, UnsupportedComponentsAreNamed) {
  try {
    parse_tokenizer_json(R"({"model": {"type": "WordPiece", "vocab": {}}})", "t.json");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("model type \"WordPiece\""), std::string::npos) << e.what();
  }
  try {
    parse_tokenizer_json(R"({"model": {"type": "BPE", "vocab": {}, "merges": []}, "normalizer": {"type": "NFKC"}})", "t.json");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("normalizer 'NFKC'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_tokenizer_json("{not json", "t.json"), InputError);
  EXPECT_THROW(parse_tokenizer_json(R"({"model": {"type": "BPE", "vocab": 3}})", "t.json"), InputError);
}

}  // namespace
}  // namespace ctcal
