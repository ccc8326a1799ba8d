// Fleet restarts (issue 19): `fleetctl agents restart` is a rollout of kind "restart". Under a
// steady pgbench and a pgbench -C connect loop through every agent, a restart in waves fails no
// transaction and refuses no connection, every agent ends as a new process under its one id, and
// a writer's acknowledged rows are all there; an agent whose new binary cannot start keeps its
// old process serving and the rollout fails naming it and why; --only-outdated restarts only
// the agent whose binary on disk changed.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
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
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/handover.h"
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
      options.max_connections = 300;
      return options;
    }(),
    [](PostgresEnv& pg) -> absl::Status {
      PGF_RETURN_IF_ERROR(CreateAppDatabase(pg));
      PGF_RETURN_IF_ERROR(InitPgbench(pg));
      PGF_ASSIGN_OR_RETURN(PgConn conn, Connect(pg.ConnString(kAppDb, kAppUser, kAppPassword)));
      return Query(conn.get(), "create table restart_writes (id bigint primary key)").status();
    });

constexpr char kEnv[] = "rst";
// Long enough for both waves of the restart; the old processes keep their steady pgbench clients
// until pgbench ends (the drain bound is longer), then exit.
constexpr int kLoadSeconds = 25;

// The agent binary with another GNU build id (the note's bytes changed): the same program, as
// a second build of it would be, that the agent reads as a different binary.
absl::StatusOr<std::string> AgentWithAnotherBuildId(const std::string& build_id_hex) {
  PGF_ASSIGN_OR_RETURN(std::string binary, ReadFile(PGFLEET_AGENT_BINARY));
  std::string id_bytes;
  for (size_t i = 0; i + 1 < build_id_hex.size(); i += 2) {
    int byte = 0;
    if (!absl::SimpleHexAtoi(build_id_hex.substr(i, 2), &byte)) {
      return absl::InvalidArgumentError(absl::StrCat("build id ", build_id_hex, " is not hex"));
    }
    id_bytes.push_back(static_cast<char>(byte));
  }
  int replaced = 0;
  for (size_t at = binary.find(id_bytes); at != std::string::npos && !id_bytes.empty();
       at = binary.find(id_bytes, at + 1)) {
    binary[at] = static_cast<char>(binary[at] ^ 0x5a);
    ++replaced;
  }
  if (replaced == 0) return absl::NotFoundError("the build id is not in the agent binary");
  return binary;
}

class FleetRestartTest : public FleetFixture {
 protected:
  FleetRestartTest() : FleetFixture("pgfleet-rst") {}

  void SetUp() override {
    ASSERT_NE(g_pg, nullptr) << "the shared PostgreSQL cluster did not start";
    ASSERT_NO_FATAL_FAILURE(FleetFixture::SetUp());
    ASSERT_NO_FATAL_FAILURE(StartController());
  }

  void TearDown() override {
    // The new processes are not the test's children (the old agents started them).
    new_agents_.clear();
    FleetFixture::TearDown();
  }

