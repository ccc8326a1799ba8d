// auth_query's pieces without a server: reading the answer (AuthQueryReader), the messages that
// carry the user name as a Bind parameter (AuthQueryMessages), and the bounded secret cache.

#include "agent/auth_query.h"

#include <optional>
#include <string>
#include <vector>

#include "agent/pg/protocol.h"
#include "gtest/gtest.h"

namespace pgfleet::agent {
namespace {

constexpr char kScramVerifier[] =
    "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$"
    "bf4LJ2gpC8k4d2T3T6ocqmW0uu1pURkzAWXz0eAMxkY=:"
    "Oz0t0W+kIGqO3gtTOmtiSAyRprYN1zxrh1D4Sh84bFY=";

// A DataRow body (no type byte or length) with NULL for nullopt.
std::string RowBody(const std::vector<std::optional<std::string>>& values) {
  pg::MessageBuilder builder('D');
  builder.Int16(static_cast<int16_t>(values.size()));
  for (const std::optional<std::string>& value : values) {
    if (!value.has_value()) {
      builder.Int32(-1);
    } else {
      builder.Int32(static_cast<int32_t>(value->size())).Bytes(*value);
    }
  }
  return builder.Finish().substr(pg::kHeaderSize);
}

std::string DescriptionBody(int columns) {
  std::vector<std::string> names;
  for (int i = 0; i < columns; ++i) names.push_back("c" + std::to_string(i));
  return pg::RowDescription(names).substr(pg::kHeaderSize);
}

TEST(AuthQueryReaderTest, NoRowMeansNoSuchUser) {
  AuthQueryReader reader("alice");
  EXPECT_TRUE(reader.OnMessage('T', DescriptionBody(2)).ok());
  EXPECT_FALSE(reader.answer().found);
}

TEST(AuthQueryReaderTest, ReadsEachKindOfSecret) {
  for (const auto& [password, kind] : std::vector<std::pair<std::string, config::SecretKind>>{
           {"md5" + std::string(32, 'a'), config::SecretKind::kMd5},
           {kScramVerifier, config::SecretKind::kScramSha256},
           {"plain-text", config::SecretKind::kPlain}}) {
    AuthQueryReader reader("alice");
    ASSERT_TRUE(reader.OnMessage('T', DescriptionBody(2)).ok());
    ASSERT_TRUE(reader.OnMessage('D', RowBody({"alice", password})).ok()) << password;
    ASSERT_TRUE(reader.answer().found);
    ASSERT_TRUE(reader.answer().secret.has_value());
    EXPECT_EQ(reader.answer().secret->kind, kind) << password;
    EXPECT_EQ(reader.answer().secret->secret, password);
    EXPECT_EQ(reader.answer().secret->user, "alice");
  }
}

TEST(AuthQueryReaderTest, NullOrEmptyPasswordIsFoundWithoutASecret) {
  for (const std::optional<std::string>& password :
       {std::optional<std::string>(), std::optional<std::string>("")}) {
    AuthQueryReader reader("alice");
    ASSERT_TRUE(reader.OnMessage('D', RowBody({"alice", password})).ok());
    EXPECT_TRUE(reader.answer().found);
    EXPECT_FALSE(reader.answer().secret.has_value());
  }
}

TEST(AuthQueryReaderTest, NullNameIsNoSuchUser) {
  // PgBouncer's documented user_lookup() returns (NULL, NULL) for an unknown user.
  AuthQueryReader reader("nobody");
  ASSERT_TRUE(reader.OnMessage('D', RowBody({std::nullopt, std::nullopt})).ok());
  EXPECT_FALSE(reader.answer().found);
}

TEST(AuthQueryReaderTest, WrongColumnCountIsPgBouncersError) {
  AuthQueryReader reader("alice");
  absl::Status status = reader.OnMessage('T', DescriptionBody(3));
  EXPECT_EQ(status.message(), "expected 2 columns from auth_query, not 3");
  AuthQueryReader rows("alice");
  EXPECT_FALSE(rows.OnMessage('D', RowBody({"alice"})).ok());
}

TEST(AuthQueryReaderTest, MalformedRowsAndSecretsAreErrors) {
  AuthQueryReader truncated("alice");
  std::string body = RowBody({"alice", "secret"});
  EXPECT_FALSE(truncated.OnMessage('D', body.substr(0, body.size() - 2)).ok());
  AuthQueryReader bad_verifier("alice");
  EXPECT_FALSE(bad_verifier.OnMessage('D', RowBody({"alice", "SCRAM-SHA-256$x"})).ok());
}

TEST(AuthQueryReaderTest, LastRowWins) {
  AuthQueryReader reader("alice");
  ASSERT_TRUE(reader.OnMessage('D', RowBody({"alice", "first"})).ok());
  ASSERT_TRUE(reader.OnMessage('D', RowBody({"alice", "second"})).ok());
  EXPECT_EQ(reader.answer().secret->secret, "second");
}

TEST(AuthQueryMessagesTest, TheUserNameIsABindParameterNotSql) {
  const std::string user = "x'; DROP TABLE t; --";
  const std::string messages = AuthQueryMessages("SELECT a, b FROM f($1)", user);
  std::vector<char> types;
  std::vector<std::string> bodies;
  for (size_t at = 0; at < messages.size();) {
    pg::MessageHeader header;
    ASSERT_EQ(pg::PeekHeader(std::string_view(messages).substr(at), 1 << 20, &header),
              pg::HeaderResult::kOk);
    types.push_back(header.type);
    bodies.push_back(messages.substr(at + pg::kHeaderSize, header.body_size()));
    at += header.total();
  }
  EXPECT_EQ(types, (std::vector<char>{'P', 'B', 'E', 'S'}));
  // Parse carries the SQL untouched.
  EXPECT_EQ(bodies[0], std::string("\0SELECT a, b FROM f($1)\0\0\0", 26));
  // Bind carries the user as its one text parameter.
  pg::BodyReader bind(bodies[1]);
  EXPECT_EQ(bind.CString(), "");
  EXPECT_EQ(bind.CString(), "");
  EXPECT_EQ(bind.Int16(), 0);
  EXPECT_EQ(bind.Int16(), 1);
  EXPECT_EQ(bind.Int32(), static_cast<int32_t>(user.size()));
  EXPECT_EQ(bind.Bytes(user.size()), user);
  EXPECT_EQ(bind.Int16(), 0);
  EXPECT_TRUE(bind.ok());
  EXPECT_EQ(bind.remaining(), 0u);
  EXPECT_EQ(messages.find("DROP TABLE"), messages.find(user) + 4);  // Only inside Bind.
}

config::UserSecret Secret(const std::string& user, const std::string& secret) {
  return config::UserSecret{user, secret, config::SecretKind::kPlain};
}

TEST(AuthQueryCacheTest, PutReplacesAndEraseForgets) {
  AuthQueryCache cache;
  EXPECT_EQ(cache.Find("db", "alice"), nullptr);
  cache.Put("db", "alice", Secret("alice", "one"));
  cache.Put("db", "alice", Secret("alice", "two"));  // A password changed on PostgreSQL.
  ASSERT_NE(cache.Find("db", "alice"), nullptr);
  EXPECT_EQ(cache.Find("db", "alice")->secret, "two");
  EXPECT_EQ(cache.Find("other", "alice"), nullptr);  // Per database.
  EXPECT_EQ(cache.size(), 1u);
  cache.Erase("db", "alice");
  EXPECT_EQ(cache.Find("db", "alice"), nullptr);
  EXPECT_EQ(cache.size(), 0u);
  cache.Erase("db", "alice");  // Absent: nothing happens.
}

TEST(AuthQueryCacheTest, BoundedLeastRecentlyUsedGoesFirst) {
  AuthQueryCache cache(3);
  cache.Put("db", "a", Secret("a", "1"));
  cache.Put("db", "b", Secret("b", "2"));
  cache.Put("db", "c", Secret("c", "3"));
  ASSERT_NE(cache.Find("db", "a"), nullptr);  // a is now the most recent.
  cache.Put("db", "d", Secret("d", "4"));     // b goes.
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.Find("db", "b"), nullptr);
  EXPECT_NE(cache.Find("db", "a"), nullptr);
  EXPECT_NE(cache.Find("db", "c"), nullptr);
  EXPECT_NE(cache.Find("db", "d"), nullptr);
  for (int i = 0; i < 100; ++i) cache.Put("db", std::to_string(i), Secret("x", "y"));
  EXPECT_EQ(cache.size(), 3u);
}

}  // namespace
}  // namespace pgfleet::agent
