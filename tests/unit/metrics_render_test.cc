// RenderPrometheusMetrics against a real Agent built from a temporary pgbouncer.ini (no
// sockets: pools only connect when a client asks), and MetricsServer end to end over
// loopback with the loop pumped by hand.
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "agent/agent.h"
#include "agent/metrics/metrics_server.h"
#include "agent/pool.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"

namespace pgfleet::agent {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  std::string value;
};

struct Family {
  std::string type;
  int help_count = 0;
  int type_count = 0;
  std::vector<Sample> samples;
};

bool IsMetricNameChar(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

// Parses exposition format 0.0.4 strictly enough to catch what Prometheus would reject;
// records a test failure for each bad line.
class Exposition {
 public:
  explicit Exposition(const std::string& text) { Parse(text); }

  const std::map<std::string, Family>& families() const { return families_; }

 private:
  void Parse(const std::string& text) {
    ASSERT_FALSE(text.empty());
    ASSERT_EQ(text.back(), '\n') << "output must end with a newline";
    std::string current;  // Family whose samples are being read.
    std::set<std::string> finished;
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
      if (line.front() == '#') {
        std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(' ', 3));
        if (parts.size() < 3 || (parts[1] != "HELP" && parts[1] != "TYPE")) continue;
        const std::string& name = parts[2];
        if (name != current) {
          EXPECT_FALSE(finished.contains(name)) << "family split: " << name;
          if (!current.empty()) finished.insert(current);
          current = name;
        }
        Family& family = families_[name];
        if (parts[1] == "HELP") {
          family.help_count++;
          EXPECT_EQ(parts.size(), 4u) << "HELP without text: " << line;
        } else {
          family.type_count++;
          ASSERT_EQ(parts.size(), 4u) << line;
          family.type = parts[3];
          EXPECT_TRUE(family.type == "gauge" || family.type == "counter") << line;
          EXPECT_TRUE(family.samples.empty()) << "TYPE after samples: " << line;
        }
        continue;
      }
      Sample sample = ParseSample(line);
      EXPECT_EQ(sample.name, current) << "sample outside its family: " << line;
      const std::string key = absl::StrCat(sample.name, LabelsKey(sample.labels));
      EXPECT_TRUE(seen_.insert(key).second) << "duplicate series: " << line;
      families_[sample.name].samples.push_back(std::move(sample));
    }
  }

 public:
  // The value of the one sample of `name` with exactly `labels`; "" (and a failure) if none.
  std::string Value(const std::string& name, const std::map<std::string, std::string>& labels) {
    auto it = families_.find(name);
    if (it == families_.end()) {
      ADD_FAILURE() << "no family " << name;
      return "";
    }
    for (const Sample& sample : it->second.samples) {
      if (sample.labels == labels) return sample.value;
    }
    ADD_FAILURE() << "no sample " << name << LabelsKey(labels);
    return "";
  }

 private:
  static std::string LabelsKey(const std::map<std::string, std::string>& labels) {
    std::string key = "{";
    for (const auto& [k, v] : labels) absl::StrAppend(&key, k, "=\"", v, "\",");
    return key + "}";
  }

  static Sample ParseSample(absl::string_view line) {
    Sample sample;
    size_t i = 0;
    while (i < line.size() && IsMetricNameChar(line[i], i == 0)) ++i;
    sample.name = std::string(line.substr(0, i));
    EXPECT_FALSE(sample.name.empty()) << "bad metric name: " << line;
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        size_t start = i;
        while (i < line.size() && IsMetricNameChar(line[i], i == start)) ++i;
        std::string label(line.substr(start, i - start));
        EXPECT_FALSE(label.empty()) << "bad label name: " << line;
        if (i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') {
          ADD_FAILURE() << "expected =\" at " << i << ": " << line;
          return sample;
        }
        i += 2;
        std::string value;
        for (;; ++i) {
          if (i >= line.size()) {
            ADD_FAILURE() << "unterminated label value: " << line;
            return sample;
          }
          if (line[i] == '"') break;
          if (line[i] == '\\') {
            ++i;
            if (i < line.size() && line[i] == 'n') {
              value.push_back('\n');
            } else if (i < line.size() && (line[i] == '\\' || line[i] == '"')) {
              value.push_back(line[i]);
            } else {
              ADD_FAILURE() << "bad escape: " << line;
            }
            continue;
          }
          value.push_back(line[i]);
        }
        ++i;  // Closing quote.
        EXPECT_TRUE(sample.labels.emplace(label, value).second) << "repeated label: " << line;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) {
        ADD_FAILURE() << "unterminated label set: " << line;
        return sample;
      }
      ++i;  // '}'
    }
    if (i >= line.size() || line[i] != ' ') {
      ADD_FAILURE() << "expected a space before the value: " << line;
      return sample;
    }
    sample.value = std::string(line.substr(i + 1));
    double parsed;
    EXPECT_TRUE(absl::SimpleAtod(sample.value, &parsed) &&
                sample.value.find(' ') == std::string::npos)
        << "bad value (timestamps are not expected): " << line;
    return sample;
  }

  std::map<std::string, Family> families_;
  std::set<std::string> seen_;
};

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::path(::testing::TempDir()) / "metrics_test.XXXXXX");
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    const std::string ini = dir_ + "/pgbouncer.ini";
    std::ofstream(ini) << "[databases]\n"
                          "appdb = host=127.0.0.1 port=1 dbname=x pool_size=7 reserve_pool=2\n"
                          "otherdb = host=127.0.0.1 port=2 user=forced pool_mode=transaction\n"
                          "[pgbouncer]\n"
                          "listen_addr = 127.0.0.1\n"
                          "listen_port = 1\n"
                          "unix_socket_dir =\n"
                          "auth_type = any\n"
                          "max_client_conn = 321\n"
                          "max_user_connections = 9\n"
                          "max_db_connections = 50\n";
    AgentOptions options;
    options.config_path = ini;
    PGF_ASSERT_OK_AND_ASSIGN(agent_, Agent::Create(std::move(options)));
  }
  void TearDown() override {
    agent_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::string dir_;
  std::unique_ptr<Agent> agent_;
};

