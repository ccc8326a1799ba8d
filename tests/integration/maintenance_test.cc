// Maintenance windows end to end (issue #6), with real processes only: one PostgreSQL 15
// cluster, a pgfleet-controller on its own SQLite file, two pgfleet-agents in environment "dev"
// and the fleetctl binary as an operator runs it.
//
// Covers: a real PostgreSQL restart inside a window under a steady insert load (no acknowledged
// row lost, no client error); a drain blocked by an open transaction (all or nothing, the report
// names the holder); agents resuming at the window's end with the controller kill -9'd; queued
// clients outliving query_wait_timeout during a window; agents re-joining during and after a
// window; a scheduled window starting and ending on time; a rollout holding during a window;
// overlapping windows refused.
//
// Every test starts its own controller and agents; the PostgreSQL cluster is shared by the
// binary (tests run one after another, so the restart test may restart it). Nothing waits with
// a bare sleep: tests poll a condition with a deadline.

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/json.h"
#include "tests/testutil/log_lines.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kEnv[] = "dev";
constexpr char kRowsTable[] = "maintenance_rows";

[[maybe_unused]] auto* const kCluster =
    RegisterSharedPostgres(PostgresOptions{}, [](PostgresEnv& pg) -> absl::Status {
      PGF_RETURN_IF_ERROR(CreateAppDatabase(pg));
      absl::StatusOr<PgConn> conn = Connect(pg.ConnString(kAppDb, kAppUser, kAppPassword));
      if (!conn.ok()) return conn.status();
      return Query(conn->get(), absl::StrCat("CREATE TABLE ", kRowsTable,
                                             " (writer int, seq int, PRIMARY KEY (writer, seq))"))
          .status();
    });

// --- libpq with bounded waits --------------------------------------------------------------------

// Runs one statement and waits at most `timeout` for its results; the command tag of the last
// result, or the error.
absl::StatusOr<std::string> ExecWithin(PGconn* conn, const std::string& sql,
                                       absl::Duration timeout) {
  if (PQsendQuery(conn, sql.c_str()) != 1) return ResultError(conn, nullptr);
  const absl::Time deadline = absl::Now() + timeout;
  std::string tag;
  absl::Status error;
  while (true) {
    absl::StatusOr<PgResult> result =
        GetResultWithin(conn, std::max(deadline - absl::Now(), absl::Milliseconds(1)));
    if (!result.ok()) return result.status();
    if (*result == nullptr) break;
    const ExecStatusType status = PQresultStatus(result->get());
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && error.ok()) {
      error = ResultError(conn, result->get());
    }
    tag = PQcmdStatus(result->get());
  }
  if (!error.ok()) return error;
  return tag;
}

// "127.0.0.1:PORT" of the client end of a connection, as the agent sees its peer.
std::string LocalAddress(PGconn* conn) {
  sockaddr_in address{};
  socklen_t length = sizeof(address);
  if (getsockname(PQsocket(conn), reinterpret_cast<sockaddr*>(&address), &length) != 0) return "?";
  char host[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &address.sin_addr, host, sizeof(host));
  return absl::StrCat(host, ":", ntohs(address.sin_port));
}

// --- the admin console --------------------------------------------------------------------------

absl::Status AdminCommand(int port, const std::string& command) {
  absl::StatusOr<PgConn> conn =
      Connect(TcpConnString(port, "pgbouncer", kAdminUser, kAdminPassword));
  if (!conn.ok()) return conn.status();
  return Query(conn->get(), command).status();
}

// SHOW STATE as key -> value (active, paused, suspended, paused_databases, pause_deadline).
absl::StatusOr<NamedRow> AdminState(int port) {
  absl::StatusOr<std::vector<NamedRow>> rows = AdminShow(port, "SHOW STATE");
  if (!rows.ok()) return rows.status();
  NamedRow state;
  for (NamedRow& row : *rows) state[row["key"]] = row["value"];
  return state;
}

// Whether the agent holds appdb paused (by itself or through a pause of every database).
absl::StatusOr<bool> AppdbPaused(int port) {
  absl::StatusOr<NamedRow> state = AdminState(port);
  if (!state.ok()) return state.status();
  return (*state)["paused"] == "yes" ||
         absl::c_linear_search(absl::StrSplit((*state)["paused_databases"], ','), kAppDb);
}

// SHOW POOLS cl_waiting of appdb/app (0 when the pool does not exist yet).
absl::StatusOr<int64_t> ClientsWaiting(int port) {
  absl::StatusOr<std::vector<NamedRow>> rows = AdminShow(port, "SHOW POOLS");
  if (!rows.ok()) return rows.status();
  for (NamedRow& row : *rows) {
    if (row["database"] != kAppDb || row["user"] != kAppUser) continue;
    int64_t value = 0;
    if (!absl::SimpleAtoi(row["cl_waiting"], &value)) {
      return absl::InternalError(absl::StrCat("SHOW POOLS cl_waiting = '", row["cl_waiting"], "'"));
    }
    return value;
  }
  return 0;
}

// --- clients inserting rows ---------------------------------------------------------------------

// Threads that insert (writer, seq) rows in explicit transactions (BEGIN, INSERT, COMMIT as three
// round trips, so a pause has transactions to wait for) through the agents, each remembering the
// rows whose COMMIT it saw acknowledged and every error it saw.
class Writers {
 public:
  Writers(const std::vector<int>& ports, int per_port) {
    for (int port : ports) {
      for (int i = 0; i < per_port; ++i) {
        auto writer = std::make_unique<Writer>();
        writer->id = static_cast<int>(writers_.size()) + 1;
        writer->port = port;
        writers_.push_back(std::move(writer));
      }
    }
    for (auto& writer : writers_) {
      Writer* w = writer.get();
      w->thread = std::thread([this, w] { Run(*w); });
    }
  }
  ~Writers() { Stop(); }

