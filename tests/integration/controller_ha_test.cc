// Several controllers, one leader (issue 24), with real processes: a PostgreSQL 15 cluster that
// is both the agents' server and the controllers' store, three pgfleet-controllers on it
// (--db=postgres://, a short lease so failovers are quick), real pgfleet-agents given all three
// addresses, and fleetctl given all three. The leader is kill -9'd in the middle of a waves
// rollout and in the middle of a maintenance window: another controller leads, the rollout goes
// on from its stored state to completion with every agent applying each version once and in
// order, the window ends (resumes) rather than failing, and fleetctl commands issued meanwhile
// either succeed or fail as retryable (exit 3, "retry").
//
// PGFLEET_HA_AGENTS=N runs both scenarios with N agents instead of a handful
// (bench/controller_ha.sh: issue 24's 100-agent figures); each test prints its timings on
// "[ha-figures]" lines.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
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
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kEnv[] = "dev";
constexpr char kStoreUser[] = "fleet";
constexpr char kStorePassword[] = "Ha-Store-Pw-3";
constexpr int kBasePoolSize = 5;

[[maybe_unused]] auto* const kCluster =
    RegisterSharedPostgres(PostgresOptions{}, [](PostgresEnv& pg) -> absl::Status {
      PGF_RETURN_IF_ERROR(CreateAppDatabase(pg));
      return pg.CreateUser(kStoreUser, kStorePassword);
    });

// How many agents a scenario runs: `fallback`, or PGFLEET_HA_AGENTS.
int AgentCount(int fallback) {
  const char* value = getenv("PGFLEET_HA_AGENTS");
  int count = 0;
  if (value != nullptr && absl::SimpleAtoi(value, &count) && count > 0) return count;
  return fallback;
}

std::string Seconds(absl::Duration duration) {
  return absl::StrFormat("%.2f s", absl::ToDoubleSeconds(duration));
}

struct Lease {
  std::string holder;
  uint64_t fencing_token = 0;
};

// The versions an agent's log says it applied, in order ("config version N applied (ACK").
std::vector<uint64_t> AppliedVersions(const std::string& log) {
  std::vector<uint64_t> versions;
  constexpr absl::string_view kPrefix = "config version ";
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    const size_t at = line.find(kPrefix);
    if (at == absl::string_view::npos || !absl::StrContains(line, " applied (ACK")) continue;
    absl::string_view rest = line.substr(at + kPrefix.size());
    uint64_t version = 0;
    if (absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &version)) versions.push_back(version);
  }
  return versions;
}

class ControllerHaTest : public FleetFixture {
 protected:
  ControllerHaTest() : FleetFixture("pgfleet-ha") {}

  void SetUp() override {
    ASSERT_NE(g_pg, nullptr) << "the shared PostgreSQL cluster did not start";
    ASSERT_NO_FATAL_FAILURE(FleetFixture::SetUp());
    // Each test its own store database.
    store_db_ =
        absl::StrCat("fleet_", ::testing::UnitTest::GetInstance()->current_test_info()->name());
    for (char& c : store_db_) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    PGF_ASSERT_OK(g_pg->CreateDatabase(store_db_, kStoreUser));
  }

  // Three controllers on one PostgreSQL store; the first one started leads.
  void StartControllers() {
    const std::string db =
        absl::StrCat("postgres://", kStoreUser, ":", kStorePassword, "@127.0.0.1:", g_pg->port(),
                     "/", store_db_, "?sslmode=disable");
    for (int i = 0; i < 3; ++i) {
      ControllerOptions options;
      options.db_path = db;
      options.extra_args = {"--leader-lease=4s", "--leader-renew=1s"};
      ControllerProcess* controller = nullptr;
      ASSERT_NO_FATAL_FAILURE(StartController(std::move(options), &controller));
      all_.push_back(controller);
    }
    PGF_ASSERT_OK_AND_ASSIGN(Lease lease, AwaitLeader(""));
    ASSERT_EQ(lease.holder, all_[0]->address());
    // Followers first: agents and fleetctl must find their way to the leader.
    list_ = absl::StrCat(all_[1]->address(), ",", all_[2]->address(), ",", all_[0]->address());
    ctl_address_ = list_;
  }

