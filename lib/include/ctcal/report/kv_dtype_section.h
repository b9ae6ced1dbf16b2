#pragma once
// eval --kv-cache-dtype nvfp4 on the HTML page: each run's KV cache in each format vLLM 0.34 can
// serve it in (`kv_cache_dtypes` of eval's document: fp8, then NVFP4 under each rule for the
// decode multiplier s), with the costs the terminal table prints, the KL difference to fp8 and
// its paired-bootstrap interval, the blocks whose E4M3 scale saturated or flushed to zero, and the
// searched rule's comparison with the better fixed one (and R3's, shown as evidence only).
#include <string>

#include <nlohmann/json.hpp>

namespace ctcal {

// `run`: one entry of the document's `quantized` list; `label`: its name on the page. "" when the
// run has no `kv_cache_dtypes`. A table of class "kv-dtypes", one row (data-format="<name>") per
// format.
std::string kv_dtype_section(const nlohmann::json& run, const std::string& label);

}  // namespace ctcal
