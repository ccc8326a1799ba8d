#include "agent/link/fleet_agent.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/server_conn.h"
#include "common/config/auth_file.h"
#include "common/config/config.h"
#include "common/log.h"

namespace pgfleet::agent {
namespace {

constexpr char kAppliedIni[] = "applied.ini";
constexpr char kAppliedMeta[] = "applied.version";

std::string JoinPath(const std::string& dir, const char* name) {
  return absl::StrCat(dir, "/", name);
}

}  // namespace

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 15]);
  }
  return hex;
}

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  // mkostemp: a name no other writer (another agent on this state dir, a concurrent apply)
  // can be using, where a fixed "<path>.tmp" let one writer rename the other's file away.
  std::string temp = absl::StrCat(path, ".tmp.XXXXXX");
  int fd = mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("cannot create a temp file for ", path, ": ", strerror(errno)));
  }
  size_t written = 0;
  while (written < contents.size()) {
    ssize_t n = write(fd, contents.data() + written, contents.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      int saved = errno;
      close(fd);
      unlink(temp.c_str());
      return absl::InternalError(absl::StrCat("cannot write ", temp, ": ", strerror(saved)));
    }
    written += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) {
    int saved = errno;
    close(fd);
    unlink(temp.c_str());
    return absl::InternalError(absl::StrCat("cannot sync ", temp, ": ", strerror(saved)));
  }
  if (close(fd) != 0) {
    int saved = errno;
    unlink(temp.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", temp, ": ", strerror(saved)));
  }
  if (rename(temp.c_str(), path.c_str()) != 0) {
    int saved = errno;
    unlink(temp.c_str());
    return absl::InternalError(absl::StrCat("cannot rename ", temp, ": ", strerror(saved)));
  }
  // The rename is durable once the directory is synced.
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  if (int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir_fd >= 0) {
    fsync(dir_fd);
    close(dir_fd);
  }
  return absl::OkStatus();
}

std::vector<std::string> ProtectedFiles(const std::string& state_dir,
                                        const std::string& local_config) {
  return {JoinPath(state_dir, kAppliedIni), JoinPath(state_dir, kAppliedMeta),
          JoinPath(state_dir, "lock"), local_config};
}

std::optional<AppliedConfig> ReadAppliedConfig(const std::string& state_dir) {
  std::ifstream meta(JoinPath(state_dir, kAppliedMeta));
  AppliedConfig applied;
  if (!(meta >> applied.version >> applied.sha256)) return std::nullopt;
  applied.path = JoinPath(state_dir, kAppliedIni);
  if (access(applied.path.c_str(), R_OK) != 0) return std::nullopt;
  return applied;
}

FleetAgent::FleetAgent(Agent& agent, LinkOptions link_options, std::string state_dir,
                       std::optional<AppliedConfig> applied, PathPolicy path_policy)
    : agent_(agent), state_dir_(std::move(state_dir)), path_policy_(std::move(path_policy)) {
  if (applied.has_value()) {
    applied_version_ = applied->version;
    applied_sha256_ = applied->sha256;
  }
  LinkOptions options = link_options;
  link_ = std::make_unique<ControllerLink>(
      agent_.loop(), std::move(link_options),
      [this, options]() {
        pgfleet::v1::AgentHello hello;
        hello.set_agent_id(options.agent_id);
        hello.set_environment(options.environment);
        for (const auto& [key, value] : options.labels) (*hello.mutable_labels())[key] = value;
        hello.set_agent_version("0.1.0");
        hello.set_applied_config_version(applied_version_.load());
        {
          std::lock_guard<std::mutex> lock(applied_mu_);
          hello.set_applied_config_sha256(applied_sha256_);
        }
        char host[256] = "";
        gethostname(host, sizeof(host) - 1);
        hello.set_hostname(host);
        hello.set_listen_port(agent_.config_ptr()->listen_port);
        return hello;
      },
      [this](pgfleet::v1::ControllerMessage message) { OnMessage(std::move(message)); });
}

FleetAgent::~FleetAgent() { Stop(); }

void FleetAgent::Start() {
  metrics_timer_ = std::make_unique<Timer>(agent_.loop(), [this] { SendMetrics(); });
  link_->Start();
}

void FleetAgent::Stop() {
  if (metrics_timer_) metrics_timer_->Cancel();
  link_->Stop();
}

