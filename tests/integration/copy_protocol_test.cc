// COPY through a real pgfleet-agent in transaction mode with ONE server and prepared
// statements on, in front of a real PostgreSQL 15: the agent must count the ReadyForQuery
// PostgreSQL really sends around a COPY (it ignores Sync and Flush during COPY IN, so a
// libpq PQexecParams("COPY ... FROM STDIN") sends two Syncs and gets one ReadyForQuery).
// Counting one too many keeps the server linked to an idle client: with a pool of one, the
// next client's query then waits forever, which the tests detect with a bounded wait. Counting
// one too few would hand a late ReadyForQuery to the next client: the tests read the exact
// message sequence with a raw client and check that the next query's answer comes next.
// Each scenario ends with another client's query on the same single server and a named
// Parse by the first client (the prepared-statement reply FIFO must still be in step).

#include <libpq-fe.h>
#include <sys/wait.h>

#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

// How long a query on a free server may take before we call the server held. Generous: only a
// pinned server makes it run out.
constexpr absl::Duration kServeTimeout = absl::Seconds(10);
constexpr absl::Duration kReadTimeout = absl::Seconds(10);

[[maybe_unused]] auto* const kCluster =
    RegisterSharedPostgres(PostgresOptions{}, [](PostgresEnv& pg) -> absl::Status {
      PGF_RETURN_IF_ERROR(CreateAppDatabase(pg));
      // copy_guarded refuses every COPY in a BEFORE STATEMENT trigger: the error comes
      // after CopyInResponse but before PostgreSQL reads anything the client sent.
      return pg
          .Exec(
              "create table copy_t (i int);"
              "create table copy_guarded (i int);"
              "create function refuse() returns trigger language plpgsql as "
              "$$ begin raise exception 'copy_guarded takes no rows'; end $$;"
              "create trigger refuse_copy before insert on copy_guarded "
              "for each statement execute function refuse();"
              "alter table copy_t owner to app; alter table copy_guarded owner to app;",
              kAppDb)
          .status();
    });

std::filesystem::path ClientsDir() {
  return std::filesystem::path(PGFLEET_SOURCE_DIR) / "tests" / "integration" / "clients";
}

// Frontend messages for raw pipelines.
std::string Parse(const std::string& name, const std::string& sql) {
  return FrontendMessage('P', name + '\0' + sql + '\0' + std::string(2, '\0'));
}
std::string Bind(const std::string& statement) {
  // Unnamed portal; no parameter formats, no parameters, no result formats.
  return FrontendMessage('B', std::string(1, '\0') + statement + '\0' + std::string(6, '\0'));
}
std::string Execute() { return FrontendMessage('E', std::string(1, '\0') + std::string(4, '\0')); }
std::string Sync() { return FrontendMessage('S', ""); }
std::string CopyData(const std::string& data) { return FrontendMessage('d', data); }
std::string CopyDone() { return FrontendMessage('c', ""); }
std::string CopyFail(const std::string& why) { return FrontendMessage('f', why + '\0'); }
std::string Extended(const std::string& sql) { return Parse("", sql) + Bind("") + Execute(); }