  void Stop() {
    stop_ = true;
    for (auto& writer : writers_) {
      if (writer->thread.joinable()) writer->thread.join();
    }
  }

  // The fewest rows any writer has seen acknowledged so far.
  int64_t MinAcked() const {
    int64_t least = INT64_MAX;
    for (const auto& writer : writers_) least = std::min<int64_t>(least, writer->acked_count);
    return least;
  }
  int64_t TotalAcked() const {
    int64_t total = 0;
    for (const auto& writer : writers_) total += writer->acked_count;
    return total;
  }
  // After Stop().
  std::set<std::pair<int, int>> AckedRows() const {
    std::set<std::pair<int, int>> rows;
    for (const auto& writer : writers_) {
      for (int seq : writer->acked) rows.insert({writer->id, seq});
    }
    return rows;
  }
  std::vector<std::string> Errors() const {
    std::lock_guard<std::mutex> lock(errors_mu_);
    return errors_;
  }

 private:
  struct Writer {
    int id = 0;
    int port = 0;
    std::vector<int> acked;  // Written by the thread only; read after Stop().
    std::atomic<int64_t> acked_count{0};
    std::thread thread;
  };

  void Fail(const Writer& writer, const std::string& what) {
    std::lock_guard<std::mutex> lock(errors_mu_);
    errors_.push_back(
        absl::StrCat("writer ", writer.id, " (agent port ", writer.port, "): ", what));
  }

  void Run(Writer& writer) {
    absl::StatusOr<PgConn> conn =
        Connect(TcpConnString(writer.port, kAppDb, kAppUser, kAppPassword));
    if (!conn.ok()) {
      Fail(writer, absl::StrCat("connect: ", conn.status().ToString()));
      return;
    }
    // A query queued behind the pause waits for the restart and the resume; 60 s is far beyond
    // what the test needs and keeps a broken pooler from hanging the test forever.
    const absl::Duration timeout = absl::Seconds(60);
    for (int seq = 1; !stop_; ++seq) {
      for (const std::string& sql :
           {std::string("BEGIN"),
            absl::StrCat("INSERT INTO ", kRowsTable, " VALUES (", writer.id, ", ", seq, ")")}) {
        absl::StatusOr<std::string> done = ExecWithin(conn->get(), sql, timeout);
        if (!done.ok()) {
          Fail(writer, absl::StrCat("seq ", seq, ": ", sql, ": ", done.status().ToString()));
          return;
        }
      }
      absl::StatusOr<std::string> commit = ExecWithin(conn->get(), "COMMIT", timeout);
      if (!commit.ok() || *commit != "COMMIT") {
        Fail(writer,
             absl::StrCat("seq ", seq, ": COMMIT: ",
                          commit.ok() ? "answered " + *commit : commit.status().ToString()));
        return;
      }
      writer.acked.push_back(seq);
      ++writer.acked_count;
      // Pacing, not synchronisation: a steady rate of a few hundred transactions a second.
      absl::SleepFor(absl::Milliseconds(5));
    }
  }

  std::vector<std::unique_ptr<Writer>> writers_;
  std::atomic<bool> stop_{false};
  mutable std::mutex errors_mu_;
  std::vector<std::string> errors_;
};

// --- the fixture --------------------------------------------------------------------------------

class MaintenanceTest : public FleetFixture {
 protected:
  MaintenanceTest() : FleetFixture("pgfleet-maint") {}

  const std::vector<std::string> ids_ = {"dev-1", "dev-2"};

  void SetUp() override {
    ASSERT_NE(g_pg, nullptr) << "the shared PostgreSQL cluster did not start";
    ASSERT_NO_FATAL_FAILURE(FleetFixture::SetUp());
  }

  // A controller and agents dev-1 and dev-2 in environment dev, connected. `settings` are extra
  // [pgbouncer] keys of the agents' local ini.
  void StartFleet(const std::map<std::string, std::string>& settings = {}) {
    ASSERT_NO_FATAL_FAILURE(StartController());
    for (const std::string& id : ids_) {
      std::map<std::string, std::string> agent_settings = {{"auth_type", "scram-sha-256"},
                                                           {"pool_mode", "transaction"},
                                                           {"default_pool_size", "10"},
                                                           {"max_client_conn", "100"},
                                                           {"admin_users", kAdminUser}};
      for (const auto& [key, value] : settings) agent_settings[key] = value;
      AgentOptions& agent_options = agent_options_[id] = AppAgentOptions(agent_settings);
      agent_options.extra_args = LinkArgs(id, kEnv, controller_->address());
      // Pushed configs name the auth_file in dir_.
      agent_options.extra_args.push_back(absl::StrCat("--allow-path=", dir_));
      // Every agent of the environment runs on this host: each keeps its own port.
      agent_options.extra_args.push_back("--local-listeners");
      ASSERT_NO_FATAL_FAILURE(StartAgent(id));
    }
    PGF_ASSERT_OK(WaitConnected(ids_));
  }

  void StartAgent(const std::string& id) { StartLinkedAgent(id, agent_options_[id]); }

