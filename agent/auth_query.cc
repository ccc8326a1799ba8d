#include "agent/auth_query.h"

#include "absl/strings/str_cat.h"
#include "agent/pg/protocol.h"

namespace pgfleet::agent {

absl::Status AuthQueryReader::OnMessage(char type, std::string_view body) {
  pg::BodyReader reader(body);
  const int16_t columns = reader.Int16();
  if (!reader.ok()) return absl::InvalidArgumentError("bad packet in the auth_query answer");
  if (columns != 2) {
    // PgBouncer's words.
    return absl::InvalidArgumentError(
        absl::StrCat("expected 2 columns from auth_query, not ", columns));
  }
  if (type != 'D') return absl::OkStatus();  // RowDescription: the count is all that matters.
  const int32_t name_length = reader.Int32();
  if (reader.ok() && name_length < 0) {
    // PgBouncer fails the lookup here ("auth_query response contained null user name"); but its
    // documented user_lookup() function returns exactly such a row for a user that does not
    // exist, so pgfleet reads it as "no such user".
    return absl::OkStatus();
  }
  reader.Bytes(static_cast<size_t>(name_length));
  const int32_t password_length = reader.Int32();
  std::string_view password;
  if (password_length >= 0) password = reader.Bytes(static_cast<size_t>(password_length));
  if (!reader.ok()) return absl::InvalidArgumentError("bad packet in the auth_query answer");
  answer_.found = true;
  answer_.secret.reset();
  // NULL (an expired VALID UNTIL under the default query) or empty: no password can match, as
  // PgBouncer ("disallow empty passwords").
  if (password.empty()) return absl::OkStatus();
  absl::StatusOr<config::UserSecret> secret = config::MakeUserSecret(user_, std::string(password));
  if (!secret.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("auth_query returned a password pgfleet cannot "
                     "read: ",
                     secret.status().message()));
  }
  answer_.secret = *std::move(secret);
  return absl::OkStatus();
}

std::string AuthQueryMessages(std::string_view sql, std::string_view user) {
  std::string messages = pg::MessageBuilder('P')
                             .CString("")  // Unnamed statement.
                             .CString(sql)
                             .Int16(0)  // The server infers $1's type.
                             .Finish();
  messages += pg::MessageBuilder('B')
                  .CString("")  // Unnamed portal.
                  .CString("")
                  .Int16(0)  // Parameters in text.
                  .Int16(1)
                  .Int32(static_cast<int32_t>(user.size()))
                  .Bytes(user)
                  .Int16(0)  // Results in text.
                  .Finish();
  messages += pg::MessageBuilder('E').CString("").Int32(0).Finish();
  messages += pg::MessageBuilder('S').Finish();
  return messages;
}

void AuthQueryCache::Put(const std::string& database, const std::string& user,
                         config::UserSecret secret) {
  Key key(database, user);
  auto it = entries_.find(key);
  if (it != entries_.end()) {
    it->second.secret = std::move(secret);
    recency_.splice(recency_.begin(), recency_, it->second.recency);
    return;
  }
  if (capacity_ == 0) return;
  while (entries_.size() >= capacity_) {
    entries_.erase(recency_.back());
    recency_.pop_back();
  }
  recency_.push_front(key);
  entries_.emplace(std::move(key), Entry{std::move(secret), recency_.begin()});
}

const config::UserSecret* AuthQueryCache::Find(const std::string& database,
                                               const std::string& user) {
  auto it = entries_.find(Key(database, user));
  if (it == entries_.end()) return nullptr;
  recency_.splice(recency_.begin(), recency_, it->second.recency);
  return &it->second.secret;
}

void AuthQueryCache::Erase(const std::string& database, const std::string& user) {
  auto it = entries_.find(Key(database, user));
  if (it == entries_.end()) return;
  recency_.erase(it->second.recency);
  entries_.erase(it);
}

AuthLookup::AuthLookup(std::string sql, std::string user, Done done)
    : sql_(std::move(sql)), user_(user), reader_(std::move(user)), done_(std::move(done)) {}

AuthLookup::~AuthLookup() { Pool::CancelQuery(this); }

std::string AuthLookup::Messages() const { return AuthQueryMessages(sql_, user_); }

void AuthLookup::OnMessage(char type, std::string_view body) {
  if (!read_error_.ok()) return;  // The first problem is the one reported.
  read_error_ = reader_.OnMessage(type, body);
}

void AuthLookup::OnDone(const absl::Status& status) {
  Done done = std::move(done_);
  if (!status.ok()) {
    done(status);
  } else if (!read_error_.ok()) {
    done(read_error_);
  } else {
    done(reader_.answer());
  }
}

}  // namespace pgfleet::agent
