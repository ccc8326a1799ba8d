// Where the controller's engines get the time. Production uses the wall clock; unit tests use
// a fake one they move by hand, so a 60 s bake takes no time at all.
#pragma once

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace pgfleet::controller {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
};

class SystemClock final : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

inline int64_t UnixMillis(absl::Time time) { return absl::ToUnixMillis(time); }

}  // namespace pgfleet::controller
