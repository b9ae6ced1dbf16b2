// Invalid UTF-8 is replaced exactly as Python's bytes.decode("utf-8", errors="replace") does
// (the expected strings below are what CPython 3.11 returns), and the fuzzer's crash input (invalid
// UTF-8 reaching PCRE2's JIT matcher) now encodes without a crash.
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "ctcal/data/tokenizer_json.h"
#include "ctcal/error.h"
#include "ctcal/util/utf8.h"
#include "test_util.h"

namespace ctcal {
namespace {

const std::string R = "\xEF\xBF\xBD";  // U+FFFD

TEST(Utf8, ReplacesMaximalInvalidSubparts) {
  EXPECT_EQ(sanitize_utf8("ok \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"), "ok \xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  EXPECT_EQ(sanitize_utf8("\xE2\x82"), R);                 // truncated 3-byte sequence: one
  EXPECT_EQ(sanitize_utf8("\xE2\x82x"), R + "x");
  EXPECT_EQ(sanitize_utf8("\xC0\xAF"), R + R);             // overlong
  EXPECT_EQ(sanitize_utf8("\xE0\x80\x80"), R + R + R);     // overlong 3-byte
  EXPECT_EQ(sanitize_utf8("\xED\xA0\x80"), R + R + R);     // surrogate
  EXPECT_EQ(sanitize_utf8("\xF4\x90\x80\x80"), R + R + R + R);  // above U+10FFFF
  EXPECT_EQ(sanitize_utf8("\xFF\xFE"), R + R);
  EXPECT_EQ(sanitize_utf8("bad \xff\xfe bytes \xc3("), "bad " + R + R + " bytes " + R + "(");
}

TEST(Utf8, FuzzerCrashInputEncodes) {
  std::ifstream in(test::source_dir() / "tests/fuzz/regressions/tokenizer-invalid-utf8-pcre2-jit.bin", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str().substr(1);  // first byte: the fuzzer's mode
  std::ifstream tj(test::source_dir() / "tests/fuzz/corpus/tokenizer/bytelevel.json", std::ios::binary);
  std::stringstream ts;
  ts << tj.rdbuf();
  auto tok = parse_tokenizer_json(ts.str().substr(1), "bytelevel.json");
  try {
    tok->encode(text, true);  // must not crash; unknown characters may raise InputError
  } catch (const InputError&) {
  }
  SUCCEED();
}

}  // namespace
}  // namespace ctcal
