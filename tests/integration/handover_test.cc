// Zero-downtime restart (issue 19, agent/handover.h): under a steady pgbench -c 20 and a pgbench
// -C connect loop through one agent, a hand-over triggered by SIGUSR2 or the console's RESTART
// fails no transaction and refuses no connection, every acknowledged row of a writer is there
// afterwards, the serving pid changes and the old process exits by itself; a new binary that
// exits at once leaves the old process serving and the trigger reports the failure; with a
// controller the agent is listed once throughout, reconnects, and reports its build id.
#include "tests/testutil/handover.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/json.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres(
    [] {
      PostgresOptions options;
      options.max_connections = 200;
      return options;
    }(),
    [](PostgresEnv& pg) -> absl::Status {
      PGF_RETURN_IF_ERROR(CreateAppDatabase(pg));
      PGF_RETURN_IF_ERROR(InitPgbench(pg));
      PGF_ASSIGN_OR_RETURN(PgConn conn, Connect(pg.ConnString(kAppDb, kAppUser, kAppPassword)));
      return Query(conn.get(), "create table handover_writes (id bigint primary key)").status();
    });

// How long the load runs: the hand-over happens in its first seconds, and the old process's
// pgbench -c 20 clients stay on it until pgbench ends (the drain bound is longer).
constexpr int kLoadSeconds = 8;

class HandoverTest : public AgentTest {
 protected:
  void SetUp() override {
    AgentTest::SetUp();
    PGF_ASSERT_OK(dir_.Create("handover"));
    pidfile_ = dir_.path() + "/agent.pid";
  }
  void TearDown() override {
    new_agent_.Stop();
    AgentTest::TearDown();
  }

