// The client login's authentication exchange (ClientAuth), and ClientConn's side of it: reading
// the password messages, then joining the pool or the console.
#include "agent/client_auth.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <strings.h>
#include <sys/socket.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/client_conn_detail.h"
#include "agent/conn_state.h"
#include "agent/io/evbuffer_frames.h"
#include "agent/log_prefix.h"
#include "agent/pg/protocol.h"
#include "agent/pg/startup_options.h"
#include "agent/server_conn.h"
#include "common/log.h"

namespace pgfleet::agent {
using namespace client_conn_detail;

ClientAuth::ClientAuth(Agent& agent, ClientConn& client)
    : agent_(agent),
      client_(client),
      id_(client.id()),
      user_(client.user()),
      peer_(client.peer()),
      database_(client.database()) {}

ClientAuth::~ClientAuth() = default;

void ClientAuth::CancelDelay() {
  if (auth_delay_ != nullptr) auth_delay_->Cancel();
  lookup_.reset();  // Withdrawn from its pool; its answer, if any comes, is dropped.
}

ClientAuth::Outcome ClientAuth::CloseWithError(const std::string& sqlstate,
                                               const std::string& message) {
  client_.CloseWithError(sqlstate, message);
  return Outcome::kFailed;
}

ClientAuth::Outcome ClientAuth::Start() {
  if (IsOwnConsoleUser()) {
    client_.console_admin_ = true;
    if (agent_.config().log_connections) {
      PGF_INFO("client", "%s pgbouncer access from unix socket",
               ClientLogPrefix(id_, database_, user_, peer_));
    }
    return Outcome::kSucceeded;
  }
  if (agent_.config().auth_type == config::AuthType::kAny) return Outcome::kSucceeded;
  std::string auth_user, auth_db;
  if (UsesAuthQuery(auth_user, auth_db)) return StartLookup(auth_user, auth_db);
  return Begin(Secret());
}

const config::UserSecret* ClientAuth::Secret() const {
  if (from_lookup_) return looked_up_secret_.has_value() ? &*looked_up_secret_ : nullptr;
  const config::AuthFile& users = agent_.auth_file();
  auto secret_it = users.find(user_);
  return secret_it == users.end() ? nullptr : &secret_it->second;
}

bool ClientAuth::UsesAuthQuery(std::string& auth_user, std::string& auth_db) const {
  // The console knows auth_file's users only, as in PgBouncer.
  if (database_ == "pgbouncer" || agent_.auth_file().contains(user_)) return false;
  const config::Config& cfg = agent_.config();
  const std::optional<config::DatabaseConfig> db = cfg.FindDatabase(database_);
  if (!db.has_value() || cfg.AuthUserFor(*db).empty()) return false;
  auth_user = cfg.AuthUserFor(*db);
  auth_db = cfg.AuthDbnameFor(*db);
  return true;
}

ClientAuth::Outcome ClientAuth::StartLookup(const std::string& auth_user,
                                            const std::string& auth_db) {
  from_lookup_ = true;
  // PgBouncer's log lines and its answer to the client for a misconfigured lookup.
  if (auth_db == "pgbouncer") {
    PGF_ERROR("client", "c=%d cannot use the reserved \"%s\" database as an auth_dbname", id_,
              auth_db);
    return CloseWithError("08P01", "bouncer config error");
  }
  const config::Config& cfg = agent_.config();
  const std::optional<config::DatabaseConfig> db = cfg.FindDatabase(database_);
  if (!cfg.FindDatabase(auth_db).has_value()) {
    PGF_ERROR("client", "c=%d authentication database \"%s\" is not configured.", id_, auth_db);
    return CloseWithError("08P01", "bouncer config error");
  }
  // PgBouncer's prepare_auth_database: an auth_dbname (set for this database or in
  // [pgbouncer]) that is DISABLEd refuses the login; the client's own database being disabled
  // is answered after authentication, as for any login.
  const bool explicit_auth_db = !db->auth_dbname.empty() || !cfg.auth_dbname.empty();
  if (explicit_auth_db && agent_.IsDisabled(auth_db)) {
    return CloseWithError("08P01",
                          absl::StrCat("authentication database \"", auth_db, "\" is disabled"));
  }
  Pool* pool = agent_.GetPool(auth_db, auth_user);
  if (pool == nullptr) {
    PGF_ERROR("client", "c=%d authentication database \"%s\" is not configured.", id_, auth_db);
    return CloseWithError("08P01", "bouncer config error");
  }
  PGF_DEBUG("client", "c=%d looking up user '%s' with auth_query as %s on db %s", id_, user_,
            auth_user, auth_db);
  lookup_ = std::make_unique<AuthLookup>(
      cfg.AuthQueryFor(*db), user_, [this](absl::StatusOr<AuthQueryAnswer> answer) {
        if (starting_lookup_) {
          early_answer_ = std::move(answer);
          return;
        }
        // Nothing of this object is touched after AuthSucceeded: it ends the exchange.
        if (OnLookupAnswer(std::move(answer)) == Outcome::kSucceeded) client_.AuthSucceeded();
      });
  starting_lookup_ = true;
  pool->RunQuery(lookup_.get());
  starting_lookup_ = false;
  if (early_answer_.has_value()) return OnLookupAnswer(*std::move(early_answer_));
  return Outcome::kContinue;
}

ClientAuth::Outcome ClientAuth::OnLookupAnswer(absl::StatusOr<AuthQueryAnswer> answer) {
  if (!answer.ok()) {
    // Not the client's doing: no failure delay, and the reason in the log and the answer.
    PGF_WARN("client", "c=%d %s login failed for user '%s' db '%s': auth_query failed: %s", id_,
             peer_, user_, database_, answer.status().message());
    return CloseWithError("08P01", absl::StrCat("bouncer config error: auth_query failed: ",
                                                answer.status().message()));
  }
  lookup_found_ = answer->found;
  if (!answer->found) {
    agent_.auth_query_cache().Erase(database_, user_);
    return Failed("auth_query returned no row (no such role, or it cannot log in)", "08P01",
                  "no such user");
  }
  if (answer->secret.has_value()) {
    looked_up_secret_ = answer->secret;
    // What this database's pool logs in to PostgreSQL with, once the client is in.
    agent_.auth_query_cache().Put(database_, user_, *std::move(answer->secret));
  } else {
    agent_.auth_query_cache().Erase(database_, user_);
    missing_secret_reason_ =
        "auth_query returned no password (VALID UNTIL in the past, or none set)";
  }
  return Begin(Secret());
}

ClientAuth::Outcome ClientAuth::Begin(const config::UserSecret* secret) {
  if (std::optional<Outcome> decided = DecideMethod(secret)) return *decided;
  switch (auth_method_) {
    case AuthMethod::kCleartext:
      client_.Write(pg::AuthenticationRequest(pg::kAuthCleartext));
      break;
    case AuthMethod::kMd5:
      md5_salt_ = crypto::RandomBytes(4);
      client_.Write(pg::AuthenticationRequest(pg::kAuthMd5, md5_salt_));
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
          secret != nullptr && secret->kind != config::SecretKind::kMd5 && !from_lookup_
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
        if (from_lookup_) {
          // Not through the agent's per-user cache, which only auth_file's users may fill.
          keys = crypto::ScramKeysFromPassword(secret->secret, keys.salt, keys.iterations);
        } else {
          keys = previous_verifier.has_value()
                     ? agent_.ScramKeysWithSalt(user_, secret->secret, *previous_verifier)
                     : agent_.ScramKeysForPlainPassword(user_, secret->secret);
        }
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
      client_.Write(pg::AuthenticationRequest(pg::kAuthSasl, std::string("SCRAM-SHA-256\0\0", 15)));
      break;
    }
    case AuthMethod::kNone:
      break;
  }
  return Outcome::kContinue;
}

