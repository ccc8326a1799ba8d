// Credentials and TLS material pushed with a config, and password-rotation overlaps (issue 18,
// part 1, the agent's side), with the real pgfleet-agent binary and a real PostgreSQL.
//
// The agent is driven over its real gRPC link by a controller stand-in in this process
// (StubController below): it speaks AgentService.Connect as pgfleet-controller does and lets a
// test send any DesiredConfig (files, overlaps, a bad sha256) and read the agent's ACK/NACK.
// The end-to-end rotation through the real controller and fleetctl is password_rotation_test.
//
// - Pushed files land in <state dir>/files/, mode 0600, owned by the agent's user, named per key
//   and content; the applied ini points at them; a later version's files replace them and the
//   old ones are removed once it is in force.
// - A bad sha256, an unknown key or a reload failure is a NACK that keeps the old config, its
//   files and its logins; the refused version's new files are removed.
// - A restart without the controller serves the last applied config, files and overlaps.
// - An overlap accepts the previous password for client logins (SCRAM, md5, plaintext secrets
//   and a SCRAM verifier) until it expires, then only the current one.
// - A server login PostgreSQL refuses with the current secret is retried with the previous one
//   while the overlap is open.
// - A new client certificate pushed as files: established TLS sessions go on, new handshakes get
//   the new certificate.

#include <grpcpp/grpcpp.h>
#include <libpq-fe.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/link/fleet_agent.h"
#include "common/auth_crypto.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/agent.grpc.pb.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

using pgfleet::v1::AgentMessage;
using pgfleet::v1::ConfigResult;
using pgfleet::v1::ControllerMessage;
using pgfleet::v1::DesiredConfig;

// The controller's side of AgentService.Connect, for one agent at a time: answers the hello,
// sends what the test asks, and collects the agent's config results.
class StubController final : public pgfleet::v1::AgentService::Service {
 public:
  static std::unique_ptr<StubController> Start() {
    auto stub = std::unique_ptr<StubController>(new StubController());
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &stub->port_);
    builder.RegisterService(stub.get());
    stub->server_ = builder.BuildAndStart();
    if (stub->server_ == nullptr || stub->port_ == 0) return nullptr;
    return stub;
  }
  ~StubController() override {
    if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  absl::Status AwaitConnected() {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, std::chrono::seconds(20), [&] { return stream_ != nullptr; })) {
      return absl::DeadlineExceededError("the agent did not connect to the stub controller");
    }
    return absl::OkStatus();
  }

  // Sends `desired` and waits for the agent's result for its version.
  absl::StatusOr<ConfigResult> Apply(const DesiredConfig& desired) {
    PGF_RETURN_IF_ERROR(AwaitConnected());
    std::unique_lock<std::mutex> lock(mu_);
    ControllerMessage message;
    *message.mutable_desired_config() = desired;
    if (!stream_->Write(message)) return absl::UnavailableError("stream write failed");
    ConfigResult result;
    if (!cv_.wait_for(lock, std::chrono::seconds(30), [&] {
          for (auto it = results_.begin(); it != results_.end(); ++it) {
            if (it->version() == desired.version()) {
              result = *it;
              results_.erase(it);
              return true;
            }
          }
          return false;
        })) {
      return absl::DeadlineExceededError(
          absl::StrCat("no config result for version ", desired.version()));
    }
    return result;
  }

  grpc::Status Connect(grpc::ServerContext*,
                       grpc::ServerReaderWriter<ControllerMessage, AgentMessage>* stream) override {
    AgentMessage message;
    if (!stream->Read(&message) || !message.has_hello()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hello first");
    }
    ControllerMessage ack;
    ack.mutable_hello_ack()->set_metrics_interval_seconds(60);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream->Write(ack);
      stream_ = stream;
    }
    cv_.notify_all();
    while (stream->Read(&message)) {
      if (!message.has_config_result()) continue;
      std::lock_guard<std::mutex> lock(mu_);
      results_.push_back(message.config_result());
      cv_.notify_all();
    }
    std::lock_guard<std::mutex> lock(mu_);
    stream_ = nullptr;
    return grpc::Status::OK;
  }

 private:
  StubController() = default;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mu_;
  std::condition_variable cv_;
  grpc::ServerReaderWriter<ControllerMessage, AgentMessage>* stream_ = nullptr;  // Guarded.
  std::deque<ConfigResult> results_;                                             // Guarded.
};

