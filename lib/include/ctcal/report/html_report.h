#pragma once
// One self-contained HTML file (inline SVG, no scripts, no network): per-layer scale plots (one
// dot per head), per-layer K/V SQNR for each run, and the metrics table. Written by
// `ctcal eval --report` and `ctcal calibrate --report`.
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace ctcal {

// doc: {"title", "subtitle", "baseline": {nll, ppl, tokens} (optional),
//       "runs": [{"name", "nll"?, "delta_nll"?, "ppl"?, "kl"?, "top1"?,
//                 "layers": [{"layer", "k_scale": [...], "v_scale": [...], "q_scale"?: [...],
//                             "k_sqnr_db"?, "v_sqnr_db"?}]}]}
std::string render_html_report(const nlohmann::json& doc);

// Writes atomically (temporary file + rename). Throws InputError on I/O failure.
void write_html_report(const std::filesystem::path& path, const nlohmann::json& doc);

}  // namespace ctcal