  AgentOptions Options(const std::string& binary = PGFLEET_AGENT_BINARY) const {
    AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                            {"pool_mode", "transaction"},
                                            {"default_pool_size", "20"},
                                            {"max_client_conn", "300"},
                                            {"admin_users", kAdminUser},
                                            {"pidfile", pidfile_}});
    options.binary = binary;
    // The old process keeps its pgbench -c 20 clients until pgbench ends.
    options.extra_args = {"--handover-drain-timeout=60s"};
    return options;
  }

  absl::StatusOr<PgConn> ConnectAdmin() const {
    return Connect(TcpConnString(agent_->port(), "pgbouncer", kAdminUser, kAdminPassword));
  }

  // Awaits the pidfile naming another process than `old_pid`, which runs.
  absl::StatusOr<pid_t> AwaitNewPid(pid_t old_pid) {
    pid_t new_pid = -1;
    PGF_RETURN_IF_ERROR(PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<pid_t> pid = ReadPidfile(pidfile_);
          *note =
              pid.ok() ? absl::StrCat("pidfile says ", *pid) : std::string(pid.status().message());
          if (!pid.ok() || *pid == old_pid) return false;
          new_pid = *pid;
          return true;
        },
        absl::Seconds(30), "the pidfile to name the new process"));
    new_agent_.Adopt(new_pid);
    return new_pid;
  }

  // Under load, `trigger` hands over; then everything the issue asks is checked.
  void HandOverUnderLoad(const std::function<void()>& trigger) {
    const pid_t old_pid = agent_->pid();
    BackgroundPgbench steady(agent_->port(),
                             {"-S", "-c", "20", "-j", "2", "-T", absl::StrCat(kLoadSeconds)});
    BackgroundPgbench connect_loop(agent_->port(),
                                   {"-S", "-C", "-c", "4", "-T", absl::StrCat(kLoadSeconds)});
    RowWriter writer(agent_->port(), "handover_writes");
    PGF_ASSERT_OK(
        PollUntil([&](std::string*) -> absl::StatusOr<bool> { return writer.acked_count() >= 20; },
                  absl::Seconds(20), "the writer's first rows"));

    trigger();
    absl::StatusOr<pid_t> new_pid = AwaitNewPid(old_pid);
    PGF_ASSERT_OK(new_pid.status());
    EXPECT_NE(*new_pid, old_pid);
    // The new process serves: more rows go through after it took over.
    const int64_t at_handover = writer.acked_count();
    PGF_ASSERT_OK(PollUntil(
        [&](std::string*) -> absl::StatusOr<bool> {
          return writer.acked_count() >= at_handover + 20;
        },
        absl::Seconds(20), "rows written after the hand-over"));

    for (auto& [load, what] : {std::pair{&steady, "pgbench -c 20 across the hand-over"},
                               std::pair{&connect_loop, "pgbench -C across the hand-over"}}) {
      const PgbenchSummary summary = load->ExpectClean(what);
      std::cout << what << ": " << summary.processed << " transactions, " << summary.failed
                << " failed\n";
    }
    // The old process had only pgbench's steady clients left: it exits by itself, cleanly.
    absl::StatusOr<int> exited = agent_->WaitForExit(absl::Seconds(30));
    ASSERT_TRUE(exited.ok()) << exited.status() << "\n" << agent_->Diagnostics();
    EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0)
        << DescribeWaitStatus(*exited) << "\n"
        << agent_->Diagnostics();
    EXPECT_TRUE(ProcessRuns(*new_pid));
    // Still served (by the new process alone now).
    const int64_t after_exit = writer.acked_count();
    PGF_ASSERT_OK(PollUntil(
        [&](std::string*) -> absl::StatusOr<bool> {
          return writer.acked_count() >= after_exit + 5;
        },
        absl::Seconds(20), "rows written after the old process exited"));
    writer.Stop();
    EXPECT_TRUE(writer.errors().empty()) << absl::StrJoin(writer.errors(), "\n");

    // Every acknowledged row is there.
    PGF_ASSERT_OK_AND_ASSIGN(PgConn direct,
                             Connect(g_pg->ConnString(kAppDb, kAppUser, kAppPassword)));
    PGF_ASSERT_OK_AND_ASSIGN(Rows rows, Query(direct.get(), "select id from handover_writes"));
    std::set<int64_t> stored;
    for (const std::vector<std::string>& row : rows) {
      int64_t id = 0;
      ASSERT_TRUE(absl::SimpleAtoi(row[0], &id));
      stored.insert(id);
    }
    const std::vector<int64_t> acked = writer.acked();
    for (int64_t id : acked) EXPECT_TRUE(stored.contains(id)) << "acknowledged row " << id;
    EXPECT_GT(acked.size(), 40u);
    std::cout << "writer: " << acked.size() << " rows acknowledged, all present\n";
    // Whatever its pgbench clients did, the old process logged how it ended.
    EXPECT_TRUE(absl::StrContains(agent_->LogContents(), "is ready and accepting"))
        << agent_->Diagnostics();
  }

  TempDir dir_;
  std::string pidfile_;
  NewAgentProcess new_agent_;
};

TEST_F(HandoverTest, Sigusr2HandsOverWithNoClientError) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options()));
  HandOverUnderLoad([&] { PGF_ASSERT_OK(agent_->Signal(SIGUSR2)); });
  if (HasFailure()) std::cerr << agent_->Diagnostics();
}

TEST_F(HandoverTest, ConsoleRestartAnswersOnceTheNewProcessServes) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options()));
  HandOverUnderLoad([&] {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectAdmin());
    // The answer comes once the new process accepts: by then the pidfile names it.
    PGF_ASSERT_OK(Query(admin.get(), "RESTART").status());
    absl::StatusOr<pid_t> pid = ReadPidfile(pidfile_);
    PGF_ASSERT_OK(pid.status());
    EXPECT_NE(*pid, agent_->pid()) << "RESTART answered before the new process wrote its pid";
  });
}

