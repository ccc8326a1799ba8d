// SqliteStore against a real SQLite file and a real PostgreSQL 15 database per test
// (store_backends.h): migrations, every Store method, and the error contract (NotFound /
// Aborted / InvalidArgument / storage errors rolled back).

#include "controller/store/sqlite_store.h"

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/unit/store_backends.h"

namespace pgfleet::controller {
namespace {

constexpr int64_t kMinute = 60 * 1000;
constexpr int64_t kT0 = 1'700'000'040'000;  // A minute boundary (1700000040000 % 60000 == 0).

// Every Store behaviour, on both databases.
class StoreTest : public StoreBackendTest {
 protected:
  AgentRow Hello(const std::string& id, const std::string& env) {
    AgentRow hello;
    hello.agent_id = id;
    hello.environment = env;
    hello.agent_version = "0.1.0";
    hello.hostname = id + ".example";
    return hello;
  }
};
INSTANTIATE_TEST_SUITE_P(Backends, StoreTest, ::testing::ValuesIn(AllStoreBackends()),
                         StoreBackendName);

// What only a SQLite file has: WAL, file errors, a size cap.
class SqliteStoreTest : public StoreBackendBase {
 protected:
  StoreBackend backend() const override { return StoreBackend::kSqlite; }
};

TEST(StoreHelpersTest, Sha256HexAndRoles) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  for (Role role : {Role::kViewer, Role::kOperator, Role::kAdmin}) {
    absl::StatusOr<Role> parsed = ParseRole(RoleName(role));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, role);
  }
  EXPECT_STREQ(RoleName(Role::kOperator), "operator");
  EXPECT_TRUE(absl::IsInvalidArgument(ParseRole("root").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ParseRole("Admin").status()));
}

TEST_P(StoreTest, MigrationsAppliedOnceAndRecorded) {
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<AppliedMigration> first, store_->AppliedMigrations());
  ASSERT_FALSE(first.empty());
  EXPECT_EQ(first.front().version, 1);
  EXPECT_EQ(first.front().name, "init");
  EXPECT_EQ(first.back().version, SqliteStore::LatestSchemaVersion());
  for (const AppliedMigration& migration : first) EXPECT_GT(migration.applied_unix_ms, 0);

  PGF_ASSERT_OK(store_->AddConfigVersion("prod", "[pgbouncer]\n", "alice", "first", kT0));
  Reopen();
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<AppliedMigration> second, store_->AppliedMigrations());
  ASSERT_EQ(second.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(second[i].version, first[i].version);
    EXPECT_EQ(second[i].applied_unix_ms, first[i].applied_unix_ms) << "re-applied";
  }
  // Data survived the reopen, and the file is sound.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<ConfigVersionRow> versions,
                           store_->ListConfigVersions("prod"));
  EXPECT_EQ(versions.size(), 1u);
  if (backend() == StoreBackend::kSqlite) {
    PGF_ASSERT_OK_AND_ASSIGN(std::string integrity, store_->IntegrityCheck());
    EXPECT_EQ(integrity, "ok");
  }
}

TEST_P(StoreTest, RefusesNewerSchema) {
  PGF_ASSERT_OK(
      store_->ExecForTesting("INSERT INTO schema_migrations (version, name, applied_unix_ms) "
                             "VALUES (9999, 'from_the_future', 0)"));
  store_.reset();
  absl::StatusOr<std::unique_ptr<SqliteStore>> reopened = OpenAgain();
  ASSERT_FALSE(reopened.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(reopened.status())) << reopened.status();
  const std::string message(reopened.status().message());
  EXPECT_TRUE(absl::StrContains(message,
                                "database schema version 9999 is newer than this "
                                "pgfleet-controller knows"))
      << message;
  EXPECT_TRUE(
      absl::StrContains(message, absl::StrCat("(", SqliteStore::LatestSchemaVersion(), ")")))
      << message;
  EXPECT_TRUE(absl::StrContains(message, "upgrade the controller")) << message;
  // The generic entry point says the same.
  EXPECT_TRUE(absl::IsFailedPrecondition(OpenStore(path_).status()));
}

