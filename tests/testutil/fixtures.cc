#include "tests/testutil/fixtures.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "tests/testutil/process.h"
#include "tests/testutil/shared_postgres.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {

PostgresEnv* g_pg = nullptr;

PostgresOptions PostgresWithMd5Role(const std::string& role) {
  PostgresOptions options;
  options.extra_hba_lines = {absl::StrCat("host all ", role, " 127.0.0.1/32 md5")};
  return options;
}

absl::Status CreateAppDatabase(PostgresEnv& pg) {
  PGF_RETURN_IF_ERROR(pg.CreateUser(kAppUser, kAppPassword));
  return pg.CreateDatabase(kAppDb, kAppUser);
}

::testing::Environment* RegisterSharedPostgres(PostgresOptions options,
                                               std::function<absl::Status(PostgresEnv&)> prepare) {
  return ::testing::AddGlobalTestEnvironment(
      new SharedPostgres(std::move(options), std::move(prepare), &g_pg));
}

absl::Status AwaitNoAppdbBackends(const PostgresEnv& pg) {
  return PollUntil(
      [&pg](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Rows> rows = pg.Exec(kAppdbBackendsSql);
        if (!rows.ok()) return rows.status();
        *note = absl::StrCat((*rows)[0][0], " backends on appdb");
        return (*rows)[0][0] == "0";
      },
      absl::Seconds(15), "PostgreSQL to drop the previous test's connections");
}

RunOptions PgbenchRunOptions() {
  RunOptions run;
  run.env = {{"PGPASSWORD", kAppPassword}, {"PGSSLMODE", "disable"}};
  run.timeout = absl::Seconds(120);
  return run;
}

BackgroundPgbench::BackgroundPgbench(int port, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {g_pg->BinPath("pgbench"), "-n", "-h",    "127.0.0.1", "-p",
                                   std::to_string(port),     "-U", kAppUser};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back(kAppDb);
  command_ = absl::StrJoin(argv, " ");
  thread_ = std::thread([this, argv] { result_ = RunCommand(argv, PgbenchRunOptions()); });
}

const absl::StatusOr<RunResult>& BackgroundPgbench::Join() {
  if (thread_.joinable()) thread_.join();
  return result_;
}

PgbenchSummary BackgroundPgbench::ExpectClean(const std::string& what) {
  const absl::StatusOr<RunResult>& result = Join();
  if (!result.ok()) {
    ADD_FAILURE() << what << ": " << result.status();
    return PgbenchSummary{};
  }
  EXPECT_TRUE(result->Succeeded()) << what << ": $ " << command_ << "\n" << result->Describe();
  const PgbenchSummary summary = ParsePgbench(result->stdout_text);
  EXPECT_GT(summary.processed, 0) << what << "\n" << result->Describe();
  EXPECT_EQ(summary.failed, 0) << what << " (-1: pgbench printed no failure count)\n"
                               << result->Describe();
  return summary;
}

absl::Status InitPgbench(const PostgresEnv& pg) {
  const RunOptions run = PgbenchRunOptions();
  PGF_ASSIGN_OR_RETURN(RunResult init,
                       RunCommand({pg.BinPath("pgbench"), "-i", "-s", "1", "-q", "-h", "127.0.0.1",
                                   "-p", std::to_string(pg.port()), "-U", kAppUser, kAppDb},
                                  run));
  if (!init.Succeeded()) {
    return absl::InternalError(
        absl::StrCat("pgbench -i directly against PostgreSQL: ", init.Describe()));
  }
  return absl::OkStatus();
}

absl::Status RestartPostgres(const PostgresEnv& pg) {
  // PostgresEnv keeps its data directory in <dir>/data and runs the server as the postgres OS
  // user when we are root.
  std::vector<std::string> argv = {pg.BinPath("pg_ctl"),
                                   "-D",
                                   pg.dir() + "/data",
                                   "-l",
                                   pg.log_path(),
                                   "-w",
                                   "-t",
                                   "60",
                                   "-m",
                                   "fast",
                                   "restart"};
  if (geteuid() == 0) argv.insert(argv.begin(), {"runuser", "-u", "postgres", "--"});
  RunOptions run;
  run.working_dir = pg.dir();
  run.env = {{"LC_ALL", "C"}, {"LANG", "C"}};
  run.timeout = absl::Seconds(90);
  absl::StatusOr<RunResult> result = RunCommand(argv, run);
  if (!result.ok()) return result.status();
  if (!result->Succeeded()) {
    return absl::InternalError(absl::StrCat("pg_ctl restart failed: ", result->Describe(),
                                            "\n--- server log ---\n", pg.LogTail()));
  }
  return absl::OkStatus();
}

AgentOptions AppAgentOptions(const std::map<std::string, std::string>& settings, int server_port) {
  AgentOptions options;
  options.databases_section =
      absl::StrCat(kAppDb, " = host=127.0.0.1 port=", server_port != 0 ? server_port : g_pg->port(),
                   " dbname=", kAppDb, "\n");
  options.pgbouncer_settings = settings;
  options.userlist = {{kAppUser, kAppPassword}};
  auto admin_users = settings.find("admin_users");
  if (admin_users != settings.end() && admin_users->second == kAdminUser) {
    options.userlist.push_back({kAdminUser, kAdminPassword});
  }
  return options;
}

