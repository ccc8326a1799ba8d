// ClientAuth's choice of method for one login: auth_type's, or under auth_type = hba the
// method of the first auth_hba_file line that matches the login (PgBouncer's finish_set_pool),
// and the methods that need no password message decided on the spot. And how a failed login
// ends: PgBouncer's answers (SQLSTATE 08P01), counted, logged and slowed down per address.
#include <sys/socket.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/agent.h"
#include "agent/auth_failure_limiter.h"
#include "agent/cert_peer_auth.h"
#include "agent/client_auth.h"
#include "agent/client_conn.h"
#include "agent/event_loop.h"
#include "agent/log_prefix.h"
#include "agent/pool.h"
#include "common/log.h"

namespace pgfleet::agent {

bool ClientAuth::IsOwnConsoleUser() const {
  return database_ == "pgbouncer" && user_ == "pgbouncer" && client_.unix_socket_ &&
         PeerIsOwnUid(client_.fd());
}

const config::HbaRule* ClientAuth::MatchHbaRule(const config::HbaFile& hba) const {
  sockaddr_storage address{};
  socklen_t size = sizeof(address);
  const bool have_address =
      !client_.unix_socket_ &&
      getpeername(client_.fd(), reinterpret_cast<sockaddr*>(&address), &size) == 0;
  return config::MatchHba(
      hba, config::HbaLogin{
               .unix_socket = client_.unix_socket_,
               .address = have_address ? reinterpret_cast<sockaddr*>(&address) : nullptr,
               .tls = client_.tls(),
               .database = database_,
               .user = user_,
           });
}

std::optional<ClientAuth::Outcome> ClientAuth::DecideMethod(const config::UserSecret* secret) {
  const config::Config& cfg = agent_.config();
  const config::HbaRule* rule = nullptr;
  switch (cfg.auth_type) {
    case config::AuthType::kAny:
      return Outcome::kSucceeded;
    case config::AuthType::kTrust:
      method_ = config::HbaMethod::kTrust;
      break;
    case config::AuthType::kPlain:
      method_ = config::HbaMethod::kPassword;
      break;
    case config::AuthType::kMd5:
      method_ = config::HbaMethod::kMd5;
      break;
    case config::AuthType::kScramSha256:
      method_ = config::HbaMethod::kScramSha256;
      break;
    case config::AuthType::kCert:
      method_ = config::HbaMethod::kCert;
      break;
    case config::AuthType::kHba: {
      const config::HbaFile* hba = agent_.hba();
      rule = hba != nullptr ? MatchHbaRule(*hba) : nullptr;
      if (rule == nullptr) {
        return Failed(hba != nullptr ? absl::StrCat("no line of ", hba->path, " matches")
                                     : std::string("auth_hba_file is not loaded"),
                      "08P01", "no authentication method is found");
      }
      PGF_DEBUG("client", "c=%d HBA line %d is matched (%s)", id_, rule->line,
                config::HbaMethodName(rule->method));
      method_ = rule->method;
      break;
    }
  }
  // As PgBouncer, the user must exist (auth_file, or auth_query found it) for every method
  // but the password ones, whose made-up exchange hides that.
  const bool known_user = secret != nullptr || lookup_found_;
  const std::vector<config::IdentMapping>* mappings =
      rule != nullptr && !rule->map_name.empty() ? &rule->mappings : nullptr;
  switch (method_) {
    case config::HbaMethod::kReject:
      return Failed(absl::StrCat("rejected by ", agent_.hba()->path, ":", rule->line), "08P01",
                    "login rejected");
    case config::HbaMethod::kTrust:
      // A user auth_query knows is trusted, whatever its password column.
      if (!known_user) return Failed(missing_secret_reason_);
      return Outcome::kSucceeded;
    case config::HbaMethod::kCert: {
      absl::Status cert = known_user ? CheckCertLogin(client_.net().ssl(), user_, mappings)
                                     : absl::NotFoundError(missing_secret_reason_);
      if (!cert.ok()) {
        return Failed(std::string(cert.message()), "08P01", "certificate authentication failed");
      }
      return Outcome::kSucceeded;
    }
    case config::HbaMethod::kPeer: {
      absl::Status peer = !known_user ? absl::NotFoundError(missing_secret_reason_)
                          : !client_.unix_socket_
                              ? absl::PermissionDeniedError("peer needs a unix-socket login")
                              : CheckPeerLogin(client_.fd(), user_, mappings);
      if (!peer.ok()) {
        return Failed(std::string(peer.message()), "08P01", "unix socket login rejected");
      }
      return Outcome::kSucceeded;
    }
    case config::HbaMethod::kPassword:
      auth_method_ = AuthMethod::kCleartext;
      return std::nullopt;
    case config::HbaMethod::kMd5:
      // As PgBouncer: a SCRAM secret cannot answer md5, so such users are asked for SCRAM.
      auth_method_ = secret != nullptr && secret->kind == config::SecretKind::kScramSha256
                         ? AuthMethod::kScram
                         : AuthMethod::kMd5;
      return std::nullopt;
    case config::HbaMethod::kScramSha256:
      auth_method_ = AuthMethod::kScram;
      return std::nullopt;
  }
  return Failed("unknown authentication method");
}

std::string ClientAuth::FailureAnswer() const {
  // PgBouncer's words for each method (client.c), whatever went wrong: the client learns no
  // more than that (the log says why).
  if (method_ == config::HbaMethod::kTrust) return "\"trust\" authentication failed";
  if (auth_method_ == AuthMethod::kScram) return "SASL authentication failed";
  return "password authentication failed";
}

ClientAuth::Outcome ClientAuth::Failed(const std::string& log_reason, const std::string& sqlstate,
                                       const std::string& message) {
  // Counted on an existing pool only: a failed login must create nothing that outlives it.
  if (Pool* pool = agent_.FindPool(database_, agent_.PoolUserFor(database_, user_))) {
    pool->stats().client_login_failures++;
  }
  const config::Config& cfg = agent_.config();
  const absl::string_view address = PeerAddressWithoutPort(peer_);
  const AuthFailureLimiter::Decision decision = agent_.auth_failures().OnFailure(
      address, absl::Now(), cfg.auth_failure_burst, cfg.auth_failure_max_delay);
  if (decision.unlogged_in_previous_window > 0) {
    LogUnloggedFailures(address, decision.unlogged_in_previous_window);
  }
  if (decision.log) {
    PGF_WARN("client", "%s login failed for user '%s' db '%s': %s",
             ClientLogPrefix(id_, database_, user_, peer_), user_, database_, log_reason);
  }
  if (decision.throttling_started) {
    PGF_WARN("client",
             "%s: %d failed logins within a minute (auth_failure_burst = %d); further failures "
             "from this address are answered after a growing delay, up to %s, and not logged one "
             "by one until the minute is over",
             address, decision.failures_in_window, cfg.auth_failure_burst,
             absl::FormatDuration(cfg.auth_failure_max_delay));
  }
  client_.quiet_close_ = !decision.log;
  std::string answer = message.empty() ? FailureAnswer() : message;
  if (decision.delay <= absl::ZeroDuration()) {
    return CloseWithError(sqlstate, answer);
  }
  // Hold the answer back; nothing more is read from this client meanwhile. The login
  // timeout and every other way of closing still apply (Close cancels the timer).
  client_.net().DisableRead();
  auth_delay_ = std::make_unique<Timer>(
      agent_.loop(),
      [this, sqlstate, answer = std::move(answer)] { client_.CloseWithError(sqlstate, answer); });
  auth_delay_->Start(decision.delay, /*repeat=*/false);
  return Outcome::kFailed;
}

}  // namespace pgfleet::agent
