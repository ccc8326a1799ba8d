// Issue 22, multi-host databases: `host=a,b port=pa,pb` with load_balance_hosts, in front of two
// real PostgreSQL clusters (the same role and database on each; they need not be replicas).
// round-robin spreads server connections over both hosts, disable keeps them on one until it
// fails; a host stopped with `pg_ctl stop -m immediate` is skipped with a backoff while clients
// go on being served by the other; once it runs again it comes back, but only after it answers
// server_check_query. SHOW SERVERS / SHOW DATABASES show which host; a cancel goes to the host
// its server connection is on.

#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kPortSql[] = "select current_setting('port')";

// `pg_ctl ARGS` on `pg`'s data directory, as the postgres OS user when we are root.
absl::Status PgCtl(const PostgresEnv& pg, std::vector<std::string> args) {
  std::vector<std::string> argv = {
      pg.BinPath("pg_ctl"), "-D", pg.dir() + "/data", "-w", "-t", "60"};
  argv.insert(argv.end(), args.begin(), args.end());
  if (geteuid() == 0) argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  RunOptions run;
  run.working_dir = pg.dir();
  run.env = {{"LC_ALL", "C"}, {"LANG", "C"}};
  run.timeout = absl::Seconds(90);
  PGF_ASSIGN_OR_RETURN(RunResult result, RunCommand(argv, run));
  if (!result.Succeeded()) {
    return absl::InternalError(
        absl::StrCat("pg_ctl failed: ", result.Describe(), "\n--- server log ---\n", pg.LogTail()));
  }
  return absl::OkStatus();
}

// Clients running `select current_setting('port')` in a loop through the agent, each on its
// own connection (reconnecting when the agent closed it), recording what each query got.
class ClientLoops {
 public:
  struct Outcome {
    int client = 0;
    int phase = 0;     // The test's phase when the query started.
    std::string port;  // Empty on error.
    std::string error;
  };

  ClientLoops(std::string conninfo, int clients) : conninfo_(std::move(conninfo)) {
    for (int i = 0; i < clients; ++i) threads_.emplace_back([this, i] { Run(i); });
  }
  ~ClientLoops() { Stop(); }

  void Stop() {
    stop_ = true;
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }
  void set_phase(int phase) { phase_ = phase; }

  std::vector<Outcome> outcomes() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return outcomes_;
  }
  // Successful queries that started in `phase`, by the port that answered.
  std::map<std::string, int> PortsIn(int phase) const {
    std::map<std::string, int> ports;
    for (const Outcome& outcome : outcomes()) {
      if (outcome.phase == phase && outcome.error.empty()) ++ports[outcome.port];
    }
    return ports;
  }

 private:
  void Run(int client) {
    PgConn conn;
    while (!stop_) {
      const int phase = phase_;
      Outcome outcome{client, phase, "", ""};
      if (!conn) {
        absl::StatusOr<PgConn> connected = Connect(conninfo_);
        if (connected.ok()) {
          conn = *std::move(connected);
        } else {
          outcome.error = absl::StrCat("connect: ", connected.status().message());
        }
      }
      if (conn) {
        absl::StatusOr<std::string> port = ScalarText(conn.get(), kPortSql);
        if (port.ok()) {
          outcome.port = *port;
        } else {
          outcome.error = std::string(port.status().message());
          if (PQstatus(conn.get()) != CONNECTION_OK) conn.reset();
        }
      }
      std::lock_guard<std::mutex> lock(mutex_);
      outcomes_.push_back(std::move(outcome));
    }
  }

  const std::string conninfo_;
  std::atomic<bool> stop_{false};
  std::atomic<int> phase_{0};
  mutable std::mutex mutex_;
  std::vector<Outcome> outcomes_;
  std::vector<std::thread> threads_;
};

class MultiHostTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    for (std::unique_ptr<PostgresEnv>* cluster : {&first_, &second_}) {
      absl::StatusOr<std::unique_ptr<PostgresEnv>> pg = PostgresEnv::Start();
      ASSERT_TRUE(pg.ok()) << pg.status();
      *cluster = *std::move(pg);
      PGF_ASSERT_OK(CreateAppDatabase(**cluster));
    }
  }
  static void TearDownTestSuite() {
    first_.reset();
    second_.reset();
  }

  void TearDown() override {
    if (agent_ != nullptr) {
      if (HasFailure()) fprintf(stderr, "%s\n", agent_->Diagnostics().c_str());
      ExpectCleanStop(*agent_);
    }
    // Leave the second cluster running for the next test.
    if (second_stopped_) PGF_EXPECT_OK(StartSecond());
  }

  std::string FirstPort() const { return absl::StrCat(first_->port()); }
  std::string SecondPort() const { return absl::StrCat(second_->port()); }
  // The second cluster's address in agent.log ("host:port" as SHOW SERVERS splits it).
  std::string SecondAddress() const { return absl::StrCat("127.0.0.1:", second_->port()); }

  absl::Status StopSecond() {
    PGF_RETURN_IF_ERROR(PgCtl(*second_, {"-m", "immediate", "stop"}));
    second_stopped_ = true;
    return absl::OkStatus();
  }
  absl::Status StartSecond() {
    PGF_RETURN_IF_ERROR(PgCtl(*second_, {"-l", second_->log_path(), "start"}));
    second_stopped_ = false;
    return absl::OkStatus();
  }

  // An agent whose appdb entry is `database_params` (host/port lists and the rest).
  void StartAgent(const std::string& database_params,
                  const std::map<std::string, std::string>& settings) {
    AgentOptions options;
    options.databases_section =
        absl::StrCat(kAppDb, " = ", database_params, " dbname=", kAppDb, "\n");
    options.pgbouncer_settings = {{"auth_type", "scram-sha-256"},
                                  {"admin_users", kAdminUser},
                                  {"max_client_conn", "100"},
                                  {"server_login_retry", "1"}};
    for (const auto& [key, value] : settings) options.pgbouncer_settings[key] = value;
    options.userlist = {{kAppUser, kAppPassword}, {kAdminUser, kAdminPassword}};
    options_ = options;
    absl::StatusOr<std::unique_ptr<AgentProcess>> agent = AgentProcess::Start(options);
    ASSERT_TRUE(agent.ok()) << agent.status();
    agent_ = *std::move(agent);
  }

  std::string AppConnString() const { return agent_->ConnString(kAppDb, kAppUser, kAppPassword); }

  // Opens `count` sessions at once and returns the port each one's server runs on.
  std::vector<std::string> SessionPorts(int count, std::vector<PgConn>* keep) {
    std::vector<std::string> ports;
    for (int i = 0; i < count; ++i) {
      absl::StatusOr<PgConn> conn = Connect(AppConnString());
      EXPECT_TRUE(conn.ok()) << conn.status();
      if (!conn.ok()) return ports;
      absl::StatusOr<std::string> port = ScalarText(conn->get(), kPortSql);
      EXPECT_TRUE(port.ok()) << port.status();
      ports.push_back(port.ok() ? *port : "");
      keep->push_back(*std::move(conn));
    }
    return ports;
  }

  // Until SHOW SERVERS lists no appdb server connection on `port`.
  absl::Status AwaitNoServersOn(const std::string& port) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          PGF_ASSIGN_OR_RETURN(std::vector<NamedRow> servers,
                               AdminShow(agent_->port(), "SHOW SERVERS"));
          int left = 0;
          for (const NamedRow& row : servers) left += row.at("port") == port ? 1 : 0;
          *note = absl::StrCat(left, " left");
          return left == 0;
        },
        absl::Seconds(30), absl::StrCat("no server connection on port ", port));
  }

  int LogCount(const std::string& needle) const {
    return CountOccurrences(agent_->LogContents(), needle);
  }

  static std::unique_ptr<PostgresEnv> first_;
  static std::unique_ptr<PostgresEnv> second_;
  bool second_stopped_ = false;
  std::unique_ptr<AgentProcess> agent_;
  AgentOptions options_;  // What StartAgent started agent_ with.
};

std::unique_ptr<PostgresEnv> MultiHostTest::first_;
std::unique_ptr<PostgresEnv> MultiHostTest::second_;

