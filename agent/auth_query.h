// auth_query: the passwords of users not in auth_file, looked up in PostgreSQL as PgBouncer
// does. The lookup runs auth_query (user name as $1, a Bind parameter, never SQL text) on a
// server connection of auth_user's pool for the client's database (or auth_dbname), without
// blocking the event loop: other clients go on while one waits. As in PgBouncer every login of
// such a user runs the query, so a password changed with ALTER ROLE, a VALID UNTIL that passed
// or a NOLOGIN counts from the next login on, without a RELOAD. The answer is kept in a bounded
// cache that the agent's own logins to PostgreSQL as that user read (a plaintext or md5 secret;
// a SCRAM verifier needs the keys of the client's SCRAM login, see Pool::scram_keys).
#pragma once

#include <cstddef>
#include <functional>
#include <list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/pool.h"
#include "common/config/auth_file.h"

namespace pgfleet::agent {

// What auth_query answered for one user.
struct AuthQueryAnswer {
  // A row came back. None: no such role, or rolcanlogin false (the default query's WHERE).
  bool found = false;
  // The password column; nullopt when it was NULL (VALID UNTIL in the past under the default
  // query, or no password set) or empty: nothing can match it.
  std::optional<config::UserSecret> secret;
};

// Reads auth_query's RowDescription and DataRows into an answer, with PgBouncer's rules:
// exactly two columns (name, password), the last row wins. A row with a NULL name counts as
// none (PgBouncer's documented user_lookup() function answers an unknown user so).
class AuthQueryReader {
 public:
  explicit AuthQueryReader(std::string user) : user_(std::move(user)) {}
  // An error ends the lookup: the answer cannot be trusted.
  absl::Status OnMessage(char type, std::string_view body);
  const AuthQueryAnswer& answer() const { return answer_; }

 private:
  std::string user_;
  AuthQueryAnswer answer_;
};

// Parse, Bind (with `user` as the text parameter $1), Execute and Sync of `sql`: one
// ReadyForQuery answers them.
std::string AuthQueryMessages(std::string_view sql, std::string_view user);

// The looked-up secrets, per (database, user): the database is the one the client asked for,
// whose pool logs in to PostgreSQL with the secret. At most `capacity` entries; past that the
// least recently used goes (its pool's next server login then waits for the user's next client
// login to look the secret up again).
class AuthQueryCache {
 public:
  static constexpr size_t kDefaultCapacity = 10000;
  explicit AuthQueryCache(size_t capacity = kDefaultCapacity) : capacity_(capacity) {}

  void Put(const std::string& database, const std::string& user, config::UserSecret secret);
  // nullptr when absent. Counts as a use. The pointer is valid until the next Put or Erase.
  const config::UserSecret* Find(const std::string& database, const std::string& user);
  void Erase(const std::string& database, const std::string& user);
  size_t size() const { return entries_.size(); }

 private:
  using Key = std::pair<std::string, std::string>;
  struct Entry {
    config::UserSecret secret;
    std::list<Key>::iterator recency;  // Its place in recency_ (front: most recent).
  };
  size_t capacity_;
  std::map<Key, Entry> entries_;
  std::list<Key> recency_;
};

// One lookup on a pool's server (Pool::RunQuery). `done` is called once with the answer or why
// there is none, unless the lookup is destroyed first (which withdraws it).
class AuthLookup : public ServerQuery {
 public:
  using Done = std::function<void(absl::StatusOr<AuthQueryAnswer>)>;
  AuthLookup(std::string sql, std::string user, Done done);
  ~AuthLookup() override;
  AuthLookup(const AuthLookup&) = delete;
  AuthLookup& operator=(const AuthLookup&) = delete;

  std::string Messages() const override;
  void OnMessage(char type, std::string_view body) override;
  void OnDone(const absl::Status& status) override;

 private:
  std::string sql_;
  std::string user_;
  AuthQueryReader reader_;
  absl::Status read_error_;
  Done done_;
};

}  // namespace pgfleet::agent
