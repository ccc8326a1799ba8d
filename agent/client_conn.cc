#include "agent/client_conn.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <strings.h>
#include <sys/socket.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/conn_state.h"
#include "agent/io/evbuffer_frames.h"
#include "agent/io/socket_io.h"
#include "agent/pg/protocol.h"
#include "agent/pg/startup_options.h"
#include "agent/server_conn.h"
#include "common/log.h"

namespace pgfleet::agent {
namespace {

// Past this many bytes queued towards the server, stop reading from the client.
constexpr size_t kOutputHighWater = 256 * 1024;
// Largest password/SASL message accepted during login.
constexpr uint32_t kMaxAuthMessage = 10000;
// A client queued for a server keeps its read armed (disarming and re-arming it cost two
// epoll_ctl calls per queued transaction); past this much buffered input it stops reading.
constexpr size_t kWaitingInputLimit = 64 * 1024;
// Console commands are short; anything longer is not a command.
constexpr uint32_t kMaxAdminMessage = 64 * 1024;
// Messages the agent must read whole before rewriting them (a named Parse, whose definition
// it keeps; Describe and Close): anything larger is refused, so no client can make the agent
// hold more than this of its input. Every other message, a named Bind included, is forwarded
// as it arrives.
constexpr size_t kMaxHeldMessage = 1 << 20;
// The start of a message that decides whether it is rewritten (statement names are there).
constexpr size_t kRewriteHeadSize = 1024;

// Parameters the pooler keeps in step between a client and whichever server it gets.
// Spelled as PostgreSQL reports them in ParameterStatus.
constexpr const char* kTrackedParams[] = {
    "client_encoding", "DateStyle", "TimeZone", "IntervalStyle", "standard_conforming_strings",
    "application_name"};

const char* TrackedParamName(std::string_view name) {
  for (const char* tracked : kTrackedParams) {
    if (name.size() == strlen(tracked) && strncasecmp(name.data(), tracked, name.size()) == 0) {
      return tracked;
    }
  }
  return nullptr;
}

void SetParam(ParamList& params, const std::string& name, const std::string& value) {
  for (auto& [key, current] : params) {
    if (key == name) {
      current = value;
      return;
    }
  }
  params.emplace_back(name, value);
}

}  // namespace

ClientConn::ClientConn(Agent& agent, int fd, std::string peer, uint64_t id)
    : agent_(agent), fd_(fd), peer_(std::move(peer)), id_(id) {
  connect_time_us_ = last_active_us_ = MonotonicMicros();
  bev_ = bufferevent_socket_new(agent_.loop().base(), fd, BEV_OPT_CLOSE_ON_FREE);
  bufferevent_setcb(bev_, &ClientConn::OnRead, &ClientConn::OnWrite, &ClientConn::OnEvent, this);
  bufferevent_enable(bev_, EV_READ);
  UseDirectReads(bev_);
  sockaddr_storage local{};
  socklen_t length = sizeof(local);
  unix_socket_ = getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0 &&
                 local.ss_family == AF_UNIX;
}

ClientConn::~ClientConn() {
  if (bev_ != nullptr) bufferevent_free(bev_);
}

void ClientConn::OnRead(bufferevent*, void* arg) {
  auto* client = static_cast<ClientConn*>(arg);
  client->last_active_us_ = MonotonicMicros();
  client->ProcessInput();
}

void ClientConn::OnWrite(bufferevent*, void* arg) {
  // Output drained: if we had stopped reading from the server, start again.
  auto* client = static_cast<ClientConn*>(arg);
  if (client->server_ != nullptr) client->server_->ResumeReading();
  if (client->waiting_for_output_drain_) {
    client->waiting_for_output_drain_ = false;
    bufferevent_enable(client->bev_, EV_READ);
    client->ProcessInput();
  }
}

void ClientConn::OnEvent(bufferevent*, short events, void* arg) {
  auto* client = static_cast<ClientConn*>(arg);
  if (events & BEV_EVENT_EOF) {
    client->Close("client closed connection");
  } else if (events & BEV_EVENT_ERROR) {
    client->Close(client->tls_ ? absl::StrCat("client TLS error: ", TlsErrorText(client->bev_))
                               : absl::StrCat("client socket error: ", strerror(errno)));
  }
}

void ClientConn::Write(const std::string& bytes) {
  if (bev_ != nullptr) SendOrQueue(bev_, bytes.data(), bytes.size());
}

void ClientConn::ProcessInput() {
  switch (state_) {
    case State::kStartup:
      HandleStartup();
      break;
    case State::kAuth:
      HandleAuthMessage();
      break;
    case State::kIdle:
      HandleIdleInput();
      break;
    case State::kActive:
      ForwardToServer();
      break;
    case State::kAdmin:
      HandleAdminInput();
      break;
    case State::kWaiting:
    case State::kLoginWaiting:
      // Bytes (a pipelined query, or EOF) arrived while queued for a server, or before the
      // pool's first server logged in: they stay buffered until a server is linked (or the
      // welcome is sent), within a bound.
      if (evbuffer_get_length(bufferevent_get_input(bev_)) >= kWaitingInputLimit) {
        bufferevent_disable(bev_, EV_READ);
      }
      break;
    case State::kClosed:
      break;
  }
}

void ClientConn::HandleStartup() {
  while (state_ == State::kStartup) {
    // Fetched each time round: an SSLRequest replaces bev_ with its TLS filter.
    evbuffer* in = bufferevent_get_input(bev_);
    size_t available = evbuffer_get_length(in);
    if (available < 4) return;
    char raw_length[4];
    evbuffer_copyout(in, raw_length, sizeof(raw_length));
    const uint32_t length = pg::PeekStartupLength(std::string_view(raw_length, 4));
    if (length < 8 || length > pg::kMaxStartupPacket) {
      CloseWithError("08P01", absl::StrCat("invalid startup packet length ", length));
      return;
    }
    if (available < length) return;
    std::string packet(length, '\0');
    evbuffer_remove(in, packet.data(), length);
    HandleStartupPacket(packet);
  }
}

bool ClientConn::ApplyStartupOptions(const std::string& options) {
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> settings =
      pg::ParseStartupOptions(options);
  if (!settings.ok()) {
    CloseWithError("08P01", std::string(settings.status().message()));
    return false;
  }
  const std::vector<std::string>& ignored = agent_.config().ignore_startup_parameters;
  auto is_ignored = [&](const std::string& name) {
    return std::find(ignored.begin(), ignored.end(), name) != ignored.end();
  };
  for (const auto& [name, value] : *settings) {
    if (const char* tracked = TrackedParamName(name)) {
      SetParam(params_, tracked, value);
    } else if (!is_ignored(name) && !is_ignored("options")) {
      CloseWithError("08P01", absl::StrCat("unsupported startup parameter in options: ", name));
      return false;
    }
  }
  return true;
}

void ClientConn::HandleStartupPacket(std::string_view packet) {
  // A CancelRequest is never answered, well-formed or not: PostgreSQL and PgBouncer close the
  // connection without a byte, and a client must not learn anything from trying keys.
  uint32_t code = 0;
  if (packet.size() >= 8) memcpy(&code, packet.data() + 4, 4);
  if (ntohl(code) == static_cast<uint32_t>(pg::kCancelRequestCode)) {
    absl::StatusOr<pg::StartupPacket> cancel = pg::ParseStartupPacket(packet);
    if (cancel.ok()) {
      agent_.HandleCancelRequest(cancel->cancel_pid, cancel->cancel_key);
    } else {
      PGF_INFO("client", "c=%d %s malformed cancel request ignored: %s", id_, peer_,
               cancel.status().message());
    }
    Close("cancel request handled");
    return;
  }
  absl::StatusOr<pg::StartupPacket> startup = pg::ParseStartupPacket(packet);
  if (!startup.ok()) {
    const bool wrong_version = absl::StrContains(startup.status().message(), "protocol");
    CloseWithError(wrong_version ? "0A000" : "08P01", std::string(startup.status().message()));
    return;
  }
  switch (startup->code) {
    case pg::kSslRequestCode:
    case pg::kGssEncRequestCode: {
      // One SSLRequest and one GSSENCRequest at most, and none once TLS is on, as PostgreSQL
      // 15's ProcessStartupPacket: anything more is not a protocol it speaks.
      bool& done = startup->code == pg::kSslRequestCode ? ssl_negotiated_ : gss_negotiated_;
      if (done) {
        const uint32_t request = static_cast<uint32_t>(startup->code);
        CloseWithError("0A000", absl::StrCat("unsupported frontend protocol ", request >> 16, ".",
                                             request & 0xffff, ": server supports 3.0 to 3.0"));
        return;
      }
      done = true;
      if (startup->code == pg::kGssEncRequestCode) {
        // No GSS encryption: the client may go on in plain text (or ask for TLS).
        Write("N");
        return;
      }
      StartTls();
      if (tls_) gss_negotiated_ = true;  // Inside TLS there is nothing left to negotiate.
      return;
    }
    default:
      break;
  }
  const config::Config& cfg = agent_.config();
  if (!tls_ && !unix_socket_ && cfg.client_tls_sslmode >= config::TlsMode::kRequire) {
    CloseWithError("28000", absl::StrCat("SSL required (client_tls_sslmode = ",
                                         config::TlsModeName(cfg.client_tls_sslmode), ")"));
    return;
  }
  for (const auto& [name, value] : startup->params) {
    if (name == "user") {
      user_ = value;
    } else if (name == "database") {
      database_ = value;
    } else if (const char* tracked = TrackedParamName(name)) {
      SetParam(params_, tracked, value);
    } else if (name == "options") {
      if (!ApplyStartupOptions(value)) return;
    } else if (std::find(cfg.ignore_startup_parameters.begin(), cfg.ignore_startup_parameters.end(),
                         name) == cfg.ignore_startup_parameters.end()) {
      CloseWithError("08P01", absl::StrCat("unsupported startup parameter: ", name));
      return;
    }
  }
  if (user_.empty()) {
    CloseWithError("08P01", "no user name in startup packet");
    return;
  }
  if (database_.empty()) database_ = user_;
  if (agent_.shutting_down()) {
    CloseWithError("57P01", "pooler is shutting down");
    return;
  }
  if (agent_.client_count() > static_cast<size_t>(cfg.max_client_conn)) {
    CloseWithError("53300", "no more connections allowed (max_client_conn)");
    return;
  }
  if (database_ != "pgbouncer" && !cfg.FindDatabase(database_).has_value()) {
    CloseWithError("08P01", absl::StrCat("no such database: ", database_));
    return;
  }
  if (agent_.IsDisabled(database_)) {
    CloseWithError(
        "08P01", absl::StrCat("database \"", database_, "\" does not allow connections (DISABLE)"));
    return;
  }
  StartAuth();
}

void ClientConn::StartTls() {
  const TlsContext* tls = agent_.client_tls();
  if (tls == nullptr || tls_ || unix_socket_) {
    Write("N");  // Plain text it is (TLS off, already on, or a unix socket).
    return;
  }
  // Bytes after the SSLRequest would have been sent before encryption started: someone in
  // the middle may have injected them (CVE-2021-23214).
  if (evbuffer_get_length(bufferevent_get_input(bev_)) != 0) {
    CloseWithError("08P01", "received unencrypted data after SSL request");
    return;
  }
  Write("S");
  UseLibeventReads(bev_);  // The TLS filter reads through libevent's own handler.
  bufferevent* encrypted = WrapInTls(bev_, tls->NewSession(), /*accepting=*/true);
  if (encrypted == nullptr) {
    Close("cannot start TLS");
    return;
  }
  bev_ = encrypted;
  tls_ = true;
  bufferevent_setcb(bev_, &ClientConn::OnRead, &ClientConn::OnWrite, &ClientConn::OnEvent, this);
  bufferevent_enable(bev_, EV_READ);
}

void ClientConn::StartAuth() {
  const config::Config& cfg = agent_.config();
  const config::AuthFile& users = agent_.auth_file();
  auto secret_it = users.find(user_);
  const config::UserSecret* secret = secret_it == users.end() ? nullptr : &secret_it->second;
  ConnMover::Move(this, State::kAuth);

  switch (cfg.auth_type) {
    case config::AuthType::kAny:
      AuthSucceeded();
      return;
    case config::AuthType::kTrust:
      if (secret == nullptr) {
        AuthFailed("user not in auth_file");
        return;
      }
      AuthSucceeded();
      return;
    case config::AuthType::kPlain:
      auth_method_ = AuthMethod::kCleartext;
      break;
    case config::AuthType::kMd5:
      // As PgBouncer: a SCRAM secret cannot answer md5, so such users are asked for SCRAM.
      auth_method_ = (secret != nullptr && secret->kind == config::SecretKind::kScramSha256)
                         ? AuthMethod::kScram
                         : AuthMethod::kMd5;
      break;
    case config::AuthType::kScramSha256:
      auth_method_ = AuthMethod::kScram;
      break;
  }

  switch (auth_method_) {
    case AuthMethod::kCleartext:
      Write(pg::AuthenticationRequest(pg::kAuthCleartext));
      break;
    case AuthMethod::kMd5:
      md5_salt_ = crypto::RandomBytes(4);
      Write(pg::AuthenticationRequest(pg::kAuthMd5, md5_salt_));
      break;
    case AuthMethod::kScram: {
      // Unknown users and md5 secrets still go through a full exchange, with keys nobody
      // knows but the salt and iteration count a user of that name always gets, so the answer
      // does not reveal whether the user exists; and without PBKDF2, so neither does the time.
      crypto::ScramKeys keys = agent_.ScramMockKeysFor(user_);
      // An open rotation overlap: the previous password is accepted too, checked against the
      // same salt and iteration count (those shown are all a client's proof can answer). Not
      // for a user without a current secret: the mock exchange must never log anyone in.
      const config::UserSecret* previous =
          secret != nullptr && secret->kind != config::SecretKind::kMd5
              ? agent_.PreviousSecret(user_)
              : nullptr;
      std::optional<crypto::ScramKeys> previous_verifier;
      if (previous != nullptr && previous->kind == config::SecretKind::kScramSha256) {
        absl::StatusOr<crypto::ScramKeys> parsed = crypto::ParseScramSecret(previous->secret);
        if (parsed.ok()) previous_verifier = *std::move(parsed);
      }
      if (secret != nullptr && secret->kind == config::SecretKind::kScramSha256) {
        absl::StatusOr<crypto::ScramKeys> parsed = crypto::ParseScramSecret(secret->secret);
        if (parsed.ok()) keys = *parsed;
      } else if (secret != nullptr && secret->kind == config::SecretKind::kPlain) {
        // A verifier can only be checked with its own salt, a password with any: during a
        // rotation from a verifier to a password, show the verifier's salt, so that clients
        // with either password can log in.
        keys = previous_verifier.has_value()
                   ? agent_.ScramKeysWithSalt(user_, secret->secret, *previous_verifier)
                   : agent_.ScramKeysForPlainPassword(user_, secret->secret);
      }
      scram_ = std::make_unique<crypto::ScramServerExchange>(keys);
      if (previous != nullptr) {
        std::optional<crypto::ScramKeys> previous_keys = previous_verifier;
        if (previous->kind == config::SecretKind::kPlain) {
          previous_keys = agent_.ScramKeysWithSalt(user_, previous->secret, keys);
        }
        if (previous_keys.has_value() && !scram_->AddAlternativeKeys(*std::move(previous_keys))) {
          PGF_DEBUG("client",
                    "c=%d user '%s': the previous SCRAM verifier has another salt or iteration "
                    "count than the current one, so a SCRAM login cannot use it",
                    id_, user_);
        }
      }
      Write(pg::AuthenticationRequest(pg::kAuthSasl, std::string("SCRAM-SHA-256\0\0", 15)));
      break;
    }
    case AuthMethod::kNone:
      break;
  }
}

void ClientConn::HandleAuthMessage() {
  evbuffer* in = bufferevent_get_input(bev_);
  pg::MessageHeader header;
  switch (PeekFrameHeader(in, 0, kMaxAuthMessage, &header)) {
    case pg::HeaderResult::kNeedMore:
      return;
    case pg::HeaderResult::kMalformed:
      CloseWithError("08P01", "invalid authentication message");
      return;
    case pg::HeaderResult::kOk:
      break;
  }
  if (evbuffer_get_length(in) < header.total()) return;
  if (header.type != 'p') {
    CloseWithError("08P01", absl::StrCat("expected password message, got '",
                                         std::string(1, header.type), "'"));
    return;
  }
  std::string body(header.body_size(), '\0');
  evbuffer_drain(in, pg::kHeaderSize);
  evbuffer_remove(in, body.data(), body.size());

  const config::AuthFile& users = agent_.auth_file();
  auto secret_it = users.find(user_);
  const config::UserSecret* secret = secret_it == users.end() ? nullptr : &secret_it->second;
  pg::BodyReader reader(body);

  switch (auth_method_) {
    case AuthMethod::kCleartext: {
      std::string password(reader.CString());
      bool ok = reader.ok() && secret != nullptr && PasswordMatches(*secret, password);
      if (!ok && reader.ok() && secret != nullptr) {
        const config::UserSecret* previous = agent_.PreviousSecret(user_);
        ok = previous != nullptr && PasswordMatches(*previous, password);
        if (ok) NotePreviousSecretUsed();
      }
      ok ? AuthSucceeded()
         : AuthFailed(secret == nullptr ? "user not in auth_file" : "wrong password");
      return;
    }
    case AuthMethod::kMd5: {
      std::string response(reader.CString());
      auto md5_matches = [&](const config::UserSecret* candidate) {
        std::string stored;
        if (candidate != nullptr && candidate->kind == config::SecretKind::kPlain) {
          stored = crypto::Md5PasswordHash(candidate->secret, user_);
        } else if (candidate != nullptr && candidate->kind == config::SecretKind::kMd5) {
          stored = candidate->secret;
        }
        return !stored.empty() &&
               crypto::SecretEquals(crypto::Md5SaltedResponse(stored, md5_salt_), response);
      };
      bool ok = reader.ok() && md5_matches(secret);
      if (!ok && reader.ok() && secret != nullptr && md5_matches(agent_.PreviousSecret(user_))) {
        ok = true;
        NotePreviousSecretUsed();
      }
      ok ? AuthSucceeded()
         : AuthFailed(secret == nullptr ? "user not in auth_file" : "wrong password");
      return;
    }
    case AuthMethod::kScram: {
      if (!scram_first_done_) {
        std::string_view mechanism = reader.CString();
        int32_t length = reader.Int32();
        if (!reader.ok() || mechanism != "SCRAM-SHA-256" || length < 0 ||
            static_cast<size_t>(length) != reader.remaining()) {
          CloseWithError("08P01", "invalid SASLInitialResponse (only SCRAM-SHA-256 is offered)");
          return;
        }
        absl::StatusOr<std::string> server_first = scram_->HandleClientFirst(reader.Rest());
        if (!server_first.ok()) {
          CloseWithError("08P01", std::string(server_first.status().message()));
          return;
        }
        scram_first_done_ = true;
        Write(pg::AuthenticationRequest(pg::kAuthSaslContinue, *server_first));
        return;
      }
      absl::StatusOr<std::string> server_final = scram_->HandleClientFinal(body);
      if (!server_final.ok()) {
        if (server_final.status().code() == absl::StatusCode::kPermissionDenied) {
          // Unknown users and md5 secrets get a made-up SCRAM exchange (so the client cannot
          // tell them apart from a wrong password); the log says which it was.
          AuthFailed(secret == nullptr ? "user not in auth_file"
                     : secret->kind == config::SecretKind::kMd5
                         ? "auth_file has only an md5 secret, SCRAM needs a plain or SCRAM one"
                         : "wrong password");
        } else {
          CloseWithError("08P01", std::string(server_final.status().message()));
        }
        return;
      }
      if (secret == nullptr || secret->kind == config::SecretKind::kMd5) {
        // Defensive: the made-up exchange above never verifies, but never let it log anyone in.
        AuthFailed("no SCRAM secret for user");
        return;
      }
      if (scram_->matched_alternative()) NotePreviousSecretUsed();
      Write(pg::AuthenticationRequest(pg::kAuthSaslFinal, *server_final));
      AuthSucceeded();
      return;
    }
    case AuthMethod::kNone:
      CloseWithError("08P01", "unexpected password message");
      return;
  }
}

bool ClientConn::PasswordMatches(const config::UserSecret& secret, const std::string& password) {
  switch (secret.kind) {
    case config::SecretKind::kPlain:
      return crypto::SecretEquals(password, secret.secret);
    case config::SecretKind::kMd5:
      return crypto::SecretEquals(crypto::Md5PasswordHash(password, user_), secret.secret);
    case config::SecretKind::kScramSha256: {
      absl::StatusOr<crypto::ScramKeys> keys = crypto::ParseScramSecret(secret.secret);
      if (!keys.ok()) return false;
      crypto::ScramKeys derived =
          crypto::ScramKeysFromPassword(password, keys->salt, keys->iterations);
      return derived.stored_key == keys->stored_key;
    }
  }
  return false;
}

void ClientConn::NotePreviousSecretUsed() {
  // Which secret, never the secret: the operator closing the overlap wants to know who still
  // uses the old password.
  PGF_DEBUG("client", "c=%d %s user '%s' logged in with the previous secret (rotation overlap)",
            id_, peer_, user_);
}

void ClientConn::AuthFailed(const std::string& log_reason) {
  // Counted on an existing pool only: a failed login must create nothing that outlives it.
  if (Pool* pool = agent_.FindPool(database_, user_)) pool->stats().client_login_failures++;
  const config::Config& cfg = agent_.config();
  const absl::string_view address = PeerAddressWithoutPort(peer_);
  const AuthFailureLimiter::Decision decision = agent_.auth_failures().OnFailure(
      address, absl::Now(), cfg.auth_failure_burst, cfg.auth_failure_max_delay);
  if (decision.unlogged_in_previous_window > 0) {
    LogUnloggedFailures(address, decision.unlogged_in_previous_window);
  }
  if (decision.log) {
    PGF_WARN("client", "c=%d %s login failed for user '%s' db '%s': %s", id_, peer_, user_,
             database_, log_reason);
  }
  if (decision.throttling_started) {
    PGF_WARN("client",
             "%s: %d failed logins within a minute (auth_failure_burst = %d); further failures "
             "from this address are answered after a growing delay, up to %s, and not logged one "
             "by one until the minute is over",
             address, decision.failures_in_window, cfg.auth_failure_burst,
             absl::FormatDuration(cfg.auth_failure_max_delay));
  }
  quiet_close_ = !decision.log;
  std::string message = absl::StrCat("password authentication failed for user \"", user_, "\"");
  if (decision.delay <= absl::ZeroDuration()) {
    CloseWithError("28P01", message);
    return;
  }
  // Hold the answer back; nothing more is read from this client meanwhile. The login
  // timeout and every other way of closing still apply (Close cancels the timer).
  bufferevent_disable(bev_, EV_READ);
  auth_delay_ = std::make_unique<Timer>(
      agent_.loop(), [this, message = std::move(message)] { CloseWithError("28P01", message); });
  auth_delay_->Start(decision.delay, /*repeat=*/false);
}

void ClientConn::AuthSucceeded() {
  cancel_pid_ = static_cast<int32_t>(id_ & 0x7fffffff);
  std::string key = crypto::RandomBytes(4);
  memcpy(&cancel_key_, key.data(), 4);
  agent_.RegisterCancelKey(this);
  if (agent_.config().log_connections) {
    PGF_INFO("client", "c=%d login attempt: db=%s user=%s addr=%s", id_, database_, user_, peer_);
  }
  if (database_ == "pgbouncer") {
    const config::Config& cfg = agent_.config();
    if (cfg.auth_type != config::AuthType::kAny && !cfg.IsAdminUser(user_) &&
        !cfg.IsStatsUser(user_)) {
      PGF_WARN("admin", "c=%d user %s from %s refused: not in admin_users or stats_users", id_,
               user_, peer_);
      CloseWithError("08P01", "not allowed: admin console is for admin_users and stats_users");
      return;
    }
    ConnMover::Move(this, State::kAdmin);
    std::string welcome = pg::AuthenticationRequest(pg::kAuthOk);
    for (const auto& [name, value] :
         {std::pair<const char*, const char*>{"server_version", "15.0 (pgfleet-agent)"},
          {"server_encoding", "UTF8"},
          {"client_encoding", "UTF8"},
          {"DateStyle", "ISO, MDY"},
          {"integer_datetimes", "on"},
          {"standard_conforming_strings", "on"},
          {"TimeZone", "UTC"},
          {"IntervalStyle", "postgres"},
          {"is_superuser", "off"}}) {
      welcome += pg::ParameterStatus(name, value);
    }
    welcome += pg::BackendKeyData(cancel_pid_, cancel_key_) + pg::ReadyForQuery('I');
    Write(welcome);
    scram_.reset();
    ProcessInput();
    return;
  }
  if (!WithinClientLimits()) return;
  pool_ = agent_.GetPool(database_, user_);
  if (pool_ == nullptr) {
    CloseWithError("08P01", absl::StrCat("no such database: ", database_));
    return;
  }
  // Not from a login with the previous secret of a rotation overlap: those keys are the old
  // password's, which PostgreSQL is about to stop taking (or already has).
  if (scram_ != nullptr && scram_->keys().client_key.has_value() &&
      !scram_->matched_alternative()) {
    pool_->set_scram_keys(scram_->keys());
  }
  scram_.reset();
  pool_->AddClient(this);
}

bool ClientConn::WithinClientLimits() {
  const config::Config& cfg = agent_.config();
  const std::optional<config::DatabaseConfig> db = cfg.FindDatabase(database_);
  const int max_db = db.has_value() ? cfg.MaxDbClientConnectionsFor(*db) : 0;
  const int max_user = cfg.MaxUserClientConnectionsFor(user_);
  if (max_db == 0 && max_user == 0) return true;
  // This client is not in a pool yet: it is the one past the limit when the count reaches it.
  int db_clients = 0;
  int user_clients = 0;
  for (const auto& [key, pool] : agent_.pools()) {
    if (pool->db_name() == database_) db_clients += static_cast<int>(pool->client_count());
    if (pool->user() == user_) user_clients += static_cast<int>(pool->client_count());
  }
  if (max_db > 0 && db_clients >= max_db) {
    CloseWithError("08P01", "client connections exceeded (max_db_client_connections)");
    return false;
  }
  if (max_user > 0 && user_clients >= max_user) {
    CloseWithError("08P01", "client connections exceeded (max_user_client_connections)");
    return false;
  }
  return true;
}

void ClientConn::SendWelcome() {
  std::string welcome = pg::AuthenticationRequest(pg::kAuthOk);
  // Start from the server's values; the client's own startup values win.
  ParamList client_params = params_;
  for (const auto& [name, value] : pool_->welcome_params()) {
    bool client_set = false;
    for (const auto& [client_name, client_value] : client_params) {
      if (client_name == name) {
        welcome += pg::ParameterStatus(name, client_value);
        client_set = true;
        break;
      }
    }
    if (!client_set) {
      welcome += pg::ParameterStatus(name, value);
      if (TrackedParamName(name) != nullptr) SetParam(params_, name, value);
    }
  }
  welcome += pg::BackendKeyData(cancel_pid_, cancel_key_);
  welcome += pg::ReadyForQuery('I');
  Write(welcome);
  // Reading may have stopped at the input bound while the welcome was awaited (SUSPEND keeps
  // it stopped; RESUME starts every client reading).
  if (!agent_.suspended()) bufferevent_enable(bev_, EV_READ);
}

void ClientConn::UpdateParam(const std::string& name, const std::string& value) {
  if (TrackedParamName(name) != nullptr) SetParam(params_, name, value);
}

void ClientConn::HandleIdleInput() {
  evbuffer* in = bufferevent_get_input(bev_);
  while (state_ == State::kIdle) {
    if (!SkipInput()) return;
    // Answers the agent gives on its own (AnswerKnownParse) are not queued without end for a
    // client that does not read them: reading resumes once its output drains (OnWrite).
    if (evbuffer_get_length(bufferevent_get_output(bev_)) > kOutputHighWater) {
      waiting_for_output_drain_ = true;
      bufferevent_disable(bev_, EV_READ);
      return;
    }
    if (AnswerKnownParse()) continue;
    if (state_ != State::kIdle) return;  // Closed by AnswerKnownParse.
    pg::MessageHeader header;
    switch (
        PeekFrameHeader(in, 0, static_cast<uint32_t>(agent_.config().max_packet_size), &header)) {
      case pg::HeaderResult::kNeedMore:
        return;
      case pg::HeaderResult::kMalformed:
        CloseWithError("08P01", "invalid message length (max_packet_size exceeded?)");
        return;
      case pg::HeaderResult::kOk:
        break;
    }
    if (header.type == 'X') {
      Close("client close request");
      return;
    }
    if (header.type == 'd' || header.type == 'c' || header.type == 'f') {
      // CopyData/CopyDone/CopyFail with no server: the rest of a COPY that PostgreSQL already
      // ended (it failed while the client was still sending). PostgreSQL ignores these outside
      // COPY; so does the agent, rather than take a server for them that no ReadyForQuery
      // would ever release.
      skip_remaining_ = header.total();
      continue;
    }
    if (agent_.shutting_down()) {
      CloseWithError("57P01", "pooler is shutting down");
      return;
    }
    if (agent_.handover_drain_bound_passed()) {
      // A transaction boundary past a hand-over's drain bound: the query is not run, and the
      // error (read as the query's answer, not an asynchronous notice) says to reconnect.
      CloseWithError("57P01", agent_.HandoverCloseMessage());
      return;
    }
    pool_->RequestServer(this);
    return;
  }
}

bool ClientConn::SkipInput() {
  if (skip_remaining_ == 0) return true;
  evbuffer* in = bufferevent_get_input(bev_);
  const size_t dropped = std::min(skip_remaining_, evbuffer_get_length(in));
  evbuffer_drain(in, dropped);
  pool_->stats().bytes_received += dropped;
  skip_remaining_ -= dropped;
  return skip_remaining_ == 0;
}

bool ClientConn::AnswerKnownParse() {
  // Clients such as pgbench prepare synchronously (PQprepare) while other connections of the
  // same thread hold servers in open transactions; needing a server for that Parse can
  // deadlock them against each other when the pool is smaller than the client count.
  if (agent_.config().max_prepared_statements <= 0 ||
      pool_->pool_mode() == config::PoolMode::kSession) {
    return false;
  }
  evbuffer* in = bufferevent_get_input(bev_);
  pg::MessageHeader parse;
  pg::MessageHeader sync;
  const uint32_t max_packet = static_cast<uint32_t>(agent_.config().max_packet_size);
  if (PeekFrameHeader(in, 0, max_packet, &parse) != pg::HeaderResult::kOk || parse.type != 'P' ||
      PeekFrameHeader(in, parse.total(), max_packet, &sync) != pg::HeaderResult::kOk ||
      sync.type != 'S' || evbuffer_get_length(in) < parse.total() + sync.total()) {
    return false;
  }
  std::string body(parse.body_size(), '\0');
  evbuffer_ptr pos;
  evbuffer_ptr_set(in, &pos, pg::kHeaderSize, EVBUFFER_PTR_SET);
  evbuffer_copyout_from(in, &pos, body.data(), body.size());
  const size_t name_end = body.find('\0');
  if (name_end == 0 || name_end == std::string::npos) return false;
  const std::string_view name(body.data(), name_end);
  if (statements_.Find(name) != nullptr) return false;  // PostgreSQL's 42P05 is due.
  const std::string_view definition = std::string_view(body).substr(name_end + 1);
  if (!statements_.HasRoomFor(name, definition)) {
    CloseTooManyStatements();
    return false;
  }
  ps::StatementPtr statement = ps::Intern(definition);
  if (!pool_->HasPreparedStatement(statement->id)) return false;
  evbuffer_drain(in, parse.total() + sync.total());
  pool_->stats().bytes_received += parse.total() + sync.total();
  statements_.Set(name, std::move(statement));
  Write(pg::MessageBuilder('1').Finish() + pg::ReadyForQuery('I'));
  return true;
}

void ClientConn::OnLinked(ServerConn* server, uint64_t now_us, bool was_waiting) {
  if (was_waiting) {
    pool_->stats().wait_time_us += now_us - wait_start_us_;
    // A no-op (no syscall) unless the input limit or SUSPEND had stopped reading.
    bufferevent_enable(bev_, EV_READ);
  }
  server_ = server;
}

void ClientConn::OnUnlinked() {
  server_ = nullptr;
  // Unlinked in the middle of a message (its server was closed for it, see
  // Pool::ReleaseServer): the rest must not be read as messages of its own.
  skip_remaining_ += forward_remaining_;
  forward_remaining_ = 0;
  // Reading may have stopped for the server's full output (StartBackpressure), which no longer
  // concerns this client; left stopped, a client whose input needs no server (the rest of a
  // failed COPY, dropped) would never be read again.
  if (bev_ != nullptr && !agent_.suspended()) bufferevent_enable(bev_, EV_READ);
  query_start_us = xact_start_us = 0;
}

void ClientConn::StartBackpressure() { bufferevent_disable(bev_, EV_READ); }

void ClientConn::ForwardToServer() {
  if (server_ == nullptr || server_->state() != ServerConn::State::kActive) return;
  evbuffer* in = bufferevent_get_input(bev_);
  const uint32_t max_packet = static_cast<uint32_t>(agent_.config().max_packet_size);
  // The first `offset` bytes of the input go to the server in one write: whole messages and
  // what has arrived of the last one (a large message streams as it arrives).
  size_t offset = 0;
  bool terminate = false;
  while (true) {
    if (skip_remaining_ > 0) {
      FlushToServer(offset);
      if (!SkipInput()) break;
    }
    if (forward_remaining_ > 0) {
      const size_t arrived = std::min(forward_remaining_, evbuffer_get_length(in) - offset);
      offset += arrived;
      forward_remaining_ -= arrived;
      if (forward_remaining_ > 0) break;
    }
    pg::MessageHeader header;
    pg::HeaderResult result = PeekFrameHeader(in, offset, max_packet, &header);
    if (result == pg::HeaderResult::kNeedMore) break;
    if (result == pg::HeaderResult::kMalformed) {
      FlushToServer(offset);
      CloseWithError("08P01", "invalid message length (max_packet_size exceeded?)");
      return;
    }
    if (header.type == 'X') {
      terminate = true;
      break;
    }
    if (server_->ps_tracking()) {
      const Rewrite rewrite = RewriteForServer(offset, header);
      if (rewrite == Rewrite::kClosed) return;
      if (rewrite == Rewrite::kNeedMore) break;
      if (rewrite == Rewrite::kWait) {
        // Read no more meanwhile: what waits is bounded by what was already read.
        bufferevent_disable(bev_, EV_READ);
        server_->ResumeClientAfterAnswers();
        break;
      }
      if (rewrite == Rewrite::kRewritten) {
        offset = 0;
        continue;
      }
    }
    server_->NoteClientMessage(header.type);
    if (header.type == 'Q') {
      evbuffer_ptr pos;
      evbuffer_ptr_set(in, &pos, offset + pg::kHeaderSize, EVBUFFER_PTR_SET);
      ssize_t copied = evbuffer_copyout_from(in, &pos, last_query_.data(),
                                             std::min(last_query_.size(), header.body_size()));
      last_query_size_ = copied > 0 ? strnlen(last_query_.data(), static_cast<size_t>(copied)) : 0;
    }
    forward_remaining_ = header.total();
  }
  FlushToServer(offset);
  if (terminate) {
    Close("client close request");
    return;
  }
  if (server_ != nullptr &&
      evbuffer_get_length(bufferevent_get_output(server_->bev())) > kOutputHighWater) {
    StartBackpressure();
  }
}

void ClientConn::FlushToServer(size_t& offset) {
  if (offset > 0) {
    pool_->stats().bytes_received += offset;
    server_->Write(bufferevent_get_input(bev_), offset);
    offset = 0;
  }
  server_->set_mid_client_message(forward_remaining_ > 0);
}

void ClientConn::CloseTooManyStatements() {
  CloseWithError("53400",
                 absl::StrCat("too many prepared statements on this connection: the pooler keeps "
                              "at most ",
                              ps::kMaxClientStatements, " per client (and ",
                              ps::kMaxClientStatementBytes >> 20,
                              " MiB of their text); close the ones no longer needed"));
}

ClientConn::Rewrite ClientConn::RewriteForServer(size_t offset, const pg::MessageHeader& header) {
  const char type = header.type;
  if (type != 'P' && type != 'B' && type != 'D' && type != 'C' && type != 'Q') {
    return Rewrite::kPassThrough;
  }
  evbuffer* in = bufferevent_get_input(bev_);
  const size_t available = evbuffer_get_length(in);
  ps::ServerStatements& server_statements = server_->statements();
  const size_t capacity = static_cast<size_t>(std::max(agent_.config().max_prepared_statements, 1));
  // The start of the body decides; the common messages (unnamed Parse/Bind, ordinary
  // queries) stay on the zero-copy path. A Parse is named by its first byte and a Describe of
  // a statement by its first two; those are then read whole (or refused) anyway.
  std::array<char, kRewriteHeadSize> head;
  const size_t decisive = type == 'P' ? 1 : type == 'D' ? 2 : type == 'C' ? 0 : head.size();
  const size_t head_size = std::min(decisive, header.body_size());
  if (offset + pg::kHeaderSize + head_size > available) return Rewrite::kNeedMore;
  evbuffer_ptr pos;
  evbuffer_ptr_set(in, &pos, offset + pg::kHeaderSize, EVBUFFER_PTR_SET);
  evbuffer_copyout_from(in, &pos, head.data(), head_size);
  const std::string_view start(head.data(), head_size);
  switch (type) {
    case 'P':
      if (start.empty() || start[0] == '\0') {
        server_statements.OnUnnamedParse();
        return Rewrite::kPassThrough;
      }
      break;
    case 'B': {
      const size_t portal_end = start.find('\0');
      const size_t name_end =
          portal_end == std::string_view::npos ? portal_end : start.find('\0', portal_end + 1);
      // Unnamed statement, or names longer than anything PostgreSQL keeps: untouched.
      if (name_end == std::string_view::npos || name_end == portal_end + 1) {
        return Rewrite::kPassThrough;
      }
      if (server_statements.MustWait(start.substr(portal_end + 1, name_end - portal_end - 1),
                                     statements_)) {
        return Rewrite::kWait;
      }
      // Rewritten in stream: the new header, portal and name now, the parameters as they
      // arrive, so a large Bind is never held (see ServerStatements::OnBindStart).
      const size_t names_size = name_end + 1;
      std::optional<std::string> rewritten = server_statements.OnBindStart(
          start.substr(0, portal_end), start.substr(portal_end + 1, name_end - portal_end - 1),
          header.body_size() - names_size, statements_, capacity);
      if (!rewritten.has_value()) return Rewrite::kPassThrough;
      FlushToServer(offset);
      evbuffer_drain(in, pg::kHeaderSize + names_size);
      pool_->stats().bytes_received += pg::kHeaderSize + names_size;
      server_->NoteClientMessage(type);
      server_->WriteRaw(*rewritten);
      forward_remaining_ = header.body_size() - names_size;
      server_->set_mid_client_message(forward_remaining_ > 0);
      return Rewrite::kRewritten;
    }
    case 'D':
      if (start.size() < 2 || start[0] != 'S' || start[1] == '\0') return Rewrite::kPassThrough;
      break;
    case 'C':  // Every Close is answered by a CloseComplete the FIFO must expect.
      break;
    case 'Q': {
      // The start of the query decides, and only that is kept: the query itself is replaced
      // (see below), so its body is dropped as it arrives.
      const ps::SqlCommand sql = ps::ClassifySql(start);
      if (sql.kind == ps::SqlKind::kOther || sql.kind == ps::SqlKind::kDeallocateAll) {
        return Rewrite::kPassThrough;
      }
      if (sql.kind == ps::SqlKind::kDeallocate &&
          server_statements.MustWait(sql.name, statements_)) {
        return Rewrite::kWait;
      }
      FlushToServer(offset);
      last_query_size_ = std::min(last_query_.size(), strnlen(start.data(), start.size()));
      memcpy(last_query_.data(), start.data(), last_query_size_);
      evbuffer_drain(in, pg::kHeaderSize);
      pool_->stats().bytes_received += pg::kHeaderSize;
      skip_remaining_ = header.body_size();
      std::string out;
      if (sql.kind == ps::SqlKind::kDeallocate) {
        out = server_statements.OnDeallocate(sql.name, statements_, capacity);
      }
      if (out.empty()) {
        // SQL-level prepared statements live in one server session, which a transaction
        // pooler does not give. PostgreSQL raises the explanation itself, so the error and the
        // transaction state arrive exactly as for any failed statement.
        PGF_DEBUG("client", "c=%d SQL prepared statement refused: %s", id_,
                  std::string(last_query()));
        out = ps::RejectionQuery(sql.kind, config::PoolModeName(pool_->pool_mode()));
      }
      // After the rewrite, so a Sync point is queued behind the answers it injected.
      server_->NoteClientMessage(type);
      server_->WriteRaw(out);
      return Rewrite::kRewritten;
    }
  }
  // A named Parse (whose definition the agent keeps), a Describe or a Close: read whole, up
  // to a bound.
  if (header.total() > kMaxHeldMessage) {
    FlushToServer(offset);
    CloseWithError("54000", absl::StrCat("'", std::string(1, type), "' message of ", header.total(),
                                         " bytes is too large for the pooler to "
                                         "rewrite (at most ",
                                         kMaxHeldMessage, " bytes with a named statement)"));
    return Rewrite::kClosed;
  }
  if (offset + header.total() > available) return Rewrite::kNeedMore;
  std::string body(header.body_size(), '\0');
  evbuffer_ptr_set(in, &pos, offset + pg::kHeaderSize, EVBUFFER_PTR_SET);
  evbuffer_copyout_from(in, &pos, body.data(), body.size());
  if (type == 'P') {
    const size_t name_end = body.find('\0');
    const std::string_view name(body.data(), std::min(name_end, body.size()));
    if (name_end != std::string::npos && statements_.Find(name) == nullptr &&
        !statements_.HasRoomFor(name, std::string_view(body).substr(name_end + 1))) {
      FlushToServer(offset);
      CloseTooManyStatements();
      return Rewrite::kClosed;
    }
    if (name_end != std::string::npos &&
        server_statements.MustWait(name, statements_,
                                   std::string_view(body).substr(name_end + 1))) {
      return Rewrite::kWait;
    }
  } else if (type == 'D') {
    // A Describe of a statement ('S' then the name).
    const size_t name_end = body.find('\0', 1);
    if (name_end != std::string::npos &&
        server_statements.MustWait(std::string_view(body).substr(1, name_end - 1), statements_)) {
      return Rewrite::kWait;
    }
  }
  FlushToServer(offset);
  evbuffer_drain(in, header.total());
  pool_->stats().bytes_received += header.total();
  std::string out;
  switch (type) {
    case 'P':
      out = server_statements.OnParse(body, statements_, capacity);
      break;
    case 'D':
      out = server_statements.OnDescribe(body, statements_, capacity);
      break;
    case 'C':
      out = server_statements.OnClose(body, statements_);
      break;
  }
  server_->NoteClientMessage(type);
  server_->WriteRaw(out);
  return Rewrite::kRewritten;
}

void ClientConn::HandleAdminInput() {
  evbuffer* in = bufferevent_get_input(bev_);
  while (state_ == State::kAdmin && !admin_busy_) {
    pg::MessageHeader header;
    switch (PeekFrameHeader(in, 0, kMaxAdminMessage, &header)) {
      case pg::HeaderResult::kNeedMore:
        return;
      case pg::HeaderResult::kMalformed:
        CloseWithError("08P01", "invalid message length on the admin console");
        return;
      case pg::HeaderResult::kOk:
        break;
    }
    if (evbuffer_get_length(in) < header.total()) return;
    std::string body(header.body_size(), '\0');
    evbuffer_drain(in, pg::kHeaderSize);
    evbuffer_remove(in, body.data(), body.size());
    switch (header.type) {
      case 'Q': {
        std::string_view sql(body);
        if (!sql.empty() && sql.back() == '\0') sql.remove_suffix(1);
        agent_.admin().HandleQuery(this, sql);
        break;
      }
      case 'X':
        Close("client close request");
        return;
      case 'S':
        // The console speaks the simple protocol only; extended messages are answered once
        // at their Sync, like a server that rejected the statement.
        Write(pg::ErrorResponse("ERROR", "0A000",
                                "the admin console supports the simple query protocol only") +
              pg::ReadyForQuery('I'));
        break;
      default:
        break;
    }
  }
}

void ClientConn::AdminCommandStarted() {
  admin_busy_ = true;
  bufferevent_disable(bev_, EV_READ);
}

void ClientConn::AdminCommandDone() {
  if (!admin_busy_) return;
  admin_busy_ = false;
  bufferevent_enable(bev_, EV_READ);
  // Queries sent while the command waited are still buffered; run them from the loop so a
  // long pipeline does not recurse (Close takes the client off the queue).
  agent_.ready_clients().Schedule(this);
}

void ClientConn::CloseWithError(const std::string& sqlstate, const std::string& message) {
  if (state_ == State::kClosed) return;
  if (agent_.config().log_pooler_errors && !quiet_close_) {
    PGF_WARN("client", "c=%d %s pooler error: %s", id_, peer_, message);
  }
  Write(pg::ErrorResponse("FATAL", sqlstate, message));
  // The socket is closed right after: push what is queued (results, then the error) out now.
  FlushBestEffort(bev_);
  Close(message);
}

void ClientConn::Close(const std::string& reason) {
  if (state_ == State::kClosed) return;
  if (auth_delay_ != nullptr) auth_delay_->Cancel();
  if (agent_.config().log_disconnections && state_ != State::kStartup && !quiet_close_) {
    PGF_INFO("client", "c=%d closing because: %s (db=%s user=%s addr=%s)", id_, reason, database_,
             user_, peer_);
  }
  agent_.UnregisterCancelKey(this);
  if (input_scheduled_) agent_.ready_clients().Cancel(this);
  switch (state_) {
    case State::kStartup:
    case State::kAuth:
      ConnMover::Move(this, State::kClosed);
      break;
    case State::kLoginWaiting:
    case State::kIdle:
    case State::kWaiting:
    case State::kActive:
      pool_->DetachClient(this);
      break;
    case State::kAdmin:
      ConnMover::Move(this, State::kClosed);
      agent_.admin().OnClientClosed(this);
      break;
    case State::kClosed:
      break;
  }
  bufferevent_free(bev_);
  bev_ = nullptr;
  agent_.OnClientClosed(this);
  agent_.DeferDelete(this);
}

}  // namespace pgfleet::agent