// round-robin (PgBouncer's default): each new server connection goes to the next host. The
// second host is given as a unix socket directory, as PgBouncer allows in a list.
TEST_F(MultiHostTest, RoundRobinSpreadsServerConnectionsOverBothHosts) {
  const std::string socket_dir = second_->dir();
  const std::string hosts = absl::StrCat("127.0.0.1,", socket_dir);
  ASSERT_NO_FATAL_FAILURE(
      StartAgent(absl::StrCat("host=", hosts, " port=", FirstPort(), ",", SecondPort()),
                 {{"pool_mode", "session"}, {"default_pool_size", "4"}}));

  std::vector<PgConn> sessions;
  std::vector<std::string> ports = SessionPorts(4, &sessions);
  std::sort(ports.begin(), ports.end());
  std::vector<std::string> expected = {FirstPort(), FirstPort(), SecondPort(), SecondPort()};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(ports, expected);

  // SHOW SERVERS: the host each server connection went to.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> servers,
                           AdminShow(agent_->port(), "SHOW SERVERS"));
  std::map<std::string, int> by_address;
  for (const NamedRow& row : servers) {
    if (row.at("database") == kAppDb)
      ++by_address[absl::StrCat(row.at("addr"), "|", row.at("port"))];
  }
  EXPECT_EQ(by_address[absl::StrCat("127.0.0.1|", FirstPort())], 2)
      << testing::PrintToString(by_address);
  // A unix-socket server shows as PgBouncer 1.25 shows it: address "unix", the socket's port.
  EXPECT_EQ(by_address[absl::StrCat("unix|", SecondPort())], 2)
      << testing::PrintToString(by_address);

  // SHOW DATABASES: the list as written, and the mode.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> databases,
                           AdminShow(agent_->port(), "SHOW DATABASES"));
  bool found = false;
  for (const NamedRow& row : databases) {
    if (row.at("name") != kAppDb) continue;
    found = true;
    EXPECT_EQ(row.at("host"), hosts);
    EXPECT_EQ(row.at("port"), FirstPort());
    EXPECT_EQ(row.at("load_balance_hosts"), "round-robin");
  }
  EXPECT_TRUE(found);

  // A cancel reaches the host its server connection is on: one session on each host runs a
  // long sleep, and each is cancelled.
  for (PgConn& session : sessions) {
    ASSERT_EQ(PQsendQuery(session.get(), "select pg_sleep(60)"), 1);
  }
  // PostgreSQL drops a cancel that reaches a backend before its query does, as it would
  // without a pooler in between: cancel only once every sleep runs on its host.
  for (const PostgresEnv* pg : {first_.get(), second_.get()}) {
    PGF_ASSERT_OK(PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          PGF_ASSIGN_OR_RETURN(Rows rows,
                               pg->Exec("select count(*) from pg_stat_activity where state = "
                                        "'active' and query = 'select pg_sleep(60)'"));
          *note = absl::StrCat(rows[0][0], " sleeps running");
          return rows[0][0] == std::to_string(sessions.size() / 2);
        },
        absl::Seconds(30), absl::StrCat("the sleeps to run on port ", pg->port())));
  }
  for (PgConn& session : sessions) {
    PGcancel* cancel = PQgetCancel(session.get());
    ASSERT_NE(cancel, nullptr);
    char error[256] = {};
    EXPECT_EQ(PQcancel(cancel, error, sizeof(error)), 1) << error;
    PQfreeCancel(cancel);
  }
  for (PgConn& session : sessions) {
    PGF_ASSERT_OK_AND_ASSIGN(PgResult result, GetResultWithin(session.get(), absl::Seconds(30)));
    ASSERT_NE(result, nullptr);
    EXPECT_STREQ(PQresultErrorField(result.get(), PG_DIAG_SQLSTATE), "57014")
        << PQresultErrorMessage(result.get());
    while (true) {
      PGF_ASSERT_OK_AND_ASSIGN(PgResult rest, GetResultWithin(session.get(), absl::Seconds(30)));
      if (rest == nullptr) break;
    }
  }
}

// disable: every connection goes to the same host until connecting to it fails, then to the
// next, and stays there (PgBouncer: "continues using the same host entry until a connection
// fails").
TEST_F(MultiHostTest, DisableKeepsToOneHostUntilItFails) {
  ASSERT_NO_FATAL_FAILURE(StartAgent(absl::StrCat("host=127.0.0.1,127.0.0.1 port=", SecondPort(),
                                                  ",", FirstPort(), " load_balance_hosts=disable"),
                                     {{"pool_mode", "session"}, {"default_pool_size", "4"}}));
  {
    std::vector<PgConn> sessions;
    std::vector<std::string> ports = SessionPorts(4, &sessions);
    EXPECT_EQ(ports, std::vector<std::string>(4, SecondPort()));
  }
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> databases,
                           AdminShow(agent_->port(), "SHOW DATABASES"));
  for (const NamedRow& row : databases) {
    if (row.at("name") == kAppDb) {
      EXPECT_EQ(row.at("load_balance_hosts"), "disable");
    }
  }

  PGF_ASSERT_OK(StopSecond());
  // The pooled connections to the stopped host die with it (once the agent has seen them go);
  // new ones go to the next host, and the clients do not see the failure.
  PGF_ASSERT_OK(AwaitNoServersOn(SecondPort()));
  {
    std::vector<PgConn> sessions;
    std::vector<std::string> ports = SessionPorts(4, &sessions);
    EXPECT_EQ(ports, std::vector<std::string>(4, FirstPort()));
  }
  // Back up, but disable stays where it is: new connections (after RECONNECT) too.
  PGF_ASSERT_OK(StartSecond());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin,
                           Connect(agent_->ConnString("pgbouncer", kAdminUser, kAdminPassword)));
  PGF_ASSERT_OK(Query(admin.get(), absl::StrCat("RECONNECT ", kAppDb)));
  {
    std::vector<PgConn> sessions;
    std::vector<std::string> ports = SessionPorts(4, &sessions);
    EXPECT_EQ(ports, std::vector<std::string>(4, FirstPort()));
  }
}

