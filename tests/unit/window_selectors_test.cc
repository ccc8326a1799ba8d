// Maintenance windows and label selectors (issue 18): `fleetctl resume -l` resumes only the
// matching agents of the active windows, and windows whose selectors cannot share an agent may
// overlap in time while the others are refused naming the window in the way.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cli/app.h"
#include "controller/maintenance/orchestrator.h"
#include "controller/registry/label_selector.h"
#include "controller/store/sqlite_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"
#include "tests/unit/engine_fakes.h"

namespace pgfleet::controller {
namespace {

using testing::FakeAgents;
using testing::FakeClock;
using testing::FakeStore;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

// Six agents of prod: a1..a3 in zone a, b1..b3 in zone b; a3 and b3 are large.
class WindowSelectorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_.AddEnvironment("prod");
    for (const char* id : {"a1", "a2", "a3", "b1", "b2", "b3"}) {
      store_.AddAgent(id, "prod");
      std::map<std::string, std::string> labels = {{"zone", std::string(1, id[0])}};
      if (id[1] == '3') labels["size"] = "large";
      store_.SetLabels(id, labels);
      agents_.Connect(id, "prod", 1);
    }
    engine_ = std::make_unique<MaintenanceOrchestrator>(store_, agents_, clock_);
  }

  WindowSpec Spec(const std::string& selector, absl::Duration starts_in = absl::ZeroDuration()) {
    WindowSpec spec;
    spec.environment = "prod";
    spec.database = "appdb";
    spec.starts =
        starts_in == absl::ZeroDuration() ? absl::InfinitePast() : clock_.Now() + starts_in;
    spec.duration = absl::Minutes(30);
    spec.drain_timeout = absl::Minutes(20);  // Drains here take as long as the test wants.
    spec.selector = selector;
    return spec;
  }
  void Tick() { engine_->Tick(clock_.Now()); }
  absl::StatusOr<WindowRow> PauseNow(const std::string& selector) {
    absl::StatusOr<WindowRow> scheduled = engine_->Schedule(Spec(selector), "alice");
    if (!scheduled.ok()) return scheduled;
    Tick();
    return store_.GetWindow(scheduled->id);
  }
  void ReportPause(const std::string& agent, bool drained) {
    pgfleet::v1::MetricsReport& report = agents_.NewMetrics(agent);
    pgfleet::v1::PauseState* pause = report.add_pauses();
    pause->set_database("appdb");
    pause->set_drained(drained);
  }

  FakeStore store_;
  FakeAgents agents_;
  FakeClock clock_;
  std::unique_ptr<MaintenanceOrchestrator> engine_;
};

// ---- Item 2: windows with disjoint selectors may overlap in time ----

TEST_F(WindowSelectorsTest, WindowsWithDisjointSelectorsMayOverlapInTime) {
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow zone_a, engine_->Schedule(Spec("zone=a"), "alice"));
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow zone_b,
                           engine_->Schedule(Spec("zone=b", absl::Minutes(5)), "alice"));
  EXPECT_NE(zone_a.id, zone_b.id);
  Tick();
  EXPECT_THAT(agents_.Commands(), UnorderedElementsAre("pause:a1", "pause:a2", "pause:a3"));
  clock_.Advance(absl::Minutes(6));
  Tick();
  EXPECT_THAT(agents_.Commands(), UnorderedElementsAre("pause:a1", "pause:a2", "pause:a3",
                                                       "pause:b1", "pause:b2", "pause:b3"));
  // Each window follows its own agents' drains.
  for (const char* id : {"a1", "a2", "a3"}) ReportPause(id, true);
  Tick();
  EXPECT_EQ(store_.GetWindow(zone_a.id)->state, WindowState::kPaused);
  EXPECT_EQ(store_.GetWindow(zone_b.id)->state, WindowState::kPausing);
}

TEST_F(WindowSelectorsTest, OverlappingWindowsThatMayShareAnAgentAreRefusedNamingTheOther) {
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow zone_a, engine_->Schedule(Spec("zone=a"), "alice"));
  for (const char* selector : {"size=large", "", "zone in (a,b)", "zone!=b", "!size"}) {
    absl::StatusOr<WindowRow> refused = engine_->Schedule(Spec(selector), "alice");
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << selector;
    EXPECT_THAT(refused.status().message(), HasSubstr(absl::StrCat("window ", zone_a.id)))
        << selector;
  }
  // A disjoint one passes: notin the value.
  PGF_EXPECT_OK(engine_->Schedule(Spec("zone notin (a),size=large"), "alice").status());
  // After the window, anything goes.
  PGF_EXPECT_OK(engine_->Schedule(Spec("", absl::Hours(2)), "alice").status());
}

