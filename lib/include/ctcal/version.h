#pragma once
namespace ctcal {
// Set by CMake from project(VERSION).
inline constexpr const char* kVersion = CTCAL_VERSION_STRING;
// The compressed-tensors format version ctcal writes (SPEC §6).
inline constexpr const char* kCompressedTensorsVersion = "0.18.0";
}  // namespace ctcal
