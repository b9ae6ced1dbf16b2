#include "ctcal/data/dataset.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "ctcal/data/sampling.h"
#include "ctcal/error.h"
#include "ctcal/util/ranks.h"

namespace ctcal {

namespace fs = std::filesystem;
using nlohmann::json;

int64_t CalibrationSamples::tokens() const {
  int64_t n = 0;
  for (const auto& s : samples) n += static_cast<int64_t>(s.size());
  return n;
}

namespace {

DatasetRow row_from_json(const fs::path& path, const json& j, int64_t line, const char* unit) {
  auto fail = [&](const std::string& what) {
    return InputError(fmt::format("{}: {} {}: {}", path.string(), unit, line, what));
  };
  DatasetRow row;
  row.line = line;
  if (j.is_string()) {
    row.text = j.get<std::string>();
    return row;
  }
  if (!j.is_object()) throw fail("expected a JSON object with \"input_ids\" or \"text\"");
  if (j.contains("input_ids")) {
    const json& ids = j["input_ids"];
    if (!ids.is_array()) throw fail("field 'input_ids' must be a list of integers");
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (!ids[i].is_number_integer())
        throw fail(fmt::format("field 'input_ids'[{}] = {} is not an integer", i, ids[i].dump()));
      row.ids.push_back(ids[i].get<int64_t>());
    }
    row.has_ids = true;
    return row;
  }
  if (j.contains("text")) {
    if (!j["text"].is_string()) throw fail("field 'text' must be a string");
    row.text = j["text"].get<std::string>();
    return row;
  }
  if (j.contains("messages"))
    throw fail("rows with 'messages' need a chat template, which ctcal does not apply; render "
               "each conversation to a 'text' field first (e.g. with "
               "tokenizer.apply_chat_template(messages, tokenize=False)) and pass that file");
  throw fail("row has neither 'input_ids' nor 'text'");
}

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: cannot open dataset", path.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::vector<DatasetRow> read_dataset_rows(const fs::path& path) {
  if (!fs::is_regular_file(path))
    throw InputError(fmt::format("{}: dataset file does not exist", path.string()));
  return parse_dataset_rows(read_all(path), path.extension().string(), path);
}

std::vector<DatasetRow> parse_dataset_rows(const std::string& text, const std::string& ext, const fs::path& path) {
  std::vector<DatasetRow> rows;
  if (ext == ".jsonl") {
    std::istringstream in(text);
    std::string line;
    int64_t n = 0;
    while (std::getline(in, line)) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json j = json::parse(line, nullptr, false);
      if (j.is_discarded())
        throw InputError(fmt::format("{}: line {}: not valid JSON", path.string(), n));
      rows.push_back(row_from_json(path, j, n, "line"));
    }
  } else if (ext == ".json") {
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) throw InputError(fmt::format("{}: not valid JSON", path.string()));
    if (!j.is_array()) throw InputError(fmt::format("{}: expected a JSON array of rows", path.string()));
    for (std::size_t i = 0; i < j.size(); ++i)
      rows.push_back(row_from_json(path, j[i], static_cast<int64_t>(i + 1), "row"));
  } else if (ext == ".txt") {
    // Documents separated by one or more blank lines.
    std::istringstream in(text);
    std::string line, doc;
    int64_t n = 0, start = 0;
    auto flush = [&] {
      if (!doc.empty()) rows.push_back(DatasetRow{start, false, {}, doc});
      doc.clear();
    };
    while (std::getline(in, line)) {
      ++n;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      // A blank line, or the literal `<|endoftext|>` line TinyStories / GPT-2 dumps use.
      if (line.find_first_not_of(" \t") == std::string::npos || line == "<|endoftext|>") {
        flush();
        continue;
      }
      if (doc.empty()) start = n;
      else doc += '\n';
      doc += line;
    }
    flush();
  } else {
    throw InputError(fmt::format("{}: unknown dataset extension '{}'; expected .jsonl, .json or .txt",
                                 path.string(), ext));
  }
  if (rows.empty()) throw InputError(fmt::format("{}: the dataset has no rows", path.string()));
  return rows;
}

CalibrationSamples make_calibration_samples(const fs::path& path, const std::vector<DatasetRow>& rows,
                                            const Tokenizer* tokenizer, const SamplingOptions& o) {
  CalibrationSamples out;
  out.rows = static_cast<int64_t>(rows.size());
  const auto order = select_samples(rows.size(), rows.size(), o.shuffle, o.seed);
  int64_t max_len = o.max_seq_length;
  if (o.max_position_embeddings > 0 && max_len > o.max_position_embeddings) {
    // Every MPI rank reads the same dataset: rank 0 says it once.
    if (Ranks::root())
      spdlog::warn("max_seq_length {} is longer than the model's max_position_embeddings {}; samples "
                   "are truncated to {}", max_len, o.max_position_embeddings, o.max_position_embeddings);
    max_len = o.max_position_embeddings;
  }
  for (std::size_t i : order) {
    if (static_cast<int64_t>(out.samples.size()) >= o.num_samples) break;
    const DatasetRow& row = rows[i];
    std::vector<int32_t> ids;
    if (row.has_ids) {
      for (std::size_t k = 0; k < row.ids.size(); ++k) {
        const int64_t id = row.ids[k];
        if (id < 0 || id >= o.vocab_size)
          throw InputError(fmt::format("{}: line {}: input_ids[{}] = {} is outside the model's "
                                       "vocabulary [0, {})", path.string(), row.line, k, id,
                                       o.vocab_size));
        ids.push_back(static_cast<int32_t>(id));
      }
    } else {
      if (!tokenizer)
        throw InputError(fmt::format("{}: line {}: row has only 'text' and no tokenizer was found "
                                     "(tokenizer.json or tokenizer.model in the model directory); "
                                     "pass --tokenizer, or give input_ids", path.string(), row.line));
      ids = tokenizer->encode(row.text, o.add_special_tokens);
      for (int32_t id : ids)
        if (id < 0 || id >= o.vocab_size)
          throw InputError(fmt::format("{}: line {}: the tokenizer produced id {} outside the "
                                       "model's vocabulary [0, {}); is it the model's tokenizer?",
                                       path.string(), row.line, id, o.vocab_size));
    }
    if (ids.empty()) {
      ++out.skipped_empty;
      continue;
    }
    if (static_cast<int64_t>(ids.size()) > max_len) {
      ids.resize(static_cast<std::size_t>(max_len));
      ++out.truncated;
    }
    out.samples.push_back(std::move(ids));
    out.source_lines.push_back(row.line);
  }
  if (out.samples.empty())
    throw InputError(fmt::format("{}: no usable sample ({} rows, {} empty)", path.string(), out.rows,
                                 out.skipped_empty));
  return out;
}

}  // namespace ctcal
