// --metrics-listen parsing: the endpoint lists every database and user, so an address without
// a host must stay on this machine.
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "agent/metrics/metrics_server.h"
#include "gtest/gtest.h"

namespace pgfleet::agent {
namespace {

struct ListenCase {
  std::string flag;
  std::string host;
  int port;
};

TEST(MetricsListenTest, HostDefaultsToLoopback) {
  for (const ListenCase& c :
       {ListenCase{"9127", "127.0.0.1", 9127}, ListenCase{":9127", "127.0.0.1", 9127},
        ListenCase{"localhost:9127", "127.0.0.1", 9127}, ListenCase{"127.0.0.1:0", "127.0.0.1", 0},
        ListenCase{"*:9127", "0.0.0.0", 9127}, ListenCase{"0.0.0.0:9127", "0.0.0.0", 9127},
        ListenCase{"10.1.2.3:80", "10.1.2.3", 80}, ListenCase{"[::1]:9127", "::1", 9127}}) {
    absl::StatusOr<MetricsListenAddress> address = ParseMetricsListen(c.flag);
    ASSERT_TRUE(address.ok()) << c.flag << ": " << address.status();
    EXPECT_EQ(address->host, c.host) << c.flag;
    EXPECT_EQ(address->port, c.port) << c.flag;
  }
}

TEST(MetricsListenTest, BadAddressesNameTheFlagValue) {
  for (const std::string flag : {"", ":", "host:", "127.0.0.1:65536", "127.0.0.1:-1", "9127x",
                                 "::1:9127", "127.0.0.1:port"}) {
    absl::StatusOr<MetricsListenAddress> address = ParseMetricsListen(flag);
    ASSERT_FALSE(address.ok()) << "'" << flag << "' was accepted as " << address->host << ":"
                               << address->port;
    EXPECT_EQ(address.status().code(), absl::StatusCode::kInvalidArgument) << flag;
    EXPECT_TRUE(absl::StrContains(address.status().message(), "'" + flag + "'"))
        << address.status();
  }
}

}  // namespace
}  // namespace pgfleet::agent
