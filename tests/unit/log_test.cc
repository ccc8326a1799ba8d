// common/log: one log call is always exactly one line, whatever the message holds (user and
// database names, application_name, server error text and agent ids all reach log lines).

#include "common/log.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgfleet::common {
namespace {

using ::testing::HasSubstr;

TEST(EscapeLogMessageTest, PlainTextIsUnchanged) {
  EXPECT_EQ(EscapeLogMessage(""), "");
  EXPECT_EQ(EscapeLogMessage("c=3 login attempt: db=app user=alice"),
            "c=3 login attempt: db=app user=alice");
  // Backslashes, quotes and UTF-8 stay readable.
  EXPECT_EQ(EscapeLogMessage(R"(C:\dir 'quoted' "double" Zürich)"),
            R"(C:\dir 'quoted' "double" Zürich)");
}

TEST(EscapeLogMessageTest, LineBreaksAndTabsGetTheirUsualEscapes) {
  EXPECT_EQ(EscapeLogMessage("a\nb"), R"(a\nb)");
  EXPECT_EQ(EscapeLogMessage("a\r\nb"), R"(a\r\nb)");
  EXPECT_EQ(EscapeLogMessage("a\tb"), R"(a\tb)");
  EXPECT_EQ(EscapeLogMessage("\n\n"), R"(\n\n)");
}

TEST(EscapeLogMessageTest, OtherControlBytesAreHex) {
  EXPECT_EQ(EscapeLogMessage(std::string("a\0b", 3)), R"(a\x00b)");
  EXPECT_EQ(EscapeLogMessage("\x1b[31mred\x1b[0m"), R"(\x1b[31mred\x1b[0m)");
  EXPECT_EQ(EscapeLogMessage("bell\x07"), R"(bell\x07)");
  EXPECT_EQ(EscapeLogMessage("del\x7f"), R"(del\x7f)");
  EXPECT_EQ(EscapeLogMessage("\x0b\x0c\x1f"), R"(\x0b\x0c\x1f)");
}

TEST(EscapeLogMessageTest, UnicodeLineSeparatorsAndC1ControlsAreEscaped) {
  // NEL (U+0085), LINE SEPARATOR (U+2028), PARAGRAPH SEPARATOR (U+2029) break lines in some
  // viewers; the C1 CSI (U+009B) starts terminal escape sequences.
  EXPECT_EQ(EscapeLogMessage("a\xc2\x85z"), R"(a\u0085z)");
  EXPECT_EQ(EscapeLogMessage("a\xe2\x80\xa8z\xe2\x80\xa9"), R"(a\u2028z\u2029)");
  EXPECT_EQ(EscapeLogMessage("\xc2\x9b"
                             "31m"),
            R"(\u009b31m)");
  // Neighbouring code points are left alone.
  EXPECT_EQ(EscapeLogMessage("\xc2\xa0\xe2\x80\xa7\xe2\x80\xaa"),
            "\xc2\xa0\xe2\x80\xa7\xe2\x80\xaa");
}

TEST(EscapeLogMessageTest, EveryByteBelowSpaceIsEscaped) {
  for (int byte = 0; byte < 0x20; ++byte) {
    const std::string escaped = EscapeLogMessage(std::string(1, static_cast<char>(byte)));
    ASSERT_GE(escaped.size(), 2u) << byte;
    EXPECT_EQ(escaped[0], '\\') << byte;
    for (char c : escaped) EXPECT_GE(static_cast<unsigned char>(c), 0x20) << byte;
  }
}

// The written line, as another process reading the log file sees it.
class LogFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/pgfleet-log-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    path_ = dir_ + "/test.log";
    ASSERT_TRUE(SetLogFile(path_));
  }
  void TearDown() override {
    SetLogFile("");
    std::remove(path_.c_str());
    rmdir(dir_.c_str());
  }
  std::vector<std::string> Lines() const {
    std::ifstream file(path_);
    std::stringstream text;
    text << file.rdbuf();
    std::vector<std::string> lines = absl::StrSplit(text.str(), '\n');
    EXPECT_EQ(lines.back(), "") << "the log must end with a newline";
    lines.pop_back();
    return lines;
  }

  std::string dir_;
  std::string path_;
};

