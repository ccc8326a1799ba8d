#include "agent/link/fleet_agent.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/build_info.h"
#include "common/config/auth_file.h"
#include "common/config/config.h"
#include "common/config/hba.h"
#include "common/config/ini_parser.h"
#include "common/config/restart_keys.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace pgfleet::agent {
namespace {

constexpr char kAppliedIni[] = "applied.ini";
constexpr char kAppliedMeta[] = "applied.version";
// The overlaps applied with applied.ini: a serialized DesiredConfig holding only its
// credential_overlaps (secrets: mode 0600 like everything the agent writes here).
constexpr char kAppliedOverlaps[] = "applied.overlaps";
// Files pushed with a config (auth_file, auth_type = hba's files, TLS keys and certificates).
constexpr char kFilesDir[] = "files";

constexpr const char* kPushableFileKeys[] = {
    "auth_file",           "auth_hba_file",        "auth_ident_file",
    "client_tls_key_file", "client_tls_cert_file", "client_tls_ca_file",
    "server_tls_key_file", "server_tls_cert_file", "server_tls_ca_file",
};

std::string JoinPath(const std::string& dir, const char* name) {
  return absl::StrCat(dir, "/", name);
}

// The files a config names through the pushable keys.
std::set<std::string> FilesNamedBy(const config::Config& cfg) {
  std::set<std::string> named;
  for (const std::string* path :
       {&cfg.auth_file, &cfg.auth_hba_file, &cfg.auth_ident_file, &cfg.client_tls_key_file,
        &cfg.client_tls_cert_file, &cfg.client_tls_ca_file, &cfg.server_tls_key_file,
        &cfg.server_tls_cert_file, &cfg.server_tls_ca_file}) {
    if (!path->empty()) named.insert(*path);
  }
  return named;
}

// Whether `path` already holds exactly `sha256`'s content (then it is not written again).
bool HoldsContent(const std::string& path, const std::string& sha256) {
  absl::StatusOr<std::string> existing = config::ReadTextFile(path);
  return existing.ok() && Sha256Hex(*existing) == sha256;
}

// Under auth_type = hba, the rules `cfg` would load, parsed before the config is applied: a
// broken file is a NACK naming its line (and the agent keeps its rules), and an @file include
// outside the allowed paths is refused before it is opened. `pushed` maps a file the push
// carries (by the path the config names it with, not written yet) to its content.
absl::Status CheckHbaRules(const config::Config& cfg, const PathPolicy& policy,
                           const std::map<std::string, std::string>& pushed) {
  if (cfg.auth_type != config::AuthType::kHba) return absl::OkStatus();
  auto read = [&pushed](const std::string& path) -> absl::StatusOr<std::string> {
    auto it = pushed.find(path);
    return it != pushed.end() ? absl::StatusOr<std::string>(it->second)
                              : config::ReadTextFile(path);
  };
  config::IdentMaps ident_maps;
  if (!cfg.auth_ident_file.empty()) {
    absl::StatusOr<config::IdentMaps> maps = [&]() -> absl::StatusOr<config::IdentMaps> {
      PGF_ASSIGN_OR_RETURN(std::string text, read(cfg.auth_ident_file));
      return config::ParseIdentFile(text, cfg.auth_ident_file);
    }();
    if (!maps.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          cfg.Where("auth_ident_file"), ": auth_ident_file: ", maps.status().message()));
    }
    ident_maps = *std::move(maps);
  }
  absl::Status parsed = [&]() -> absl::Status {
    PGF_ASSIGN_OR_RETURN(std::string text, read(cfg.auth_hba_file));
    return config::ParseHbaFile(text, cfg.auth_hba_file, ident_maps, PushedHbaIncludeReader(policy))
        .status();
  }();
  if (parsed.ok()) return parsed;
  return absl::InvalidArgumentError(
      absl::StrCat(cfg.Where("auth_hba_file"), ": auth_hba_file: ", parsed.message()));
}

}  // namespace

