#include "tests/testutil/wait.h"

#include "absl/strings/str_cat.h"

namespace pgfleet::testutil {

absl::Status PollUntil(const std::function<absl::StatusOr<bool>(std::string* note)>& condition,
                       absl::Duration timeout, const std::string& what, absl::Duration interval) {
  const absl::Time deadline = absl::Now() + timeout;
  std::string note;
  while (true) {
    absl::StatusOr<bool> done = condition(&note);
    if (!done.ok()) return done.status();
    if (*done) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("timed out after ", absl::FormatDuration(timeout), " waiting for ", what,
                       note.empty() ? "" : absl::StrCat(" (last seen: ", note, ")")));
    }
    absl::SleepFor(interval);
  }
}

}  // namespace pgfleet::testutil