std::string AuthFileText(const std::map<std::string, std::string>& users) {
  std::string text;
  for (const auto& [user, secret] : users) absl::StrAppend(&text, UserlistLine(user, secret), "\n");
  return text;
}

pgfleet::v1::ConfigFile* AddFile(DesiredConfig& desired, const std::string& key,
                                 const std::string& content) {
  pgfleet::v1::ConfigFile* file = desired.add_files();
  file->set_key(key);
  file->set_content(content);
  file->set_sha256(agent::Sha256Hex(content));
  return file;
}

void AddOverlap(DesiredConfig& desired, const std::string& user, const std::string& previous,
                absl::Time expires) {
  pgfleet::v1::CredentialOverlap* overlap = desired.add_credential_overlaps();
  overlap->set_user(user);
  overlap->set_previous_secret(previous);
  overlap->set_expires_unix_ms(absl::ToUnixMillis(expires));
}

// Names of the regular files in `dir`.
std::set<std::string> FilesIn(const std::string& dir) {
  std::set<std::string> names;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    names.insert(entry.path().filename().string());
  }
  return names;
}

class ConfigFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NE(g_pg, nullptr);
    PGF_ASSERT_OK(temp_dir_.Create("pgfleet-configfiles"));
    state_dir_ = temp_dir_.path() + "/state";
    stub_ = StubController::Start();
    ASSERT_NE(stub_, nullptr);
  }
  void TearDown() override {
    if (agent_ != nullptr) {
      if (HasFailure()) std::cerr << agent_->Diagnostics();
      ExpectCleanStop(*agent_);
    }
    agent_.reset();
    stub_.reset();
  }

  // The agent's local ini: appdb on the shared cluster, only the admin in its own userlist,
  // linked to `controller` with state in state_dir_.
  AgentOptions Options(const std::string& controller,
                       const std::map<std::string, std::string>& settings) const {
    AgentOptions options;
    options.databases_section =
        absl::StrCat(kAppDb, " = host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb, "\n");
    options.pgbouncer_settings = {{"auth_type", "scram-sha-256"},
                                  {"admin_users", kAdminUser},
                                  {"pool_mode", "transaction"},
                                  {"default_pool_size", "2"}};
    for (const auto& [key, value] : settings) options.pgbouncer_settings[key] = value;
    options.userlist = {{kAdminUser, kAdminPassword}};
    options.extra_args = {absl::StrCat("--controller=", controller), "--env=test",
                          "--agent-id=files-agent", absl::StrCat("--state-dir=", state_dir_),
                          absl::StrCat("--allow-path=", temp_dir_.path())};
    return options;
  }

  void StartAgent(const std::map<std::string, std::string>& settings = {}) {
    PGF_ASSERT_OK_AND_ASSIGN(agent_, AgentProcess::Start(Options(stub_->address(), settings)));
    PGF_ASSERT_OK(stub_->AwaitConnected());
    PGF_ASSERT_OK_AND_ASSIGN(local_ini_, ReadFile(agent_->ini_path()));
  }

  // A desired config: the agent's own ini (so listen_port etc. stay), version `version`.
  DesiredConfig Desired(uint64_t version) const {
    DesiredConfig desired;
    desired.set_version(version);
    desired.set_ini_text(local_ini_);
    desired.set_sha256(agent::Sha256Hex(local_ini_));
    return desired;
  }

  absl::StatusOr<ConfigResult> Apply(const DesiredConfig& desired) { return stub_->Apply(desired); }

  void ExpectAck(const DesiredConfig& desired) {
    absl::StatusOr<ConfigResult> result = Apply(desired);
    ASSERT_TRUE(result.ok()) << result.status();
    ASSERT_TRUE(result->accepted()) << "version " << desired.version() << ": " << result->error();
  }

  // The NACK's error.
  std::string ExpectNack(const DesiredConfig& desired) {
    absl::StatusOr<ConfigResult> result = Apply(desired);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return "";
    EXPECT_FALSE(result->accepted()) << "version " << desired.version() << " was applied";
    return result->error();
  }

  absl::Status Login(const std::string& user, const std::string& password) const {
    PGF_ASSIGN_OR_RETURN(PgConn conn, Connect(agent_->ConnString(kAppDb, user, password)));
    PGF_ASSIGN_OR_RETURN(int64_t one, ScalarInt(conn.get(), "select 1"));
    if (one != 1) return absl::InternalError("select 1 did not return 1");
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> ConfigValue(const std::string& key) const {
    PGF_ASSIGN_OR_RETURN(std::vector<NamedRow> rows, AdminShow(agent_->port(), "SHOW CONFIG"));
    for (const NamedRow& row : rows) {
      if (row.at("key") == key) return row.at("value");
    }
    return absl::NotFoundError(key);
  }

  absl::StatusOr<std::map<std::string, std::string>> State() const {
    PGF_ASSIGN_OR_RETURN(std::vector<NamedRow> rows, AdminShow(agent_->port(), "SHOW STATE"));
    std::map<std::string, std::string> state;
    for (const NamedRow& row : rows) state[row.at("key")] = row.at("value");
    return state;
  }

  std::string FilesDir() const { return state_dir_ + "/files"; }
  std::string PushedPath(const std::string& key, const std::string& content) const {
    return agent::PushedFilePath(state_dir_, key, agent::Sha256Hex(content));
  }

  // A role on the shared cluster, with its own password, for one test.
  void CreateRole(const std::string& role, const std::string& password,
                  const std::string& encryption = "scram-sha-256") {
    // One role per test: a role with grants cannot simply be dropped and made again.
    PGF_ASSERT_OK(g_pg->CreateUser(role, password, encryption));
    PGF_ASSERT_OK(g_pg->Exec(absl::StrCat("grant all on database ", kAppDb, " to ", role)));
  }

  TempDir temp_dir_;
  std::string state_dir_;
  std::unique_ptr<StubController> stub_;
  std::unique_ptr<AgentProcess> agent_;
  std::string local_ini_;
};

TEST_F(ConfigFilesTest, PushedAuthFileIsWrittenPrivatelyAndTheIniPointsAtIt) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  // Only the pushed auth_file knows kAppUser.
  EXPECT_FALSE(Login(kAppUser, kAppPassword).ok());

  const std::string v1 = AuthFileText({{kAdminUser, kAdminPassword}, {kAppUser, kAppPassword}});
  DesiredConfig desired = Desired(1);
  AddFile(desired, "auth_file", v1);
  ASSERT_NO_FATAL_FAILURE(ExpectAck(desired));

  const std::string path = PushedPath("auth_file", v1);
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0) << path;
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_uid, geteuid());
  PGF_ASSERT_OK_AND_ASSIGN(std::string written, ReadFile(path));
  EXPECT_EQ(written, v1);
  EXPECT_EQ(FilesIn(FilesDir()), (std::set<std::string>{std::filesystem::path(path).filename()}));
  PGF_ASSERT_OK_AND_ASSIGN(std::string in_force, ConfigValue("auth_file"));
  EXPECT_EQ(in_force, path);
  PGF_ASSERT_OK_AND_ASSIGN(std::string applied_ini, ReadFile(state_dir_ + "/applied.ini"));
  EXPECT_TRUE(absl::StrContains(applied_ini, absl::StrCat("auth_file = ", path))) << applied_ini;
  PGF_EXPECT_OK(Login(kAppUser, kAppPassword));

  // Version 2 replaces the file: a new name, the old one removed once v2 is in force.
  const std::string v2 =
      AuthFileText({{kAdminUser, kAdminPassword}, {kAppUser, kAppPassword}, {"other", "x-1"}});
  DesiredConfig second = Desired(2);
  AddFile(second, "auth_file", v2);
  ASSERT_NO_FATAL_FAILURE(ExpectAck(second));
  EXPECT_EQ(FilesIn(FilesDir()),
            (std::set<std::string>{std::filesystem::path(PushedPath("auth_file", v2)).filename()}));
  PGF_ASSERT_OK_AND_ASSIGN(in_force, ConfigValue("auth_file"));
  EXPECT_EQ(in_force, PushedPath("auth_file", v2));
  PGF_EXPECT_OK(Login(kAppUser, kAppPassword));
  // No secret in the agent's log.
  EXPECT_FALSE(absl::StrContains(agent_->LogContents(), kAppPassword));
}

