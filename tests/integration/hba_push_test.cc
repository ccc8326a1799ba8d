// auth_type = hba through the fleet: a real pgfleet-controller (with a secrets key), a real
// pgfleet-agent linked to it with --allow-path, fleetctl, and the shared PostgreSQL. The
// auth_hba_file travels with the config (`fleetctl config push --attach auth_hba_file=FILE`),
// is written under the agent's state dir and applied with the config:
//   - its rules are in force: the user it rejects gets PgBouncer's "login rejected", others
//     log in;
//   - a broken file is refused at push by the controller, naming its line; what only the
//     agent's host can tell (an ident map it lacks) is a NACK naming the line, and the agent
//     keeps serving with its last rules;
//   - an @file include inside the allowed paths is read; one outside them is a NACK naming the
//     including line and the file (refused before it is opened: pushed_hba_test), and so is
//     one that a later RELOAD finds pointing outside.

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/json.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"

namespace pgfleet::testutil {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

constexpr char kEnv[] = "prod";
constexpr char kAgentId[] = "h1";

class HbaPushTest : public FleetFixture {
 protected:
  HbaPushTest() : FleetFixture("hba-push") {}

  void SetUp() override {
    ASSERT_NE(g_pg, nullptr) << "the shared PostgreSQL cluster did not start";
    ASSERT_NO_FATAL_FAILURE(FleetFixture::SetUp());
    const std::string key_path = dir_ + "/secrets.key";
    PGF_ASSERT_OK(
        WriteFile(key_path, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"));
    chmod(key_path.c_str(), 0600);
    ControllerOptions controller;
    controller.extra_args = {absl::StrCat("--secrets-key-file=", key_path)};
    ASSERT_NO_FATAL_FAILURE(StartController(std::move(controller)));
    AgentOptions agent = AppAgentOptions({{"admin_users", kAdminUser}});
    agent.extra_args = LinkArgs(kAgentId, kEnv, controller_->address());
    agent.extra_args.push_back(absl::StrCat("--allow-path=", dir_));
    ASSERT_NO_FATAL_FAILURE(StartLinkedAgent(kAgentId, agent));
    // What the ini names as auth_hba_file (the controller checks the ini alone): the agent
    // points the key at its copy of the pushed file instead.
    PGF_ASSERT_OK(WriteFile(dir_ + "/hba-placeholder.conf", "host all all 0.0.0.0/0 reject\n"));
  }

  std::string FleetIni() {
    return absl::StrCat(
        "[databases]\n", kAppDb, " = host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb,
        "\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = ", port(kAgentId),
        "\nunix_socket_dir =\nauth_type = hba\nauth_file = ", users_path_,
        "\nauth_hba_file = ", dir_, "/hba-placeholder.conf\n", "admin_users = ", kAdminUser, "\n");
  }

  // `config push` of FleetIni() with `hba_text` attached as auth_hba_file; the new version.
  uint64_t PushWithHba(const std::string& name, const std::string& hba_text) {
    const std::string ini_path = dir_ + "/fleet.ini";
    const std::string hba_path = absl::StrCat(dir_, "/", name);
    EXPECT_TRUE(WriteFile(ini_path, FleetIni()).ok());
    EXPECT_TRUE(WriteFile(hba_path, hba_text).ok());
    FleetctlResult pushed =
        Ctl({"config", "push", "--env", kEnv, "-f", ini_path, "--attach",
             absl::StrCat("auth_hba_file=", hba_path), "-m", name, "--output", "json"});
    EXPECT_EQ(pushed.exit_code, 0) << pushed.Describe();
    absl::StatusOr<pgfleet::v1::ConfigVersion> version =
        ParseJson<pgfleet::v1::ConfigVersion>(pushed.stdout_text);
    EXPECT_TRUE(version.ok()) << version.status() << "\n" << pushed.Describe();
    return version.ok() ? version->version() : 0;
  }

  FleetctlResult ApplyWait(uint64_t version) {
    return Ctl(
        {"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", version), "--wait"});
  }

  // "ok", or why the login (or its first query) failed.
  std::string LoginOutcome(const std::string& user, const std::string& password) {
    absl::StatusOr<PgConn> conn = Connect(TcpConnString(port(kAgentId), kAppDb, user, password));
    if (!conn.ok()) return std::string(conn.status().message());
    absl::StatusOr<int64_t> one = ScalarInt(conn->get(), "select 1");
    return one.ok() ? "ok" : std::string(one.status().message());
  }

  // `config apply --wait` of `version` fails with the agent's NACK (exit 5), which says each of
  // `details`.
  void ExpectNacked(uint64_t version, const std::vector<std::string>& details) {
    FleetctlResult refused = ApplyWait(version);
    EXPECT_EQ(refused.exit_code, 5) << refused.Describe();
    EXPECT_THAT(refused.stderr_text, HasSubstr("NACK")) << refused.Describe();
    for (const std::string& detail : details) {
      EXPECT_THAT(refused.stderr_text, HasSubstr(detail)) << refused.Describe();
    }
  }

  // The agent's applied version, from `agents list`.
  uint64_t AppliedVersion() {
    FleetctlResult result = Ctl({"agents", "list", "--env", kEnv, "--output", "json"});
    absl::StatusOr<pgfleet::v1::ListAgentsResponse> list =
        ParseJson<pgfleet::v1::ListAgentsResponse>(result.stdout_text);
    EXPECT_TRUE(list.ok()) << list.status() << "\n" << result.Describe();
    if (!list.ok() || list->agents_size() != 1) return 0;
    return list->agents(0).applied_version();
  }
};

// The rules of the pushed file: the admin may not use appdb (it still reaches the console),
// every other user logs in with md5.
std::string RejectingAdminHba() {
  return absl::StrCat("# pushed by fleetctl\nhost ", kAppDb, " ", kAdminUser,
                      " 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 md5\n");
}

TEST_F(HbaPushTest, PushedHbaFileRulesAreEnforcedAndABrokenOneIsRefusedWithItsLine) {
  const uint64_t good = PushWithHba("hba-good.conf", RejectingAdminHba());
  ASSERT_NE(good, 0u);
  FleetctlResult applied = ApplyWait(good);
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe() << agent(kAgentId).Diagnostics();
  EXPECT_EQ(LoginOutcome(kAppUser, kAppPassword), "ok");
  EXPECT_THAT(LoginOutcome(kAdminUser, kAdminPassword), HasSubstr("login rejected"));
  // The key points at the agent's copy under its state dir, and the file shows by fingerprint.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> config, AdminShow(port(kAgentId), "SHOW CONFIG"));
  std::string hba_path;
  for (const NamedRow& row : config) {
    if (row.at("key") == "auth_hba_file") hba_path = row.at("value");
  }
  EXPECT_TRUE(absl::StartsWith(hba_path, StateDir(kAgentId) + "/files/auth_hba_file.")) << hba_path;
  FleetctlResult secrets = Ctl({"secrets", "list", "--env", kEnv});
  ASSERT_EQ(secrets.exit_code, 0) << secrets.Describe();
  EXPECT_THAT(secrets.stdout_text, HasSubstr("auth_hba_file")) << secrets.Describe();

  // Line 3 has a method pgfleet does not know: the controller parses the attached file and
  // refuses the push with the line; nothing is stored.
  const std::string broken_path = dir_ + "/hba-broken.conf";
  PGF_ASSERT_OK(
      WriteFile(broken_path, "host all all 127.0.0.1/32 md5\n\nhost all all 127.0.0.1/32 bogus\n"));
  FleetctlResult rejected =
      Ctl({"config", "push", "--env", kEnv, "-f", dir_ + "/fleet.ini", "--attach",
           absl::StrCat("auth_hba_file=", broken_path), "-m", "broken"});
  EXPECT_EQ(rejected.exit_code, 2) << rejected.Describe();
  EXPECT_THAT(rejected.stderr_text, HasSubstr("auth_hba_file:3: ")) << rejected.Describe();
  FleetctlResult versions = Ctl({"config", "list", "--env", kEnv, "--output", "json"});
  EXPECT_THAT(versions.stdout_text, Not(HasSubstr("\"broken\""))) << versions.Describe();

  // What only the agent's host can tell is its NACK, naming the line: here map=corp, whose
  // auth_ident_file is not pushed (the agent has none). The agent keeps the rules of `good`.
  const uint64_t unmapped =
      PushWithHba("hba-unmapped.conf",
                  "host all all 127.0.0.1/32 md5\n\nhost all all 127.0.0.1/32 md5 map=corp\n");
  ASSERT_NE(unmapped, 0u);
  ExpectNacked(unmapped, {"auth_hba_file: ", ":3: ident map \"corp\""});
  EXPECT_EQ(AppliedVersion(), good);
  EXPECT_EQ(LoginOutcome(kAppUser, kAppPassword), "ok");
  EXPECT_THAT(LoginOutcome(kAdminUser, kAdminPassword), HasSubstr("login rejected"));
}

TEST_F(HbaPushTest, IncludesOnlyFromTheAllowedPaths) {
  // Inside --allow-path: read, and its names are in force.
  PGF_ASSERT_OK(WriteFile(dir_ + "/blocked-users", absl::StrCat(kAdminUser, "\n")));
  const uint64_t inside = PushWithHba(
      "hba-inside.conf", absl::StrCat("host all @", dir_, "/blocked-users 127.0.0.1/32 reject\n",
                                      "host all all 127.0.0.1/32 md5\n"));
  ASSERT_NE(inside, 0u);
  FleetctlResult applied = ApplyWait(inside);
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe() << agent(kAgentId).Diagnostics();
  EXPECT_EQ(LoginOutcome(kAppUser, kAppPassword), "ok");
  EXPECT_THAT(LoginOutcome(kAdminUser, kAdminPassword), HasSubstr("login rejected"));

  // Outside it: a NACK naming the line and the file, and the agent keeps the rules it had.
  const uint64_t outside =
      PushWithHba("hba-outside.conf",
                  "host all all 127.0.0.1/32 md5\nhost all @/etc/passwd 127.0.0.1/32 reject\n");
  ASSERT_NE(outside, 0u);
  ExpectNacked(outside,
               {":2: @/etc/passwd: ", "/etc/passwd is outside the allowed paths (--allow-path)"});
  EXPECT_EQ(AppliedVersion(), inside);
  EXPECT_THAT(LoginOutcome(kAdminUser, kAdminPassword), HasSubstr("login rejected"));
  EXPECT_EQ(LoginOutcome(kAppUser, kAppPassword), "ok");
}

// The policy holds at every RELOAD of a pushed config, not only when the push was checked: an
// @file that was a symlink to an allowed file and now points outside is refused by the next
// RELOAD (which keeps the rules in force), not read.
TEST_F(HbaPushTest, AReloadHoldsIncludesToTheAllowedPathsAgain) {
  const std::string names = dir_ + "/blocked-real";
  const std::string link = dir_ + "/blocked-link";
  PGF_ASSERT_OK(WriteFile(names, absl::StrCat(kAppUser, "\n")));
  ASSERT_EQ(symlink(names.c_str(), link.c_str()), 0) << strerror(errno);
  const uint64_t version = PushWithHba(
      "hba-link.conf", absl::StrCat("host ", kAppDb, " @", link, " 127.0.0.1/32 reject\n",
                                    "host all all 127.0.0.1/32 md5\n"));
  ASSERT_NE(version, 0u);
  FleetctlResult applied = ApplyWait(version);
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe() << agent(kAgentId).Diagnostics();
  EXPECT_THAT(LoginOutcome(kAppUser, kAppPassword), HasSubstr("login rejected"));

  ASSERT_EQ(unlink(link.c_str()), 0);
  ASSERT_EQ(symlink("/etc/passwd", link.c_str()), 0) << strerror(errno);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Connect(TcpConnString(port(kAgentId), "pgbouncer",
                                                                 kAdminUser, kAdminPassword)));
  absl::StatusOr<std::string> reload = Command(console.get(), "RELOAD");
  ASSERT_FALSE(reload.ok()) << "RELOAD read an @file outside --allow-path";
  EXPECT_THAT(reload.status().message(),
              AllOf(HasSubstr("blocked-link (/etc/passwd) is outside the allowed paths"),
                    HasSubstr(":1: @")));
  EXPECT_THAT(LoginOutcome(kAppUser, kAppPassword), HasSubstr("login rejected"));
  EXPECT_EQ(AppliedVersion(), version);
}

}  // namespace
}  // namespace pgfleet::testutil
