// End-to-end data path through a real pgfleet-agent in front of a real PostgreSQL 15:
// pooling modes, COPY, large results, cancel, pgbench, abrupt clients, hostile input, auth.
//
// One PostgreSQL cluster serves the whole binary; every test starts its own agent with the
// settings it needs. Nothing waits with a bare sleep: tests poll a condition with a deadline.

#include <libpq-fe.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/md5.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/raw_client.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

// A role whose password PostgreSQL stores as md5 and checks with md5 (pg_hba), so an agent
// that only knows the md5 hash from auth_file can still log in to the server.
constexpr char kMd5User[] = "md5user";
constexpr char kMd5Password[] = "md5-Secret-7";

[[maybe_unused]] auto* const kCluster =
    RegisterSharedPostgres(PostgresWithMd5Role(kMd5User), [](PostgresEnv& pg) -> absl::Status {
      PGF_RETURN_IF_ERROR(CreateAppDatabase(pg));
      return pg.CreateUser(kMd5User, kMd5Password, "md5");
    });

uint64_t Fnv1a(uint64_t hash, std::string_view data) {
  for (unsigned char c : data) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return hash;
}
constexpr uint64_t kFnvBasis = 14695981039346656037ULL;

struct ResultDigest {
  int64_t rows = 0;
  int64_t sum_first_column = 0;
  uint64_t hash = kFnvBasis;
};

ResultDigest DigestRows(const Rows& rows) {
  ResultDigest digest;
  for (const std::vector<std::string>& row : rows) {
    ++digest.rows;
    int64_t first = 0;
    if (!row.empty() && absl::SimpleAtoi(row[0], &first)) digest.sum_first_column += first;
    for (const std::string& value : row) {
      digest.hash = Fnv1a(digest.hash, value);
      digest.hash = Fnv1a(digest.hash, "\x1f");
    }
    digest.hash = Fnv1a(digest.hash, "\x1e");
  }
  return digest;
}

class DataPathTest : public AgentTest {
 protected:
  // The app agent's options with the md5 role in its userlist too.
  AgentOptions BaseOptions(const std::map<std::string, std::string>& settings) const {
    std::map<std::string, std::string> merged = DefaultAgentSettings();
    for (const auto& [key, value] : settings) merged[key] = value;
    AgentOptions options = AppAgentOptions(merged);
    options.userlist.push_back({kMd5User, kMd5Password});
    return options;
  }

  // Starts agent_ with BaseOptions(settings); check with ASSERT_NO_FATAL_FAILURE.
  void StartAgent(const std::map<std::string, std::string>& settings) {
    StartAgentWith(BaseOptions(settings));
  }

  std::string AgentConn(const std::string& user = kAppUser,
                        const std::string& password = kAppPassword,
                        const std::string& db = kAppDb) const {
    return agent_->ConnString(db, user, password);
  }
  std::string DirectAppConn() const { return g_pg->ConnString(kAppDb, kAppUser, kAppPassword); }

  static absl::StatusOr<int64_t> AppdbBackends() {
    absl::StatusOr<Rows> rows = g_pg->Exec(kAppdbBackendsSql);
    if (!rows.ok()) return rows.status();
    int64_t n = 0;
    if (!absl::SimpleAtoi((*rows)[0][0], &n)) return absl::InternalError("bad count");
    return n;
  }

  // The agent is alive and serves a normal client.
  void ExpectAgentHealthy() {
    ASSERT_TRUE(agent_->IsRunning()) << "agent died\n" << agent_->Diagnostics();
    absl::StatusOr<PgConn> conn = ConnectApp();
    ASSERT_TRUE(conn.ok()) << conn.status();
    absl::StatusOr<int64_t> value = ScalarInt(conn->get(), "select 40 + 2");
    ASSERT_TRUE(value.ok()) << value.status();
    EXPECT_EQ(*value, 42);
  }
};

// --- 1. transaction pooling multiplexes many clients onto few servers -----------------------

TEST_F(DataPathTest, TransactionModeMultiplexesTwentyClientsOntoTwoServers) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "transaction"}, {"default_pool_size", "2"}}));

  constexpr int kClients = 20;
  constexpr int kRoundsPerClient = 15;
  std::vector<PgConn> conns;
  for (int i = 0; i < kClients; ++i) {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
    conns.push_back(std::move(conn));
  }

  std::atomic<bool> done{false};
  std::atomic<int64_t> max_backends{0};
  std::atomic<int> samples{0};
  std::thread monitor([&] {
    while (!done.load()) {
      absl::StatusOr<int64_t> n = AppdbBackends();
      if (n.ok()) {
        int64_t prev = max_backends.load();
        while (*n > prev && !max_backends.compare_exchange_weak(prev, *n)) {
        }
        samples.fetch_add(1);
      }
      absl::SleepFor(absl::Milliseconds(5));  // Sampling rate, not synchronisation.
    }
  });

  std::mutex mu;
  std::vector<std::string> errors;
  std::set<std::string> backend_pids;
  std::atomic<int> ok_rounds{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < kClients; ++i) {
    workers.emplace_back([&, i] {
      PGconn* conn = conns[static_cast<size_t>(i)].get();
      for (int round = 0; round < kRoundsPerClient; ++round) {
        // A one-statement transaction, then a multi-statement one over several round trips.
        absl::StatusOr<Rows> a =
            Query(conn, absl::StrCat("select pg_backend_pid(), count(*) from generate_series(1, ",
                                     1000 + i, ")"));
        absl::StatusOr<Rows> b = Query(conn, "BEGIN");
        absl::StatusOr<Rows> c = Query(conn, "select pg_backend_pid()");
        absl::StatusOr<Rows> d = Query(conn, "select pg_backend_pid()");
        absl::StatusOr<Rows> e = Query(conn, "COMMIT");
        std::lock_guard<std::mutex> lock(mu);
        for (const auto* r : {&a, &b, &c, &d, &e}) {
          if (!r->ok()) errors.push_back(absl::StrCat("client ", i, ": ", r->status().ToString()));
        }
        if (!a.ok() || !b.ok() || !c.ok() || !d.ok() || !e.ok()) return;
        if ((*a)[0][1] != std::to_string(1000 + i)) {
          errors.push_back(absl::StrCat("client ", i, ": wrong count ", (*a)[0][1]));
          return;
        }
        if ((*c)[0][0] != (*d)[0][0]) {
          errors.push_back(absl::StrCat("client ", i, ": transaction moved from backend ",
                                        (*c)[0][0], " to ", (*d)[0][0]));
        }
        backend_pids.insert((*a)[0][0]);
        backend_pids.insert((*c)[0][0]);
        ok_rounds.fetch_add(1);
      }
    });
  }
  for (std::thread& t : workers) t.join();
  done.store(true);
  monitor.join();

  EXPECT_TRUE(errors.empty()) << absl::StrJoin(errors, "\n");
  EXPECT_EQ(ok_rounds.load(), kClients * kRoundsPerClient);
  EXPECT_GT(samples.load(), 0);
  EXPECT_LE(max_backends.load(), 2) << "more server connections than default_pool_size";
  EXPECT_GE(backend_pids.size(), 1u);
  EXPECT_LE(backend_pids.size(), 2u) << "clients saw backends " << absl::StrJoin(backend_pids, ",");
  PGF_ASSERT_OK_AND_ASSIGN(int64_t backends_now, AppdbBackends());
  EXPECT_LE(backends_now, 2);
}