  // SIGTERM (a clean exit), then the same agent again: same id and state dir, a new port.
  void RestartAgent(const std::string& id) {
    absl::StatusOr<int> exit_status = agents_.at(id)->Stop(absl::Seconds(10));
    ASSERT_TRUE(exit_status.ok()) << id << ": " << exit_status.status();
    EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0)
        << id << ": " << DescribeWaitStatus(*exit_status);
    old_agents_.push_back(std::move(agents_.at(id)));  // Keeps its dir for diagnostics.
    agents_.erase(id);
    ASSERT_NO_FATAL_FAILURE(StartAgent(id));
  }

  absl::StatusOr<pgfleet::v1::ListAgentsResponse> ListAgents() const {
    FleetctlResult result = Ctl({"agents", "list", "--env", kEnv, "--output", "json"});
    if (result.exit_code != 0) return absl::InternalError(result.Describe());
    return ParseJson<pgfleet::v1::ListAgentsResponse>(result.stdout_text);
  }

  absl::Status WaitForAgents(
      const std::vector<std::string>& ids, const std::string& what,
      const std::function<bool(const pgfleet::v1::Agent&)>& condition) const {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<pgfleet::v1::ListAgentsResponse> list = ListAgents();
          if (!list.ok()) {
            *note = std::string(list.status().message());
            return false;
          }
          std::vector<std::string> seen;
          int matching = 0;
          for (const auto& a : list->agents()) {
            seen.push_back(absl::StrCat(a.agent_id(), a.connected() ? " up" : " down", " v",
                                        a.applied_version()));
            if (absl::c_linear_search(ids, a.agent_id()) && condition(a)) ++matching;
          }
          *note = absl::StrJoin(seen, ", ");
          return matching == static_cast<int>(ids.size());
        },
        absl::Seconds(30), what, absl::Milliseconds(100));
  }

  absl::Status WaitConnected(const std::vector<std::string>& ids) const {
    return WaitForAgents(ids, absl::StrCat(absl::StrJoin(ids, ","), " connected"),
                         [](const pgfleet::v1::Agent& a) { return a.connected(); });
  }

  // `fleetctl maintenance show ID --output json`.
  absl::StatusOr<pgfleet::v1::MaintenanceWindow> ShowWindow(uint64_t id) const {
    FleetctlResult result = Ctl({"maintenance", "show", absl::StrCat(id), "--output", "json"});
    if (result.exit_code != 0 && result.exit_code != 5)
      return absl::InternalError(result.Describe());
    return ParseJson<pgfleet::v1::MaintenanceWindow>(result.stdout_text);
  }

  absl::Status WaitWindowState(uint64_t id, const std::string& state,
                               absl::Duration timeout) const {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<pgfleet::v1::MaintenanceWindow> window = ShowWindow(id);
          if (!window.ok()) return window.status();
          *note = absl::StrCat(window->state(), " ", window->failure());
          return window->state() == state;
        },
        timeout, absl::StrCat("window ", id, " to be ", state), absl::Milliseconds(100));
  }

  // Polls SHOW STATE until appdb's paused state on agent `id` is `paused`.
  absl::Status WaitAppdbPaused(const std::string& id, bool paused,
                               absl::Duration timeout = absl::Seconds(15)) {
    const int agent_port = port(id);
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<bool> is_paused = AppdbPaused(agent_port);
          if (!is_paused.ok()) return is_paused.status();
          *note = *is_paused ? "paused" : "not paused";
          return *is_paused == paused;
        },
        timeout, absl::StrCat(id, paused ? " to pause appdb" : " to resume appdb"));
  }

  absl::Status WaitClientsWaiting(const std::string& id, int64_t at_least) {
    const int agent_port = port(id);
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<int64_t> waiting = ClientsWaiting(agent_port);
          if (!waiting.ok()) return waiting.status();
          *note = absl::StrCat("cl_waiting ", *waiting);
          return *waiting >= at_least;
        },
        absl::Seconds(10), absl::StrCat(at_least, " clients queued on ", id));
  }

  // A fleet config for `fleetctl config push` (agents keep their own listen port on reload).
  std::string FleetIni(int listen_port, const std::string& pool_size) const {
    return absl::StrCat(
        "[databases]\n", kAppDb, " = host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb,
        "\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = ", listen_port,
        "\nunix_socket_dir =\nauth_type = scram-sha-256\nauth_file = ", users_path_,
        "\nadmin_users = ", kAdminUser,
        "\npool_mode = transaction\ndefault_pool_size = ", pool_size, "\nmax_client_conn = 100\n");
  }

  absl::StatusOr<uint64_t> Push(const std::string& ini) {
    const std::string path = absl::StrCat(dir_, "/push-", ++pushes_, ".ini");
    PGF_RETURN_IF_ERROR(WriteFile(path, ini));
    FleetctlResult result = Ctl({"config", "push", "--env", kEnv, "-f", path, "-m",
                                 "maintenance test", "--output", "json"});
    if (result.exit_code != 0) return absl::InternalError(result.Describe());
    absl::StatusOr<pgfleet::v1::ConfigVersion> version =
        ParseJson<pgfleet::v1::ConfigVersion>(result.stdout_text);
    if (!version.ok()) return version.status();
    return version->version();
  }

  // A client connected to agent `id` that has run one query (so its login is done).
  absl::StatusOr<PgConn> ReadyClient(const std::string& id) {
    absl::StatusOr<PgConn> conn = Connect(TcpConnString(port(id), kAppDb, kAppUser, kAppPassword));
    if (!conn.ok()) return conn.status();
    absl::StatusOr<std::string> warm = ExecWithin(conn->get(), "select 1", absl::Seconds(10));
    if (!warm.ok()) return warm.status();
    return conn;
  }

  std::map<std::string, AgentOptions> agent_options_;
  int pushes_ = 0;
};

// The value of PQsendQuery("select 42")'s result, waiting at most `timeout`, and when it came.
struct Answer {
  absl::Status status;
  absl::Time at;
};
Answer AwaitSelect42(PGconn* conn, absl::Duration timeout) {
  Answer answer;
  absl::StatusOr<PgResult> result = GetResultWithin(conn, timeout);
  answer.at = absl::Now();
  if (!result.ok()) {
    answer.status = result.status();
  } else if (*result == nullptr) {
    answer.status = absl::InternalError("no result");
  } else if (PQresultStatus(result->get()) != PGRES_TUPLES_OK) {
    answer.status = ResultError(conn, result->get());
  } else if (std::string(PQgetvalue(result->get(), 0, 0)) != "42") {
    answer.status = absl::InternalError(absl::StrCat("answered ", PQgetvalue(result->get(), 0, 0)));
  } else {
    absl::StatusOr<PgResult> end = GetResultWithin(conn, absl::Seconds(5));
    if (!end.ok()) answer.status = end.status();
  }
  return answer;
}

