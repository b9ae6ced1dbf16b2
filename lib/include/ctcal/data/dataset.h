#pragma once
// Calibration datasets (SPEC §4): .jsonl rows with `input_ids` or `text` (input_ids wins),
// .txt documents are separated by blank lines or by a line `<|endoftext|>` (TinyStories),
// .json arrays of the same, .txt documents separated by blank lines.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "ctcal/data/tokenizer.h"
#include "ctcal/run_defaults.h"

namespace ctcal {

struct DatasetRow {
  int64_t line = 0;  // 1-based line (jsonl, txt) or array index + 1 (json)
  bool has_ids = false;
  std::vector<int64_t> ids;
  std::string text;
};

// Reads every row. Throws InputError naming the file, line and field.
std::vector<DatasetRow> read_dataset_rows(const std::filesystem::path& path);
// The same from file contents; `ext` is ".jsonl", ".json" or ".txt" (fuzzing, tests).
std::vector<DatasetRow> parse_dataset_rows(const std::string& text, const std::string& ext,
                                           const std::filesystem::path& where);

struct SamplingOptions {
  int64_t num_samples = kDefaultNumSamples;
  int64_t max_seq_length = kDefaultMaxSeqLength;
  bool shuffle = kDefaultShuffle;
  uint64_t seed = kDefaultSeed;
  int64_t vocab_size = 0;               // ids must be < vocab_size
  int64_t max_position_embeddings = 0;  // longer samples are truncated to it, with a warning
  bool add_special_tokens = true;
};

struct CalibrationSamples {
  std::vector<std::vector<int32_t>> samples;  // each [seq] token ids
  std::vector<int64_t> source_lines;          // row each sample came from
  int64_t rows = 0;            // rows in the file
  int64_t skipped_empty = 0;   // selected rows that tokenized to nothing
  int64_t truncated = 0;       // samples cut to max_seq_length
  int64_t tokens() const;
};

// Shuffles the rows (when asked), then walks them in that order, tokenizing text rows with
// `tokenizer` (may be null when every row has input_ids), skipping empty ones, until
// num_samples samples are collected.
CalibrationSamples make_calibration_samples(const std::filesystem::path& path,
                                            const std::vector<DatasetRow>& rows,
                                            const Tokenizer* tokenizer,
                                            const SamplingOptions& options);

}  // namespace ctcal
