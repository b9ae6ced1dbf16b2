#pragma once
// `ctcal tokenize`: shows what calibration will see, one line per dataset row in file order
// (data/ reads and tokenizes the rows; this prints them).
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

namespace ctcal::app {

struct TokenizeRequest {
  std::string tokenizer;  // tokenizer.json, tokenizer.model, or a model directory
  std::string dataset;
  bool no_special_tokens = false;
  std::optional<int64_t> max_seq_length;
  bool json = false;
};

int run_tokenize(const TokenizeRequest& req, std::ostream& out);

}  // namespace ctcal::app
