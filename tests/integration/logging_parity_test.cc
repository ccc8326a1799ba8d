// Issue 22, logging parity with PgBouncer 1.25: log_stats writes PgBouncer's periodic
// "stats: N xacts/s, ..." line every stats_period (and nothing with log_stats = 0); syslog = 1
// sends every log line to syslog(3) under syslog_ident and syslog_facility. The real
// pgfleet-agent in front of a real PostgreSQL; syslog is received on a unix datagram socket
// the test binds and mounts over /dev/log in a mount namespace of the agent's own (unshare
// -m, so the host's /dev is untouched), since glibc's syslog(3) always writes to /dev/log.

#include <libpq-fe.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

// PgBouncer's line (src/stats.c refresh_stats) as 1.21 to 1.25 write it: the prepared-statement
// rates after queries/s.
const std::regex kStatsLine(
    R"( LOG stats: (\d+) xacts/s, (\d+) queries/s, (\d+) client parses/s, (\d+) server parses/s, )"
    R"((\d+) binds/s, in \d+ B/s, out \d+ B/s, xact \d+ us, query \d+ us, wait \d+ us\n)");

// Field `group` (2: queries/s, 3: client parses/s, 4: server parses/s, 5: binds/s) of every
// stats line in `log`.
std::vector<int> StatsField(const std::string& log, int group) {
  std::vector<int> rates;
  for (std::sregex_iterator it(log.begin(), log.end(), kStatsLine), end; it != end; ++it) {
    int rate = 0;
    if (absl::SimpleAtoi((*it)[group].str(), &rate)) rates.push_back(rate);
  }
  return rates;
}

std::vector<int> QueriesPerSecond(const std::string& log) { return StatsField(log, 2); }

class LoggingParityTest : public AgentTest {
 protected:
  void RunQueries(int count) {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
    for (int i = 0; i < count; ++i) PGF_ASSERT_OK(Query(app.get(), "select 1").status());
  }
};

TEST_F(LoggingParityTest, LogStatsWritesPgBouncersStatsLineEveryPeriod) {
  StartAgent({{"stats_period", "1"}});  // log_stats defaults to 1, as in PgBouncer.
  RunQueries(50);
  std::string log;
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        log = agent_->LogContents();
        const std::vector<int> rates = QueriesPerSecond(log);
        *note = absl::StrCat(rates.size(), " stats lines");
        for (int rate : rates) {
          if (rate > 0) return true;
        }
        return false;
      },
      absl::Seconds(15), "a stats line counting the queries"));
  // The key is implemented now: no "not supported" warning for it.
  EXPECT_FALSE(absl::StrContains(log, "'log_stats'")) << log;
}

// The prepared-statement rates PgBouncer 1.21 added to the line count the agent's Parse and
// Bind messages (max_prepared_statements is on by default in transaction mode).
TEST_F(LoggingParityTest, TheStatsLineCarriesThePreparedStatementRates) {
  StartAgent({{"stats_period", "1"}});
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
    PGresult* prepared = PQprepare(app.get(), "one", "select $1::int", 1, nullptr);
    ASSERT_EQ(PQresultStatus(prepared), PGRES_COMMAND_OK) << PQerrorMessage(app.get());
    PQclear(prepared);
    for (int i = 0; i < 20; ++i) {
      const char* value = "7";
      PGresult* run = PQexecPrepared(app.get(), "one", 1, &value, nullptr, nullptr, 0);
      ASSERT_EQ(PQresultStatus(run), PGRES_TUPLES_OK) << PQerrorMessage(app.get());
      PQclear(run);
    }
  }
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        const std::string log = agent_->LogContents();
        *note = log.substr(log.size() > 2000 ? log.size() - 2000 : 0);
        bool parses = false, binds = false;
        for (int rate : StatsField(log, 3)) parses |= rate > 0;
        for (int rate : StatsField(log, 5)) binds |= rate > 0;
        return parses && binds;
      },
      absl::Seconds(15), "a stats line counting client parses and binds"));
}

TEST_F(LoggingParityTest, LogStatsZeroWritesNoStatsLine) {
  StartAgent({{"stats_period", "1"}, {"log_stats", "0"}, {"admin_users", kAdminUser}});
  RunQueries(50);
  // SHOW STATS_AVERAGES moves once a stats period has ended after the queries: the same timer
  // callback would have written the stats line by then.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console,
                           Connect(agent_->ConnString("pgbouncer", kAdminUser, kAdminPassword)));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(Table averages, Show(console.get(), "SHOW STATS_AVERAGES"));
        Rows appdb = averages.Where({{"database", kAppDb}});
        *note = averages.Dump();
        return appdb.size() == 1 && averages.At(appdb[0], "query_count") != "0";
      },
      absl::Seconds(15), "a stats period to end after the queries"));
  const std::string log = agent_->LogContents();
  EXPECT_TRUE(QueriesPerSecond(log).empty()) << log;
  EXPECT_FALSE(absl::StrContains(log, "stats: ")) << log;
}

