// Issue 22, target_session_attrs against a real hot standby: a PostgreSQL 15 primary and a standby
// made from it with `pg_basebackup -R` (streaming replication), one multi-host database per
// target_session_attrs value, each listing first the host it must not pick. The agent logs in to
// each host and keeps only a server of the kind asked for (PostgreSQL 14+ reports in_hot_standby
// and default_transaction_read_only at login): read-write and primary land on the primary,
// read-only and standby on the standby, any on either. After the primary is stopped and the
// standby promoted, read-write follows: new transactions, and a client that stayed connected
// through the failover, write on the promoted host.
#include <libpq-fe.h>
#include <signal.h>

#include <iostream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
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

// `recovery` is pg_is_in_recovery() of the server a query ran on; `port` its port.
constexpr char kWhereSql[] = "select pg_is_in_recovery()::text || ' ' || current_setting('port')";

PostgresOptions PrimaryOptions() {
  PostgresOptions options;
  options.extra_hba_lines = {kReplicationHbaLine};
  return options;
}

// A primary and its hot standby, started for one test (the failover test ends the primary).
struct ReplicatedPair {
  static absl::StatusOr<ReplicatedPair> Start() {
    ReplicatedPair pair;
    PGF_ASSIGN_OR_RETURN(pair.primary, PostgresEnv::Start(PrimaryOptions()));
    PGF_RETURN_IF_ERROR(CreateAppDatabase(*pair.primary));
    PGF_RETURN_IF_ERROR(pair.primary
                            ->Exec("create table writes (id int primary key, at text); alter table "
                                   "writes owner to app",
                                   kAppDb)
                            .status());
    PGF_ASSIGN_OR_RETURN(pair.standby, PostgresEnv::StartStandbyOf(*pair.primary));
    return pair;
  }
  std::unique_ptr<PostgresEnv> primary;
  std::unique_ptr<PostgresEnv> standby;
};

class HotStandbyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<ReplicatedPair> pair = ReplicatedPair::Start();
    ASSERT_TRUE(pair.ok()) << pair.status();
    pair_ = *std::move(pair);
  }
  void TearDown() override {
    if (agent_ != nullptr) {
      ExpectCleanStop(*agent_);
      if (HasFailure()) std::cerr << agent_->Diagnostics();
    }
    if (HasFailure()) {
      std::cerr << "--- primary log ---\n"
                << pair_.primary->LogTail() << "--- standby log ---\n"
                << pair_.standby->LogTail();
    }
  }

  int PrimaryPort() const { return pair_.primary->port(); }
  int StandbyPort() const { return pair_.standby->port(); }

  // "name = host=127.0.0.1,127.0.0.1 port=FIRST,SECOND dbname=appdb EXTRA".
  static std::string Entry(const std::string& name, int first, int second,
                           const std::string& extra) {
    return absl::StrCat(name, " = host=127.0.0.1,127.0.0.1 port=", first, ",", second,
                        " dbname=", kAppDb, " ", extra, "\n");
  }

  void StartAgent(const std::string& databases) {
    AgentOptions options;
    options.databases_section = databases;
    options.pgbouncer_settings = {{"auth_type", "scram-sha-256"},
                                  {"pool_mode", "transaction"},
                                  {"admin_users", kAdminUser},
                                  {"server_login_retry", "1"},
                                  // A client for whom no host qualifies gives up after this.
                                  {"client_login_timeout", "3"}};
    options.userlist = {{kAppUser, kAppPassword}, {kAdminUser, kAdminPassword}};
    agent_options_ = options;
    absl::StatusOr<std::unique_ptr<AgentProcess>> agent = AgentProcess::Start(options);
    ASSERT_TRUE(agent.ok()) << agent.status();
    agent_ = *std::move(agent);
  }

  // Where a new connection to `db` through the agent runs its queries: "false PORT" on a
  // primary, "true PORT" on a standby.
  absl::StatusOr<std::string> WhereNewConnectionRuns(const std::string& db) const {
    PGF_ASSIGN_OR_RETURN(PgConn conn, Connect(agent_->ConnString(db, kAppUser, kAppPassword)));
    return ScalarText(conn.get(), kWhereSql);
  }

  std::string OnPrimary() const { return absl::StrCat("false ", PrimaryPort()); }
  std::string OnStandby() const { return absl::StrCat("true ", StandbyPort()); }

  ReplicatedPair pair_;
  AgentOptions agent_options_;
  std::unique_ptr<AgentProcess> agent_;
};