// --- 1. a real PostgreSQL restart inside a window, under load -----------------------------------

TEST_F(MaintenanceTest, PostgresRestartInsideAWindowLosesNoAcknowledgedRow) {
  ASSERT_NO_FATAL_FAILURE(StartFleet());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn direct,
                           Connect(g_pg->ConnString(kAppDb, kAppUser, kAppPassword)));
  PGF_ASSERT_OK(Query(direct.get(), absl::StrCat("TRUNCATE ", kRowsTable)));
  direct.reset();

  Writers writers({port("dev-1"), port("dev-2")}, 2);
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = absl::StrCat("fewest acknowledged: ", writers.MinAcked(),
                             "; errors: ", absl::StrJoin(writers.Errors(), "; "));
        return writers.MinAcked() >= 20;
      },
      absl::Seconds(20), "every writer to commit 20 rows"));

  FleetctlResult pause = Ctl({"pause", "--env", kEnv, "--db", kAppDb, "--for", "2m", "--wait",
                              "--reason", "restart PostgreSQL", "--output", "json"});
  ASSERT_EQ(pause.exit_code, 0) << pause.Describe();
  EXPECT_TRUE(absl::StrContains(pause.stderr_text, "2/2 agents drained")) << pause.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::MaintenanceWindow window,
                           ParseJson<pgfleet::v1::MaintenanceWindow>(pause.stdout_text));
  EXPECT_EQ(window.state(), "paused");
  EXPECT_EQ(window.database(), kAppDb);
  ASSERT_EQ(window.agents_size(), 2) << pause.stdout_text;
  for (const auto& a : window.agents()) {
    EXPECT_EQ(a.state(), "paused") << a.agent_id();
    EXPECT_EQ(a.servers_in_use(), 0) << a.agent_id();
  }

  // Drained for real: no session of the agents is left on PostgreSQL (a backend may take a
  // moment to notice its client went away).
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Rows> rows = g_pg->Exec(
            "select count(*) from pg_stat_activity where datname = 'appdb' and usename = 'app'");
        if (!rows.ok()) return rows.status();
        *note = absl::StrCat((*rows)[0][0], " app backends");
        return (*rows)[0][0] == "0";
      },
      absl::Seconds(10), "the agents' server connections to leave PostgreSQL"));
  PGF_ASSERT_OK_AND_ASSIGN(Rows before,
                           g_pg->Exec(absl::StrCat("select count(*) from ", kRowsTable), kAppDb));
  // The writers keep going: their next transactions queue on the agents.
  PGF_ASSERT_OK(WaitClientsWaiting("dev-1", 2));
  PGF_ASSERT_OK(WaitClientsWaiting("dev-2", 2));

  PGF_ASSERT_OK_AND_ASSIGN(Rows started_before, g_pg->Exec("select pg_postmaster_start_time()"));
  PGF_ASSERT_OK(RestartPostgres(*g_pg));
  PGF_ASSERT_OK_AND_ASSIGN(Rows started_after, g_pg->Exec("select pg_postmaster_start_time()"));
  ASSERT_NE(started_before[0][0], started_after[0][0]) << "PostgreSQL did not restart";
  // Nothing reached PostgreSQL while the window held.
  PGF_ASSERT_OK_AND_ASSIGN(Rows during,
                           g_pg->Exec(absl::StrCat("select count(*) from ", kRowsTable), kAppDb));
  EXPECT_EQ(during[0][0], before[0][0]);
  EXPECT_TRUE(writers.Errors().empty()) << absl::StrJoin(writers.Errors(), "\n");

  FleetctlResult resume = Ctl({"resume", "--env", kEnv, "--db", kAppDb, "--output", "json"});
  ASSERT_EQ(resume.exit_code, 0) << resume.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::MaintenanceWindow resumed,
                           ParseJson<pgfleet::v1::MaintenanceWindow>(resume.stdout_text));
  EXPECT_EQ(resumed.id(), window.id());
  EXPECT_EQ(resumed.state(), "completed");

  // Every writer gets through again, after the restart.
  const int64_t acked_at_resume = writers.MinAcked();
  PGF_EXPECT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = absl::StrCat("fewest acknowledged: ", writers.MinAcked(),
                             "; errors: ", absl::StrJoin(writers.Errors(), "; "));
        return writers.MinAcked() >= acked_at_resume + 20;
      },
      absl::Seconds(30), "every writer to commit 20 more rows after the resume"));
  writers.Stop();

  EXPECT_TRUE(writers.Errors().empty()) << absl::StrJoin(writers.Errors(), "\n");
  PGF_ASSERT_OK_AND_ASSIGN(
      Rows table, g_pg->Exec(absl::StrCat("select writer, seq from ", kRowsTable), kAppDb));
  std::set<std::pair<int, int>> stored;
  for (const auto& row : table) {
    int writer = 0, seq = 0;
    ASSERT_TRUE(absl::SimpleAtoi(row[0], &writer) && absl::SimpleAtoi(row[1], &seq));
    stored.insert({writer, seq});
  }
  const std::set<std::pair<int, int>> acked = writers.AckedRows();
  std::vector<std::string> lost;
  for (const auto& [writer, seq] : acked) {
    if (!stored.count({writer, seq})) lost.push_back(absl::StrCat(writer, "/", seq));
  }
  EXPECT_TRUE(lost.empty()) << "acknowledged but not in the table: " << absl::StrJoin(lost, ", ");
  EXPECT_EQ(acked.size(), stored.size());
  EXPECT_EQ(static_cast<int64_t>(acked.size()), writers.TotalAcked());
}

// --- 2. a drain held up by an open transaction: all or nothing ----------------------------------

