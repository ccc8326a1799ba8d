// Store tests that run against both of the store's databases: a SQLite file per test, and a
// fresh database per test in a real PostgreSQL 15 cluster (tests/testutil/postgres_env.h)
// started on a free port by the first PostgreSQL test of the binary and stopped after the last,
// or, under ctest, the one cluster tests/store_postgres_fixture.cc started for all of them
// ($PGFLEET_STORE_POSTGRES names the file with its port).
//
//   class MyTest : public StoreBackendTest {};
//   TEST_P(MyTest, Works) { store_->...; }
//   INSTANTIATE_TEST_SUITE_P(Backends, MyTest, ::testing::ValuesIn(AllStoreBackends()),
//                            StoreBackendName);
#pragma once

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controller/store/sqlite_store.h"
#include "gtest/gtest.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"

namespace pgfleet::controller {

enum class StoreBackend { kSqlite, kPostgres };

inline std::vector<StoreBackend> AllStoreBackends() {
  return {StoreBackend::kSqlite, StoreBackend::kPostgres};
}

inline std::string StoreBackendName(const ::testing::TestParamInfo<StoreBackend>& info) {
  return info.param == StoreBackend::kSqlite ? "Sqlite" : "Postgres";
}

// The binary's PostgreSQL cluster: started on first use, stopped when the tests end.
class StorePostgres : public ::testing::Environment {
 public:
  static testutil::PostgresEnv* Get() {
    if (cluster() == nullptr && std::getenv("PGFLEET_STORE_POSTGRES") != nullptr) {
      const std::string file = std::getenv("PGFLEET_STORE_POSTGRES");
      std::ifstream in(file);
      int port = 0;
      if (!(in >> port) || port <= 0) {
        ADD_FAILURE() << "$PGFLEET_STORE_POSTGRES: no port in " << file
                      << " (did the store_postgres_start fixture run?)";
        return nullptr;
      }
      cluster() = testutil::PostgresEnv::AttachRunning(port);
    }
    if (cluster() == nullptr) {
      absl::StatusOr<std::unique_ptr<testutil::PostgresEnv>> started =
          testutil::PostgresEnv::Start();
      if (!started.ok()) {
        ADD_FAILURE() << "starting PostgreSQL: " << started.status();
        return nullptr;
      }
      cluster() = std::move(*started);
    }
    return cluster().get();
  }
  void TearDown() override { cluster().reset(); }

 private:
  static std::unique_ptr<testutil::PostgresEnv>& cluster() {
    static auto* instance = new std::unique_ptr<testutil::PostgresEnv>();
    return *instance;
  }
};

// Registered once per binary (an inline variable), so the cluster stops after the last test.
inline ::testing::Environment* const kStorePostgresEnvironment =
    ::testing::AddGlobalTestEnvironment(new StorePostgres);

// A fresh database, in its own SQLite file or its own PostgreSQL database.
class StoreBackendBase : public ::testing::Test {
 protected:
  virtual StoreBackend backend() const = 0;

  void SetUp() override {
    const absl::Status created = temp_dir_.Create("pgfleet_store");
    ASSERT_TRUE(created.ok()) << created;
    dir_ = temp_dir_.path();
    path_ = dir_ + "/controller.db";
    if (backend() == StoreBackend::kPostgres) {
      testutil::PostgresEnv* pg = StorePostgres::Get();
      ASSERT_NE(pg, nullptr);
      static std::atomic<int> counter{0};
      database_ = absl::StrCat("store_", getpid(), "_", counter++);
      PGF_ASSERT_OK(pg->CreateDatabase(database_));
      // A URI, as --db takes it.
      path_ = absl::StrCat("postgresql://", pg->options().superuser, ":",
                           pg->options().superuser_password, "@127.0.0.1:", pg->port(), "/",
                           database_, "?sslmode=disable");
    }
    if (open_in_set_up_) Reopen();
  }
  void TearDown() override {
    store_.reset();
    if (!database_.empty() && StorePostgres::Get() != nullptr) {
      (void)StorePostgres::Get()->Exec(
          absl::StrCat("DROP DATABASE IF EXISTS ", database_, " WITH (FORCE)"));
    }
  }

  // Opens another store on this test's database.
  absl::StatusOr<std::unique_ptr<SqliteStore>> OpenAgain(
      const std::vector<Migration>& migrations = SqliteStore::EmbeddedMigrations()) {
    if (backend() == StoreBackend::kPostgres) {
      return SqliteStore::OpenPostgresWithMigrations(path_, migrations);
    }
    return SqliteStore::OpenWithMigrations(path_, migrations);
  }
  void Reopen() {
    store_.reset();
    absl::StatusOr<std::unique_ptr<SqliteStore>> store = OpenAgain();
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(store).value();
  }

  bool open_in_set_up_ = true;  // false: the test opens store_ (Reopen, OpenAgain) itself.
  testutil::TempDir temp_dir_;  // Declared first: removed after the store closes.
  std::string dir_;
  std::string path_;      // The SQLite file, or the PostgreSQL URI (what --db takes).
  std::string database_;  // PostgreSQL: this test's database.
  std::unique_ptr<SqliteStore> store_;
};

class StoreBackendTest : public StoreBackendBase,
                         public ::testing::WithParamInterface<StoreBackend> {
 protected:
  StoreBackend backend() const override { return GetParam(); }
};

}  // namespace pgfleet::controller
