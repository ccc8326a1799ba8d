// Polling with a deadline: the only way tests wait for something to happen.
#pragma once

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pgfleet::testutil {

// Calls `condition` until it returns true (Ok), returns an error (that error), or `timeout`
// passes (DeadlineExceeded naming `what` and the last non-fatal note). Between calls it sleeps
// `interval`. `condition` may set *note to describe the state it saw, for the timeout message.
absl::Status PollUntil(const std::function<absl::StatusOr<bool>(std::string* note)>& condition,
                       absl::Duration timeout, const std::string& what,
                       absl::Duration interval = absl::Milliseconds(20));

}  // namespace pgfleet::testutil