TEST_P(StoreTest, PendingMigrationsEachInTheirOwnTransaction) {
  store_.reset();
  std::vector<Migration> migrations = SqliteStore::EmbeddedMigrations();
  const int base = migrations.back().version;
  { PGF_ASSERT_OK_AND_ASSIGN(auto store, OpenAgain(migrations)); }
  // A new release brings two migrations: both are applied, in order, and recorded.
  migrations.push_back({base + 1, "add_a", "CREATE TABLE extra_a (x INTEGER);"});
  migrations.push_back(
      {base + 2, "add_b", "CREATE TABLE extra_b (y INTEGER); INSERT INTO extra_b VALUES (1);"});
  {
    PGF_ASSERT_OK_AND_ASSIGN(auto store, OpenAgain(migrations));
    PGF_ASSERT_OK_AND_ASSIGN(std::vector<AppliedMigration> applied, store->AppliedMigrations());
    ASSERT_EQ(applied.size(), migrations.size());
    EXPECT_EQ(applied.back().version, base + 2);
    EXPECT_EQ(applied.back().name, "add_b");
    PGF_EXPECT_OK(store->ExecForTesting("SELECT x FROM extra_a; SELECT y FROM extra_b;"));
  }
  // A migration that fails half-way leaves nothing behind: neither its first statement's
  // effect nor its schema_migrations row; the earlier ones stay applied.
  migrations.push_back({base + 3, "broken",
                        "CREATE TABLE extra_c (z INTEGER); INSERT INTO no_such_table VALUES (1);"});
  absl::StatusOr<std::unique_ptr<SqliteStore>> broken = OpenAgain(migrations);
  ASSERT_FALSE(broken.ok());
  EXPECT_TRUE(absl::StrContains(broken.status().message(), "no_such_table")) << broken.status();
  EXPECT_TRUE(
      absl::StrContains(broken.status().message(), absl::StrFormat("%04d_broken", base + 3)))
      << broken.status();
  migrations.pop_back();
  {
    PGF_ASSERT_OK_AND_ASSIGN(auto store, OpenAgain(migrations));
    PGF_ASSERT_OK_AND_ASSIGN(std::vector<AppliedMigration> applied, store->AppliedMigrations());
    EXPECT_EQ(applied.back().version, base + 2);
    EXPECT_FALSE(store->ExecForTesting("SELECT z FROM extra_c").ok()) << "rolled back";
  }
  // The old binary (embedded migrations only) refuses the upgraded file.
  absl::StatusOr<std::unique_ptr<SqliteStore>> old = OpenAgain();
  ASSERT_TRUE(absl::IsFailedPrecondition(old.status())) << old.status();
  EXPECT_TRUE(absl::StrContains(
      old.status().message(),
      absl::StrFormat("database schema version %d is newer than this pgfleet-controller knows "
                      "(%d)",
                      base + 2, base)))
      << old.status();
  EXPECT_TRUE(absl::IsInvalidArgument(OpenAgain({}).status()));
}

