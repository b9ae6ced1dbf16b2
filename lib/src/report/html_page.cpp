#include "ctcal/report/html_page.h"

#include <ctime>
#include <fstream>

#include <fmt/format.h>

#include "ctcal/error.h"

namespace ctcal {

std::string html_escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '&') o += "&amp;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

std::string page_begin(const std::string& title) {
  // Wide enough for two 600 px charts side by side at 1280 px; tables scroll rather than squeeze.
  return "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + html_escape(title) +
         "</title><style>"
         "body{font-family:system-ui,sans-serif;margin:16px 20px;color:#222;max-width:1240px}"
         "h1{margin:0 0 4px}h2{margin:28px 0 6px;border-bottom:1px solid #ddd}h3{margin:16px 0 4px}"
         "p.note{color:#555;max-width:1000px;margin:4px 0}"
         "table{border-collapse:collapse;margin:8px 0;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}"
         "th{background:#f3f3f3}td.l,th.l{text-align:left}"
         "dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:8px 0;font-size:14px}"
         "dl.facts dt{font-weight:600}dl.facts dd{margin:0}"
         "dl.defs{display:grid;grid-template-columns:max-content minmax(0,1000px);gap:5px 16px;font-size:14px}"
         "dl.defs dt{font-weight:600}dl.defs dd{margin:0}"
         ".charts{display:flex;flex-wrap:wrap;gap:10px}svg.chart{border:1px solid #eee}"
         "footer{margin-top:32px;border-top:1px solid #ccc;padding-top:8px;color:#555;font-size:12px}"
         "footer dl{display:grid;grid-template-columns:max-content auto;gap:1px 12px;margin:0}footer dd{margin:0}"
         "code{font-size:12px}"
         "</style></head><body><h1>" +
         html_escape(title) + "</h1>";
}

std::string facts_list(const std::vector<std::pair<std::string, std::string>>& facts) {
  std::string h = "<dl class=\"facts\">";
  for (const auto& [k, v] : facts) h += "<dt>" + html_escape(k) + "</dt><dd>" + html_escape(v) + "</dd>";
  return h + "</dl>";
}

std::string page_end(const Provenance& p) {
  std::string h = "<footer class=\"provenance\"><dl>";
  h += "<dt>ctcal version</dt><dd data-key=\"version\">" + html_escape(p.version) + "</dd>";
  h += "<dt>seed</dt><dd data-key=\"seed\">" + html_escape(p.seed) + "</dd>";
  h += "<dt>written</dt><dd data-key=\"date\">" + html_escape(p.date_utc) + "</dd>";
  for (const auto& [what, sha] : p.inputs)
    h += "<dt>sha256 " + html_escape(what) + "</dt><dd data-key=\"sha256\"><code>" + html_escape(sha) + "</code></dd>";
  h += "</dl><p>Self-contained: inline SVG, no scripts, no network.</p></footer></body></html>\n";
  return h;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

void write_report_file(const std::filesystem::path& path, const std::string& html) {
  const auto tmp = std::filesystem::path(path.string() + ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << html;
    if (!out) throw InputError(fmt::format("{}: cannot write the report", path.string()));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw InputError(fmt::format("{}: cannot write the report: {}", path.string(), ec.message()));
}

}  // namespace ctcal