// --- reload ----------------------------------------------------------------------------------

TEST_F(DataPathTest, SighupReloadAddsDatabase) {
  AgentOptions options = BaseOptions({});
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  EXPECT_FALSE(Connect(AgentConn(kAppUser, kAppPassword, "appdb_alias")).ok());

  options.databases_section +=
      absl::StrCat("appdb_alias = host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb, "\n");
  PGF_ASSERT_OK(agent_->RewriteConfig(options));
  PGF_ASSERT_OK(agent_->Signal(SIGHUP));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<PgConn> conn = Connect(AgentConn(kAppUser, kAppPassword, "appdb_alias"));
        if (!conn.ok()) *note = conn.status().ToString();
        return conn.ok();
      },
      absl::Seconds(10), "the reloaded config to serve appdb_alias"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, Connect(AgentConn(kAppUser, kAppPassword, "appdb_alias")));
  PGF_ASSERT_OK_AND_ASSIGN(std::string db, ScalarText(conn.get(), "select current_database()"));
  EXPECT_EQ(db, kAppDb);
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

// --- 2. session state --------------------------------------------------------------------------

TEST_F(DataPathTest, SessionModeKeepsSessionStateAcrossQueries) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "session"}, {"default_pool_size", "2"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK(Query(conn.get(), "SET application_name = 'pgfleet_session_test'"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid1, ScalarText(conn.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK(Query(conn.get(), "create temp table session_tmp(a int)"));
  PGF_ASSERT_OK(Query(conn.get(), "insert into session_tmp values (1), (2), (3)"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string app_name, ScalarText(conn.get(), "show application_name"));
  EXPECT_EQ(app_name, "pgfleet_session_test");
  PGF_ASSERT_OK_AND_ASSIGN(int64_t rows, ScalarInt(conn.get(), "select count(*) from session_tmp"));
  EXPECT_EQ(rows, 3);
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid2, ScalarText(conn.get(), "select pg_backend_pid()"));
  EXPECT_EQ(pid1, pid2) << "session mode moved the client to another server connection";
}

TEST_F(DataPathTest, SessionModeResetsServerStateBetweenClients) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "session"}, {"default_pool_size", "1"}}));
  std::string first_pid;
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn a, ConnectApp());
    PGF_ASSERT_OK_AND_ASSIGN(first_pid, ScalarText(a.get(), "select pg_backend_pid()"));
    PGF_ASSERT_OK(Query(a.get(), "create temp table reset_tmp(a int)"));
    PGF_ASSERT_OK(Query(a.get(), "set pgfleet.marker = 'left-by-a'"));
  }
  PGF_ASSERT_OK_AND_ASSIGN(PgConn b, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(std::string second_pid, ScalarText(b.get(), "select pg_backend_pid()"));
  if (second_pid == first_pid) {
    PGF_ASSERT_OK_AND_ASSIGN(
        std::string leftover,
        ScalarText(b.get(), "select to_regclass('pg_temp.reset_tmp') is null"));
    EXPECT_EQ(leftover, "t") << "client B sees client A's temp table: no server_reset_query?";
    PGF_ASSERT_OK_AND_ASSIGN(
        std::string marker,
        ScalarText(b.get(), "select coalesce(current_setting('pgfleet.marker', true), '')"));
    EXPECT_EQ(marker, "") << "client B sees client A's SET";
  } else {
    // A fresh server connection is trivially clean, but a pool of one should have reused it.
    ADD_FAILURE() << "pool of size 1 did not reuse the server connection (" << first_pid << " -> "
                  << second_pid << ")";
  }
}