TEST_F(ConfigFilesTest, BadSha256UnknownKeyAndReloadFailureKeepTheOldFilesAndLogins) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  const std::string v1 = AuthFileText({{kAdminUser, kAdminPassword}, {kAppUser, kAppPassword}});
  DesiredConfig first = Desired(1);
  AddFile(first, "auth_file", v1);
  ASSERT_NO_FATAL_FAILURE(ExpectAck(first));
  const std::set<std::string> v1_files = FilesIn(FilesDir());

  const std::string changed =
      AuthFileText({{kAdminUser, kAdminPassword}, {kAppUser, "a-new-password"}});
  // A file whose content does not match its sha256.
  DesiredConfig bad_sha = Desired(2);
  AddFile(bad_sha, "auth_file", changed)->set_sha256(agent::Sha256Hex("something else"));
  std::string error = ExpectNack(bad_sha);
  EXPECT_TRUE(absl::StrContains(error, "auth_file") && absl::StrContains(error, "sha256")) << error;

  // A key no pushed file may back.
  DesiredConfig bad_key = Desired(3);
  AddFile(bad_key, "auth_file", changed);
  AddFile(bad_key, "logfile", "x");
  error = ExpectNack(bad_key);
  EXPECT_TRUE(absl::StrContains(error, "'logfile'")) << error;

  // A reload failure: the new auth_file is fine, the TLS key and certificate are not.
  DesiredConfig bad_tls = Desired(4);
  AddFile(bad_tls, "auth_file", changed);
  AddFile(bad_tls, "client_tls_key_file", "not a key\n");
  AddFile(bad_tls, "client_tls_cert_file", "not a certificate\n");
  bad_tls.set_ini_text(local_ini_ + "\n[pgbouncer]\nclient_tls_sslmode = allow\n");
  bad_tls.set_sha256(agent::Sha256Hex(bad_tls.ini_text()));
  error = ExpectNack(bad_tls);
  EXPECT_TRUE(absl::StrContains(error, "client_tls_")) << error;

  // Nothing of the refused versions stayed; version 1 is in force, files and logins alike.
  EXPECT_EQ(FilesIn(FilesDir()), v1_files);
  PGF_ASSERT_OK_AND_ASSIGN(std::string in_force, ConfigValue("auth_file"));
  EXPECT_EQ(in_force, PushedPath("auth_file", v1));
  PGF_EXPECT_OK(Login(kAppUser, kAppPassword));
  EXPECT_FALSE(Login(kAppUser, "a-new-password").ok());
  PGF_ASSERT_OK_AND_ASSIGN(std::string applied_ini, ReadFile(state_dir_ + "/applied.ini"));
  EXPECT_TRUE(absl::StrContains(applied_ini, PushedPath("auth_file", v1)));
  PGF_ASSERT_OK_AND_ASSIGN(std::string meta, ReadFile(state_dir_ + "/applied.version"));
  EXPECT_TRUE(absl::StartsWith(meta, "1 ")) << meta;
}