class CopyProtocolTest : public AgentTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(AgentTest::SetUp());
    PGF_ASSERT_OK(g_pg->Exec("truncate copy_t", kAppDb).status());
    // md5: the raw test client answers cleartext and md5 requests, not SCRAM.
    ASSERT_NO_FATAL_FAILURE(StartAgent({{"auth_type", "md5"},
                                        {"default_pool_size", "1"},
                                        {"max_prepared_statements", "100"},
                                        {"max_client_conn", "50"}}));
  }

  absl::StatusOr<std::unique_ptr<RawClient>> ConnectRaw() const {
    PGF_ASSIGN_OR_RETURN(std::unique_ptr<RawClient> raw, RawClient::Connect(agent_->port()));
    PGF_ASSIGN_OR_RETURN(LoginResult login, raw->Login(kAppUser, kAppDb, kAppPassword));
    if (!login.ok) {
      return absl::InternalError(
          absl::StrCat("login failed: ", login.error ? login.error->ToString() : "?"));
    }
    return raw;
  }

  // Another client's query on the pool's only server, within kServeTimeout: fails if the
  // server is still linked to a client that is not using it.
  void ExpectServerFree(const std::string& context) {
    absl::StatusOr<PgConn> other = ConnectApp();
    ASSERT_TRUE(other.ok()) << context << ": " << other.status();
    ASSERT_EQ(PQsendQuery(other->get(), "select 40 + 2"), 1) << PQerrorMessage(other->get());
    absl::StatusOr<PgResult> result = GetResultWithin(other->get(), kServeTimeout);
    ASSERT_TRUE(result.ok()) << context
                             << ": another client's query did not run within 10 s: the only "
                                "server is still held (reply count off) -- "
                             << result.status();
    ASSERT_NE(result->get(), nullptr) << context;
    ASSERT_EQ(PQresultStatus(result->get()), PGRES_TUPLES_OK)
        << context << ": " << PQresultErrorMessage(result->get());
    EXPECT_STREQ(PQgetvalue(result->get(), 0, 0), "42") << context;
    absl::StatusOr<PgResult> end = GetResultWithin(other->get(), kServeTimeout);
    ASSERT_TRUE(end.ok()) << end.status();
    EXPECT_EQ(end->get(), nullptr);
  }

  // The first client prepares a named statement and runs it: the agent's prepared-statement
  // bookkeeping for its server must still be in step.
  void ExpectNamedParseWorks(PGconn* conn, const std::string& context) {
    static int counter = 0;
    const std::string name = absl::StrCat("after_copy_", ++counter);
    PgResult prepared(PQprepare(conn, name.c_str(), "select $1::int + 1", 1, nullptr));
    ASSERT_EQ(PQresultStatus(prepared.get()), PGRES_COMMAND_OK)
        << context << ": " << PQerrorMessage(conn);
    const char* values[] = {"41"};
    PgResult run(PQexecPrepared(conn, name.c_str(), 1, values, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(run.get()), PGRES_TUPLES_OK)
        << context << ": " << PQerrorMessage(conn);
    EXPECT_STREQ(PQgetvalue(run.get(), 0, 0), "42") << context;
  }

  // Raw-client version: Parse of a named statement, Bind, Execute, Sync; exactly
  // ParseComplete, BindComplete, DataRow, CommandComplete, ReadyForQuery come back.
  void ExpectRawNamedParseWorks(RawClient& raw, const std::string& context) {
    PGF_ASSERT_OK(
        raw.Send(Parse("raw_after", "select 42") + Bind("raw_after") + Execute() + Sync()));
    std::string types;
    for (;;) {
      absl::StatusOr<BackendMessage> message = raw.ReadMessage(kReadTimeout);
      ASSERT_TRUE(message.ok()) << context << " after " << types << ": " << message.status();
      if (message->type == 'E') {
        ADD_FAILURE() << context << ": " << ParseErrorResponse(message->body)->ToString();
      }
      types.push_back(message->type);
      if (message->type == 'Z') break;
    }
    EXPECT_EQ(types, "12DCZ") << context;
  }

  // Reads messages up to and including the `count`-th ReadyForQuery; returns their types.
  static absl::StatusOr<std::string> ReadThroughReady(RawClient& raw, int count,
                                                      std::string* errors = nullptr) {
    std::string types;
    int seen = 0;
    while (seen < count) {
      PGF_ASSIGN_OR_RETURN(BackendMessage message, raw.ReadMessage(kReadTimeout));
      types.push_back(message.type);
      if (message.type == 'E' && errors != nullptr) {
        absl::StatusOr<ErrorFields> fields = ParseErrorResponse(message.body);
        if (fields.ok()) absl::StrAppend(errors, fields->code, " ");
      }
      if (message.type == 'Z') ++seen;
    }
    return types;
  }

  // After the last expected ReadyForQuery nothing else may be pending: a simple query's
  // answer must come next, with nothing before it.
  static void ExpectNextAnswerIsOwn(RawClient& raw, const std::string& context) {
    PGF_ASSERT_OK(raw.Send(QueryMessage("select 7")));
    absl::StatusOr<std::string> types = ReadThroughReady(raw, 1);
    ASSERT_TRUE(types.ok()) << context << ": " << types.status();
    EXPECT_EQ(*types, "TDCZ") << context << ": a stray message preceded the next answer";
  }
};

int64_t CountRows(const std::string& table) {
  absl::StatusOr<Rows> rows = g_pg->Exec(absl::StrCat("select count(*) from ", table), kAppDb);
  return rows.ok() ? std::stoll((*rows)[0][0]) : -1;
}

