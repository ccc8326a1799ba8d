// The fleet state dir (one per agent, locked) and the confinement of a pushed config's file
// paths (issue 17, items 15 and 17). Real files in a temp dir; no sockets, no processes.
#include "agent/link/state_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/link/fleet_agent.h"
#include "common/config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"

namespace pgfleet::agent {
namespace {

using ::testing::HasSubstr;

class StateDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgfleet-statedir-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    allowed_ = dir_ + "/allowed";
    outside_ = dir_ + "/outside";
    ASSERT_EQ(mkdir(allowed_.c_str(), 0700), 0);
    ASSERT_EQ(mkdir(outside_.c_str(), 0700), 0);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  PathPolicy Policy() {
    absl::StatusOr<PathPolicy> policy =
        MakePathPolicy({allowed_}, {allowed_ + "/agent.ini", allowed_ + "/applied.ini"});
    EXPECT_TRUE(policy.ok()) << policy.status();
    return policy.ok() ? *policy : PathPolicy{};
  }

  static absl::Status Check(const std::string& key, const std::string& value,
                            const PathPolicy& policy) {
    config::Config cfg;
    absl::Status set = config::ApplySetting(cfg, key, value);
    if (!set.ok()) {
      // pidfile and the TLS files cannot be SET online; set the field directly.
      if (key == "pidfile") cfg.pidfile = value;
      if (key == "client_tls_key_file") cfg.client_tls_key_file = value;
    }
    return CheckPushedPaths(cfg, policy);
  }