bool IsPushableFileKey(const std::string& key) {
  for (const char* known : kPushableFileKeys) {
    if (key == known) return true;
  }
  return false;
}

std::string PushedFilePath(const std::string& state_dir, const std::string& key,
                           const std::string& name_hash) {
  return absl::StrCat(state_dir, "/", kFilesDir, "/", key, ".", name_hash.substr(0, 12));
}

std::string PointIniAtFiles(const std::string& ini_text,
                            const std::vector<std::pair<std::string, std::string>>& paths) {
  if (paths.empty()) return ini_text;
  std::string text = ini_text;
  if (!text.empty() && text.back() != '\n') text.push_back('\n');
  absl::StrAppend(&text, "\n; Files pushed by the controller with this config (pgfleet-agent)\n",
                  "[pgbouncer]\n");
  for (const auto& [key, path] : paths) absl::StrAppend(&text, key, " = ", path, "\n");
  return text;
}

std::vector<CredentialOverlap> ReadAppliedOverlaps(const std::string& state_dir) {
  std::vector<CredentialOverlap> overlaps;
  std::ifstream in(JoinPath(state_dir, kAppliedOverlaps), std::ios::binary);
  if (!in) return overlaps;
  pgfleet::v1::DesiredConfig saved;
  if (!saved.ParseFromIstream(&in)) {
    PGF_WARN("agent", "%s is unreadable: starting without rotation overlaps",
             JoinPath(state_dir, kAppliedOverlaps));
    return overlaps;
  }
  for (const pgfleet::v1::CredentialOverlap& overlap : saved.credential_overlaps()) {
    overlaps.push_back({overlap.user(), overlap.previous_secret(),
                        absl::FromUnixMillis(overlap.expires_unix_ms())});
  }
  return overlaps;
}

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
          JoinPath(state_dir, kAppliedOverlaps), JoinPath(state_dir, "lock"), local_config};
}

std::optional<AppliedConfig> ReadAppliedConfig(const std::string& state_dir) {
  AppliedConfig applied;
  applied.path = JoinPath(state_dir, kAppliedIni);
  const std::string meta_path = JoinPath(state_dir, kAppliedMeta);
  const bool has_ini = access(applied.path.c_str(), F_OK) == 0;
  // A state dir nothing was ever applied in: the local file, and nothing to say.
  if (!has_ini && access(meta_path.c_str(), F_OK) != 0 && errno == ENOENT) return std::nullopt;
  // Otherwise the operator must learn why the agent does not serve what the fleet last ran.
  auto fall_back = [&](const std::string& why) -> std::optional<AppliedConfig> {
    PGF_WARN("agent", "not starting from the last applied config in %s: %s; using the local file",
             state_dir, why);
    return std::nullopt;
  };
  absl::StatusOr<std::string> meta = config::ReadTextFile(meta_path);
  if (!meta.ok()) return fall_back(std::string(meta.status().message()));
  std::istringstream fields(*meta);
  std::string rest;
  if (!(fields >> applied.version >> applied.sha256) || (fields >> rest) ||
      applied.sha256.size() != 64 ||
      !std::all_of(applied.sha256.begin(), applied.sha256.end(),
                   [](char c) { return absl::ascii_isxdigit(static_cast<unsigned char>(c)); })) {
    return fall_back(
        absl::StrCat(meta_path, " is truncated or malformed (want \"VERSION SHA256\")"));
  }
  if (access(applied.path.c_str(), R_OK) != 0) {
    return fall_back(absl::StrCat("cannot read ", applied.path, ": ", strerror(errno)));
  }
  return applied;
}

namespace {

absl::StatusOr<std::string> ResolveAgentId(const FleetOptions& options,
                                           const std::string& local_config) {
  if (!options.link.agent_id.empty()) return options.link.agent_id;
  // From the local file, not from a pushed one: the identity (and so the default state
  // dir) must not change when the controller pushes another listen_port.
  PGF_ASSIGN_OR_RETURN(config::Config local, config::LoadConfig(local_config));
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  return absl::StrCat(host, ":", local.listen_port);
}

}  // namespace