TEST_F(ConfigFilesTest, OverlapAcceptsBothClientPasswordsUntilItExpires) {
  ASSERT_NO_FATAL_FAILURE(CreateRole("plainuser", "plain-new"));
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  // Current: PostgreSQL's own SCRAM verifier for kAppUser (the agent logs in to PostgreSQL
  // with the keys a client's SCRAM login proves), plaintext for "plainuser"; previous:
  // plaintext for both. SCRAM logins check the previous password against the salt shown.
  PGF_ASSERT_OK_AND_ASSIGN(
      Rows verifier, g_pg->Exec(absl::StrCat("select rolpassword from pg_authid where rolname = '",
                                             kAppUser, "'")));
  ASSERT_EQ(verifier.size(), 1u);
  DesiredConfig desired = Desired(1);
  AddFile(
      desired, "auth_file",
      AuthFileText(
          {{kAdminUser, kAdminPassword}, {kAppUser, verifier[0][0]}, {"plainuser", "plain-new"}}));
  const absl::Time expires = absl::Now() + absl::Seconds(6);
  AddOverlap(desired, kAppUser, "app-old-password", expires);
  AddOverlap(desired, "plainuser", "plain-old", expires);
  ASSERT_NO_FATAL_FAILURE(ExpectAck(desired));

  // The server logins use the current secret, which PostgreSQL takes (for kAppUser: the keys
  // of a client that proved the current password, so that login comes first).
  PGF_EXPECT_OK(Login(kAppUser, kAppPassword));
  PGF_EXPECT_OK(Login(kAppUser, "app-old-password"));
  EXPECT_FALSE(Login(kAppUser, "neither").ok());
  auto agent_accepts = [&](const std::string& user, const std::string& password) {
    return Login(user, password).ok();
  };
  EXPECT_TRUE(agent_accepts("plainuser", "plain-new"));
  EXPECT_TRUE(agent_accepts("plainuser", "plain-old"));
  EXPECT_FALSE(agent_accepts("plainuser", "plain-wrong"));

  // The overlap is visible (user and expiry), its secret is not.
  PGF_ASSERT_OK_AND_ASSIGN(auto state, State());
  EXPECT_EQ(state.count(absl::StrCat("credential_overlap:", kAppUser)), 1u);
  EXPECT_FALSE(absl::StrContains(agent_->LogContents(), "app-old-password"));
  EXPECT_TRUE(absl::StrContains(agent_->LogContents(), "overlap for user 'app' open until"));

  // After the expiry, with no controller action, only the current password.
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return !agent_accepts("plainuser", "plain-old");
      },
      absl::Seconds(30), "the overlap to expire"));
  EXPECT_GE(absl::Now(), expires);
  EXPECT_FALSE(Login(kAppUser, "app-old-password").ok());
  PGF_EXPECT_OK(Login(kAppUser, kAppPassword));
  EXPECT_TRUE(agent_accepts("plainuser", "plain-new"));
  PGF_ASSERT_OK_AND_ASSIGN(state, State());
  EXPECT_EQ(state.count(absl::StrCat("credential_overlap:", kAppUser)), 0u);
}