// Sends rows and ends the copy (with `fail` as CopyFail message if not null); returns the
// final result of the COPY. `accepted`: libpq must take the data (it refuses once it has read
// an error).
PgResult FinishCopyIn(PGconn* conn, const std::vector<std::string>& rows, const char* fail,
                      bool accepted = true) {
  for (const std::string& row : rows) {
    const int sent = PQputCopyData(conn, row.data(), static_cast<int>(row.size()));
    if (accepted) {
      EXPECT_EQ(sent, 1) << PQerrorMessage(conn);
    }
  }
  const int ended = PQputCopyEnd(conn, fail);
  if (accepted) {
    EXPECT_EQ(ended, 1) << PQerrorMessage(conn);
  }
  PgResult result(PQgetResult(conn));
  // Drain: exactly one result per COPY.
  while (PGresult* extra = PQgetResult(conn)) PQclear(extra);
  return result;
}

// --- libpq, simple protocol ----------------------------------------------------------------

TEST_F(CopyProtocolTest, LibpqSimpleCopyInAndOut) {
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PgResult start(PQexec(conn.get(), "COPY copy_t FROM STDIN"));
  ASSERT_EQ(PQresultStatus(start.get()), PGRES_COPY_IN) << PQerrorMessage(conn.get());
  PgResult done = FinishCopyIn(conn.get(), {"1\n", "2\n", "3\n"}, nullptr);
  ASSERT_EQ(PQresultStatus(done.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn.get());
  EXPECT_EQ(CountRows("copy_t"), 3);
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after simple COPY FROM STDIN"));

  PgResult out(PQexec(conn.get(), "COPY copy_t TO STDOUT"));
  ASSERT_EQ(PQresultStatus(out.get()), PGRES_COPY_OUT) << PQerrorMessage(conn.get());
  std::string text;
  for (;;) {
    char* buffer = nullptr;
    int n = PQgetCopyData(conn.get(), &buffer, 0);
    if (n < 0) break;
    text.append(buffer, static_cast<size_t>(n));
    PQfreemem(buffer);
  }
  PgResult out_done(PQgetResult(conn.get()));
  ASSERT_EQ(PQresultStatus(out_done.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn.get());
  while (PGresult* extra = PQgetResult(conn.get())) PQclear(extra);
  EXPECT_EQ(text, "1\n2\n3\n");
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after simple COPY TO STDOUT"));
  ASSERT_NO_FATAL_FAILURE(ExpectNamedParseWorks(conn.get(), "after simple COPY"));
}

TEST_F(CopyProtocolTest, LibpqSimpleCopyFailAndBadRow) {
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PgResult start(PQexec(conn.get(), "COPY copy_t FROM STDIN"));
  ASSERT_EQ(PQresultStatus(start.get()), PGRES_COPY_IN) << PQerrorMessage(conn.get());
  PgResult failed = FinishCopyIn(conn.get(), {"1\n"}, "the client gave up");
  EXPECT_EQ(PQresultStatus(failed.get()), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(failed.get(), PG_DIAG_SQLSTATE), "57014");
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after simple COPY ... CopyFail"));

  PgResult again(PQexec(conn.get(), "COPY copy_t FROM STDIN"));
  ASSERT_EQ(PQresultStatus(again.get()), PGRES_COPY_IN) << PQerrorMessage(conn.get());
  PgResult bad = FinishCopyIn(conn.get(), {"1\n", "not a number\n", "3\n"}, nullptr);
  EXPECT_EQ(PQresultStatus(bad.get()), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(bad.get(), PG_DIAG_SQLSTATE), "22P02");
  EXPECT_EQ(CountRows("copy_t"), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after simple COPY with a bad row"));
  ASSERT_NO_FATAL_FAILURE(ExpectNamedParseWorks(conn.get(), "after failed simple COPYs"));
}

// --- libpq, extended protocol: Sync after Execute, another after CopyDone -----------------------

TEST_F(CopyProtocolTest, LibpqExtendedCopyInReleasesTheServer) {
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PgResult start(
      PQexecParams(conn.get(), "COPY copy_t FROM STDIN", 0, nullptr, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(start.get()), PGRES_COPY_IN) << PQerrorMessage(conn.get());
  PgResult done = FinishCopyIn(conn.get(), {"1\n", "2\n"}, nullptr);
  ASSERT_EQ(PQresultStatus(done.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn.get());
  EXPECT_EQ(CountRows("copy_t"), 2);
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after PQexecParams COPY FROM STDIN"));
  ASSERT_NO_FATAL_FAILURE(ExpectNamedParseWorks(conn.get(), "after PQexecParams COPY"));

  // COPY TO STDOUT over the extended protocol too.
  PgResult out(
      PQexecParams(conn.get(), "COPY copy_t TO STDOUT", 0, nullptr, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(out.get()), PGRES_COPY_OUT) << PQerrorMessage(conn.get());
  int rows = 0;
  for (;;) {
    char* buffer = nullptr;
    if (PQgetCopyData(conn.get(), &buffer, 0) < 0) break;
    ++rows;
    PQfreemem(buffer);
  }
  while (PGresult* extra = PQgetResult(conn.get())) PQclear(extra);
  EXPECT_EQ(rows, 2);
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after PQexecParams COPY TO STDOUT"));
}

TEST_F(CopyProtocolTest, LibpqExtendedCopyFail) {
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PgResult start(
      PQexecParams(conn.get(), "COPY copy_t FROM STDIN", 0, nullptr, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(start.get()), PGRES_COPY_IN) << PQerrorMessage(conn.get());
  PgResult failed = FinishCopyIn(conn.get(), {"1\n"}, "the client gave up");
  EXPECT_EQ(PQresultStatus(failed.get()), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(failed.get(), PG_DIAG_SQLSTATE), "57014");
  EXPECT_EQ(CountRows("copy_t"), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after PQexecParams COPY ... CopyFail"));
  ASSERT_NO_FATAL_FAILURE(ExpectNamedParseWorks(conn.get(), "after CopyFail"));
}

TEST_F(CopyProtocolTest, LibpqExtendedCopyBadRow) {
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PgResult start(
      PQexecParams(conn.get(), "COPY copy_t FROM STDIN", 0, nullptr, nullptr, nullptr, nullptr, 0));
  ASSERT_EQ(PQresultStatus(start.get()), PGRES_COPY_IN) << PQerrorMessage(conn.get());
  PgResult bad = FinishCopyIn(conn.get(), {"1\n", "oops\n", "3\n"}, nullptr);
  EXPECT_EQ(PQresultStatus(bad.get()), PGRES_FATAL_ERROR);
  EXPECT_STREQ(PQresultErrorField(bad.get(), PG_DIAG_SQLSTATE), "22P02");
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after PQexecParams COPY with a bad row"));
  ASSERT_NO_FATAL_FAILURE(ExpectNamedParseWorks(conn.get(), "after a bad row"));
}

// --- psycopg 3: cursor.copy() -------------------------------------------------------------------

TEST_F(CopyProtocolTest, Psycopg3CursorCopy) {
  RunOptions probe;
  absl::StatusOr<RunResult> has =
      RunCommand({"/usr/bin/python3", "-c", "import psycopg; print(psycopg.__version__)"}, probe);
  if (!has.ok() || !has->Succeeded()) {
    GTEST_SKIP() << "psycopg 3 is not installed (Debian package python3-psycopg)";
  }
  RunOptions run;
  run.timeout = absl::Seconds(120);
  absl::StatusOr<RunResult> result =
      RunCommand({"/usr/bin/python3", (ClientsDir() / "psycopg_copy_client.py").string(),
                  agent_->ConnString(kAppDb, kAppUser, kAppPassword)},
                 run);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_TRUE(result->Succeeded()) << result->Describe();
  EXPECT_TRUE(absl::StrContains(result->stdout_text, "OK")) << result->Describe();
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after psycopg's copies"));
}

// --- raw pipelines ------------------------------------------------------------------------------

TEST_F(CopyProtocolTest, RawExtendedCopyInStepByStep) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, ConnectRaw());
  PGF_ASSERT_OK(raw->Send(Extended("COPY copy_t FROM STDIN") + Sync()));
  PGF_ASSERT_OK_AND_ASSIGN(BackendMessage message, raw->ReadMessage(kReadTimeout));
  EXPECT_EQ(message.type, '1');
  PGF_ASSERT_OK_AND_ASSIGN(message, raw->ReadMessage(kReadTimeout));
  EXPECT_EQ(message.type, '2');
  PGF_ASSERT_OK_AND_ASSIGN(message, raw->ReadMessage(kReadTimeout));
  ASSERT_EQ(message.type, 'G');
  // A Flush and a Sync in the middle of the data are ignored by PostgreSQL too.
  PGF_ASSERT_OK(raw->Send(CopyData("1\n") + FrontendMessage('H', "") + Sync() + CopyData("2\n") +
                          CopyDone() + Sync()));
  PGF_ASSERT_OK_AND_ASSIGN(std::string types, ReadThroughReady(*raw, 1));
  EXPECT_EQ(types, "CZ");
  EXPECT_EQ(CountRows("copy_t"), 2);
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after a raw extended COPY"));
  ASSERT_NO_FATAL_FAILURE(ExpectRawNamedParseWorks(*raw, "after a raw extended COPY"));
  ASSERT_NO_FATAL_FAILURE(ExpectNextAnswerIsOwn(*raw, "after a raw extended COPY"));
}

TEST_F(CopyProtocolTest, RawCopyPipelinedWithLaterQueries) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, ConnectRaw());
  // Everything in one write: the COPY, its data, and two more queries behind it.
  PGF_ASSERT_OK(raw->Send(Extended("COPY copy_t FROM STDIN") + Sync() + CopyData("5\n") +
                          CopyDone() + Sync() + Extended("select 1") + Sync() +
                          QueryMessage("select 2")));
  PGF_ASSERT_OK_AND_ASSIGN(std::string types, ReadThroughReady(*raw, 3));
  EXPECT_EQ(types, "12GCZ12DCZTDCZ");
  EXPECT_EQ(CountRows("copy_t"), 1);
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after a pipelined COPY"));
  ASSERT_NO_FATAL_FAILURE(ExpectRawNamedParseWorks(*raw, "after a pipelined COPY"));
  ASSERT_NO_FATAL_FAILURE(ExpectNextAnswerIsOwn(*raw, "after a pipelined COPY"));
}

TEST_F(CopyProtocolTest, RawCopyFailAndBadRowInOneWrite) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, ConnectRaw());
  std::string errors;
  PGF_ASSERT_OK(raw->Send(Extended("COPY copy_t FROM STDIN") + Sync() + CopyData("1\n") +
                          CopyFail("no thanks") + Sync()));
  PGF_ASSERT_OK_AND_ASSIGN(std::string types, ReadThroughReady(*raw, 1, &errors));
  EXPECT_EQ(types, "12GEZ");
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after a raw CopyFail"));
  ASSERT_NO_FATAL_FAILURE(ExpectNextAnswerIsOwn(*raw, "after CopyFail"));

  PGF_ASSERT_OK(raw->Send(Extended("COPY copy_t FROM STDIN") + Sync() + CopyData("x\n") +
                          CopyData("2\n") + CopyDone() + Sync()));
  PGF_ASSERT_OK_AND_ASSIGN(types, ReadThroughReady(*raw, 1, &errors));
  EXPECT_EQ(types, "12GEZ");
  EXPECT_EQ(errors, "57014 22P02 ");
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after a raw bad row"));
  ASSERT_NO_FATAL_FAILURE(ExpectRawNamedParseWorks(*raw, "after failed raw COPYs"));
  ASSERT_NO_FATAL_FAILURE(ExpectNextAnswerIsOwn(*raw, "after a bad row"));
}

// libpq's order with an error the agent sees before the client's CopyDone: PostgreSQL read
// the Sync after Execute, then failed on the data; only the Sync after CopyDone is answered.
TEST_F(CopyProtocolTest, RawBadRowSeenBeforeTheClientsCopyDone) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, ConnectRaw());
  PGF_ASSERT_OK(raw->Send(Extended("COPY copy_t FROM STDIN") + Sync()));
  std::string types;
  while (types.empty() || types.back() != 'G') {
    PGF_ASSERT_OK_AND_ASSIGN(BackendMessage message, raw->ReadMessage(kReadTimeout));
    types.push_back(message.type);
  }
  EXPECT_EQ(types, "12G");
  PGF_ASSERT_OK(raw->Send(CopyData("bad\n")));
  PGF_ASSERT_OK_AND_ASSIGN(BackendMessage error, raw->ReadMessage(kReadTimeout));
  ASSERT_EQ(error.type, 'E');
  EXPECT_EQ(ParseErrorResponse(error.body)->code, "22P02");
  PGF_ASSERT_OK(raw->Send(CopyData("2\n") + CopyDone() + Sync()));
  PGF_ASSERT_OK_AND_ASSIGN(types, ReadThroughReady(*raw, 1));
  EXPECT_EQ(types, "Z");
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after a bad row answered before CopyDone"));
  ASSERT_NO_FATAL_FAILURE(ExpectRawNamedParseWorks(*raw, "after a bad row before CopyDone"));
  ASSERT_NO_FATAL_FAILURE(ExpectNextAnswerIsOwn(*raw, "after a bad row before CopyDone"));
}