TEST_F(MetricsTest, RendersValidExpositionWithPoolAndDatabaseValues) {
  Pool* alice = agent_->GetPool("appdb", "alice");
  Pool* bob = agent_->GetPool("appdb", "bob");
  ASSERT_NE(alice, nullptr);
  ASSERT_NE(bob, nullptr);
  alice->stats().xact_count = 10;
  alice->stats().query_count = 40;
  alice->stats().bytes_received = 1000;
  alice->stats().bytes_sent = 2000;
  alice->stats().xact_time_us = 1500000;  // 1.5 s
  alice->stats().query_time_us = 250;     // 0.00025 s
  alice->stats().wait_time_us = 3000000;  // 3 s
  alice->stats().client_login_failures = 3;
  alice->stats().server_login_failures = 4;
  alice->stats().server_errors = 5;
  bob->stats().xact_count = 1;
  bob->stats().query_count = 2;
  bob->stats().xact_time_us = 500000;

  const std::string text = RenderPrometheusMetrics(*agent_, agent_->Snapshot());
  Exposition exp(text);
  ASSERT_FALSE(::testing::Test::HasFailure()) << text;

  for (const auto& [name, family] : exp.families()) {
    EXPECT_EQ(family.help_count, 1) << name;
    EXPECT_EQ(family.type_count, 1) << name;
    EXPECT_FALSE(family.samples.empty()) << name;
    if (family.type == "counter") {
      EXPECT_THAT(name, ::testing::EndsWith("_total"));
    }
  }

  EXPECT_EQ(exp.Value("pgbouncer_up", {}), "1");
  EXPECT_EQ(exp.Value("pgbouncer_config_max_client_connections", {}), "321");
  EXPECT_EQ(exp.Value("pgbouncer_config_max_user_connections", {}), "9");
  EXPECT_EQ(exp.Value("pgfleet_agent_clients", {}), "0");

  const std::map<std::string, std::string> alice_labels = {{"database", "appdb"},
                                                           {"user", "alice"}};
  for (const char* name :
       {"pgbouncer_pools_client_active_connections", "pgbouncer_pools_client_waiting_connections",
        "pgbouncer_pools_server_active_connections", "pgbouncer_pools_server_idle_connections",
        "pgbouncer_pools_server_used_connections", "pgbouncer_pools_server_testing_connections",
        "pgbouncer_pools_server_login_connections", "pgbouncer_pools_client_maxwait_seconds"}) {
    EXPECT_EQ(exp.Value(name, alice_labels), "0") << name;
    EXPECT_EQ(exp.families().at(name).type, "gauge") << name;
  }
  EXPECT_EQ(exp.Value("pgfleet_pool_client_login_failures_total", alice_labels), "3");
  EXPECT_EQ(exp.Value("pgfleet_pool_server_login_failures_total", alice_labels), "4");
  EXPECT_EQ(exp.Value("pgfleet_pool_server_errors_total", alice_labels), "5");
  EXPECT_EQ(exp.Value("pgfleet_pool_server_errors_total", {{"database", "appdb"}, {"user", "bob"}}),
            "0");

  // Per database: summed over alice and bob; otherdb has no pool yet but is listed.
  const std::map<std::string, std::string> appdb = {{"database", "appdb"}};
  EXPECT_EQ(exp.Value("pgbouncer_stats_totals_sql_transactions_pooled_total", appdb), "11");
  EXPECT_EQ(exp.Value("pgbouncer_stats_totals_queries_pooled_total", appdb), "42");
  EXPECT_EQ(exp.Value("pgbouncer_stats_totals_received_bytes_total", appdb), "1000");
  EXPECT_EQ(exp.Value("pgbouncer_stats_totals_sent_bytes_total", appdb), "2000");
  EXPECT_EQ(exp.Value("pgbouncer_stats_totals_server_in_transaction_seconds_total", appdb), "2");
  EXPECT_EQ(exp.Value("pgbouncer_stats_totals_queries_duration_seconds_total", appdb), "0.00025");
  EXPECT_EQ(exp.Value("pgbouncer_stats_totals_client_wait_seconds_total", appdb), "3");
  EXPECT_EQ(exp.families().at("pgbouncer_stats_totals_queries_pooled_total").type, "counter");
  EXPECT_EQ(exp.Value("pgbouncer_stats_totals_queries_pooled_total", {{"database", "otherdb"}}),
            "0");

  const std::map<std::string, std::string> appdb_db = {{"name", "appdb"},  {"host", "127.0.0.1"},
                                                       {"port", "1"},      {"database", "x"},
                                                       {"force_user", ""}, {"pool_mode", ""}};
  const std::map<std::string, std::string> otherdb_db = {
      {"name", "otherdb"},     {"host", "127.0.0.1"},    {"port", "2"},
      {"database", "otherdb"}, {"force_user", "forced"}, {"pool_mode", "transaction"}};
  EXPECT_EQ(exp.Value("pgbouncer_databases_pool_size", appdb_db), "7");
  EXPECT_EQ(exp.Value("pgbouncer_databases_pool_size", otherdb_db), "20");
  EXPECT_EQ(exp.Value("pgbouncer_databases_reserve_pool", appdb_db), "2");
  EXPECT_EQ(exp.Value("pgbouncer_databases_max_connections", appdb_db), "50");
  EXPECT_EQ(exp.Value("pgbouncer_databases_current_connections", appdb_db), "0");
  EXPECT_EQ(exp.Value("pgbouncer_databases_paused", appdb_db), "0");
  EXPECT_EQ(exp.Value("pgbouncer_databases_disabled", appdb_db), "0");

  // The pre-STATS_TOTALS exporter names are not emitted (one name per series).
  EXPECT_THAT(text, Not(HasSubstr("pgbouncer_stats_queries_pooled_total")));
}