// The runbook's usual case: the user was set with fleetctl's default (a SCRAM verifier, its own
// random salt) and is rotated to a plaintext password (the agent logs in to PostgreSQL with it).
// A SCRAM client can only answer the salt it is shown, so the agent shows the previous
// verifier's salt and derives the current password's keys with it: both passwords log in.
TEST_F(ConfigFilesTest, OverlapFromAVerifierToAPlaintextPasswordAcceptsBothOverScram) {
  ASSERT_NO_FATAL_FAILURE(CreateRole("verifuser", "verif-new"));
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  const std::string old_verifier = crypto::FormatScramSecret(
      crypto::ScramKeysFromPassword("verif-old", crypto::RandomBytes(16), 4096));
  DesiredConfig desired = Desired(1);
  AddFile(desired, "auth_file",
          AuthFileText({{kAdminUser, kAdminPassword}, {"verifuser", "verif-new"}}));
  AddOverlap(desired, "verifuser", old_verifier, absl::Now() + absl::Minutes(10));
  ASSERT_NO_FATAL_FAILURE(ExpectAck(desired));
  PGF_EXPECT_OK(Login("verifuser", "verif-new"));
  PGF_EXPECT_OK(Login("verifuser", "verif-old"));
  EXPECT_FALSE(Login("verifuser", "verif-wrong").ok());
}

