// Which names beside an output are a staging directory of an earlier run (io/stale_staging.h):
// exactly `.<output>.ctcal-tmp-<digits>` with a PID a process can have, nothing that looks alike;
// and which processes count as alive (any that exists, also another user's).
#include <unistd.h>

#include <gtest/gtest.h>

#include "ctcal/io/stale_staging.h"

namespace ctcal {
namespace {

TEST(StaleStaging, ParsesOnlyThisOutputsNames) {
  EXPECT_EQ(staging_dir_pid(".out.ctcal-tmp-1234", "out"), 1234);
  EXPECT_EQ(staging_dir_pid(".my.model.ctcal-tmp-7", "my.model"), 7);
  EXPECT_EQ(staging_dir_pid(".out.ctcal-tmp-1234", "out2"), std::nullopt);     // another output
  EXPECT_EQ(staging_dir_pid(".out2.ctcal-tmp-1234", "out"), std::nullopt);
  EXPECT_EQ(staging_dir_pid("out.ctcal-tmp-1234", "out"), std::nullopt);       // no leading dot
  EXPECT_EQ(staging_dir_pid(".out.ctcal-old-1234", "out"), std::nullopt);      // commit's, not staging
  EXPECT_EQ(staging_dir_pid(".out.ctcal-tmp-", "out"), std::nullopt);          // no PID
  EXPECT_EQ(staging_dir_pid(".out.ctcal-tmp-12x", "out"), std::nullopt);       // not all digits
  EXPECT_EQ(staging_dir_pid(".out.ctcal-tmp--12", "out"), std::nullopt);
  EXPECT_EQ(staging_dir_pid(".out.ctcal-tmp-+12", "out"), std::nullopt);
  EXPECT_EQ(staging_dir_pid(".out.ctcal-tmp-0", "out"), std::nullopt);        // kill(0, 0) is our group
  EXPECT_EQ(staging_dir_pid(".out.ctcal-tmp-99999999999999999999", "out"), std::nullopt);  // no pid_t
}

TEST(StaleStaging, LiveProcessesAreAlive) {
  EXPECT_TRUE(process_alive(::getpid()));
  EXPECT_TRUE(process_alive(1));  // init: kill() may say EPERM, which still means it exists
}

}  // namespace
}  // namespace ctcal
