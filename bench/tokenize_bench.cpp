// Tokenizer throughput: the whole WikiText-2 test file (1.29 MB), one thread, best of 3.
// usage: tokenize_bench DATA_DIR
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "ctcal/data/tokenizer.h"
#include "ctcal/data/tokenizer_json.h"

int main(int argc, char** argv) {
  const std::string data = argc > 1 ? argv[1] : "../shared/data";
  std::ifstream in(data + "/wikitext-2-raw/wiki.test.raw", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  std::vector<std::string> lines;
  std::istringstream ls(text);
  for (std::string l; std::getline(ls, l);)
    if (l.find_first_not_of(" \t") != std::string::npos) lines.push_back(l);
  const double mb = static_cast<double>(text.size()) / 1e6;
  auto bench = [&](const char* name, const ctcal::Tokenizer& tok) {
    // Cold: the first pass over the file on a fresh tokenizer (its word cache empty), as a one-off
    // `tokenizers` call measures; best: best of 3 after that.
    auto c0 = std::chrono::steady_clock::now();
    tok.encode(text, false);
    const double cold = std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count();
    std::printf("%-34s cold whole file %7.2f MB/s\n", name, mb / cold);
    double best_whole = 1e9, best_lines = 1e9;
    std::size_t n = 0;
    for (int rep = 0; rep < 3; ++rep) {
      auto t0 = std::chrono::steady_clock::now();
      n = tok.encode(text, false).size();
      auto t1 = std::chrono::steady_clock::now();
      for (const auto& l : lines) tok.encode(l, false);
      auto t2 = std::chrono::steady_clock::now();
      best_whole = std::min(best_whole, std::chrono::duration<double>(t1 - t0).count());
      best_lines = std::min(best_lines, std::chrono::duration<double>(t2 - t1).count());
    }
    std::printf("%-34s whole file %7.2f MB/s (%zu tokens)   per line %7.2f MB/s (%zu lines)\n", name, mb / best_whole, n,
                mb / best_lines, lines.size());
  };
  bench("ctcal tokenizer.json (Llama-3)", *ctcal::load_tokenizer_json(data + "/llama3-tokenizer/tokenizer.json"));
  bench("ctcal SentencePiece (Llama-2)", *ctcal::load_sentencepiece(data + "/llama2-tokenizer/tokenizer.model"));
  return 0;
}