// The "done when": a multi-host database keeps serving when one host is stopped.
// Clients run transactions without a pause while the second host is stopped (immediate
// shutdown, the way a crash looks): a client whose transaction ran on it may get one error, and
// its next transaction succeeds on the first host; the stopped host is skipped with a backoff
// rather than tried for every new connection. Once it runs again it comes back, but only after
// it answers server_check_query.
TEST_F(MultiHostTest, KeepsServingWhenOneHostStopsAndTakesItBackOnceItAnswers) {
  constexpr int kClients = 4;
  // server_check_query reads a table the second host lacks for a while (below); both have it
  // for now.
  for (PostgresEnv* pg : {first_.get(), second_.get()}) {
    PGF_ASSERT_OK(
        pg->Exec("drop table if exists host_ready; create table host_ready (x int)", kAppDb));
    PGF_ASSERT_OK(pg->Exec(absl::StrCat("grant select on host_ready to ", kAppUser), kAppDb));
  }
  // server_lifetime 0: every transaction's server is closed when released, so every
  // transaction opens a new server connection and the choice of host is made all the time.
  ASSERT_NO_FATAL_FAILURE(
      StartAgent(absl::StrCat("host=127.0.0.1,127.0.0.1 port=", FirstPort(), ",", SecondPort()),
                 {{"pool_mode", "transaction"},
                  {"default_pool_size", "4"},
                  {"server_lifetime", "0"},
                  {"server_check_query", "select count(*) from host_ready"}}));

  ClientLoops clients(AppConnString(), kClients);
  // Phase 0: both hosts serve.
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        std::map<std::string, int> ports = clients.PortsIn(0);
        *note = testing::PrintToString(ports);
        return ports[FirstPort()] >= 10 && ports[SecondPort()] >= 10;
      },
      absl::Seconds(60), "transactions on both hosts"));

  // Phase 1: the second host stops. Dropping its table first (while it is in rotation, the
  // check query is not run on it) prepares phase 2.
  PGF_ASSERT_OK(second_->Exec("drop table host_ready", kAppDb));
  const int failed_before = LogCount(absl::StrCat(SecondAddress(), " login failed"));
  PGF_ASSERT_OK(StopSecond());
  const absl::Time stopped = absl::Now();
  clients.set_phase(1);
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        std::map<std::string, int> ports = clients.PortsIn(1);
        *note = testing::PrintToString(ports);
        // Long enough for several backoff periods (server_login_retry is 1 s).
        return ports[FirstPort()] >= 100 && absl::Now() - stopped > absl::Seconds(4);
      },
      absl::Seconds(60), "transactions after the second host stopped"));
  const double down_seconds = absl::ToDoubleSeconds(absl::Now() - stopped);
  const std::map<std::string, int> phase1 = clients.PortsIn(1);
  EXPECT_EQ(phase1.count(SecondPort()), 0u) << testing::PrintToString(phase1);
  // Not hammered: a handful of attempts (those already under way, then one probe per backoff
  // period), against the hundred-odd new connections the first host took meanwhile (without the
  // backoff, round-robin would have sent it half of them).
  const int attempts_on_stopped =
      LogCount(absl::StrCat(SecondAddress(), " login failed")) - failed_before;
  printf("stopped host: %d login attempts in %.1f s, while the other took %d transactions\n",
         attempts_on_stopped, down_seconds, phase1.at(FirstPort()));
  EXPECT_GE(attempts_on_stopped, 1);
  EXPECT_LE(attempts_on_stopped, kClients + static_cast<int>(down_seconds) + 1)
      << "over " << down_seconds << " s, while the first host served " << phase1.at(FirstPort());
  EXPECT_GE(LogCount(absl::StrCat("host ", SecondAddress(), " skipped for")), 1);

  // Phase 2: the second host runs again but fails the check query: it stays out.
  PGF_ASSERT_OK(StartSecond());
  clients.set_phase(2);
  const std::string check_failed =
      absl::StrCat(SecondAddress(), " login failed: server_check_query failed");
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = absl::StrCat(LogCount(check_failed), " failed checks");
        return LogCount(check_failed) >= 2;
      },
      absl::Seconds(60), "the restarted host failing server_check_query"));
  const std::map<std::string, int> phase2 = clients.PortsIn(2);
  EXPECT_EQ(phase2.count(SecondPort()), 0u) << testing::PrintToString(phase2);

  // Phase 3: it answers the check: back in rotation.
  PGF_ASSERT_OK(second_->Exec("create table host_ready (x int)", kAppDb));
  PGF_ASSERT_OK(second_->Exec(absl::StrCat("grant select on host_ready to ", kAppUser), kAppDb));
  clients.set_phase(3);
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        std::map<std::string, int> ports = clients.PortsIn(3);
        *note = testing::PrintToString(ports);
        return ports[SecondPort()] >= 10;
      },
      absl::Seconds(60), "transactions on the second host again"));
  clients.Stop();
  EXPECT_GE(LogCount(absl::StrCat("host ", SecondAddress(), " is back")), 1);

  // Clients kept getting answers: at most one error each (the transaction that ran on the
  // stopped host), and every client's transactions after its error succeeded.
  std::vector<int> errors(kClients, 0);
  std::vector<bool> last_ok(kClients, false);
  std::vector<std::string> error_texts;
  for (const ClientLoops::Outcome& outcome : clients.outcomes()) {
    if (!outcome.error.empty()) {
      ++errors[outcome.client];
      error_texts.push_back(outcome.error);
    }
    last_ok[outcome.client] = outcome.error.empty();
  }
  for (int i = 0; i < kClients; ++i) {
    EXPECT_LE(errors[i], 1) << "client " << i << ": " << testing::PrintToString(error_texts);
    EXPECT_TRUE(last_ok[i]) << "client " << i;
  }
}

