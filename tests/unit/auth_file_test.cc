#include "common/config/auth_file.h"

#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgfleet::config {
namespace {

using ::testing::HasSubstr;

constexpr char kScramSecret[] =
    "SCRAM-SHA-256$4096:LVe5wND/N7BAUYM5WYEl7w==$QxS6K2xfpy5Jz8PmbK5ldyCNbAOXFTgrkf2EmIpoKLQ=:"
    "q7s12NfeXwRGEIJ3Mw1G5xakJb55UWO3846LL7a+tpo=";

TEST(AuthFileTest, ParsesPlainMd5AndScramEntries) {
  const std::string text = std::string("\"alice\" \"md54a0a68b43b6cd5cf266fa02f196e2371\"\n") +
                           "\"bob\" \"hunter2\"\n" +  //
                           "\"carol\" \"" + kScramSecret + "\"\n";
  absl::StatusOr<AuthFile> file = ParseAuthFile(text, "userlist.txt");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->size(), 3u);

  const UserSecret& alice = file->at("alice");
  EXPECT_EQ(alice.user, "alice");
  EXPECT_EQ(alice.secret, "md54a0a68b43b6cd5cf266fa02f196e2371");
  EXPECT_EQ(alice.kind, SecretKind::kMd5);

  EXPECT_EQ(file->at("bob").secret, "hunter2");
  EXPECT_EQ(file->at("bob").kind, SecretKind::kPlain);

  EXPECT_EQ(file->at("carol").secret, kScramSecret);
  EXPECT_EQ(file->at("carol").kind, SecretKind::kScramSha256);
}

TEST(AuthFileTest, Md5NeedsExactlyThirtyTwoLowerCaseHexDigits) {
  absl::StatusOr<AuthFile> file = ParseAuthFile(
      "\"short\" \"md54a0a68b43b6cd5cf266fa02f196e237\"\n"
      "\"long\" \"md54a0a68b43b6cd5cf266fa02f196e23711\"\n"
      "\"nonhex\" \"md54a0a68b43b6cd5cf266fa02f196e237g\"\n"
      "\"upper\" \"md54A0A68B43B6CD5CF266FA02F196E2371\"\n"
      "\"prefix\" \"MD54a0a68b43b6cd5cf266fa02f196e2371\"\n",
      "userlist.txt");
  ASSERT_TRUE(file.ok()) << file.status();
  for (const auto& [user, entry] : *file) {
    EXPECT_EQ(entry.kind, SecretKind::kPlain) << user;
  }
}

TEST(AuthFileTest, SkipsCommentsAndBlankLinesAndIgnoresExtraFields) {
  absl::StatusOr<AuthFile> file = ParseAuthFile(
      "; PgBouncer comment\n"
      "# shell-style comment\n"
      "\n"
      "   \t\n"
      "  ; indented comment\n"
      "  \"alice\"   \"pw1\"  \"extra\" trailing junk\n"
      "\"bob\"\t\"pw2\"\r\n"  // CRLF files.
      "\"carol\" \"pw3\"",    // No final newline.
      "userlist.txt");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->size(), 3u);
  EXPECT_EQ(file->at("alice").secret, "pw1");
  EXPECT_EQ(file->at("bob").secret, "pw2");
  EXPECT_EQ(file->at("carol").secret, "pw3");
}

TEST(AuthFileTest, DoubledQuotesAreLiteralQuotes) {
  absl::StatusOr<AuthFile> file = ParseAuthFile(
      "\"we\"\"ird\" \"pa\"\"ss word\"\"\"\n"
      "\"x\" \"\"\"\"\n"
      "\"empty\" \"\"\n",
      "userlist.txt");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->at("we\"ird").user, "we\"ird");
  EXPECT_EQ(file->at("we\"ird").secret, "pa\"ss word\"");
  EXPECT_EQ(file->at("x").secret, "\"");
  EXPECT_EQ(file->at("empty").secret, "");
  EXPECT_EQ(file->at("empty").kind, SecretKind::kPlain);
}

TEST(AuthFileTest, LaterEntryForSameUserWins) {
  absl::StatusOr<AuthFile> file = ParseAuthFile("\"a\" \"one\"\n\"a\" \"two\"\n", "u.txt");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->size(), 1u);
  EXPECT_EQ(file->at("a").secret, "two");
}

TEST(AuthFileTest, EmptyFileIsEmpty) {
  absl::StatusOr<AuthFile> file = ParseAuthFile("", "u.txt");
  ASSERT_TRUE(file.ok());
  EXPECT_TRUE(file->empty());
}

struct BadLine {
  const char* text;
  const char* expected;  // Substring of the error, after "u.txt:<line>: ".
};

TEST(AuthFileTest, ErrorsNameFileAndLine) {
  for (const BadLine& bad : {
           BadLine{"\"alice\" \"pw\"\n\"bob\n", "u.txt:2: unterminated quote in user name"},
           BadLine{"; c\n\"alice\" \"pw\n", "u.txt:2: unterminated quote in secret"},
           BadLine{"\n\n\"alice\"\n\"pw\"\n", "u.txt:3: missing secret for user \"alice\""},
           BadLine{"\"alice\"   \r\n", "u.txt:1: missing secret"},
           BadLine{"\"alice\" pw\n", "u.txt:1: expected a quoted secret"},
           BadLine{"alice \"pw\"\n", "u.txt:1: expected a quoted user name"},
           BadLine{"\"\" \"pw\"\n", "u.txt:1: empty user name"},
           BadLine{"\"a\" \"b\"\n\"carol\" \"SCRAM-SHA-256$0:c2FsdA==$x:y\"\n",
                   "u.txt:2: user \"carol\": SCRAM secret has an invalid iteration count"},
           BadLine{"\"carol\" \"SCRAM-SHA-256$4096:c2FsdA==$c2FsdA==:c2FsdA==\"\n",
                   "u.txt:1: user \"carol\": SCRAM secret's StoredKey"},
       }) {
    absl::StatusOr<AuthFile> file = ParseAuthFile(bad.text, "u.txt");
    EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument) << bad.text;
    EXPECT_THAT(file.status().message(), HasSubstr(bad.expected)) << bad.text;
  }
}

TEST(AuthFileTest, LoadsFromDisk) {
  const std::string path =
      ::testing::TempDir() + "/pgfleet_auth_file_test_" + std::to_string(getpid()) + ".txt";
  {
    std::ofstream out(path);
    out << "\"alice\" \"md54a0a68b43b6cd5cf266fa02f196e2371\"\n\"bob\"\n";
  }
  absl::StatusOr<AuthFile> file = LoadAuthFile(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr(path + ":2: missing secret"));

  {
    std::ofstream out(path);
    out << "\"alice\" \"md54a0a68b43b6cd5cf266fa02f196e2371\"\n";
  }
  file = LoadAuthFile(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->at("alice").kind, SecretKind::kMd5);
  unlink(path.c_str());
}

TEST(AuthFileTest, MissingFileIsNotFound) {
  const std::string path = ::testing::TempDir() + "/pgfleet_no_such_auth_file.txt";
  absl::StatusOr<AuthFile> file = LoadAuthFile(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr(path));
}

}  // namespace
}  // namespace pgfleet::config
