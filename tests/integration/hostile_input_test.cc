// Client-chosen strings that reach places they must not reshape (issue 17), against a real
// pgfleet-agent in front of a real PostgreSQL 15:
//
// - Log injection: a user name, database name, application_name and TimeZone holding a newline
//   followed by a forged log line go through the login paths that log them (a failed login, an
//   unknown database, a parameter PostgreSQL refuses, whose error text quotes it back). The
//   agent's log must show them escaped on the line of the call that logged them, and no line
//   of the log may start with the forged text.
// - Parameter sync quoting: the agent replays each client's tracked parameters on whichever
//   server the client gets. A client may turn standard_conforming_strings off, and the server
//   keeps that setting for the next client; values holding a backslash and a quote must still
//   arrive exactly, without breaking out of their literal (no SQL runs on anyone's behalf) and
//   without breaking another client's sync.

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/raw_client.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

class HostileInputTest : public AgentTest {
 protected:
  // Cleartext auth towards the agent (so the raw client below can log in), transaction pooling
  // on a single server connection: every client takes turns on the same PostgreSQL backend.
  std::map<std::string, std::string> DefaultAgentSettings() const override {
    return {{"auth_type", "plain"},   {"pool_mode", "transaction"}, {"default_pool_size", "1"},
            {"log_connections", "1"}, {"log_disconnections", "1"},  {"log_pooler_errors", "1"}};
  }

  std::string AppConn(const std::string& application_name) const {
    return absl::StrCat(agent_->ConnString(kAppDb, kAppUser, kAppPassword),
                        " application_name=", ConnInfoQuote(application_name));
  }

  // A v3 login with arbitrary startup parameters and a cleartext password. Returns the
  // ErrorResponse that ended it, or nullopt once the agent sent ReadyForQuery.
  absl::StatusOr<std::optional<ErrorFields>> RawLogin(
      RawClient& client, const std::vector<std::pair<std::string, std::string>>& params) {
    PGF_RETURN_IF_ERROR(client.Send(StartupPacket(params)));
    while (true) {
      PGF_ASSIGN_OR_RETURN(BackendMessage message, client.ReadMessage(absl::Seconds(10)));
      if (message.type == 'R' && message.body.size() >= 4 && ReadBigEndian32(message.body) == 3) {
        PGF_RETURN_IF_ERROR(
            client.Send(FrontendMessage('p', std::string(kAppPassword) + std::string(1, '\0'))));
      } else if (message.type == 'E') {
        PGF_ASSIGN_OR_RETURN(ErrorFields error, ParseErrorResponse(message.body));
        return std::optional<ErrorFields>(error);
      } else if (message.type == 'Z') {
        return std::optional<ErrorFields>();
      }
    }
  }
};

// ---- Log injection ------------------------------------------------------------------------

// Each forged line mimics the agent's own format, so a reader could not tell it apart.
constexpr char kForgedUserLine[] = "2026-01-01 00:00:00.000 UTC [1] LOG admin: forged-by-user-name";
constexpr char kForgedDbLine[] = "2026-01-01 00:00:00.000 UTC [1] LOG admin: forged-by-db-name";
constexpr char kForgedTimeZoneLine[] =
    "2026-01-01 00:00:00.000 UTC [1] LOG admin: forged-by-timezone";
constexpr char kForgedAppNameLine[] = "2026-01-01 00:00:00 LOG forged-by-application-name";