absl::StatusOr<std::string> FleetStateDir(const FleetOptions& options,
                                          const std::string& local_config) {
  if (!options.state_dir.empty()) return options.state_dir;
  PGF_ASSIGN_OR_RETURN(std::string agent_id, ResolveAgentId(options, local_config));
  return DefaultStateDir(local_config, agent_id);
}

absl::StatusOr<FleetSetup> PrepareFleet(FleetOptions options, const std::string& local_config) {
  FleetSetup setup;
  PGF_ASSIGN_OR_RETURN(setup.state_dir, FleetStateDir(options, local_config));
  PGF_ASSIGN_OR_RETURN(std::string agent_id, ResolveAgentId(options, local_config));
  setup.link = std::move(options.link);
  setup.link.agent_id = std::move(agent_id);
  PGF_RETURN_IF_ERROR(MakeDirs(setup.state_dir, 0700));
  // Where pushed files go; there from the start, since the path policy resolves a file's
  // directory before the file is written.
  PGF_RETURN_IF_ERROR(MakeDirs(JoinPath(setup.state_dir, kFilesDir), 0700));
  if (options.inherited_state_lock_fd >= 0) {
    // A hand-over: the old process's lock, shared (an flock belongs to the open file, which
    // both hold), so the dir was never unlocked in between.
    PGF_ASSIGN_OR_RETURN(setup.state_lock,
                         StateDirLock::Adopt(setup.state_dir, options.inherited_state_lock_fd));
  } else {
    PGF_ASSIGN_OR_RETURN(setup.state_lock, StateDirLock::Acquire(setup.state_dir));
  }
  setup.handover_command_id = options.handover_command_id;
  std::vector<std::string> allowed = {DirOf(local_config), setup.state_dir};
  allowed.insert(allowed.end(), options.allowed_paths.begin(), options.allowed_paths.end());
  PGF_ASSIGN_OR_RETURN(setup.path_policy,
                       MakePathPolicy(allowed, ProtectedFiles(setup.state_dir, local_config)));
  if (access(setup.state_dir.c_str(), W_OK) != 0) {
    // The lock could be taken (its file is writable), so the agent serves; but no push can be
    // recorded until the dir is writable again, and the operator must hear of it now.
    PGF_WARN("agent",
             "state dir %s is not writable (%s): configs the controller pushes cannot "
             "be applied until it is",
             setup.state_dir, strerror(errno));
  }
  setup.start_config_path = local_config;
  setup.pushed_config_path = JoinPath(setup.state_dir, kAppliedIni);
  setup.applied = ReadAppliedConfig(setup.state_dir);
  if (setup.applied.has_value()) {
    // Fail-static: the last config the controller pushed wins over the local file, so a
    // restart while the controller is down serves what the fleet was running. It is still
    // a pushed config: its files must be where today's --allow-path allows.
    absl::StatusOr<config::Config> pushed =
        config::LoadConfig(setup.applied->path, PushedIncludeCheck(setup.path_policy));
    absl::Status confined =
        pushed.ok() ? CheckPushedPaths(*pushed, setup.path_policy) : pushed.status();
    if (confined.ok()) confined = CheckHbaRules(*pushed, setup.path_policy, {});
    // Its files live in the state dir, where an operator or a cleanup may have removed them:
    // the local file is then a better start than an agent that cannot start at all.
    if (confined.ok()) {
      for (const std::string& file : FilesNamedBy(*pushed)) {
        if (access(file.c_str(), R_OK) != 0) {
          confined = absl::FailedPreconditionError(
              absl::StrCat("it names ", file, ", which cannot be read: ", strerror(errno)));
          break;
        }
      }
    }
    if (!confined.ok()) {
      PGF_WARN("agent",
               "not starting from the last applied config %s (version %d): %s; "
               "using %s",
               setup.applied->path, setup.applied->version, confined.message(), local_config);
      setup.applied.reset();
    } else {
      PGF_INFO("agent", "starting from the last applied config, version %d (%s)",
               setup.applied->version, setup.applied->path);
      setup.start_config_path = setup.applied->path;
      setup.overlaps = ReadAppliedOverlaps(setup.state_dir);
    }
  }
  return setup;
}