// The SQLite store applies the same rule inside its transaction.
TEST(WindowOverlapSqliteTest, DisjointSelectorsOverlapOthersAreRefusedNamingTheWindow) {
  pgfleet::testutil::TempDir dir;
  PGF_ASSERT_OK(dir.Create("pgfleet_windows"));
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteStore> store,
                           SqliteStore::Open(dir.path() + "/controller.db"));
  PGF_ASSERT_OK(store->EnsureEnvironment("prod", 1000));
  WindowRow window;
  window.environment = "prod";
  window.database = "appdb";
  window.starts_unix_ms = 10'000;
  window.ends_unix_ms = 20'000;
  window.created_by = "alice";
  window.selector = "zone=a";
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow first, store->CreateWindow(window));
  window.selector = "zone=b";
  PGF_ASSERT_OK(store->CreateWindow(window).status());
  window.selector = "size=large";
  absl::StatusOr<WindowRow> refused = store->CreateWindow(window);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr(absl::StrCat("window ", first.id)));
}

// ---- Item 1: fleetctl resume -l ----

TEST_F(WindowSelectorsTest, ResumeWithSelectorResumesOnlyMatchingAgentsAndTheWindowGoesOn) {
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, PauseNow(""));
  agents_.messages.clear();
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow resumed, engine_->Resume("prod", "appdb", "bob", "zone=a"));
  EXPECT_EQ(resumed.id, window.id);
  EXPECT_EQ(resumed.state, WindowState::kPausing);
  EXPECT_THAT(resumed.resumed_agents, UnorderedElementsAre("a1", "a2", "a3"));
  EXPECT_THAT(agents_.Commands(), UnorderedElementsAre("resume:a1", "resume:a2", "resume:a3"));
  // The resumed agents are left alone: not waited for, not paused again when they reconnect.
  agents_.Disconnect("a1");
  agents_.Connect("a1", "prod", 1);
  engine_->OnAgentConnected("a1", "prod");
  for (const char* id : {"b1", "b2", "b3"}) ReportPause(id, true);
  Tick();
  EXPECT_EQ(store_.GetWindow(window.id)->state, WindowState::kPaused);
  // A plain resume ends the window: RESUME goes only to the agents still paused.
  agents_.messages.clear();
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow ended, engine_->Resume("prod", "appdb", "bob"));
  EXPECT_EQ(ended.state, WindowState::kCompleted);
  EXPECT_THAT(agents_.Commands(), UnorderedElementsAre("resume:b1", "resume:b2", "resume:b3"));
}

TEST_F(WindowSelectorsTest, ResumeWithSelectorCoveringEveryPausedAgentEndsTheWindow) {
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, PauseNow("zone=a"));
  agents_.messages.clear();
  // Matches a1..a3 (paused) and b3 (not in the window: left alone).
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow resumed,
                           engine_->Resume("prod", "appdb", "bob", "zone=a,size!=small"));
  EXPECT_EQ(resumed.state, WindowState::kCompleted);
  EXPECT_THAT(agents_.Commands(), UnorderedElementsAre("resume:a1", "resume:a2", "resume:a3"));
  EXPECT_EQ(store_.GetWindow(window.id)->state, WindowState::kCompleted);
}

