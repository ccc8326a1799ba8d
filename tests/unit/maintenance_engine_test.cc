// The maintenance engine against a fake store, fake agents and a fake clock: windows that are
// scheduled, start, drain, hold, end on time, time out draining, are resumed early or
// cancelled, are missed, and agents that join mid-window; in microseconds.
#include <memory>
#include <string>
#include <vector>

#include "controller/maintenance/orchestrator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/unit/engine_fakes.h"

namespace pgfleet::controller {
namespace {

using ::testing::ElementsAre;
using testing::FakeAgents;
using testing::FakeClock;
using testing::FakeStore;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class MaintenanceEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_.AddEnvironment("prod");
    for (const char* id : {"m1", "m2"}) {
      store_.AddAgent(id, "prod");
      agents_.Connect(id, "prod", 1);
    }
    engine_ = std::make_unique<MaintenanceOrchestrator>(store_, agents_, clock_);
  }

  WindowSpec Spec(absl::Duration starts_in = absl::ZeroDuration()) {
    WindowSpec spec;
    spec.environment = "prod";
    spec.database = "appdb";
    spec.starts =
        starts_in == absl::ZeroDuration() ? absl::InfinitePast() : clock_.Now() + starts_in;
    spec.duration = absl::Minutes(30);
    spec.drain_timeout = absl::Seconds(60);
    spec.reason = "vacuum full";
    return spec;
  }
  void Tick() { engine_->Tick(clock_.Now()); }
  // What MaintenanceService.Pause does: a window from now, started at once.
  absl::StatusOr<WindowRow> PauseNow(const WindowSpec& spec) {
    absl::StatusOr<WindowRow> scheduled = engine_->Schedule(spec, "alice");
    if (!scheduled.ok()) return scheduled;
    Tick();
    return store_.GetWindow(scheduled->id);
  }
  WindowRow Window(uint64_t id) {
    absl::StatusOr<WindowRow> row = store_.GetWindow(id);
    EXPECT_TRUE(row.ok()) << row.status();
    return row.ok() ? *row : WindowRow{};
  }
  // The agent reports its pause of appdb, drained or not.
  void ReportPause(const std::string& agent, bool drained, int servers_in_use = 0) {
    pgfleet::v1::MetricsReport& report = agents_.NewMetrics(agent);
    pgfleet::v1::PauseState* pause = report.add_pauses();
    pause->set_database("appdb");
    pause->set_drained(drained);
    pause->set_servers_in_use(servers_in_use);
  }

  FakeStore store_;
  FakeAgents agents_;
  FakeClock clock_;
  std::unique_ptr<MaintenanceOrchestrator> engine_;
};

TEST_F(MaintenanceEngineTest, ScheduledWindowStartsDrainsHoldsAndEndsOnTime) {
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, engine_->Schedule(Spec(absl::Minutes(10)), "alice"));
  EXPECT_EQ(window.state, WindowState::kScheduled);
  EXPECT_EQ(window.ends_unix_ms - window.starts_unix_ms, 30 * 60 * 1000);
  Tick();
  EXPECT_EQ(Window(window.id).state, WindowState::kScheduled);
  EXPECT_THAT(agents_.messages, IsEmpty());

  clock_.Advance(absl::Minutes(10));
  Tick();
  EXPECT_EQ(Window(window.id).state, WindowState::kPausing);
  EXPECT_THAT(agents_.Commands(), ElementsAre("pause:m1", "pause:m2"));
  // Each agent's own deadline is the window's end, so the fleet resumes without us.
  const pgfleet::v1::PauseCommand& pause = agents_.messages[0].message.command().pause();
  EXPECT_EQ(pause.database(), "appdb");
  EXPECT_EQ(pause.deadline_seconds(), 30 * 60);
  EXPECT_NE(agents_.messages[0].message.command().command_id(), 0u);

  Tick();
  EXPECT_EQ(Window(window.id).state, WindowState::kPausing) << "no pause confirmed yet";
  ReportPause("m1", true);
  ReportPause("m2", false, 3);
  Tick();
  EXPECT_EQ(Window(window.id).state, WindowState::kPausing) << "m2 still has servers in use";
  ReportPause("m2", true);
  Tick();
  EXPECT_EQ(Window(window.id).state, WindowState::kPaused);

  clock_.Advance(absl::Minutes(30) - absl::Milliseconds(1));
  Tick();
  EXPECT_EQ(Window(window.id).state, WindowState::kPaused);
  clock_.Advance(absl::Milliseconds(1));
  Tick();
  EXPECT_EQ(Window(window.id).state, WindowState::kCompleted);
  EXPECT_THAT(agents_.Commands(), ElementsAre("pause:m1", "pause:m2", "resume:m1", "resume:m2"));
  EXPECT_THAT(store_.audit_actions, ElementsAre("maintenance.completed"));
  Tick();
  EXPECT_EQ(agents_.messages.size(), 4u) << "a finished window sends nothing more";
}