// The error comes before PostgreSQL reads the Sync that followed Execute: that Sync is then
// answered after all, so this time two Syncs get two ReadyForQuery.
TEST_F(CopyProtocolTest, RawCopyErrorBeforeAnyDataIsRead) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, ConnectRaw());
  std::string errors;
  PGF_ASSERT_OK(raw->Send(Extended("COPY copy_guarded FROM STDIN") + Sync()));
  PGF_ASSERT_OK_AND_ASSIGN(std::string types, ReadThroughReady(*raw, 1, &errors));
  EXPECT_EQ(types, "12GEZ");
  EXPECT_EQ(errors, "P0001 ");
  PGF_ASSERT_OK(raw->Send(CopyData("1\n") + CopyDone() + Sync()));
  PGF_ASSERT_OK_AND_ASSIGN(types, ReadThroughReady(*raw, 1));
  EXPECT_EQ(types, "Z");
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after the trigger's error"));
  ASSERT_NO_FATAL_FAILURE(ExpectRawNamedParseWorks(*raw, "after the trigger's error"));
  ASSERT_NO_FATAL_FAILURE(ExpectNextAnswerIsOwn(*raw, "after the trigger's error"));
}

// The same with libpq, which also sends CopyDone and Sync after the error.
TEST_F(CopyProtocolTest, LibpqExtendedCopyErrorBeforeAnyDataIsRead) {
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PgResult start(PQexecParams(conn.get(), "COPY copy_guarded FROM STDIN", 0, nullptr, nullptr,
                              nullptr, nullptr, 0));
  if (PQresultStatus(start.get()) == PGRES_COPY_IN) {
    PgResult end = FinishCopyIn(conn.get(), {"1\n"}, nullptr, /*accepted=*/false);
    EXPECT_EQ(PQresultStatus(end.get()), PGRES_FATAL_ERROR);
  } else {
    EXPECT_EQ(PQresultStatus(start.get()), PGRES_FATAL_ERROR);
  }
  // libpq itself may lose its footing here (directly on PostgreSQL too: depending on timing it
  // sends CopyDone and Sync after the error and then meets a second ReadyForQuery it does not
  // expect), so only the server's release is checked; RawCopyErrorBeforeAnyDataIsRead checks
  // the exact sequence.
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after libpq's COPY refused by a trigger"));
}