TEST_F(ConfigFilesTest, OverlapAcceptsThePreviousPasswordWithMd5Auth) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"auth_type", "md5"}}));
  DesiredConfig desired = Desired(1);
  AddFile(desired, "auth_file",
          AuthFileText({{kAdminUser, kAdminPassword}, {kAppUser, kAppPassword}}));
  // The previous secret as an md5 hash.
  AddOverlap(desired, kAppUser, crypto::Md5PasswordHash("app-old-md5", kAppUser),
             absl::Now() + absl::Minutes(10));
  ASSERT_NO_FATAL_FAILURE(ExpectAck(desired));
  PGF_EXPECT_OK(Login(kAppUser, kAppPassword));
  PGF_EXPECT_OK(Login(kAppUser, "app-old-md5"));
  EXPECT_FALSE(Login(kAppUser, "neither").ok());

  // The next version without the overlap closes it at once.
  DesiredConfig closed = Desired(2);
  AddFile(closed, "auth_file",
          AuthFileText({{kAdminUser, kAdminPassword}, {kAppUser, kAppPassword}}));
  ASSERT_NO_FATAL_FAILURE(ExpectAck(closed));
  EXPECT_FALSE(Login(kAppUser, "app-old-md5").ok());
  PGF_EXPECT_OK(Login(kAppUser, kAppPassword));
  EXPECT_FALSE(std::filesystem::exists(state_dir_ + "/applied.overlaps"));
}

TEST_F(ConfigFilesTest, ServerLoginFallsBackToThePreviousSecretWhilePostgresHasTheOldOne) {
  const std::string role = "rotating";
  ASSERT_NO_FATAL_FAILURE(CreateRole(role, "rot-old"));
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  // The auth_file already has the new password; PostgreSQL still the old one.
  DesiredConfig desired = Desired(1);
  AddFile(desired, "auth_file", AuthFileText({{kAdminUser, kAdminPassword}, {role, "rot-new"}}));
  AddOverlap(desired, role, "rot-old", absl::Now() + absl::Minutes(10));
  ASSERT_NO_FATAL_FAILURE(ExpectAck(desired));

  // Clients on either password reach PostgreSQL: the agent logs in with the old one.
  PGF_EXPECT_OK(Login(role, "rot-new"));
  PGF_EXPECT_OK(Login(role, "rot-old"));
  EXPECT_TRUE(absl::StrContains(agent_->LogContents(), "PostgreSQL accepted the previous secret"))
      << agent_->LogContents();

  // PostgreSQL moves to the new password: new server logins use the current secret.
  PGF_ASSERT_OK(g_pg->Exec(absl::StrCat("alter role ", role, " password 'rot-new'")));
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn console,
                             Connect(agent_->ConnString("pgbouncer", kAdminUser, kAdminPassword)));
    PGF_ASSERT_OK(Command(console.get(), "RECONNECT").status());
  }
  // A server login after the RECONNECT (the old servers are closed as they are released).
  PGF_EXPECT_OK(Login(role, "rot-new"));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return absl::StrContains(agent_->LogContents(), "PostgreSQL accepted the current secret");
      },
      absl::Seconds(20), "a server login with the current secret", absl::Milliseconds(100)));
  EXPECT_FALSE(absl::StrContains(agent_->LogContents(), "rot-old"));
  EXPECT_FALSE(absl::StrContains(agent_->LogContents(), "rot-new"));
}

