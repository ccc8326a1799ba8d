// fleetctl's `config diff`: a unified diff like `diff -u`.
#include <gtest/gtest.h>

#include "cli/cli.h"

namespace pgfleet::cli {
namespace {

TEST(UnifiedDiffTest, ChangedLineShowsRemovalThenAddition) {
  const std::string a = "[pgbouncer]\npool_mode = transaction\ndefault_pool_size = 12\nmax_client_conn = 1000\n";
  const std::string b = "[pgbouncer]\npool_mode = transaction\ndefault_pool_size = 8\nmax_client_conn = 1000\n";
  EXPECT_EQ(UnifiedDiff(a, b, "v1", "v2"),
            "--- v1\n+++ v2\n@@ -1,5 +1,5 @@\n [pgbouncer]\n pool_mode = transaction\n"
            "-default_pool_size = 12\n+default_pool_size = 8\n max_client_conn = 1000\n \n");
}

TEST(UnifiedDiffTest, IdenticalTextsHaveNoHunks) {
  EXPECT_EQ(UnifiedDiff("x\ny\n", "x\ny\n", "a", "b"), "--- a\n+++ b\n");
}

TEST(UnifiedDiffTest, FarApartChangesMakeSeparateHunks) {
  std::string a, b;
  for (int i = 0; i < 20; ++i) {
    a += "line" + std::to_string(i) + "\n";
    b += (i == 1 || i == 18 ? "changed" : "line") + std::to_string(i) + "\n";
  }
  const std::string diff = UnifiedDiff(a, b, "a", "b");
  size_t hunks = 0;
  for (size_t pos = diff.find("@@ -"); pos != std::string::npos; pos = diff.find("@@ -", pos + 1)) {
    ++hunks;
  }
  EXPECT_EQ(hunks, 2u) << diff;
  EXPECT_NE(diff.find("-line1\n+changed1\n"), std::string::npos) << diff;
  EXPECT_NE(diff.find("-line18\n+changed18\n"), std::string::npos) << diff;
}

}  // namespace
}  // namespace pgfleet::cli