TEST_F(DataPathTest, TransactionModeTempTableVisibleWithinTransaction) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "transaction"}, {"default_pool_size", "2"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  // Other clients keep the pool busy between our statements: if the agent released our server
  // mid-transaction, one of them would take it and we would land on the other server.
  std::vector<PgConn> others;
  for (int i = 0; i < 3; ++i) {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn other, ConnectApp());
    others.push_back(std::move(other));
  }
  auto interleave = [&] {
    for (PgConn& other : others) PGF_EXPECT_OK(Query(other.get(), "select 1"));
  };
  PGF_ASSERT_OK(Query(conn.get(), "BEGIN"));
  interleave();
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid1, ScalarText(conn.get(), "select pg_backend_pid()"));
  interleave();
  PGF_ASSERT_OK(Query(conn.get(), "create temp table tx_tmp(a int) on commit drop"));
  interleave();
  PGF_ASSERT_OK(Query(conn.get(), "insert into tx_tmp select generate_series(1, 5)"));
  interleave();
  PGF_ASSERT_OK_AND_ASSIGN(int64_t rows, ScalarInt(conn.get(), "select count(*) from tx_tmp"));
  EXPECT_EQ(rows, 5);
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid2, ScalarText(conn.get(), "select pg_backend_pid()"));
  EXPECT_EQ(pid1, pid2);
  PGF_ASSERT_OK(Query(conn.get(), "COMMIT"));
  interleave();
  // And after the transaction the client still works.
  PGF_ASSERT_OK_AND_ASSIGN(int64_t one, ScalarInt(conn.get(), "select 1"));
  EXPECT_EQ(one, 1);
}

// --- 3. statement pooling -----------------------------------------------------------------------

TEST_F(DataPathTest, StatementModeRefusesTransactionBlocks) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "statement"}, {"default_pool_size", "2"}}));
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
    PGF_ASSERT_OK_AND_ASSIGN(int64_t v, ScalarInt(conn.get(), "select 7"));
    EXPECT_EQ(v, 7);
    PGF_ASSERT_OK_AND_ASSIGN(v, ScalarInt(conn.get(), "select 8"));
    EXPECT_EQ(v, 8);
  }
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
    std::vector<absl::Status> statuses;
    for (const char* sql : {"BEGIN", "select 1", "COMMIT"}) {
      statuses.push_back(Query(conn.get(), sql).status());
    }
    auto first_error = std::find_if(statuses.begin(), statuses.end(),
                                    [](const absl::Status& s) { return !s.ok(); });
    ASSERT_NE(first_error, statuses.end()) << "BEGIN / select / COMMIT all succeeded";
    const std::string message = absl::AsciiStrToLower(first_error->ToString());
    EXPECT_TRUE(absl::StrContains(message, "transaction blocks") ||
                absl::StrContains(message, "statement pooling"))
        << *first_error;
  }
  // The refused transaction must not be left open on a server.
  PGF_EXPECT_OK(PollUntil(
      [](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Rows> rows = g_pg->Exec(
            "select count(*) from pg_stat_activity where datname = 'appdb' and state like "
            "'idle in transaction%'");
        if (!rows.ok()) return rows.status();
        *note = absl::StrCat((*rows)[0][0], " idle-in-transaction backends");
        return (*rows)[0][0] == "0";
      },
      absl::Seconds(10), "no idle-in-transaction backend on appdb"));
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

// --- 4. COPY ------------------------------------------------------------------------------------

TEST_F(DataPathTest, CopyInAndOutRoundTrip) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "transaction"}, {"default_pool_size", "2"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK(Query(conn.get(),
                      "drop table if exists copy_rows; create table copy_rows ("
                      "id int primary key, payload text not null)"));

  constexpr int kRows = 10000;
  std::string expected;
  for (int i = 1; i <= kRows; ++i) {
    absl::StrAppend(&expected, i, "\t", "row-", i, "-",
                    std::string(static_cast<size_t>(i % 97), 'x'), i % 7 == 0 ? " with spaces" : "",
                    "\n");
  }
  {
    PgResult start(PQexec(conn.get(), "COPY copy_rows (id, payload) FROM STDIN"));
    ASSERT_EQ(PQresultStatus(start.get()), PGRES_COPY_IN) << PQerrorMessage(conn.get());
    // Send in uneven chunks so messages do not line up with rows.
    constexpr size_t kChunk = 7919;
    for (size_t pos = 0; pos < expected.size(); pos += kChunk) {
      const size_t n = std::min(kChunk, expected.size() - pos);
      ASSERT_EQ(PQputCopyData(conn.get(), expected.data() + pos, static_cast<int>(n)), 1)
          << PQerrorMessage(conn.get());
    }
    ASSERT_EQ(PQputCopyEnd(conn.get(), nullptr), 1) << PQerrorMessage(conn.get());
    PgResult done(PQgetResult(conn.get()));
    ASSERT_EQ(PQresultStatus(done.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn.get());
    EXPECT_STREQ(PQcmdTuples(done.get()), "10000");
    while (PGresult* extra = PQgetResult(conn.get())) PQclear(extra);
  }
  // Checked directly on PostgreSQL too.
  PGF_ASSERT_OK_AND_ASSIGN(Rows direct,
                           g_pg->Exec("select count(*), sum(id), sum(length(payload)) from "
                                      "copy_rows",
                                      kAppDb));
  ASSERT_EQ(direct.size(), 1u);
  EXPECT_EQ(direct[0][0], "10000");
  EXPECT_EQ(direct[0][1], std::to_string(int64_t{kRows} * (kRows + 1) / 2));

  std::string copied_out;
  {
    PgResult start(
        PQexec(conn.get(), "COPY (select id, payload from copy_rows order by id) TO STDOUT"));
    ASSERT_EQ(PQresultStatus(start.get()), PGRES_COPY_OUT) << PQerrorMessage(conn.get());
    while (true) {
      char* buf = nullptr;
      const int n = PQgetCopyData(conn.get(), &buf, 0);
      if (n == -1) break;
      ASSERT_GE(n, 0) << PQerrorMessage(conn.get());
      copied_out.append(buf, static_cast<size_t>(n));
      PQfreemem(buf);
    }
    PgResult done(PQgetResult(conn.get()));
    ASSERT_EQ(PQresultStatus(done.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn.get());
    while (PGresult* extra = PQgetResult(conn.get())) PQclear(extra);
  }
  EXPECT_EQ(std::count(copied_out.begin(), copied_out.end(), '\n'), kRows);
  EXPECT_EQ(Fnv1a(kFnvBasis, copied_out), Fnv1a(kFnvBasis, expected));
  EXPECT_TRUE(copied_out == expected) << "COPY OUT differs from what COPY IN sent";
  // The connection is still usable after both COPYs.
  PGF_ASSERT_OK_AND_ASSIGN(int64_t n, ScalarInt(conn.get(), "select count(*) from copy_rows"));
  EXPECT_EQ(n, kRows);
}

// --- 5. large results ---------------------------------------------------------------------------

TEST_F(DataPathTest, LargeResultArrivesIntact) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "transaction"}, {"default_pool_size", "2"}}));
  constexpr int64_t kRows = 200000;
  const std::string sql = "select g, md5(g::text) from generate_series(1, 200000) g";
  PGF_ASSERT_OK_AND_ASSIGN(PgConn direct, Connect(DirectAppConn()));
  PGF_ASSERT_OK_AND_ASSIGN(Rows reference, Query(direct.get(), sql));
  const ResultDigest want = DigestRows(reference);
  ASSERT_EQ(want.rows, kRows);

  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  {
    PGF_ASSERT_OK_AND_ASSIGN(Rows rows, Query(conn.get(), sql));
    const ResultDigest got = DigestRows(rows);
    EXPECT_EQ(got.rows, kRows);
    EXPECT_EQ(got.sum_first_column, kRows * (kRows + 1) / 2);
    EXPECT_EQ(got.hash, want.hash) << "simple-protocol result differs from a direct query";
  }
  {
    // The same through the extended protocol.
    PGF_ASSERT_OK_AND_ASSIGN(
        Rows rows,
        QueryParams(conn.get(), "select g, md5(g::text) from generate_series(1, $1::int) g",
                    {"200000"}));
    const ResultDigest got = DigestRows(rows);
    EXPECT_EQ(got.rows, kRows);
    EXPECT_EQ(got.hash, want.hash) << "extended-protocol result differs from a direct query";
  }
  // And the server-side aggregate agrees with the client-side one.
  PGF_ASSERT_OK_AND_ASSIGN(
      int64_t server_sum, ScalarInt(conn.get(), "select sum(g) from generate_series(1, 200000) g"));
  EXPECT_EQ(server_sum, kRows * (kRows + 1) / 2);
}

