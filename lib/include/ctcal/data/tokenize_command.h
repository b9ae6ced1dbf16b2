#pragma once
// `ctcal tokenize`: shows what calibration will see, one line per dataset row in file order.
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

namespace ctcal {

struct TokenizeRequest {
  std::string tokenizer;  // tokenizer.json, tokenizer.model, or a model directory
  std::string dataset;
  bool no_special_tokens = false;
  std::optional<int64_t> max_seq_length;
  bool json = false;
};

int run_tokenize(const TokenizeRequest& req, std::ostream& out);

}  // namespace ctcal