// One desired config on its way through write, reload and record.
struct FleetAgent::PendingApply {
  pgfleet::v1::DesiredConfig desired;
  std::string sha256;
  std::string path;  // <state_dir>/applied.ini
  // desired.ini_text pointed at the pushed files: what applied.ini holds.
  std::string applied_text;
  struct File {
    const pgfleet::v1::ConfigFile* pushed;  // In `desired`.
    std::string path;
    bool created = false;  // Written by this apply (removed again if it is refused).
  };
  std::vector<File> files;
  // The files the new config names: once it is in force, the others in files/ go.
  std::set<std::string> named_files;
  std::vector<CredentialOverlap> overlaps;  // Open ones only.
  // The file it replaces, put back if the reload fails (filled in on the writer thread).
  bool had_previous = false;
  std::string previous;
};

FleetAgent::FleetAgent(AgentControl& agent, FleetSetup setup)
    : agent_(agent),
      state_dir_(std::move(setup.state_dir)),
      state_lock_(std::move(setup.state_lock)),
      path_policy_(std::move(setup.path_policy)) {
  if (setup.applied.has_value()) {
    applied_version_ = setup.applied->version;
    applied_sha256_ = setup.applied->sha256;
    // Fail-static: the overlaps applied with that config still hold, until they expire.
    if (absl::Status set = agent_.SetCredentialOverlaps(setup.overlaps); !set.ok()) {
      PGF_WARN("agent", "rotation overlaps of the last applied config not restored: %s",
               set.message());
    }
  }
  LinkOptions options = setup.link;
  const uint64_t handover_command_id = setup.handover_command_id;
  link_ = std::make_unique<ControllerLink>(
      agent_.loop(), std::move(setup.link),
      [this, options, handover_command_id]() {
        pgfleet::v1::AgentHello hello;
        hello.set_agent_id(options.agent_id);
        hello.set_environment(options.environment);
        for (const auto& [key, value] : options.labels) (*hello.mutable_labels())[key] = value;
        hello.set_agent_version(kAgentVersion);
        hello.set_build_id(RunningBuildId());
        hello.set_binary_outdated(BinaryOutdated());
        hello.set_pid(getpid());
        hello.set_handover_command_id(handover_command_id);
        const OnDiskBinary on_disk = BinaryOnDisk();
        hello.set_on_disk_build_id(on_disk.build_id);
        hello.set_on_disk_version(on_disk.version);
        hello.set_applied_config_version(applied_version_.load());
        {
          std::lock_guard<std::mutex> lock(applied_mu_);
          hello.set_applied_config_sha256(applied_sha256_);
        }
        char host[256] = "";
        gethostname(host, sizeof(host) - 1);
        hello.set_hostname(host);
        hello.set_listen_port(agent_.listen_port());
        for (const std::string& key : agent_.restart_pending()) hello.add_restart_pending(key);
        return hello;
      },
      [this](pgfleet::v1::ControllerMessage message) { OnMessage(std::move(message)); });
  writer_ = std::make_unique<StateWriter>(agent_.loop());
}

FleetAgent::~FleetAgent() { Stop(); }

void FleetAgent::Start() {
  metrics_timer_ = std::make_unique<Timer>(agent_.loop(), [this] { SendMetrics(); });
  link_->Start();
}

void FleetAgent::Stop() {
  if (metrics_timer_) metrics_timer_->Cancel();
  link_->Stop();
  // Finishes a write in progress, so the state dir is never left half updated.
  writer_.reset();
}