void ExpectCleanStop(AgentProcess& agent, const std::string& label, IfExited if_exited) {
  if (if_exited == IfExited::kJudge || agent.IsRunning()) {
    absl::StatusOr<int> exit_status = agent.Stop(absl::Seconds(10));
    EXPECT_TRUE(exit_status.ok()) << label << ": " << exit_status.status();
    if (exit_status.ok() && !UsingForeignAgentBinary()) {
      EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0)
          << label << " did not exit cleanly on SIGTERM: " << DescribeWaitStatus(*exit_status);
    }
  }
  EXPECT_EQ(agent.SanitizerReport(), "") << label << ": agent.stderr reports problems";
}

void ExpectCleanStop(ControllerProcess& controller) {
  if (controller.IsRunning()) {
    absl::StatusOr<int> exit_status = controller.Stop(absl::Seconds(10));
    EXPECT_TRUE(exit_status.ok()) << exit_status.status();
    if (exit_status.ok()) {
      EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0)
          << "controller did not exit cleanly on SIGTERM: " << DescribeWaitStatus(*exit_status);
    }
  }
  const std::string log = controller.LogContents();
  EXPECT_FALSE(absl::StrContains(log, "AddressSanitizer") ||
               absl::StrContains(log, "LeakSanitizer") || absl::StrContains(log, "runtime error:"))
      << "controller log reports problems";
}

void AgentTest::SetUp() {
  ASSERT_NE(g_pg, nullptr) << "the shared PostgreSQL cluster did not start";
  PGF_ASSERT_OK(AwaitNoAppdbBackends(*g_pg));
}

void AgentTest::TearDown() {
  const bool failed_before_stop = HasFailure();
  // Every test also checks that the agent shuts down cleanly on SIGTERM and that no sanitizer
  // (in the asan build) or CHECK complained along the way.
  if (agent_ != nullptr) ExpectCleanStop(*agent_);
  if (HasFailure()) {
    if (agent_ != nullptr) std::cerr << agent_->Diagnostics();
    if (g_pg != nullptr && failed_before_stop) {
      std::cerr << "--- postgres log (tail) ---\n" << g_pg->LogTail(4096) << "\n";
    }
  }
  agent_.reset();
}

void AgentTest::StartAgent(const std::map<std::string, std::string>& settings, int server_port) {
  std::map<std::string, std::string> merged = DefaultAgentSettings();
  for (const auto& [key, value] : settings) merged[key] = value;
  StartAgentWith(AppAgentOptions(merged, server_port));
}

void AgentTest::StartAgentWith(const AgentOptions& options) {
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent = AgentProcess::Start(options);
  ASSERT_TRUE(agent.ok()) << agent.status();
  agent_ = std::move(*agent);
}

absl::StatusOr<PgConn> AgentTest::ConnectApp() const {
  return Connect(agent_->ConnString(kAppDb, kAppUser, kAppPassword));
}

void AddHttpListener(ControllerOptions& options, const std::string& port_file) {
  options.extra_args.push_back("--http-listen=127.0.0.1:0");
  options.extra_args.push_back(absl::StrCat("--http-port-file=", port_file));
}

absl::StatusOr<int> AwaitHttpPort(const std::string& port_file) {
  int port = 0;
  PGF_RETURN_IF_ERROR(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<std::string> text = ReadFile(port_file);
        if (!text.ok()) {
          *note = std::string(text.status().message());
          return false;
        }
        return absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &port) && port > 0;
      },
      absl::Seconds(15), "the controller's HTTP port file"));
  return port;
}

absl::StatusOr<std::vector<NamedRow>> AdminShow(int port, const std::string& command,
                                                const std::string& user,
                                                const std::string& password) {
  absl::StatusOr<PgConn> conn = Connect(TcpConnString(port, "pgbouncer", user, password));
  if (!conn.ok()) return conn.status();
  PgResult result(PQexec(conn->get(), command.c_str()));
  if (result == nullptr || PQresultStatus(result.get()) != PGRES_TUPLES_OK) {
    return ResultError(conn->get(), result.get());
  }
  std::vector<NamedRow> rows;
  for (int r = 0; r < PQntuples(result.get()); ++r) {
    NamedRow row;
    for (int c = 0; c < PQnfields(result.get()); ++c) {
      row[PQfname(result.get(), c)] = PQgetvalue(result.get(), r, c);
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

PgbenchSummary ParsePgbench(const std::string& out) {
  PgbenchSummary summary;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    auto value_after = [&](absl::string_view prefix) -> int64_t {
      absl::string_view rest = absl::StripLeadingAsciiWhitespace(line.substr(prefix.size()));
      size_t end = 0;
      while (end < rest.size() && absl::ascii_isdigit(static_cast<unsigned char>(rest[end]))) ++end;
      int64_t v = -1;
      if (!absl::SimpleAtoi(rest.substr(0, end), &v)) return -1;
      return v;
    };
    if (absl::StartsWith(line, "number of transactions actually processed:")) {
      summary.processed = value_after("number of transactions actually processed:");
    } else if (absl::StartsWith(line, "number of failed transactions:")) {
      summary.failed = value_after("number of failed transactions:");
    }
  }
  return summary;
}

int CountOccurrences(const std::string& text, const std::string& needle) {
  int count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

}  // namespace pgfleet::testutil
