// Protocol-level named prepared statements through a real pgfleet-agent in transaction mode,
// in front of a real PostgreSQL 15: pgbench -M prepared, libpq (PQprepare, PQexecPrepared,
// PQdescribePrepared), raw protocol Close and pipelines, Parse errors, SQL PREPARE refused
// with a clear error, session mode untouched, and real drivers (psycopg 3, node-postgres,
// JDBC) whose statements are prepared on one server and executed on others.
//
// The pool is always much smaller than the client count, and tests force a client's next
// transaction onto a different server by holding the one it just used (the pool hands out the
// most recently used idle server first).

#include <libpq-fe.h>
#include <sys/wait.h>

#include <atomic>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/raw_client.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kAgentStatementsSql[] =
    "select count(*) from pg_prepared_statements where name like 'pgf\\_%'";

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

std::filesystem::path ClientsDir() {
  return std::filesystem::path(PGFLEET_SOURCE_DIR) / "tests" / "integration" / "clients";
}

// Parses a client script's "OK <checked> pids=1,2,3" line.
struct ClientReport {
  int checked = -1;
  std::set<std::string> pids;
};
std::optional<ClientReport> ParseReport(const std::string& out) {
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    if (!absl::StartsWith(line, "OK ")) continue;
    std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
    if (parts.size() != 3 || !absl::StartsWith(parts[2], "pids=")) return std::nullopt;
    ClientReport report;
    if (!absl::SimpleAtoi(parts[1], &report.checked)) return std::nullopt;
    for (absl::string_view pid : absl::StrSplit(parts[2].substr(5), ',', absl::SkipEmpty())) {
      report.pids.insert(std::string(pid));
    }
    return report;
  }
  return std::nullopt;
}

class PreparedStatementsTest : public AgentTest {
 protected:
  // Holds the most recently used server in a transaction, so the next client gets another.
  absl::Status Hold(PGconn* holder) {
    PGF_RETURN_IF_ERROR(Query(holder, "BEGIN").status());
    return Query(holder, "select 1").status();
  }
};

absl::StatusOr<PgResult> ExecPrepared(PGconn* conn, const std::string& name,
                                      const std::vector<std::string>& params) {
  std::vector<const char*> values;
  for (const std::string& param : params) values.push_back(param.c_str());
  PgResult result(PQexecPrepared(conn, name.c_str(), static_cast<int>(values.size()), values.data(),
                                 nullptr, nullptr, 0));
  if (PQresultStatus(result.get()) != PGRES_TUPLES_OK &&
      PQresultStatus(result.get()) != PGRES_COMMAND_OK) {
    return ResultError(conn, result.get());
  }
  return result;
}

absl::Status Prepare(PGconn* conn, const std::string& name, const std::string& sql,
                     const std::vector<Oid>& types = {}) {
  PgResult result(PQprepare(conn, name.c_str(), sql.c_str(), static_cast<int>(types.size()),
                            types.empty() ? nullptr : types.data()));
  if (PQresultStatus(result.get()) != PGRES_COMMAND_OK) return ResultError(conn, result.get());
  return absl::OkStatus();
}

// --- pgbench -M prepared: 10 clients, 2 servers ---------------------------------------------