TEST_F(HotStandbyTest, EachTargetSessionAttrsPicksItsKindOfHost) {
  const int primary = PrimaryPort();
  const int standby = StandbyPort();
  // Each list names first the host the value must skip.
  ASSERT_NO_FATAL_FAILURE(
      StartAgent(absl::StrCat(Entry("rw", standby, primary, "target_session_attrs=read-write"),
                              Entry("ro", primary, standby, "target_session_attrs=read-only"),
                              Entry("prim", standby, primary, "target_session_attrs=primary"),
                              Entry("stby", primary, standby, "target_session_attrs=standby"),
                              Entry("anyhost", primary, standby,
                                    "target_session_attrs=any load_balance_hosts=round-robin"))));
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    for (const auto& [db, expected] :
         std::vector<std::pair<std::string, std::string>>{{"rw", OnPrimary()},
                                                          {"ro", OnStandby()},
                                                          {"prim", OnPrimary()},
                                                          {"stby", OnStandby()}}) {
      absl::StatusOr<std::string> where = WhereNewConnectionRuns(db);
      ASSERT_TRUE(where.ok()) << db << ": " << where.status();
      EXPECT_EQ(*where, expected) << db;
    }
  }
  // The wrong kind of host was logged in to and turned down, in PgBouncer's words.
  EXPECT_TRUE(
      absl::StrContains(agent_->LogContents(), "server does not satisfy target_session_attrs"))
      << agent_->Diagnostics();
  // A write through read-write reaches the primary and replicates to the standby, which
  // read-only then reads.
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn rw, Connect(agent_->ConnString("rw", kAppUser, kAppPassword)));
    PGF_ASSERT_OK(Query(rw.get(), "insert into writes values (1, 'before')").status());
  }
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(PgConn ro, Connect(agent_->ConnString("ro", kAppUser, kAppPassword)));
        absl::StatusOr<std::string> count = ScalarText(ro.get(), "select count(*) from writes");
        *note = count.ok() ? *count : std::string(count.status().message());
        return count.ok() && *count == "1";
      },
      absl::Seconds(20), "the row to replicate to the standby"));
  // read-only refuses writes as the standby does: the agent did not send them elsewhere.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn ro, Connect(agent_->ConnString("ro", kAppUser, kAppPassword)));
  absl::Status refused = Query(ro.get(), "insert into writes values (2, 'x')").status();
  EXPECT_EQ(SqlStateOf(refused), "25006") << refused;
  // default_transaction_read_only = on makes a primary read-only: read-only and primary take
  // it, read-write does not (PostgreSQL reports the setting at login).
  PGF_ASSERT_OK(pair_.primary->Exec("create database rodb owner app").status());
  PGF_ASSERT_OK(
      pair_.primary->Exec("alter database rodb set default_transaction_read_only = on").status());
  std::string read_only_primary = absl::StrCat(
      "ro_primary = host=127.0.0.1 port=", primary, " dbname=rodb target_session_attrs=read-only\n",
      "primary_ro = host=127.0.0.1 port=", primary, " dbname=rodb target_session_attrs=primary\n",
      "rw_ro = host=127.0.0.1 port=", primary, " dbname=rodb target_session_attrs=read-write\n");
  AgentOptions reloaded = agent_options_;
  reloaded.databases_section += read_only_primary;
  PGF_ASSERT_OK(agent_->RewriteConfig(reloaded));
  PGF_ASSERT_OK(agent_->Signal(SIGHUP));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return Connect(agent_->ConnString("ro_primary", kAppUser, kAppPassword)).ok();
      },
      absl::Seconds(10), "the reloaded databases"));
  for (const std::string db : {"ro_primary", "primary_ro"}) {
    absl::StatusOr<std::string> where = WhereNewConnectionRuns(db);
    ASSERT_TRUE(where.ok()) << db << ": " << where.status();
    EXPECT_EQ(*where, OnPrimary()) << db;
  }
  // No host qualifies: the client never gets a server, and is told so in PgBouncer's words.
  absl::StatusOr<std::string> nowhere = WhereNewConnectionRuns("rw_ro");
  ASSERT_FALSE(nowhere.ok()) << *nowhere;
  EXPECT_TRUE(absl::StrContains(nowhere.status().message(), "client_login_timeout (server down)"))
      << nowhere.status();

  // any uses both hosts (round-robin over two server connections held at once).
  PGF_ASSERT_OK_AND_ASSIGN(PgConn a,
                           Connect(agent_->ConnString("anyhost", kAppUser, kAppPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn b,
                           Connect(agent_->ConnString("anyhost", kAppUser, kAppPassword)));
  PGF_ASSERT_OK(Query(a.get(), "begin").status());
  PGF_ASSERT_OK(Query(b.get(), "begin").status());
  PGF_ASSERT_OK_AND_ASSIGN(std::string on_a, ScalarText(a.get(), kWhereSql));
  PGF_ASSERT_OK_AND_ASSIGN(std::string on_b, ScalarText(b.get(), kWhereSql));
  EXPECT_NE(on_a, on_b);
  EXPECT_TRUE((on_a == OnPrimary() && on_b == OnStandby()) ||
              (on_a == OnStandby() && on_b == OnPrimary()))
      << on_a << " / " << on_b;
}

TEST_F(HotStandbyTest, ReadWriteFollowsThePromotedStandby) {
  ASSERT_NO_FATAL_FAILURE(StartAgent(
      absl::StrCat(Entry("rw", PrimaryPort(), StandbyPort(), "target_session_attrs=read-write"),
                   Entry("ro", PrimaryPort(), StandbyPort(), "target_session_attrs=read-only"))));
  PGF_ASSERT_OK_AND_ASSIGN(std::string before, WhereNewConnectionRuns("rw"));
  EXPECT_EQ(before, OnPrimary());
  PGF_ASSERT_OK_AND_ASSIGN(std::string read_before, WhereNewConnectionRuns("ro"));
  EXPECT_EQ(read_before, OnStandby());
  // A client that stays connected through the failover.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn staying,
                           Connect(agent_->ConnString("rw", kAppUser, kAppPassword)));
  PGF_ASSERT_OK(Query(staying.get(), "insert into writes values (1, 'before')").status());
  // The row is on the standby before the primary goes (else the failover would lose it, which
  // is PostgreSQL's asynchronous replication, not the agent's doing).
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(Rows rows, pair_.standby->Exec("select count(*) from writes", kAppDb));
        return rows.size() == 1 && rows[0][0] == "1";
      },
      absl::Seconds(20), "the row to replicate"));

  PGF_ASSERT_OK(pair_.primary->StopServer());
  PGF_ASSERT_OK(pair_.standby->Promote());

  // read-write now lands on the promoted standby, which takes writes.
  const std::string promoted = absl::StrCat("false ", StandbyPort());
  const absl::Status followed = PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<std::string> where = WhereNewConnectionRuns("rw");
        *note = where.ok() ? *where : std::string(where.status().message());
        return where.ok() && *where == promoted;
      },
      absl::Seconds(30), "read-write to follow the promoted standby");
  ASSERT_TRUE(followed.ok()) << followed;
  PGF_ASSERT_OK_AND_ASSIGN(PgConn fresh, Connect(agent_->ConnString("rw", kAppUser, kAppPassword)));
  PGF_ASSERT_OK(Query(fresh.get(), "insert into writes values (2, 'after')").status());
  // The client that stayed: its server went with the old primary; its next transactions run on
  // the promoted host (an error while the agent finds it is allowed, a dead connection is not).
  const absl::Status stayed = PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        if (PQstatus(staying.get()) != CONNECTION_OK) {
          return absl::FailedPreconditionError("the agent closed the client that stayed");
        }
        absl::Status inserted =
            Query(staying.get(), "insert into writes values (3, 'stayed')").status();
        *note = inserted.ToString();
        return inserted.ok();
      },
      absl::Seconds(30), "the client that stayed to write again");
  ASSERT_TRUE(stayed.ok()) << stayed;
  PGF_ASSERT_OK_AND_ASSIGN(Rows rows,
                           pair_.standby->Exec("select id from writes order by id", kAppDb));
  EXPECT_EQ(rows, (Rows{{"1"}, {"2"}, {"3"}}));
}

}  // namespace
}  // namespace pgfleet::testutil