TEST_F(MetricsTest, EscapesLabelValuesAndReplacesInvalidUtf8) {
  ASSERT_NE(agent_->GetPool("appdb", "we\"ird\\user\nname"), nullptr);
  ASSERT_NE(agent_->GetPool("appdb", std::string("bad\xff\xc3(", 6)), nullptr);
  ASSERT_NE(agent_->GetPool("appdb", "caf\xc3\xa9"), nullptr);
  const std::string text = RenderPrometheusMetrics(*agent_, agent_->Snapshot());
  EXPECT_THAT(text, HasSubstr("pgbouncer_pools_server_idle_connections{database=\"appdb\","
                              "user=\"we\\\"ird\\\\user\\nname\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("user=\"bad\xEF\xBF\xBD\xEF\xBF\xBD(\"}"));
  EXPECT_THAT(text, HasSubstr("user=\"caf\xc3\xa9\"}"));
  Exposition exp(text);
  EXPECT_EQ(exp.Value("pgbouncer_pools_server_idle_connections",
                      {{"database", "appdb"}, {"user", "we\"ird\\user\nname"}}),
            "0");
}

TEST_F(MetricsTest, NoPoolsStillRendersEveryFamilyHeader) {
  const std::string text = RenderPrometheusMetrics(*agent_, agent_->Snapshot());
  Exposition exp(text);
  EXPECT_THAT(text, HasSubstr("# TYPE pgbouncer_pools_client_active_connections gauge\n"));
  EXPECT_THAT(text, Not(HasSubstr("pgbouncer_pools_client_active_connections{")));
  EXPECT_EQ(exp.Value("pgbouncer_databases_current_connections", {{"name", "appdb"},
                                                                  {"host", "127.0.0.1"},
                                                                  {"port", "1"},
                                                                  {"database", "x"},
                                                                  {"force_user", ""},
                                                                  {"pool_mode", ""}}),
            "0");
}

