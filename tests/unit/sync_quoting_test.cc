// How the agent hands client-chosen values to PostgreSQL (issue 17): QuoteLiteral must read the
// same whatever standard_conforming_strings says, and SetConfigMessages must carry each value as
// a Bind parameter, byte for byte, never as SQL text.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/pg/protocol.h"
#include "gtest/gtest.h"

namespace pgfleet::agent::pg {
namespace {

TEST(QuoteLiteralTest, WithoutBackslashesTheStandardForm) {
  EXPECT_EQ(QuoteLiteral("abc"), "'abc'");
  EXPECT_EQ(QuoteLiteral("O'Brien"), "'O''Brien'");
}

// A '...' literal with a backslash means two things: with standard_conforming_strings off, \'
// is an escaped quote and the next ' ends the literal early. E'...' means one.
TEST(QuoteLiteralTest, WithABackslashTheEscapeForm) {
  EXPECT_EQ(QuoteLiteral(R"(a\b)"), R"(E'a\\b')");
  EXPECT_EQ(QuoteLiteral(R"(x\'; SELECT 1--)"), R"(E'x\\''; SELECT 1--')");
  EXPECT_EQ(QuoteLiteral(R"(\)"), R"(E'\\')");
  EXPECT_EQ(QuoteLiteral(R"(\\')"), R"(E'\\\\''')");
}

// Reads an E'...' / '...' literal the way PostgreSQL's lexer does with
// standard_conforming_strings off (the dangerous reading), and returns the value and where the
// literal ended.
std::pair<std::string, size_t> ReadLiteralNonConforming(std::string_view sql) {
  size_t i = 0;
  if (sql[i] == 'E') ++i;
  ++i;  // Opening quote.
  std::string value;
  while (i < sql.size()) {
    if (sql[i] == '\\' && i + 1 < sql.size()) {
      value.push_back(sql[i + 1]);
      i += 2;
    } else if (sql[i] == '\'' && i + 1 < sql.size() && sql[i + 1] == '\'') {
      value.push_back('\'');
      i += 2;
    } else if (sql[i] == '\'') {
      return {value, i + 1};
    } else {
      value.push_back(sql[i++]);
    }
  }
  return {value, std::string::npos};
}

TEST(QuoteLiteralTest, ReadsBackExactlyEvenWhenBackslashesAreEscapes) {
  for (std::string_view value : {R"(x\'; CREATE TABLE t(); --)", R"(C:\temp\new 'q' \\ end\)",
                                 R"(\)", R"(')", R"(''\'\\'')", "plain"}) {
    const std::string quoted = QuoteLiteral(value);
    const auto [read, end] = ReadLiteralNonConforming(quoted);
    EXPECT_EQ(read, value) << quoted;
    EXPECT_EQ(end, quoted.size()) << quoted << ": the literal ended early";
  }
}

// A minimal frontend-message reader for the test: type, body.
std::vector<std::pair<char, std::string>> SplitFrontend(std::string_view bytes) {
  std::vector<std::pair<char, std::string>> messages;
  size_t at = 0;
  while (at + 5 <= bytes.size()) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data() + at + 1);
    const uint32_t length =
        (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
    messages.emplace_back(bytes[at], std::string(bytes.substr(at + 5, length - 4)));
    at += 1 + length;
  }
  EXPECT_EQ(at, bytes.size());
  return messages;
}

TEST(SetConfigMessagesTest, OneParseABindAndExecutePerSettingAndOneSync) {
  const std::string evil = "x\\'; SELECT pg_sleep(0)--\n\xe3\\";
  const std::string messages =
      SetConfigMessages({{"standard_conforming_strings", "off"}, {"application_name", evil}});
  const auto parsed = SplitFrontend(messages);
  ASSERT_EQ(parsed.size(), 6u);
  EXPECT_EQ(parsed[0].first, 'P');
  EXPECT_EQ(parsed[0].second,
            std::string("\0SELECT pg_catalog.set_config($1, $2, false)\0\0\0", 47));
  EXPECT_EQ(parsed[1].first, 'B');
  EXPECT_EQ(parsed[2].first, 'E');
  EXPECT_EQ(parsed[3].first, 'B');
  EXPECT_EQ(parsed[4].first, 'E');
  EXPECT_EQ(parsed[5].first, 'S');
  EXPECT_EQ(parsed[5].second, "");

  // The second Bind: portal "", statement "", 0 format codes, 2 parameters, the name and the
  // value verbatim with their lengths, 0 result format codes.
  BodyReader bind(parsed[3].second);
  EXPECT_EQ(bind.CString(), "");
  EXPECT_EQ(bind.CString(), "");
  EXPECT_EQ(bind.Int16(), 0);
  EXPECT_EQ(bind.Int16(), 2);
  const int32_t name_length = bind.Int32();
  EXPECT_EQ(bind.Bytes(static_cast<size_t>(name_length)), "application_name");
  const int32_t value_length = bind.Int32();
  EXPECT_EQ(bind.Bytes(static_cast<size_t>(value_length)), evil);
  EXPECT_EQ(bind.Int16(), 0);
  EXPECT_TRUE(bind.ok());
  EXPECT_EQ(bind.remaining(), 0u);

  BodyReader execute(parsed[4].second);
  EXPECT_EQ(execute.CString(), "");
  EXPECT_EQ(execute.Int32(), 0);
  EXPECT_TRUE(execute.ok());
}

}  // namespace
}  // namespace pgfleet::agent::pg