// --- 6. cancel ----------------------------------------------------------------------------------

absl::Status WaitForActiveQuery(const std::string& query) {
  return PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Rows> rows = g_pg->Exec(absl::StrCat(
            "select count(*) from pg_stat_activity where datname = 'appdb' and state = 'active' "
            "and query = ",
            QuoteLiteral(query)));
        if (!rows.ok()) return rows.status();
        *note = absl::StrCat((*rows)[0][0], " matching active backends");
        return (*rows)[0][0] == "1";
      },
      absl::Seconds(10), absl::StrCat("'", query, "' to be running on PostgreSQL"));
}

TEST_F(DataPathTest, CancelStopsOnlyTheTargetedQuery) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "transaction"}, {"default_pool_size", "2"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn victim, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn bystander, ConnectApp());

  const std::string victim_sql = "select pg_sleep(30)";
  const std::string bystander_sql = "select pg_sleep(2), 'bystander-done'";
  ASSERT_EQ(PQsendQuery(victim.get(), victim_sql.c_str()), 1) << PQerrorMessage(victim.get());
  PGF_ASSERT_OK(WaitForActiveQuery(victim_sql));
  ASSERT_EQ(PQsendQuery(bystander.get(), bystander_sql.c_str()), 1)
      << PQerrorMessage(bystander.get());
  PGF_ASSERT_OK(WaitForActiveQuery(bystander_sql));

  const absl::Time cancel_sent = absl::Now();
  {
    PGcancel* cancel = PQgetCancel(victim.get());
    ASSERT_NE(cancel, nullptr);
    char errbuf[256] = {0};
    const int ok = PQcancel(cancel, errbuf, sizeof(errbuf));
    PQfreeCancel(cancel);
    ASSERT_EQ(ok, 1) << "PQcancel: " << errbuf;
  }
  PGF_ASSERT_OK_AND_ASSIGN(PgResult victim_result,
                           GetResultWithin(victim.get(), absl::Seconds(20)));
  const absl::Duration took = absl::Now() - cancel_sent;
  ASSERT_NE(victim_result, nullptr);
  EXPECT_EQ(PQresultStatus(victim_result.get()), PGRES_FATAL_ERROR);
  const char* sqlstate = PQresultErrorField(victim_result.get(), PG_DIAG_SQLSTATE);
  EXPECT_STREQ(sqlstate != nullptr ? sqlstate : "", "57014") << PQerrorMessage(victim.get());
  EXPECT_LT(took, absl::Seconds(10)) << "cancel took " << took;
  while (PGresult* extra = PQgetResult(victim.get())) PQclear(extra);

  PGF_ASSERT_OK_AND_ASSIGN(PgResult bystander_result,
                           GetResultWithin(bystander.get(), absl::Seconds(20)));
  ASSERT_NE(bystander_result, nullptr);
  EXPECT_EQ(PQresultStatus(bystander_result.get()), PGRES_TUPLES_OK)
      << "the bystander's query was hit: " << PQerrorMessage(bystander.get());
  if (PQresultStatus(bystander_result.get()) == PGRES_TUPLES_OK) {
    EXPECT_STREQ(PQgetvalue(bystander_result.get(), 0, 1), "bystander-done");
  }
  while (PGresult* extra = PQgetResult(bystander.get())) PQclear(extra);

  // Both connections remain usable.
  PGF_EXPECT_OK(Query(victim.get(), "select 1"));
  PGF_EXPECT_OK(Query(bystander.get(), "select 1"));
}

