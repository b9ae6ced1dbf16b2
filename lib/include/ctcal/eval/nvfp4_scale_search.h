#pragma once
// The NVFP4 decode multipliers that cost attention least (issue 31 item 3): per layer, one s for
// K and one for V, chosen among candidates around the two fixed conventions by what attention
// computes from the quantized cache on calibration samples:
//   K: the squared error of the attention scores, sum over causal (query, key) pairs of
//      (scale * q_t . (k_hat_j - k_j))^2 (every query head against its KV head, window included);
//   V: the squared error of the attention output, sum_t |P_t (v_hat - v)|^2 with P the layer's
//      unquantized causal attention (attention is linear in V, so this is attention(q, k, v_hat)
//      - attention(q, k, v) exactly).
// Candidates: s = amax/448 * 6^(-i/8), i = -4..12, so amax/448 (i = 0) and amax/2688 (i = 8) are
// among them and the grid reaches a factor sqrt(6) beyond each. The choice: per site, a default
// for the whole model, amax/448 or amax/2688 by the geometric mean of the layers' error ratios;
// a layer takes its candidate of least error instead only if a paired bootstrap over the
// calibration samples finds it better than the default beyond noise (the 95 % interval of the
// difference below 0). The errors vary by a few percent over most of the range: an unguarded
// argmin, and then each layer's own better fixed rule, chose noise (worse on held-out KL than
// amax/2688 beyond eval's interval on the golden qwen3_sliding_bias_fp32). Q, K and V come from one forward
// pass with the run's weights and rotation and nothing else quantized (the errors are each
// layer's own, on unquantized inputs). Attention sinks (gpt-oss) are left out of P.
// The per-layer errors are still only a proxy for KL (alone, worse than amax/448 on held-out KL
// beyond eval's interval on golden gqa_bf16_classic), so a model-level guard ends the search: the
// set of least KL on the same calibration samples among the searched one and the two fixed rules.
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctcal/eval/eval_run.h"
#include "ctcal/model/attention.h"
#include "ctcal/model/decoder.h"

namespace ctcal {

struct Nvfp4Search {
  Nvfp4Kv kv;               // rule "searched": the chosen s per layer and site
  // {objective, candidates, samples, tokens, layers: [{layer, k: {s_over_amax, error, chosen}, v: ...}],
  //  chosen_from: "searched" | "amax/448" | "amax/2688", calibration_kl: {set: KL}, guard}
  nlohmann::json evidence;
};

// amax: [layers] {Site::kKey: amax, Site::kValue: amax} (the run's FP8 scales x 448); layers
// without entries get none. samples: the calibration token ids (the caller bounds how many).
// After the per-layer choice, a model-level guard: the KL of `run` with that set, with amax/448
// and with amax/2688 in every layer, against `base` (the unquantized model) on `samples` (eval's
// evaluate_runs; 3 forward passes at most, plus the baseline); the set of least KL is the result
// (ties: the searched one), named in evidence.chosen_from with evidence.calibration_kl.
Nvfp4Search search_nvfp4_scales(const Checkpoint& base, const EvalRun& run,
                                const std::vector<std::map<Site, double>>& amax,
                                const std::vector<std::vector<int32_t>>& samples, const ForwardOptions& forward);

// Per layer and site, the per-tensor amax the NVFP4 rules start from: for a checkpoint whose
// scales are already NVFP4 decode multipliers (EvalRun::nvfp4_amax, from ctcal's record) the
// recorded amax, otherwise what symmetric FP8 scales stand for, scale x 448 (the max over heads
// for per-head scales). Throws UsageError naming the run unless its KV scheme is symmetric FP8.
std::vector<std::map<Site, double>> nvfp4_amax_of_run(const EvalRun& run);
// Throws UsageError naming `name` unless `a` is symmetric FP8 (the scales the amax comes from).
void check_nvfp4_source(const QuantArgs& a, const std::string& name);

// max |K| and max |V| per layer as `run`'s forward shows them to the KV cache (after its R3
// rotation, if any) over `samples`, with its weights: what static_minmax would observe. [layers]
// {Site::kKey: amax, Site::kValue: amax}; layers without a KV cache get none.
std::vector<std::map<Site, double>> observe_kv_amax(const EvalRun& run, const std::vector<std::vector<int32_t>>& samples,
                                                    const ForwardOptions& forward);

// The candidate multipliers for one amax, in the order the evidence lists them.
std::vector<double> nvfp4_search_candidates(double amax);

// One sample's errors for each candidate pair (s_k[i], s_v[i]): (K score errors, V output errors),
// as defined above. q [seq, heads * head_dim], k and v [seq, kv_heads * head_dim]; head_dim a
// multiple of 16. shape: the layer's heads, window and score scale (sinks ignored).
std::pair<std::vector<double>, std::vector<double>> nvfp4_attention_errors(const AttentionShape& shape, const RowMatrix& q,
                                                                           const RowMatrix& k, const RowMatrix& v,
                                                                           const std::vector<double>& s_k,
                                                                           const std::vector<double>& s_v);

}  // namespace ctcal