  absl::StatusOr<Lease> ReadLease() const {
    PGF_ASSIGN_OR_RETURN(Rows rows,
                         g_pg->Exec("SELECT holder, fencing_token FROM leader_lease", store_db_));
    if (rows.size() != 1) return absl::NotFoundError("no lease row");
    Lease lease;
    lease.holder = rows[0][0];
    if (!absl::SimpleAtoi(rows[0][1], &lease.fencing_token)) {
      return absl::InternalError(absl::StrCat("fencing token '", rows[0][1], "'"));
    }
    return lease;
  }

  // A lease held by someone other than `not_holder` (and whose holder says it leads).
  absl::StatusOr<Lease> AwaitLeader(const std::string& not_holder) const {
    Lease found;
    PGF_RETURN_IF_ERROR(PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<Lease> lease = ReadLease();
          if (!lease.ok()) {
            *note = std::string(lease.status().message());
            return false;
          }
          *note = absl::StrCat(lease->holder, " token ", lease->fencing_token);
          found = *lease;
          return lease->holder != not_holder;
        },
        absl::Seconds(60), absl::StrCat("a leader other than '", not_holder, "'"),
        absl::Milliseconds(100)));
    return found;
  }

  ControllerProcess* ByAddress(const std::string& address) const {
    for (ControllerProcess* controller : all_) {
      if (controller->address() == address) return controller;
    }
    return nullptr;
  }

  void StartAgents(int count) {
    for (int i = 1; i <= count; ++i) {
      const std::string id = absl::StrCat("ha-", i);
      AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                              {"pool_mode", "transaction"},
                                              {"default_pool_size", absl::StrCat(kBasePoolSize)},
                                              {"admin_users", kAdminUser}});
      options.extra_args = LinkArgs(id, kEnv, list_);
      options.extra_args.push_back(absl::StrCat("--allow-path=", dir_));
      options.extra_args.push_back("--local-listeners");
      ASSERT_NO_FATAL_FAILURE(StartLinkedAgent(id, options));
      ids_.push_back(id);
    }
  }

  // fleetctl `args` against `address`.
  FleetctlResult CtlOn(const std::string& address, const std::vector<std::string>& args) {
    const std::string saved = ctl_address_;
    ctl_address_ = address;
    FleetctlResult result = Ctl(args);
    ctl_address_ = saved;
    return result;
  }

  absl::StatusOr<pgfleet::v1::ListAgentsResponse> ListAgents(const std::string& address) {
    FleetctlResult listed = CtlOn(address, {"agents", "list", "--env", kEnv, "--output", "json"});
    if (listed.exit_code != 0) return absl::InternalError(listed.Describe());
    return ParseJson<pgfleet::v1::ListAgentsResponse>(listed.stdout_text);
  }

  // Every agent connected and on `version`, as `address` (any controller) reports it.
  absl::Status AwaitAgents(const std::string& address, uint64_t version) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<pgfleet::v1::ListAgentsResponse> list = ListAgents(address);
          if (!list.ok()) {
            *note = std::string(list.status().message());
            return false;
          }
          int ready = 0;
          for (const pgfleet::v1::Agent& agent : list->agents()) {
            if (agent.connected() && (version == 0 || agent.applied_version() == version)) ++ready;
          }
          *note = absl::StrCat(ready, " of ", ids_.size(), " ready");
          return ready == static_cast<int>(ids_.size());
        },
        absl::Seconds(90), absl::StrCat("agents connected on v", version), absl::Milliseconds(200));
  }

  std::string FleetIni(const std::map<std::string, std::string>& overrides) const {
    std::map<std::string, std::string> settings = {
        {"listen_addr", "127.0.0.1"},
        {"unix_socket_dir", ""},
        {"auth_type", "scram-sha-256"},
        {"auth_file", users_path_},
        {"admin_users", kAdminUser},
        {"pool_mode", "transaction"},
        {"default_pool_size", absl::StrCat(kBasePoolSize)}};
    for (const auto& [key, value] : overrides) settings[key] = value;
    std::string ini = absl::StrCat("[databases]\n", kAppDb, " = host=127.0.0.1 port=", g_pg->port(),
                                   " dbname=", kAppDb, "\n\n[pgbouncer]\n");
    for (const auto& [key, value] : settings) absl::StrAppend(&ini, key, " = ", value, "\n");
    return ini;
  }

  // `config push` through the controller list (a follower hands it to the leader).
  absl::StatusOr<uint64_t> Push(const std::map<std::string, std::string>& overrides) {
    const std::string path = absl::StrCat(dir_, "/push-", ++pushes_, ".ini");
    PGF_RETURN_IF_ERROR(WriteFile(path, FleetIni(overrides)));
    FleetctlResult result =
        Ctl({"config", "push", "--env", kEnv, "-f", path, "-m", "ha", "--output", "json"});
    if (result.exit_code != 0) return absl::InternalError(result.Describe());
    PGF_ASSIGN_OR_RETURN(pgfleet::v1::ConfigVersion version,
                         ParseJson<pgfleet::v1::ConfigVersion>(result.stdout_text));
    return version.version();
  }

  // A write that touches no agent of kEnv: a config pushed to another environment.
  std::vector<std::string> UnrelatedWrite() {
    const std::string path = absl::StrCat(dir_, "/staging.ini");
    EXPECT_TRUE(WriteFile(path, FleetIni({})).ok());
    return {"config", "push", "--env", "staging", "-f", path, "-m", "meanwhile"};
  }

  // A fleetctl command issued while the leader is gone: it succeeds, or it fails as
  // retryable (exit 3, unreachable, with a message that says to retry).
  void ExpectSucceedsOrRetryable(const std::vector<std::string>& args) {
    FleetctlResult result = Ctl(args);
    if (result.exit_code == 0) {
      ++succeeded_meanwhile_;
      return;
    }
    ++retryable_meanwhile_;
    EXPECT_EQ(result.exit_code, 3) << result.Describe();
    EXPECT_TRUE(absl::StrContains(result.stderr_text, "retry")) << result.Describe();
  }

  // The rollout's row in the store: state and current wave.
  absl::StatusOr<std::pair<std::string, int>> RolloutRow(uint64_t id) const {
    PGF_ASSIGN_OR_RETURN(Rows rows,
                         g_pg->Exec(absl::StrCat("SELECT state, current_wave FROM rollouts "
                                                 "WHERE id = ",
                                                 id),
                                    store_db_));
    if (rows.size() != 1) return absl::NotFoundError(absl::StrCat("no rollout ", id));
    int wave = 0;
    if (!absl::SimpleAtoi(rows[0][1], &wave)) return absl::InternalError(rows[0][1]);
    return std::make_pair(rows[0][0], wave);
  }

  absl::StatusOr<std::string> WindowState(uint64_t id) const {
    PGF_ASSIGN_OR_RETURN(
        Rows rows, g_pg->Exec(absl::StrCat("SELECT state FROM maintenance_windows WHERE id = ", id),
                              store_db_));
    if (rows.size() != 1) return absl::NotFoundError(absl::StrCat("no window ", id));
    return rows[0][0];
  }

  std::string store_db_;
  std::vector<ControllerProcess*> all_;
  std::string list_;
  std::vector<std::string> ids_;
  int pushes_ = 0;
  int succeeded_meanwhile_ = 0;
  int retryable_meanwhile_ = 0;
};