TEST_F(HandoverTest, NewBinaryThatExitsAtOnceLeavesTheOldProcessServing) {
  const std::string binary = dir_.path() + "/pgfleet-agent";
  PGF_ASSERT_OK(CopyExecutable(PGFLEET_AGENT_BINARY, binary));
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options(binary)));
  const pid_t old_pid = agent_->pid();
  // A broken upgrade: the file at the agent's path now exits at once.
  PGF_ASSERT_OK(InstallExecutable(binary, "#!/bin/sh\necho broken upgrade >&2\nexit 1\n"));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectAdmin());
  absl::Status restarted = Query(admin.get(), "RESTART").status();
  ASSERT_FALSE(restarted.ok()) << "RESTART into a binary that exits at once succeeded";
  EXPECT_TRUE(absl::StrContains(restarted.message(), "RESTART failed")) << restarted;
  EXPECT_TRUE(absl::StrContains(restarted.message(), "exit status 1")) << restarted;

  PGF_ASSERT_OK(agent_->Signal(SIGUSR2));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return absl::StrContains(agent_->LogContents(), "RESTART (SIGUSR2) failed");
      },
      absl::Seconds(20), "the log to report the failed SIGUSR2 restart"));

  // Still the old process, still serving, on a fresh connection and on the console.
  EXPECT_TRUE(agent_->IsRunning());
  PGF_ASSERT_OK_AND_ASSIGN(pid_t pid, ReadPidfile(pidfile_));
  EXPECT_EQ(pid, old_pid);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_EXPECT_OK(Query(app.get(), "select 1").status());
  PGF_EXPECT_OK(Query(admin.get(), "SHOW POOLS").status());
  // And once the binary is whole again, a restart succeeds.
  PGF_ASSERT_OK(CopyExecutable(PGFLEET_AGENT_BINARY, binary));
  PGF_ASSERT_OK(Query(admin.get(), "RESTART").status());
  PGF_ASSERT_OK_AND_ASSIGN(pid_t new_pid, AwaitNewPid(old_pid));
  EXPECT_NE(new_pid, old_pid);
  // The old process exits once its clients (these two) are gone.
  admin.reset();
  app.reset();
  ASSERT_TRUE(agent_->WaitForExit(absl::Seconds(30)).ok()) << agent_->Diagnostics();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn again, ConnectApp());
  PGF_EXPECT_OK(Query(again.get(), "select 1").status());
}

// --- with a controller --------------------------------------------------------------------------

class HandoverFleetTest : public FleetFixture {
 protected:
  HandoverFleetTest() : FleetFixture("handover-fleet") {}

  absl::StatusOr<std::vector<pgfleet::v1::Agent>> ListAgents() const {
    FleetctlResult result = Ctl({"agents", "list", "--output", "json"});
    if (result.exit_code != 0) return absl::InternalError(result.Describe());
    PGF_ASSIGN_OR_RETURN(pgfleet::v1::ListAgentsResponse list,
                         ParseJson<pgfleet::v1::ListAgentsResponse>(result.stdout_text));
    return std::vector<pgfleet::v1::Agent>(list.agents().begin(), list.agents().end());
  }

  // The one listed agent once it is connected as `pid` (any pid if 0).
  absl::StatusOr<pgfleet::v1::Agent> AwaitConnected(pid_t pid) {
    pgfleet::v1::Agent found;
    PGF_RETURN_IF_ERROR(PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          PGF_ASSIGN_OR_RETURN(std::vector<pgfleet::v1::Agent> agents, ListAgents());
          // None yet: its hello has not arrived. Two would be the failure this guards.
          if (agents.empty()) {
            *note = "no agent listed yet";
            return false;
          }
          if (agents.size() != 1)
            return absl::InternalError(absl::StrCat(agents.size(), " agents"));
          *note = agents[0].DebugString();
          if (!agents[0].connected() || (pid != 0 && agents[0].pid() != pid)) return false;
          found = agents[0];
          return true;
        },
        absl::Seconds(30), absl::StrCat("the agent connected as pid ", pid)));
    return found;
  }

  NewAgentProcess new_agent_;
};

