#pragma once
// ctcal's record that a checkpoint's k_scale / v_scale are vLLM's NVFP4 decode multipliers `s`
// (issue 31 item 4), not FP8 scales amax/448. `calibrate --kv-cache-dtype nvfp4` writes the
// searched s as the k/v scales, still under an FP8 per-tensor kv_cache_scheme (what vLLM 0.34
// loads: compressed-tensors' validate_kv_cache_scheme refuses a 4-bit KV scheme, and vLLM copies
// the scales unchanged into layer._k_scale / _v_scale, kv_cache.py process_weights_after_loading),
// and says so in ONE place: the "nvfp4_kv" object of the checkpoint's ctcal_report.json. inspect
// reads it for the serve line (--kv-cache-dtype nvfp4) and the FP8 warning, eval for the amax
// behind each s.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ctcal {

inline constexpr const char* kNvfp4RecordKey = "nvfp4_kv";  // in ctcal_report.json

struct Nvfp4SiteRecord {
  double s = 0;     // the decode multiplier as the scale tensor stores it (in the model's dtype)
  double amax = 0;  // the per-tensor amax it was chosen for (the FP8 calibration's scale x 448)
};

struct Nvfp4LayerRecord {
  int64_t layer = 0;
  std::optional<Nvfp4SiteRecord> k, v;  // absent: no KV cache here, or a layer left unquantized
};

struct Nvfp4KvRecord {
  std::string rule;                      // how s was chosen: "searched" (eval/nvfp4_scale_search.h)
  std::vector<Nvfp4LayerRecord> layers;  // one per layer with scales written
  nlohmann::json search;                 // the search's evidence, as eval reports it
};

nlohmann::json nvfp4_record_to_json(const Nvfp4KvRecord& r);
// Throws InputError naming `where` when the object is not a record this version writes.
Nvfp4KvRecord nvfp4_record_from_json(const nlohmann::json& j, const std::string& where);
// The record in `dir`/ctcal_report.json; nullopt when there is no such file or no record in it
// (FP8 checkpoints, llm-compressor's). Throws InputError for a malformed one.
std::optional<Nvfp4KvRecord> read_nvfp4_record(const std::filesystem::path& dir);

// What the scales cost if served as FP8 instead (no --kv-cache-dtype nvfp4: vLLM turns `auto`
// into fp8): FP8 represents |x| up to 448 s, so a site whose s is below amax/448 clips its
// largest values. One entry per such (layer, site), in layer order.
struct Fp8Clip {
  int64_t layer = 0;
  char site = 'k';
  double s = 0, amax = 0;
  double kept() const { return 448.0 * s / amax; }  // the fraction of [0, amax] FP8 represents
};
std::vector<Fp8Clip> fp8_clipping(const Nvfp4KvRecord& r);
int64_t nvfp4_record_sites(const Nvfp4KvRecord& r);  // (layer, site) pairs recorded

}  // namespace ctcal