TEST_F(PreparedStatementsTest, PgbenchPreparedTenClientsOnTwoServers) {
  const RunOptions run = PgbenchRunOptions();
  PGF_ASSERT_OK(InitPgbench(*g_pg));
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult bench,
      RunCommand({g_pg->BinPath("pgbench"), "-M", "prepared", "-c", "10", "-j", "2", "-T", "5",
                  "-h", "127.0.0.1", "-p", std::to_string(agent_->port()), "-U", kAppUser, kAppDb},
                 run));
  ASSERT_TRUE(bench.Succeeded()) << bench.Describe();
  int64_t processed = -1;
  int64_t failed = 0;
  for (absl::string_view line : absl::StrSplit(bench.stdout_text, '\n')) {
    auto number_after = [&](absl::string_view prefix, int64_t* out) {
      if (!absl::StartsWith(line, prefix)) return;
      absl::string_view rest = absl::StripLeadingAsciiWhitespace(line.substr(prefix.size()));
      rest = rest.substr(0, rest.find_first_not_of("0123456789"));
      EXPECT_TRUE(absl::SimpleAtoi(rest, out)) << line;
    };
    number_after("number of transactions actually processed:", &processed);
    number_after("number of failed transactions:", &failed);
  }
  EXPECT_GT(processed, 100) << bench.Describe();
  EXPECT_EQ(failed, 0) << bench.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(Rows backends, g_pg->Exec(kAppdbBackendsSql));
  EXPECT_LE(std::stoi(backends[0][0]), 2) << "more server connections than default_pool_size";

  // Both servers have pgbench's statements, under the agent's names: hold each in its own
  // transaction and look.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn a, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn b, ConnectApp());
  PGF_ASSERT_OK(Query(a.get(), "BEGIN"));
  PGF_ASSERT_OK(Query(b.get(), "BEGIN"));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t pid_a, ScalarInt(a.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t pid_b, ScalarInt(b.get(), "select pg_backend_pid()"));
  ASSERT_NE(pid_a, pid_b);
  PGF_ASSERT_OK_AND_ASSIGN(int64_t on_a, ScalarInt(a.get(), kAgentStatementsSql));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t on_b, ScalarInt(b.get(), kAgentStatementsSql));
  EXPECT_GE(on_a, 1) << "server " << pid_a << " has no prepared statement of pgbench's";
  EXPECT_GE(on_b, 1) << "server " << pid_b << " has no prepared statement of pgbench's";
  // TPC-B has 7 statements; the 10 clients' identical statements share one name each.
  EXPECT_LE(on_a, 7);
  EXPECT_LE(on_b, 7);
  PGF_ASSERT_OK(Query(a.get(), "COMMIT"));
  PGF_ASSERT_OK(Query(b.get(), "COMMIT"));
}

// --- libpq ----------------------------------------------------------------------------------

TEST_F(PreparedStatementsTest, LibpqStatementFollowsTheClientAcrossServers) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn client, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn holder, ConnectApp());
  PGF_ASSERT_OK(Prepare(client.get(), "double_it", "select $1::int * 2, pg_backend_pid()"));
  std::set<std::string> pids;
  for (int i = 0; i < 40; ++i) {
    const bool hold = i % 2 == 1;
    if (hold) PGF_ASSERT_OK(Hold(holder.get()));
    PGF_ASSERT_OK_AND_ASSIGN(PgResult result,
                             ExecPrepared(client.get(), "double_it", {std::to_string(i)}));
    ASSERT_EQ(PQntuples(result.get()), 1);
    EXPECT_EQ(std::string(PQgetvalue(result.get(), 0, 0)), std::to_string(2 * i));
    pids.insert(PQgetvalue(result.get(), 0, 1));
    if (hold) PGF_ASSERT_OK(Query(holder.get(), "COMMIT"));
  }
  EXPECT_EQ(pids.size(), 2u) << "the statement should have run on both servers";

  // Inside a transaction too, with a second statement prepared mid-transaction.
  PGF_ASSERT_OK(Query(client.get(), "BEGIN"));
  PGF_ASSERT_OK(Prepare(client.get(), "in_tx", "select $1::text || '!'"));
  PGF_ASSERT_OK_AND_ASSIGN(PgResult in_tx, ExecPrepared(client.get(), "in_tx", {"hi"}));
  EXPECT_EQ(std::string(PQgetvalue(in_tx.get(), 0, 0)), "hi!");
  PGF_ASSERT_OK(Query(client.get(), "COMMIT"));
  PGF_ASSERT_OK(Hold(holder.get()));
  PGF_ASSERT_OK_AND_ASSIGN(PgResult again, ExecPrepared(client.get(), "in_tx", {"yo"}));
  EXPECT_EQ(std::string(PQgetvalue(again.get(), 0, 0)), "yo!");
  PGF_ASSERT_OK(Query(holder.get(), "COMMIT"));
}

