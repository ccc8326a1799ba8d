#include "agent/auth_failure_limiter.h"

#include <gtest/gtest.h>

#include <string>

namespace pgfleet::agent {
namespace {

constexpr int kBurst = 3;
const absl::Duration kMaxDelay = absl::Milliseconds(500);
const absl::Time kStart = absl::FromUnixSeconds(1'800'000'000);

TEST(AuthFailureLimiterTest, BurstIsAnsweredAtOnceAndLogged) {
  AuthFailureLimiter limiter;
  for (int i = 1; i <= kBurst; ++i) {
    const auto decision = limiter.OnFailure("10.0.0.1", kStart, kBurst, kMaxDelay);
    EXPECT_EQ(decision.delay, absl::ZeroDuration()) << "failure " << i;
    EXPECT_TRUE(decision.log);
    EXPECT_FALSE(decision.throttling_started);
    EXPECT_EQ(decision.failures_in_window, static_cast<uint64_t>(i));
  }
  EXPECT_EQ(limiter.delayed_total(), 0u);
}

TEST(AuthFailureLimiterTest, PastTheBurstDelaysDoubleUpToTheCapAndGoUnlogged) {
  AuthFailureLimiter limiter;
  for (int i = 0; i < kBurst; ++i) limiter.OnFailure("10.0.0.1", kStart, kBurst, kMaxDelay);
  const auto first = limiter.OnFailure("10.0.0.1", kStart, kBurst, kMaxDelay);
  EXPECT_EQ(first.delay, AuthFailureLimiter::kFirstDelay);
  EXPECT_FALSE(first.log);
  EXPECT_TRUE(first.throttling_started);
  const auto second = limiter.OnFailure("10.0.0.1", kStart, kBurst, kMaxDelay);
  EXPECT_EQ(second.delay, 2 * AuthFailureLimiter::kFirstDelay);
  EXPECT_FALSE(second.throttling_started) << "announced once per window";
  absl::Duration last;
  for (int i = 0; i < 20; ++i)
    last = limiter.OnFailure("10.0.0.1", kStart, kBurst, kMaxDelay).delay;
  EXPECT_EQ(last, kMaxDelay);
  EXPECT_EQ(limiter.failures_total(), static_cast<uint64_t>(kBurst + 22));
  EXPECT_EQ(limiter.delayed_total(), 22u);
}

TEST(AuthFailureLimiterTest, AddressesAreCountedApart) {
  AuthFailureLimiter limiter;
  for (int i = 0; i < kBurst + 2; ++i) limiter.OnFailure("10.0.0.1", kStart, kBurst, kMaxDelay);
  const auto other = limiter.OnFailure("10.0.0.2", kStart, kBurst, kMaxDelay);
  EXPECT_EQ(other.delay, absl::ZeroDuration());
  EXPECT_TRUE(other.log);
  EXPECT_EQ(limiter.tracked_addresses(), 2u);
}

TEST(AuthFailureLimiterTest, WindowEndsAfterAMinuteAndReportsWhatWentUnlogged) {
  AuthFailureLimiter limiter;
  for (int i = 0; i < kBurst + 4; ++i) limiter.OnFailure("10.0.0.1", kStart, kBurst, kMaxDelay);
  limiter.OnFailure("10.0.0.2", kStart + absl::Seconds(30), kBurst, kMaxDelay);

  EXPECT_TRUE(limiter.Expire(kStart + absl::Seconds(59)).empty());
  const auto unlogged = limiter.Expire(kStart + AuthFailureLimiter::kWindow);
  ASSERT_EQ(unlogged.size(), 1u);
  EXPECT_EQ(unlogged[0].address, "10.0.0.1");
  EXPECT_EQ(unlogged[0].failures, 4u);
  EXPECT_EQ(limiter.tracked_addresses(), 1u) << "10.0.0.2's window is still open";

  const auto fresh =
      limiter.OnFailure("10.0.0.1", kStart + AuthFailureLimiter::kWindow, kBurst, kMaxDelay);
  EXPECT_EQ(fresh.delay, absl::ZeroDuration());
  EXPECT_EQ(fresh.failures_in_window, 1u);
}

TEST(AuthFailureLimiterTest, AWindowEndingBeforeTheJanitorRanStillReportsItsCount) {
  AuthFailureLimiter limiter;
  for (int i = 0; i < kBurst + 2; ++i) limiter.OnFailure("10.0.0.1", kStart, kBurst, kMaxDelay);
  const auto next = limiter.OnFailure("10.0.0.1", kStart + absl::Seconds(61), kBurst, kMaxDelay);
  EXPECT_EQ(next.unlogged_in_previous_window, 2u);
  EXPECT_EQ(next.delay, absl::ZeroDuration());
}

TEST(AuthFailureLimiterTest, BurstZeroTurnsItOff) {
  AuthFailureLimiter limiter;
  for (int i = 0; i < 50; ++i) {
    const auto decision = limiter.OnFailure("10.0.0.1", kStart, /*burst=*/0, kMaxDelay);
    EXPECT_EQ(decision.delay, absl::ZeroDuration());
    EXPECT_TRUE(decision.log);
  }
  EXPECT_EQ(limiter.tracked_addresses(), 0u);
  EXPECT_EQ(limiter.failures_total(), 50u);
}

TEST(AuthFailureLimiterTest, MemoryIsBoundedByForgettingTheOldestWindow) {
  AuthFailureLimiter limiter;
  for (size_t i = 0; i < AuthFailureLimiter::kMaxAddresses + 10; ++i) {
    limiter.OnFailure("10.1." + std::to_string(i), kStart + absl::Milliseconds(i), kBurst,
                      kMaxDelay);
  }
  EXPECT_EQ(limiter.tracked_addresses(), AuthFailureLimiter::kMaxAddresses);
  // The newest address is remembered, the oldest forgotten.
  EXPECT_EQ(limiter
                .OnFailure("10.1." + std::to_string(AuthFailureLimiter::kMaxAddresses + 9),
                           kStart + absl::Seconds(1), kBurst, kMaxDelay)
                .failures_in_window,
            2u);
  EXPECT_EQ(
      limiter.OnFailure("10.1.0", kStart + absl::Seconds(1), kBurst, kMaxDelay).failures_in_window,
      1u);
}

TEST(PeerAddressWithoutPortTest, StripsThePort) {
  EXPECT_EQ(PeerAddressWithoutPort("127.0.0.1:54321"), "127.0.0.1");
  EXPECT_EQ(PeerAddressWithoutPort("[::1]:5432"), "::1");
  EXPECT_EQ(PeerAddressWithoutPort("fe80::1"), "fe80::1");
  EXPECT_EQ(PeerAddressWithoutPort("unix"), "unix");
}

}  // namespace
}  // namespace pgfleet::agent