TEST_F(MaintenanceTest, DrainTimeoutResumesEveryAgentAndNamesTheHolder) {
  ASSERT_NO_FATAL_FAILURE(StartFleet());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn holder, ReadyClient("dev-1"));
  PGF_ASSERT_OK(ExecWithin(holder.get(), "BEGIN", absl::Seconds(10)));
  PGF_ASSERT_OK(ExecWithin(holder.get(), "select 'maintenance-blocker' as holding_the_drain",
                           absl::Seconds(10)));
  const std::string holder_address = LocalAddress(holder.get());

  const absl::Time started = absl::Now();
  FleetctlResult pause = Ctl(
      {"pause", "--env", kEnv, "--db", kAppDb, "--for", "2m", "--wait", "--drain-timeout", "2s"});
  const absl::Duration took = absl::Now() - started;
  EXPECT_EQ(pause.exit_code, 5) << pause.Describe();
  const std::string report = pause.stdout_text + pause.stderr_text;
  EXPECT_TRUE(absl::StrContains(report, "drain timed out")) << pause.Describe();
  EXPECT_TRUE(absl::StrContains(report, "dev-1: ")) << pause.Describe();
  EXPECT_TRUE(absl::StrContains(report, holder_address)) << holder_address << "\n"
                                                         << pause.Describe();
  EXPECT_TRUE(absl::StrContains(report, "select 'maintenance-blocker'")) << pause.Describe();
  EXPECT_FALSE(absl::StrContains(report, "dev-2: ")) << "dev-2 drained; only dev-1 held it up\n"
                                                     << pause.Describe();
  EXPECT_GE(took, absl::Seconds(2)) << "gave up before the drain timeout";
  EXPECT_LT(took, absl::Seconds(15));

  // Both agents had paused; both are resumed.
  for (const std::string& id : ids_) {
    PGF_EXPECT_OK(WaitAppdbPaused(id, false));
    const std::string log = agent(id).LogContents();
    EXPECT_TRUE(absl::StrContains(log, "controller: PAUSE appdb")) << id;
    EXPECT_TRUE(absl::StrContains(log, "controller: RESUME appdb")) << id;
    PGF_ASSERT_OK_AND_ASSIGN(PgConn client, ReadyClient(id));
  }
  // The holder's transaction was left alone and still commits.
  PGF_ASSERT_OK_AND_ASSIGN(std::string tag, ExecWithin(holder.get(), "COMMIT", absl::Seconds(10)));
  EXPECT_EQ(tag, "COMMIT");

  FleetctlResult list = Ctl({"maintenance", "list", "--env", kEnv, "--output", "json"});
  ASSERT_EQ(list.exit_code, 0) << list.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListWindowsResponse windows,
                           ParseJson<pgfleet::v1::ListWindowsResponse>(list.stdout_text));
  ASSERT_EQ(windows.windows_size(), 1);
  EXPECT_EQ(windows.windows(0).state(), "failed");
  EXPECT_TRUE(absl::StrContains(windows.windows(0).failure(), holder_address))
      << windows.windows(0).failure();
  // No window left open: a new pause is accepted and drains now the holder is gone.
  FleetctlResult again = Ctl({"pause", "--env", kEnv, "--db", kAppDb, "--for", "1m", "--wait"});
  EXPECT_EQ(again.exit_code, 0) << again.Describe();
  FleetctlResult resume = Ctl({"resume", "--env", kEnv, "--db", kAppDb});
  EXPECT_EQ(resume.exit_code, 0) << resume.Describe();
}

// --- 3. the controller dies during a window -----------------------------------------------------

TEST_F(MaintenanceTest, AgentsResumeAtTheDeadlineAfterControllerKill9) {
  ASSERT_NO_FATAL_FAILURE(StartFleet());
  std::map<std::string, PgConn> clients;
  for (const std::string& id : ids_) {
    PGF_ASSERT_OK_AND_ASSIGN(clients[id], ReadyClient(id));
  }
  FleetctlResult pause =
      Ctl({"pause", "--env", kEnv, "--db", kAppDb, "--for", "5s", "--wait", "--output", "json"});
  ASSERT_EQ(pause.exit_code, 0) << pause.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::MaintenanceWindow window,
                           ParseJson<pgfleet::v1::MaintenanceWindow>(pause.stdout_text));
  const absl::Time window_end = absl::FromUnixMillis(window.ends_unix_ms());
  PGF_ASSERT_OK(controller_->Kill9());

  for (const std::string& id : ids_) {
    ASSERT_EQ(PQsendQuery(clients[id].get(), "select 42"), 1) << PQerrorMessage(clients[id].get());
  }
  for (const std::string& id : ids_) PGF_ASSERT_OK(WaitClientsWaiting(id, 1));
  ASSERT_LT(absl::Now(), window_end) << "the window ended before the clients queued; too slow";
  for (const std::string& id : ids_) {
    const Answer answer = AwaitSelect42(clients[id].get(), absl::Seconds(15));
    PGF_EXPECT_OK(answer.status);
    // Not before the window's end (the agents' deadline is rounded up to whole seconds), and
    // not much after it.
    EXPECT_GE(answer.at, window_end - absl::Milliseconds(100)) << id;
    EXPECT_LE(answer.at, window_end + absl::Seconds(3)) << id;
    EXPECT_TRUE(absl::StrContains(agent(id).LogContents(), "deadline reached, resuming by itself"))
        << id;
    PGF_EXPECT_OK(WaitAppdbPaused(id, false));
  }
  EXPECT_FALSE(controller_->IsRunning());
}

// --- 4. a window longer than query_wait_timeout -------------------------------------------------