  std::string dir_, allowed_, outside_;
};

TEST_F(StateDirTest, SanitizedAgentIdsAreOnePathComponent) {
  EXPECT_EQ(SanitizeAgentId("db-1.example.com:6432"), "db-1.example.com_6432");
  EXPECT_EQ(SanitizeAgentId("a/b"), "a_b");
  EXPECT_EQ(SanitizeAgentId(".."), "_.");
  EXPECT_EQ(SanitizeAgentId("."), "_");
  EXPECT_EQ(SanitizeAgentId(""), "_");
  EXPECT_EQ(SanitizeAgentId("x y\n"), "x_y_");
}

TEST_F(StateDirTest, DefaultStateDirIsPerAgent) {
  EXPECT_EQ(DefaultStateDir("/etc/pgb/a.ini", "host:6432"), "/etc/pgb/pgfleet-state/host_6432");
  EXPECT_EQ(DefaultStateDir("a.ini", "x"), "./pgfleet-state/x");
  EXPECT_EQ(DefaultStateDir("/a.ini", "x"), "/pgfleet-state/x");
  EXPECT_NE(DefaultStateDir("/etc/pgb/a.ini", "one"), DefaultStateDir("/etc/pgb/b.ini", "two"));
}

TEST_F(StateDirTest, MakeDirsCreatesEveryLevel) {
  const std::string deep = dir_ + "/x/y/z";
  PGF_ASSERT_OK(MakeDirs(deep, 0700));
  EXPECT_TRUE(std::filesystem::is_directory(deep));
  PGF_EXPECT_OK(MakeDirs(deep, 0700));  // Again: nothing to do.
  std::ofstream(dir_ + "/file") << "x";
  EXPECT_FALSE(MakeDirs(dir_ + "/file", 0700).ok());
}

TEST_F(StateDirTest, TheLockIsExclusiveAndNamesTheHolder) {
  absl::StatusOr<std::unique_ptr<StateDirLock>> first = StateDirLock::Acquire(allowed_);
  PGF_ASSERT_OK(first.status());
  // flock locks belong to an open file, so a second Acquire conflicts even in one process.
  absl::StatusOr<std::unique_ptr<StateDirLock>> second = StateDirLock::Acquire(allowed_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr(allowed_));
  EXPECT_THAT(second.status().message(), HasSubstr(absl::StrCat("pid ", getpid())));
  first->reset();
  PGF_EXPECT_OK(StateDirLock::Acquire(allowed_).status());
}

TEST_F(StateDirTest, ConcurrentAtomicWritesNeverCollide) {
  // Two writers of one file used to share "<path>.tmp": one renamed the other's file away and
  // failed with "cannot rename .../applied.ini.tmp: No such file or directory".
  const std::string path = allowed_ + "/applied.ini";
  std::vector<absl::Status> failures[2];
  auto writer = [&](int id) {
    for (int i = 0; i < 300; ++i) {
      absl::Status status = WriteFileAtomically(path, absl::StrCat("writer ", id, " round ", i));
      if (!status.ok()) failures[id].push_back(status);
    }
  };
  std::thread a(writer, 0), b(writer, 1);
  a.join();
  b.join();
  EXPECT_TRUE(failures[0].empty()) << failures[0].front();
  EXPECT_TRUE(failures[1].empty()) << failures[1].front();
  // No temp file is left behind.
  int entries = 0;
  for (const auto& entry : std::filesystem::directory_iterator(allowed_)) {
    ++entries;
    EXPECT_EQ(entry.path().filename(), "applied.ini");
  }
  EXPECT_EQ(entries, 1);
}

TEST_F(StateDirTest, PushedPathsInsideTheAllowedDirsPass) {
  const PathPolicy policy = Policy();
  PGF_EXPECT_OK(Check("logfile", allowed_ + "/agent.log", policy));
  PGF_EXPECT_OK(Check("logfile", allowed_ + "/../allowed/agent.log", policy));
  PGF_EXPECT_OK(Check("pidfile", allowed_ + "/agent.pid", policy));
  PGF_EXPECT_OK(Check("logfile", "", policy));
}

TEST_F(StateDirTest, PushedPathsOutsideAreRefusedNamingTheKey) {
  const PathPolicy policy = Policy();
  absl::Status status = Check("logfile", "/etc/passwd", policy);
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(status.message(), "logfile: /etc/passwd is outside the allowed paths (--allow-path)");
  EXPECT_THAT(Check("pidfile", outside_ + "/agent.pid", policy).message(),
              HasSubstr("pidfile: " + outside_ + "/agent.pid is outside"));
  EXPECT_THAT(Check("auth_file", "/etc/shadow", policy).message(),
              HasSubstr("auth_file: /etc/shadow is outside"));
  // auth_type = hba's files are read (and quoted in parse errors) like auth_file.
  EXPECT_THAT(Check("auth_hba_file", "/etc/shadow", policy).message(),
              HasSubstr("auth_hba_file: /etc/shadow is outside"));
  EXPECT_THAT(Check("auth_ident_file", "/etc/passwd", policy).message(),
              HasSubstr("auth_ident_file: /etc/passwd is outside"));
  EXPECT_THAT(Check("client_tls_key_file", "/etc/ssl/private/x.key", policy).message(),
              HasSubstr("client_tls_key_file: "));
  // ".." out of an allowed dir, to an existing and to a new file.
  EXPECT_THAT(Check("logfile", allowed_ + "/../outside/agent.log", policy).message(),
              HasSubstr("is outside the allowed paths"));
  EXPECT_THAT(Check("logfile", allowed_ + "/../../../../etc/passwd", policy).message(),
              HasSubstr("is outside the allowed paths"));
  // A prefix of a name is not a parent directory.
  EXPECT_THAT(Check("logfile", allowed_ + "-not/agent.log", policy).message(),
              HasSubstr("logfile: "));
}

TEST_F(StateDirTest, SymlinksOutOfAnAllowedDirAreRefused) {
  const PathPolicy policy = Policy();
  std::filesystem::create_directory_symlink(outside_, allowed_ + "/escape-dir");
  std::filesystem::create_symlink(outside_ + "/victim", allowed_ + "/escape-file");
  std::ofstream(outside_ + "/victim") << "precious";
  EXPECT_THAT(Check("logfile", allowed_ + "/escape-dir/agent.log", policy).message(),
              HasSubstr("is outside the allowed paths"));
  EXPECT_THAT(Check("pidfile", allowed_ + "/escape-file", policy).message(),
              HasSubstr("is outside the allowed paths"));
  // A dangling symlink to a file that does not exist yet: open(O_CREAT) would follow it.
  std::filesystem::create_symlink(outside_ + "/new-file", allowed_ + "/dangling");
  EXPECT_THAT(Check("logfile", allowed_ + "/dangling", policy).message(),
              HasSubstr("is outside the allowed paths"));
}

TEST_F(StateDirTest, TheAgentsOwnFilesCannotBeWrittenByAPushedConfig) {
  const PathPolicy policy = Policy();
  EXPECT_THAT(Check("pidfile", allowed_ + "/agent.ini", policy).message(), HasSubstr("pidfile: "));
  EXPECT_THAT(Check("logfile", allowed_ + "/applied.ini", policy).message(),
              HasSubstr("logfile: "));
  // Reading them is harmless.
  std::ofstream(allowed_ + "/agent.ini") << "[pgbouncer]\n";
  PGF_EXPECT_OK(Check("auth_file", allowed_ + "/agent.ini", policy));
}

TEST_F(StateDirTest, PushedIncludesOutsideAreRefusedBeforeTheyAreRead) {
  const PathPolicy policy = Policy();
  std::ofstream(outside_ + "/secret.ini") << "this line is secret\n";
  std::ofstream(allowed_ + "/more.ini") << "default_pool_size = 3\n";
  absl::StatusOr<config::Config> refused =
      config::ParseConfig("[pgbouncer]\n%include " + outside_ + "/secret.ini\n",
                          allowed_ + "/applied.ini", PushedIncludeCheck(policy));
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(),
              HasSubstr("%include: " + outside_ + "/secret.ini is outside"));
  EXPECT_THAT(refused.status().message(), ::testing::Not(HasSubstr("secret\n")));
  EXPECT_THAT(refused.status().message(), ::testing::Not(HasSubstr("this line")));
  absl::StatusOr<config::Config> included = config::ParseConfig(
      "[pgbouncer]\n%include more.ini\n", allowed_ + "/applied.ini", PushedIncludeCheck(policy));
  ASSERT_TRUE(included.ok()) << included.status();
  EXPECT_EQ(included->default_pool_size, 3);
}

TEST_F(StateDirTest, AllowedDirsMustExist) {
  absl::StatusOr<PathPolicy> policy = MakePathPolicy({dir_ + "/nope"}, {});
  ASSERT_FALSE(policy.ok());
  EXPECT_THAT(policy.status().message(), HasSubstr(dir_ + "/nope"));
}

}  // namespace
}  // namespace pgfleet::agent
