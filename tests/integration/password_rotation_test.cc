// The password-rotation runbook (issue 18, part 1, "Done when"), end to end with real
// processes: a pgfleet-controller with a secrets key, three pgfleet-agents linked to it, a real
// PostgreSQL whose role's password changes, and clients that keep logging in through every
// agent for the whole rotation, each with the password PostgreSQL currently accepts.
//
// The runbook:
//   1. begin the rotation with an overlap (SecretsService.BeginRotation: the new secret, the old
//      one kept as the overlap's previous secret) and roll the new version out in waves
//      (fleetctl rollout start); clients still use the old password;
//   2. ALTER ROLE ... PASSWORD on PostgreSQL; clients switch to the new password;
//   3. end the rotation (SecretsService.EndRotation) and roll that version out: the overlap
//      is closed.
// Asserted: zero failed logins among all attempts, attempts in every phase through every
// agent, and the old password refused through every agent at the end.
//
// fleetctl has no `secrets` commands on this branch yet: the secrets calls go through the
// controller's gRPC SecretsService (what those commands will call), the rollouts through
// fleetctl.

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <atomic>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/fleet.grpc.pb.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/json.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

constexpr char kEnv[] = "prod";
constexpr char kRole[] = "rotated";
constexpr char kOldPassword[] = "old-Pass-1";
constexpr char kNewPassword[] = "new-Pass-2";
const std::vector<std::string> kAgents = {"p1", "p2", "p3"};

// Logins through every agent in a loop, each with the password PostgreSQL currently accepts
// (the test says which), counting attempts and failures per phase.
class LoginLoop {
 public:
  LoginLoop(std::vector<int> ports, std::string password)
      : ports_(std::move(ports)), password_(std::move(password)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~LoginLoop() { Stop(); }

  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // From the next attempt on, clients use `password` in phase `phase`.
  void Switch(const std::string& phase, const std::string& password) {
    std::lock_guard<std::mutex> lock(mu_);
    phase_ = phase;
    password_ = password;
  }
  void SetPhase(const std::string& phase) {
    std::lock_guard<std::mutex> lock(mu_);
    phase_ = phase;
  }
  // Waits until each agent has had at least `n` more logins.
  absl::Status AwaitMoreLogins(int n) {
    std::map<int, int64_t> start;
    {
      std::lock_guard<std::mutex> lock(mu_);
      start = per_port_;
    }
    return PollUntil(
        [&](std::string*) -> absl::StatusOr<bool> {
          std::lock_guard<std::mutex> lock(mu_);
          for (int port : ports_) {
            if (per_port_[port] - start[port] < n) return false;
          }
          return true;
        },
        absl::Seconds(60), "logins through every agent", absl::Milliseconds(20));
  }

  struct Counts {
    int64_t attempts = 0;
    int64_t failures = 0;
  };
  std::map<std::string, Counts> counts() {
    std::lock_guard<std::mutex> lock(mu_);
    return counts_;
  }
  std::vector<std::string> failures() {
    std::lock_guard<std::mutex> lock(mu_);
    return failure_messages_;
  }

 private:
  void Run() {
    size_t next = 0;
    while (!stop_) {
      const int port = ports_[next++ % ports_.size()];
      std::string password, phase;
      {
        std::lock_guard<std::mutex> lock(mu_);
        password = password_;
        phase = phase_;
      }
      absl::Status login = [&]() -> absl::Status {
        PGF_ASSIGN_OR_RETURN(PgConn conn, Connect(TcpConnString(port, kAppDb, kRole, password)));
        PGF_ASSIGN_OR_RETURN(int64_t one, ScalarInt(conn.get(), "select 1"));
        return one == 1 ? absl::OkStatus() : absl::InternalError("select 1 returned another value");
      }();
      std::lock_guard<std::mutex> lock(mu_);
      Counts& counts = counts_[phase];
      counts.attempts++;
      per_port_[port]++;
      if (!login.ok()) {
        counts.failures++;
        failure_messages_.push_back(absl::StrCat(phase, " port ", port, ": ", login.ToString()));
      }
    }
  }

  std::vector<int> ports_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::string password_;                       // Guarded by mu_.
  std::string phase_ = "before";               // Guarded by mu_.
  std::map<std::string, Counts> counts_;       // Guarded by mu_.
  std::map<int, int64_t> per_port_;            // Guarded by mu_.
  std::vector<std::string> failure_messages_;  // Guarded by mu_.
  std::thread thread_;
};

class PasswordRotationTest : public FleetFixture {
 protected:
  PasswordRotationTest() : FleetFixture("pgfleet-rotation") {}