TEST_F(HostileInputTest, NamesWithNewlinesCannotForgeLogLines) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  const std::string user = absl::StrCat("x\n", kForgedUserLine);
  const std::string db = absl::StrCat("x\r\n", kForgedDbLine);
  const std::string timezone = absl::StrCat("x\n", kForgedTimeZoneLine);
  const std::string application_name = absl::StrCat("x\n", kForgedAppNameLine);

  {  // Unknown user: the failed login is logged with the user name.
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> client, RawClient::Connect(agent_->port()));
    PGF_ASSERT_OK_AND_ASSIGN(
        std::optional<ErrorFields> error,
        RawLogin(*client,
                 {{"user", user}, {"database", kAppDb}, {"application_name", application_name}}));
    ASSERT_TRUE(error.has_value());
  }
  {  // Unknown database: logged with the database name.
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> client, RawClient::Connect(agent_->port()));
    PGF_ASSERT_OK_AND_ASSIGN(std::optional<ErrorFields> error,
                             RawLogin(*client, {{"user", kAppUser}, {"database", db}}));
    ASSERT_TRUE(error.has_value());
  }
  {  // A TimeZone PostgreSQL refuses: its error text, quoting the value, reaches the log.
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> client, RawClient::Connect(agent_->port()));
    PGF_ASSERT_OK_AND_ASSIGN(std::optional<ErrorFields> error,
                             RawLogin(*client, {{"user", kAppUser},
                                                {"database", kAppDb},
                                                {"TimeZone", timezone},
                                                {"application_name", application_name}}));
    ASSERT_FALSE(error.has_value()) << error->ToString();
    // The agent answers with an error and closes (the server refused the TimeZone).
    absl::StatusOr<std::vector<BackendMessage>> reply = client->SimpleQuery("select 1");
    if (reply.ok()) {
      bool got_error = false;
      for (const BackendMessage& message : *reply) got_error |= message.type == 'E';
      EXPECT_TRUE(got_error) << "the agent applied an invalid TimeZone without complaint";
    }
  }
  {  // A good login with the application_name: the server connection and its client both live.
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, Connect(AppConn(application_name)));
    PGF_ASSERT_OK_AND_ASSIGN(std::string shown, ScalarText(conn.get(), "show application_name"));
    EXPECT_FALSE(shown.empty());
  }

  // The escaped forms are what the log holds (so the test notices if these lines went missing).
  const std::vector<std::string> expected_escaped = {absl::StrCat("x\\n", kForgedUserLine),
                                                     absl::StrCat("x\\r\\n", kForgedDbLine),
                                                     absl::StrCat("x\\n", kForgedTimeZoneLine)};
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        const std::string log = agent_->LogContents();
        for (const std::string& escaped : expected_escaped) {
          if (!absl::StrContains(log, escaped)) {
            *note = absl::StrCat("not yet logged: ", escaped);
            return false;
          }
        }
        return true;
      },
      absl::Seconds(10), "the escaped names in the agent's log"));

  for (const auto& [what, text] :
       {std::pair<const char*, std::string>{"logfile", agent_->LogContents()},
        {"stderr", agent_->StderrContents()}}) {
    for (absl::string_view line : absl::StrSplit(text, '\n')) {
      for (const char* forged :
           {kForgedUserLine, kForgedDbLine, kForgedTimeZoneLine, kForgedAppNameLine}) {
        EXPECT_FALSE(absl::StartsWith(line, forged))
            << what << " has a forged line: " << line << "\n--- full " << what << " ---\n"
            << text;
      }
      // Every line is one of ours: it starts with a timestamp of the current year or later.
      if (!line.empty()) {
        EXPECT_FALSE(absl::StartsWith(line, "2026-01-01")) << what << ": " << line;
      }
    }
  }
}

// The controller logs what agents say about themselves (agent id, environment) through the same
// log module: an agent cannot forge controller log lines either.
constexpr char kForgedAgentIdLine[] =
    "2026-01-01 00:00:00.000 UTC [1] LOG agents: forged-by-agent-id";
constexpr char kForgedEnvLine[] =
    "2026-01-01 00:00:00.000 UTC [1] LOG agents: forged-by-environment";

TEST_F(HostileInputTest, AgentIdentityWithNewlinesCannotForgeControllerLogLines) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControllerProcess> controller,
                           ControllerProcess::Start(ControllerOptions{}));
  AgentOptions options = AppAgentOptions({{"auth_type", "plain"}});
  options.extra_args = {absl::StrCat("--controller=", controller->address()),
                        absl::StrCat("--env=dev\n", kForgedEnvLine),
                        absl::StrCat("--agent-id=x\n", kForgedAgentIdLine)};
  PGF_ASSERT_OK_AND_ASSIGN(agent_, AgentProcess::Start(options));

  const std::string escaped_id = absl::StrCat("x\\n", kForgedAgentIdLine);
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = controller->CurrentRunLog();
        return absl::StrContains(*note, absl::StrCat("agent ", escaped_id, " connected"));
      },
      absl::Seconds(20), "the agent's connection in the controller's log"));
  agent_.reset();  // Also logs "disconnected" with the id.
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = controller->CurrentRunLog();
        return absl::StrContains(*note, absl::StrCat("agent ", escaped_id, " disconnected"));
      },
      absl::Seconds(20), "the agent's disconnection in the controller's log"));
  const std::string log = controller->LogContents();
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    EXPECT_FALSE(absl::StartsWith(line, "2026-01-01"))
        << "forged controller log line: " << line << "\n--- controller log ---\n"
        << log;
  }
}

// ---- Parameter sync quoting -----------------------------------------------------------------

// Breaks out of a '...' literal whose backslashes are read as escapes
// (standard_conforming_strings = off), then runs its own statement.
constexpr char kBreakoutAppName[] = R"(x\'; CREATE TABLE injected_marker (); SELECT pg_sleep(0)--)";
// A value with backslash escapes that mean something when read as E'' text.
constexpr char kBackslashAppName[] = R"(C:\temp\new 'quoted' \\ end\)";

