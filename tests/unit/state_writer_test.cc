// StateWriter: the controller link's state-dir writes (fsync'd) run on a thread of their own,
// in order, and hand their results back on the event loop, which keeps running meanwhile.
#include "agent/link/state_writer.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "agent/event_loop.h"
#include "agent/link/fleet_agent.h"
#include "gtest/gtest.h"

namespace pgfleet::agent {
namespace {

class StateWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/pgfleet-statewriter-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    loop_ = EventLoop::Create();
    // event_base_dispatch returns when nothing is pending: a ticking timer keeps the loop up
    // and counts the turns it takes while the writer works.
    ticker_ = std::make_unique<Timer>(*loop_, [this] {
      ++ticks_;
      if (on_tick_) on_tick_();
    });
    ticker_->Start(absl::Milliseconds(5), /*repeat=*/true);
  }
  void TearDown() override {
    ticker_.reset();
    loop_.reset();
    std::filesystem::remove_all(dir_);
  }

  static std::string Read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  std::string dir_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<Timer> ticker_;
  int ticks_ = 0;
  std::function<void()> on_tick_;
};

TEST_F(StateWriterTest, WritesRunInOrderAndTheNewestStaysOnDisk) {
  const std::string path = dir_ + "/applied.ini";
  constexpr int kWrites = 40;
  std::vector<int> completed;
  std::thread::id loop_thread;
  std::vector<std::thread::id> done_threads;
  {
    StateWriter writer(*loop_);
    loop_->Post([&] { loop_thread = std::this_thread::get_id(); });
    for (int version = 1; version <= kWrites; ++version) {
      writer.Enqueue(
          [path, version] {
            return WriteFileAtomically(path, absl::StrCat("version = ", version, "\n"));
          },
          [&, version](absl::Status status) {
            EXPECT_TRUE(status.ok()) << status;
            completed.push_back(version);
            done_threads.push_back(std::this_thread::get_id());
            // When version N reports, the file holds N or a newer one, never an older one (the
            // writer may be ahead of the loop).
            int on_disk = 0;
            EXPECT_TRUE(absl::SimpleAtoi(
                absl::StripPrefix(absl::StripAsciiWhitespace(Read(path)), "version = "), &on_disk));
            EXPECT_GE(on_disk, version);
            if (version == kWrites) loop_->Stop();
          });
    }
    ASSERT_EQ(loop_->Run(), 0);
  }
  ASSERT_EQ(completed.size(), static_cast<size_t>(kWrites));
  for (int i = 0; i < kWrites; ++i) EXPECT_EQ(completed[i], i + 1);
  for (std::thread::id id : done_threads) EXPECT_EQ(id, loop_thread) << "Done ran off the loop";
  EXPECT_EQ(Read(path), absl::StrCat("version = ", kWrites, "\n"));
  // No temp file is left behind.
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    ++files;
    EXPECT_EQ(entry.path().filename(), "applied.ini");
  }
  EXPECT_EQ(files, 1);
}

TEST_F(StateWriterTest, TheLoopKeepsRunningWhileAWriteIsInProgress) {
  // The job blocks until the loop has turned a few more times: had the write run on the loop
  // thread, the loop could not turn and the job would give up (the test fails, not hangs).
  std::promise<void> loop_turned;
  std::future<void> loop_turned_future = loop_turned.get_future();
  std::atomic<bool> job_started{false};
  std::thread::id job_thread;
  const std::thread::id test_thread = std::this_thread::get_id();
  int ticks_at_start = -1;
  bool released = false;
  on_tick_ = [&] {
    if (!job_started.load()) return;
    if (ticks_at_start < 0) ticks_at_start = ticks_;
    if (!released && ticks_ >= ticks_at_start + 3) {
      released = true;
      loop_turned.set_value();
    }
  };
  absl::Status result = absl::UnknownError("not done");
  {
    StateWriter writer(*loop_);
    writer.Enqueue(
        [&] {
          job_thread = std::this_thread::get_id();
          job_started = true;
          if (loop_turned_future.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
            return absl::DeadlineExceededError("the loop did not turn during the write");
          }
          return WriteFileAtomically(dir_ + "/applied.version", "7 abc\n");
        },
        [&](absl::Status status) {
          result = std::move(status);
          loop_->Stop();
        });
    ASSERT_EQ(loop_->Run(), 0);
  }
  EXPECT_TRUE(result.ok()) << result;
  EXPECT_NE(job_thread, test_thread);
  EXPECT_GE(ticks_, ticks_at_start + 3);
  EXPECT_EQ(Read(dir_ + "/applied.version"), "7 abc\n");
}

TEST_F(StateWriterTest, DestroyingTheWriterFinishesWhatIsQueued) {
  const std::string path = dir_ + "/applied.ini";
  {
    StateWriter writer(*loop_);
    for (int version = 1; version <= 5; ++version) {
      writer.Enqueue(
          [path, version] {
            return WriteFileAtomically(path, absl::StrCat("version = ", version, "\n"));
          },
          [](absl::Status) {});
    }
  }
  EXPECT_EQ(Read(path), "version = 5\n");
}

}  // namespace
}  // namespace pgfleet::agent
