// The @file rule for the hba file of a pushed config (agent/path_policy.h,
// PushedHbaIncludeReader): an include inside the allowed paths is read, one outside them (named
// directly, through "..", through a symlink, or from a nested include) is refused before it is
// opened, with the including file, its line and the resolved path.

#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "agent/path_policy.h"
#include "common/config/hba.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"

namespace pgfleet::agent {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

class PushedHbaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGF_ASSERT_OK(temp_.Create("pushed-hba"));
    allowed_ = temp_.path() + "/allowed";
    outside_ = temp_.path() + "/outside";
    ASSERT_EQ(mkdir(allowed_.c_str(), 0700), 0);
    ASSERT_EQ(mkdir(outside_.c_str(), 0700), 0);
    // Names the agent must not be made to read: a stand-in for /etc/shadow and the like.
    PGF_ASSERT_OK(testutil::WriteFile(outside_ + "/secret-names", "root, postgres\n"));
    absl::StatusOr<PathPolicy> policy = MakePathPolicy({allowed_}, {});
    ASSERT_TRUE(policy.ok()) << policy.status();
    policy_ = *std::move(policy);
  }

  // `text` parsed as <allowed>/hba.conf with the pushed-config include reader.
  absl::StatusOr<config::HbaFile> Parse(const std::string& text) {
    return config::ParseHbaFile(text, allowed_ + "/hba.conf", {}, PushedHbaIncludeReader(policy_));
  }

  testutil::TempDir temp_;
  std::string allowed_;
  std::string outside_;
  PathPolicy policy_;
};

TEST_F(PushedHbaTest, IncludeInsideTheAllowedPathsIsRead) {
  PGF_ASSERT_OK(testutil::WriteFile(allowed_ + "/admins", "alice, bob\n"));
  absl::StatusOr<config::HbaFile> hba =
      Parse("host all @admins 0.0.0.0/0 scram-sha-256\nhost all all 0.0.0.0/0 reject\n");
  ASSERT_TRUE(hba.ok()) << hba.status();
  ASSERT_EQ(hba->rules.size(), 2u);
  EXPECT_THAT(hba->rules[0].users.names, ::testing::ElementsAre("alice", "bob"));
}

TEST_F(PushedHbaTest, IncludeOutsideTheAllowedPathsIsRefusedWithFileAndLine) {
  const std::string named = outside_ + "/secret-names";
  absl::StatusOr<config::HbaFile> hba =
      Parse(absl::StrCat("host all all 0.0.0.0/0 reject\nhost all @", named, " all trust\n"));
  ASSERT_FALSE(hba.ok());
  EXPECT_THAT(std::string(hba.status().message()),
              AllOf(HasSubstr(allowed_ + "/hba.conf:2: @" + named + ": "),
                    HasSubstr(named + " is outside the allowed paths (--allow-path)")));
}

TEST_F(PushedHbaTest, DotDotOutOfTheAllowedPathsIsRefused) {
  absl::StatusOr<config::HbaFile> hba = Parse("host all @../outside/secret-names all trust\n");
  ASSERT_FALSE(hba.ok());
  EXPECT_THAT(std::string(hba.status().message()),
              AllOf(HasSubstr("hba.conf:1: @../outside/secret-names"),
                    HasSubstr("is outside the allowed paths (--allow-path)")));
}

TEST_F(PushedHbaTest, SymlinkOutOfTheAllowedPathsIsRefusedNamingItsTarget) {
  ASSERT_EQ(symlink((outside_ + "/secret-names").c_str(), (allowed_ + "/names").c_str()), 0);
  absl::StatusOr<config::HbaFile> hba = Parse("host all @names all trust\n");
  ASSERT_FALSE(hba.ok());
  // The resolved target is named: the link itself is inside, what it opens is not.
  EXPECT_THAT(std::string(hba.status().message()),
              AllOf(HasSubstr("hba.conf:1: @names"), HasSubstr(outside_ + "/secret-names"),
                    HasSubstr("is outside the allowed paths (--allow-path)")));
}

TEST_F(PushedHbaTest, NestedIncludeOutsideTheAllowedPathsIsRefusedAtItsLine) {
  PGF_ASSERT_OK(testutil::WriteFile(allowed_ + "/users",
                                    absl::StrCat("carol\n@", outside_, "/secret-names\n")));
  absl::StatusOr<config::HbaFile> hba = Parse("host all @users all trust\n");
  ASSERT_FALSE(hba.ok());
  EXPECT_THAT(std::string(hba.status().message()),
              AllOf(HasSubstr(allowed_ + "/users:2: "),
                    HasSubstr("is outside the allowed paths (--allow-path)")));
}

// A missing include inside the allowed paths is the parser's ordinary "cannot read" error.
TEST_F(PushedHbaTest, MissingIncludeInsideTheAllowedPathsSaysCannotRead) {
  absl::StatusOr<config::HbaFile> hba = Parse("host all @nobody-wrote-this all trust\n");
  ASSERT_FALSE(hba.ok());
  EXPECT_THAT(std::string(hba.status().message()),
              AllOf(HasSubstr("hba.conf:1: @nobody-wrote-this"), HasSubstr("cannot read")));
}

}  // namespace
}  // namespace pgfleet::agent