void FleetAgent::OnMessage(pgfleet::v1::ControllerMessage message) {
  switch (message.body_case()) {
    case pgfleet::v1::ControllerMessage::kHelloAck:
      if (message.hello_ack().metrics_interval_seconds() > 0) {
        metrics_interval_ = absl::Seconds(message.hello_ack().metrics_interval_seconds());
      }
      metrics_timer_->Start(metrics_interval_, /*repeat=*/true);
      SendMetrics();
      break;
    case pgfleet::v1::ControllerMessage::kDesiredConfig:
      ApplyDesiredConfig(message.desired_config());
      break;
    case pgfleet::v1::ControllerMessage::kCommand:
      RunCommand(message.command());
      break;
    case pgfleet::v1::ControllerMessage::BODY_NOT_SET:
      break;
  }
}

void FleetAgent::ApplyDesiredConfig(const pgfleet::v1::DesiredConfig& desired) {
  pgfleet::v1::AgentMessage reply;
  pgfleet::v1::ConfigResult* result = reply.mutable_config_result();
  result->set_version(desired.version());
  const std::string sha256 = Sha256Hex(desired.ini_text());
  result->set_sha256(sha256);
  auto nack = [&](const std::string& error) {
    PGF_ERROR("link", "config version %d refused (NACK), keeping the current one: %s",
              desired.version(), error);
    result->set_accepted(false);
    result->set_error(error);
    link_->Send(reply);
  };
  if (!desired.sha256().empty() && desired.sha256() != sha256) {
    nack(absl::StrCat("sha256 mismatch: controller says ", desired.sha256(), ", text hashes to ",
                      sha256));
    return;
  }
  const std::string path = JoinPath(state_dir_, kAppliedIni);
  // Validate before touching anything on disk.
  absl::StatusOr<config::Config> parsed =
      config::ParseConfig(desired.ini_text(), path, PushedIncludeCheck(path_policy_));
  if (!parsed.ok()) {
    nack(std::string(parsed.status().message()));
    return;
  }
  // Before any file it names is opened: a pushed config must not make the agent read, create
  // or truncate files outside the directories its command line allows.
  if (absl::Status confined = CheckPushedPaths(*parsed, path_policy_); !confined.ok()) {
    nack(std::string(confined.message()));
    return;
  }
  if (!parsed->auth_file.empty()) {
    if (absl::StatusOr<config::AuthFile> users = config::LoadAuthFile(parsed->auth_file);
        !users.ok()) {
      nack(absl::StrCat(parsed->Where("auth_file"), ": auth_file: ", users.status().message()));
      return;
    }
  }
  // Keep the previous file so a reload failure can put it back.
  std::ifstream previous_in(path);
  std::stringstream previous;
  const bool had_previous = static_cast<bool>(previous_in);
  if (had_previous) previous << previous_in.rdbuf();
  if (absl::Status written = WriteFileAtomically(path, desired.ini_text()); !written.ok()) {
    nack(std::string(written.message()));
    return;
  }
  const std::string old_path = agent_.config_path();
  agent_.set_config_path(path);
  if (absl::Status reloaded = agent_.Reload(); !reloaded.ok()) {
    agent_.set_config_path(old_path);
    if (had_previous) {
      (void)WriteFileAtomically(path, previous.str());
    } else {
      unlink(path.c_str());
    }
    nack(std::string(reloaded.message()));
    return;
  }
  if (absl::Status meta = WriteFileAtomically(JoinPath(state_dir_, kAppliedMeta),
                                              absl::StrCat(desired.version(), " ", sha256, "\n"));
      !meta.ok()) {
    PGF_WARN("link", "applied version %d but could not record it: %s", desired.version(),
             meta.message());
  }
  applied_version_ = desired.version();
  {
    std::lock_guard<std::mutex> lock(applied_mu_);
    applied_sha256_ = sha256;
  }
  PGF_INFO("link", "config version %d applied (ACK), sha256 %s", desired.version(),
           sha256.substr(0, 12));
  result->set_accepted(true);
  link_->Send(reply);
}

void FleetAgent::RunCommand(const pgfleet::v1::Command& command) {
  pgfleet::v1::AgentMessage reply;
  pgfleet::v1::CommandResult* result = reply.mutable_command_result();
  result->set_command_id(command.command_id());
  absl::Status status;
  switch (command.kind_case()) {
    case pgfleet::v1::Command::kPause: {
      std::optional<absl::Duration> deadline;
      if (command.pause().deadline_seconds() > 0) {
        deadline = absl::Seconds(command.pause().deadline_seconds());
      }
      PGF_INFO("link", "controller: PAUSE %s", command.pause().database());
      status = agent_.Pause(command.pause().database(), deadline);
      break;
    }
    case pgfleet::v1::Command::kResume:
      PGF_INFO("link", "controller: RESUME %s", command.resume().database());
      status = agent_.Resume(command.resume().database());
      break;
    case pgfleet::v1::Command::kReload:
      PGF_INFO("link", "controller: RELOAD");
      status = agent_.Reload();
      break;
    case pgfleet::v1::Command::KIND_NOT_SET:
      status = absl::InvalidArgumentError("empty command");
      break;
  }
  result->set_ok(status.ok());
  if (!status.ok()) result->set_error(std::string(status.message()));
  link_->Send(reply);
  // A pause's progress (drained or not) goes out right away rather than at the next tick.
  SendMetrics();
}