TEST_F(SqliteStoreTest, NotADatabaseIsAnError) {
  store_.reset();
  std::string bogus = dir_ + "/bogus.db";
  FILE* f = fopen(bogus.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fputs("this is not an sqlite file, not at all, it is just some text long enough\n", f);
  fclose(f);
  absl::StatusOr<std::unique_ptr<SqliteStore>> opened = SqliteStore::Open(bogus);
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(absl::StrContains(opened.status().message(), "not a database")) << opened.status();
  EXPECT_FALSE(SqliteStore::Open(dir_ + "/no/such/dir/x.db").ok());
}

TEST_P(StoreTest, WalForeignKeysAndImmutability) {
  if (backend() == StoreBackend::kSqlite) {
    EXPECT_TRUE(std::filesystem::exists(path_ + "-wal"));
  }
  // Foreign keys are enforced on the store's connection.
  absl::Status orphan = store_->ExecForTesting(
      "INSERT INTO config_versions (environment, sha256, ini_text, author, message, "
      "created_unix_ms) VALUES ('nowhere', '" +
      std::string(64, 'a') + "', '', '', '', 0)");
  EXPECT_FALSE(orphan.ok());
  EXPECT_TRUE(absl::StrContains(absl::AsciiStrToUpper(orphan.message()), "FOREIGN KEY")) << orphan;
  // Config versions cannot change once written.
  PGF_ASSERT_OK(store_->AddConfigVersion("prod", "a", "alice", "m", kT0));
  absl::Status update = store_->ExecForTesting("UPDATE config_versions SET message = 'x'");
  EXPECT_TRUE(absl::StrContains(update.message(), "immutable")) << update;
  EXPECT_FALSE(store_->ExecForTesting("DELETE FROM config_versions").ok());
}

TEST_P(StoreTest, Environments) {
  PGF_ASSERT_OK(store_->EnsureEnvironment("staging", kT0));
  PGF_ASSERT_OK(store_->EnsureEnvironment("prod", kT0 + 1));
  PGF_ASSERT_OK(store_->EnsureEnvironment("staging", kT0 + 2));  // Idempotent.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<EnvironmentRow> envs, store_->ListEnvironments());
  ASSERT_EQ(envs.size(), 2u);
  EXPECT_EQ(envs[0].name, "prod");
  EXPECT_EQ(envs[1].name, "staging");
  EXPECT_EQ(envs[1].created_unix_ms, kT0) << "created_unix_ms is kept";
  EXPECT_EQ(envs[1].desired_version, 0u);

  PGF_ASSERT_OK_AND_ASSIGN(EnvironmentRow prod, store_->GetEnvironment("prod"));
  EXPECT_EQ(prod.created_unix_ms, kT0 + 1);
  EXPECT_TRUE(absl::IsNotFound(store_->GetEnvironment("dev").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store_->EnsureEnvironment("", kT0)));
}

TEST_P(StoreTest, SetDesiredVersionCompareAndSet) {
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow v1,
                           store_->AddConfigVersion("prod", "one", "alice", "", kT0));
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow v2,
                           store_->AddConfigVersion("prod", "two", "alice", "", kT0));
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow other,
                           store_->AddConfigVersion("dev", "one", "bob", "", kT0));

  EXPECT_TRUE(absl::IsNotFound(store_->SetDesiredVersion("nope", v1.version, std::nullopt)));
  EXPECT_TRUE(absl::IsNotFound(store_->SetDesiredVersion("prod", 424242, std::nullopt)));
  EXPECT_TRUE(absl::IsNotFound(store_->SetDesiredVersion("prod", 0, std::nullopt)));
  EXPECT_TRUE(
      absl::IsInvalidArgument(store_->SetDesiredVersion("prod", other.version, std::nullopt)));

  // Nothing desired yet: only "expected 0" passes.
  absl::Status aborted = store_->SetDesiredVersion("prod", v1.version, v2.version);
  EXPECT_TRUE(absl::IsAborted(aborted)) << aborted;
  PGF_ASSERT_OK(store_->SetDesiredVersion("prod", v1.version, 0));
  PGF_ASSERT_OK_AND_ASSIGN(EnvironmentRow prod, store_->GetEnvironment("prod"));
  EXPECT_EQ(prod.desired_version, v1.version);

  // Stale expectation: aborted, and the desired version is untouched.
  EXPECT_TRUE(absl::IsAborted(store_->SetDesiredVersion("prod", v2.version, 0)));
  PGF_ASSERT_OK_AND_ASSIGN(prod, store_->GetEnvironment("prod"));
  EXPECT_EQ(prod.desired_version, v1.version);

  PGF_ASSERT_OK(store_->SetDesiredVersion("prod", v2.version, v1.version));
  PGF_ASSERT_OK(store_->SetDesiredVersion("prod", v1.version, std::nullopt));  // Unconditional.
  PGF_ASSERT_OK_AND_ASSIGN(prod, store_->GetEnvironment("prod"));
  EXPECT_EQ(prod.desired_version, v1.version);
  PGF_ASSERT_OK_AND_ASSIGN(EnvironmentRow dev, store_->GetEnvironment("dev"));
  EXPECT_EQ(dev.desired_version, 0u);
}