TEST_F(MaintenanceEngineTest, DrainTimeoutResumesEveryone) {
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, PauseNow(Spec()));
  EXPECT_EQ(window.state, WindowState::kPausing);
  ReportPause("m1", true);
  ReportPause("m2", false, 2);
  clock_.Advance(absl::Seconds(60));
  Tick();
  EXPECT_EQ(Window(window.id).state, WindowState::kPausing);
  clock_.Advance(absl::Milliseconds(1));
  Tick();
  const WindowRow failed = Window(window.id);
  EXPECT_EQ(failed.state, WindowState::kFailed);
  EXPECT_THAT(failed.failure, HasSubstr("drain timed out"));
  EXPECT_THAT(failed.failure, HasSubstr("m2: 2 server connections in use"));
  EXPECT_EQ(failed.ends_unix_ms, UnixMillis(clock_.Now())) << "the window ends when it failed";
  EXPECT_THAT(agents_.Commands(), ElementsAre("pause:m1", "pause:m2", "resume:m1", "resume:m2"));
}

TEST_F(MaintenanceEngineTest, OfflineAgentKeepsTheWindowFromStartingUnlessSkipped) {
  agents_.Disconnect("m2");
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, PauseNow(Spec()));
  EXPECT_EQ(window.state, WindowState::kFailed);
  EXPECT_THAT(window.failure, HasSubstr("agents offline: m2"));
  EXPECT_THAT(agents_.messages, IsEmpty()) << "all or nothing: nobody was paused";

  WindowSpec skip = Spec();
  skip.skip_agents = {"m2"};
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow skipping, PauseNow(skip));
  EXPECT_EQ(skipping.state, WindowState::kPausing);
  EXPECT_THAT(agents_.Commands(), ElementsAre("pause:m1"));
  ReportPause("m1", true);
  Tick();
  EXPECT_EQ(Window(skipping.id).state, WindowState::kPaused);
}

TEST_F(MaintenanceEngineTest, CancellingAScheduledWindowSendsNothing) {
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, engine_->Schedule(Spec(absl::Hours(1)), "alice"));
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow cancelled, engine_->Cancel(window.id, "bob"));
  EXPECT_EQ(cancelled.state, WindowState::kCancelled);
  EXPECT_EQ(cancelled.failure, "cancelled by bob");
  clock_.Advance(absl::Hours(1));
  Tick();
  EXPECT_THAT(agents_.messages, IsEmpty());
  EXPECT_EQ(engine_->Cancel(window.id, "bob").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(MaintenanceEngineTest, CancellingAnActiveWindowResumesEveryone) {
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, PauseNow(Spec()));
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow cancelled, engine_->Cancel(window.id, "bob"));
  EXPECT_EQ(cancelled.state, WindowState::kCancelled);
  EXPECT_THAT(agents_.Commands(), ElementsAre("pause:m1", "pause:m2", "resume:m1", "resume:m2"));
  EXPECT_THAT(store_.audit_actions, ElementsAre("maintenance.cancelled"));
}

TEST_F(MaintenanceEngineTest, ResumeEndsTheActiveWindowEarly) {
  EXPECT_EQ(engine_->Resume("prod", "appdb", "bob").status().code(), absl::StatusCode::kNotFound);
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, PauseNow(Spec()));
  clock_.Advance(absl::Minutes(5));
  EXPECT_EQ(engine_->Resume("prod", "otherdb", "bob").status().code(), absl::StatusCode::kNotFound);
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow resumed, engine_->Resume("prod", "appdb", "bob"));
  EXPECT_EQ(resumed.id, window.id);
  EXPECT_EQ(resumed.state, WindowState::kCompleted);
  EXPECT_EQ(resumed.ends_unix_ms, UnixMillis(clock_.Now()));
  EXPECT_THAT(agents_.Commands(), ElementsAre("pause:m1", "pause:m2", "resume:m1", "resume:m2"));
}