// --- 7. pgbench ---------------------------------------------------------------------------------

TEST_F(DataPathTest, PgbenchThroughTransactionPooling) {
  const RunOptions run = PgbenchRunOptions();
  PGF_ASSERT_OK(InitPgbench(*g_pg));

  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "transaction"}, {"default_pool_size", "4"}}));
  for (const char* mode : {"extended", "simple"}) {
    SCOPED_TRACE(mode);
    PGF_ASSERT_OK_AND_ASSIGN(
        RunResult bench,
        RunCommand({g_pg->BinPath("pgbench"), "-M", mode, "-c", "8", "-j", "2", "-T", "5", "-h",
                    "127.0.0.1", "-p", std::to_string(agent_->port()), "-U", kAppUser, kAppDb},
                   run));
    EXPECT_TRUE(bench.Succeeded()) << bench.Describe();
    const PgbenchSummary summary = ParsePgbench(bench.stdout_text);
    EXPECT_GT(summary.processed, 0) << bench.Describe();
    if (summary.failed >= 0) {
      EXPECT_EQ(summary.failed, 0) << bench.Describe();
    }
    PGF_ASSERT_OK_AND_ASSIGN(int64_t backends, AppdbBackends());
    EXPECT_LE(backends, 4) << "more server connections than default_pool_size";
  }
}

// --- 8. clients that vanish mid-transaction -----------------------------------------------------

absl::Status WaitForNoIdleInTransaction() {
  return PollUntil(
      [](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Rows> rows = g_pg->Exec(
            "select count(*) from pg_stat_activity where datname = 'appdb' and state like "
            "'idle in transaction%'");
        if (!rows.ok()) return rows.status();
        *note = absl::StrCat((*rows)[0][0], " idle-in-transaction backends");
        return (*rows)[0][0] == "0";
      },
      absl::Seconds(10), "the abandoned transaction to end");
}

absl::Status WaitForIdleInTransaction() {
  return PollUntil(
      [](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Rows> rows = g_pg->Exec(
            "select count(*) from pg_stat_activity where datname = 'appdb' and state = "
            "'idle in transaction'");
        if (!rows.ok()) return rows.status();
        *note = absl::StrCat((*rows)[0][0], " idle-in-transaction backends");
        return (*rows)[0][0] == "1";
      },
      absl::Seconds(10), "the client's transaction to be open on PostgreSQL");
}

class AbandonedTransactionTest : public DataPathTest {
 protected:
  // After the client vanished: nothing stays open, nothing was committed, and the next client
  // on the (single) server connection is not inside the old transaction.
  void ExpectTransactionRolledBack(const std::string& tag) {
    PGF_ASSERT_OK(WaitForNoIdleInTransaction());
    PGF_ASSERT_OK_AND_ASSIGN(
        Rows direct, g_pg->Exec(absl::StrCat("select count(*) from abandoned_rows where tag = ",
                                             QuoteLiteral(tag)),
                                kAppDb));
    EXPECT_EQ(direct[0][0], "0") << "the abandoned insert was committed";

    PGF_ASSERT_OK_AND_ASSIGN(PgConn next, ConnectApp());
    PGF_ASSERT_OK_AND_ASSIGN(
        int64_t seen,
        ScalarInt(next.get(), absl::StrCat("select count(*) from abandoned_rows where tag = ",
                                           QuoteLiteral(tag))));
    EXPECT_EQ(seen, 0) << "the next client runs inside the abandoned transaction";
    const std::string after = tag + "-after";
    PGF_ASSERT_OK(Query(
        next.get(), absl::StrCat("insert into abandoned_rows values (", QuoteLiteral(after), ")")));
    PGF_ASSERT_OK_AND_ASSIGN(
        Rows committed, g_pg->Exec(absl::StrCat("select count(*) from abandoned_rows where tag = ",
                                                QuoteLiteral(after)),
                                   kAppDb));
    EXPECT_EQ(committed[0][0], "1") << "the next client's autocommit insert was not committed";
  }

  void CreateTable() {
    PGF_ASSERT_OK(
        g_pg->Exec("drop table if exists abandoned_rows; create table abandoned_rows "
                   "(tag text); alter table abandoned_rows owner to app",
                   kAppDb));
  }
};

TEST_F(AbandonedTransactionTest, ClientResetMidTransactionIsRolledBack) {
  ASSERT_NO_FATAL_FAILURE(CreateTable());
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "transaction"}, {"default_pool_size", "1"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK(Query(conn.get(), "BEGIN"));
  PGF_ASSERT_OK(Query(conn.get(), "insert into abandoned_rows values ('killed-rst')"));
  PGF_ASSERT_OK(WaitForIdleInTransaction());
  PGF_ASSERT_OK(KillSocket(conn.get()));
  ASSERT_NO_FATAL_FAILURE(ExpectTransactionRolledBack("killed-rst"));
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

TEST_F(AbandonedTransactionTest, ClientEofWithoutTerminateMidTransactionIsRolledBack) {
  ASSERT_NO_FATAL_FAILURE(CreateTable());
  ASSERT_NO_FATAL_FAILURE(
      StartAgent({{"pool_mode", "transaction"}, {"default_pool_size", "1"}, {"auth_type", "md5"}}));
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, RawClient::Connect(agent_->port()));
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kAppUser, kAppDb, kAppPassword));
  ASSERT_TRUE(login.ok) << (login.error ? login.error->ToString() : "no ReadyForQuery");
  PGF_ASSERT_OK(raw->SimpleQuery("BEGIN"));
  PGF_ASSERT_OK(raw->SimpleQuery("insert into abandoned_rows values ('killed-eof')"));
  PGF_ASSERT_OK(WaitForIdleInTransaction());
  raw->Close();  // FIN, no Terminate message.
  ASSERT_NO_FATAL_FAILURE(ExpectTransactionRolledBack("killed-eof"));
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

