#pragma once
// SHA-256 of files and strings, for provenance in ctcal_report.json.
#include <filesystem>
#include <string>

namespace ctcal {

std::string sha256_hex(const std::string& data);
std::string sha256_file_hex(const std::filesystem::path& path);

}  // namespace ctcal
