// Multi-host databases: the [databases] host/port list forms and load_balance_hosts
// (common/config), and the choice of host for a new server connection (agent/host_list.h).
#include "agent/host_list.h"

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgfleet {
namespace {

using agent::ChooseHost;
using agent::HostBackoff;
using agent::HostHealth;
using agent::HostPick;
using agent::PickHost;
using config::Config;
using config::DatabaseConfig;
using config::LoadBalanceHosts;
using config::ServerEndpoint;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

absl::StatusOr<Config> ParseDb(const std::string& value) {
  return config::ParseConfig(absl::StrCat("[pgbouncer]\n[databases]\ndb = ", value, "\n"),
                             "test.ini");
}

DatabaseConfig MustParseDb(const std::string& value) {
  absl::StatusOr<Config> config = ParseDb(value);
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return DatabaseConfig();
  EXPECT_THAT(config->warnings, IsEmpty());
  return config->databases.at("db");
}

std::string ParseDbError(const std::string& value) {
  absl::StatusOr<Config> config = ParseDb(value);
  EXPECT_FALSE(config.ok()) << value;
  return config.ok() ? "" : std::string(config.status().message());
}

// ---- [databases] host and port lists.

TEST(HostListConfigTest, OneHostIsOneEndpoint) {
  DatabaseConfig db = MustParseDb("host=10.0.0.1 port=6000");
  EXPECT_THAT(config::Endpoints(db), ElementsAre(ServerEndpoint{"10.0.0.1", 6000}));
  EXPECT_EQ(config::ServerAddress(db), "10.0.0.1:6000");
  // No host: PgBouncer's default unix socket.
  DatabaseConfig local = MustParseDb("dbname=x");
  EXPECT_THAT(config::Endpoints(local), ElementsAre(ServerEndpoint{"", 5432}));
  EXPECT_EQ(config::ServerAddress(local), "/var/run/postgresql/.s.PGSQL.5432");
}

TEST(HostListConfigTest, HostListWithOnePortForAll) {
  DatabaseConfig db = MustParseDb("host=10.0.0.1,db2.internal,/tmp port=6000");
  // SHOW DATABASES shows the list as written.
  EXPECT_EQ(db.host, "10.0.0.1,db2.internal,/tmp");
  EXPECT_EQ(db.port, 6000);
  EXPECT_THAT(config::Endpoints(db),
              ElementsAre(ServerEndpoint{"10.0.0.1", 6000}, ServerEndpoint{"db2.internal", 6000},
                          ServerEndpoint{"/tmp", 6000}));
  EXPECT_EQ(config::EndpointAddress({"/tmp", 6000}), "/tmp/.s.PGSQL.6000");
  EXPECT_EQ(config::EndpointAddress({"db2.internal", 6000}), "db2.internal:6000");
}

TEST(HostListConfigTest, PortListPairsWithHostListInOrder) {
  // Either order of the two parameters.
  for (const char* value :
       {"host=127.0.0.1,127.0.0.1 port=6001,6002", "port=6001,6002 host=127.0.0.1,127.0.0.1"}) {
    DatabaseConfig db = MustParseDb(value);
    EXPECT_EQ(db.port, 6001) << value;
    EXPECT_THAT(config::Endpoints(db),
                ElementsAre(ServerEndpoint{"127.0.0.1", 6001}, ServerEndpoint{"127.0.0.1", 6002}))
        << value;
  }
}

TEST(HostListConfigTest, MalformedListsAreRefusedNamingTheProblem) {
  EXPECT_THAT(ParseDbError("host=a,b,c port=1,2"),
              HasSubstr("database 'db': 2 ports for 3 hosts (give one port, or one per host)"));
  EXPECT_THAT(ParseDbError("port=1,2"),
              HasSubstr("database 'db': 2 ports for 1 host (give one port, or one per host)"));
  EXPECT_THAT(ParseDbError("host=a,,b"),
              HasSubstr("database 'db': key 'host': empty host in the list 'a,,b'"));
  EXPECT_THAT(ParseDbError("host=a, port=1"), HasSubstr("empty host in the list 'a,'"));
  EXPECT_THAT(ParseDbError("host=a,b port=1,x"),
              HasSubstr("database 'db': key 'port': invalid integer 'x'"));
  EXPECT_THAT(ParseDbError("host=a,b port=1,70000"),
              HasSubstr("key 'port': invalid value '70000': must be between 1 and 65535"));
}

TEST(HostListConfigTest, LoadBalanceHostsIsAPerDatabaseSetting) {
  EXPECT_EQ(MustParseDb("host=a,b").load_balance_hosts, LoadBalanceHosts::kRoundRobin);
  EXPECT_EQ(MustParseDb("host=a,b load_balance_hosts=disable").load_balance_hosts,
            LoadBalanceHosts::kDisable);
  EXPECT_EQ(MustParseDb("host=a,b load_balance_hosts=round-robin").load_balance_hosts,
            LoadBalanceHosts::kRoundRobin);
  EXPECT_EQ(config::FindUnsupportedSetting("databases", "load_balance_hosts"), nullptr);
  EXPECT_THAT(ParseDbError("host=a,b load_balance_hosts=random"),
              HasSubstr("key 'load_balance_hosts': invalid value 'random' (expected round-robin or "
                        "disable)"));
  EXPECT_STREQ(config::LoadBalanceHostsName(LoadBalanceHosts::kDisable), "disable");
  EXPECT_STREQ(config::LoadBalanceHostsName(LoadBalanceHosts::kRoundRobin), "round-robin");
}

TEST(HostListConfigTest, ConnectionBudgetCountsEveryHostOfAList) {
  absl::StatusOr<Config> config = config::ParseConfig(
      "[pgbouncer]\ndefault_pool_size = 20\n[databases]\n"
      "f = host=h1,h2 port=1,2 user=u pool_size=3\n",
      "test.ini");
  ASSERT_TRUE(config.ok()) << config.status();
  std::map<std::string, int> budget = config::MaxServerConnectionsByAddress(*config);
  EXPECT_EQ(budget.at("h1:1"), 3);
  EXPECT_EQ(budget.at("h2:2"), 3);
  EXPECT_EQ(budget.size(), 2u);
}

// ---- The choice.

TEST(ChooseHostTest, RoundRobinTakesTurnsAndSkipsUnusableHosts) {
  size_t cursor = 0;
  std::vector<size_t> picks;
  for (int i = 0; i < 6; ++i) {
    picks.push_back(*ChooseHost(LoadBalanceHosts::kRoundRobin, {true, true, true}, cursor));
  }
  EXPECT_THAT(picks, ElementsAre(0, 1, 2, 0, 1, 2));

  picks.clear();
  for (int i = 0; i < 4; ++i) {
    picks.push_back(*ChooseHost(LoadBalanceHosts::kRoundRobin, {true, false, true}, cursor));
  }
  EXPECT_THAT(picks, ElementsAre(0, 2, 0, 2));
  EXPECT_EQ(ChooseHost(LoadBalanceHosts::kRoundRobin, {false, false}, cursor), std::nullopt);
}

TEST(ChooseHostTest, DisableStaysOnOneHostUntilItFails) {
  size_t cursor = 0;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(ChooseHost(LoadBalanceHosts::kDisable, {true, true, true}, cursor), 0u);
  }
  // The first host failed: the next one, and it stays there even once the first is back
  // (PgBouncer: "continues using the same host entry until a connection fails").
  EXPECT_EQ(ChooseHost(LoadBalanceHosts::kDisable, {false, true, true}, cursor), 1u);
  EXPECT_EQ(ChooseHost(LoadBalanceHosts::kDisable, {true, true, true}, cursor), 1u);
  EXPECT_EQ(ChooseHost(LoadBalanceHosts::kDisable, {true, false, false}, cursor), 0u);
  EXPECT_EQ(ChooseHost(LoadBalanceHosts::kDisable, {false, false, false}, cursor), std::nullopt);
}

TEST(HostBackoffTest, DoublesFromServerLoginRetryUpToFourTimesIt) {
  const absl::Duration retry = absl::Seconds(15);
  EXPECT_EQ(HostBackoff(1, retry), absl::Seconds(15));
  EXPECT_EQ(HostBackoff(2, retry), absl::Seconds(30));
  EXPECT_EQ(HostBackoff(3, retry), absl::Seconds(60));
  EXPECT_EQ(HostBackoff(4, retry), absl::Seconds(60));
  EXPECT_EQ(HostBackoff(1000, retry), absl::Seconds(60));
}

constexpr uint64_t kSecond = 1000000;

TEST(HostHealthTest, AFailedHostIsOutForItsBackoffThenOneProbeFindsOut) {
  HostHealth health;
  const absl::Duration retry = absl::Seconds(1);
  EXPECT_TRUE(health.Usable("a:1", 0));
  EXPECT_EQ(health.MarkFailed("a:1", /*server_id=*/7, 10 * kSecond, retry), absl::Seconds(1));
  EXPECT_FALSE(health.Usable("a:1", 10 * kSecond));
  EXPECT_FALSE(health.Usable("a:1", 11 * kSecond - 1));
  EXPECT_TRUE(health.Usable("a:1", 11 * kSecond));
  EXPECT_TRUE(health.Usable("b:1", 10 * kSecond));

  // A connection started before the host went down fails too: no longer backoff for it.
  EXPECT_EQ(health.MarkFailed("a:1", 8, 10 * kSecond + 5, retry),
            absl::Seconds(1) - absl::Microseconds(5));
  EXPECT_EQ(health.Find("a:1")->failures, 1);

  // One probe at a time.
  health.BeginProbe("a:1", 9);
  EXPECT_FALSE(health.Usable("a:1", 12 * kSecond));
  // The probe failed: twice as long.
  EXPECT_EQ(health.MarkFailed("a:1", 9, 12 * kSecond, retry), absl::Seconds(2));
  EXPECT_EQ(health.Find("a:1")->failures, 2);
  EXPECT_FALSE(health.Usable("a:1", 14 * kSecond - 1));
  EXPECT_TRUE(health.Usable("a:1", 14 * kSecond));

  // A probe that went away without an answer lets another one try.
  health.BeginProbe("a:1", 10);
  EXPECT_FALSE(health.Usable("a:1", 14 * kSecond));
  health.EndProbe("a:1", /*server_id=*/11);  // Not the probe: nothing changes.
  EXPECT_FALSE(health.Usable("a:1", 14 * kSecond));
  health.EndProbe("a:1", 10);
  EXPECT_TRUE(health.Usable("a:1", 14 * kSecond));

  EXPECT_TRUE(health.MarkUp("a:1"));
  EXPECT_EQ(health.Find("a:1"), nullptr);
  EXPECT_FALSE(health.MarkUp("a:1"));
  EXPECT_TRUE(health.Usable("a:1", 14 * kSecond));
}

TEST(PickHostTest, OneHostIsAlwaysThatHost) {
  HostHealth health;
  size_t cursor = 0;
  const std::vector<ServerEndpoint> one = {{"h", 5432}};
  health.MarkFailed("h:5432", 1, 0, absl::Seconds(15));
  HostPick pick = PickHost(one, LoadBalanceHosts::kRoundRobin, cursor, health, 2, 1);
  EXPECT_EQ(pick.endpoint, (ServerEndpoint{"h", 5432}));
  EXPECT_EQ(pick.address, "h:5432");
  EXPECT_FALSE(pick.probe);
}

TEST(PickHostTest, ADownHostIsSkippedThenProbedOnceItsBackoffIsOver) {
  HostHealth health;
  size_t cursor = 0;
  const std::vector<ServerEndpoint> hosts = {{"a", 1}, {"b", 2}};
  auto pick = [&](uint64_t server_id, uint64_t now) {
    return PickHost(hosts, LoadBalanceHosts::kRoundRobin, cursor, health, server_id, now);
  };
  EXPECT_EQ(pick(1, 0).address, "a:1");
  EXPECT_EQ(pick(2, 0).address, "b:2");
  health.MarkFailed("b:2", 2, 0, absl::Seconds(1));
  for (uint64_t id = 3; id < 7; ++id) {
    HostPick p = pick(id, kSecond / 2);
    EXPECT_EQ(p.address, "a:1");
    EXPECT_FALSE(p.probe);
  }
  // Backoff over: the next turn of b is its probe, and only that one.
  std::vector<std::string> addresses;
  bool probed = false;
  for (uint64_t id = 7; id < 11; ++id) {
    HostPick p = pick(id, kSecond);
    addresses.push_back(p.address);
    if (p.probe) {
      EXPECT_EQ(p.address, "b:2");
      EXPECT_FALSE(probed);
      probed = true;
    }
  }
  EXPECT_TRUE(probed);
  EXPECT_EQ(std::count(addresses.begin(), addresses.end(), "b:2"), 1);
  EXPECT_TRUE(health.MarkUp("b:2"));
  EXPECT_NE(pick(11, kSecond).address, pick(12, kSecond).address);
}

TEST(PickHostTest, AllHostsDownStillRotatesAndProbes) {
  HostHealth health;
  size_t cursor = 0;
  const std::vector<ServerEndpoint> hosts = {{"a", 1}, {"b", 2}};
  health.MarkFailed("a:1", 1, 0, absl::Seconds(10));
  health.MarkFailed("b:2", 2, 0, absl::Seconds(10));
  HostPick first = PickHost(hosts, LoadBalanceHosts::kDisable, cursor, health, 3, 1);
  EXPECT_TRUE(first.probe);
  HostPick second = PickHost(hosts, LoadBalanceHosts::kDisable, cursor, health, 4, 1);
  EXPECT_EQ(second.address, first.address);  // disable: same host...
  EXPECT_FALSE(second.probe);                // ...whose probe is already out.
  // The probe's success brings it back.
  EXPECT_TRUE(health.MarkUp(first.address));
  EXPECT_TRUE(health.Usable(first.address, 1));
  EXPECT_THAT(health.Find(first.address), ::testing::IsNull());
  EXPECT_THAT(health.Find(first.address == "a:1" ? "b:2" : "a:1"), Not(::testing::IsNull()));
}

}  // namespace
}  // namespace pgfleet