TEST_F(MaintenanceTest, QueuedClientOutlivesQueryWaitTimeoutDuringAWindow) {
  ASSERT_NO_FATAL_FAILURE(StartFleet({{"query_wait_timeout", "2"}}));

  // The control: a pause without a deadline keeps PgBouncer's rule, so the 2 s limit is live.
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn client, ReadyClient("dev-2"));
    PGF_ASSERT_OK(AdminCommand(port("dev-2"), "PAUSE appdb"));
    const absl::Time sent = absl::Now();
    ASSERT_EQ(PQsendQuery(client.get(), "select 42"), 1);
    const Answer answer = AwaitSelect42(client.get(), absl::Seconds(10));
    EXPECT_TRUE(absl::StrContains(answer.status.message(), "query_wait_timeout")) << answer.status;
    EXPECT_GE(answer.at - sent, absl::Seconds(2));
    EXPECT_LT(answer.at - sent, absl::Seconds(6));
    PGF_ASSERT_OK(AdminCommand(port("dev-2"), "RESUME appdb"));
  }

  std::map<std::string, PgConn> clients;
  for (const std::string& id : ids_) {
    PGF_ASSERT_OK_AND_ASSIGN(clients[id], ReadyClient(id));
  }
  FleetctlResult pause =
      Ctl({"pause", "--env", kEnv, "--db", kAppDb, "--for", "6s", "--wait", "--output", "json"});
  ASSERT_EQ(pause.exit_code, 0) << pause.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::MaintenanceWindow window,
                           ParseJson<pgfleet::v1::MaintenanceWindow>(pause.stdout_text));
  const absl::Time window_end = absl::FromUnixMillis(window.ends_unix_ms());
  std::map<std::string, absl::Time> sent;
  for (const std::string& id : ids_) {
    ASSERT_EQ(PQsendQuery(clients[id].get(), "select 42"), 1) << PQerrorMessage(clients[id].get());
    sent[id] = absl::Now();
  }
  ASSERT_GT(window_end - absl::Now(), absl::Seconds(2) + absl::Milliseconds(500))
      << "too little of the window left to outlast query_wait_timeout";
  for (const std::string& id : ids_) {
    const Answer answer = AwaitSelect42(clients[id].get(), absl::Seconds(15));
    EXPECT_TRUE(answer.status.ok())
        << id << " waited " << (answer.at - sent[id]) << ": " << answer.status;
    EXPECT_GT(answer.at - sent[id], absl::Seconds(2) + absl::Milliseconds(500)) << id;
    EXPECT_GE(answer.at, window_end - absl::Milliseconds(100)) << id;
  }
  PGF_EXPECT_OK(WaitWindowState(window.id(), "completed", absl::Seconds(10)));
}

// --- 5. agents joining during and after a window ------------------------------------------------

TEST_F(MaintenanceTest, AgentRejoiningDuringAWindowIsPausedAfterItIsNot) {
  ASSERT_NO_FATAL_FAILURE(StartFleet());
  // Every database: SHOW STATE then shows the agent's own deadline.
  // Long enough for an ASan agent to stop and start again on a loaded machine.
  FleetctlResult pause =
      Ctl({"pause", "--env", kEnv, "--for", "12s", "--wait", "--output", "json"});
  ASSERT_EQ(pause.exit_code, 0) << pause.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::MaintenanceWindow window,
                           ParseJson<pgfleet::v1::MaintenanceWindow>(pause.stdout_text));
  const absl::Time window_end = absl::FromUnixMillis(window.ends_unix_ms());

  ASSERT_NO_FATAL_FAILURE(RestartAgent("dev-2"));
  PGF_ASSERT_OK(WaitAppdbPaused("dev-2", true, absl::Seconds(12)));
  ASSERT_LT(absl::Now(), window_end) << "the restart took the whole window; too slow";
  PGF_ASSERT_OK_AND_ASSIGN(NamedRow state, AdminState(port("dev-2")));
  EXPECT_EQ(state["paused"], "yes");
  absl::Time deadline;
  std::string error;
  ASSERT_TRUE(absl::ParseTime("%Y-%m-%d %H:%M:%S UTC", state["pause_deadline"], absl::UTCTimeZone(),
                              &deadline, &error))
      << state["pause_deadline"] << ": " << error;
  // The window's end, not a fresh full duration (SHOW STATE shows whole seconds).
  EXPECT_LE(absl::AbsDuration(deadline - window_end), absl::Milliseconds(1500))
      << "deadline " << deadline << ", window ends " << window_end;
  EXPECT_TRUE(absl::StrContains(agent("dev-2").LogContents(), "controller: PAUSE"));
  {
    // A client of the re-joined agent queues until the window ends.
    // Its login itself waits for the pause to end (the pool's first server login gives the
    // parameters the client is told), so libpq's connect_timeout must outlast the window.
    PGF_ASSERT_OK_AND_ASSIGN(
        PgConn client,
        Connect(absl::StrCat(TcpConnString(port("dev-2"), kAppDb, kAppUser, kAppPassword),
                             " connect_timeout=30")));
    ASSERT_EQ(PQsendQuery(client.get(), "select 42"), 1) << PQerrorMessage(client.get());
    const Answer answer = AwaitSelect42(client.get(), absl::Seconds(15));
    PGF_EXPECT_OK(answer.status);
    EXPECT_GE(answer.at, window_end - absl::Milliseconds(100));
  }

  PGF_ASSERT_OK(WaitWindowState(window.id(), "completed", absl::Seconds(10)));
  for (const std::string& id : ids_) PGF_EXPECT_OK(WaitAppdbPaused(id, false));

  ASSERT_NO_FATAL_FAILURE(RestartAgent("dev-2"));
  PGF_ASSERT_OK(WaitConnected({"dev-2"}));
  // The controller pauses a joiner right after its hello; by the time a query went through and
  // a metrics report came back, a wrong PAUSE would have arrived.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn client, ReadyClient("dev-2"));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return absl::StrContains(agent("dev-2").LogContents(), "connected to controller");
      },
      absl::Seconds(10), "dev-2 to log its controller connection"));
  PGF_ASSERT_OK_AND_ASSIGN(bool paused, AppdbPaused(port("dev-2")));
  EXPECT_FALSE(paused);
  EXPECT_FALSE(absl::StrContains(agent("dev-2").LogContents(), "controller: PAUSE"))
      << agent("dev-2").LogContents();
  PGF_EXPECT_OK(ExecWithin(client.get(), "select 1", absl::Seconds(5)));
}