TEST_P(StoreTest, ConfigVersionsDedupeAndChain) {
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow a,
                           store_->AddConfigVersion("prod", "[pgbouncer]\nA", "alice", "a", kT0));
  EXPECT_GT(a.version, 0u);
  EXPECT_EQ(a.environment, "prod");
  EXPECT_EQ(a.sha256, Sha256Hex("[pgbouncer]\nA"));
  EXPECT_EQ(a.ini_text, "[pgbouncer]\nA");
  EXPECT_EQ(a.author, "alice");
  EXPECT_EQ(a.message, "a");
  EXPECT_EQ(a.created_unix_ms, kT0);
  EXPECT_EQ(a.parent_version, 0u);
  PGF_ASSERT_OK(store_->GetEnvironment("prod").status());  // Created by the push.

  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow b,
                           store_->AddConfigVersion("prod", "[pgbouncer]\nB", "bob", "b", kT0 + 1));
  EXPECT_GT(b.version, a.version);
  EXPECT_EQ(b.parent_version, a.version);

  // Same text again in the same environment: the existing version, nothing new.
  PGF_ASSERT_OK_AND_ASSIGN(
      ConfigVersionRow a_again,
      store_->AddConfigVersion("prod", "[pgbouncer]\nA", "carol", "again", kT0 + 2));
  EXPECT_EQ(a_again.version, a.version);
  EXPECT_EQ(a_again.author, "alice");
  EXPECT_EQ(a_again.created_unix_ms, kT0);
  EXPECT_EQ(a_again.ini_text, "[pgbouncer]\nA");

  // Same text in another environment: a new version there, with its own chain.
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow dev_a,
                           store_->AddConfigVersion("dev", "[pgbouncer]\nA", "dave", "", kT0 + 3));
  EXPECT_NE(dev_a.version, a.version);
  EXPECT_GT(dev_a.version, b.version) << "versions are global and increasing";
  EXPECT_EQ(dev_a.sha256, a.sha256);
  EXPECT_EQ(dev_a.parent_version, 0u);

  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow c,
                           store_->AddConfigVersion("prod", "[pgbouncer]\nC", "eve", "c", kT0 + 4));
  EXPECT_EQ(c.parent_version, b.version) << "parent is the environment's newest version";

  PGF_ASSERT_OK_AND_ASSIGN(std::vector<ConfigVersionRow> prod, store_->ListConfigVersions("prod"));
  ASSERT_EQ(prod.size(), 3u);
  EXPECT_EQ(prod[0].version, c.version);
  EXPECT_EQ(prod[1].version, b.version);
  EXPECT_EQ(prod[2].version, a.version);
  for (const ConfigVersionRow& row : prod) {
    EXPECT_TRUE(row.ini_text.empty()) << "list results carry no text";
    EXPECT_EQ(row.environment, "prod");
    EXPECT_EQ(row.sha256.size(), 64u);
  }
  EXPECT_EQ(prod[0].author, "eve");
  EXPECT_EQ(prod[0].parent_version, b.version);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<ConfigVersionRow> none, store_->ListConfigVersions("qa"));
  EXPECT_TRUE(none.empty());

  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow got, store_->GetConfigVersion(b.version));
  EXPECT_EQ(got.ini_text, "[pgbouncer]\nB");
  EXPECT_EQ(got.message, "b");
  EXPECT_EQ(got.parent_version, a.version);
  EXPECT_TRUE(absl::IsNotFound(store_->GetConfigVersion(999999).status()));
  EXPECT_TRUE(absl::IsNotFound(store_->GetConfigVersion(UINT64_MAX).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store_->AddConfigVersion("", "x", "a", "", kT0).status()));

  // Text with NUL bytes and non-ASCII survives byte for byte.
  std::string odd("a\0b\xc3\xa9\xff", 6);
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow odd_row,
                           store_->AddConfigVersion("prod", odd, "x", "", kT0));
  PGF_ASSERT_OK_AND_ASSIGN(got, store_->GetConfigVersion(odd_row.version));
  EXPECT_EQ(got.ini_text, odd);
  EXPECT_EQ(got.sha256, Sha256Hex(odd));
}

TEST_P(StoreTest, AgentHelloCreatesAndUpdates) {
  AgentRow hello = Hello("pg-1", "prod");
  hello.labels = {{"az", "a"}, {"role", "primary"}};
  hello.applied_version = 7;
  hello.applied_sha256 = "abc";
  PGF_ASSERT_OK(store_->RecordAgentHello(hello, kT0));
  PGF_ASSERT_OK(store_->GetEnvironment("prod").status());  // Hello creates its environment.

  PGF_ASSERT_OK_AND_ASSIGN(AgentRow agent, store_->GetAgent("pg-1"));
  EXPECT_EQ(agent.environment, "prod");
  EXPECT_EQ(agent.labels, hello.labels);
  EXPECT_EQ(agent.agent_version, "0.1.0");
  EXPECT_EQ(agent.hostname, "pg-1.example");
  EXPECT_TRUE(agent.connected);
  EXPECT_EQ(agent.first_seen_unix_ms, kT0);
  EXPECT_EQ(agent.last_seen_unix_ms, kT0);
  EXPECT_EQ(agent.applied_version, 7u);
  EXPECT_EQ(agent.applied_sha256, "abc");
  EXPECT_EQ(agent.last_error, "");
  EXPECT_FALSE(agent.pinned_version.has_value());

  PGF_ASSERT_OK(store_->MarkAgentDisconnected("pg-1", kT0 + 1000));
  PGF_ASSERT_OK_AND_ASSIGN(agent, store_->GetAgent("pg-1"));
  EXPECT_FALSE(agent.connected);
  EXPECT_EQ(agent.last_seen_unix_ms, kT0 + 1000);

  // Reconnect with new identity fields and labels.
  hello.labels = {{"az", "b"}};
  hello.agent_version = "0.2.0";
  hello.hostname = "pg-1-new.example";
  hello.applied_version = 9;
  hello.applied_sha256 = "def";
  PGF_ASSERT_OK(store_->RecordAgentHello(hello, kT0 + 5000));
  PGF_ASSERT_OK_AND_ASSIGN(agent, store_->GetAgent("pg-1"));
  EXPECT_TRUE(agent.connected);
  EXPECT_EQ(agent.first_seen_unix_ms, kT0) << "first_seen is kept";
  EXPECT_EQ(agent.last_seen_unix_ms, kT0 + 5000);
  EXPECT_EQ(agent.labels, (std::map<std::string, std::string>{{"az", "b"}}));
  EXPECT_EQ(agent.agent_version, "0.2.0");
  EXPECT_EQ(agent.hostname, "pg-1-new.example");
  EXPECT_EQ(agent.applied_version, 9u);
  EXPECT_EQ(agent.applied_sha256, "def");

  PGF_ASSERT_OK(store_->TouchAgent("pg-1", kT0 + 9000));
  PGF_ASSERT_OK_AND_ASSIGN(agent, store_->GetAgent("pg-1"));
  EXPECT_EQ(agent.last_seen_unix_ms, kT0 + 9000);

  EXPECT_TRUE(absl::IsNotFound(store_->GetAgent("ghost").status()));
  EXPECT_TRUE(absl::IsNotFound(store_->TouchAgent("ghost", kT0)));
  EXPECT_TRUE(absl::IsNotFound(store_->MarkAgentDisconnected("ghost", kT0)));
  EXPECT_TRUE(absl::IsInvalidArgument(store_->RecordAgentHello(Hello("", "prod"), kT0)));
  EXPECT_TRUE(absl::IsInvalidArgument(store_->RecordAgentHello(Hello("pg-9", ""), kT0)));
}

