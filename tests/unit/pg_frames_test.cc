// agent/pg framing on plain bytes: PeekHeader on a byte span, FrameReader walking whole
// messages, PeekStartupLength. No libevent here: the codec takes bytes, whoever owns them.

#include <arpa/inet.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "agent/pg/protocol.h"
#include "gtest/gtest.h"

namespace pgfleet::agent::pg {
namespace {

std::string BE32(uint32_t value) {
  const uint32_t net = htonl(value);
  return std::string(reinterpret_cast<const char*>(&net), 4);
}

std::string RawMessage(char type, uint32_t length_field, std::string_view body) {
  return std::string(1, type) + BE32(length_field) + std::string(body);
}

TEST(PgFramesTest, PeekHeaderNeedsFiveBytes) {
  const std::string message = Query("SELECT 1");
  MessageHeader header;
  for (size_t i = 0; i < kHeaderSize; ++i) {
    EXPECT_EQ(PeekHeader(std::string_view(message).substr(0, i), 1000, &header),
              HeaderResult::kNeedMore)
        << i;
  }
  ASSERT_EQ(PeekHeader(std::string_view(message).substr(0, kHeaderSize), 1000, &header),
            HeaderResult::kOk);
  EXPECT_EQ(header.type, 'Q');
  EXPECT_EQ(header.total(), message.size());
}

TEST(PgFramesTest, PeekHeaderLengthBounds) {
  MessageHeader header;
  EXPECT_EQ(PeekHeader(RawMessage('Q', 3, ""), 100, &header), HeaderResult::kMalformed);
  EXPECT_EQ(PeekHeader(RawMessage('Q', 0, ""), 100, &header), HeaderResult::kMalformed);
  EXPECT_EQ(PeekHeader(RawMessage('Q', 101, ""), 100, &header), HeaderResult::kMalformed);
  EXPECT_EQ(PeekHeader(RawMessage('Q', 0xffffffffu, ""), 0x7fffffff, &header),
            HeaderResult::kMalformed);
  ASSERT_EQ(PeekHeader(RawMessage('Q', 100, ""), 100, &header), HeaderResult::kOk);
  EXPECT_EQ(header.length, 100u);
  ASSERT_EQ(PeekHeader(RawMessage('X', 4, ""), 100, &header), HeaderResult::kOk);
  EXPECT_EQ(header.body_size(), 0u);
}

TEST(PgFramesTest, FrameReaderWalksCoalescedMessagesAndStopsAtAPartialOne) {
  const std::string m1 = Query("SELECT 1");
  const std::string m2 = ReadyForQuery('T');
  const std::string m3 = CommandComplete("SELECT 42");
  const std::string stream = m1 + m2 + m3;
  const std::string cut = stream.substr(0, stream.size() - 3);

  FrameReader reader(cut, 1000);
  Frame frame;
  ASSERT_EQ(reader.Next(&frame), HeaderResult::kOk);
  EXPECT_EQ(frame.header.type, 'Q');
  EXPECT_EQ(frame.body, std::string_view("SELECT 1\0", 9));
  ASSERT_EQ(reader.Next(&frame), HeaderResult::kOk);
  EXPECT_EQ(frame.header.type, 'Z');
  EXPECT_EQ(frame.body, "T");
  EXPECT_EQ(reader.consumed(), m1.size() + m2.size());
  // The third has its header but not all of its body: not consumed, header reported.
  EXPECT_EQ(reader.Next(&frame), HeaderResult::kNeedMore);
  EXPECT_EQ(reader.consumed(), m1.size() + m2.size());
  EXPECT_EQ(reader.header_of_partial().type, 'C');
  EXPECT_EQ(reader.header_of_partial().total(), m3.size());
  EXPECT_EQ(reader.rest().size(), m3.size() - 3);
}

TEST(PgFramesTest, FrameReaderStopsAtAMalformedMessage) {
  const std::string stream = ReadyForQuery('I') + RawMessage('E', 2, "xx") + Terminate();
  FrameReader reader(stream, 1000);
  Frame frame;
  ASSERT_EQ(reader.Next(&frame), HeaderResult::kOk);
  EXPECT_EQ(reader.Next(&frame), HeaderResult::kMalformed);
  EXPECT_EQ(reader.consumed(), ReadyForQuery('I').size());
  // And stays there: nothing past a malformed message is read.
  EXPECT_EQ(reader.Next(&frame), HeaderResult::kMalformed);
}

TEST(PgFramesTest, SplitAnywhereGivesTheSameFrames) {
  // The same stream, cut at every point into two spans, framed as a connection would: frame
  // what is there, keep the rest, append the next piece.
  std::vector<std::string> messages = {Query("SELECT 1"), ParameterStatus("TimeZone", "UTC"),
                                       DataRow({"a", "bc", ""}), ReadyForQuery('I'), Terminate()};
  std::string stream;
  for (const std::string& m : messages) stream += m;
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    std::string buffer = stream.substr(0, cut);
    std::vector<std::string> seen;
    auto drain = [&] {
      FrameReader reader(buffer, 1 << 20);
      Frame frame;
      while (reader.Next(&frame) == HeaderResult::kOk) {
        seen.push_back(std::string(1, frame.header.type) + std::string(frame.body));
      }
      buffer.erase(0, reader.consumed());
    };
    drain();
    buffer += stream.substr(cut);
    drain();
    EXPECT_TRUE(buffer.empty()) << cut;
    ASSERT_EQ(seen.size(), messages.size()) << cut;
    for (size_t i = 0; i < messages.size(); ++i) {
      EXPECT_EQ(seen[i], messages[i].substr(0, 1) + messages[i].substr(kHeaderSize)) << cut;
    }
  }
}

TEST(PgFramesTest, FrameReaderSurvivesRandomBytes) {
  std::mt19937 rng(20);
  for (int round = 0; round < 2000; ++round) {
    std::string bytes(rng() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() % 8 == 0 ? 0 : rng());
    FrameReader reader(bytes, 1 << 16);
    Frame frame;
    while (reader.Next(&frame) == HeaderResult::kOk) {
      ASSERT_LE(reader.consumed(), bytes.size());
      ASSERT_EQ(frame.body.size(), frame.header.body_size());
    }
    ASSERT_LE(reader.consumed(), bytes.size());
  }
}

TEST(PgFramesTest, PeekStartupLength) {
  EXPECT_EQ(PeekStartupLength(""), 0u);
  EXPECT_EQ(PeekStartupLength(std::string("\0\0\0", 3)), 0u);
  const std::string packet = CancelRequest(7, 9);
  EXPECT_EQ(PeekStartupLength(packet), packet.size());
  EXPECT_EQ(PeekStartupLength(packet.substr(0, 4)), 16u);
}

}  // namespace
}  // namespace pgfleet::agent::pg