TEST_F(MetricsTest, ReportsPausedAndDisabledDatabases) {
  ASSERT_NE(agent_->GetPool("otherdb", "alice"), nullptr);
  PGF_ASSERT_OK(agent_->Pause("appdb", std::nullopt));
  agent_->SetDisabled("otherdb", true);
  const std::map<std::string, std::string> appdb = {{"name", "appdb"},  {"host", "127.0.0.1"},
                                                    {"port", "1"},      {"database", "x"},
                                                    {"force_user", ""}, {"pool_mode", ""}};
  const std::map<std::string, std::string> otherdb = {
      {"name", "otherdb"},     {"host", "127.0.0.1"},    {"port", "2"},
      {"database", "otherdb"}, {"force_user", "forced"}, {"pool_mode", "transaction"}};
  {
    Exposition exp(RenderPrometheusMetrics(*agent_, agent_->Snapshot()));
    EXPECT_EQ(exp.Value("pgbouncer_databases_paused", appdb), "1");
    EXPECT_EQ(exp.Value("pgbouncer_databases_paused", otherdb), "0");
    EXPECT_EQ(exp.Value("pgbouncer_databases_disabled", appdb), "0");
    EXPECT_EQ(exp.Value("pgbouncer_databases_disabled", otherdb), "1");
  }
  // PAUSE of everything shows as every database paused.
  PGF_ASSERT_OK(agent_->Resume("appdb"));
  PGF_ASSERT_OK(agent_->Pause("", std::nullopt));
  Exposition exp(RenderPrometheusMetrics(*agent_, agent_->Snapshot()));
  EXPECT_EQ(exp.Value("pgbouncer_databases_paused", appdb), "1");
  EXPECT_EQ(exp.Value("pgbouncer_databases_paused", otherdb), "1");
  EXPECT_EQ(exp.Value("pgfleet_agent_paused", {}), "1");
  EXPECT_EQ(exp.Value("pgfleet_agent_suspended", {}), "0");
}

TEST_F(MetricsTest, StandaloneAgentReportsNoControllerLink) {
  Exposition exp(RenderPrometheusMetrics(*agent_, agent_->Snapshot()));
  EXPECT_EQ(exp.Value("pgfleet_config_version", {}), "0");
  EXPECT_EQ(exp.Value("pgfleet_agent_controller_link_up", {}), "0");
  EXPECT_EQ(exp.Value("pgfleet_agent_paused", {}), "0");
}

// A blocking HTTP/1.1 exchange on 127.0.0.1:port; returns everything the server sent.
std::string HttpExchange(int port, const std::string& request) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "socket failed";
  timeval timeout{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) response.append(buf, static_cast<size_t>(n));
  } else {
    response = "connect/write failed";
  }
  close(fd);
  return response;
}