// --- 9. hostile and malformed input
// ---------------------------------------------------------------

class BadInputTest : public DataPathTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(DataPathTest::SetUp());
    // md5 so the raw client can log in (and fail to) on its own.
    ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "transaction"},
                                        {"default_pool_size", "2"},
                                        {"auth_type", "md5"},
                                        {"client_login_timeout", "60"}}));
  }

  absl::StatusOr<std::unique_ptr<RawClient>> Raw() const {
    return RawClient::Connect(agent_->port());
  }
};

TEST_F(BadInputTest, HttpRequestInsteadOfStartupPacketIsClosedPromptly) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
  PGF_ASSERT_OK(raw->Send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  // "GET " read as a length is ~1.2 GB: the agent must refuse without waiting for it.
  absl::StatusOr<std::string> reply = raw->ReadUntilClose(absl::Seconds(5));
  PGF_EXPECT_OK(reply);
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

TEST_F(BadInputTest, RandomBytesThenEofAreClosedPromptly) {
  std::mt19937 rng(20240611);
  std::string garbage(64, '\0');
  for (char& c : garbage) c = static_cast<char>(rng() & 0xff);
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
  PGF_ASSERT_OK(raw->Send(garbage));
  PGF_ASSERT_OK(raw->ShutdownWrite());
  PGF_EXPECT_OK(raw->ReadUntilClose(absl::Seconds(5)));
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

TEST_F(BadInputTest, CompleteStartupPacketWithUnknownProtocolCodeIsRejected) {
  std::mt19937 rng(7);
  std::string packet = BigEndian32(64) + BigEndian32(0x12345678);
  while (packet.size() < 64) packet.push_back(static_cast<char>(rng() & 0xff));
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
  PGF_ASSERT_OK(raw->Send(packet));
  // The whole packet is there, so the agent has all it needs to refuse it now.
  PGF_EXPECT_OK(raw->ReadUntilClose(absl::Seconds(5)));
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

TEST_F(BadInputTest, HugeStartupPacketLengthIsRefused) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
  std::string packet = BigEndian32(100u << 20) + BigEndian32(kProtocolV3);
  packet += std::string("user\0app\0database\0appdb\0", 25);
  PGF_ASSERT_OK(raw->Send(packet));
  absl::StatusOr<std::string> reply = raw->ReadUntilClose(absl::Seconds(5));
  PGF_EXPECT_OK(reply);
  if (reply.ok() && !reply->empty()) {
    EXPECT_EQ((*reply)[0], 'E') << "expected an ErrorResponse or a bare close";
  }
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

TEST_F(BadInputTest, UnknownDatabaseIsNamedInTheError) {
  absl::StatusOr<PgConn> conn = Connect(AgentConn(kAppUser, kAppPassword, "nosuchdb"));
  ASSERT_FALSE(conn.ok());
  EXPECT_TRUE(absl::StrContains(conn.status().message(), "nosuchdb")) << conn.status();

  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kAppUser, "nosuchdb", kAppPassword));
  EXPECT_FALSE(login.ok);
  ASSERT_TRUE(login.error.has_value());
  EXPECT_EQ(login.error->code, "08P01") << login.error->ToString();  // As PgBouncer.
  EXPECT_TRUE(absl::StrContains(login.error->message, "nosuchdb")) << login.error->ToString();
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

TEST_F(BadInputTest, WrongPasswordIsRejectedAsPgBouncerRejectsIt) {
  absl::StatusOr<PgConn> conn = Connect(AgentConn(kAppUser, "not-the-password"));
  ASSERT_FALSE(conn.ok());
  EXPECT_TRUE(absl::StrContains(conn.status().message(), "password authentication failed"))
      << conn.status();

  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kAppUser, kAppDb, "not-the-password"));
  EXPECT_FALSE(login.ok);
  ASSERT_TRUE(login.error.has_value());
  // PgBouncer's answer (client.c): 08P01, "password authentication failed".
  EXPECT_EQ(login.error->code, "08P01") << login.error->ToString();
  EXPECT_EQ(login.error->message, "password authentication failed") << login.error->ToString();
  EXPECT_EQ(login.error->severity, "FATAL") << login.error->ToString();

  // An unknown user looks the same as a wrong password.
  absl::StatusOr<PgConn> nobody = Connect(AgentConn("nosuchuser", "whatever"));
  ASSERT_FALSE(nobody.ok());
  EXPECT_TRUE(absl::StrContains(nobody.status().message(), "password authentication failed"))
      << nobody.status();
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

TEST_F(BadInputTest, TruncatedStartupPacketThenCloseLeavesAgentRunning) {
  {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
    PGF_ASSERT_OK(raw->Send(BigEndian32(100) + BigEndian32(kProtocolV3) + std::string("us\0a", 4)));
    raw->Close();
  }
  {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
    PGF_ASSERT_OK(raw->Send(BigEndian32(100) + BigEndian32(kProtocolV3) + std::string("us\0a", 4)));
    raw->CloseWithReset();
  }
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

TEST_F(BadInputTest, TruncatedQueryMessageAfterLoginLeavesAgentRunning) {
  {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
    PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kAppUser, kAppDb, kAppPassword));
    ASSERT_TRUE(login.ok) << (login.error ? login.error->ToString() : "no ReadyForQuery");
    // A Query message declaring 100 bytes, of which 10 arrive.
    PGF_ASSERT_OK(raw->Send(std::string("Q") + BigEndian32(100) + "select 1, "));
    raw->Close();
  }
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
  // And a client sending an absurd message length after login is cut off.
  {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
    PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kAppUser, kAppDb, kAppPassword));
    ASSERT_TRUE(login.ok);
    PGF_ASSERT_OK(raw->Send(std::string("Q") + BigEndian32(0xfffffff0u) + "select 1"));
    PGF_EXPECT_OK(raw->ReadUntilClose(absl::Seconds(5)));
  }
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