  void SetUp() override {
    ASSERT_NE(g_pg, nullptr) << "the shared PostgreSQL cluster did not start";
    ASSERT_NO_FATAL_FAILURE(FleetFixture::SetUp());
    // The key that encrypts secret material in the controller's SQLite file.
    key_path_ = dir_ + "/secrets.key";
    PGF_ASSERT_OK(
        WriteFile(key_path_, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"));
    chmod(key_path_.c_str(), 0600);
    ControllerOptions options;
    options.extra_args = {absl::StrCat("--secrets-key-file=", key_path_)};
    ASSERT_NO_FATAL_FAILURE(StartController(std::move(options)));
    channel_ = grpc::CreateChannel(controller_->address(), grpc::InsecureChannelCredentials());
    secrets_ = pgfleet::v1::SecretsService::NewStub(channel_);
  }

  // The fleet's ini: appdb on the shared cluster, SCRAM for clients, the auth_file the
  // controller pushes (the path here is replaced by the pushed file's).
  std::string FleetIni() {
    return absl::StrCat(
        "[databases]\n", kAppDb, " = host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb,
        "\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = ", port("p1"),
        "\nunix_socket_dir =\nauth_type = scram-sha-256\nauth_file = ", users_path_,
        "\nadmin_users = ", kAdminUser, "\npool_mode = transaction\ndefault_pool_size = 2\n");
  }

  template <typename Request, typename Response, typename Call>
  absl::StatusOr<Response> Secrets(Call call, const Request& request) {
    grpc::ClientContext context;
    context.AddMetadata("authorization", absl::StrCat("Bearer ", token_));
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    Response response;
    grpc::Status status = ((*secrets_).*call)(&context, request, &response);
    if (!status.ok()) {
      return absl::InternalError(absl::StrCat("SecretsService: ", status.error_message()));
    }
    return response;
  }

  absl::StatusOr<uint64_t> SetUserSecret(const std::string& user, const std::string& password) {
    pgfleet::v1::SetUserSecretRequest request;
    request.set_environment(kEnv);
    request.set_user(user);
    request.set_secret(password);
    request.set_plaintext(true);  // The agents log in to PostgreSQL with it.
    PGF_ASSIGN_OR_RETURN(auto change,
                         (Secrets<pgfleet::v1::SetUserSecretRequest, pgfleet::v1::SecretsChange>(
                             &pgfleet::v1::SecretsService::Stub::SetUserSecret, request)));
    return change.version().version();
  }

  // `fleetctl rollout start` in two waves (a canary, then the rest), waiting for it to end.
  void RollOut(uint64_t version) {
    FleetctlResult start =
        Ctl({"rollout", "start", "--env", kEnv, "--version", absl::StrCat("v", version), "--waves",
             "1,100%", "--bake", "1s", "--watch"});
    ASSERT_EQ(start.exit_code, 0) << start.Describe();
    PGF_ASSERT_OK(WaitApplied(version));
  }

  absl::Status WaitApplied(uint64_t version) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          FleetctlResult result = Ctl({"agents", "list", "--env", kEnv, "--output", "json"});
          if (result.exit_code != 0) {
            *note = result.Describe();
            return false;
          }
          absl::StatusOr<pgfleet::v1::ListAgentsResponse> list =
              ParseJson<pgfleet::v1::ListAgentsResponse>(result.stdout_text);
          if (!list.ok()) return list.status();
          int applied = 0;
          for (const pgfleet::v1::Agent& agent : list->agents()) {
            if (agent.connected() && agent.applied_version() == version) ++applied;
          }
          *note = result.stdout_text;
          return applied == static_cast<int>(kAgents.size());
        },
        absl::Seconds(60), absl::StrCat("every agent on v", version));
  }

  std::vector<int> Ports() {
    std::vector<int> ports;
    for (const std::string& id : kAgents) ports.push_back(port(id));
    return ports;
  }

  std::string key_path_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pgfleet::v1::SecretsService::Stub> secrets_;
};