ClientAuth::Outcome ClientAuth::OnPasswordMessage(std::string_view body) {
  const config::UserSecret* secret = Secret();
  pg::BodyReader reader(body);

  switch (auth_method_) {
    case AuthMethod::kCleartext: {
      std::string password(reader.CString());
      bool ok = reader.ok() && secret != nullptr && PasswordMatches(*secret, password);
      if (!ok && reader.ok() && secret != nullptr && !from_lookup_) {
        const config::UserSecret* previous = agent_.PreviousSecret(user_);
        ok = previous != nullptr && PasswordMatches(*previous, password);
        if (ok) NotePreviousSecretUsed();
      }
      return ok ? Outcome::kSucceeded
                : Failed(secret == nullptr ? missing_secret_reason_ : "wrong password");
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
      if (!ok && reader.ok() && secret != nullptr && !from_lookup_ &&
          md5_matches(agent_.PreviousSecret(user_))) {
        ok = true;
        NotePreviousSecretUsed();
      }
      return ok ? Outcome::kSucceeded
                : Failed(secret == nullptr ? missing_secret_reason_ : "wrong password");
    }
    case AuthMethod::kScram: {
      if (!scram_first_done_) {
        std::string_view mechanism = reader.CString();
        int32_t length = reader.Int32();
        if (!reader.ok() || mechanism != "SCRAM-SHA-256" || length < 0 ||
            static_cast<size_t>(length) != reader.remaining()) {
          return CloseWithError("08P01",
                                "invalid SASLInitialResponse (only SCRAM-SHA-256 is offered)");
        }
        absl::StatusOr<std::string> server_first = scram_->HandleClientFirst(reader.Rest());
        if (!server_first.ok()) {
          return CloseWithError("08P01", std::string(server_first.status().message()));
        }
        scram_first_done_ = true;
        client_.Write(pg::AuthenticationRequest(pg::kAuthSaslContinue, *server_first));
        return Outcome::kContinue;
      }
      absl::StatusOr<std::string> server_final = scram_->HandleClientFinal(body);
      if (!server_final.ok()) {
        if (server_final.status().code() == absl::StatusCode::kPermissionDenied) {
          // Unknown users and md5 secrets get a made-up SCRAM exchange (so the client cannot
          // tell them apart from a wrong password); the log says which it was.
          return Failed(secret == nullptr ? missing_secret_reason_
                        : secret->kind == config::SecretKind::kMd5
                            ? (from_lookup_ ? "auth_query returned an md5 secret, SCRAM needs a "
                                              "plain or SCRAM one"
                                            : "auth_file has only an md5 secret, SCRAM needs a "
                                              "plain or SCRAM one")
                            : "wrong password");
        } else {
          return CloseWithError("08P01", std::string(server_final.status().message()));
        }
      }
      if (secret == nullptr || secret->kind == config::SecretKind::kMd5) {
        // Defensive: the made-up exchange above never verifies, but never let it log anyone in.
        return Failed("no SCRAM secret for user");
      }
      if (scram_->matched_alternative()) NotePreviousSecretUsed();
      client_.Write(pg::AuthenticationRequest(pg::kAuthSaslFinal, *server_final));
      return Outcome::kSucceeded;
    }
    case AuthMethod::kNone:
      return CloseWithError("08P01", "unexpected password message");
  }
  return Outcome::kFailed;
}