TEST_F(LogFileTest, OneCallIsOneLineWhateverTheArgumentsHold) {
  const std::string injected_user = "x\n2026-01-01 00:00:00.000 UTC [1] ERROR fake: line\r\n";
  PGF_WARN("client", "c=%d login failed for user '%s' db '%s'", 7, injected_user, "db\nfake");
  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 1u) << ::testing::PrintToString(lines);
  EXPECT_THAT(lines[0], HasSubstr(" WARNING client: c=7 login failed for user "
                                  R"('x\n2026-01-01 00:00:00.000 UTC [1] ERROR fake: line\r\n')"
                                  R"( db 'db\nfake')"));
  for (const std::string& line : lines) {
    EXPECT_FALSE(absl::StartsWith(line, "2026-01-01")) << line;
  }
}

}  // namespace
}  // namespace pgfleet::common

namespace pgfleet::common {
namespace {

// 2026-12-05 22:44:05.521 UTC.
constexpr int64_t kWhen = int64_t{1796510645} * 1000000 + 521000;

TEST(LogFormatTest, TextLinesHavePgBouncersShape) {
  EXPECT_EQ(FormatLogLine(LogFormat::kText, kWhen, 1234, LogLevel::kInfo, "agent", "started"),
            "2026-12-05 22:44:05.521 UTC [1234] LOG agent: started\n");
  EXPECT_EQ(FormatLogLine(LogFormat::kText, kWhen, 7, LogLevel::kWarning, "link", "retrying"),
            "2026-12-05 22:44:05.521 UTC [7] WARNING link: retrying\n");
  EXPECT_EQ(FormatLogLine(LogFormat::kText, kWhen, 7, LogLevel::kError, "x", "y"),
            "2026-12-05 22:44:05.521 UTC [7] ERROR x: y\n");
  // A line about one connection starts with the connection, as PgBouncer's do.
  EXPECT_EQ(FormatLogLine(LogFormat::kText, kWhen, 7, LogLevel::kInfo, "client",
                          "C-0x1f: app/alice@127.0.0.1:5000 login attempt: db=app user=alice"),
            "2026-12-05 22:44:05.521 UTC [7] LOG C-0x1f: app/alice@127.0.0.1:5000 login "
            "attempt: db=app user=alice\n");
  EXPECT_EQ(FormatLogLine(LogFormat::kText, kWhen, 7, LogLevel::kInfo, "stats", "1 xacts/s"),
            "2026-12-05 22:44:05.521 UTC [7] LOG stats: 1 xacts/s\n");
  // Still one line whatever the message holds.
  EXPECT_EQ(FormatLogLine(LogFormat::kText, kWhen, 7, LogLevel::kInfo, "a", "x\nLOG y"),
            "2026-12-05 22:44:05.521 UTC [7] LOG a: x\\nLOG y\n");
}

TEST(LogFormatTest, JsonLinesAreOneValidObject) {
  EXPECT_EQ(FormatLogLine(LogFormat::kJson, kWhen, 42, LogLevel::kInfo, "client", "login ok"),
            R"({"time":"2026-12-05T22:44:05.521Z","level":"info","pid":42,"component":"client",)"
            R"("message":"login ok"})"
            "\n");
  // Quotes, backslashes, controls and line separators escaped; bytes that are not UTF-8
  // replaced, so a peer-provided name cannot break the object or the line.
  const std::string line =
      FormatLogLine(LogFormat::kJson, kWhen, 1, LogLevel::kWarning, "c",
                    "q\"b\\n\nt\tz\x01 \xe2\x80\xa8 bad\xff\xc3 ok \xc3\xa9 \xf0\x9f\x98\x80");
  EXPECT_EQ(line, R"({"time":"2026-12-05T22:44:05.521Z","level":"warning","pid":1,"component":"c",)"
                  R"("message":"q\"b\\n\nt\tz\u0001 \u2028 bad\ufffd\ufffd ok )"
                  "\xc3\xa9 \xf0\x9f\x98\x80\"}\n");
  // Overlong and surrogate encodings are not UTF-8 either.
  EXPECT_THAT(
      FormatLogLine(LogFormat::kJson, kWhen, 1, LogLevel::kDebug, "c", "\xc0\xaf\xed\xa0\x80"),
      HasSubstr(
          R"("level":"debug","pid":1,"component":"c","message":"\ufffd\ufffd\ufffd\ufffd\ufffd"})"));
}

TEST(LogFormatTest, ParsesTheTwoNames) {
  EXPECT_EQ(ParseLogFormat("text"), LogFormat::kText);
  EXPECT_EQ(ParseLogFormat("json"), LogFormat::kJson);
  EXPECT_EQ(ParseLogFormat("JSON"), std::nullopt);
  EXPECT_EQ(ParseLogFormat("pgbouncer"), std::nullopt);
}

}  // namespace
}  // namespace pgfleet::common