  void StartAgent(const std::string& id, const std::string& binary = PGFLEET_AGENT_BINARY) {
    AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                            {"pool_mode", "transaction"},
                                            {"default_pool_size", "10"},
                                            {"max_client_conn", "300"},
                                            {"admin_users", kAdminUser}});
    options.binary = binary;
    options.extra_args = LinkArgs(id, kEnv, controller_->address());
    // Several agents of one environment on this host: each keeps its own port.
    options.extra_args.push_back("--local-listeners");
    options.extra_args.push_back(absl::StrCat("--allow-path=", dir_));
    // The old process keeps its steady clients until pgbench ends.
    options.extra_args.push_back("--handover-drain-timeout=120s");
    StartLinkedAgent(id, options);
  }

  absl::StatusOr<std::vector<pgfleet::v1::Agent>> List() const {
    FleetctlResult result = Ctl({"agents", "list", "--env", kEnv, "--output", "json"});
    if (result.exit_code != 0) return absl::InternalError(result.Describe());
    PGF_ASSIGN_OR_RETURN(pgfleet::v1::ListAgentsResponse list,
                         ParseJson<pgfleet::v1::ListAgentsResponse>(result.stdout_text));
    return std::vector<pgfleet::v1::Agent>(list.agents().begin(), list.agents().end());
  }

  // Every agent by id once `ok` holds for the listing.
  absl::StatusOr<std::map<std::string, pgfleet::v1::Agent>> AwaitAgents(
      const std::string& what,
      const std::function<bool(const std::map<std::string, pgfleet::v1::Agent>&)>& ok) {
    std::map<std::string, pgfleet::v1::Agent> by_id;
    PGF_RETURN_IF_ERROR(PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          PGF_ASSIGN_OR_RETURN(std::vector<pgfleet::v1::Agent> agents, List());
          by_id.clear();
          std::vector<std::string> seen;
          for (const pgfleet::v1::Agent& agent : agents) {
            by_id[agent.agent_id()] = agent;
            seen.push_back(absl::StrCat(agent.agent_id(), agent.connected() ? " up" : " down",
                                        " pid ", agent.pid(), " v", agent.applied_version(),
                                        agent.binary_outdated() ? " outdated" : ""));
          }
          *note = absl::StrJoin(seen, ", ");
          return ok(by_id);
        },
        absl::Seconds(60), what, absl::Milliseconds(100)));
    return by_id;
  }

  // Starts the agents, then gives the environment a desired config they all run.
  void StartFleet(const std::map<std::string, std::string>& binaries) {
    for (const auto& [id, binary] : binaries) ASSERT_NO_FATAL_FAILURE(StartAgent(id, binary));
    const std::string path = dir_ + "/fleet.ini";
    PGF_ASSERT_OK(WriteFile(
        path, absl::StrCat("[databases]\n", kAppDb, " = host=127.0.0.1 port=", g_pg->port(),
                           " dbname=", kAppDb,
                           "\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 6432\n"
                           "unix_socket_dir =\nauth_type = scram-sha-256\nauth_file = ",
                           users_path_, "\nadmin_users = ", kAdminUser,
                           "\npool_mode = transaction\ndefault_pool_size = 10\n"
                           "max_client_conn = 300\n")));
    FleetctlResult pushed =
        Ctl({"config", "push", "--env", kEnv, "-f", path, "-m", "restarts", "--output", "json"});
    ASSERT_EQ(pushed.exit_code, 0) << pushed.Describe();
    PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion version,
                             ParseJson<pgfleet::v1::ConfigVersion>(pushed.stdout_text));
    FleetctlResult applied =
        Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", version.version())});
    ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
    const size_t count = binaries.size();
    PGF_ASSERT_OK_AND_ASSIGN(
        before_, AwaitAgents("every agent connected, running the pushed config, with metrics",
                             [&](const std::map<std::string, pgfleet::v1::Agent>& agents) {
                               if (agents.size() != count) return false;
                               for (const auto& [id, agent] : agents) {
                                 if (!agent.connected() ||
                                     agent.applied_version() != version.version() ||
                                     agent.pid() == 0 || !agent.has_last_metrics()) {
                                   return false;
                                 }
                               }
                               return true;
                             }));
  }

  absl::StatusOr<pgfleet::v1::Rollout> LatestRollout() const {
    FleetctlResult result = Ctl({"rollout", "status", "--env", kEnv, "--output", "json"});
    if (result.exit_code != 0 && result.exit_code != 5) {
      return absl::InternalError(result.Describe());
    }
    return ParseJson<pgfleet::v1::Rollout>(result.stdout_text);
  }

  std::map<std::string, pgfleet::v1::Agent> before_;
  std::vector<std::unique_ptr<NewAgentProcess>> new_agents_;
};