TEST_P(StoreTest, ListAgentsAndMarkAllDisconnected) {
  PGF_ASSERT_OK(store_->RecordAgentHello(Hello("c", "prod"), kT0));
  PGF_ASSERT_OK(store_->RecordAgentHello(Hello("a", "prod"), kT0));
  AgentRow b = Hello("b", "dev");
  b.labels = {{"k1", "v1"}, {"k2", "v2"}};
  PGF_ASSERT_OK(store_->RecordAgentHello(b, kT0));

  PGF_ASSERT_OK_AND_ASSIGN(std::vector<AgentRow> all, store_->ListAgents(""));
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].agent_id, "a");
  EXPECT_EQ(all[1].agent_id, "b");
  EXPECT_EQ(all[1].labels, b.labels);
  EXPECT_EQ(all[2].agent_id, "c");
  EXPECT_TRUE(all[0].labels.empty());

  PGF_ASSERT_OK_AND_ASSIGN(std::vector<AgentRow> prod, store_->ListAgents("prod"));
  ASSERT_EQ(prod.size(), 2u);
  EXPECT_EQ(prod[0].agent_id, "a");
  EXPECT_EQ(prod[1].agent_id, "c");
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<AgentRow> none, store_->ListAgents("qa"));
  EXPECT_TRUE(none.empty());

  PGF_ASSERT_OK(store_->MarkAllAgentsDisconnected());
  PGF_ASSERT_OK_AND_ASSIGN(all, store_->ListAgents(""));
  for (const AgentRow& agent : all) {
    EXPECT_FALSE(agent.connected) << agent.agent_id;
    EXPECT_EQ(agent.last_seen_unix_ms, kT0);
  }
}

TEST_P(StoreTest, AckAndNack) {
  AgentRow hello = Hello("pg-1", "prod");
  hello.applied_version = 3;
  hello.applied_sha256 = "three";
  PGF_ASSERT_OK(store_->RecordAgentHello(hello, kT0));

  PGF_ASSERT_OK(store_->RecordAgentConfigResult("pg-1", 4, "four", "bad pool_mode", kT0 + 1));
  PGF_ASSERT_OK_AND_ASSIGN(AgentRow agent, store_->GetAgent("pg-1"));
  EXPECT_EQ(agent.last_error, "bad pool_mode");
  EXPECT_EQ(agent.applied_version, 3u) << "a NACK leaves the applied version";
  EXPECT_EQ(agent.applied_sha256, "three");
  EXPECT_EQ(agent.last_seen_unix_ms, kT0 + 1);

  PGF_ASSERT_OK(store_->RecordAgentConfigResult("pg-1", 5, "five", "", kT0 + 2));
  PGF_ASSERT_OK_AND_ASSIGN(agent, store_->GetAgent("pg-1"));
  EXPECT_EQ(agent.last_error, "") << "an ACK clears the error";
  EXPECT_EQ(agent.applied_version, 5u);
  EXPECT_EQ(agent.applied_sha256, "five");

  // A NACK survives a reconnect (only an ACK clears it).
  PGF_ASSERT_OK(store_->RecordAgentConfigResult("pg-1", 6, "six", "oops", kT0 + 3));
  PGF_ASSERT_OK(store_->RecordAgentHello(hello, kT0 + 4));
  PGF_ASSERT_OK_AND_ASSIGN(agent, store_->GetAgent("pg-1"));
  EXPECT_EQ(agent.last_error, "oops");

  EXPECT_TRUE(absl::IsNotFound(store_->RecordAgentConfigResult("ghost", 1, "x", "", kT0)));
}