TEST_F(PreparedStatementsTest, DescribePreparedOnAnotherServer) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn client, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn holder, ConnectApp());
  PGF_ASSERT_OK(Prepare(client.get(), "shape",
                        "select $1 as num, $2::text as label, now() as at, 1.5::numeric as x",
                        {23 /* int4 */, 0}));
  // Same server, then a server that never saw the statement.
  for (bool hold : {false, true}) {
    SCOPED_TRACE(hold ? "other server" : "same server");
    if (hold) PGF_ASSERT_OK(Hold(holder.get()));
    PgResult described(PQdescribePrepared(client.get(), "shape"));
    ASSERT_EQ(PQresultStatus(described.get()), PGRES_COMMAND_OK) << PQerrorMessage(client.get());
    ASSERT_EQ(PQnparams(described.get()), 2);
    EXPECT_EQ(PQparamtype(described.get(), 0), 23u);
    EXPECT_EQ(PQparamtype(described.get(), 1), 25u) << "text, inferred by PostgreSQL";
    ASSERT_EQ(PQnfields(described.get()), 4);
    EXPECT_STREQ(PQfname(described.get(), 0), "num");
    EXPECT_STREQ(PQfname(described.get(), 1), "label");
    EXPECT_STREQ(PQfname(described.get(), 2), "at");
    EXPECT_EQ(PQftype(described.get(), 2), 1184u);  // timestamptz
    EXPECT_EQ(PQftype(described.get(), 3), 1700u);  // numeric
    if (hold) PGF_ASSERT_OK(Query(holder.get(), "COMMIT"));
  }
  PgResult missing(PQdescribePrepared(client.get(), "nope"));
  EXPECT_EQ(PQresultStatus(missing.get()), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(missing.get(), PG_DIAG_SQLSTATE), "26000");
}

TEST_F(PreparedStatementsTest, ParseErrorIsReportedAndTheNameStaysFree) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn client, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn holder, ConnectApp());
  absl::Status bad = Prepare(client.get(), "s", "selec 1");
  EXPECT_EQ(SqlStateOf(bad), "42601") << bad;
  absl::Status missing_table = Prepare(client.get(), "s", "select * from no_such_table");
  EXPECT_EQ(SqlStateOf(missing_table), "42P01") << missing_table;
  PGF_ASSERT_OK(Prepare(client.get(), "s", "select 41 + 1"));
  PGF_ASSERT_OK_AND_ASSIGN(PgResult result, ExecPrepared(client.get(), "s", {}));
  EXPECT_EQ(std::string(PQgetvalue(result.get(), 0, 0)), "42");
  // Redefining the name fails as on a direct connection; the original stays usable.
  absl::Status duplicate = Prepare(client.get(), "s", "select 0");
  EXPECT_EQ(SqlStateOf(duplicate), "42P05") << duplicate;
  PGF_ASSERT_OK(Hold(holder.get()));
  PGF_ASSERT_OK_AND_ASSIGN(PgResult still, ExecPrepared(client.get(), "s", {}));
  EXPECT_EQ(std::string(PQgetvalue(still.get(), 0, 0)), "42");
  PGF_ASSERT_OK(Query(holder.get(), "COMMIT"));
  // A statement that fails to execute does not disturb the next one.
  PGF_ASSERT_OK(Prepare(client.get(), "div", "select 1 / $1::int"));
  absl::StatusOr<PgResult> by_zero = ExecPrepared(client.get(), "div", {"0"});
  EXPECT_EQ(SqlStateOf(by_zero.status()), "22012") << by_zero.status();
  PGF_ASSERT_OK_AND_ASSIGN(PgResult fine, ExecPrepared(client.get(), "div", {"1"}));
  EXPECT_EQ(std::string(PQgetvalue(fine.get(), 0, 0)), "1");
  // Exec of a name the client never prepared: PostgreSQL's own error, with the client's name.
  absl::StatusOr<PgResult> unknown = ExecPrepared(client.get(), "never", {});
  EXPECT_EQ(SqlStateOf(unknown.status()), "26000") << unknown.status();
  EXPECT_TRUE(absl::StrContains(unknown.status().message(), "never")) << unknown.status();
}

TEST_F(PreparedStatementsTest, SmallCacheEvictsAndReprepares) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"max_prepared_statements", "2"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn client, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn holder, ConnectApp());
  for (int s = 0; s < 5; ++s) {
    PGF_ASSERT_OK(
        Prepare(client.get(), absl::StrCat("s", s), absl::StrCat("select ", s, " + $1::int")));
  }
  for (int round = 0; round < 4; ++round) {
    if (round % 2 == 1) PGF_ASSERT_OK(Hold(holder.get()));
    for (int s = 0; s < 5; ++s) {
      PGF_ASSERT_OK_AND_ASSIGN(PgResult result,
                               ExecPrepared(client.get(), absl::StrCat("s", s), {"10"}));
      EXPECT_EQ(std::string(PQgetvalue(result.get(), 0, 0)), std::to_string(10 + s));
    }
    if (round % 2 == 1) PGF_ASSERT_OK(Query(holder.get(), "COMMIT"));
  }
  PGF_ASSERT_OK(Query(client.get(), "BEGIN"));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t on_server, ScalarInt(client.get(), kAgentStatementsSql));
  EXPECT_LE(on_server, 2) << "max_prepared_statements bounds each server";
  EXPECT_GE(on_server, 1);
  PGF_ASSERT_OK(Query(client.get(), "COMMIT"));
}

