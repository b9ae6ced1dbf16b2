#pragma once
// Did the calibrated scales beat scale 1.0 (vLLM's default without scales)? eval and
// calibrate --report answer from the two runs' per-sample KL on the same samples, with a paired
// bootstrap (eval/paired_bootstrap.h): a winner is named only when the 95 % interval of
// KL(calibrated) - KL(scale 1.0) leaves zero out. FP8's relative step is the same across its
// normal range, so two scales a few percent apart often differ by rounding luck alone.
#include <nlohmann/json.hpp>

namespace ctcal {

// `calibrated`, `unit`: two entries of evaluate_runs' `quantized` list (their `kl` and
// `sample_kl`); `sample_tokens`: the document's tokens per sample. Returns
//   {kl_diff: calibrated - unit, kl_diff_ci95: [lo, hi] (null below two samples),
//    significant: the interval leaves 0 out,
//    wins: "calibrated" | "unit_scales" | "no_significant_difference",
//    kl_diff_bootstrap: {method, resamples, seed, level, samples}}.
// Throws InputError naming the field when a run lacks per-sample KL or the lengths differ.
nlohmann::json compare_with_unit_scales(const nlohmann::json& calibrated, const nlohmann::json& unit,
                                        const nlohmann::json& sample_tokens);

// calibrate --report's evidence (ctcal_report.json `unit_scales_baseline`), from evaluate_runs
// over [calibrated, unit scales] on some calibration samples: both runs' KL and NLL, the
// comparison above, and per layer the clamped fractions eval counted for both runs
// ({layer, k_clipped_fraction, v_clipped_fraction, unit_k_clipped_fraction, ...}, q_ with Q).
nlohmann::json unit_scales_evidence(const nlohmann::json& doc);

}  // namespace ctcal
