#include "ctcal/pipeline/existing_scales.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "ctcal/ct/tensor_names.h"

namespace ctcal {

using nlohmann::json;

namespace {

// Legacy spellings of an attention module's scales and the sites each stood for: compressed-tensors
// before kv_cache_scheme (k_proj/v_proj output activations), vLLM's old `kv_scale` (one scale for
// K and V), ModelOpt's `k_proj.k_scale` / `v_proj.v_scale`.
struct LegacySpelling {
  const char* suffix;
  std::vector<Site> sites;
  bool zero_point;
};
const std::vector<LegacySpelling>& legacy_spellings() {
  static const std::vector<LegacySpelling> all = {
      {"q_proj.output_scale", {Site::kQuery}, false},      {"k_proj.output_scale", {Site::kKey}, false},
      {"v_proj.output_scale", {Site::kValue}, false},      {"q_proj.output_zero_point", {Site::kQuery}, true},
      {"k_proj.output_zero_point", {Site::kKey}, true},    {"v_proj.output_zero_point", {Site::kValue}, true},
      {"kv_scale", {Site::kKey, Site::kValue}, false},     {"k_proj.k_scale", {Site::kKey}, false},
      {"v_proj.v_scale", {Site::kValue}, false},
  };
  return all;
}

// One attention scale or zero point of the input and the role it plays.
struct Found {
  std::string name;
  int64_t layer = 0;
  std::vector<Site> sites;
  bool zero_point = false;
  bool legacy = false;
};

// Canonical names before legacy ones, layer by layer.
std::vector<Found> find_all(const Checkpoint& in, const ModelConfig& model) {
  std::vector<Found> out;
  for (int64_t l = 0; l < model.num_hidden_layers; ++l) {
    const std::string module = model.attention_module(l);
    for (Site s : {Site::kQuery, Site::kKey, Site::kValue}) {
      if (in.has(ct::scale_name(module, site_name(s)))) out.push_back({ct::scale_name(module, site_name(s)), l, {s}, false, false});
      if (in.has(ct::zero_point_name(module, site_name(s)))) out.push_back({ct::zero_point_name(module, site_name(s)), l, {s}, true, false});
    }
    for (const auto& spelling : legacy_spellings()) {
      const std::string name = module + "." + spelling.suffix;
      if (in.has(name)) out.push_back({name, l, spelling.sites, spelling.zero_point, true});
    }
  }
  return out;
}

std::vector<float> blob_values(const TensorBlob& b) {
  std::vector<float> v(b.bytes.size() / dtype_size(b.dtype));
  convert_to_f32(b.bytes.data(), b.dtype, v.size(), v.data());
  return v;
}

double relative_change(double old_value, double new_value) {
  if (!(old_value > 0) || !std::isfinite(old_value) || !std::isfinite(new_value))
    return std::numeric_limits<double>::infinity();
  return std::fabs(new_value - old_value) / old_value;
}

// Elementwise when the shapes hold as many values, a single value broadcast against per-head
// ones (per tensor -> per head and back); otherwise (head counts differ) the largest of each.
void measure(ReplacedScale* r) {
  const auto& o = r->old_values;
  const auto& w = r->new_values;
  const std::size_t n = std::max(o.size(), w.size());
  if (o.size() == w.size() || o.size() == 1 || w.size() == 1) {
    for (std::size_t i = 0; i < n; ++i) {
      const double a = o[o.size() == 1 ? 0 : i], b = w[w.size() == 1 ? 0 : i];
      const double c = relative_change(a, b);
      if (i == 0 || c > r->max_relative_change) {
        r->max_relative_change = c;
        r->old_at = a;
        r->new_at = b;
        if (n > 1) r->head = static_cast<int64_t>(i);
      }
    }
  } else {
    r->old_at = *std::max_element(o.begin(), o.end());
    r->new_at = *std::max_element(w.begin(), w.end());
    r->max_relative_change = relative_change(r->old_at, r->new_at);
  }
}

std::string why_dropped(const Found& f, const CalibrationPlan& plan, const std::string& canonical) {
  if (std::find(plan.kv_skip_layers.begin(), plan.kv_skip_layers.end(), f.layer) != plan.kv_skip_layers.end())
    return fmt::format("layer {} stays unquantized (--kv-skip-layers) and gets no scales; vLLM would load the "
                       "stale one", f.layer);
  if (f.sites == std::vector<Site>{Site::kQuery} && !plan.query_args)
    return "the new recipe quantizes no queries (its attention group is not written either)";
  if (f.zero_point && !plan.write_zero_points)
    return "the new scheme writes no zero points (symmetric KV without attention quantization)";
  if (f.legacy && !canonical.empty())
    return fmt::format("a legacy name, which vLLM 0.34 does not remap for compressed-tensors checkpoints; {} "
                       "replaces it", canonical);
  return "the new plan writes no tensor in its place";
}

std::string some_names(const std::vector<std::string>& names) {
  constexpr std::size_t kShown = 8;
  if (names.size() <= kShown) return fmt::format("{}", fmt::join(names, ", "));
  return fmt::format("{} and {} more (ctcal_report.json lists them all)",
                     fmt::join(names.begin(), names.begin() + kShown, ", "), names.size() - kShown);
}

json finite_or_null(double x) { return std::isfinite(x) ? json(x) : json(nullptr); }

}  // namespace

std::set<std::string> attention_scales_in(const Checkpoint& in, const ModelConfig& model) {
  std::set<std::string> names;
  for (const auto& f : find_all(in, model)) names.insert(f.name);
  return names;
}

ExistingScales match_existing_scales(const Checkpoint& in, const CalibrationPlan& plan,
                                     const std::map<std::string, TensorBlob>& written) {
  ExistingScales e;
  std::set<std::string> claimed;  // new scales whose old value is taken
  for (const auto& f : find_all(in, plan.model)) {
    e.input_names.insert(f.name);
    if (f.legacy) e.legacy.push_back(f.name);
    const std::string module = plan.model.attention_module(f.layer);
    std::string canonical;  // a new tensor of the same role, when one is written
    bool replaced = false;
    for (Site s : f.sites) {
      const std::string n = f.zero_point ? ct::zero_point_name(module, site_name(s)) : ct::scale_name(module, site_name(s));
      if (!written.count(n)) continue;
      canonical = n;
      // The canonical name is the old value when the input has both; the first legacy name otherwise.
      if (f.zero_point || (f.legacy && in.has(n)) || claimed.count(n)) continue;
      claimed.insert(n);
      ReplacedScale r;
      r.name = n;
      r.old_name = f.name;
      r.old_values = in.read_f32(f.name);
      r.old_shape = in.info(f.name).shape;
      r.new_values = blob_values(written.at(n));
      r.new_shape = written.at(n).shape;
      measure(&r);
      e.replaced.push_back(std::move(r));
      replaced = true;
    }
    if (f.zero_point && !f.legacy && !canonical.empty()) {
      ++e.zero_points_replaced;
    } else if (!replaced) {
      e.dropped.push_back({f.name, why_dropped(f, plan, canonical)});
    }
  }
  return e;
}

const ReplacedScale* ExistingScales::largest() const {
  const ReplacedScale* best = nullptr;
  for (const auto& r : replaced)
    if (!best || r.max_relative_change > best->max_relative_change) best = &r;
  return best;
}

json replaced_scales_json(const ExistingScales& e) {
  json list = json::array();
  for (const auto& r : e.replaced) {
    json j = {{"name", r.name},
              {"old", std::vector<double>(r.old_values.begin(), r.old_values.end())},
              {"new", std::vector<double>(r.new_values.begin(), r.new_values.end())},
              {"old_shape", r.old_shape},
              {"new_shape", r.new_shape},
              {"max_relative_change", finite_or_null(r.max_relative_change)},
              {"head", r.head ? json(*r.head) : json(nullptr)}};
    if (r.old_name != r.name) j["old_name"] = r.old_name;
    list.push_back(j);
  }
  return list;
}

json dropped_scales_json(const ExistingScales& e) {
  json list = json::array();
  for (const auto& d : e.dropped) list.push_back({{"name", d.name}, {"reason", d.reason}});
  return list;
}

void log_existing_scales(const ExistingScales& e) {
  if (const ReplacedScale* r = e.largest())
    spdlog::info("replaced {} attention scale{} of the input{}; largest change {}{}: {:.6g} -> {:.6g} ({:+.1f} %{})",
                 e.replaced.size(), e.replaced.size() == 1 ? "" : "s",
                 e.zero_points_replaced > 0 ? fmt::format(" (and {} zero points)", e.zero_points_replaced) : "",
                 r->name, r->head ? fmt::format(" head {}", *r->head) : "", r->old_at, r->new_at,
                 100.0 * (r->new_at - r->old_at) / r->old_at,
                 r->old_name != r->name ? fmt::format("; the input's {}", r->old_name) : "");
  // Grouped by reason: one line for the layers --kv-skip-layers left out, one for queries, ...
  std::vector<std::pair<std::string, std::vector<std::string>>> by_reason;
  for (const auto& d : e.dropped) {
    auto it = std::find_if(by_reason.begin(), by_reason.end(), [&](const auto& p) { return p.first == d.reason; });
    if (it == by_reason.end()) it = by_reason.insert(by_reason.end(), {d.reason, {}});
    it->second.push_back(d.name);
  }
  for (const auto& [reason, names] : by_reason)
    spdlog::warn("dropped the input's {}: {}", some_names(names), reason);
  if (!e.legacy.empty())
    spdlog::warn("not written: the input's legacy scale names {}; vLLM 0.34 does not remap k_proj.output_scale for "
                 "compressed-tensors checkpoints (loading fails) nor copy kv_scale into v_scale; the canonical "
                 "self_attn.k_scale / v_scale (q_scale) replace them", some_names(e.legacy));
}

}  // namespace ctcal