TEST_F(ControllerHaTest, LeaderKilledMidRolloutAnotherFinishesIt) {
  ASSERT_NO_FATAL_FAILURE(StartControllers());
  ASSERT_NO_FATAL_FAILURE(StartAgents(AgentCount(4)));
  // Agents were given the followers first: they moved on until the leader took them.
  PGF_ASSERT_OK(AwaitAgents(all_[0]->address(), 0));
  // A follower serves reads: it shows the agents linked (to the leader).
  PGF_ASSERT_OK(AwaitAgents(all_[1]->address(), 0));
  // A write through a follower (the first of the list) reaches the leader.
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t base, Push({}));
  FleetctlResult applied = CtlOn(
      all_[2]->address(), {"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", base)});
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  PGF_ASSERT_OK(AwaitAgents(all_[0]->address(), base));
  // A follower's environment summary counts the agents linked to the leader, and converged.
  FleetctlResult envs = CtlOn(all_[1]->address(), {"env", "list", "--output", "json"});
  ASSERT_EQ(envs.exit_code, 0) << envs.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListEnvironmentsResponse listed,
                           ParseJson<pgfleet::v1::ListEnvironmentsResponse>(envs.stdout_text));
  bool described = false;
  for (const pgfleet::v1::Environment& env : listed.environments()) {
    if (env.name() != kEnv) continue;
    described = true;
    EXPECT_EQ(env.agents_connected(), static_cast<int>(ids_.size())) << envs.stdout_text;
    EXPECT_EQ(env.agents_converged(), static_cast<int>(ids_.size())) << envs.stdout_text;
  }
  EXPECT_TRUE(described) << envs.stdout_text;

  PGF_ASSERT_OK_AND_ASSIGN(uint64_t next, Push({{"default_pool_size", "7"}}));
  FleetctlResult start =
      Ctl({"rollout", "start", "--env", kEnv, "--version", absl::StrCat("v", next), "--waves",
           "1,2,3,100%", "--bake", "3s", "--output", "json"});
  ASSERT_EQ(start.exit_code, 0) << start.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout rollout,
                           ParseJson<pgfleet::v1::Rollout>(start.stdout_text));

  // In the middle: the canary is done and the second wave has begun.
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(auto row, RolloutRow(rollout.id()));
        *note = absl::StrCat(row.first, " wave ", row.second);
        if (row.first != "running") return absl::InternalError(*note);
        return row.second >= 1;
      },
      absl::Seconds(60), "the rollout's second wave", absl::Milliseconds(50)));
  PGF_ASSERT_OK_AND_ASSIGN(Lease before, ReadLease());
  ControllerProcess* leader = ByAddress(before.holder);
  ASSERT_NE(leader, nullptr) << before.holder;
  PGF_ASSERT_OK(leader->Kill9());
  const absl::Time killed = absl::Now();

  // Meanwhile: reads and writes through the list succeed or fail as retryable.
  for (int i = 0; i < 3; ++i) {
    ExpectSucceedsOrRetryable({"rollout", "status", "--env", kEnv});
    ExpectSucceedsOrRetryable(UnrelatedWrite());
  }
  PGF_ASSERT_OK_AND_ASSIGN(Lease after, AwaitLeader(before.holder));
  const absl::Duration new_leader = absl::Now() - killed;
  EXPECT_GT(after.fencing_token, before.fencing_token);
  ASSERT_NE(ByAddress(after.holder), nullptr) << after.holder;
  PGF_ASSERT_OK(AwaitAgents(after.holder, 0));
  const absl::Duration agents_back = absl::Now() - killed;

  // The new leader finishes the rollout from its stored state.
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(auto row, RolloutRow(rollout.id()));
        *note = absl::StrCat(row.first, " wave ", row.second);
        if (row.first != "running") {
          if (row.first == "succeeded") return true;
          return absl::InternalError(*note);
        }
        return false;
      },
      absl::Seconds(120), "the rollout to succeed on the new leader", absl::Milliseconds(200)));
  const absl::Duration finished = absl::Now() - killed;
  PGF_ASSERT_OK(AwaitAgents(after.holder, next));
  printf(
      "[ha-figures] rollout: %zu agents; after kill -9 of the leader: new leader %s, every "
      "agent on it %s, rollout succeeded %s; fleetctl meanwhile: %d succeeded, %d retryable\n",
      ids_.size(), Seconds(new_leader).c_str(), Seconds(agents_back).c_str(),
      Seconds(finished).c_str(), succeeded_meanwhile_, retryable_meanwhile_);
  // Once a leader is there, a write through the list succeeds.
  FleetctlResult pushed = Ctl(UnrelatedWrite());
  EXPECT_EQ(pushed.exit_code, 0) << pushed.Describe();

  // No agent was given a step twice or out of order: each applied base, then next, once each.
  for (const std::string& id : ids_) {
    EXPECT_EQ(AppliedVersions(agent(id).LogContents()), (std::vector<uint64_t>{base, next}))
        << id << ":\n"
        << agent(id).LogContents();
  }
  PGF_ASSERT_OK_AND_ASSIGN(
      Rows states,
      g_pg->Exec(absl::StrCat("SELECT agent_id, state FROM rollout_agents WHERE rollout_id = ",
                              rollout.id(), " ORDER BY agent_id"),
                 store_db_));
  ASSERT_EQ(states.size(), ids_.size());
  for (const auto& row : states) EXPECT_EQ(row[1], "applied") << row[0];
  // The deposed leader's fencing token is no longer the lease's.
  EXPECT_TRUE(absl::StrContains(ByAddress(after.holder)->LogContents(),
                                absl::StrCat("leads (fencing token ", after.fencing_token, ")")))
      << ByAddress(after.holder)->LogContents();
}