// COPY IN with a query pipelined behind it before CopyDone: PostgreSQL ends the connection
// (protocol violation). The client learns it; the pool carries on with a new server.
TEST_F(CopyProtocolTest, RawQueryDuringCopyInEndsOnlyThatClient) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, ConnectRaw());
  PGF_ASSERT_OK(
      raw->Send(Extended("COPY copy_t FROM STDIN") + Sync() + Extended("select 1") + Sync()));
  absl::StatusOr<std::string> rest = raw->ReadUntilClose(kReadTimeout);
  ASSERT_TRUE(rest.ok()) << "the client was not disconnected: " << rest.status();
  std::optional<ErrorFields> error = FirstError(*rest);
  ASSERT_TRUE(error.has_value()) << "no error before the disconnect";
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after a query sent during COPY IN"));
}

// COPY BOTH exists only on replication connections, which the agent does not offer; asking
// for one is refused cleanly and the server stays usable.
TEST_F(CopyProtocolTest, CopyBothIsRefused) {
  absl::StatusOr<PgConn> replication =
      Connect(agent_->ConnString(kAppDb, kAppUser, kAppPassword) + " replication=database");
  EXPECT_FALSE(replication.ok()) << "a replication connection through the agent";
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  absl::StatusOr<Rows> rows = Query(conn.get(), "START_REPLICATION SLOT s LOGICAL 0/0");
  EXPECT_FALSE(rows.ok());
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after START_REPLICATION"));
  ASSERT_NO_FATAL_FAILURE(ExpectNamedParseWorks(conn.get(), "after START_REPLICATION"));
}

