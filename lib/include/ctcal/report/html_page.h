#pragma once
// The frame every ctcal HTML report shares: escaping, the page head and style, the provenance
// footer, and the atomic write. Pages are self-contained: inline CSS and SVG, no scripts, no
// network, so a report opens the same from a CI artifact years later.
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace ctcal {

std::string html_escape(const std::string& s);

// <!DOCTYPE html> up to and including <body> and the <h1>.
std::string page_begin(const std::string& title);

// What produced the page. `inputs`: (what, sha256) pairs, e.g. ("recipe r3_fp8_kv.yaml", "ab12…").
struct Provenance {
  std::string version;     // ctcal's
  std::string seed;        // the sampling seed(s)
  std::string date_utc;    // when the page was written
  std::vector<std::pair<std::string, std::string>> inputs;
};

// The footer (class "provenance", one <dd data-key=…> per fact) and </body></html>.
std::string page_end(const Provenance& p);

// "2026-12-02 04:31:07 UTC".
std::string utc_now();

// A small two-column definition list (class "facts") of (term, value) pairs; values are escaped.
std::string facts_list(const std::vector<std::pair<std::string, std::string>>& facts);

// Writes atomically (temporary file + rename). Throws InputError on I/O failure.
void write_report_file(const std::filesystem::path& path, const std::string& html);

}  // namespace ctcal
