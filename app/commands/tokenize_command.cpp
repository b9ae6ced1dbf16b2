#include "commands/tokenize_command.h"

#include <nlohmann/json.hpp>

#include "ctcal/data/dataset.h"
#include "ctcal/data/tokenizer.h"
#include "ctcal/error.h"

namespace ctcal::app {

int run_tokenize(const TokenizeRequest& req, std::ostream& out) {
  auto tok = load_tokenizer(req.tokenizer);
  if (!tok) throw InputError(fmt::format("{}: no tokenizer.json or tokenizer.model found", req.tokenizer));
  for (const DatasetRow& row : read_dataset_rows(req.dataset)) {
    std::vector<int64_t> ids;
    if (row.has_ids) ids = row.ids;
    else for (int32_t id : tok->encode(row.text, !req.no_special_tokens)) ids.push_back(id);
    if (req.max_seq_length && static_cast<int64_t>(ids.size()) > *req.max_seq_length)
      ids.resize(static_cast<std::size_t>(*req.max_seq_length));
    if (req.json) {
      out << nlohmann::json({{"input_ids", ids}}).dump() << "\n";
      continue;
    }
    // Readable: line number, token count, then piece|id pairs.
    std::string line = fmt::format("{}: {} tokens:", row.line, ids.size());
    for (int64_t id : ids) line += fmt::format(" {}|{}", nlohmann::json(tok->piece(static_cast<int32_t>(id))).dump(), id);
    out << line << "\n";
  }
  return 0;
}

}  // namespace ctcal::app
