// Tokenizers against the reference libraries (tests/golden/make_tokenizer_golden.py: HF
// tokenizers 0.23 for the Llama-3 tokenizer.json, SentencePiece 0.2.2 for the Llama-2
// tokenizer.model) on every non-empty WikiText-2 test line plus hard strings, with and without
// special tokens, and llama.cpp's test vectors. 100 % must match.
#include <zlib.h>

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "ctcal/data/tokenizer.h"
#include "ctcal/data/tokenizer_json.h"
#include "test_util.h"

namespace ctcal {
namespace {

std::string gunzip(const std::filesystem::path& p) {
  gzFile f = gzopen(p.c_str(), "rb");
  if (!f) return "";
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, static_cast<std::size_t>(n));
  gzclose(f);
  return out;
}

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> out;
  std::istringstream in(s);
  int32_t v;
  while (in >> v) out.push_back(v);
  return out;
}

std::string unhex(const std::string& h) {
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

void check_cases(const Tokenizer& tok, const std::string& file) {
  const std::string text = gunzip(test::golden_dir() / "tokenizer" / file);
  ASSERT_FALSE(text.empty()) << file;
  std::istringstream in(text);
  std::string line;
  int cases = 0, bad = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto t1 = line.find('\t'), t2 = line.find('\t', t1 + 1);
    const std::string s = unhex(line.substr(0, t1));
    const auto with = parse_ids(line.substr(t1 + 1, t2 - t1 - 1)), without = parse_ids(line.substr(t2 + 1));
    ++cases;
    const auto got_with = tok.encode(s, true), got_without = tok.encode(s, false);
    if (got_with != with || got_without != without) {
      if (++bad <= 5) ADD_FAILURE() << file << ": mismatch for " << testing::PrintToString(s.substr(0, 80));
    }
  }
  std::printf("%s: %d/%d cases match\n", file.c_str(), cases - bad, cases);
  EXPECT_EQ(bad, 0);
  EXPECT_GT(cases, 2900);
}

void check_llama_cpp_vectors(const Tokenizer& tok, const std::filesystem::path& inp, bool add_bos) {
  std::ifstream fi(inp), fo(inp.string().substr(0, inp.string().size() - 4) + ".out");
  std::stringstream si, so;
  si << fi.rdbuf();
  so << fo.rdbuf();
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::string all = si.str();
  std::vector<std::string> inputs;
  for (std::size_t pos = 0, next; (next = all.find(sep, pos)) != std::string::npos; pos = next + sep.size())
    inputs.push_back(all.substr(pos, next - pos));
  std::istringstream outs(so.str());
  std::string line;
  std::size_t i = 0, bad = 0;
  for (; i < inputs.size() && std::getline(outs, line); ++i) {
    auto want = parse_ids(line);
    auto got = tok.encode(inputs[i], false);
    if (add_bos && !got.empty() && !want.empty() && want[0] == 1 && got[0] != 1) got.insert(got.begin(), 1);
    if (got != want && ++bad <= 5) ADD_FAILURE() << inp.filename() << " case " << i << ": " << testing::PrintToString(inputs[i]);
  }
  std::printf("%s: %zu/%zu match\n", inp.filename().c_str(), i - bad, i);
  EXPECT_EQ(bad, 0u);
  EXPECT_GT(i, 40u);
}

TEST(TokenizerGolden, Llama3TokenizerJson) {
  CTCAL_REQUIRE_DATA();
  auto tok = load_tokenizer_json(test::data_dir() / "llama3-tokenizer/tokenizer.json");
  check_cases(*tok, "llama3_cases.tsv.gz");
  check_llama_cpp_vectors(*tok, test::data_dir() / "llama3-tokenizer/ggml-vocab-llama-bpe.gguf.inp", false);
}

TEST(TokenizerGolden, Llama2SentencePiece) {
  CTCAL_REQUIRE_DATA();
  auto tok = load_sentencepiece(test::data_dir() / "llama2-tokenizer/tokenizer.model");
  check_cases(*tok, "llama2_cases.tsv.gz");
  check_llama_cpp_vectors(*tok, test::data_dir() / "llama2-tokenizer/ggml-vocab-llama-spm.gguf.inp", false);
}

}  // namespace
}  // namespace ctcal