TEST_F(ConfigFilesTest, RestartWithoutTheControllerServesTheAppliedFilesAndOverlaps) {
  ASSERT_NO_FATAL_FAILURE(CreateRole("restartuser", "plain-new"));
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  const std::string text =
      AuthFileText({{kAdminUser, kAdminPassword}, {"restartuser", "plain-new"}});
  DesiredConfig desired = Desired(1);
  // The next agent process has a directory of its own: the pushed config logs where both may.
  desired.set_ini_text(
      local_ini_ + absl::StrCat("\n[pgbouncer]\nlogfile = ", temp_dir_.path(), "/pushed.log\n"));
  desired.set_sha256(agent::Sha256Hex(desired.ini_text()));
  AddFile(desired, "auth_file", text);
  AddOverlap(desired, "restartuser", "plain-old", absl::Now() + absl::Minutes(10));
  ASSERT_NO_FATAL_FAILURE(ExpectAck(desired));
  struct stat st {};
  ASSERT_EQ(stat((state_dir_ + "/applied.overlaps").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // Stop, and start again on the same command line (same ini, port and state dir) with no
  // controller to talk to.
  ExpectCleanStop(*agent_);
  stub_.reset();
  PGF_ASSERT_OK_AND_ASSIGN(int dead_port, PickFreePort());
  const char* foreign = std::getenv("PGFLEET_TEST_AGENT_BINARY");
  std::vector<std::string> argv = {foreign != nullptr ? foreign : PGFLEET_AGENT_BINARY};
  for (const std::string& arg : Options(absl::StrCat("127.0.0.1:", dead_port), {}).extra_args) {
    argv.push_back(arg);
  }
  argv.push_back(agent_->ini_path());
  SpawnOptions spawn;
  spawn.stderr_path = temp_dir_.path() + "/restarted.stderr";
  PGF_ASSERT_OK_AND_ASSIGN(pid_t restarted, Spawn(argv, spawn));
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      kill(pid, SIGTERM);
      absl::StatusOr<int> status = WaitPid(pid, absl::Seconds(10));
      EXPECT_TRUE(status.ok() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
          << "the restarted agent did not exit cleanly";
    }
  } reaper{restarted};
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = ReadFileTail(spawn.stderr_path, 1024);
        return CanConnect(agent_->port());
      },
      absl::Seconds(15), "the restarted agent to listen"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string in_force, ConfigValue("auth_file"));
  EXPECT_EQ(in_force, PushedPath("auth_file", text));
  auto agent_accepts = [&](const std::string& user, const std::string& password) {
    return Login(user, password).ok();
  };
  EXPECT_TRUE(agent_accepts("restartuser", "plain-new"));
  EXPECT_TRUE(agent_accepts("restartuser", "plain-old"));
  EXPECT_FALSE(agent_accepts("restartuser", "plain-wrong"));
  PGF_ASSERT_OK_AND_ASSIGN(auto state, State());
  EXPECT_EQ(state.count("credential_overlap:restartuser"), 1u);
}

// The sha256 of the certificate the server presented on `conn` (hex), or "" without TLS.
std::string PeerCertificateSha256(PGconn* conn) {
  auto* ssl = static_cast<SSL*>(PQsslStruct(conn, "OpenSSL"));
  if (ssl == nullptr) return "";
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return "";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  X509_digest(cert, EVP_sha256(), digest, &length);
  X509_free(cert);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    absl::StrAppend(&hex, absl::Hex(digest[i], absl::kZeroPad2));
  }
  return hex;
}