StateWriter::Done FleetAgent::WhileAlive(absl::AnyInvocable<void(absl::Status)> done) {
  return
      [alive = std::weak_ptr<char>(alive_), done = std::move(done)](absl::Status status) mutable {
        if (alive.lock()) done(std::move(status));
      };
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
      pending_configs_.push_back(std::move(*message.mutable_desired_config()));
      if (!applying_) ApplyNextDesiredConfig();
      break;
    case pgfleet::v1::ControllerMessage::kCommand:
      RunCommand(message.command());
      break;
    case pgfleet::v1::ControllerMessage::BODY_NOT_SET:
      break;
  }
}

void FleetAgent::ApplyNextDesiredConfig() {
  applying_ = false;
  while (!pending_configs_.empty() && writer_ != nullptr) {
    auto apply = std::make_shared<PendingApply>();
    apply->desired = std::move(pending_configs_.front());
    pending_configs_.pop_front();
    if (StartApply(std::move(apply))) {
      applying_ = true;
      return;
    }
  }
}

bool FleetAgent::StartApply(std::shared_ptr<PendingApply> apply) {
  const pgfleet::v1::DesiredConfig& desired = apply->desired;
  apply->sha256 = Sha256Hex(desired.ini_text());
  apply->path = JoinPath(state_dir_, kAppliedIni);
  auto refuse = [&](const std::string& error) {
    FinishApply(apply, absl::FailedPreconditionError(error));
    return false;
  };
  if (!desired.sha256().empty() && desired.sha256() != apply->sha256) {
    return refuse(absl::StrCat("sha256 mismatch: controller says ", desired.sha256(),
                               ", text hashes to ", apply->sha256));
  }
  if (absl::Status prepared = PrepareFilesAndOverlaps(*apply); !prepared.ok()) {
    return refuse(std::string(prepared.message()));
  }
  // Validate before touching anything on disk.
  absl::StatusOr<config::Config> parsed =
      config::ParseConfig(apply->applied_text, apply->path, PushedIncludeCheck(path_policy_));
  if (!parsed.ok()) return refuse(std::string(parsed.status().message()));
  // Before any file it names is opened: a pushed config must not make the agent read, create
  // or truncate files outside the directories its command line allows.
  if (absl::Status confined = CheckPushedPaths(*parsed, path_policy_); !confined.ok()) {
    return refuse(std::string(confined.message()));
  }
  apply->named_files = FilesNamedBy(*parsed);
  const pgfleet::v1::ConfigFile* pushed_auth_file = nullptr;
  for (const PendingApply::File& file : apply->files) {
    if (file.pushed->key() == "auth_file") pushed_auth_file = file.pushed;
  }
  if (pushed_auth_file != nullptr) {
    // Not on disk yet: checked from the pushed bytes (errors name lines, never secrets).
    if (absl::StatusOr<config::AuthFile> users =
            config::ParseAuthFile(pushed_auth_file->content(), "pushed auth_file");
        !users.ok()) {
      return refuse(absl::StrCat("auth_file: ", users.status().message()));
    }
  } else if (!parsed->auth_file.empty()) {
    if (absl::StatusOr<config::AuthFile> users = config::LoadAuthFile(parsed->auth_file);
        !users.ok()) {
      return refuse(
          absl::StrCat(parsed->Where("auth_file"), ": auth_file: ", users.status().message()));
    }
  }
  std::map<std::string, std::string> pushed_content;
  for (const PendingApply::File& file : apply->files) {
    pushed_content[file.path] = file.pushed->content();
  }
  if (absl::Status hba = CheckHbaRules(*parsed, path_policy_, pushed_content); !hba.ok()) {
    return refuse(std::string(hba.message()));
  }
  writer_->Enqueue(
      [apply, files_dir = JoinPath(state_dir_, kFilesDir)] {
        if (!apply->files.empty()) PGF_RETURN_IF_ERROR(MakeDirs(files_dir, 0700));
        // The new files first, each under a name of its own content: the running config's
        // files stay as they are until the reload that replaces them has succeeded.
        for (PendingApply::File& file : apply->files) {
          if (HoldsContent(file.path, file.pushed->sha256())) {
            chmod(file.path.c_str(), 0600);
            continue;
          }
          absl::Status written = WriteFileAtomically(file.path, file.pushed->content());
          if (!written.ok()) {
            for (const PendingApply::File& created : apply->files) {
              if (created.created) unlink(created.path.c_str());
            }
            return written;
          }
          file.created = true;
        }
        // Keep the previous file so a reload failure can put it back.
        std::ifstream previous_in(apply->path);
        apply->had_previous = static_cast<bool>(previous_in);
        if (apply->had_previous) {
          std::stringstream previous;
          previous << previous_in.rdbuf();
          apply->previous = previous.str();
        }
        absl::Status written = WriteFileAtomically(apply->path, apply->applied_text);
        if (!written.ok()) {
          for (const PendingApply::File& file : apply->files) {
            if (file.created) unlink(file.path.c_str());
          }
        }
        return written;
      },
      WhileAlive(
          [this, apply](absl::Status written) { OnAppliedIniWritten(apply, std::move(written)); }));
  return true;
}