TEST_P(StoreTest, Pins) {
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow v1,
                           store_->AddConfigVersion("prod", "one", "alice", "", kT0));
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow dev1,
                           store_->AddConfigVersion("dev", "one", "alice", "", kT0));
  PGF_ASSERT_OK(store_->RecordAgentHello(Hello("pg-1", "prod"), kT0));

  PGF_ASSERT_OK(store_->SetAgentPin("pg-1", v1.version));
  PGF_ASSERT_OK_AND_ASSIGN(AgentRow agent, store_->GetAgent("pg-1"));
  EXPECT_EQ(agent.pinned_version, std::optional<uint64_t>(v1.version));

  // A reconnect in the same environment keeps the pin.
  PGF_ASSERT_OK(store_->RecordAgentHello(Hello("pg-1", "prod"), kT0 + 1));
  PGF_ASSERT_OK_AND_ASSIGN(agent, store_->GetAgent("pg-1"));
  EXPECT_EQ(agent.pinned_version, std::optional<uint64_t>(v1.version));

  PGF_ASSERT_OK(store_->SetAgentPin("pg-1", std::nullopt));
  PGF_ASSERT_OK_AND_ASSIGN(agent, store_->GetAgent("pg-1"));
  EXPECT_FALSE(agent.pinned_version.has_value());

  EXPECT_TRUE(absl::IsNotFound(store_->SetAgentPin("pg-1", 999999)));
  EXPECT_TRUE(absl::IsInvalidArgument(store_->SetAgentPin("pg-1", dev1.version)));
  EXPECT_TRUE(absl::IsNotFound(store_->SetAgentPin("ghost", v1.version)));

  // Moving to another environment drops the pin (it named a version of the old one).
  PGF_ASSERT_OK(store_->SetAgentPin("pg-1", v1.version));
  PGF_ASSERT_OK(store_->RecordAgentHello(Hello("pg-1", "dev"), kT0 + 2));
  PGF_ASSERT_OK_AND_ASSIGN(agent, store_->GetAgent("pg-1"));
  EXPECT_EQ(agent.environment, "dev");
  EXPECT_FALSE(agent.pinned_version.has_value());
}

TEST_P(StoreTest, CommandsAndResults) {
  PGF_ASSERT_OK(store_->RecordAgentHello(Hello("pg-1", "prod"), kT0));
  PGF_ASSERT_OK(store_->RecordAgentHello(Hello("pg-2", "prod"), kT0));
  PGF_ASSERT_OK_AND_ASSIGN(
      uint64_t c1,
      store_->RecordCommand("pg-1", "pause", "db=appdb deadline=900s", "alice", kT0 + 1));
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t c2,
                           store_->RecordCommand("pg-2", "reload", "", "bob", kT0 + 2));
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t c3,
                           store_->RecordCommand("pg-1", "resume", "db=appdb", "alice", kT0 + 3));
  EXPECT_LT(c1, c2);
  EXPECT_LT(c2, c3);

  PGF_ASSERT_OK(store_->RecordCommandResult(c1, true, "", kT0 + 10));
  PGF_ASSERT_OK(store_->RecordCommandResult(c2, false, "timed out", kT0 + 11));
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->RecordCommandResult(c1, false, "x", kT0)));
  EXPECT_TRUE(absl::IsNotFound(store_->RecordCommandResult(424242, true, "", kT0)));

  PGF_ASSERT_OK_AND_ASSIGN(std::vector<CommandRow> all, store_->ListCommands("", 100));
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].id, c3);
  EXPECT_EQ(all[1].id, c2);
  EXPECT_EQ(all[2].id, c1);
  EXPECT_FALSE(all[0].ok.has_value());
  EXPECT_EQ(all[0].finished_unix_ms, 0);
  EXPECT_EQ(all[1].ok, std::optional<bool>(false));
  EXPECT_EQ(all[1].error, "timed out");
  EXPECT_EQ(all[1].finished_unix_ms, kT0 + 11);
  EXPECT_EQ(all[2].ok, std::optional<bool>(true));
  EXPECT_EQ(all[2].kind, "pause");
  EXPECT_EQ(all[2].args, "db=appdb deadline=900s");
  EXPECT_EQ(all[2].actor, "alice");
  EXPECT_EQ(all[2].agent_id, "pg-1");
  EXPECT_EQ(all[2].created_unix_ms, kT0 + 1);

  PGF_ASSERT_OK_AND_ASSIGN(std::vector<CommandRow> pg1, store_->ListCommands("pg-1", 100));
  ASSERT_EQ(pg1.size(), 2u);
  EXPECT_EQ(pg1[0].id, c3);
  EXPECT_EQ(pg1[1].id, c1);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<CommandRow> limited, store_->ListCommands("", 2));
  ASSERT_EQ(limited.size(), 2u);
  EXPECT_EQ(limited[0].id, c3);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<CommandRow> unlimited, store_->ListCommands("", 0));
  EXPECT_EQ(unlimited.size(), 3u);

  EXPECT_TRUE(absl::IsNotFound(store_->RecordCommand("ghost", "pause", "", "a", kT0).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(store_->RecordCommand("pg-1", "", "", "a", kT0).status()));
}

