#pragma once
// `ctcal calibrate --report`: the plan (model, recipe scheme, data, samples, tokens), then each
// site's per-layer activation ranges against the chosen scales' representable range, and
// provenance. Rendered from the same document as ctcal_report.json, so the two never disagree.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "ctcal/quant/quant_args.h"
#include "ctcal/report/html_page.h"

namespace ctcal {

// What the report needs beyond ctcal_report.json.
struct CalibrateReportInputs {
  std::string recipe, dataset, output;  // paths as given
  QuantArgs kv;
  std::optional<QuantArgs> q;
  std::string transforms;  // in words, "" when none
};

// `report`: ctcal_report.json's content, `layers` included.
std::string render_calibrate_report(const nlohmann::json& report, const CalibrateReportInputs& in,
                                    const Provenance& provenance);

}  // namespace ctcal
