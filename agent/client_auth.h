// The authentication exchange of one client login, as its own small state machine: the user's
// secret (from auth_file, or for a user not in it looked up with auth_query, see auth_query.h),
// which method auth_type and that secret call for, the request sent, the password or SCRAM
// messages checked (the previous secret of an open rotation overlap accepted too), and a
// failure answered at once or after the AuthFailureLimiter's delay. It exists only while the
// client logs in: a logged-in client holds none of this.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "agent/auth_query.h"
#include "common/auth_crypto.h"
#include "common/config/auth_file.h"
#include "common/config/hba.h"

namespace pgfleet::agent {

class Agent;
class ClientConn;
class Timer;

class ClientAuth {
 public:
  // kContinue: waiting for the client's next password message. kSucceeded: the caller logs the
  // client in. kFailed: the client was closed, or will be once the failure delay is over.
  enum class Outcome { kContinue, kSucceeded, kFailed };

  ClientAuth(Agent& agent, ClientConn& client);
  ~ClientAuth();
  ClientAuth(const ClientAuth&) = delete;
  ClientAuth& operator=(const ClientAuth&) = delete;

  // Sends the first authentication request (or decides at once for auth_type any / trust). For
  // a user whose secret auth_query looks up, kContinue while the lookup runs; once it is
  // answered the exchange goes on by itself (and calls ClientConn::AuthSucceeded on success).
  Outcome Start();
  // The body of one whole PasswordMessage ('p': password, md5 answer or SASL message).
  Outcome OnPasswordMessage(std::string_view body);
  // A failure whose answer is held back, and an auth_query lookup still running, are dropped
  // with the connection.
  void CancelDelay();
  // The SCRAM exchange, once it succeeded: its keys let the agent log in to PostgreSQL.
  const crypto::ScramServerExchange* scram() const { return scram_.get(); }

 private:
  // The exchange, once the secret is known (nullptr: none, and nobody can log in with it).
  Outcome Begin(const config::UserSecret* secret);
  // Which method this login gets (auth_type's, or that of the first auth_hba_file line that
  // matches it) into method_. Those without a password message (trust, reject, cert, peer)
  // are decided here: their outcome. For the others auth_method_ is set and nullopt returned
  // (client_auth_method.cc).
  std::optional<Outcome> DecideMethod(const config::UserSecret* secret);
  const config::HbaRule* MatchHbaRule(const config::HbaFile& hba) const;
  // PgBouncer's admin_pre_login: the user `pgbouncer`, on the console, over the unix socket,
  // from the agent's own OS user, logs in without a password and as an admin.
  bool IsOwnConsoleUser() const;
  // The user's secret: auth_file's, or auth_query's answer.
  const config::UserSecret* Secret() const;
  // Whether auth_query decides this login: a user not in auth_file, on a database with an
  // auth_user. Sets `auth_user` and `auth_db` (where the lookup runs).
  bool UsesAuthQuery(std::string& auth_user, std::string& auth_db) const;
  Outcome StartLookup(const std::string& auth_user, const std::string& auth_db);
  Outcome OnLookupAnswer(absl::StatusOr<AuthQueryAnswer> answer);
  // `message` empty: PgBouncer's answer for the method (FailureAnswer). PgBouncer answers every
  // failed login with SQLSTATE 08P01.
  Outcome Failed(const std::string& log_reason, const std::string& sqlstate = "08P01",
                 const std::string& message = "");
  Outcome CloseWithError(const std::string& sqlstate, const std::string& message);
  bool PasswordMatches(const config::UserSecret& secret, const std::string& password);
  void NotePreviousSecretUsed();
  // "\"trust\" authentication failed", "SASL authentication failed" (SCRAM, md5 with a SCRAM
  // secret) or "password authentication failed" (plain, md5), as method_ calls for.
  std::string FailureAnswer() const;

  Agent& agent_;
  ClientConn& client_;
  // The client's login names, which outlive this object (ClientConn::AuthSucceeded frees them
  // after it), and its address.
  const uint64_t id_;
  const std::string& user_;
  const std::string peer_;
  const std::string& database_;

  // The method chosen (DecideMethod), and the password exchange it runs, if any.
  config::HbaMethod method_ = config::HbaMethod::kMd5;
  enum class AuthMethod { kNone, kCleartext, kMd5, kScram };
  AuthMethod auth_method_ = AuthMethod::kNone;
  std::string md5_salt_;
  std::unique_ptr<crypto::ScramServerExchange> scram_;
  bool scram_first_done_ = false;
  std::unique_ptr<Timer> auth_delay_;

  // auth_query (auth_query.h).
  std::unique_ptr<AuthLookup> lookup_;
  bool from_lookup_ = false;   // The secret comes from auth_query: no rotation overlap applies.
  bool lookup_found_ = false;  // auth_query returned a row for the user.
  std::optional<config::UserSecret> looked_up_secret_;
  // An answer that came while Start() was still handing the lookup to the pool (the pool
  // could not log in): Start() goes on with it.
  bool starting_lookup_ = false;
  std::optional<absl::StatusOr<AuthQueryAnswer>> early_answer_;
  // Why Secret() is null, for the log.
  std::string missing_secret_reason_ = "user not in auth_file";
};

}  // namespace pgfleet::agent