TEST_F(BadInputTest, ProtocolVersion4IsRejectedClearly) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
  PGF_ASSERT_OK(raw->Send(StartupPacket({{"user", kAppUser}, {"database", kAppDb}}, 0x00040000)));
  PGF_ASSERT_OK_AND_ASSIGN(BackendMessage reply, raw->ReadMessage(absl::Seconds(5)));
  ASSERT_EQ(reply.type, 'E');
  PGF_ASSERT_OK_AND_ASSIGN(ErrorFields error, ParseErrorResponse(reply.body));
  EXPECT_TRUE(error.code == "08P01" || error.code == "0A000") << error.ToString();
  EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(error.message), "protocol"))
      << error.ToString();
  PGF_EXPECT_OK(raw->ReadUntilClose(absl::Seconds(5)));
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

TEST_F(BadInputTest, ProtocolVersion2IsRejectedClearly) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
  PGF_ASSERT_OK(raw->Send(StartupPacket({{"user", kAppUser}, {"database", kAppDb}}, 0x00020000)));
  PGF_ASSERT_OK_AND_ASSIGN(std::string reply, raw->ReadUntilClose(absl::Seconds(5)));
  ASSERT_FALSE(reply.empty()) << "closed without an error message";
  ASSERT_EQ(reply[0], 'E');
  // A v3 ErrorResponse, or the v2 form ('E' + text) that a v2 client could read.
  std::optional<ErrorFields> error = FirstError(reply);
  if (error.has_value()) {
    EXPECT_TRUE(error->code == "08P01" || error->code == "0A000") << error->ToString();
    EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(error->message), "protocol"))
        << error->ToString();
  } else {
    EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(reply), "protocol")) << reply;
  }
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

TEST_F(BadInputTest, GssEncRequestIsDeclinedThenPlainStartupWorks) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
  PGF_ASSERT_OK(raw->Send(BigEndian32(8) + BigEndian32(kGssEncRequestCode)));
  PGF_ASSERT_OK_AND_ASSIGN(std::string answer, raw->ReadExactly(1, absl::Seconds(5)));
  ASSERT_EQ(answer, "N");
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kAppUser, kAppDb, kAppPassword));
  ASSERT_TRUE(login.ok) << (login.error ? login.error->ToString() : "no ReadyForQuery");
}

TEST_F(BadInputTest, CancelRequestWithUnknownKeyIsIgnored) {
  // A client mid-query must not be hit by a cancel carrying a key nobody was given.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn victim, ConnectApp());
  const std::string sql = "select pg_sleep(1.5), 'survived'";
  ASSERT_EQ(PQsendQuery(victim.get(), sql.c_str()), 1) << PQerrorMessage(victim.get());
  PGF_ASSERT_OK(WaitForActiveQuery(sql));
  {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
    PGF_ASSERT_OK(raw->Send(BigEndian32(16) + BigEndian32(kCancelRequestCode) +
                            BigEndian32(0x1234) + BigEndian32(0x5678)));
    // The agent answers a cancel request by closing the connection, whatever the key.
    PGF_EXPECT_OK(raw->ReadUntilClose(absl::Seconds(5)));
  }
  PGF_ASSERT_OK_AND_ASSIGN(PgResult result, GetResultWithin(victim.get(), absl::Seconds(20)));
  ASSERT_NE(result, nullptr);
  EXPECT_EQ(PQresultStatus(result.get()), PGRES_TUPLES_OK) << PQerrorMessage(victim.get());
  while (PGresult* extra = PQgetResult(victim.get())) PQclear(extra);
  ASSERT_NO_FATAL_FAILURE(ExpectAgentHealthy());
}

TEST_F(BadInputTest, SslRequestIsDeclinedThenPlainStartupWorks) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, Raw());
  PGF_ASSERT_OK(raw->Send(BigEndian32(8) + BigEndian32(kSslRequestCode)));
  PGF_ASSERT_OK_AND_ASSIGN(std::string answer, raw->ReadExactly(1, absl::Seconds(5)));
  ASSERT_EQ(answer, "N");
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kAppUser, kAppDb, kAppPassword));
  ASSERT_TRUE(login.ok) << (login.error ? login.error->ToString() : "no ReadyForQuery");
  EXPECT_TRUE(login.got_backend_key) << "no BackendKeyData: clients could not cancel";
  EXPECT_EQ(login.parameters.count("server_version"), 1u);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<BackendMessage> messages, raw->SimpleQuery("select 6 * 7"));
  bool saw_row = false;
  for (const BackendMessage& m : messages) {
    // DataRow: int16 column count, int32 length, value.
    if (m.type == 'D' && m.body.size() >= 8) {
      saw_row = true;
      EXPECT_EQ(m.body.substr(6), "42");
    }
    EXPECT_NE(m.type, 'E') << ParseErrorResponse(m.body).value_or(ErrorFields{}).ToString();
  }
  EXPECT_TRUE(saw_row);
}

// --- 10. client authentication methods ----------------------------------------------------------

TEST_F(DataPathTest, Md5AuthWithPlaintextUserlist) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"auth_type", "md5"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(std::string user, ScalarText(conn.get(), "select current_user"));
  EXPECT_EQ(user, kAppUser);

  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, RawClient::Connect(agent_->port()));
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kAppUser, kAppDb, kAppPassword));
  EXPECT_TRUE(login.ok) << (login.error ? login.error->ToString() : "no ReadyForQuery");
  ASSERT_FALSE(login.auth_requests.empty());
  EXPECT_EQ(login.auth_requests.front(), 5) << "auth_type md5 should ask for an md5 password";

  EXPECT_FALSE(Connect(AgentConn(kAppUser, "wrong")).ok());
}

