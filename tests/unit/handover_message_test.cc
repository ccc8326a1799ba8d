// The hand-over message a new agent process reads from the old one (agent/handover.cc): the
// sockets arrive in the order their lines name them, and lines this version does not know are
// skipped (a value line) or closed (an "fd-" line), so a hand-over to an older build, a
// downgrade, still takes the listeners.

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/handover.h"
#include "gtest/gtest.h"

namespace pgfleet::agent {
namespace {

// A socketpair whose one end plays the old process; the other is set as the new process's
// channel (PGFLEET_HANDOVER_FD), as the old process leaves it.
class HandoverMessageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, pair_), 0) << strerror(errno);
    setenv("PGFLEET_HANDOVER_FD", absl::StrCat(pair_[1]).c_str(), 1);
  }
  void TearDown() override {
    unsetenv("PGFLEET_HANDOVER_FD");
    close(pair_[0]);
    for (int fd : opened_) close(fd);
  }

  // Sends `text` with `fds` riding along (SCM_RIGHTS), as the old process does.
  void Send(const std::string& text, const std::vector<int>& fds) {
    iovec iov{const_cast<char*>(text.data()), text.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
    ASSERT_EQ(sendmsg(pair_[0], &msg, 0), static_cast<ssize_t>(text.size())) << strerror(errno);
  }

  // A fresh socket the test can recognise on the other side by its inode.
  int NewSocket() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    opened_.push_back(fd);
    return fd;
  }

  static ino_t Inode(int fd) {
    struct stat st {};
    return fstat(fd, &st) == 0 ? st.st_ino : 0;
  }

  int pair_[2] = {-1, -1};
  std::vector<int> opened_;
};

TEST_F(HandoverMessageTest, UnknownLinesAreSkippedAndTheSocketsStillLineUp) {
  const int listener_a = NewSocket();
  const int future_fd = NewSocket();
  const int listener_b = NewSocket();
  const int metrics = NewSocket();
  // A newer process's message: a value line and an fd kind this version has never heard of,
  // between the ones it knows.
  Send(
      "pgfleet-handover 1\nparent 4242\ncommand 7\npause 1500 appdb\n"
      "listener\nfuture-setting on\nfd-future-socket\nlistener\ndisable otherdb\nmetrics\n",
      {listener_a, future_fd, listener_b, metrics});

  absl::StatusOr<std::optional<InheritedSockets>> received = ReceiveHandover(absl::Seconds(5));
  ASSERT_TRUE(received.ok()) << received.status();
  ASSERT_TRUE(received->has_value());
  InheritedSockets& inherited = **received;
  EXPECT_EQ(inherited.parent_pid, 4242);
  EXPECT_EQ(inherited.command_id, 7u);
  ASSERT_EQ(inherited.listeners.size(), 2u);
  EXPECT_EQ(Inode(inherited.listeners[0]), Inode(listener_a));
  EXPECT_EQ(Inode(inherited.listeners[1]), Inode(listener_b));
  EXPECT_EQ(Inode(inherited.metrics_fd), Inode(metrics));
  ASSERT_EQ(inherited.state.paused.size(), 1u);
  EXPECT_EQ(inherited.state.paused[0].db, "appdb");
  EXPECT_EQ(inherited.state.paused[0].remaining, absl::Milliseconds(1500));
  EXPECT_EQ(inherited.state.disabled, std::vector<std::string>{"otherdb"});
  CloseUnusedInherited(inherited);
  close(inherited.channel_fd);
}

TEST_F(HandoverMessageTest, FewerSocketsThanLinesIsRefused) {
  const int listener = NewSocket();
  Send("pgfleet-handover 1\nlistener\nlistener\n", {listener});
  absl::StatusOr<std::optional<InheritedSockets>> received = ReceiveHandover(absl::Seconds(5));
  ASSERT_FALSE(received.ok());
  EXPECT_NE(std::string(received.status().message()).find("fewer fds than announced"),
            std::string::npos)
      << received.status();
}

TEST_F(HandoverMessageTest, AnotherFormatIsRefused) {
  Send("pgfleet-handover 2\nlistener\n", {NewSocket()});
  absl::StatusOr<std::optional<InheritedSockets>> received = ReceiveHandover(absl::Seconds(5));
  ASSERT_FALSE(received.ok());
  EXPECT_NE(std::string(received.status().message()).find("unknown version"), std::string::npos)
      << received.status();
}

}  // namespace
}  // namespace pgfleet::agent