TEST_F(PasswordRotationTest, RunbookRotatesWithoutAFailedLogin) {
  (void)g_pg->Exec(absl::StrCat("drop role if exists ", kRole));
  PGF_ASSERT_OK(g_pg->CreateUser(kRole, kOldPassword));
  PGF_ASSERT_OK(g_pg->Exec(absl::StrCat("grant all on database ", kAppDb, " to ", kRole)));

  for (const std::string& id : kAgents) {
    AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                            {"pool_mode", "transaction"},
                                            {"default_pool_size", "2"},
                                            {"admin_users", kAdminUser}});
    options.extra_args = LinkArgs(id, kEnv, controller_->address());
    // Several agents of one environment on this host: each keeps its own port.
    options.extra_args.push_back("--local-listeners");
    options.extra_args.push_back(absl::StrCat("--allow-path=", dir_));
    ASSERT_NO_FATAL_FAILURE(StartLinkedAgent(id, options));
  }

  // The base: the ini, then the fleet's users with their current secrets (the role's old
  // password), applied everywhere.
  const std::string ini_path = dir_ + "/fleet.ini";
  PGF_ASSERT_OK(WriteFile(ini_path, FleetIni()));
  FleetctlResult pushed = Ctl({"config", "push", "--env", kEnv, "-f", ini_path, "-m", "base"});
  ASSERT_EQ(pushed.exit_code, 0) << pushed.Describe();
  PGF_ASSERT_OK(SetUserSecret(kAdminUser, kAdminPassword).status());
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t base, SetUserSecret(kRole, kOldPassword));
  FleetctlResult applied =
      Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", base), "--wait"});
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  PGF_ASSERT_OK(WaitApplied(base));

  LoginLoop clients(Ports(), kOldPassword);
  PGF_ASSERT_OK(clients.AwaitMoreLogins(3));

  // 1. Begin the rotation: the new secret, the old one accepted for 10 minutes; rolled out.
  clients.SetPhase("begin");
  pgfleet::v1::BeginRotationRequest begin;
  begin.set_environment(kEnv);
  begin.set_user(kRole);
  begin.set_new_secret(kNewPassword);
  begin.set_plaintext(true);
  begin.set_overlap_seconds(600);
  begin.set_message("rotate rotated: begin");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::SecretsChange begun,
                           (Secrets<pgfleet::v1::BeginRotationRequest, pgfleet::v1::SecretsChange>(
                               &pgfleet::v1::SecretsService::Stub::BeginRotation, begin)));
  ASSERT_NO_FATAL_FAILURE(RollOut(begun.version().version()));
  // Every agent now holds the new secret, PostgreSQL the old one: clients on the old password
  // still get in (the agents accept the previous secret and log in to PostgreSQL with it).
  PGF_ASSERT_OK(clients.AwaitMoreLogins(3));
  for (const std::string& id : kAgents) {
    PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> state, AdminShow(port(id), "SHOW STATE"));
    bool open = false;
    for (const NamedRow& row : state)
      open |= row.at("key") == absl::StrCat("credential_overlap:", kRole);
    EXPECT_TRUE(open) << id << " shows no open overlap";
  }

  // 2. PostgreSQL takes the new password; clients switch to it.
  PGF_ASSERT_OK(g_pg->Exec(absl::StrCat("alter role ", kRole, " password '", kNewPassword, "'")));
  clients.Switch("switched", kNewPassword);
  PGF_ASSERT_OK(clients.AwaitMoreLogins(3));

  // 3. End the rotation: only the new secret; rolled out.
  clients.SetPhase("end");
  pgfleet::v1::EndRotationRequest end;
  end.set_environment(kEnv);
  end.set_user(kRole);
  end.set_message("rotate rotated: end");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::SecretsChange ended,
                           (Secrets<pgfleet::v1::EndRotationRequest, pgfleet::v1::SecretsChange>(
                               &pgfleet::v1::SecretsService::Stub::EndRotation, end)));
  ASSERT_NO_FATAL_FAILURE(RollOut(ended.version().version()));
  clients.SetPhase("after");
  PGF_ASSERT_OK(clients.AwaitMoreLogins(3));
  clients.Stop();

  int64_t attempts = 0;
  for (const auto& [phase, counts] : clients.counts()) {
    EXPECT_GT(counts.attempts, 0) << phase;
    EXPECT_EQ(counts.failures, 0) << phase;
    attempts += counts.attempts;
  }
  EXPECT_EQ(clients.counts().size(), 5u);
  EXPECT_TRUE(clients.failures().empty()) << absl::StrJoin(clients.failures(), "\n");
  std::cout << "logins attempted through the rotation: " << attempts
            << ", failed: " << clients.failures().size() << "\n";

  // The old password is refused everywhere now; the new one works.
  for (const std::string& id : kAgents) {
    absl::StatusOr<PgConn> old_login =
        Connect(TcpConnString(port(id), kAppDb, kRole, kOldPassword));
    EXPECT_FALSE(old_login.ok()) << id << " still accepts the old password";
    if (!old_login.ok()) {
      EXPECT_TRUE(absl::StrContains(old_login.status().message(), "authentication failed"))
          << old_login.status();
    }
    PGF_ASSERT_OK_AND_ASSIGN(PgConn new_login,
                             Connect(TcpConnString(port(id), kAppDb, kRole, kNewPassword)));
    PGF_EXPECT_OK(ScalarInt(new_login.get(), "select 1").status());
    PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> state, AdminShow(port(id), "SHOW STATE"));
    for (const NamedRow& row : state) {
      EXPECT_NE(row.at("key"), absl::StrCat("credential_overlap:", kRole)) << id;
    }
    // Which secret PostgreSQL took is logged; the secrets never are.
    const std::string log = agent(id).LogContents();
    EXPECT_FALSE(absl::StrContains(log, kOldPassword)) << id;
    EXPECT_FALSE(absl::StrContains(log, kNewPassword)) << id;
  }
  // Nor in the controller's log, nor in clear in its SQLite file.
  const std::string controller_log = ReadFileTail(controller_->log_path(), 1 << 22);
  EXPECT_FALSE(absl::StrContains(controller_log, kOldPassword));
  EXPECT_FALSE(absl::StrContains(controller_log, kNewPassword));
  for (const char* suffix : {"", "-wal"}) {
    absl::StatusOr<std::string> db = ReadFile(controller_->db_path() + suffix);
    if (db.ok()) {
      EXPECT_FALSE(absl::StrContains(*db, kNewPassword)) << suffix;
    }
  }
}

}  // namespace
}  // namespace pgfleet::testutil