// A victim whose values hold backslashes gets a server that a previous client left with
// standard_conforming_strings = off: its values must arrive exactly.
TEST_F(HostileInputTest, SyncIsExactOnAServerLeftWithStandardConformingStringsOff) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn nonconforming, Connect(AppConn("nonconforming")));
  PGF_ASSERT_OK(Query(nonconforming.get(), "SET standard_conforming_strings = off"));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn victim, Connect(AppConn(kBackslashAppName)));
  PGF_ASSERT_OK_AND_ASSIGN(std::string shown, ScalarText(victim.get(), "SHOW application_name"));
  EXPECT_EQ(shown, kBackslashAppName);
  PGF_ASSERT_OK_AND_ASSIGN(std::string conforming,
                           ScalarText(victim.get(), "SHOW standard_conforming_strings"));
  EXPECT_EQ(conforming, "on");

  // And back on the first client, which still sees its own settings.
  PGF_ASSERT_OK_AND_ASSIGN(std::string off,
                           ScalarText(nonconforming.get(), "SHOW standard_conforming_strings"));
  EXPECT_EQ(off, "off");
  PGF_ASSERT_OK_AND_ASSIGN(std::string own_name,
                           ScalarText(nonconforming.get(), "SHOW application_name"));
  EXPECT_EQ(own_name, "nonconforming");
}

// An attacker with standard_conforming_strings = off on two connections takes turns on the one
// server so that its crafted application_name is replayed while the server reads backslashes as
// escapes. No statement of its choosing may run, and every client keeps its exact values.
TEST_F(HostileInputTest, ApplicationNameCannotBreakOutOfTheSyncLiteral) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK(g_pg->Exec("DROP TABLE IF EXISTS injected_marker", kAppDb).status());

  PGF_ASSERT_OK_AND_ASSIGN(PgConn attacker, Connect(AppConn(kBreakoutAppName)));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn helper, Connect(AppConn("helper")));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn bystander, Connect(AppConn("bystander")));
  // The server: off, attacker's name.
  PGF_ASSERT_OK(Query(attacker.get(), "SET standard_conforming_strings = off"));
  // The server: off, "helper" (the helper's sync puts it on, its own SET off again).
  PGF_ASSERT_OK(Query(helper.get(), "SET standard_conforming_strings = off"));
  // The attacker's name is replayed with the setting already off.
  absl::StatusOr<std::string> attacker_name = ScalarText(attacker.get(), "SHOW application_name");
  PGF_ASSERT_OK_AND_ASSIGN(std::string bystander_name,
                           ScalarText(bystander.get(), "SHOW application_name"));

  PGF_ASSERT_OK_AND_ASSIGN(Rows marker,
                           g_pg->Exec("SELECT to_regclass('injected_marker') IS NULL", kAppDb));
  ASSERT_EQ(marker.size(), 1u);
  EXPECT_EQ(marker[0][0], "t") << "the attacker's application_name ran CREATE TABLE";
  ASSERT_TRUE(attacker_name.ok()) << attacker_name.status();
  EXPECT_EQ(*attacker_name, kBreakoutAppName);
  EXPECT_EQ(bystander_name, "bystander");
  PGF_ASSERT_OK_AND_ASSIGN(std::string helper_name,
                           ScalarText(helper.get(), "SHOW application_name"));
  EXPECT_EQ(helper_name, "helper");
}

// The value of the single DataRow in a simple query's reply ("" if none).
std::string SingleValue(const std::vector<BackendMessage>& reply) {
  for (const BackendMessage& message : reply) {
    if (message.type != 'D' || message.body.size() < 6) continue;
    const uint32_t length = ReadBigEndian32(message.body.substr(2));
    return message.body.substr(6, length);
  }
  return "";
}

// The same with standard_conforming_strings = off given in the startup packets, by one
// attacker: a first connection leaves the server with it off, the second's name is replayed.
TEST_F(HostileInputTest, StartupParametersCannotBreakOutOfTheSyncLiteral) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK(g_pg->Exec("DROP TABLE IF EXISTS injected_marker", kAppDb).status());
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> first, RawClient::Connect(agent_->port()));
  PGF_ASSERT_OK_AND_ASSIGN(std::optional<ErrorFields> first_error,
                           RawLogin(*first, {{"user", kAppUser},
                                             {"database", kAppDb},
                                             {"standard_conforming_strings", "off"},
                                             {"application_name", "first"}}));
  ASSERT_FALSE(first_error.has_value()) << first_error->ToString();
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<BackendMessage> first_reply,
                           first->SimpleQuery("SHOW standard_conforming_strings"));
  ASSERT_EQ(SingleValue(first_reply), "off");

  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> second, RawClient::Connect(agent_->port()));
  PGF_ASSERT_OK_AND_ASSIGN(std::optional<ErrorFields> second_error,
                           RawLogin(*second, {{"user", kAppUser},
                                              {"database", kAppDb},
                                              {"standard_conforming_strings", "off"},
                                              {"application_name", kBreakoutAppName}}));
  ASSERT_FALSE(second_error.has_value()) << second_error->ToString();
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<BackendMessage> second_reply,
                           second->SimpleQuery("SHOW application_name"));
  EXPECT_EQ(SingleValue(second_reply), kBreakoutAppName);

  PGF_ASSERT_OK_AND_ASSIGN(Rows marker,
                           g_pg->Exec("SELECT to_regclass('injected_marker') IS NULL", kAppDb));
  ASSERT_EQ(marker.size(), 1u);
  EXPECT_EQ(marker[0][0], "t") << "the attacker's application_name ran CREATE TABLE";
}

}  // namespace
}  // namespace pgfleet::testutil