// A unix datagram socket bound at `path`, closed at destruction.
class DatagramSocket {
 public:
  ~DatagramSocket() {
    if (fd_ >= 0) close(fd_);
  }
  absl::Status Bind(const std::string& path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd_ < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path)) return absl::InternalError("path too long");
    memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      return absl::InternalError(absl::StrCat("bind ", path, ": ", strerror(errno)));
    }
    return absl::OkStatus();
  }
  // Every datagram waiting now, appended to `received` one per line.
  void Drain(std::string* received) {
    char buffer[8192];
    for (;;) {
      const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) return;
      received->append(buffer, static_cast<size_t>(n));
      received->push_back('\n');
    }
  }

 private:
  int fd_ = -1;
};

TEST_F(LoggingParityTest, SyslogSendsLinesWithIdentAndFacility) {
  if (geteuid() != 0 || !std::filesystem::exists("/usr/bin/unshare")) {
    GTEST_SKIP() << "needs root and unshare(1) to give the agent its own /dev/log";
  }
  PGF_ASSERT_OK_AND_ASSIGN(RunResult probe, RunCommand({"/usr/bin/unshare", "-m", "/bin/true"}));
  if (!probe.Succeeded()) GTEST_SKIP() << "mount namespaces unavailable: " << probe.Describe();

  // The agent's /dev: the socket as "log", the real null/zero/urandom/random bound in.
  TempDir dev;
  PGF_ASSERT_OK(dev.Create("syslog-dev"));
  DatagramSocket syslog_socket;
  PGF_ASSERT_OK(syslog_socket.Bind(dev.path() + "/log"));
  const std::string script = absl::StrCat(
      "set -e; D='", dev.path(), "'; ",
      "for n in null zero urandom random; do : > \"$D/$n\"; mount --bind \"/dev/$n\" \"$D/$n\"; "
      "done; mount --bind \"$D\" /dev; exec '",
      AgentBinaryUnderTest(), "' \"$@\"");
  AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                          {"pool_mode", "transaction"},
                                          {"syslog", "1"},
                                          {"syslog_ident", "pgfleet-test"},
                                          {"syslog_facility", "local3"}});
  options.binary = "/usr/bin/unshare";
  options.extra_args = {"-m", "--", "/bin/sh", "-c", script, "sh"};
  StartAgentWith(options);
  RunQueries(1);

  // local3 (19) * 8 + info (6) = 158; glibc writes "<PRI>TIMESTAMP IDENT[PID]: MESSAGE".
  std::string received;
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        syslog_socket.Drain(&received);
        *note = received;
        return absl::StrContains(received, "<158>") &&
               absl::StrContains(received, absl::StrCat("pgfleet-test[", agent_->pid(), "]: ")) &&
               absl::StrContains(received, "pgfleet-agent started");
      },
      absl::Seconds(10), "the agent's startup line on syslog"));
  // The log file keeps every line too, as PgBouncer writes to both.
  const std::string log = agent_->LogContents();
  EXPECT_TRUE(absl::StrContains(log, "pgfleet-agent started")) << log;
  EXPECT_FALSE(absl::StrContains(log, "'syslog")) << "syslog keys still warned about:\n" << log;
}

TEST_F(LoggingParityTest, InvalidSyslogFacilityIsRefusedAtLoad) {
  AgentOptions options = AppAgentOptions({{"syslog", "1"}, {"syslog_facility", "kernelish"}});
  options.start_timeout = absl::Seconds(5);
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent = AgentProcess::Start(options);
  ASSERT_FALSE(agent.ok()) << "an unknown syslog_facility was accepted";
}

// ---- Line shapes: PgBouncer's text (pgbadger reads it) and JSON -----------------------------

std::string ReadFileOrEmpty(const std::string& path) { return ReadFile(path).value_or(""); }

// Logs `logins` clients in and out, with a few queries each, and one wrong password.
void ExerciseLogins(const AgentProcess& agent, int logins) {
  for (int i = 0; i < logins; ++i) {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn app, Connect(agent.ConnString(kAppDb, kAppUser, kAppPassword)));
    for (int q = 0; q < 5; ++q) PGF_ASSERT_OK(Query(app.get(), "select 1").status());
  }
  EXPECT_FALSE(Connect(agent.ConnString(kAppDb, kAppUser, "not-the-password")).ok());
}

