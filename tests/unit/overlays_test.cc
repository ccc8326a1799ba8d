// Config overlays: the file format, the in-place render, precedence, equal-rank conflicts and
// the per-agent connection budget.
#include "controller/config/overlays.h"

#include <gtest/gtest.h>

#include "common/config/config.h"
#include "common/config/overlay.h"
#include "controller/rollout/connection_budget.h"
#include "controller/store/store.h"

namespace pgfleet::controller {
namespace {

using config::ConfigOverlay;

constexpr char kBase[] =
    "; the fleet's base\n"
    "[databases]\n"
    "appdb = host=127.0.0.1 port=5432 dbname=appdb\n"
    "legacy = host=127.0.0.1 dbname=legacy  ; going away\n"
    "\n"
    "[pgbouncer]\n"
    "listen_port = 6432\n"
    "Default_Pool_Size = 10   \n"
    "stats_period = 60\n"
    "\n"
    "; trailing comment\n";

std::vector<ConfigOverlay> Parse(const std::string& text) {
  auto parsed = config::ParseOverlayFile(text, "o.ini");
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() ? *parsed : std::vector<ConfigOverlay>{};
}

ConfigVersionRow Version(const std::string& overlays_text) {
  ConfigVersionRow row;
  row.version = 7;
  row.ini_text = kBase;
  if (!overlays_text.empty()) row.overlays = Parse(overlays_text);
  return row;
}

std::string Render(const ConfigVersionRow& version, const std::string& agent,
                   const std::map<std::string, std::string>& labels) {
  auto rendered = RenderForAgent(version, agent, labels);
  EXPECT_TRUE(rendered.ok()) << rendered.status();
  return rendered.ok() ? rendered->ini_text : "";
}

TEST(OverlayFileTest, ParsesTargetsEditsAndRoundTrips) {
  std::vector<ConfigOverlay> overlays = Parse(
      "[pgfleet.overlay]\n"
      "name = large\n"
      "selector = size in (xlarge, large)\n"
      "remove = databases.legacy, pgbouncer.stats_period\n"
      "[pgbouncer]\n"
      "default_pool_size = 40\n"
      "[databases]\n"
      "\"my db\" = host=x\n"
      "[pgfleet.overlay]\n"
      "agent = host-3\n"
      "[pgbouncer]\n"
      "listen_port = 7432\n");
  ASSERT_EQ(overlays.size(), 2u);
  EXPECT_EQ(overlays[0].name, "large");
  EXPECT_FALSE(overlays[0].by_agent);
  EXPECT_EQ(overlays[0].selector, "size in (xlarge, large)");
  ASSERT_EQ(overlays[0].remove.size(), 2u);
  EXPECT_EQ(overlays[0].remove[1].section, "pgbouncer");
  EXPECT_EQ(overlays[0].remove[1].key, "stats_period");
  ASSERT_EQ(overlays[0].set.size(), 2u);
  EXPECT_EQ(overlays[0].set[1].key, "my db");
  EXPECT_TRUE(overlays[1].by_agent);
  EXPECT_EQ(overlays[1].agent_id, "host-3");
  EXPECT_EQ(overlays[1].Describe(2), "overlay #2 (agent host-3)");
  // The canonical text reads back to the same overlays.
  const std::string text = config::FormatOverlays(overlays);
  EXPECT_EQ(config::FormatOverlays(Parse(text)), text);
}

TEST(OverlayFileTest, RefusesMalformedFiles) {
  auto error = [](const std::string& text) {
    auto parsed = config::ParseOverlayFile(text, "o.ini");
    EXPECT_FALSE(parsed.ok()) << text;
    return parsed.ok() ? std::string() : std::string(parsed.status().message());
  };
  EXPECT_NE(error("[pgbouncer]\nx = 1\n").find("starts with [pgfleet.overlay]"), std::string::npos);
  EXPECT_NE(error("[pgfleet.overlay]\n[pgbouncer]\nx = 1\n").find("no target"), std::string::npos);
  EXPECT_NE(error("[pgfleet.overlay]\nselector = a=b\nagent = h\n").find("one target"),
            std::string::npos);
  EXPECT_NE(error("[pgfleet.overlay]\nagent = h\nremove = pgbouncer.x\n[pgbouncer]\nx = 1\n")
                .find("twice"),
            std::string::npos);
  EXPECT_NE(error("[pgfleet.overlay]\nagent = h\nremove = nodot\n").find("SECTION.KEY"),
            std::string::npos);
  EXPECT_NE(error("[pgfleet.overlay]\nagent = h\ncolour = red\n").find("unknown key"),
            std::string::npos);
}

TEST(RenderTest, NoOverlaysIsTheBaseByteForByte) {
  ConfigVersionRow version = Version("");
  EXPECT_EQ(Render(version, "host-1", {{"zone", "a"}}), kBase);
  EXPECT_EQ(ConfigContentSha256(kBase, {}), Sha256Hex(kBase));
}

TEST(RenderTest, EditsInPlaceAppendsKeysAndSectionsKeepsComments) {
  ConfigVersionRow version = Version(
      "[pgfleet.overlay]\nselector = size=large\nremove = databases.legacy\n"
      "[pgbouncer]\ndefault_pool_size = 40\nmax_client_conn = 500\n"
      "[users]\nalice = pool_mode=session\n");
  const std::string rendered = Render(version, "host-1", {{"size", "large"}});
  EXPECT_EQ(rendered,
            "; the fleet's base\n"
            "[databases]\n"
            "appdb = host=127.0.0.1 port=5432 dbname=appdb\n"
            "\n"
            "[pgbouncer]\n"
            "listen_port = 6432\n"
            "Default_Pool_Size = 40\n"  // [pgbouncer] keys ignore case; the base's spelling stays.
            "stats_period = 60\n"
            "max_client_conn = 500\n"  // A new key: after the section's last key.
            "\n"
            "; trailing comment\n"
            "\n"
            "[users]\n"  // A new section: at the end, the final newline kept.
            "alice = pool_mode=session\n");
  // An agent the selector does not match runs the base.
  EXPECT_EQ(Render(version, "host-2", {{"size", "small"}}), kBase);
}

TEST(RenderTest, AgentOverlaysWinOverLabelOverlays) {
  // Listed first, but an agent-id overlay ranks above every label overlay.
  ConfigVersionRow version = Version(
      "[pgfleet.overlay]\nagent = host-3\n[pgbouncer]\ndefault_pool_size = 99\n"
      "[pgfleet.overlay]\nname = zone a\nselector = zone=a\n[pgbouncer]\ndefault_pool_size = 20\n");
  auto rendered = RenderForAgent(version, "host-3", {{"zone", "a"}});
  ASSERT_TRUE(rendered.ok()) << rendered.status();
  EXPECT_NE(rendered->ini_text.find("Default_Pool_Size = 99\n"), std::string::npos);
  EXPECT_EQ(rendered->applied_overlays,
            (std::vector<std::string>{"overlay \"zone a\"", "overlay #1 (agent host-3)"}));
  EXPECT_EQ(rendered->sha256, Sha256Hex(rendered->ini_text));
  EXPECT_NE(Render(version, "host-4", {{"zone", "a"}}).find("Default_Pool_Size = 20\n"),
            std::string::npos);
}

TEST(OverlayRulesTest, DisjointnessIsProvenPerLabelKey) {
  auto disjoint = [](const std::string& a, const std::string& b) {
    return ProvablyDisjoint(*LabelSelector::Parse(a), *LabelSelector::Parse(b));
  };
  EXPECT_TRUE(disjoint("zone=a", "zone=b"));
  EXPECT_TRUE(disjoint("zone in (a,b)", "zone notin (a,b)"));
  EXPECT_TRUE(disjoint("zone", "!zone"));
  EXPECT_TRUE(disjoint("size=large,zone=a", "zone=b"));
  EXPECT_TRUE(disjoint("zone=a", "zone!=a"));
  EXPECT_FALSE(disjoint("zone=a", "size=large"));  // A large host in zone a has both.
  EXPECT_FALSE(disjoint("zone in (a,b)", "zone in (b,c)"));
  EXPECT_FALSE(disjoint("zone!=a", "zone!=b"));
  EXPECT_FALSE(disjoint("", "zone=a"));
}

absl::Status Check(const std::string& text) {
  std::vector<ConfigOverlay> overlays = Parse(text);
  return CanonicalizeAndCheckOverlays(overlays);
}

TEST(OverlayRulesTest, EqualRankConflictsAreRefusedNamingBothAndTheKey) {
  absl::Status status = Check(
      "[pgfleet.overlay]\nname = big\nselector = size=large\n[pgbouncer]\ndefault_pool_size = 40\n"
      "[pgfleet.overlay]\nname = za\nselector = zone=a\n[pgbouncer]\ndefault_pool_size = 20\n");
  ASSERT_TRUE(absl::IsInvalidArgument(status)) << status;
  EXPECT_NE(status.message().find("overlay \"big\""), std::string::npos) << status;
  EXPECT_NE(status.message().find("overlay \"za\""), std::string::npos) << status;
  EXPECT_NE(status.message().find("[pgbouncer] default_pool_size"), std::string::npos) << status;
  // Set against remove is a disagreement too.
  EXPECT_FALSE(Check("[pgfleet.overlay]\nagent = h\n[pgbouncer]\nstats_period = 5\n"
                     "[pgfleet.overlay]\nagent = h\nremove = pgbouncer.stats_period\n")
                   .ok());
}

TEST(OverlayRulesTest, DisjointAgreeingOrDifferentRankOverlaysPass) {
  // Disjoint selectors.
  EXPECT_TRUE(Check("[pgfleet.overlay]\nselector = zone=a\n[pgbouncer]\ndefault_pool_size = 40\n"
                    "[pgfleet.overlay]\nselector = zone=b\n[pgbouncer]\ndefault_pool_size = 20\n")
                  .ok());
  // The same value.
  EXPECT_TRUE(Check("[pgfleet.overlay]\nselector = zone=a\n[pgbouncer]\ndefault_pool_size = 40\n"
                    "[pgfleet.overlay]\nselector = size=l\n[pgbouncer]\ndefault_pool_size = 40\n")
                  .ok());
  // Different ranks: the agent overlay wins.
  EXPECT_TRUE(Check("[pgfleet.overlay]\nselector = zone=a\n[pgbouncer]\ndefault_pool_size = 40\n"
                    "[pgfleet.overlay]\nagent = h\n[pgbouncer]\ndefault_pool_size = 20\n")
                  .ok());
  // Different agents.
  EXPECT_TRUE(Check("[pgfleet.overlay]\nagent = h1\n[pgbouncer]\ndefault_pool_size = 40\n"
                    "[pgfleet.overlay]\nagent = h2\n[pgbouncer]\ndefault_pool_size = 20\n")
                  .ok());
}

TEST(OverlayRulesTest, SelectorsAreCanonicalizedAndBadOnesRefused) {
  std::vector<ConfigOverlay> overlays =
      Parse("[pgfleet.overlay]\nselector = zone=a, size in (xlarge,large)\n[pgbouncer]\nx = 1\n");
  ASSERT_TRUE(CanonicalizeAndCheckOverlays(overlays).ok());
  EXPECT_EQ(overlays[0].selector, "size in (large,xlarge),zone=a");
  EXPECT_TRUE(absl::IsInvalidArgument(
      Check("[pgfleet.overlay]\nselector = size in (large\n[pgbouncer]\nx = 1\n")));
  // A version's address covers its overlays.
  EXPECT_NE(ConfigContentSha256(kBase, overlays), Sha256Hex(kBase));
}

TEST(ConnectionBudgetTest, SumsEachAgentsOwnPoolSizes) {
  auto config = [](int pool_size) {
    auto parsed = config::ParseConfig(
        absl::StrCat("[databases]\nappdb = host=db1 port=5432 dbname=appdb\n[pgbouncer]\n"
                     "default_pool_size = ",
                     pool_size, "\n"),
        "t.ini");
    EXPECT_TRUE(parsed.ok()) << parsed.status();
    return *parsed;
  };
  config::Config small = config(10), large = config(60);
  std::map<std::string, pgfleet::v1::ServerLimits> limits;
  pgfleet::v1::ServerLimits db1;
  db1.set_address("db1:5432");
  db1.set_max_connections(100);
  limits["db1:5432"] = db1;
  // 10 + 10 + 60 = 80 <= 100 - 0 - 10: fits; three larges (180) would not, nor does 10+60+60.
  EXPECT_TRUE(CheckConnectionBudget({&small, &small, &large}, limits, 0).refusals.empty());
  BudgetCheck over = CheckConnectionBudget({&small, &large, &large}, limits, 0);
  ASSERT_EQ(over.refusals.size(), 1u);
  EXPECT_NE(over.refusals[0].find("sum to 130"), std::string::npos) << over.refusals[0];
}

}  // namespace
}  // namespace pgfleet::controller
