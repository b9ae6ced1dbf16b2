// Dataset formats and their errors (file, line, field), selection and truncation.
#include <fstream>

#include <gtest/gtest.h>

#include "ctcal/data/dataset.h"
#include "ctcal/error.h"
#include "test_util.h"

namespace ctcal {
namespace {

using test::TempDir;

std::filesystem::path write(const TempDir& d, const std::string& name, const std::string& text) {
  auto p = d.path() / name;
  std::ofstream(p) << text;
  return p;
}

std::string error_of(const std::filesystem::path& p, SamplingOptions o = {}) {
  try {
    auto rows = read_dataset_rows(p);
    if (o.vocab_size == 0) o.vocab_size = 10;
    make_calibration_samples(p, rows, nullptr, o);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(Dataset, JsonlIdsWinOverText) {
  TempDir d;
  auto p = write(d, "a.jsonl", R"({"input_ids": [1, 2, 3], "text": "ignored"}
{"input_ids": [4, 5]}

{"input_ids": []}
)");
  auto rows = read_dataset_rows(p);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1].line, 2);
  SamplingOptions o;
  o.vocab_size = 10;
  o.shuffle = false;
  o.max_seq_length = 2;
  auto s = make_calibration_samples(p, rows, nullptr, o);
  ASSERT_EQ(s.samples.size(), 2u);
  EXPECT_EQ(s.samples[0], (std::vector<int32_t>{1, 2}));  // truncated
  EXPECT_EQ(s.truncated, 1);
  EXPECT_EQ(s.skipped_empty, 1);
  EXPECT_EQ(s.tokens(), 4);
}

TEST(Dataset, JsonArrayAndTxt) {
  TempDir d;
  EXPECT_EQ(read_dataset_rows(write(d, "a.json", R"([{"input_ids": [1]}, {"text": "hi"}, "plain"])")).size(), 3u);
  auto rows = read_dataset_rows(write(d, "a.txt", "doc one\nline two\n\n\ndoc two\n<|endoftext|>\ndoc three\n"));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].text, "doc one\nline two");
  EXPECT_EQ(rows[2].line, 7);
}

TEST(Dataset, Errors) {
  TempDir d;
  EXPECT_NE(error_of(write(d, "a.jsonl", "{\"input_ids\": [1]}\nnot json\n")).find("a.jsonl: line 2: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(write(d, "b.jsonl", "{\"input_ids\": [1, 99]}\n")).find("input_ids[1] = 99 is outside"), std::string::npos);
  EXPECT_NE(error_of(write(d, "c.jsonl", "{\"ids\": [1]}\n")).find("neither 'input_ids' nor 'text'"), std::string::npos);
  EXPECT_NE(error_of(write(d, "d.jsonl", "{\"messages\": []}\n")).find("chat template"), std::string::npos);
  EXPECT_NE(error_of(write(d, "e.jsonl", "{\"text\": \"hello\"}\n")).find("no tokenizer"), std::string::npos);
  EXPECT_NE(error_of(write(d, "f.jsonl", "\n\n")).find("no rows"), std::string::npos);
  EXPECT_NE(error_of(write(d, "g.jsonl", "{\"input_ids\": []}\n")).find("no usable sample"), std::string::npos);
  EXPECT_NE(error_of(write(d, "h.csv", "1,2\n")).find("unknown dataset extension"), std::string::npos);
  EXPECT_NE(error_of(d.path() / "missing.jsonl").find("does not exist"), std::string::npos);
}

TEST(Dataset, SentencePieceTextMatchesTheModelTokenizer) {
  CTCAL_REQUIRE_DATA();
  auto tok = load_tokenizer(test::data_dir() / "hf/stories260K");
  ASSERT_TRUE(tok);
  auto ids = tok->encode("Once upon a time", true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], 1);  // BOS, Llama default
  EXPECT_EQ(tok->vocab_size(), 512);
}

}  // namespace
}  // namespace ctcal
