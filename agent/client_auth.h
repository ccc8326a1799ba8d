// The authentication exchange of one client login, as its own small state machine: which
// method auth_type and the user's auth_file secret call for, the request sent, the password
// or SCRAM messages checked (the previous secret of an open rotation overlap accepted too), and
// a failure answered at once or after the AuthFailureLimiter's delay. It exists only while the
// client logs in: a logged-in client holds none of this.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/auth_crypto.h"
#include "common/config/auth_file.h"

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

  // Sends the first authentication request (or decides at once for auth_type any / trust).
  Outcome Start();
  // The body of one whole PasswordMessage ('p': password, md5 answer or SASL message).
  Outcome OnPasswordMessage(std::string_view body);
  // A failure whose answer is held back is dropped with the connection.
  void CancelDelay();
  // The SCRAM exchange, once it succeeded: its keys let the agent log in to PostgreSQL.
  const crypto::ScramServerExchange* scram() const { return scram_.get(); }

 private:
  Outcome Failed(const std::string& log_reason);
  Outcome CloseWithError(const std::string& sqlstate, const std::string& message);
  bool PasswordMatches(const config::UserSecret& secret, const std::string& password);
  void NotePreviousSecretUsed();

  Agent& agent_;
  ClientConn& client_;
  // The client's, which outlives this object.
  const uint64_t id_;
  const std::string& user_;
  const std::string& peer_;
  const std::string& database_;

  enum class AuthMethod { kNone, kCleartext, kMd5, kScram };
  AuthMethod auth_method_ = AuthMethod::kNone;
  std::string md5_salt_;
  std::unique_ptr<crypto::ScramServerExchange> scram_;
  bool scram_first_done_ = false;
  std::unique_ptr<Timer> auth_delay_;
};

}  // namespace pgfleet::agent
