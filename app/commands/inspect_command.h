#pragma once
// `ctcal inspect`: prints what inspect/ finds in a checkpoint (inspect_checkpoint's document) and
// gives the exit code; `calibrate` ends with the same serving verdict.
#include <ostream>
#include <string>

#include <nlohmann/json.hpp>

namespace ctcal::app {

struct InspectRequest {
  std::string path;  // a checkpoint directory or its config.json
  bool json = false;  // the document as JSON (docs/inspect.schema.json) instead of the text report
  bool strict = false;  // exit 5 when a problem was found or the engine cannot load or serve it
  std::string engine = "vllm";  // whose rules --strict checks: vllm or vllm-r3
  bool color = false;  // ANSI colour in the text report (stdout is a terminal)
};

// Returns the exit code (0, or 5 under --strict); throws InputError when `path` is no checkpoint.
int run_inspect(const InspectRequest& req, std::ostream& out);

// The serving verdicts alone (mainline vLLM, and the R3 serving branch where it applies): `inspect`
// ends with them, and so does every `calibrate` run.
void print_serving_verdict(const nlohmann::json& doc, std::ostream& out, bool color);

// Human-readable report; ANSI colour only when `color`.
void print_inspect(const nlohmann::json& doc, std::ostream& out, bool color);

}  // namespace ctcal::app