TEST_P(StoreTest, AuditNewestFirst) {
  for (int i = 0; i < 5; ++i) {
    PGF_ASSERT_OK(store_->Audit("alice", absl::StrCat("action", i), "prod", "details", kT0 + i));
  }
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<AuditEntry> entries, store_->ListAudit(3));
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[0].action, "action4");
  EXPECT_EQ(entries[1].action, "action3");
  EXPECT_EQ(entries[2].action, "action2");
  EXPECT_EQ(entries[0].unix_ms, kT0 + 4);
  EXPECT_EQ(entries[0].actor, "alice");
  EXPECT_EQ(entries[0].target, "prod");
  EXPECT_EQ(entries[0].details, "details");
  EXPECT_GT(entries[0].id, entries[1].id);
  PGF_ASSERT_OK_AND_ASSIGN(entries, store_->ListAudit(0));
  EXPECT_EQ(entries.size(), 5u);
  EXPECT_FALSE(store_->ExecForTesting("UPDATE audit_log SET actor = 'mallory'").ok());
}

TEST_P(StoreTest, MetricsDownsampledPerMinute) {
  PGF_ASSERT_OK(store_->RecordAgentHello(Hello("pg-1", "prod"), kT0));
  PGF_ASSERT_OK(store_->RecordAgentHello(Hello("pg-2", "prod"), kT0));

  // Two reports in the same minute: one row holding the newest.
  PGF_ASSERT_OK(store_->RecordMetrics("pg-1", kT0 + 5'000, "first"));
  PGF_ASSERT_OK(store_->RecordMetrics("pg-1", kT0 + 45'000, "second"));
  // A late report for an earlier moment of that minute does not win.
  PGF_ASSERT_OK(store_->RecordMetrics("pg-1", kT0 + 30'000, "late"));
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<MetricsSample> samples, store_->ListMetrics("pg-1", 0));
  ASSERT_EQ(samples.size(), 1u);
  EXPECT_EQ(samples[0].bucket_unix_ms, kT0);
  EXPECT_EQ(samples[0].report, "second");
  EXPECT_EQ(samples[0].agent_id, "pg-1");

  // Different minutes: separate rows, oldest first; binary reports round-trip.
  std::string binary("\x08\x00\x12\xff\x00", 5);
  PGF_ASSERT_OK(store_->RecordMetrics("pg-1", kT0 + kMinute + 1, binary));
  PGF_ASSERT_OK(store_->RecordMetrics("pg-1", kT0 + 3 * kMinute, "third"));
  PGF_ASSERT_OK(store_->RecordMetrics("pg-2", kT0 + 10, "other agent"));
  PGF_ASSERT_OK_AND_ASSIGN(samples, store_->ListMetrics("pg-1", 0));
  ASSERT_EQ(samples.size(), 3u);
  EXPECT_EQ(samples[0].bucket_unix_ms, kT0);
  EXPECT_EQ(samples[1].bucket_unix_ms, kT0 + kMinute);
  EXPECT_EQ(samples[1].report, binary);
  EXPECT_EQ(samples[2].bucket_unix_ms, kT0 + 3 * kMinute);

  PGF_ASSERT_OK_AND_ASSIGN(samples, store_->ListMetrics("pg-1", kT0 + kMinute));
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].bucket_unix_ms, kT0 + kMinute);

  PGF_ASSERT_OK(store_->PruneMetrics(kT0 + 2 * kMinute));
  PGF_ASSERT_OK_AND_ASSIGN(samples, store_->ListMetrics("pg-1", 0));
  ASSERT_EQ(samples.size(), 1u);
  EXPECT_EQ(samples[0].report, "third");
  PGF_ASSERT_OK_AND_ASSIGN(samples, store_->ListMetrics("pg-2", 0));
  EXPECT_TRUE(samples.empty()) << "pruned for every agent";

  EXPECT_TRUE(absl::IsNotFound(store_->RecordMetrics("ghost", kT0, "x")));
  PGF_ASSERT_OK_AND_ASSIGN(samples, store_->ListMetrics("ghost", 0));
  EXPECT_TRUE(samples.empty());
}

TEST_P(StoreTest, Tokens) {
  const std::string hash = Sha256Hex("s3cret-token");
  PGF_ASSERT_OK(store_->AddToken("ci", hash, Role::kOperator, kT0));
  PGF_ASSERT_OK_AND_ASSIGN(TokenRow token, store_->LookupToken(hash));
  EXPECT_EQ(token.name, "ci");
  EXPECT_EQ(token.role, Role::kOperator);
  EXPECT_EQ(token.created_unix_ms, kT0);

  std::string upper = hash;
  for (char& c : upper) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
  PGF_ASSERT_OK_AND_ASSIGN(token, store_->LookupToken(upper));
  EXPECT_EQ(token.name, "ci");

  PGF_ASSERT_OK(store_->AddToken("root", Sha256Hex("other"), Role::kAdmin, kT0));
  PGF_ASSERT_OK_AND_ASSIGN(token, store_->LookupToken(Sha256Hex("other")));
  EXPECT_EQ(token.role, Role::kAdmin);

  EXPECT_TRUE(absl::IsNotFound(store_->LookupToken(Sha256Hex("unknown")).status()));
  EXPECT_TRUE(absl::IsNotFound(store_->LookupToken("s3cret-token").status()));
  EXPECT_TRUE(absl::IsAlreadyExists(store_->AddToken("dup", hash, Role::kViewer, kT0)));
  EXPECT_TRUE(absl::IsInvalidArgument(store_->AddToken("raw", "s3cret-token", Role::kAdmin, kT0)))
      << "the raw token is never stored";
  EXPECT_TRUE(absl::IsInvalidArgument(store_->AddToken("", Sha256Hex("x"), Role::kAdmin, kT0)));
}

TEST_F(SqliteStoreTest, FullDiskIsAnErrorAndNothingIsHalfWritten) {
  PGF_ASSERT_OK(store_->AddConfigVersion("prod", "small", "alice", "", kT0));
  // Cap the file at its current size: the next write that needs a page fails with
  // SQLITE_FULL, like a full disk.
  PGF_ASSERT_OK(store_->ExecForTesting("PRAGMA max_page_count = 1"));  // Clamped to the size.
  const std::string big(256 * 1024, 'x');

  // A push to a new environment: the environment row and the version row go together.
  absl::StatusOr<ConfigVersionRow> failed =
      store_->AddConfigVersion("staging", big, "alice", "", kT0);
  ASSERT_FALSE(failed.ok());
  EXPECT_TRUE(absl::IsResourceExhausted(failed.status())) << failed.status();
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "full")) << failed.status();
  EXPECT_TRUE(absl::IsNotFound(store_->GetEnvironment("staging").status()))
      << "the environment insert was rolled back with the version";
  failed = store_->AddConfigVersion("prod", big, "alice", "", kT0);
  EXPECT_TRUE(absl::IsResourceExhausted(failed.status())) << failed.status();

  // The store keeps working once there is room again, with no trace of the failed pushes.
  PGF_ASSERT_OK(store_->ExecForTesting("PRAGMA max_page_count = 1073741823"));
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<ConfigVersionRow> prod, store_->ListConfigVersions("prod"));
  ASSERT_EQ(prod.size(), 1u);
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow ok,
                           store_->AddConfigVersion("prod", big, "alice", "", kT0));
  EXPECT_EQ(ok.parent_version, prod[0].version);
  PGF_ASSERT_OK_AND_ASSIGN(std::string integrity, store_->IntegrityCheck());
  EXPECT_EQ(integrity, "ok");
}

TEST_P(StoreTest, ConcurrentWritersAreSerialized) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < kPerThread; ++i) {
        PGF_EXPECT_OK(store_->Audit(absl::StrCat("t", t), "write", "", "", kT0 + i));
        PGF_EXPECT_OK(
            store_->AddConfigVersion(absl::StrCat("env", t), absl::StrCat(i), "a", "", kT0 + i));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<AuditEntry> entries, store_->ListAudit(0));
  EXPECT_EQ(entries.size(), static_cast<size_t>(kThreads * kPerThread));
  for (int t = 0; t < kThreads; ++t) {
    PGF_ASSERT_OK_AND_ASSIGN(std::vector<ConfigVersionRow> versions,
                             store_->ListConfigVersions(absl::StrCat("env", t)));
    ASSERT_EQ(versions.size(), static_cast<size_t>(kPerThread));
    for (size_t i = 0; i + 1 < versions.size(); ++i) {
      EXPECT_EQ(versions[i].parent_version, versions[i + 1].version);
    }
  }
}

}  // namespace
}  // namespace pgfleet::controller
