// SQL that drops or replaces the agent's shared server-side statements ("pgf_<id>") behind its
// back, through a real pgfleet-agent in transaction mode with ONE server (so every client
// shares it) in front of a real PostgreSQL 15. Client B prepares a statement with libpq; client
// A then runs DEALLOCATE / PREPARE / DISCARD in forms the agent's up-front check may or may not
// see (a second statement of a simple query, after a long first statement, inside a DO block);
// B's statement must keep running and return B's own result.

#include <libpq-fe.h>
#include <sys/wait.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

class SqlDeallocateTest : public AgentTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(AgentTest::SetUp());
    ASSERT_NO_FATAL_FAILURE(StartAgent({{"default_pool_size", "1"},
                                        {"max_prepared_statements", "100"},
                                        {"max_client_conn", "50"}}));
    PGF_ASSERT_OK_AND_ASSIGN(a_, ConnectApp());
    PGF_ASSERT_OK_AND_ASSIGN(b_, ConnectApp());
    PgResult prepared(PQprepare(b_.get(), "b_double", "select $1::int * 2", 0, nullptr));
    ASSERT_EQ(PQresultStatus(prepared.get()), PGRES_COMMAND_OK) << PQerrorMessage(b_.get());
    ASSERT_NO_FATAL_FAILURE(ExpectBWorks(21, "before anything"));
    // The agent's name for B's statement, as the (only) server knows it.
    PGF_ASSERT_OK_AND_ASSIGN(
        Rows names,
        Query(a_.get(), "select name from pg_prepared_statements where name like 'pgf\\_%'"));
    ASSERT_EQ(names.size(), 1u);
    server_name_ = names[0][0];
  }

  void TearDown() override {
    a_.reset();
    b_.reset();
    AgentTest::TearDown();
  }

  absl::StatusOr<std::string> RunB(int value) {
    const std::string text = std::to_string(value);
    const char* values[] = {text.c_str()};
    PgResult run(PQexecPrepared(b_.get(), "b_double", 1, values, nullptr, nullptr, 0));
    if (PQresultStatus(run.get()) != PGRES_TUPLES_OK) return ResultError(b_.get(), run.get());
    return std::string(PQgetvalue(run.get(), 0, 0));
  }

  void ExpectBWorks(int value, const std::string& context) {
    absl::StatusOr<std::string> result = RunB(value);
    ASSERT_TRUE(result.ok()) << context << ": B's prepared statement failed: " << result.status();
    EXPECT_EQ(*result, std::to_string(value * 2)) << context << ": B got someone else's answer";
  }

  // A runs `sql`; it may be refused (0A000) or run; either way B must keep working, now and on
  // every later transaction.
  void AThenB(const std::string& sql, const std::string& context) {
    absl::StatusOr<Rows> rows = Query(a_.get(), sql);
    if (!rows.ok()) {
      EXPECT_EQ(SqlStateOf(rows.status()), "0A000") << context << ": " << rows.status();
    }
    ASSERT_NO_FATAL_FAILURE(ExpectBWorks(5, context));
    ASSERT_NO_FATAL_FAILURE(ExpectBWorks(6, context + " (again)"));
  }

  PgConn a_;
  PgConn b_;
  std::string server_name_;
};

TEST_F(SqlDeallocateTest, DeallocateAsSecondStatement) {
  AThenB(absl::StrCat("SELECT 1; DEALLOCATE ", server_name_), "SELECT 1; DEALLOCATE pgf_N");
}

TEST_F(SqlDeallocateTest, DeallocateWithCommentsAndOddCase) {
  AThenB(absl::StrCat("select 1 /* ; */ ;\n-- DEALLOCATE nothing\n  DeAlLoCaTe   prepare \"",
                      server_name_, "\""),
         "commented, quoted, mixed-case DEALLOCATE");
}

TEST_F(SqlDeallocateTest, DeallocateAfterALongFirstStatement) {
  // Past anything the agent reads up front: only what PostgreSQL answers can tell.
  AThenB(absl::StrCat("SELECT '", std::string(4000, 'x'), "'; DEALLOCATE ", server_name_),
         "DEALLOCATE after 4000 bytes");
}

TEST_F(SqlDeallocateTest, ReplacedByAnotherQueryOfTheSameName) {
  // The worst case: B's name now runs A's query with B's parameters.
  AThenB(absl::StrCat("SELECT '", std::string(4000, 'x'), "'; DEALLOCATE ", server_name_,
                      "; PREPARE ", server_name_, "(int) AS SELECT -1"),
         "pgf_N replaced by PREPARE");
  AThenB(absl::StrCat("SELECT 1; DEALLOCATE ", server_name_, "; PREPARE ", server_name_,
                      "(int) AS SELECT -1"),
         "pgf_N replaced by PREPARE (short)");
}

TEST_F(SqlDeallocateTest, DeallocateAllAndDiscardAll) {
  AThenB("DEALLOCATE ALL", "DEALLOCATE ALL");
  AThenB("SELECT 1; DEALLOCATE ALL", "SELECT 1; DEALLOCATE ALL");
  AThenB("DISCARD ALL", "DISCARD ALL");
  AThenB("discard plans", "DISCARD PLANS");
}

TEST_F(SqlDeallocateTest, DeallocateInsideADoBlock) {
  // No command tag shows it: PostgreSQL's "does not exist" answer to B's Bind is the only
  // sign. B may see that one error; after it, the agent must prepare the statement again.
  PGF_ASSERT_OK(
      Query(a_.get(), absl::StrCat("DO $$ BEGIN EXECUTE 'DEALLOCATE ", server_name_, "'; END $$"))
          .status());
  absl::StatusOr<std::string> first = RunB(5);
  if (!first.ok()) {
    EXPECT_EQ(SqlStateOf(first.status()), "26000") << first.status();
  } else {
    EXPECT_EQ(*first, "10");
  }
  ASSERT_NO_FATAL_FAILURE(ExpectBWorks(6, "after a DEALLOCATE in a DO block"));
  ASSERT_NO_FATAL_FAILURE(ExpectBWorks(7, "after a DEALLOCATE in a DO block (again)"));
}

}  // namespace
}  // namespace pgfleet::testutil