TEST_F(FleetRestartTest, RestartInWavesUnderLoadDropsNoClientAndKeepsOneIdPerAgent) {
  const std::vector<std::string> ids = {"r1", "r2", "r3"};
  ASSERT_NO_FATAL_FAILURE(StartFleet(
      {{"r1", PGFLEET_AGENT_BINARY}, {"r2", PGFLEET_AGENT_BINARY}, {"r3", PGFLEET_AGENT_BINARY}}));

  // Load through every agent: 3 x 7 steady clients (21, the 2-core test host's share of
  // "pgbench -c 20"), a connect-per-transaction loop and a writer each.
  std::vector<std::unique_ptr<BackgroundPgbench>> steady, connect_loops;
  std::vector<std::unique_ptr<RowWriter>> writers;
  for (const std::string& id : ids) {
    steady.push_back(std::make_unique<BackgroundPgbench>(
        port(id),
        std::vector<std::string>{"-S", "-c", "7", "-j", "1", "-T", absl::StrCat(kLoadSeconds)}));
    connect_loops.push_back(std::make_unique<BackgroundPgbench>(
        port(id),
        std::vector<std::string>{"-S", "-C", "-c", "1", "-T", absl::StrCat(kLoadSeconds)}));
    writers.push_back(std::make_unique<RowWriter>(port(id), "restart_writes"));
  }
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        for (const auto& writer : writers) {
          if (writer->acked_count() < 10) return false;
        }
        return true;
      },
      absl::Seconds(30), "the writers' first rows"));

  // One agent id each throughout: a watcher lists the agents while the restart runs.
  std::atomic<bool> stop{false};
  std::atomic<int> listings{0};
  std::mutex seen_mu;
  std::vector<std::string> bad_listings;
  std::thread watcher([&] {
    while (!stop) {
      FleetctlResult result = Ctl({"agents", "list", "--env", kEnv, "--output", "json"});
      absl::StatusOr<pgfleet::v1::ListAgentsResponse> list =
          ParseJson<pgfleet::v1::ListAgentsResponse>(result.stdout_text);
      if (!list.ok()) continue;
      listings++;
      std::set<std::string> distinct;
      for (const auto& agent : list->agents()) distinct.insert(agent.agent_id());
      if (list->agents_size() != 3 || distinct.size() != 3) {
        std::lock_guard<std::mutex> lock(seen_mu);
        bad_listings.push_back(list->DebugString());
      }
    }
  });

  FleetctlResult restart =
      Ctl({"agents", "restart", "--env", kEnv, "--waves", "1,100%", "--bake", "1s", "--watch"});
  stop = true;
  watcher.join();
  std::cout << restart.stdout_text;
  ASSERT_EQ(restart.exit_code, 0) << restart.Describe();
  EXPECT_TRUE(absl::StrContains(restart.stdout_text, "succeeded")) << restart.Describe();
  EXPECT_TRUE(absl::StrContains(restart.stdout_text, "agents restarted")) << restart.Describe();
  EXPECT_GT(listings.load(), 0);
  EXPECT_TRUE(bad_listings.empty()) << absl::StrJoin(bad_listings, "\n---\n");

  // Every agent is a new process, connected under its one id.
  PGF_ASSERT_OK_AND_ASSIGN(
      auto after, AwaitAgents("every agent connected as a new process",
                              [&](const std::map<std::string, pgfleet::v1::Agent>& agents) {
                                if (agents.size() != 3) return false;
                                for (const auto& [id, agent] : agents) {
                                  if (!agent.connected() || agent.pid() == before_.at(id).pid()) {
                                    return false;
                                  }
                                }
                                return true;
                              }));
  for (const std::string& id : ids) {
    EXPECT_NE(after.at(id).pid(), agent(id).pid()) << id;
    EXPECT_TRUE(ProcessRuns(after.at(id).pid())) << id;
    new_agents_.push_back(std::make_unique<NewAgentProcess>(after.at(id).pid()));
  }
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout rollout, LatestRollout());
  EXPECT_EQ(rollout.kind(), "restart");
  EXPECT_EQ(rollout.state(), "succeeded");
  ASSERT_EQ(rollout.agents_size(), 3);
  for (const auto& member : rollout.agents()) {
    EXPECT_EQ(member.state(), "applied") << member.DebugString();
    EXPECT_EQ(member.old_pid(), before_.at(member.agent_id()).pid()) << member.DebugString();
    EXPECT_EQ(member.new_pid(), after.at(member.agent_id()).pid()) << member.DebugString();
  }
  FleetctlResult listed = Ctl({"rollout", "list", "--env", kEnv});
  EXPECT_TRUE(absl::StrContains(listed.stdout_text, "restart")) << listed.Describe();

  // The new processes serve: more rows through each agent.
  std::vector<int64_t> at_restart;
  for (const auto& writer : writers) at_restart.push_back(writer->acked_count());
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        for (size_t i = 0; i < writers.size(); ++i) {
          if (writers[i]->acked_count() < at_restart[i] + 10) return false;
        }
        return true;
      },
      absl::Seconds(30), "rows written through every agent after the restart"));

  for (size_t i = 0; i < ids.size(); ++i) {
    const PgbenchSummary summary =
        steady[i]->ExpectClean(absl::StrCat("pgbench -c 7 through ", ids[i]));
    const PgbenchSummary connects =
        connect_loops[i]->ExpectClean(absl::StrCat("pgbench -C through ", ids[i]));
    std::cout << ids[i] << ": " << summary.processed << " steady and " << connects.processed
              << " connect-per-transaction transactions, " << summary.failed + connects.failed
              << " failed\n";
  }
  // The old processes had only pgbench's steady clients left: they exit by themselves.
  for (const std::string& id : ids) {
    absl::StatusOr<int> exited = agent(id).WaitForExit(absl::Seconds(60));
    ASSERT_TRUE(exited.ok()) << id << ": " << exited.status() << "\n" << agent(id).Diagnostics();
    EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0)
        << id << ": " << DescribeWaitStatus(*exited) << "\n"
        << agent(id).Diagnostics();
  }
  for (auto& writer : writers) writer->Stop();
  std::vector<int64_t> acked;
  for (const auto& writer : writers) {
    EXPECT_TRUE(writer->errors().empty()) << absl::StrJoin(writer->errors(), "\n");
    for (int64_t id : writer->acked()) acked.push_back(id);
  }
  PGF_ASSERT_OK_AND_ASSIGN(PgConn direct,
                           Connect(g_pg->ConnString(kAppDb, kAppUser, kAppPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(Rows rows, Query(direct.get(), "select id from restart_writes"));
  std::set<int64_t> stored;
  for (const std::vector<std::string>& row : rows) {
    int64_t id = 0;
    ASSERT_TRUE(absl::SimpleAtoi(row[0], &id));
    stored.insert(id);
  }
  for (int64_t id : acked) EXPECT_TRUE(stored.contains(id)) << "acknowledged row " << id;
  std::cout << "writers: " << acked.size() << " rows acknowledged, all present\n";
  // Still one agent each, all connected.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<pgfleet::v1::Agent> final_list, List());
  EXPECT_EQ(final_list.size(), 3u);
}

TEST_F(FleetRestartTest, NewProcessThatCannotStartFailsTheRolloutAndTheOldOneServes) {
  // f1 (first in wave order, alone in wave 1) runs from a copy that a broken upgrade replaces.
  const std::string binary = dir_ + "/pgfleet-agent-f1";
  PGF_ASSERT_OK_AND_ASSIGN(std::string agent_binary, ReadFile(PGFLEET_AGENT_BINARY));
  PGF_ASSERT_OK(InstallExecutable(binary, agent_binary));
  ASSERT_NO_FATAL_FAILURE(
      StartFleet({{"f1", binary}, {"f2", PGFLEET_AGENT_BINARY}, {"f3", PGFLEET_AGENT_BINARY}}));
  PGF_ASSERT_OK(InstallExecutable(binary, "#!/bin/sh\necho broken upgrade >&2\nexit 1\n"));

  FleetctlResult restart =
      Ctl({"agents", "restart", "--env", kEnv, "--waves", "1,100%", "--bake", "1s", "--watch"});
  std::cout << restart.stdout_text;
  EXPECT_EQ(restart.exit_code, 5) << restart.Describe();
  EXPECT_TRUE(absl::StrContains(restart.stdout_text, "failed")) << restart.Describe();
  EXPECT_TRUE(absl::StrContains(restart.stdout_text, "agent f1 could not restart"))
      << restart.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout rollout, LatestRollout());
  EXPECT_EQ(rollout.state(), "failed");
  EXPECT_EQ(rollout.failed_agent(), "f1");
  EXPECT_TRUE(absl::StrContains(rollout.reason(), "exit status 1")) << rollout.DebugString();
  for (const auto& member : rollout.agents()) {
    if (member.agent_id() == "f1") {
      EXPECT_EQ(member.state(), "failed");
    } else {
      // The rollout stopped before the next wave.
      EXPECT_EQ(member.state(), "waiting") << member.DebugString();
      EXPECT_EQ(member.new_pid(), 0);
    }
  }

  // f1 still runs its old process, connected, and serves; nobody else was restarted.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<pgfleet::v1::Agent> agents, List());
  ASSERT_EQ(agents.size(), 3u);
  for (const pgfleet::v1::Agent& listed : agents) {
    EXPECT_TRUE(listed.connected()) << listed.agent_id();
    EXPECT_EQ(listed.pid(), before_.at(listed.agent_id()).pid()) << listed.agent_id();
  }
  EXPECT_TRUE(agent("f1").IsRunning());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app,
                           Connect(TcpConnString(port("f1"), kAppDb, kAppUser, kAppPassword)));
  PGF_EXPECT_OK(Query(app.get(), "select 1").status());
}

