// Named Bind rewritten in stream (ServerStatements::OnBindStart) and the per-client bounds on
// named statements (ClientStatements::HasRoomFor / bytes), without sockets.

#include <arpa/inet.h>

#include <cstring>
#include <string>

#include "agent/prepared_statements.h"
#include "gtest/gtest.h"

namespace pgfleet::agent::ps {
namespace {

std::string ParseBody(std::string_view name, std::string_view query) {
  return std::string(name) + '\0' + std::string(query) + '\0' + std::string(2, '\0');
}

uint32_t LengthAt(const std::string& bytes, size_t pos) {
  uint32_t length;
  memcpy(&length, bytes.data() + pos + 1, 4);
  return ntohl(length);
}

// The start plus the untouched rest is exactly what the whole-message rewrite produces, and
// the length in the new header covers the rest the client has yet to send.
TEST(BindStartTest, StartPlusRestEqualsTheWholeRewrite) {
  ClientStatements client;
  ServerStatements whole;
  ServerStatements streamed;
  ServerStatements first;
  first.OnParse(ParseBody("a_rather_long_client_name", "select length($1)"), client, 10);
  const StatementPtr statement = *client.Find("a_rather_long_client_name");

  // One text parameter of 100 bytes; no formats.
  std::string rest = std::string(2, '\0') + std::string("\0\1", 2);
  const uint32_t param_length = htonl(100);
  rest.append(reinterpret_cast<const char*>(&param_length), 4);
  rest += std::string(100, 'x') + std::string(2, '\0');
  const std::string body = std::string("portal") + '\0' + "a_rather_long_client_name" + '\0' + rest;

  const std::string expected = whole.OnBind(body, client, 10);
  std::optional<std::string> start =
      streamed.OnBindStart("portal", "a_rather_long_client_name", rest.size(), client, 10);
  ASSERT_TRUE(start.has_value());
  EXPECT_EQ(*start + rest, expected);

  // The server lacked the statement: its Parse comes first, then the Bind's new start.
  ASSERT_EQ((*start)[0], 'P');
  const size_t bind_at = 1 + LengthAt(*start, 0);
  ASSERT_EQ((*start)[bind_at], 'B');
  const size_t start_body = start->size() - bind_at - 5;
  EXPECT_EQ(LengthAt(*start, bind_at), 4 + start_body + rest.size());
  EXPECT_EQ(start->substr(bind_at + 5),
            std::string("portal") + '\0' + statement->server_name + '\0');
  EXPECT_EQ(streamed.OnResponse('1'), ResponseAction::kSwallow) << "the injected Parse";

  // Now prepared there: only the start is replaced.
  start = streamed.OnBindStart("", "a_rather_long_client_name", rest.size(), client, 10);
  ASSERT_TRUE(start.has_value());
  EXPECT_EQ((*start)[0], 'B');
  EXPECT_EQ(LengthAt(*start, 0), 4 + 1 + statement->server_name.size() + 1 + rest.size());
}

TEST(BindStartTest, UnknownOrUnnamedStatementIsNotRewritten) {
  ClientStatements client;
  ServerStatements server;
  EXPECT_FALSE(server.OnBindStart("", "nope", 10, client, 10).has_value());
  EXPECT_FALSE(server.OnBindStart("", "", 10, client, 10).has_value());
  EXPECT_FALSE(server.AnswersPending());
}

TEST(BindStartTest, LengthBeyondTheProtocolIsNotRewritten) {
  ClientStatements client;
  ServerStatements server;
  server.OnParse(ParseBody("s", "select 1"), client, 10);
  EXPECT_FALSE(server.OnBindStart("", "s", size_t{0x7fffffff}, client, 10).has_value());
}

TEST(ClientStatementsLimitTest, BytesFollowSetEraseAndClear) {
  ClientStatements client;
  const StatementPtr one = Intern(ParseBody("", "select 1").substr(1));
  const StatementPtr two = Intern(ParseBody("", "select 22").substr(1));
  client.Set("a", one);
  EXPECT_EQ(client.bytes(), 1 + one->definition.size());
  client.Set("bb", two);
  EXPECT_EQ(client.bytes(), 1 + one->definition.size() + 2 + two->definition.size());
  client.Set("a", two);  // Replaced: counted once, at its new size.
  EXPECT_EQ(client.bytes(), 1 + two->definition.size() + 2 + two->definition.size());
  client.EraseIf("a", one.get());  // Not what "a" holds now: no change.
  EXPECT_EQ(client.bytes(), 1 + two->definition.size() + 2 + two->definition.size());
  client.EraseIf("a", two.get());
  EXPECT_EQ(client.bytes(), 2 + two->definition.size());
  client.Erase("missing");
  client.Erase("bb");
  EXPECT_EQ(client.bytes(), 0u);
  client.Set("c", one);
  client.Clear();
  EXPECT_EQ(client.bytes(), 0u);
  EXPECT_EQ(client.size(), 0u);
}

TEST(ClientStatementsLimitTest, CountAndBytesAreBounded) {
  ClientStatements client;
  const StatementPtr statement = Intern(ParseBody("", "select 1").substr(1));
  for (size_t i = 0; i < kMaxClientStatements; ++i) {
    const std::string name = "s" + std::to_string(i);
    ASSERT_TRUE(client.HasRoomFor(name, statement->definition)) << i;
    client.Set(name, statement);
  }
  EXPECT_FALSE(client.HasRoomFor("one_more", statement->definition));
  client.Erase("s0");
  EXPECT_TRUE(client.HasRoomFor("one_more", statement->definition));

  ClientStatements big;
  const std::string huge(kMaxClientStatementBytes, 'q');
  EXPECT_FALSE(big.HasRoomFor("x", huge)) << "name and definition together exceed the bound";
  EXPECT_TRUE(big.HasRoomFor("", std::string_view(huge).substr(1)));
}

}  // namespace
}  // namespace pgfleet::agent::ps