// A switchover as the README describes it for a fleet (fleetctl pause, config apply, resume),
// on one agent: PAUSE the database, RELOAD a new host list, RESUME. The session that waited
// through the pause goes on, on the new host.
TEST_F(MultiHostTest, SwitchoverUnderPauseMovesToTheNewHostList) {
  ASSERT_NO_FATAL_FAILURE(StartAgent(absl::StrCat("host=127.0.0.1 port=", FirstPort()),
                                     {{"pool_mode", "transaction"}, {"default_pool_size", "2"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, Connect(AppConnString()));
  PGF_ASSERT_OK_AND_ASSIGN(std::string before, ScalarText(app.get(), kPortSql));
  EXPECT_EQ(before, FirstPort());

  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin,
                           Connect(agent_->ConnString("pgbouncer", kAdminUser, kAdminPassword)));
  PGF_ASSERT_OK(Query(admin.get(), absl::StrCat("PAUSE ", kAppDb)));
  // The new primary first, the old one as the fallback.
  AgentOptions next = options_;
  next.databases_section =
      absl::StrCat(kAppDb, " = host=127.0.0.1,127.0.0.1 port=", SecondPort(), ",", FirstPort(),
                   " load_balance_hosts=disable dbname=", kAppDb, "\n");
  PGF_ASSERT_OK(agent_->RewriteConfig(next));
  PGF_ASSERT_OK(Query(admin.get(), "RELOAD"));
  PGF_ASSERT_OK(Query(admin.get(), absl::StrCat("RESUME ", kAppDb)));

  PGF_ASSERT_OK_AND_ASSIGN(std::string after, ScalarText(app.get(), kPortSql));
  EXPECT_EQ(after, SecondPort());
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> servers,
                           AdminShow(agent_->port(), "SHOW SERVERS"));
  for (const NamedRow& row : servers) {
    if (row.at("database") == kAppDb) {
      EXPECT_EQ(row.at("port"), SecondPort());
    }
  }
}

}  // namespace
}  // namespace pgfleet::testutil
