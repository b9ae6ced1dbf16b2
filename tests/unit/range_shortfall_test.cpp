// largest_range_shortfall: which (layer, site, head) a memoryless observer leaves furthest short
// of the range over all tokens (the warning `calibrate` prints).
#include <gtest/gtest.h>

#include "ctcal/pipeline/range_shortfall.h"

namespace ctcal {
namespace {

SiteResult site(Site s, std::vector<double> obs_min, std::vector<double> obs_max, std::vector<double> head_min,
                std::vector<double> head_max) {
  SiteResult r;
  r.site = s;
  r.obs_min = std::move(obs_min);
  r.obs_max = std::move(obs_max);
  r.head_min = std::move(head_min);
  r.head_max = std::move(head_max);
  return r;
}

TEST(RangeShortfall, NoneWhenObserversCoverTheFullRange) {
  CalibrationResult r;
  r.layers.push_back({0, {site(Site::kKey, {-2}, {1}, {-2, -1}, {1, 0.5})}, {}});
  EXPECT_FALSE(largest_range_shortfall(r).has_value());
}

TEST(RangeShortfall, PerTensorComparesWithTheAbsmaxOverAllHeads) {
  CalibrationResult r;
  // Layer 0 keeps 1.5 of 2.0 (25 % short); layer 1 keeps 3 of 3.3 (about 9 % short).
  r.layers.push_back({0, {site(Site::kKey, {-1}, {1.5}, {-1, -0.5}, {1.5, 2.0})}, {}});
  r.layers.push_back({1, {site(Site::kValue, {-3}, {1}, {-3.3, -1}, {1, 1})}, {}});
  const auto w = largest_range_shortfall(r);
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->layer, 0);
  EXPECT_EQ(w->site, Site::kKey);
  EXPECT_DOUBLE_EQ(w->observed_absmax, 1.5);
  EXPECT_DOUBLE_EQ(w->full_absmax, 2.0);
  EXPECT_DOUBLE_EQ(w->fraction(), 0.25);
}

TEST(RangeShortfall, PerHeadComparesEachHeadWithItself) {
  CalibrationResult r;
  // Head 1 keeps 0.5 of its own 1.0; head 0 covers its range exactly.
  r.layers.push_back({3, {site(Site::kKey, {-4, -0.5}, {4, 0.5}, {-4, -1}, {4, 1})}, {}});
  const auto w = largest_range_shortfall(r);
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->layer, 3);
  EXPECT_EQ(w->head, 1);
  EXPECT_DOUBLE_EQ(w->fraction(), 0.5);
}

}  // namespace
}  // namespace ctcal