absl::Status FleetAgent::PrepareFilesAndOverlaps(PendingApply& apply) {
  const pgfleet::v1::DesiredConfig& desired = apply.desired;
  std::vector<std::pair<std::string, std::string>> paths;
  std::set<std::string> keys;
  for (const pgfleet::v1::ConfigFile& file : desired.files()) {
    if (!IsPushableFileKey(file.key())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown file key '", file.key(), "': a pushed file backs one of auth_file, ",
          "auth_hba_file, auth_ident_file, ",
          "client_tls_{key,cert,ca}_file, server_tls_{key,cert,ca}_file"));
    }
    if (!keys.insert(file.key()).second) {
      return absl::InvalidArgumentError(absl::StrCat("two files pushed for ", file.key()));
    }
    const std::string sha256 = Sha256Hex(file.content());
    if (absl::AsciiStrToLower(file.sha256()) != sha256) {
      // No hashes in the message: it ends up in the API (the NACK), and a plain hash of secret
      // material would let its readers confirm a guessed password.
      return absl::InvalidArgumentError(absl::StrCat(
          "file for ", file.key(), ": content does not match the sha256 the controller sent"));
    }
    // Named by the controller's keyed fingerprint: the path shows in SHOW CONFIG and logs. An
    // older controller sends none; then the sha256 names it, as before.
    const std::string& fingerprint = file.fingerprint();
    const bool usable_fingerprint =
        fingerprint.size() >= 12 && std::all_of(fingerprint.begin(), fingerprint.end(), [](char c) {
          return absl::ascii_isxdigit(static_cast<unsigned char>(c));
        });
    PendingApply::File pending;
    pending.pushed = &file;
    pending.path = PushedFilePath(state_dir_, file.key(),
                                  usable_fingerprint ? absl::AsciiStrToLower(fingerprint) : sha256);
    paths.emplace_back(file.key(), pending.path);
    apply.files.push_back(std::move(pending));
  }
  apply.applied_text = PointIniAtFiles(desired.ini_text(), paths);
  const absl::Time now = absl::Now();
  for (const pgfleet::v1::CredentialOverlap& overlap : desired.credential_overlaps()) {
    if (overlap.user().empty()) {
      return absl::InvalidArgumentError("credential overlap without a user");
    }
    if (absl::StatusOr<config::UserSecret> secret =
            config::MakeUserSecret(overlap.user(), overlap.previous_secret());
        !secret.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("credential overlap: ", secret.status().message()));
    }
    const absl::Time expires = absl::FromUnixMillis(overlap.expires_unix_ms());
    // An expired overlap is not kept: not in force, not in the persisted state.
    if (expires <= now) continue;
    apply.overlaps.push_back({overlap.user(), overlap.previous_secret(), expires});
  }
  return absl::OkStatus();
}