bool ClientAuth::PasswordMatches(const config::UserSecret& secret, const std::string& password) {
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

void ClientAuth::NotePreviousSecretUsed() {
  // Which secret, never the secret: the operator closing the overlap wants to know who still
  // uses the old password.
  PGF_DEBUG("client", "c=%d %s user '%s' logged in with the previous secret (rotation overlap)",
            id_, peer_, user_);
}

void ClientConn::StartAuth() {
  ConnMover::Move(this, State::kAuth);
  auth_ = std::make_unique<ClientAuth>(agent_, *this);
  if (auth_->Start() == ClientAuth::Outcome::kSucceeded) AuthSucceeded();
}

void ClientConn::HandleAuthMessage() {
  evbuffer* in = net_.input();
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
  if (auth_ == nullptr) {
    CloseWithError("08P01", "unexpected password message");
    return;
  }
  std::string body(header.body_size(), '\0');
  evbuffer_drain(in, pg::kHeaderSize);
  evbuffer_remove(in, body.data(), body.size());
  if (auth_->OnPasswordMessage(body) == ClientAuth::Outcome::kSucceeded) AuthSucceeded();
}

void ClientConn::AuthSucceeded() {
  cancel_pid_ = static_cast<int32_t>(id_ & 0x7fffffff);
  std::string key = crypto::RandomBytes(4);
  memcpy(&cancel_key_, key.data(), 4);
  agent_.RegisterCancelKey(this);
  if (agent_.config().log_connections) {
    PGF_INFO("client", "%s login attempt: db=%s user=%s tls=%s",
             ClientLogPrefix(id_, database(), user(), peer()), database(), user(),
             tls_ ? "yes" : "no");
  }
  if (database() == "pgbouncer") {
    const config::Config& cfg = agent_.config();
    if (cfg.auth_type != config::AuthType::kAny && !console_admin_ && !cfg.IsAdminUser(user()) &&
        !cfg.IsStatsUser(user())) {
      PGF_WARN("admin", "c=%d user %s from %s refused: not in admin_users or stats_users", id_,
               user(), peer());
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
    welcome += pg::BackendKeyData(cancel_pid_, cancel_key_) + LoginNotice(agent_.config()) +
               pg::ReadyForQuery('I');
    Write(welcome);
    auth_.reset();
    ProcessInput();
    return;
  }
  // PgBouncer's finish_client_login: these come after a successful authentication only.
  if (!agent_.config().FindDatabase(database()).has_value()) {
    CloseWithError("08P01", absl::StrCat("no such database: ", database()));
    return;
  }
  if (agent_.IsDisabled(database())) {
    CloseWithError("08P01", absl::StrCat("database \"", database(), "\" is disabled"));
    return;
  }
  if (!WithinClientLimits()) return;
  pool_ = agent_.GetPool(database(), agent_.PoolUserFor(database(), user()));
  if (pool_ == nullptr) {
    CloseWithError("08P01", absl::StrCat("no such database: ", database()));
    return;
  }
  // Not from a login with the previous secret of a rotation overlap: those keys are the old
  // password's, which PostgreSQL is about to stop taking (or already has).
  const crypto::ScramServerExchange* scram = auth_ != nullptr ? auth_->scram() : nullptr;
  // Only for the client's own pool: a forced user's pool logs in with that user's password.
  if (scram != nullptr && scram->keys().client_key.has_value() && !scram->matched_alternative() &&
      pool_->server_user() == user()) {
    pool_->set_scram_keys(scram->keys());
  }
  auth_.reset();
  // The pool's key holds the names from now on, unless the pool's user is another one (a
  // database that forces its user): the client's own name is then kept for SHOW CLIENTS and
  // max_user_client_connections.
  if (login_names_ != nullptr && login_names_->user == pool_->user()) login_names_.reset();
  pool_->AddClient(this);
}

bool ClientConn::WithinClientLimits() {
  const config::Config& cfg = agent_.config();
  const std::optional<config::DatabaseConfig> db = cfg.FindDatabase(database());
  const int max_db = db.has_value() ? cfg.MaxDbClientConnectionsFor(*db) : 0;
  const int max_user = cfg.MaxUserClientConnectionsFor(user());
  if (max_db == 0 && max_user == 0) return true;
  // This client is not in a pool yet: it is the one past the limit when the count reaches it.
  int db_clients = 0;
  int user_clients = 0;
  for (const auto& [key, pool] : agent_.pools()) {
    if (pool->db_name() == database()) db_clients += static_cast<int>(pool->client_count());
    // By the clients' own user: a database that forces its user pools several users' clients.
    if (max_user > 0) {
      auto count = [&](const ClientConn* client) {
        if (client->user() == user()) ++user_clients;
      };
      pool->login_waiting_clients().ForEach(count);
      pool->active_clients().ForEach(count);
      pool->waiting_clients().ForEach(count);
    }
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

}  // namespace pgfleet::agent