// A failed extended COPY (libpq's Sync after Execute) with the next request pipelined behind
// it, so no probe can be sent: the next request's first reply (not a ReadyForQuery) tells the
// agent that the COPY swallowed its Sync. Counting it anyway left one ReadyForQuery owed for
// good: the prepared-statement FIFO out of step (the client closed) or the server pinned.
TEST_F(CopyProtocolTest, RawFailedCopyWithTheNextRequestPipelined) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, ConnectRaw());
  std::string errors;
  PGF_ASSERT_OK(raw->Send(Extended("COPY copy_t FROM STDIN") + Sync() + CopyData("1\n") +
                          CopyFail("no thanks") + Sync() + Extended("select 1") + Sync()));
  PGF_ASSERT_OK_AND_ASSIGN(std::string types, ReadThroughReady(*raw, 2, &errors));
  EXPECT_EQ(types, "12GEZ12DCZ");
  PGF_ASSERT_OK(raw->Send(Extended("COPY copy_t FROM STDIN") + Sync() + CopyData("x\n") +
                          CopyDone() + Sync() + QueryMessage("select 2")));
  PGF_ASSERT_OK_AND_ASSIGN(types, ReadThroughReady(*raw, 2, &errors));
  EXPECT_EQ(types, "12GEZTDCZ");
  EXPECT_EQ(errors, "57014 22P02 ");
  EXPECT_EQ(CountRows("copy_t"), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after failed COPYs with requests pipelined"));
  ASSERT_NO_FATAL_FAILURE(ExpectRawNamedParseWorks(*raw, "after failed pipelined COPYs"));
  ASSERT_NO_FATAL_FAILURE(ExpectNextAnswerIsOwn(*raw, "after failed pipelined COPYs"));
}

