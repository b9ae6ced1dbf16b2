#pragma once
// `ctcal eval`: runs eval/'s evaluate() and prints its document (a table, or JSON), and writes
// the HTML page (report/eval_report.h) with --report.
#include <optional>
#include <ostream>
#include <string>

#include "ctcal/eval/evaluate.h"

namespace ctcal::app {

// Where the metrics go besides the terminal table.
struct EvalOutput {
  bool json = false;                  // --json: the document on stdout instead of the table
  std::optional<std::string> report;  // --report: the HTML page
};

int run_eval(const EvalRequest& req, const EvalOutput& output, std::ostream& out);

}  // namespace ctcal::app