TEST_F(HandoverFleetTest, OneAgentIdThroughoutWithItsBuildIdAndTheNewPid) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  const std::string binary = dir_ + "/pgfleet-agent";
  PGF_ASSERT_OK(CopyExecutable(PGFLEET_AGENT_BINARY, binary));
  const std::string pidfile = dir_ + "/a1.pid";
  AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                          {"pool_mode", "transaction"},
                                          {"admin_users", kAdminUser},
                                          {"pidfile", pidfile}});
  options.binary = binary;
  options.extra_args = LinkArgs("a1", "dev", controller_->address());
  options.extra_args.push_back("--handover-drain-timeout=5s");
  ASSERT_NO_FATAL_FAILURE(StartLinkedAgent("a1", options));
  AgentProcess& old_agent = agent("a1");

  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Agent before, AwaitConnected(old_agent.pid()));
  EXPECT_FALSE(before.build_id().empty());
  EXPECT_FALSE(before.binary_outdated());
  FleetctlResult table = Ctl({"agents", "list"});
  EXPECT_TRUE(absl::StrContains(table.stdout_text, "VERSION")) << table.Describe();
  EXPECT_TRUE(absl::StrContains(table.stdout_text, before.build_id().substr(0, 12)))
      << table.Describe();

  // An upgrade: another binary at the agent's path (fleetctl's, for a build id of its own).
  PGF_ASSERT_OK(CopyExecutable(PGFLEET_FLEETCTL_BINARY, binary));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(std::vector<pgfleet::v1::Agent> agents, ListAgents());
        *note = agents.empty() ? "none" : agents[0].DebugString();
        return agents.size() == 1 && agents[0].binary_outdated();
      },
      absl::Seconds(30), "the agent to report its binary outdated"));
  // The agent binary again (a new inode: the running one's path now reads "(deleted)").
  PGF_ASSERT_OK(CopyExecutable(PGFLEET_AGENT_BINARY, binary));

  // Listed once throughout: a watcher lists agents while the hand-over happens.
  std::atomic<bool> stop{false};
  std::atomic<int> most_listed{0}, listings{0};
  std::thread watcher([&] {
    while (!stop) {
      absl::StatusOr<std::vector<pgfleet::v1::Agent>> agents = ListAgents();
      if (agents.ok()) {
        most_listed = std::max<int>(most_listed, static_cast<int>(agents->size()));
        listings++;
      }
    }
  });
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, Connect(TcpConnString(old_agent.port(), "pgbouncer",
                                                                 kAdminUser, kAdminPassword)));
    PGF_ASSERT_OK(Query(admin.get(), "RESTART").status());
  }
  PGF_ASSERT_OK_AND_ASSIGN(pid_t new_pid, ReadPidfile(pidfile));
  new_agent_.Adopt(new_pid);
  EXPECT_NE(new_pid, old_agent.pid());
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Agent after, AwaitConnected(new_pid));
  EXPECT_EQ(after.agent_id(), "a1");
  EXPECT_EQ(after.build_id(), before.build_id());
  EXPECT_FALSE(after.binary_outdated());
  ASSERT_TRUE(old_agent.WaitForExit(absl::Seconds(30)).ok()) << old_agent.Diagnostics();
  stop = true;
  watcher.join();
  EXPECT_GT(listings.load(), 0);
  EXPECT_EQ(most_listed.load(), 1);
  // The new process serves and its stream stays the agent's.
  PGF_ASSERT_OK_AND_ASSIGN(
      PgConn app, Connect(TcpConnString(old_agent.port(), kAppDb, kAppUser, kAppPassword)));
  PGF_EXPECT_OK(Query(app.get(), "select 1").status());
  PGF_ASSERT_OK(AwaitConnected(new_pid).status());
  new_agent_.Stop();
}

}  // namespace
}  // namespace pgfleet::testutil