// The same when the COPY failed before reading its Sync (the trigger): both Syncs answered.
TEST_F(CopyProtocolTest, RawCopyRefusedBeforeReadingWithTheNextRequestPipelined) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, ConnectRaw());
  PGF_ASSERT_OK(raw->Send(Extended("COPY copy_guarded FROM STDIN") + Sync() + CopyData("1\n") +
                          CopyDone() + Sync() + Extended("select 1") + Sync()));
  PGF_ASSERT_OK_AND_ASSIGN(std::string types, ReadThroughReady(*raw, 3));
  EXPECT_EQ(types, "12GEZZ12DCZ");
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after a refused COPY with a request pipelined"));
  ASSERT_NO_FATAL_FAILURE(ExpectRawNamedParseWorks(*raw, "after a refused pipelined COPY"));
  ASSERT_NO_FATAL_FAILURE(ExpectNextAnswerIsOwn(*raw, "after a refused pipelined COPY"));
}

// A client leaving after CopyDone but before the Sync that follows it: the COPY's Execute is
// still in its implicit transaction (the Sync after Execute was swallowed by the copy). The
// server must not go back to the pool with it: the next client's query would run in that
// transaction and commit the departed client's rows. PostgreSQL itself rolls them back when
// the connection ends.
TEST_F(CopyProtocolTest, ClientLeavingAfterExtendedCopyDoneBeforeItsSync) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, ConnectRaw());
  // Flush: PostgreSQL holds the CommandComplete until a Sync or Flush.
  PGF_ASSERT_OK(raw->Send(Extended("COPY copy_t FROM STDIN") + Sync() + CopyData("1\n2\n") +
                          CopyDone() + FrontendMessage('H', "")));
  std::string types;
  while (types.empty() || types.back() != 'C') {
    PGF_ASSERT_OK_AND_ASSIGN(BackendMessage message, raw->ReadMessage(kReadTimeout));
    types.push_back(message.type);
  }
  EXPECT_EQ(types, "12GC");
  raw->Close();
  ASSERT_NO_FATAL_FAILURE(ExpectServerFree("after a client left with its COPY unsynced"));
  PGF_ASSERT_OK(PollUntil(
      [](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Rows> rows = g_pg->Exec(kAppdbBackendsSql);
        if (!rows.ok()) return rows.status();
        *note = absl::StrCat((*rows)[0][0], " backends on appdb");
        return (*rows)[0][0] == "1";
      },
      absl::Seconds(10), "the departed client's server to be gone"));
  EXPECT_EQ(CountRows("copy_t"), 0) << "the departed client's uncommitted COPY was committed";
}

}  // namespace
}  // namespace pgfleet::testutil