// The sha256 of a PEM certificate file's DER, as PeerCertificateSha256 gives it.
std::string PemCertificateSha256(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (cert == nullptr) return "";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  X509_digest(cert, EVP_sha256(), digest, &length);
  X509_free(cert);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i)
    absl::StrAppend(&hex, absl::Hex(digest[i], absl::kZeroPad2));
  return hex;
}

TEST_F(ConfigFilesTest, RenewedClientCertificateServesNewHandshakesAndKeepsEstablishedSessions) {
  // Two certificates for localhost, as an operator's renewal would bring.
  const std::string old_dir = temp_dir_.path() + "/certs-old";
  const std::string new_dir = temp_dir_.path() + "/certs-new";
  for (const std::string& dir : {old_dir, new_dir}) {
    PGF_ASSERT_OK_AND_ASSIGN(
        RunResult made,
        RunCommand({std::string(PGFLEET_SOURCE_DIR) + "/scripts/make-test-certs.sh", dir}));
    ASSERT_TRUE(made.Succeeded()) << made.Describe();
  }
  PGF_ASSERT_OK_AND_ASSIGN(std::string old_cert, ReadFile(old_dir + "/controller.pem"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string old_key, ReadFile(old_dir + "/controller-key.pem"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string new_cert, ReadFile(new_dir + "/controller.pem"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string new_key, ReadFile(new_dir + "/controller-key.pem"));
  ASSERT_NE(PemCertificateSha256(old_cert), PemCertificateSha256(new_cert));

  ASSERT_NO_FATAL_FAILURE(StartAgent());
  const std::string users = AuthFileText({{kAdminUser, kAdminPassword}, {kAppUser, kAppPassword}});
  const std::string tls_ini = local_ini_ + "\n[pgbouncer]\nclient_tls_sslmode = require\n";
  auto version = [&](uint64_t number, const std::string& cert, const std::string& key) {
    DesiredConfig desired = Desired(number);
    desired.set_ini_text(tls_ini);
    desired.set_sha256(agent::Sha256Hex(tls_ini));
    AddFile(desired, "auth_file", users);
    AddFile(desired, "client_tls_cert_file", cert);
    AddFile(desired, "client_tls_key_file", key);
    return desired;
  };
  ASSERT_NO_FATAL_FAILURE(ExpectAck(version(1, old_cert, old_key)));
  const std::string tls_conninfo = absl::StrCat(
      "host=127.0.0.1 port=", agent_->port(), " dbname=", kAppDb, " user=", kAppUser,
      " password=", ConnInfoQuote(kAppPassword), " sslmode=require connect_timeout=10");
  PGF_ASSERT_OK_AND_ASSIGN(PgConn established, Connect(tls_conninfo));
  EXPECT_EQ(PeerCertificateSha256(established.get()), PemCertificateSha256(old_cert));
  PGF_ASSERT_OK(Query(established.get(), "select 1").status());

  ASSERT_NO_FATAL_FAILURE(ExpectAck(version(2, new_cert, new_key)));
  // The session that was open goes on, on the certificate it started with.
  PGF_ASSERT_OK_AND_ASSIGN(int64_t two, ScalarInt(established.get(), "select 2"));
  EXPECT_EQ(two, 2);
  // New handshakes get the new certificate.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn renewed, Connect(tls_conninfo));
  EXPECT_EQ(PeerCertificateSha256(renewed.get()), PemCertificateSha256(new_cert));
  PGF_ASSERT_OK(Query(renewed.get(), "select 1").status());
  // The old certificate and key files are gone; the new ones are private.
  for (const auto& [key, content] : std::vector<std::pair<std::string, std::string>>{
           {"client_tls_cert_file", old_cert}, {"client_tls_key_file", old_key}}) {
    EXPECT_FALSE(std::filesystem::exists(PushedPath(key, content))) << key;
  }
  struct stat st {};
  ASSERT_EQ(stat(PushedPath("client_tls_key_file", new_key).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(absl::StrContains(agent_->LogContents(), "PRIVATE KEY"));
}

}  // namespace
}  // namespace pgfleet::testutil