// --- 6. a scheduled window starts and ends on time ----------------------------------------------

TEST_F(MaintenanceTest, ScheduledWindowStartsAndEndsOnTime) {
  ASSERT_NO_FATAL_FAILURE(StartFleet());
  // Both time formats the CLI documents; a malformed one is a usage error.
  FleetctlResult bad = Ctl({"maintenance", "schedule", "--env", kEnv, "--db", kAppDb, "--at",
                            "tomorrow", "--duration", "3s"});
  EXPECT_EQ(bad.exit_code, 2) << bad.Describe();
  EXPECT_TRUE(absl::StrContains(bad.stderr_text, "RFC 3339")) << bad.Describe();

  // Far enough ahead that fleetctl answers before the window starts, even under load.
  const absl::Time at = absl::Now() + absl::Seconds(5);
  FleetctlResult schedule = Ctl({"maintenance", "schedule", "--env", kEnv, "--db", kAppDb, "--at",
                                 absl::FormatTime(absl::RFC3339_full, at, absl::UTCTimeZone()),
                                 "--duration", "3s", "--reason", "scheduled", "--output", "json"});
  ASSERT_EQ(schedule.exit_code, 0) << schedule.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::MaintenanceWindow window,
                           ParseJson<pgfleet::v1::MaintenanceWindow>(schedule.stdout_text));
  EXPECT_EQ(window.state(), "scheduled");
  EXPECT_LE(absl::AbsDuration(absl::FromUnixMillis(window.starts_unix_ms()) - at),
            absl::Milliseconds(1));
  EXPECT_EQ(window.ends_unix_ms() - window.starts_unix_ms(), 3000);
  const absl::Time start = absl::FromUnixMillis(window.starts_unix_ms());
  const absl::Time end = absl::FromUnixMillis(window.ends_unix_ms());
  for (const std::string& id : ids_) {
    PGF_ASSERT_OK_AND_ASSIGN(bool paused, AppdbPaused(port(id)));
    EXPECT_FALSE(paused) << id << " paused before the window";
  }

  // Watch both agents' paused state through their admin consoles.
  std::map<std::string, absl::Time> paused_at, resumed_at;
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        for (const std::string& id : ids_) {
          absl::StatusOr<bool> paused = AppdbPaused(port(id));
          if (!paused.ok()) return paused.status();
          const absl::Time now = absl::Now();
          if (*paused && !paused_at.count(id)) paused_at[id] = now;
          if (!*paused && paused_at.count(id) && !resumed_at.count(id)) resumed_at[id] = now;
        }
        *note = absl::StrCat(paused_at.size(), " paused, ", resumed_at.size(), " resumed");
        return resumed_at.size() == ids_.size();
      },
      absl::Seconds(15), "both agents to pause and resume", absl::Milliseconds(25)));
  for (const std::string& id : ids_) {
    EXPECT_GE(paused_at[id], start) << id;
    EXPECT_LE(paused_at[id], start + absl::Milliseconds(1500)) << id;
    // Agents resume at the end (their own deadline rounds up to a whole second).
    EXPECT_GE(resumed_at[id], end - absl::Milliseconds(100)) << id;
    EXPECT_LE(resumed_at[id], end + absl::Milliseconds(2000)) << id;
  }
  PGF_EXPECT_OK(WaitWindowState(window.id(), "completed", absl::Seconds(5)));

  // The relative form: +DURATION.
  const absl::Time before_relative = absl::Now();
  FleetctlResult relative = Ctl({"maintenance", "schedule", "--env", kEnv, "--db", kAppDb, "--at",
                                 "+10m", "--duration", "1m", "--output", "json"});
  ASSERT_EQ(relative.exit_code, 0) << relative.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::MaintenanceWindow later,
                           ParseJson<pgfleet::v1::MaintenanceWindow>(relative.stdout_text));
  EXPECT_GE(absl::FromUnixMillis(later.starts_unix_ms()),
            before_relative + absl::Minutes(10) - absl::Milliseconds(1));
  EXPECT_LE(absl::FromUnixMillis(later.starts_unix_ms()), absl::Now() + absl::Minutes(10));
  FleetctlResult cancel = Ctl({"maintenance", "cancel", absl::StrCat(later.id())});
  EXPECT_EQ(cancel.exit_code, 0) << cancel.Describe();
}

// --- 7. a rollout during a window ---------------------------------------------------------------