pgfleet::v1::MetricsReport FleetAgent::BuildMetricsReport() const {
  pgfleet::v1::MetricsReport report;
  report.set_timestamp_unix_ms(absl::ToUnixMillis(absl::Now()));
  const uint64_t now = MonotonicMicros();
  for (const auto& [key, pool] : agent_.pools()) {
    pgfleet::v1::PoolMetrics* metrics = report.add_pools();
    metrics->set_database(key.first);
    metrics->set_user(key.second);
    metrics->set_pool_mode(config::PoolModeName(pool->pool_mode()));
    metrics->set_cl_active(static_cast<int32_t>(pool->active_clients().size()));
    metrics->set_cl_waiting(static_cast<int32_t>(pool->waiting_clients().size() +
                                                 pool->login_waiting_clients().size()));
    metrics->set_sv_active(static_cast<int32_t>(pool->active_servers().size()));
    metrics->set_sv_idle(static_cast<int32_t>(pool->idle_servers().size()));
    metrics->set_sv_used(static_cast<int32_t>(pool->used_servers().size()));
    metrics->set_sv_login(static_cast<int32_t>(pool->login_servers().size()));
    metrics->set_maxwait_us(static_cast<int64_t>(pool->MaxWaitMicros(now)));
  }
  for (const auto& [db, stats] : agent_.StatsByDatabase()) {
    pgfleet::v1::DatabaseStats* out = report.add_databases();
    out->set_database(db);
    out->set_xact_count(stats.xact_count);
    out->set_query_count(stats.query_count);
    out->set_bytes_received(stats.bytes_received);
    out->set_bytes_sent(stats.bytes_sent);
    out->set_xact_time_us(stats.xact_time_us);
    out->set_query_time_us(stats.query_time_us);
    out->set_wait_time_us(stats.wait_time_us);
    out->set_client_login_failures(stats.client_login_failures);
    out->set_server_login_failures(stats.server_login_failures);
    out->set_server_errors(stats.server_errors);
  }
  report.set_client_count(static_cast<int32_t>(agent_.client_count()));
  for (const auto& [address, limits] : agent_.server_limits()) {
    pgfleet::v1::ServerLimits* out = report.add_server_limits();
    out->set_address(address);
    out->set_max_connections(limits.max_connections);
    out->set_superuser_reserved_connections(limits.superuser_reserved_connections);
  }
  for (const std::string& db : agent_.PausedScopes()) {
    pgfleet::v1::PauseState* pause = report.add_pauses();
    pause->set_database(db);
    pause->set_drained(agent_.IsDrained(db));
    pause->set_servers_in_use(agent_.ServersInUse(db));
    if (std::optional<absl::Time> deadline = agent_.PauseDeadline(db)) {
      pause->set_deadline_unix_ms(absl::ToUnixMillis(*deadline));
    }
    // In session mode a linked client holds its server outside transactions too: its age
    // then counts from its connection.
    auto held_since = [](const ClientConn* client) {
      return client->xact_start_us != 0 ? client->xact_start_us : client->connect_time_us();
    };
    int waiting = 0;
    const ClientConn* oldest = nullptr;
    for (const auto& [key, pool] : agent_.pools()) {
      if (!db.empty() && key.first != db) continue;
      waiting += static_cast<int>(pool->waiting_clients().size());
      pool->active_servers().ForEach([&](const ServerConn* server) {
        const ClientConn* client = server->client();
        if (client == nullptr) return;
        if (oldest == nullptr || held_since(client) < held_since(oldest)) oldest = client;
      });
    }
    pause->set_clients_waiting(waiting);
    if (oldest != nullptr) {
      pause->set_oldest_client(oldest->peer());
      pause->set_oldest_xact_age_ms(static_cast<int64_t>((now - held_since(oldest)) / 1000));
      pause->set_oldest_query(std::string(oldest->last_query()));
    }
  }
  report.set_suspended(agent_.suspended());
  return report;
}

void FleetAgent::SendMetrics() {
  pgfleet::v1::AgentMessage message;
  *message.mutable_metrics() = BuildMetricsReport();
  link_->Send(std::move(message));
}

}  // namespace pgfleet::agent