TEST_F(MaintenanceEngineTest, WindowMissedWhileTheControllerWasDownFails) {
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, engine_->Schedule(Spec(absl::Minutes(1)), "alice"));
  engine_.reset();  // Down for the whole window.
  clock_.Advance(absl::Hours(1));
  engine_ = std::make_unique<MaintenanceOrchestrator>(store_, agents_, clock_);
  Tick();
  EXPECT_EQ(Window(window.id).state, WindowState::kFailed);
  EXPECT_THAT(Window(window.id).failure, HasSubstr("missed"));
  EXPECT_THAT(agents_.messages, IsEmpty());
}

TEST_F(MaintenanceEngineTest, ANewEngineFollowsAWindowTheOldOneStarted) {
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, PauseNow(Spec()));
  engine_.reset();
  engine_ = std::make_unique<MaintenanceOrchestrator>(store_, agents_, clock_);
  ReportPause("m1", true);
  ReportPause("m2", true);
  Tick();
  EXPECT_EQ(Window(window.id).state, WindowState::kPaused);
  clock_.Advance(absl::Minutes(30));
  Tick();
  EXPECT_EQ(Window(window.id).state, WindowState::kCompleted);
  EXPECT_THAT(agents_.Commands(), ElementsAre("pause:m1", "pause:m2", "resume:m1", "resume:m2"));
}

TEST_F(MaintenanceEngineTest, AgentJoiningMidWindowIsPausedUntilTheWindowEnds) {
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, PauseNow(Spec()));
  clock_.Advance(absl::Minutes(10));
  agents_.Connect("m3", "prod", 1);
  engine_->OnAgentConnected("m3", "prod");
  ASSERT_THAT(agents_.Commands(), ElementsAre("pause:m1", "pause:m2", "pause:m3"));
  EXPECT_EQ(agents_.messages.back().message.command().pause().deadline_seconds(), 20 * 60);
  engine_->OnAgentConnected("elsewhere", "staging");
  EXPECT_EQ(agents_.messages.size(), 3u);
  (void)window;
}

TEST_F(MaintenanceEngineTest, SchedulingRefusals) {
  WindowSpec no_env = Spec();
  no_env.environment = "";
  EXPECT_EQ(engine_->Schedule(no_env, "alice").status().code(), absl::StatusCode::kInvalidArgument);
  WindowSpec unknown = Spec();
  unknown.environment = "nowhere";
  EXPECT_EQ(engine_->Schedule(unknown, "alice").status().code(), absl::StatusCode::kNotFound);
  PGF_ASSERT_OK(engine_->Schedule(Spec(absl::Minutes(10)), "alice").status());
  EXPECT_EQ(engine_->Schedule(Spec(absl::Minutes(20)), "alice").status().code(),
            absl::StatusCode::kFailedPrecondition)
      << "overlaps the first";
  WindowSpec defaults = Spec(absl::Hours(2));
  defaults.duration = absl::ZeroDuration();
  defaults.drain_timeout = absl::ZeroDuration();
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, engine_->Schedule(defaults, "alice"));
  EXPECT_EQ(window.ends_unix_ms - window.starts_unix_ms,
            absl::ToInt64Milliseconds(kDefaultWindowDuration));
  EXPECT_EQ(window.drain_timeout_ms, absl::ToInt64Milliseconds(kDefaultDrainTimeout));
}

TEST_F(MaintenanceEngineTest, SendsHappenOutsideTheEngineLock) {
  int calls = 0;
  agents_.on_send = [&] {
    ++calls;
    EXPECT_EQ(engine_->Cancel(999, "x").status().code(), absl::StatusCode::kNotFound);
  };
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, PauseNow(Spec()));
  PGF_ASSERT_OK(engine_->Cancel(window.id, "bob").status());
  EXPECT_EQ(calls, 4);
}

}  // namespace
}  // namespace pgfleet::controller