TEST_F(PreparedStatementsTest, DiscardAllForgetsTheClientsStatements) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn client, ConnectApp());
  PGF_ASSERT_OK(Prepare(client.get(), "s", "select 7"));
  PGF_ASSERT_OK(Query(client.get(), "DISCARD ALL"));
  absl::StatusOr<PgResult> gone = ExecPrepared(client.get(), "s", {});
  EXPECT_EQ(SqlStateOf(gone.status()), "26000") << gone.status();
  PGF_ASSERT_OK(Prepare(client.get(), "s", "select 8"));
  PGF_ASSERT_OK_AND_ASSIGN(PgResult result, ExecPrepared(client.get(), "s", {}));
  EXPECT_EQ(std::string(PQgetvalue(result.get(), 0, 0)), "8");
  PGF_ASSERT_OK(Query(client.get(), "DEALLOCATE ALL"));
  absl::StatusOr<PgResult> gone_again = ExecPrepared(client.get(), "s", {});
  EXPECT_EQ(SqlStateOf(gone_again.status()), "26000") << gone_again.status();
}

// --- the raw protocol: Close, and answers in order within a pipeline -------------------------

std::string Cstr(std::string_view s) { return std::string(s) + std::string(1, '\0'); }
std::string ParseMsg(std::string_view name, std::string_view sql) {
  return FrontendMessage('P', Cstr(name) + Cstr(sql) + std::string(2, '\0'));
}
std::string BindMsg(std::string_view statement) {
  return FrontendMessage('B', Cstr("") + Cstr(statement) + std::string(6, '\0'));
}
std::string ExecuteMsg() { return FrontendMessage('E', Cstr("") + std::string(4, '\0')); }
std::string SyncMsg() { return FrontendMessage('S', ""); }
std::string CloseMsg(std::string_view name) { return FrontendMessage('C', "S" + Cstr(name)); }
std::string DescribeMsg(std::string_view name) { return FrontendMessage('D', "S" + Cstr(name)); }

// Message types up to and including the `syncs`-th ReadyForQuery.
absl::StatusOr<std::string> ReadTypes(RawClient& raw, int syncs,
                                      std::vector<BackendMessage>* messages = nullptr) {
  std::string types;
  while (syncs > 0) {
    PGF_ASSIGN_OR_RETURN(BackendMessage message, raw.ReadMessage(absl::Seconds(10)));
    types.push_back(message.type);
    if (message.type == 'Z') --syncs;
    if (messages != nullptr) messages->push_back(std::move(message));
  }
  return types;
}