TEST_F(WindowSelectorsTest, ResumeWithSelectorMatchingNoPausedAgentIsNotFound) {
  PGF_ASSERT_OK(PauseNow("zone=a").status());
  agents_.messages.clear();
  absl::StatusOr<WindowRow> resumed = engine_->Resume("prod", "appdb", "bob", "zone=b");
  EXPECT_EQ(resumed.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(resumed.status().message(), HasSubstr("zone=b"));
  EXPECT_THAT(agents_.Commands(), IsEmpty());
  EXPECT_EQ(engine_->Resume("prod", "appdb", "bob", "zone in (").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(WindowSelectorsTest, ResumeWithSelectorActsOnEachOverlappingWindow) {
  PGF_ASSERT_OK(PauseNow("zone=a").status());
  PGF_ASSERT_OK(PauseNow("zone=b").status());
  agents_.messages.clear();
  PGF_ASSERT_OK(engine_->Resume("prod", "appdb", "bob", "size=large").status());
  EXPECT_THAT(agents_.Commands(), UnorderedElementsAre("resume:a3", "resume:b3"));
  // Without a selector every active window of the database ends.
  agents_.messages.clear();
  PGF_ASSERT_OK(engine_->Resume("prod", "appdb", "bob").status());
  EXPECT_THAT(agents_.Commands(),
              UnorderedElementsAre("resume:a1", "resume:a2", "resume:b1", "resume:b2"));
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<WindowRow> open, store_.ListWindows("prod", true));
  EXPECT_THAT(open, IsEmpty());
}

// The resumed agents survive the store: a restarted controller does not pause them again.
TEST(WindowOverlapSqliteTest, ResumedAgentsAreStored) {
  pgfleet::testutil::TempDir dir;
  PGF_ASSERT_OK(dir.Create("pgfleet_windows"));
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteStore> store,
                           SqliteStore::Open(dir.path() + "/controller.db"));
  PGF_ASSERT_OK(store->EnsureEnvironment("prod", 1000));
  WindowRow window;
  window.environment = "prod";
  window.starts_unix_ms = 10'000;
  window.ends_unix_ms = 20'000;
  window.created_by = "alice";
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow created, store->CreateWindow(window));
  created.resumed_agents = {"a1", "a2"};
  PGF_ASSERT_OK(store->UpdateWindow(created));
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow read, store->GetWindow(created.id));
  EXPECT_THAT(read.resumed_agents, ::testing::ElementsAre("a1", "a2"));
}

// ---- The disjointness check itself ----

TEST(LabelSelectorOverlapTest, ProvablyDisjointOrMayOverlap) {
  auto may_overlap = [](const std::string& a, const std::string& b) {
    absl::StatusOr<LabelSelector> first = LabelSelector::Parse(a);
    absl::StatusOr<LabelSelector> second = LabelSelector::Parse(b);
    EXPECT_TRUE(first.ok() && second.ok()) << a << " / " << b;
    const bool forward = first->MayOverlap(*second);
    EXPECT_EQ(forward, second->MayOverlap(*first)) << a << " / " << b;  // Symmetric.
    return forward;
  };
  // Disjoint.
  EXPECT_FALSE(may_overlap("a=x", "a=y"));
  EXPECT_FALSE(may_overlap("a in (x)", "a notin (x)"));
  EXPECT_FALSE(may_overlap("a", "!a"));
  EXPECT_FALSE(may_overlap("a=x", "!a"));
  EXPECT_FALSE(may_overlap("a in (x,y)", "a in (z)"));
  EXPECT_FALSE(may_overlap("a in (x,y)", "a notin (x,y)"));
  EXPECT_FALSE(may_overlap("a in (x,y),a!=x", "a=x"));
  EXPECT_FALSE(may_overlap("b=1,a=x", "c=2,a=y"));
  EXPECT_FALSE(may_overlap("a=x,a=y", ""));  // Matches nothing at all.
  // May overlap.
  EXPECT_TRUE(may_overlap("", ""));
  EXPECT_TRUE(may_overlap("a=x", ""));
  EXPECT_TRUE(may_overlap("a=x", "b=y"));
  EXPECT_TRUE(may_overlap("a=x", "a!=y"));
  EXPECT_TRUE(may_overlap("a in (x,y)", "a in (y,z)"));
  EXPECT_TRUE(may_overlap("a!=x", "a!=y"));  // Both hold when a is absent.
  EXPECT_TRUE(may_overlap("a notin (x)", "!a"));
  EXPECT_TRUE(may_overlap("a", "a notin (x,y)"));  // a=z.
  EXPECT_TRUE(may_overlap("a=", "a"));             // The empty value is a value.
}

TEST(ResumeSelectorCliTest, ResumeTakesASelector) {
  cli::ParsedCommandLine parsed =
      cli::ParseCommandLine({"resume", "--env", "prod", "--db", "appdb", "-l", "zone=a"});
  EXPECT_FALSE(parsed.exit_code.has_value()) << parsed.err;
  EXPECT_NE(parsed.command, nullptr);
}

}  // namespace
}  // namespace pgfleet::controller