void FleetAgent::OnAppliedIniWritten(std::shared_ptr<PendingApply> apply, absl::Status written) {
  if (writer_ == nullptr) return;  // Stopping: no reload, no ACK; the controller will resend.
  if (!written.ok()) {
    FinishApply(apply, written);
    return;
  }
  if (absl::Status reloaded = agent_.ReloadFrom(apply->path); !reloaded.ok()) {
    // The reload refused the new file: put the previous one back, drop the files only it
    // used, then NACK. The running config's files were never touched.
    writer_->Enqueue(
        [apply] {
          if (apply->had_previous) {
            (void)WriteFileAtomically(apply->path, apply->previous);
          } else {
            unlink(apply->path.c_str());
          }
          for (const PendingApply::File& file : apply->files) {
            if (file.created) unlink(file.path.c_str());
          }
          return absl::OkStatus();
        },
        WhileAlive([this, apply, reloaded](absl::Status) { FinishApply(apply, reloaded); }));
    return;
  }
  // In force from this very event on: no login sees the new auth_file without its overlaps.
  if (absl::Status set = agent_.SetCredentialOverlaps(apply->overlaps); !set.ok()) {
    PGF_ERROR("link", "config version %d: rotation overlaps not applied: %s",
              apply->desired.version(), set.message());
  }
  // The ACK promises the new version is on disk for a restart without the controller: it is
  // sent once the version file is durable too.
  const std::string meta_path = JoinPath(state_dir_, kAppliedMeta);
  const std::string meta = absl::StrCat(apply->desired.version(), " ", apply->sha256, "\n");
  writer_->Enqueue(
      [apply, meta_path, meta, overlaps_path = JoinPath(state_dir_, kAppliedOverlaps),
       files_dir = JoinPath(state_dir_, kFilesDir)] {
        absl::Status recorded = absl::OkStatus();
        if (apply->overlaps.empty()) {
          unlink(overlaps_path.c_str());
        } else {
          pgfleet::v1::DesiredConfig saved;
          for (const CredentialOverlap& overlap : apply->overlaps) {
            pgfleet::v1::CredentialOverlap* out = saved.add_credential_overlaps();
            out->set_user(overlap.user);
            out->set_previous_secret(overlap.previous_secret);
            out->set_expires_unix_ms(absl::ToUnixMillis(overlap.expires));
          }
          recorded = WriteFileAtomically(overlaps_path, saved.SerializeAsString());
        }
        if (absl::Status meta_written = WriteFileAtomically(meta_path, meta); !meta_written.ok()) {
          recorded = meta_written;
        }
        // The files no config in force names any more (and temp files a crash left behind).
        std::error_code error;
        for (const auto& entry : std::filesystem::directory_iterator(files_dir, error)) {
          if (!apply->named_files.contains(entry.path().string())) {
            std::filesystem::remove(entry.path(), error);
          }
        }
        return recorded;
      },
      WhileAlive([this, apply](absl::Status recorded) {
        if (!recorded.ok()) {
          PGF_WARN("link", "applied version %d but could not record it: %s",
                   apply->desired.version(), recorded.message());
        }
        FinishApply(apply, absl::OkStatus());
      }));
}