struct HttpResult {
  int status = 0;
  std::string head;
  std::string body;
};

HttpResult Parse(const std::string& response) {
  HttpResult result;
  const size_t split = response.find("\r\n\r\n");
  result.head = response.substr(0, split);
  if (split != std::string::npos) result.body = response.substr(split + 4);
  std::vector<std::string> first = absl::StrSplit(result.head, absl::MaxSplits(' ', 2));
  if (first.size() >= 2) (void)absl::SimpleAtoi(first[1], &result.status);
  return result;
}

// Runs `request` from another thread while this one pumps the agent's loop.
HttpResult Fetch(Agent& agent, int port, const std::string& request) {
  std::atomic<bool> done{false};
  std::string response;
  std::thread client([&] {
    response = HttpExchange(port, request);
    done = true;
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (!done && std::chrono::steady_clock::now() < deadline) {
    event_base_loop(agent.loop().base(), EVLOOP_NONBLOCK);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  client.join();
  return Parse(response);
}

std::string Get(const std::string& path, const std::string& method = "GET") {
  return absl::StrCat(method, " ", path,
                      " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
}

TEST_F(MetricsTest, ServerAnswersMetricsHealthz404And405) {
  signal(SIGPIPE, SIG_IGN);
  Pool* pool = agent_->GetPool("appdb", "alice");
  ASSERT_NE(pool, nullptr);
  pool->stats().query_count = 77;
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsServer> server,
                           MetricsServer::Start(*agent_, "127.0.0.1:0"));
  ASSERT_GT(server->port(), 0);

  HttpResult metrics = Fetch(*agent_, server->port(), Get("/metrics"));
  EXPECT_EQ(metrics.status, 200) << metrics.head;
  EXPECT_THAT(metrics.head, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(metrics.body, StartsWith("# HELP pgbouncer_up "));
  EXPECT_THAT(metrics.body, HasSubstr("\npgbouncer_up 1\n"));
  EXPECT_THAT(metrics.body,
              HasSubstr("pgbouncer_stats_totals_queries_pooled_total{database=\"appdb\"} 77\n"));
  Exposition exp(metrics.body);

  HttpResult query = Fetch(*agent_, server->port(), Get("/metrics?x=1"));
  EXPECT_EQ(query.status, 200);

  HttpResult health = Fetch(*agent_, server->port(), Get("/healthz"));
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body, "ok\n");

  HttpResult missing = Fetch(*agent_, server->port(), Get("/nope"));
  EXPECT_EQ(missing.status, 404);

  HttpResult post = Fetch(*agent_, server->port(), Get("/metrics", "POST"));
  EXPECT_EQ(post.status, 405);
  EXPECT_THAT(post.head, HasSubstr("Allow: GET, HEAD"));
  HttpResult del = Fetch(*agent_, server->port(), Get("/healthz", "DELETE"));
  EXPECT_EQ(del.status, 405);

  for (const char* path : {"/healthz", "/metrics"}) {
    HttpResult head = Fetch(*agent_, server->port(), Get(path, "HEAD"));
    EXPECT_EQ(head.status, 200) << path;
    EXPECT_EQ(head.body, "") << path;
  }
}

TEST_F(MetricsTest, StartRejectsBadAddressesAndBusyPorts) {
  EXPECT_FALSE(MetricsServer::Start(*agent_, "no-port").ok());
  EXPECT_FALSE(MetricsServer::Start(*agent_, "127.0.0.1:99999").ok());
  EXPECT_FALSE(MetricsServer::Start(*agent_, "127.0.0.1:http").ok());
  EXPECT_FALSE(MetricsServer::Start(*agent_, "::1:9127").ok());
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<MetricsServer> first,
                           MetricsServer::Start(*agent_, "127.0.0.1:0"));
  absl::StatusOr<std::unique_ptr<MetricsServer>> second =
      MetricsServer::Start(*agent_, absl::StrCat("127.0.0.1:", first->port()));
  EXPECT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

}  // namespace
}  // namespace pgfleet::agent