TEST_F(LoggingParityTest, PgbadgerReadsTheAgentsLogAsPgBouncers) {
  ASSERT_TRUE(std::filesystem::exists("/usr/bin/pgbadger"))
      << "pgbadger is not installed: scripts/install-deps.sh installs it";
  TempDir dir;
  PGF_ASSERT_OK(dir.Create("pgbadger"));
  const std::string logfile = dir.path() + "/agent.log";
  StartAgent({{"stats_period", "1"}, {"logfile", logfile}});
  constexpr int kLogins = 12;  // pgbadger decides the format after 11 lines it recognises.
  ExerciseLogins(*agent_, kLogins);
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        const std::vector<int> rates = QueriesPerSecond(ReadFileOrEmpty(logfile));
        *note = absl::StrCat(rates.size(), " stats lines");
        return rates.size() >= 2;
      },
      absl::Seconds(15), "two stats lines"));

  // pgbadger as a PgBouncer user runs it: the format detected from the lines themselves.
  const std::string report = dir.path() + "/report.json";
  PGF_ASSERT_OK_AND_ASSIGN(RunResult run, RunCommand({"/usr/bin/pgbadger", "--quiet", "--outfile",
                                                      report, "--extension", "json", logfile}));
  ASSERT_TRUE(run.Succeeded()) << run.Describe();
  google::protobuf::Struct parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(ReadFileOrEmpty(report), &parsed).ok());
  const auto& fields = parsed.fields();
  // Logins, by database, user and host, from the "C-0x..: db/user@addr login attempt" lines.
  const auto& connections = fields.at("pgb_connection_info").struct_value().fields();
  EXPECT_GE(connections.at("count").number_value(), kLogins) << ReadFileOrEmpty(logfile);
  EXPECT_TRUE(connections.at("database").struct_value().fields().contains(kAppDb));
  EXPECT_TRUE(connections.at("user").struct_value().fields().contains(kAppUser));
  EXPECT_TRUE(connections.at("host").struct_value().fields().contains("127.0.0.1"));
  // Throughput, from the stats lines: pgbadger reads PgBouncer 1.21+'s shape (prepared-statement
  // rates after queries/s) from 13.1 on; Debian 12's 12.0 knows only the older shape, as it
  // does not read real PgBouncer 1.21+ stats lines either.
  if (absl::StrContains(ReadFileOrEmpty("/usr/bin/pgbadger"), "parses")) {
    EXPECT_GE(
        fields.at("pgb_overall_stat").struct_value().fields().at("queries_number").number_value(),
        2);
  } else {
    std::cerr << "note: this pgbadger does not read PgBouncer 1.21+ stats lines; throughput "
                 "not compared\n";
  }
  // The failed login, from the "pooler error" line.
  bool failed_login_reported = false;
  for (const auto& [error, detail] : fields.at("pgb_error_info").struct_value().fields()) {
    failed_login_reported |= absl::StrContains(error, "authentication failed");
  }
  EXPECT_TRUE(failed_login_reported) << ReadFileOrEmpty(report).substr(0, 4000);
}

TEST_F(LoggingParityTest, LogFormatJsonWritesOneObjectPerLine) {
  TempDir dir;
  PGF_ASSERT_OK(dir.Create("jsonlog"));
  const std::string logfile = dir.path() + "/agent.log";
  StartAgent({{"logfile", logfile}, {"log_format", "json"}});
  ExerciseLogins(*agent_, 2);
  // A name that is not UTF-8 and holds a newline and a quote still makes one valid object.
  EXPECT_FALSE(Connect(agent_->ConnString(kAppDb, "bad\n\"name\xff", "x")).ok());
  std::vector<std::string> lines;
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        const std::string log = ReadFileOrEmpty(logfile);
        *note = log;
        return absl::StrContains(log, "bad\\n\\\"name\\ufffd");
      },
      absl::Seconds(10), "the failed login with the odd name in the log"));
  int login_attempts = 0;
  int failed_logins = 0;
  for (absl::string_view line : absl::StrSplit(ReadFileOrEmpty(logfile), '\n', absl::SkipEmpty())) {
    google::protobuf::Struct object;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(std::string(line), &object).ok())
        << line;
    const auto& fields = object.fields();
    for (const char* key : {"time", "level", "pid", "component", "message"}) {
      EXPECT_TRUE(fields.contains(key)) << key << " missing in " << line;
    }
    if (absl::StrContains(fields.at("message").string_value(), "login attempt: db=appdb")) {
      ++login_attempts;
      EXPECT_EQ(fields.at("level").string_value(), "info") << line;
      EXPECT_EQ(fields.at("component").string_value(), "client") << line;
    }
    if (absl::StrContains(fields.at("message").string_value(), "login failed")) {
      ++failed_logins;
      EXPECT_EQ(fields.at("level").string_value(), "warning") << line;
    }
  }
  EXPECT_EQ(login_attempts, 2);  // The two logins that passed authentication.
  EXPECT_GE(failed_logins, 1);   // The wrong password (the odd name is refused before that).
}

TEST_F(LoggingParityTest, AnUnknownLogFormatIsRefusedNamingTheKey) {
  AgentOptions options = AppAgentOptions({{"log_format", "xml"}});
  options.start_timeout = absl::Seconds(5);
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent = AgentProcess::Start(options);
  ASSERT_FALSE(agent.ok()) << "log_format = xml was accepted";
  EXPECT_TRUE(absl::StrContains(agent.status().message(), "log_format")) << agent.status();
}

}  // namespace
}  // namespace pgfleet::testutil