// Password guessing from one address: past auth_failure_burst the errors come late and the
// log says so once instead of once per failure; a right password is never held up.
TEST_F(DataPathTest, RepeatedWrongPasswordsAreSlowedDownAndLoggedOnce) {
  // md5: the raw client answers it (the failures must be real logins, not protocol errors).
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"auth_type", "md5"},
                                      {"auth_failure_burst", "2"},
                                      {"auth_failure_max_delay", "0.3"},
                                      {"log_pooler_errors", "1"},
                                      {"log_disconnections", "1"}}));
  constexpr int kFailures = 6;
  for (int i = 0; i < kFailures; ++i) {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, RawClient::Connect(agent_->port()));
    PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kAppUser, kAppDb, "guess"));
    EXPECT_FALSE(login.ok) << "failure " << i;
    ASSERT_TRUE(login.error.has_value()) << "failure " << i << " got no error";
    // Held back or not, the answer is PgBouncer's: FATAL 08P01.
    EXPECT_EQ(login.error->code, "08P01") << login.error->ToString();
  }
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(int64_t answer, ScalarInt(conn.get(), "select 6 * 7"));
  EXPECT_EQ(answer, 42);

  const std::string log = agent_->LogContents();
  auto count = [&log](std::string_view needle) {
    int n = 0;
    for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("login failed for user 'app'"), 2) << log;
  EXPECT_EQ(count("pooler error: password authentication failed"), 2) << log;
  EXPECT_EQ(count("127.0.0.1: 3 failed logins within a minute (auth_failure_burst = 2)"), 1) << log;
}

TEST_F(DataPathTest, ScramAuthWithPlaintextUserlist) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"auth_type", "scram-sha-256"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(std::string user, ScalarText(conn.get(), "select current_user"));
  EXPECT_EQ(user, kAppUser);

  {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, RawClient::Connect(agent_->port()));
    absl::StatusOr<LoginResult> login = raw->Login(kAppUser, kAppDb, kAppPassword);
    // The raw client cannot finish SCRAM; it only looks at what was offered.
    ASSERT_TRUE(absl::IsUnimplemented(login.status())) << login.status();
  }
  {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, RawClient::Connect(agent_->port()));
    PGF_ASSERT_OK_AND_ASSIGN(LoginResult login,
                             raw->Login(kAppUser, kAppDb, kAppPassword, absl::Seconds(10),
                                        /*scram_garbage_proof=*/true));
    ASSERT_FALSE(login.auth_requests.empty());
    EXPECT_EQ(login.auth_requests.front(), 10) << "auth_type scram-sha-256 should ask for SASL";
    EXPECT_NE(
        std::find(login.sasl_mechanisms.begin(), login.sasl_mechanisms.end(), "SCRAM-SHA-256"),
        login.sasl_mechanisms.end());
    EXPECT_FALSE(login.ok);
    ASSERT_TRUE(login.error.has_value()) << "a wrong SCRAM proof was not answered with an error";
    EXPECT_EQ(login.error->code, "08P01") << login.error->ToString();
  }
  absl::StatusOr<PgConn> wrong = Connect(AgentConn(kAppUser, "wrong"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_TRUE(absl::StrContains(wrong.status().message(), "SASL authentication failed"))
      << wrong.status();
}

TEST_F(DataPathTest, Md5HashedUserlistSecretWorksForMd5Auth) {
  AgentOptions options = BaseOptions({{"auth_type", "md5"}});
  const std::string secret = PgMd5Secret(kMd5Password, kMd5User);
  // Cross-check our md5 against PostgreSQL's own.
  PGF_ASSERT_OK_AND_ASSIGN(
      Rows stored, g_pg->Exec(absl::StrCat("select rolpassword from pg_authid where rolname = ",
                                           QuoteLiteral(kMd5User))));
  ASSERT_EQ(stored.size(), 1u);
  ASSERT_EQ(stored[0][0], secret);
  options.userlist = {{kMd5User, secret}};
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, Connect(AgentConn(kMd5User, kMd5Password)));
  PGF_ASSERT_OK_AND_ASSIGN(std::string user, ScalarText(conn.get(), "select current_user"));
  EXPECT_EQ(user, kMd5User);

  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, RawClient::Connect(agent_->port()));
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kMd5User, kAppDb, kMd5Password));
  EXPECT_TRUE(login.ok) << (login.error ? login.error->ToString() : "no ReadyForQuery");

  absl::StatusOr<PgConn> wrong = Connect(AgentConn(kMd5User, "wrong"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_TRUE(absl::StrContains(wrong.status().message(), "password authentication failed"))
      << wrong.status();
}

TEST_F(DataPathTest, ScramSecretInUserlistWorksForScramAuth) {
  // The verifier PostgreSQL stored for app: the agent never sees the plaintext and must log in
  // to PostgreSQL with the keys recovered from the client's proof.
  PGF_ASSERT_OK_AND_ASSIGN(
      Rows stored, g_pg->Exec(absl::StrCat("select rolpassword from pg_authid where rolname = ",
                                           QuoteLiteral(kAppUser))));
  ASSERT_EQ(stored.size(), 1u);
  ASSERT_TRUE(absl::StartsWith(stored[0][0], "SCRAM-SHA-256$")) << stored[0][0];
  AgentOptions options = BaseOptions({{"auth_type", "scram-sha-256"}});
  options.userlist = {{kAppUser, stored[0][0]}};
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(std::string user, ScalarText(conn.get(), "select current_user"));
  EXPECT_EQ(user, kAppUser);
  EXPECT_FALSE(Connect(AgentConn(kAppUser, "wrong")).ok());
}

}  // namespace
}  // namespace pgfleet::testutil