TEST_F(FleetRestartTest, OnlyOutdatedRestartsOnlyTheAgentWhoseBinaryChanged) {
  const std::string binary = dir_ + "/pgfleet-agent-o2";
  PGF_ASSERT_OK_AND_ASSIGN(std::string agent_binary, ReadFile(PGFLEET_AGENT_BINARY));
  PGF_ASSERT_OK(InstallExecutable(binary, agent_binary));
  ASSERT_NO_FATAL_FAILURE(
      StartFleet({{"o1", PGFLEET_AGENT_BINARY}, {"o2", binary}, {"o3", PGFLEET_AGENT_BINARY}}));
  const std::string running_id = before_.at("o2").build_id();
  ASSERT_FALSE(running_id.empty());
  ASSERT_FALSE(absl::StartsWith(running_id, "sha256:")) << "the agent has no GNU build id";
  for (const auto& [id, listed] : before_) {
    EXPECT_FALSE(listed.binary_outdated()) << id;
    EXPECT_EQ(listed.on_disk_version(), before_.at(id).agent_version()) << listed.DebugString();
  }

  // Nothing is outdated yet: nothing to restart.
  FleetctlResult nothing = Ctl({"agents", "restart", "--env", kEnv, "--only-outdated"});
  EXPECT_EQ(nothing.exit_code, 1) << nothing.Describe();
  EXPECT_TRUE(absl::StrContains(nothing.stderr_text, "nothing to restart")) << nothing.Describe();

  // An upgrade lands on o2's host: another build at its path.
  PGF_ASSERT_OK_AND_ASSIGN(std::string upgraded, AgentWithAnotherBuildId(running_id));
  PGF_ASSERT_OK(InstallExecutable(binary, upgraded));
  PGF_ASSERT_OK_AND_ASSIGN(
      auto outdated, AwaitAgents("o2 reported outdated",
                                 [&](const std::map<std::string, pgfleet::v1::Agent>& agents) {
                                   return agents.count("o2") != 0 &&
                                          agents.at("o2").binary_outdated();
                                 }));
  const std::string new_id = outdated.at("o2").on_disk_build_id();
  EXPECT_NE(new_id, running_id);
  EXPECT_FALSE(outdated.at("o1").binary_outdated());
  FleetctlResult table = Ctl({"agents", "list", "--env", kEnv});
  EXPECT_TRUE(absl::StrContains(table.stdout_text, "(outdated)")) << table.Describe();
  // --version names the binary on disk: no agent has 9.9.9.
  FleetctlResult wrong = Ctl({"agents", "restart", "--env", kEnv, "--version", "9.9.9"});
  EXPECT_EQ(wrong.exit_code, 1) << wrong.Describe();

  FleetctlResult restart =
      Ctl({"agents", "restart", "--env", kEnv, "--only-outdated", "--version", new_id.substr(0, 12),
           "--waves", "100%", "--bake", "1s", "--watch"});
  std::cout << restart.stdout_text;
  ASSERT_EQ(restart.exit_code, 0) << restart.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout rollout, LatestRollout());
  ASSERT_EQ(rollout.agents_size(), 1) << rollout.DebugString();
  EXPECT_EQ(rollout.agents(0).agent_id(), "o2");
  EXPECT_TRUE(rollout.only_outdated());

  PGF_ASSERT_OK_AND_ASSIGN(
      auto after, AwaitAgents("o2 connected as the new build",
                              [&](const std::map<std::string, pgfleet::v1::Agent>& agents) {
                                return agents.size() == 3 && agents.at("o2").connected() &&
                                       agents.at("o2").build_id() == new_id;
                              }));
  new_agents_.push_back(std::make_unique<NewAgentProcess>(after.at("o2").pid()));
  EXPECT_NE(after.at("o2").pid(), before_.at("o2").pid());
  EXPECT_FALSE(after.at("o2").binary_outdated());
  EXPECT_EQ(after.at("o1").pid(), before_.at("o1").pid());
  EXPECT_EQ(after.at("o3").pid(), before_.at("o3").pid());
  // The old o2 process had no clients: it exits by itself.
  absl::StatusOr<int> exited = agent("o2").WaitForExit(absl::Seconds(60));
  ASSERT_TRUE(exited.ok()) << exited.status() << "\n" << agent("o2").Diagnostics();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app,
                           Connect(TcpConnString(port("o2"), kAppDb, kAppUser, kAppPassword)));
  PGF_EXPECT_OK(Query(app.get(), "select 1").status());
}

}  // namespace
}  // namespace pgfleet::testutil