TEST_F(PreparedStatementsTest, RawProtocolCloseAndPipelinedAnswersInOrder) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"auth_type", "md5"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn other, ConnectApp());
  // Another client prepares "select 2" on the server first, so this client's Parse of the
  // same statement is answered without a Parse on the server.
  PGF_ASSERT_OK(Prepare(other.get(), "theirs", "select 2"));

  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, RawClient::Connect(agent_->port()));
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kAppUser, kAppDb, kAppPassword));
  ASSERT_TRUE(login.ok) << (login.error ? login.error->ToString() : "no ReadyForQuery");

  // One pipeline: a new statement, a cached one, a failing one in the middle of a segment,
  // and a Close; every answer in order, exactly as PostgreSQL would send them.
  PGF_ASSERT_OK(raw->Send(ParseMsg("one", "select 1") + BindMsg("one") + ExecuteMsg() +
                          ParseMsg("two", "select 2") + DescribeMsg("two") + BindMsg("two") +
                          ExecuteMsg() + SyncMsg()));
  PGF_ASSERT_OK_AND_ASSIGN(std::string types, ReadTypes(*raw, 1));
  EXPECT_EQ(types, "12DC1tT2DCZ");

  std::vector<BackendMessage> messages;
  PGF_ASSERT_OK(raw->Send(BindMsg("one") + ExecuteMsg() + ParseMsg("bad", "selec 3") +
                          BindMsg("two") + ExecuteMsg() + ParseMsg("after", "select 4") +
                          SyncMsg() + CloseMsg("one") + CloseMsg("not-there") + SyncMsg()));
  PGF_ASSERT_OK_AND_ASSIGN(types, ReadTypes(*raw, 2, &messages));
  EXPECT_EQ(types, "2DCEZ33Z") << "messages after the error are skipped until Sync";
  for (const BackendMessage& message : messages) {
    if (message.type == 'E') {
      PGF_ASSERT_OK_AND_ASSIGN(ErrorFields error, ParseErrorResponse(message.body));
      EXPECT_EQ(error.code, "42601") << error.ToString();
    }
  }
  // "after" was skipped and "bad" failed: neither exists; "one" was closed.
  for (const char* name : {"bad", "after", "one"}) {
    PGF_ASSERT_OK(raw->Send(BindMsg(name) + SyncMsg()));
    messages.clear();
    PGF_ASSERT_OK_AND_ASSIGN(types, ReadTypes(*raw, 1, &messages));
    ASSERT_EQ(types, "EZ") << name;
    PGF_ASSERT_OK_AND_ASSIGN(ErrorFields error, ParseErrorResponse(messages[0].body));
    EXPECT_EQ(error.code, "26000") << error.ToString();
    EXPECT_TRUE(absl::StrContains(error.message, name)) << error.ToString();
  }
  // Names are free again, and "two" still works.
  PGF_ASSERT_OK(raw->Send(ParseMsg("one", "select 11") + BindMsg("one") + ExecuteMsg() +
                          BindMsg("two") + ExecuteMsg() + SyncMsg()));
  messages.clear();
  PGF_ASSERT_OK_AND_ASSIGN(types, ReadTypes(*raw, 1, &messages));
  EXPECT_EQ(types, "12DC2DCZ");
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<BackendMessage> rows, raw->SimpleQuery("select 5"));
  EXPECT_EQ(rows.back().type, 'Z');
}

// --- SQL-level PREPARE ----------------------------------------------------------------------

TEST_F(PreparedStatementsTest, SqlPrepareInTransactionModeExplainsItself) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn client, ConnectApp());
  for (const char* sql : {"PREPARE p AS select 1", "  /* c */ execute p", "-- x\nDEALLOCATE p"}) {
    absl::StatusOr<Rows> rows = Query(client.get(), sql);
    EXPECT_EQ(SqlStateOf(rows.status()), "0A000") << sql << ": " << rows.status();
    EXPECT_TRUE(absl::StrContains(rows.status().message(), "transaction pooling mode"))
        << rows.status();
    EXPECT_TRUE(absl::StrContains(rows.status().message(), "protocol-level prepared"))
        << rows.status();
  }
  // Inside a transaction the error aborts it, as any error would.
  PGF_ASSERT_OK(Query(client.get(), "BEGIN"));
  EXPECT_FALSE(Query(client.get(), "prepare q as select 1").ok());
  EXPECT_EQ(PQtransactionStatus(client.get()), PQTRANS_INERROR);
  PGF_ASSERT_OK(Query(client.get(), "ROLLBACK"));
  // Queries that merely mention the words are not touched.
  PGF_ASSERT_OK_AND_ASSIGN(std::string text,
                           ScalarText(client.get(), "select 'PREPARE x AS EXECUTE'"));
  EXPECT_EQ(text, "PREPARE x AS EXECUTE");
  PGF_ASSERT_OK(Query(client.get(), "create temp table executes (deallocate int)"));
}

TEST_F(PreparedStatementsTest, SessionModeIsUnaffected) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "session"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn client, ConnectApp());
  PGF_ASSERT_OK(Query(client.get(), "PREPARE p(int) AS select $1 + 1"));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t value, ScalarInt(client.get(), "EXECUTE p(41)"));
  EXPECT_EQ(value, 42);
  PGF_ASSERT_OK(Prepare(client.get(), "mine", "select 3"));
  PGF_ASSERT_OK_AND_ASSIGN(
      Rows names, Query(client.get(), "select name from pg_prepared_statements order by name"));
  ASSERT_EQ(names.size(), 2u);
  EXPECT_EQ(names[0][0], "mine") << "session mode keeps the client's own names";
  EXPECT_EQ(names[1][0], "p");
}

// --- real drivers ---------------------------------------------------------------------------

