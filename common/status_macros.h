// Status propagation helpers. Debian 12's Abseil (20220623) ships none.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define PGF_STATUS_CONCAT_INNER(a, b) a##b
#define PGF_STATUS_CONCAT(a, b) PGF_STATUS_CONCAT_INNER(a, b)

// Returns from the current function if `expr` (an absl::Status) is not OK.
#define PGF_RETURN_IF_ERROR(expr)                 \
  do {                                            \
    if (absl::Status pgf_status_ = (expr); !pgf_status_.ok()) { \
      return pgf_status_;                         \
    }                                             \
  } while (0)

// `lhs` = value of `rexpr` (an absl::StatusOr<T>), or returns its status.
#define PGF_ASSIGN_OR_RETURN(lhs, rexpr) \
  PGF_ASSIGN_OR_RETURN_IMPL(PGF_STATUS_CONCAT(pgf_statusor_, __LINE__), lhs, rexpr)

#define PGF_ASSIGN_OR_RETURN_IMPL(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                              \
  if (!statusor.ok()) {                                 \
    return std::move(statusor).status();                \
  }                                                     \
  lhs = std::move(statusor).value()
