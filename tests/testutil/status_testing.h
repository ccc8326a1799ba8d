// gtest helpers for absl::Status / absl::StatusOr (Debian's Abseil ships no status matchers).
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace pgfleet::testutil {

inline const absl::Status& StatusOf(const absl::Status& status) { return status; }
template <typename T>
const absl::Status& StatusOf(const absl::StatusOr<T>& status_or) {
  return status_or.status();
}

}  // namespace pgfleet::testutil

#define PGF_TESTUTIL_CONCAT_INNER(a, b) a##b
#define PGF_TESTUTIL_CONCAT(a, b) PGF_TESTUTIL_CONCAT_INNER(a, b)

#define PGF_ASSERT_OK(expr)                                                   \
  do {                                                                        \
    const auto& pgf_assert_value_ = (expr);                                   \
    ASSERT_TRUE(::pgfleet::testutil::StatusOf(pgf_assert_value_).ok())        \
        << #expr << ": " << ::pgfleet::testutil::StatusOf(pgf_assert_value_); \
  } while (0)

#define PGF_EXPECT_OK(expr)                                                   \
  do {                                                                        \
    const auto& pgf_expect_value_ = (expr);                                   \
    EXPECT_TRUE(::pgfleet::testutil::StatusOf(pgf_expect_value_).ok())        \
        << #expr << ": " << ::pgfleet::testutil::StatusOf(pgf_expect_value_); \
  } while (0)

// `lhs = value of rexpr`, or a fatal test failure showing the status.
#define PGF_ASSERT_OK_AND_ASSIGN(lhs, rexpr) \
  PGF_ASSERT_OK_AND_ASSIGN_IMPL(PGF_TESTUTIL_CONCAT(pgf_statusor_, __LINE__), lhs, rexpr)
#define PGF_ASSERT_OK_AND_ASSIGN_IMPL(statusor, lhs, rexpr)          \
  auto statusor = (rexpr);                                           \
  ASSERT_TRUE(statusor.ok()) << #rexpr << ": " << statusor.status(); \
  lhs = std::move(statusor).value()