class DriverTest : public PreparedStatementsTest {
 protected:
  // Runs `argv` while `holders` other clients keep taking servers in short transactions, so
  // the driver's transactions land on both servers. Returns the script's report.
  void RunDriver(const std::vector<std::string>& argv, ClientReport* report) {
    std::atomic<bool> stop{false};
    std::vector<std::thread> holders;
    std::atomic<int> holder_errors{0};
    for (int h = 0; h < 3; ++h) {
      holders.emplace_back([&] {
        absl::StatusOr<PgConn> conn = ConnectApp();
        if (!conn.ok()) {
          ++holder_errors;
          return;
        }
        while (!stop) {
          if (!Query(conn->get(), "BEGIN; select pg_sleep(0.003); COMMIT").ok()) ++holder_errors;
        }
      });
    }
    RunOptions run;
    run.timeout = absl::Seconds(180);
    absl::StatusOr<RunResult> result = RunCommand(argv, run);
    stop = true;
    for (std::thread& holder : holders) holder.join();
    EXPECT_EQ(holder_errors.load(), 0);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_TRUE(result->Succeeded()) << result->Describe();
    std::optional<ClientReport> parsed = ParseReport(result->stdout_text);
    ASSERT_TRUE(parsed.has_value()) << result->Describe();
    *report = *parsed;
  }
};

TEST_F(DriverTest, Psycopg3) {
  RunOptions probe;
  absl::StatusOr<RunResult> has =
      RunCommand({"/usr/bin/python3", "-c", "import psycopg; print(psycopg.__version__)"}, probe);
  if (!has.ok() || !has->Succeeded()) {
    GTEST_SKIP() << "psycopg 3 is not installed (Debian package python3-psycopg)";
  }
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  ClientReport report;
  ASSERT_NO_FATAL_FAILURE(
      RunDriver({"/usr/bin/python3", (ClientsDir() / "psycopg_client.py").string(),
                 agent_->ConnString(kAppDb, kAppUser, kAppPassword), "60"},
                &report));
  EXPECT_EQ(report.checked, 90);
  EXPECT_GE(report.pids.size(), 2u) << "psycopg's statements should have run on both servers";
}

TEST_F(DriverTest, NodePostgres) {
  const std::filesystem::path modules = ClientsDir() / "node_modules" / "pg";
  RunOptions probe;
  absl::StatusOr<RunResult> node = RunCommand({"node", "--version"}, probe);
  if (!node.ok() || !node->Succeeded() || !std::filesystem::exists(modules)) {
    GTEST_SKIP() << "node-postgres is not installed: needs node and `npm ci --prefix "
                 << ClientsDir().string() << "` (npm package pg)";
  }
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  ClientReport report;
  ASSERT_NO_FATAL_FAILURE(
      RunDriver({"node", (ClientsDir() / "node_pg_client.js").string(), "127.0.0.1",
                 std::to_string(agent_->port()), kAppDb, kAppUser, kAppPassword, "40"},
                &report));
  EXPECT_EQ(report.checked, 80);
  EXPECT_GE(report.pids.size(), 2u) << "the named query should have run on both servers";
}

TEST_F(DriverTest, Jdbc) {
  const std::string jar = "/usr/share/java/postgresql.jar";
  RunOptions probe;
  absl::StatusOr<RunResult> java = RunCommand({"java", "-version"}, probe);
  if (!java.ok() || !java->Succeeded() || !std::filesystem::exists(jar)) {
    GTEST_SKIP() << "the PostgreSQL JDBC driver is not installed (Debian packages "
                    "libpostgresql-jdbc-java and a java runtime, e.g. openjdk-17-jre-headless)";
  }
  // As with PgBouncer: the driver sends extra_float_digits in its startup packet.
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"ignore_startup_parameters", "extra_float_digits"}}));
  ClientReport report;
  ASSERT_NO_FATAL_FAILURE(
      RunDriver({"java", "-cp", jar, (ClientsDir() / "PgJdbcClient.java").string(),
                 absl::StrCat("jdbc:postgresql://127.0.0.1:", agent_->port(), "/", kAppDb),
                 kAppUser, kAppPassword, "50"},
                &report));
  EXPECT_EQ(report.checked, 100);
  EXPECT_GE(report.pids.size(), 2u) << "JDBC's named statements should have run on both servers";
}

}  // namespace
}  // namespace pgfleet::testutil
