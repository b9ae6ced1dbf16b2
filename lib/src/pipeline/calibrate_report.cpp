#include "ctcal/pipeline/calibrate_report.h"

#include <spdlog/spdlog.h>

#include "ctcal/pipeline/write_checkpoint.h"
#include "ctcal/report/calibrate_report.h"
#include "ctcal/report/scheme_words.h"
#include "ctcal/version.h"

namespace ctcal {

using nlohmann::json;

void write_calibrate_report(const std::filesystem::path& html, const CalibrationPlan& plan, const CalibrationResult& result,
                            const json& report, const CalibrateReportPaths& paths) {
  json doc = report;
  doc["layers"] = layers_report_json(plan, result);  // what ctcal_report.json gets, so both agree
  const CalibrateReportInputs in{paths.recipe, paths.dataset, paths.output, plan.kv_args, plan.query_args,
                                 transforms_phrase(transform_config_json(plan))};
  Provenance p{kVersion, doc.contains("seed") ? doc["seed"].dump() : "?", utc_now(), {}};
  if (doc.value("recipe_sha256", json()).is_string()) p.inputs.push_back({"recipe " + paths.recipe, doc["recipe_sha256"]});
  if (doc.value("dataset_sha256", json()).is_string()) p.inputs.push_back({"dataset " + paths.dataset, doc["dataset_sha256"]});
  write_report_file(html, render_calibrate_report(doc, in, p));
  spdlog::info("wrote {}", html.string());
}

}  // namespace ctcal