TEST_F(MaintenanceTest, RolloutHoldsDuringAWindowAndProceedsAfter) {
  ASSERT_NO_FATAL_FAILURE(StartFleet());
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t base, Push(FleetIni(port("dev-1"), "10")));
  FleetctlResult apply =
      Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", base), "--wait"});
  ASSERT_EQ(apply.exit_code, 0) << apply.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t next, Push(FleetIni(port("dev-1"), "15")));

  FleetctlResult pause =
      Ctl({"pause", "--env", kEnv, "--db", kAppDb, "--for", "2m", "--wait", "--output", "json"});
  ASSERT_EQ(pause.exit_code, 0) << pause.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::MaintenanceWindow window,
                           ParseJson<pgfleet::v1::MaintenanceWindow>(pause.stdout_text));

  // Pre-flight refuses it and says why...
  const std::vector<std::string> start_args = {
      "rollout", "start", "--env",  kEnv, "--version", absl::StrCat("v", next),
      "--waves", "100%",  "--bake", "1s"};
  FleetctlResult refused = Ctl(start_args);
  EXPECT_NE(refused.exit_code, 0) << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text,
                                absl::StrCat("maintenance window ", window.id(), " is active")))
      << refused.Describe();
  // ...and a forced one holds its first wave until the window is over.
  std::vector<std::string> forced_args = start_args;
  forced_args.insert(forced_args.end(),
                     {"--force", "--reason", "maintenance test", "--output", "json"});
  FleetctlResult forced = Ctl(forced_args);
  ASSERT_EQ(forced.exit_code, 0) << forced.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout rollout,
                           ParseJson<pgfleet::v1::Rollout>(forced.stdout_text));
  const std::string rollout_id = absl::StrCat(rollout.id());
  const std::string holding = absl::StrCat("holding: maintenance window ", window.id());
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        FleetctlResult status = Ctl({"rollout", "status", rollout_id, "--output", "json"});
        if (status.exit_code != 0) return absl::InternalError(status.Describe());
        PGF_ASSIGN_OR_RETURN(rollout, ParseJson<pgfleet::v1::Rollout>(status.stdout_text));
        *note = absl::StrCat(rollout.state(), " ", rollout.phase(), " ", rollout.reason());
        return absl::StrContains(rollout.reason(), holding);
      },
      absl::Seconds(10), "the rollout to say it holds for the window"));
  EXPECT_EQ(rollout.state(), "running");
  FleetctlResult human = Ctl({"rollout", "status", rollout_id});
  EXPECT_TRUE(absl::StrContains(human.stdout_text, holding)) << human.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse during, ListAgents());
  for (const auto& a : during.agents()) EXPECT_EQ(a.applied_version(), base) << a.agent_id();

  const absl::Time resumed_at = absl::Now();
  FleetctlResult resume = Ctl({"resume", "--env", kEnv, "--db", kAppDb});
  ASSERT_EQ(resume.exit_code, 0) << resume.Describe();
  FleetctlResult watch = Ctl({"rollout", "status", rollout_id, "--watch", "--output", "json"});
  EXPECT_EQ(watch.exit_code, 0) << watch.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(rollout, ParseJson<pgfleet::v1::Rollout>(watch.stdout_text));
  EXPECT_EQ(rollout.state(), "succeeded") << rollout.reason();
  PGF_EXPECT_OK(WaitForAgents(
      ids_, absl::StrCat("every agent on v", next),
      [&](const pgfleet::v1::Agent& a) { return a.connected() && a.applied_version() == next; }));
  // Nobody applied the new version before the window ended.
  for (const std::string& id : ids_) {
    const std::string log = agent(id).LogContents();
    const std::string needle = absl::StrCat("config version ", next, " applied (ACK)");
    bool found = false;
    for (absl::string_view line : absl::StrSplit(log, '\n')) {
      if (!absl::StrContains(line, needle)) continue;
      found = true;
      PGF_ASSERT_OK_AND_ASSIGN(absl::Time acked, LogLineTime(line));
      EXPECT_GE(acked, resumed_at) << id << " applied v" << next << " during the window";
    }
    EXPECT_TRUE(found) << id << " never logged '" << needle << "'";
  }
}

// --- 8. overlapping windows ---------------------------------------------------------------------

TEST_F(MaintenanceTest, OverlappingWindowsAreRefused) {
  ASSERT_NO_FATAL_FAILURE(StartFleet());
  auto schedule = [&](const std::string& at, const std::string& duration) {
    return Ctl({"maintenance", "schedule", "--env", kEnv, "--db", kAppDb, "--at", at, "--duration",
                duration, "--output", "json"});
  };
  FleetctlResult first = schedule("+1m", "10m");
  ASSERT_EQ(first.exit_code, 0) << first.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::MaintenanceWindow window,
                           ParseJson<pgfleet::v1::MaintenanceWindow>(first.stdout_text));
  const std::string overlap = absl::StrCat("overlaps maintenance window ", window.id(), " of dev");

  FleetctlResult inside = schedule("+5m", "1m");
  EXPECT_EQ(inside.exit_code, 1) << inside.Describe();
  EXPECT_TRUE(absl::StrContains(inside.stderr_text, overlap)) << inside.Describe();
  FleetctlResult around = schedule("+30s", "20m");
  EXPECT_EQ(around.exit_code, 1) << around.Describe();
  EXPECT_TRUE(absl::StrContains(around.stderr_text, overlap)) << around.Describe();
  // A pause now running into the scheduled window is refused too, and pauses nobody.
  FleetctlResult pause = Ctl({"pause", "--env", kEnv, "--db", kAppDb, "--for", "5m"});
  EXPECT_EQ(pause.exit_code, 1) << pause.Describe();
  EXPECT_TRUE(absl::StrContains(pause.stderr_text, overlap)) << pause.Describe();
  for (const std::string& id : ids_) {
    PGF_ASSERT_OK_AND_ASSIGN(bool paused, AppdbPaused(port(id)));
    EXPECT_FALSE(paused) << id;
  }

  // Back to back is not an overlap; after a cancel the time is free again.
  FleetctlResult after = schedule("+11m", "1m");
  EXPECT_EQ(after.exit_code, 0) << after.Describe();
  FleetctlResult cancel = Ctl({"maintenance", "cancel", absl::StrCat(window.id())});
  ASSERT_EQ(cancel.exit_code, 0) << cancel.Describe();
  FleetctlResult reuse = schedule("+5m", "1m");
  EXPECT_EQ(reuse.exit_code, 0) << reuse.Describe();

  FleetctlResult list = Ctl({"maintenance", "list", "--env", kEnv, "--output", "json"});
  ASSERT_EQ(list.exit_code, 0) << list.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListWindowsResponse windows,
                           ParseJson<pgfleet::v1::ListWindowsResponse>(list.stdout_text));
  std::map<std::string, int> states;
  for (const auto& w : windows.windows()) ++states[w.state()];
  EXPECT_EQ(states["scheduled"], 2);
  EXPECT_EQ(states["cancelled"], 1);
  EXPECT_EQ(windows.windows_size(), 3) << list.stdout_text;
}

}  // namespace
}  // namespace pgfleet::testutil