void FleetAgent::FinishApply(const std::shared_ptr<PendingApply>& apply,
                             const absl::Status& status) {
  const pgfleet::v1::DesiredConfig& desired = apply->desired;
  pgfleet::v1::AgentMessage reply;
  pgfleet::v1::ConfigResult* result = reply.mutable_config_result();
  result->set_version(desired.version());
  result->set_sha256(apply->sha256);
  if (!status.ok()) {
    PGF_ERROR("link", "config version %d refused (NACK), keeping the current one: %s",
              desired.version(), status.message());
    result->set_accepted(false);
    result->set_error(std::string(status.message()));
  } else {
    applied_version_ = desired.version();
    {
      std::lock_guard<std::mutex> lock(applied_mu_);
      applied_sha256_ = apply->sha256;
    }
    const std::vector<std::string> pending = agent_.restart_pending();
    PGF_INFO("link", "config version %d applied (ACK%s%s), sha256 %s", desired.version(),
             pending.empty() ? "" : ", ", config::RestartPendingText(pending),
             apply->sha256.substr(0, 12));
    result->set_accepted(true);
    for (const std::string& key : pending) result->add_restart_pending(key);
  }
  link_->Send(reply);
  // An apply refused before any write finishes inside ApplyNextDesiredConfig's own loop.
  if (applying_) ApplyNextDesiredConfig();
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
    case pgfleet::v1::Command::kRestart: {
      PGF_INFO("link", "controller: RESTART (command %d)", command.command_id());
      const uint64_t command_id = command.command_id();
      // Answered later: a failure here on this stream (held open for it), success by the new
      // process's hello (handover_command_id), as this stream is superseded by then.
      agent_.BeginHandover(command_id, [this, command_id](absl::StatusOr<pid_t> outcome) {
        if (outcome.ok()) return;
        pgfleet::v1::AgentMessage failed;
        failed.mutable_command_result()->set_command_id(command_id);
        failed.mutable_command_result()->set_ok(false);
        failed.mutable_command_result()->set_error(std::string(outcome.status().message()));
        link_->Send(std::move(failed));
      });
      return;
    }
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

pgfleet::v1::MetricsReport FleetAgent::BuildMetricsReport(const StatsSnapshot& snapshot) {
  pgfleet::v1::MetricsReport report;
  report.set_timestamp_unix_ms(absl::ToUnixMillis(absl::Now()));
  for (const PoolSnapshot& pool : snapshot.pools) {
    pgfleet::v1::PoolMetrics* metrics = report.add_pools();
    metrics->set_database(pool.database);
    metrics->set_user(pool.user);
    metrics->set_pool_mode(config::PoolModeName(pool.pool_mode));
    metrics->set_cl_active(static_cast<int32_t>(pool.cl_active));
    metrics->set_cl_waiting(static_cast<int32_t>(pool.cl_waiting));
    metrics->set_sv_active(static_cast<int32_t>(pool.sv_active));
    metrics->set_sv_idle(static_cast<int32_t>(pool.sv_idle));
    metrics->set_sv_used(static_cast<int32_t>(pool.sv_used));
    metrics->set_sv_login(static_cast<int32_t>(pool.sv_login));
    metrics->set_maxwait_us(static_cast<int64_t>(pool.maxwait_us));
  }
  for (const auto& [db, stats] : snapshot.database_totals) {
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
  report.set_client_count(static_cast<int32_t>(snapshot.client_count));
  for (const ServerLimitsSnapshot& limits : snapshot.server_limits) {
    pgfleet::v1::ServerLimits* out = report.add_server_limits();
    out->set_address(limits.address);
    out->set_max_connections(limits.max_connections);
    out->set_superuser_reserved_connections(limits.superuser_reserved_connections);
  }
  for (const PauseSnapshot& pause : snapshot.pauses) {
    pgfleet::v1::PauseState* out = report.add_pauses();
    out->set_database(pause.database);
    out->set_drained(pause.drained);
    out->set_servers_in_use(pause.servers_in_use);
    if (pause.deadline.has_value()) out->set_deadline_unix_ms(absl::ToUnixMillis(*pause.deadline));
    out->set_clients_waiting(pause.clients_waiting);
    if (pause.oldest.has_value()) {
      out->set_oldest_client(pause.oldest->peer);
      out->set_oldest_xact_age_ms(static_cast<int64_t>(pause.oldest->held_us / 1000));
      out->set_oldest_query(pause.oldest->last_query);
    }
  }
  report.set_suspended(snapshot.suspended);
  return report;
}

void FleetAgent::SendMetrics() {
  pgfleet::v1::AgentMessage message;
  *message.mutable_metrics() = BuildMetricsReport(agent_.Snapshot());
  message.mutable_metrics()->set_binary_outdated(BinaryOutdated());
  const OnDiskBinary on_disk = BinaryOnDisk();
  message.mutable_metrics()->set_on_disk_build_id(on_disk.build_id);
  message.mutable_metrics()->set_on_disk_version(on_disk.version);
  link_->Send(std::move(message));
}

}  // namespace pgfleet::agent
