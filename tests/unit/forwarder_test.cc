// The Forwarder (agent/forwarder.h) on its own, without sockets: what reaches the peer, in
// which writes, as messages arrive whole, split across reads, or are held, dropped and skipped
// by the filter.

#include "agent/forwarder.h"

#include <event2/buffer.h>

#include <random>
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
    if (header.type == wait) return Verdict::kNeedMore;
    if (header.type == read_body) {
      // Like the prepared-statement filter: the start decides, then the whole body is read.
      if (forwarder.Body(header, 1).empty() && header.body_size() > 0) return Verdict::kNeedMore;
      if (!forwarder.Whole(header)) return Verdict::kNeedMore;
      bodies.emplace_back(forwarder.Body(header));
    }
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
  char wait = 0;       // Held (kNeedMore) whatever has arrived, like a MustWait.
  char read_body = 0;  // Read whole before it goes on.
  std::vector<std::string> bodies;
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
  // As a read does: the bytes in a chain of their own after what is there.
  void ArriveInNewChain(const std::string& bytes) {
    evbuffer* read = evbuffer_new();
    evbuffer_add(read, bytes.data(), bytes.size());
    evbuffer_add_buffer(in_, read);
    evbuffer_free(read);
  }
  bool Run() {
    Forwarder forwarder(in_, state_, 1 << 20, filter_);
    const bool result = forwarder.Run();
    copied_ += forwarder.bytes_copied();
    return result;
  }
  size_t left() const { return evbuffer_get_length(in_); }
  size_t chains() const { return static_cast<size_t>(evbuffer_peek(in_, -1, nullptr, nullptr, 0)); }

  evbuffer* in_;
  ForwardState state_;
  RecordingFilter filter_;
  size_t copied_ = 0;  // By every pass so far.
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

// Input held back behind a message that waits (a named Parse waiting on the server's answers)
// piles up read after read; each read runs the walk again. Nothing of the backlog is copied
// or made contiguous meanwhile, and once the wait ends it all goes in one write.
TEST_F(ForwarderTest, InputHeldBehindAWaitingMessageIsNotCopiedAgainOnEveryRead) {
  filter_.wait = 'P';
  const std::string waiting = pg::MessageBuilder('P').CString("s1").CString("select 1").Finish();
  ArriveInNewChain(waiting);
  EXPECT_TRUE(Run());
  std::string backlog;
  for (int i = 0; i < 2000; ++i) backlog += pg::Query("select " + std::to_string(i));
  // Reads of 37 bytes: messages straddle nearly every boundary between two of them.
  constexpr size_t kRead = 37;
  size_t reads = 0;
  for (size_t at = 0; at < backlog.size(); at += kRead, ++reads) {
    ArriveInNewChain(backlog.substr(at, kRead));
    EXPECT_TRUE(Run());
  }
  EXPECT_EQ(filter_.peer, "");
  EXPECT_EQ(copied_, 0u) << "bytes copied while the input was held";
  EXPECT_EQ(chains(), reads + 1) << "the held input was made contiguous";

  filter_.wait = 0;
  EXPECT_TRUE(Run());
  ASSERT_EQ(filter_.writes.size(), 1u);
  EXPECT_EQ(filter_.peer, waiting + backlog);
  EXPECT_EQ(left(), 0u);
  // The walk copied only the headers that straddled two reads, each once.
  EXPECT_LE(copied_, reads * pg::kHeaderSize);
}

// A message read whole by its filter, arriving in many small reads: it is copied once, when it
// is whole, not once per read.
TEST_F(ForwarderTest, AMessageReadWholeArrivingInPiecesIsCopiedOnce) {
  filter_.read_body = 'P';
  std::string body(64 * 1024, 'x');
  body[0] = 's';
  const std::string parse = pg::MessageBuilder('P').CString(body).Finish();
  for (size_t at = 0; at < parse.size(); at += 100) {
    ArriveInNewChain(parse.substr(at, 100));
    EXPECT_TRUE(Run());
    if (at + 100 < parse.size()) {
      ASSERT_EQ(chains(), at / 100 + 1) << "what has arrived was made contiguous";
    }
  }
  EXPECT_EQ(filter_.peer, parse);
  ASSERT_EQ(filter_.bodies.size(), 1u);
  EXPECT_EQ(filter_.bodies[0], body + '\0');
  // Once whole (with its header), plus the header and first byte looked at on each read.
  EXPECT_LE(copied_, parse.size() + (parse.size() / 100 + 1) * (pg::kHeaderSize + 1));
}

// Whatever the chain layout (reads of 1 to 64 bytes, each in a chain of its own), the peer gets
// the same bytes and a filter reading bodies sees the same bodies as from one contiguous input.
TEST_F(ForwarderTest, AnyChainLayoutGivesTheSameBytesAndBodies) {
  filter_.read_body = 'P';
  filter_.drop = 'Z';
  std::mt19937 random(20261206);
  std::string stream;
  std::string expected_peer;
  std::vector<std::string> expected_bodies;
  for (int i = 0; i < 300; ++i) {
    const std::string body(random() % 300, static_cast<char>('a' + i % 26));
    switch (random() % 3) {
      case 0:
        stream += pg::Query(body);
        expected_peer += pg::Query(body);
        break;
      case 1: {
        const std::string parse = pg::MessageBuilder('P').Bytes(body).Finish();
        stream += parse;
        expected_peer += parse;
        expected_bodies.push_back(body);
        break;
      }
      default:
        stream += pg::ReadyForQuery('I');
        break;
    }
  }
  for (size_t at = 0; at < stream.size();) {
    const size_t read = 1 + random() % 64;
    ArriveInNewChain(stream.substr(at, read));
    at += read;
    ASSERT_TRUE(Run());
  }
  EXPECT_EQ(filter_.peer, expected_peer);
  EXPECT_EQ(filter_.bodies, expected_bodies);
  EXPECT_EQ(left(), 0u);
  EXPECT_GT(copied_, 0u) << "no frame straddled two chains: the test tests nothing";
}

}  // namespace
}  // namespace pgfleet::agent
