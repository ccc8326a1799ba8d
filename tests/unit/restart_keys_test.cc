// The restart-only table (common/config/restart_keys.h): which keys a reload keeps at their
// running value, and that everything else in the new config is left as loaded.
#include "common/config/restart_keys.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/config/config.h"

namespace pgfleet::config {
namespace {

Config Parse(const std::string& pgbouncer_section) {
  absl::StatusOr<Config> config =
      ParseConfig(absl::StrCat("[databases]\n[pgbouncer]\n", pgbouncer_section), "test.ini");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : Config{};
}

TEST(RestartKeysTest, ListenersAreLiveAndEveryRestartOnlyKeyIsAConfigKeyWithAReason) {
  for (const char* live : {"listen_addr", "listen_port", "unix_socket_dir", "stats_period",
                           "logfile", "max_client_conn", "client_tls_cert_file"}) {
    EXPECT_FALSE(IsRestartOnly(live)) << live;
  }
  ASSERT_FALSE(RestartOnlyKeys().empty());
  std::vector<std::string> described;
  for (const ConfigEntry& entry : DescribeConfig(Config{})) described.push_back(entry.key);
  for (const RestartOnlyKey& key : RestartOnlyKeys()) {
    EXPECT_FALSE(key.reason.empty()) << key.key;
    EXPECT_NE(std::find(described.begin(), described.end(), key.key), described.end())
        << key.key << " is not a [pgbouncer] key SHOW CONFIG knows";
    EXPECT_TRUE(IsRestartOnly(key.key));
  }
}

TEST(RestartKeysTest, ChangedRestartOnlyKeysKeepTheRunningValueAndAreReported) {
  const Config running = Parse("listen_port = 6432\npidfile = /run/a.pid\ndefault_pool_size = 5\n");
  Config loaded = Parse("listen_port = 7000\npidfile = /run/b.pid\ndefault_pool_size = 9\n");
  EXPECT_EQ(KeepRestartOnlyValues(running, loaded), std::vector<std::string>{"pidfile"});
  EXPECT_EQ(loaded.pidfile, "/run/a.pid");
  EXPECT_EQ(loaded.Where("pidfile"), running.Where("pidfile"));
  EXPECT_EQ(loaded.listen_port, 7000);  // Live: applied by the reload itself.
  EXPECT_EQ(loaded.default_pool_size, 9);
  EXPECT_EQ(RestartPendingText({"pidfile", "x"}), "restart pending: pidfile, x");
  EXPECT_EQ(RestartPendingText({}), "");

  Config same = Parse("pidfile = /run/a.pid\ndefault_pool_size = 3\n");
  EXPECT_TRUE(KeepRestartOnlyValues(running, same).empty());
}

TEST(RestartKeysTest, UserIsRestartOnlyAndListenBacklogIsLive) {
  // Root is given up once at start; the listeners take a new backlog on reload.
  const Config running = Parse("user = postgres\nlisten_backlog = 128\n");
  Config loaded = Parse("user = nobody\nlisten_backlog = 16\n");
  EXPECT_EQ(KeepRestartOnlyValues(running, loaded), std::vector<std::string>{"user"});
  EXPECT_EQ(loaded.run_as_user, "postgres");
  EXPECT_EQ(loaded.listen_backlog, 16);
}

}  // namespace
}  // namespace pgfleet::config
