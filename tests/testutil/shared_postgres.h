// One throwaway PostgreSQL cluster for a whole integration-test binary, as a gtest global
// environment: started before the first test, prepared by `prepare` (roles, databases), stopped
// after the last.
#pragma once

#include <functional>
#include <memory>
#include <utility>

#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "tests/testutil/postgres_env.h"
#include "common/status_macros.h"
#include "tests/testutil/status_testing.h"

namespace pgfleet::testutil {

class SharedPostgres : public ::testing::Environment {
 public:
  // `*global` points at the running cluster between SetUp and TearDown.
  SharedPostgres(PostgresOptions options, std::function<absl::Status(PostgresEnv&)> prepare,
                 PostgresEnv** global)
      : options_(std::move(options)), prepare_(std::move(prepare)), global_(global) {}

  void SetUp() override {
    PGF_ASSERT_OK_AND_ASSIGN(pg_, PostgresEnv::Start(options_));
    PGF_ASSERT_OK(prepare_(*pg_));
    *global_ = pg_.get();
  }
  void TearDown() override {
    *global_ = nullptr;
    pg_.reset();
  }

 private:
  PostgresOptions options_;
  std::function<absl::Status(PostgresEnv&)> prepare_;
  PostgresEnv** global_;
  std::unique_ptr<PostgresEnv> pg_;
};

}  // namespace pgfleet::testutil
