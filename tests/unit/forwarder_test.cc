// The Forwarder (agent/forwarder.h) on its own, without sockets: what reaches the peer, in
// which writes, as messages arrive whole, split across reads, or are held, dropped and skipped
// by the filter.

#include "agent/forwarder.h"

#include <event2/buffer.h>

#include <string>
#include <vector>

#include "agent/pg/protocol.h"
#include "gtest/gtest.h"

namespace pgfleet::agent {
namespace {

using Verdict = Forwarder::Verdict;

// A filter whose verdict per message type is set by the test; the peer is a string.
class RecordingFilter final : public Forwarder::Filter {
 public:
  explicit RecordingFilter(evbuffer* in) : in_(in) {}

  Verdict OnMessage(Forwarder& forwarder, const pg::MessageHeader& header) override {
    seen += header.type;
    if (header.type == hold_until_whole && !forwarder.Whole(header)) return Verdict::kNeedMore;
    if (header.type == drop) {
      if (!forwarder.Whole(header)) return Verdict::kNeedMore;
      forwarder.Drop(header);
      return Verdict::kHandled;
    }
    if (header.type == stop) {
      forwarder.Flush();
      return Verdict::kStop;
    }
    return Verdict::kForward;
  }
  void SendToPeer(size_t bytes) override {
    std::string chunk(bytes, '\0');
    evbuffer_remove(in_, chunk.data(), bytes);
    peer += chunk;
    writes.push_back(chunk);
  }
  void OnDropped(size_t bytes) override { dropped += bytes; }
  void OnMalformed() override { malformed = true; }

  char hold_until_whole = 0;
  char drop = 0;
  char stop = 0;
  std::string seen;
  std::string peer;
  std::vector<std::string> writes;
  size_t dropped = 0;
  bool malformed = false;

 private:
  evbuffer* in_;
};

class ForwarderTest : public ::testing::Test {
 protected:
  ForwarderTest() : in_(evbuffer_new()), filter_(in_) {}
  ~ForwarderTest() override { evbuffer_free(in_); }

  void Arrive(const std::string& bytes) { evbuffer_add(in_, bytes.data(), bytes.size()); }
  bool Run() { return Forwarder(in_, state_, 1 << 20, filter_).Run(); }
  size_t left() const { return evbuffer_get_length(in_); }

  evbuffer* in_;
  ForwardState state_;
  RecordingFilter filter_;
};

TEST_F(ForwarderTest, WholeMessagesGoOutInOneWrite) {
  const std::string bytes = pg::Query("SELECT 1") + pg::ReadyForQuery('I') + pg::Query("x");
  Arrive(bytes);
  EXPECT_TRUE(Run());
  EXPECT_EQ(filter_.seen, "QZQ");
  ASSERT_EQ(filter_.writes.size(), 1u);
  EXPECT_EQ(filter_.peer, bytes);
  EXPECT_EQ(left(), 0u);
}

TEST_F(ForwarderTest, ALargeMessageStreamsAsItArrivesAndIsDecidedOnce) {
  const std::string query = pg::Query(std::string(1000, 'a'));
  Arrive(query.substr(0, 100));
  EXPECT_TRUE(Run());
  EXPECT_EQ(filter_.peer, query.substr(0, 100));
  EXPECT_EQ(state_.forward_remaining, query.size() - 100);
  Arrive(query.substr(100) + pg::ReadyForQuery('I'));
  EXPECT_TRUE(Run());
  EXPECT_EQ(filter_.peer, query + pg::ReadyForQuery('I'));
  EXPECT_EQ(filter_.seen, "QZ");  // The Query's rest was not taken for a message of its own.
  EXPECT_EQ(state_.forward_remaining, 0u);
}

TEST_F(ForwarderTest, AHeldMessageWaitsWholeWhileWhatPrecedesItGoes) {
  filter_.hold_until_whole = 'S';
  const std::string status = pg::ParameterStatus("TimeZone", "UTC");
  Arrive(pg::ReadyForQuery('I') + status.substr(0, 7));
  EXPECT_TRUE(Run());
  EXPECT_EQ(filter_.peer, pg::ReadyForQuery('I'));
  EXPECT_EQ(left(), 7u);
  Arrive(status.substr(7));
  EXPECT_TRUE(Run());
  EXPECT_EQ(filter_.peer, pg::ReadyForQuery('I') + status);
}

TEST_F(ForwarderTest, ADroppedMessageNeverReachesThePeer) {
  filter_.drop = 'Z';
  Arrive(pg::Query("a") + pg::ReadyForQuery('I') + pg::Query("b"));
  EXPECT_TRUE(Run());
  EXPECT_EQ(filter_.peer, pg::Query("a") + pg::Query("b"));
  EXPECT_EQ(left(), 0u);
}

TEST_F(ForwarderTest, SkippedBytesAreDroppedAsTheyArrive) {
  state_.skip_remaining = 10;
  Arrive("12345");
  EXPECT_TRUE(Run());
  EXPECT_EQ(filter_.dropped, 5u);
  EXPECT_EQ(state_.skip_remaining, 5u);
  Arrive("67890" + pg::Query("c"));
  EXPECT_TRUE(Run());
  EXPECT_EQ(filter_.dropped, 10u);
  EXPECT_EQ(filter_.peer, pg::Query("c"));
}

TEST_F(ForwarderTest, StopSendsNothingAfterTheFiltersOwnFlush) {
  filter_.stop = 'X';
  Arrive(pg::Query("a") + pg::Terminate() + pg::Query("never"));
  EXPECT_FALSE(Run());
  EXPECT_EQ(filter_.peer, pg::Query("a"));
  EXPECT_EQ(filter_.seen, "QX");
}

TEST_F(ForwarderTest, AMalformedLengthStopsAfterSendingWhatPrecededIt) {
  Arrive(pg::Query("a") + std::string("Q\0\0\0\1", 5));
  EXPECT_FALSE(Run());
  EXPECT_TRUE(filter_.malformed);
  EXPECT_EQ(filter_.peer, pg::Query("a"));
}

}  // namespace
}  // namespace pgfleet::agent