TEST_F(ControllerHaTest, LeaderKilledMidMaintenanceWindowItStillEnds) {
  ASSERT_NO_FATAL_FAILURE(StartControllers());
  ASSERT_NO_FATAL_FAILURE(StartAgents(AgentCount(3)));
  PGF_ASSERT_OK(AwaitAgents(all_[0]->address(), 0));
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t base, Push({}));
  FleetctlResult applied =
      Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", base)});
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  PGF_ASSERT_OK(AwaitAgents(all_[0]->address(), base));

  const absl::Time at = absl::Now() + absl::Seconds(3);
  FleetctlResult schedule = Ctl({"maintenance", "schedule", "--env", kEnv, "--db", kAppDb, "--at",
                                 absl::FormatTime(absl::RFC3339_full, at, absl::UTCTimeZone()),
                                 "--duration", "15s", "--reason", "ha", "--output", "json"});
  ASSERT_EQ(schedule.exit_code, 0) << schedule.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::MaintenanceWindow window,
                           ParseJson<pgfleet::v1::MaintenanceWindow>(schedule.stdout_text));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(*note, WindowState(window.id()));
        if (*note == "failed" || *note == "completed") return absl::InternalError(*note);
        return *note == "paused";
      },
      absl::Seconds(30), "the window to pause every agent", absl::Milliseconds(50)));

  PGF_ASSERT_OK_AND_ASSIGN(Lease before, ReadLease());
  ControllerProcess* leader = ByAddress(before.holder);
  ASSERT_NE(leader, nullptr) << before.holder;
  PGF_ASSERT_OK(leader->Kill9());
  const absl::Time killed = absl::Now();
  ExpectSucceedsOrRetryable({"maintenance", "list", "--env", kEnv});
  ExpectSucceedsOrRetryable(UnrelatedWrite());
  PGF_ASSERT_OK_AND_ASSIGN(Lease after, AwaitLeader(before.holder));
  const absl::Duration new_leader = absl::Now() - killed;
  EXPECT_GT(after.fencing_token, before.fencing_token);

  // The new leader ends the window when it is due: completed, not missed or failed.
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(*note, WindowState(window.id()));
        if (*note == "failed") return absl::InternalError(*note);
        return *note == "completed";
      },
      absl::Seconds(60), "the window to complete on the new leader", absl::Milliseconds(100)));
  // The window's end as scheduled (at + 15 s) against when it was seen completed.
  printf(
      "[ha-figures] window: %zu agents; after kill -9 of the leader: new leader %s; the "
      "window completed %s after its scheduled end; fleetctl meanwhile: %d succeeded, %d "
      "retryable\n",
      ids_.size(), Seconds(new_leader).c_str(),
      Seconds(absl::Now() - (at + absl::Seconds(15))).c_str(), succeeded_meanwhile_,
      retryable_meanwhile_);
  // Every agent was told to resume, by the leader of the window's end.
  PGF_ASSERT_OK_AND_ASSIGN(
      Rows resumed,
      g_pg->Exec(absl::StrCat("SELECT DISTINCT agent_id FROM commands WHERE kind = 'resume' AND "
                              "args LIKE '%window=",
                              window.id(), "%' ORDER BY agent_id"),
                 store_db_));
  std::vector<std::string> resumed_ids;
  for (const auto& row : resumed) resumed_ids.push_back(row[0]);
  std::vector<std::string> expected_ids = ids_;
  std::sort(expected_ids.begin(), expected_ids.end());  // As SQL orders them ("ha-10" < "ha-2").
  EXPECT_EQ(resumed_ids, expected_ids);
  // The window is stored completed before its resumes reach every agent (with 100 agents that
  // takes a moment): each agent's log is awaited, not read once.
  for (const std::string& id : ids_) {
    PGF_EXPECT_OK(PollUntil(
        [&](std::string*) -> absl::StatusOr<bool> {
          return absl::StrContains(agent(id).LogContents(),
                                   absl::StrCat("controller: RESUME ", kAppDb));
        },
        absl::Seconds(30), absl::StrCat(id, " told to resume by the controller")));
  }

  // An operator's command given to a follower reaches the agents (streaming to the leader).
  std::string follower;
  for (ControllerProcess* controller : all_) {
    if (controller->address() != before.holder && controller->address() != after.holder) {
      follower = controller->address();
    }
  }
  ASSERT_FALSE(follower.empty());
  FleetctlResult reload = CtlOn(follower, {"reload", "--env", kEnv});
  EXPECT_EQ(reload.exit_code, 0) << reload.Describe();
  for (const std::string& id : ids_) {
    PGF_EXPECT_OK(PollUntil(
        [&](std::string*) -> absl::StatusOr<bool> {
          return absl::StrContains(agent(id).LogContents(), "controller: RELOAD");
        },
        absl::Seconds(30), absl::StrCat(id, " told to reload through ", follower)));
  }
}

}  // namespace
}  // namespace pgfleet::testutil
