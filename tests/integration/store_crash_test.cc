// kill -9 in the middle of writes: a child process writes config versions and audit rows in
// a tight loop (each write its own transaction) and reports every commit through a pipe; the
// parent SIGKILLs it mid-loop, reopens the store, and checks that the file is sound and that
// every write reported as committed is there, with a consistent version chain.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "controller/store/sqlite_store.h"
#include "gtest/gtest.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/status_testing.h"

namespace pgfleet::controller {
namespace {

constexpr char kEnvironment[] = "crash";
constexpr uint64_t kChildFailed = UINT64_MAX;

// Text of the child's i-th config version in a round; sizes vary so that some commits span
// many WAL pages (more chances for the kill to land inside one).
std::string VersionText(int round, uint64_t i) {
  std::string text = absl::StrCat("[pgbouncer]\n; round=", round, " write=", i, "\n");
  text.append((i % 7) * 3000, static_cast<char>('a' + i % 26));
  return text;
}
std::string AuditTarget(int round, uint64_t i) { return absl::StrCat(round, "/", i); }

bool WriteAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

// The child: open, then write forever; never returns. Reports i after write i committed.
[[noreturn]] void ChildLoop(const std::string& path, int round, int report_fd) {
  absl::StatusOr<std::unique_ptr<Store>> store = OpenSqliteStore(path);
  if (!store.ok()) {
    WriteAll(report_fd, &kChildFailed, sizeof(kChildFailed));
    _exit(1);
  }
  for (uint64_t i = 0;; ++i) {
    const int64_t now_ms = 1'700'000'000'000 + static_cast<int64_t>(i);
    absl::StatusOr<ConfigVersionRow> version =
        (*store)->AddConfigVersion(kEnvironment, VersionText(round, i), "child", "", now_ms);
    absl::Status audit =
        (*store)->Audit("child", "push", AuditTarget(round, i),
                        version.ok() ? absl::StrCat(version->version) : "", now_ms);
    if (!version.ok() || !audit.ok()) {
      WriteAll(report_fd, &kChildFailed, sizeof(kChildFailed));
      _exit(1);
    }
    if (!WriteAll(report_fd, &i, sizeof(i))) _exit(1);
  }
}

// Reads one report, waiting at most `timeout_ms`. false on EOF or timeout.
bool ReadReport(int fd, uint64_t* value, int timeout_ms) {
  size_t got = 0;
  char* p = reinterpret_cast<char*>(value);
  while (got < sizeof(*value)) {
    pollfd pfd{fd, POLLIN, 0};
    int ready = poll(&pfd, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    ssize_t n = read(fd, p + got, sizeof(*value) - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

class StoreCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGF_ASSERT_OK(temp_dir_.Create("pgfleet_crash"));
    dir_ = temp_dir_.path();
    path_ = dir_ + "/controller.db";
  }

  testutil::TempDir temp_dir_;
  std::string dir_;
  std::string path_;
};

TEST_F(StoreCrashTest, KillNineMidWriteLosesNothingCommitted) {
  // Bounded: at most kMaxRounds, and no new round after kBudget (sanitizer builds are slow).
  constexpr int kMaxRounds = 10;
  constexpr int kMinRounds = 3;
  constexpr auto kBudget = std::chrono::seconds(5);
  const auto started = std::chrono::steady_clock::now();
  std::mt19937 random(12345);
  // Writes each round's child reported as committed (they are 0..n-1).
  std::map<int, uint64_t> reported_per_round;
  // sha256 of VersionText(round, write), computed once.
  std::map<std::pair<int, uint64_t>, std::string> expected_sha;
  auto sha_of = [&expected_sha](int round, uint64_t write) -> const std::string& {
    auto [it, inserted] = expected_sha.try_emplace({round, write});
    if (inserted) it->second = Sha256Hex(VersionText(round, write));
    return it->second;
  };

  for (int round = 0; round < kMaxRounds; ++round) {
    if (round >= kMinRounds && std::chrono::steady_clock::now() - started > kBudget) break;
    SCOPED_TRACE(absl::StrCat("round ", round));
    int fds[2];
    ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
    // No store is open in this process while forking.
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      close(fds[0]);
      ChildLoop(path_, round, fds[1]);
    }
    close(fds[1]);

    // Let it commit a random number of writes, then kill it wherever it is.
    const uint64_t target = std::uniform_int_distribution<uint64_t>(20, 300)(random);
    uint64_t reported = 0;  // Count of writes reported committed.
    uint64_t value = 0;
    bool reading_ok = true;
    while (reported < target) {
      if (!ReadReport(fds[0], &value, 10'000) || value != reported) {
        reading_ok = false;
        break;
      }
      ++reported;
    }
    ASSERT_EQ(kill(child, SIGKILL), 0);
    int wstatus = 0;
    ASSERT_EQ(waitpid(child, &wstatus, 0), child);
    ASSERT_TRUE(reading_ok) << "child stopped reporting or failed to write (got " << value
                            << " after " << reported << ")";
    ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL)
        << "child was not killed by SIGKILL: " << wstatus;
    // Reports written before the kill count too.
    while (ReadReport(fds[0], &value, 0)) {
      ASSERT_NE(value, kChildFailed);
      ASSERT_EQ(value, reported);
      ++reported;
    }
    close(fds[0]);
    reported_per_round[round] = reported;

    // Reopen: sound file, everything reported is there, nothing inconsistent.
    absl::StatusOr<std::unique_ptr<SqliteStore>> opened = SqliteStore::Open(path_);
    ASSERT_TRUE(opened.ok()) << opened.status();
    std::unique_ptr<SqliteStore> store = std::move(opened).value();
    PGF_ASSERT_OK_AND_ASSIGN(std::string integrity, store->IntegrityCheck());
    ASSERT_EQ(integrity, "ok");

    PGF_ASSERT_OK_AND_ASSIGN(std::vector<ConfigVersionRow> versions,
                             store->ListConfigVersions(kEnvironment));
    // Newest first: ids decrease, each version's parent is the next one down, and the chain
    // ends at the environment's first version.
    ASSERT_FALSE(versions.empty());
    for (size_t i = 0; i + 1 < versions.size(); ++i) {
      ASSERT_GT(versions[i].version, versions[i + 1].version);
      ASSERT_EQ(versions[i].parent_version, versions[i + 1].version);
    }
    ASSERT_EQ(versions.back().parent_version, 0u);
    std::map<std::string, uint64_t> version_by_sha;
    std::map<uint64_t, std::string> sha_by_version;
    for (const ConfigVersionRow& row : versions) {
      ASSERT_TRUE(version_by_sha.emplace(row.sha256, row.version).second) << "duplicate sha";
      sha_by_version[row.version] = row.sha256;
    }

    // Per round, the child's writes are a prefix 0..n-1 with n = reported or reported + 1
    // (the kill may land after a commit but before its report). Nothing else exists.
    size_t expected_rows = 0;
    for (const auto& [r, count] : reported_per_round) {
      for (uint64_t w = 0; w < count; ++w) {
        ASSERT_TRUE(version_by_sha.count(sha_of(r, w)) == 1)
            << "round " << r << " lost committed write " << w;
      }
      expected_rows += count + version_by_sha.count(sha_of(r, count));
      ASSERT_EQ(version_by_sha.count(sha_of(r, count + 1)), 0u) << "gap in round " << r;
    }
    ASSERT_EQ(versions.size(), expected_rows) << "unexpected config versions";
    // Full rows read back intact (the newest, which the kill was closest to).
    PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow newest, store->GetConfigVersion(versions[0].version));
    ASSERT_EQ(Sha256Hex(newest.ini_text), newest.sha256);

    // Audit rows: each reported write has its row, pointing at that write's version (the
    // row follows the version, so a kill between the two may leave the last version of a
    // round without an audit row, never the reverse).
    PGF_ASSERT_OK_AND_ASSIGN(std::vector<AuditEntry> audit, store->ListAudit(0));
    std::map<std::string, std::string> audit_by_target;
    for (const AuditEntry& entry : audit) {
      ASSERT_TRUE(audit_by_target.emplace(entry.target, entry.details).second) << entry.target;
    }
    ASSERT_LE(audit.size(), versions.size());
    for (const auto& [r, count] : reported_per_round) {
      for (uint64_t w = 0; w < count; ++w) {
        auto it = audit_by_target.find(AuditTarget(r, w));
        ASSERT_TRUE(it != audit_by_target.end()) << "audit row " << r << "/" << w << " missing";
        uint64_t version = 0;
        ASSERT_TRUE(absl::SimpleAtoi(it->second, &version)) << it->second;
        ASSERT_EQ(sha_by_version[version], sha_of(r, w))
            << "audit row " << r << "/" << w << " points at the wrong version";
      }
    }
    // The store closes here (store goes out of scope) before the next fork.
  }
}

}  // namespace
}  // namespace pgfleet::controller
