#pragma once
// `ctcal calibrate --report FILE.html`: the page for one calibration run (report/calibrate_report.h),
// from the plan, the result and the ctcal_report.json document the checkpoint gets.
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "ctcal/pipeline/calibrate.h"
#include "ctcal/pipeline/plan.h"

namespace ctcal {

struct CalibrateReportPaths {
  std::string recipe, dataset, output;
};

// `report`: ctcal_report.json without `layers` (added here from the result). Throws InputError
// when the file cannot be written.
void write_calibrate_report(const std::filesystem::path& html, const CalibrationPlan& plan, const CalibrationResult& result,
                            const nlohmann::json& report, const CalibrateReportPaths& paths);

}  // namespace ctcal
