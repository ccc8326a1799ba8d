// agent/pg/protocol: header peeking (on libevent buffers through agent/io/evbuffer_frames.h),
// message builders, the bounds-checked BodyReader and the startup/error parsers, including
// truncated and random input.

#include "agent/pg/protocol.h"

#include <arpa/inet.h>
#include <event2/buffer.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "agent/io/evbuffer_frames.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgfleet::agent::pg {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

struct EvbufferFree {
  void operator()(evbuffer* buf) const { evbuffer_free(buf); }
};
using EvbufferPtr = std::unique_ptr<evbuffer, EvbufferFree>;

EvbufferPtr NewBuffer() {
  EvbufferPtr buf(evbuffer_new());
  EXPECT_NE(buf, nullptr);
  return buf;
}

void Add(evbuffer* buf, std::string_view data) {
  ASSERT_EQ(evbuffer_add(buf, data.data(), data.size()), 0);
}

// Big-endian wire encodings, written independently of MessageBuilder.
std::string BE32(uint32_t value) {
  const uint32_t net = htonl(value);
  return std::string(reinterpret_cast<const char*>(&net), 4);
}

std::string RawMessage(char type, uint32_t length_field, std::string_view body) {
  std::string out(1, type);
  out += BE32(length_field);
  out += body;
  return out;
}

// The body of a typed message after checking its header against its real size.
std::string_view TypedBody(const std::string& message, char type) {
  EXPECT_GE(message.size(), kHeaderSize);
  if (message.size() < kHeaderSize) return {};
  EXPECT_EQ(message[0], type);
  BodyReader reader(std::string_view(message).substr(1, 4));
  EXPECT_EQ(static_cast<size_t>(reader.Int32()), message.size() - 1) << "length field";
  return std::string_view(message).substr(kHeaderSize);
}
std::string_view TypedBody(std::string&& message, char type) = delete;  // Would dangle.

// ---- PeekHeader ---------------------------------------------------------------------------

TEST(ProtocolPeekHeaderTest, HeaderArrivingOneByteAtATime) {
  const std::string message = Query("SELECT 1");  // 'Q', length 4 + 9.
  ASSERT_EQ(message.size(), 14u);
  EvbufferPtr buf = NewBuffer();
  MessageHeader header;
  for (size_t i = 0; i < message.size(); ++i) {
    const HeaderResult expected = i < kHeaderSize ? HeaderResult::kNeedMore : HeaderResult::kOk;
    EXPECT_EQ(PeekFrameHeader(buf.get(), 0, 1 << 20, &header), expected)
        << "after " << i << " bytes";
    Add(buf.get(), message.substr(i, 1));
  }
  ASSERT_EQ(PeekFrameHeader(buf.get(), 0, 1 << 20, &header), HeaderResult::kOk);
  EXPECT_EQ(header.type, 'Q');
  EXPECT_EQ(header.length, 13u);
  EXPECT_EQ(header.total(), message.size());
  EXPECT_EQ(header.body_size(), 9u);
  // Peeking consumes nothing.
  EXPECT_EQ(evbuffer_get_length(buf.get()), message.size());
}

TEST(ProtocolPeekHeaderTest, HeaderStraddlingSeparateChains) {
  // evbuffer_add_reference makes one chain per call, so the 5 header bytes live in 5 chains.
  static const std::string message = RawMessage('D', 4 + 3, "abc");
  EvbufferPtr buf = NewBuffer();
  MessageHeader header;
  for (size_t i = 0; i < message.size(); ++i) {
    if (i < kHeaderSize) {
      EXPECT_EQ(PeekFrameHeader(buf.get(), 0, 1000, &header), HeaderResult::kNeedMore) << i;
    }
    ASSERT_EQ(evbuffer_add_reference(buf.get(), message.data() + i, 1, nullptr, nullptr), 0);
  }
  ASSERT_EQ(PeekFrameHeader(buf.get(), 0, 1000, &header), HeaderResult::kOk);
  EXPECT_EQ(header.type, 'D');
  EXPECT_EQ(header.length, 7u);
}

TEST(ProtocolPeekHeaderTest, CoalescedMessagesPeekedAtTheirOffsets) {
  const std::string m1 = Query("SELECT 1");
  const std::string m2 = ReadyForQuery('I');
  const std::string m3 = CommandComplete("SELECT 42");
  EvbufferPtr buf = NewBuffer();
  Add(buf.get(), m1 + m2 + m3);

  MessageHeader header;
  ASSERT_EQ(PeekFrameHeader(buf.get(), 0, 1000, &header), HeaderResult::kOk);
  EXPECT_EQ(header.type, 'Q');
  ASSERT_EQ(header.total(), m1.size());

  const size_t second = header.total();
  ASSERT_EQ(PeekFrameHeader(buf.get(), second, 1000, &header), HeaderResult::kOk);
  EXPECT_EQ(header.type, 'Z');
  EXPECT_EQ(header.length, 5u);
  ASSERT_EQ(header.total(), m2.size());

  const size_t third = second + header.total();
  ASSERT_EQ(PeekFrameHeader(buf.get(), third, 1000, &header), HeaderResult::kOk);
  EXPECT_EQ(header.type, 'C');
  EXPECT_EQ(header.total(), m3.size());
  EXPECT_EQ(third + header.total(), evbuffer_get_length(buf.get()));

  // Past the last message, or fewer than 5 bytes left at the offset: wait for more.
  const size_t end = m1.size() + m2.size() + m3.size();
  EXPECT_EQ(PeekFrameHeader(buf.get(), end, 1000, &header), HeaderResult::kNeedMore);
  EXPECT_EQ(PeekFrameHeader(buf.get(), end - 4, 1000, &header), HeaderResult::kNeedMore);
  EXPECT_EQ(evbuffer_get_length(buf.get()), end);
}

TEST(ProtocolPeekHeaderTest, LengthOutOfRangeIsMalformed) {
  constexpr uint32_t kMax = 100;
  struct Case {
    uint32_t length;
    HeaderResult expected;
  };
  for (const Case& c :
       {Case{0, HeaderResult::kMalformed}, Case{3, HeaderResult::kMalformed},
        Case{4, HeaderResult::kOk}, Case{kMax, HeaderResult::kOk},
        Case{kMax + 1, HeaderResult::kMalformed}, Case{0x80000000u, HeaderResult::kMalformed},
        Case{0xffffffffu, HeaderResult::kMalformed}}) {
    EvbufferPtr buf = NewBuffer();
    Add(buf.get(), RawMessage('Q', c.length, ""));
    MessageHeader header;
    EXPECT_EQ(PeekFrameHeader(buf.get(), 0, kMax, &header), c.expected) << "length " << c.length;
    if (c.expected == HeaderResult::kOk) {
      EXPECT_EQ(header.length, c.length);
      EXPECT_EQ(header.type, 'Q');
    }
  }
  // Malformed is also detected for a message that is not first in the buffer.
  EvbufferPtr buf = NewBuffer();
  Add(buf.get(), ReadyForQuery('I') + RawMessage('E', 2, ""));
  MessageHeader header;
  EXPECT_EQ(PeekFrameHeader(buf.get(), 0, kMax, &header), HeaderResult::kOk);
  EXPECT_EQ(PeekFrameHeader(buf.get(), 6, kMax, &header), HeaderResult::kMalformed);
}

TEST(ProtocolPeekHeaderTest, OffsetBeyondDataNeedsMore) {
  EvbufferPtr buf = NewBuffer();
  MessageHeader header;
  EXPECT_EQ(PeekFrameHeader(buf.get(), 0, 1000, &header), HeaderResult::kNeedMore);  // Empty.
  Add(buf.get(), Terminate());
  EXPECT_EQ(PeekFrameHeader(buf.get(), 0, 1000, &header), HeaderResult::kOk);
  EXPECT_EQ(header.type, 'X');
  EXPECT_EQ(header.body_size(), 0u);
  for (size_t offset : {size_t{1}, size_t{5}, size_t{6}, size_t{1000}, size_t{1} << 40}) {
    EXPECT_EQ(PeekFrameHeader(buf.get(), offset, 1000, &header), HeaderResult::kNeedMore) << offset;
  }
  // Offsets so large that offset + 5 wraps around must not read anything either.
  const size_t max = std::numeric_limits<size_t>::max();
  for (size_t offset : {max, max - 1, max - 4}) {
    EXPECT_EQ(PeekFrameHeader(buf.get(), offset, 1000, &header), HeaderResult::kNeedMore) << offset;
  }
}

// ---- MessageBuilder ------------------------------------------------------------------------

TEST(ProtocolBuilderTest, TypedMessageRoundTrip) {
  const std::string bytes("a\0b", 3);
  const std::string message = MessageBuilder('x')
                                  .Int32(-5)
                                  .Int16(-2)
                                  .CString("hi")
                                  .Bytes(bytes)
                                  .Byte(200)
                                  .Int32(std::numeric_limits<int32_t>::min())
                                  .Int16(std::numeric_limits<int16_t>::max())
                                  .Finish();
  ASSERT_EQ(message.size(), 1 + 4 + 4 + 2 + 3 + 3 + 1 + 4 + 2u);
  BodyReader reader(TypedBody(message, 'x'));
  EXPECT_EQ(reader.Int32(), -5);
  EXPECT_EQ(reader.Int16(), -2);
  EXPECT_EQ(reader.CString(), "hi");
  EXPECT_EQ(reader.Bytes(3), bytes);
  EXPECT_EQ(reader.Byte(), 200);
  EXPECT_EQ(reader.Int32(), std::numeric_limits<int32_t>::min());
  EXPECT_EQ(reader.Int16(), std::numeric_limits<int16_t>::max());
  EXPECT_TRUE(reader.ok());
  EXPECT_EQ(reader.remaining(), 0u);

  // And the header as the pooler reads it off the socket.
  EvbufferPtr buf = NewBuffer();
  Add(buf.get(), message);
  MessageHeader header;
  ASSERT_EQ(PeekFrameHeader(buf.get(), 0, 1000, &header), HeaderResult::kOk);
  EXPECT_EQ(header.type, 'x');
  EXPECT_EQ(header.total(), message.size());
}

TEST(ProtocolBuilderTest, IntegersAreBigEndian) {
  const std::string message = MessageBuilder('k').Int32(0x01020304).Int16(0x0506).Finish();
  EXPECT_EQ(message, std::string("k\0\0\0\x0a\x01\x02\x03\x04\x05\x06", 11));
}

TEST(ProtocolBuilderTest, UntypedMessageLengthCountsEverything) {
  const std::string message = MessageBuilder(0).Int32(kSslRequestCode).Finish();
  EXPECT_EQ(message, BE32(8) + BE32(kSslRequestCode));
  const std::string with_text = MessageBuilder(0).Int32(kProtocolV3).CString("user").Finish();
  ASSERT_EQ(with_text.size(), 4 + 4 + 5u);
  BodyReader reader(with_text);
  EXPECT_EQ(reader.Int32(), static_cast<int32_t>(with_text.size()));
  EXPECT_EQ(reader.Int32(), kProtocolV3);
  EXPECT_EQ(reader.CString(), "user");
  EXPECT_TRUE(reader.ok());
}

TEST(ProtocolBuilderTest, EmptyTypedMessage) {
  EXPECT_EQ(Terminate(), std::string("X\0\0\0\x04", 5));
  EXPECT_EQ(ReadyForQuery('T'), std::string("Z\0\0\0\x05T", 6));
}

// ---- BodyReader -----------------------------------------------------------------------------

TEST(BodyReaderTest, TruncatedInt32FailsWithoutConsuming) {
  BodyReader reader(std::string_view("abc", 3));
  EXPECT_EQ(reader.Int32(), 0);
  EXPECT_FALSE(reader.ok());
  EXPECT_EQ(reader.remaining(), 3u);
  // The failure sticks: even a read that would fit returns nothing.
  EXPECT_EQ(reader.Byte(), 0);
  EXPECT_EQ(reader.Bytes(1), "");
  EXPECT_FALSE(reader.ok());
}

TEST(BodyReaderTest, TruncatedInt16AndByte) {
  BodyReader one(std::string_view("\x7f", 1));
  EXPECT_EQ(one.Int16(), 0);
  EXPECT_FALSE(one.ok());
  BodyReader empty(std::string_view{});
  EXPECT_EQ(empty.Byte(), 0);
  EXPECT_FALSE(empty.ok());
}

TEST(BodyReaderTest, UnterminatedCStringFails) {
  BodyReader reader(std::string_view("abc", 3));
  EXPECT_EQ(reader.CString(), "");
  EXPECT_FALSE(reader.ok());
  EXPECT_EQ(reader.remaining(), 3u);

  BodyReader second(std::string_view("ab\0cd", 5));
  EXPECT_EQ(second.CString(), "ab");
  EXPECT_TRUE(second.ok());
  EXPECT_EQ(second.CString(), "");  // "cd" has no terminator.
  EXPECT_FALSE(second.ok());
}

TEST(BodyReaderTest, StickyFailureAfterBadReadStopsLaterValidReads) {
  const std::string body = BE32(1) + std::string("x\0", 2);
  BodyReader reader(body);
  EXPECT_EQ(reader.Bytes(body.size() + 1), "");
  EXPECT_FALSE(reader.ok());
  EXPECT_EQ(reader.Int32(), 0);  // Would be 1 had the reader not failed.
  EXPECT_EQ(reader.CString(), "");
  EXPECT_EQ(reader.remaining(), body.size());
}

TEST(BodyReaderTest, HugeLengthsFailCleanly) {
  const std::string body = "abcdef";
  BodyReader reader(body);
  EXPECT_EQ(reader.Bytes(2), "ab");
  EXPECT_EQ(reader.Bytes(std::numeric_limits<size_t>::max()), "");
  EXPECT_FALSE(reader.ok());
  EXPECT_EQ(reader.remaining(), 4u);
}

TEST(BodyReaderTest, RestAndEmptyCString) {
  BodyReader reader(std::string_view("\0tail", 5));
  EXPECT_EQ(reader.CString(), "");
  EXPECT_TRUE(reader.ok());
  EXPECT_EQ(reader.Rest(), "tail");
  EXPECT_EQ(reader.remaining(), 0u);
  EXPECT_EQ(reader.Rest(), "");
  EXPECT_TRUE(reader.ok());
  EXPECT_EQ(reader.Byte(), 0);
  EXPECT_FALSE(reader.ok());
}

// ---- ParseStartupPacket ---------------------------------------------------------------------

TEST(StartupPacketTest, V3WithParams) {
  const std::vector<std::pair<std::string, std::string>> params = {
      {"user", "alice"}, {"database", "appdb"}, {"application_name", ""}};
  const std::string packet = StartupMessage(params);
  BodyReader length(packet);
  EXPECT_EQ(static_cast<size_t>(length.Int32()), packet.size());
  absl::StatusOr<StartupPacket> parsed = ParseStartupPacket(packet);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->code, kProtocolV3);
  EXPECT_EQ(parsed->params, params);
}

TEST(StartupPacketTest, V3WithoutParams) {
  absl::StatusOr<StartupPacket> parsed = ParseStartupPacket(StartupMessage({}));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->code, kProtocolV3);
  EXPECT_TRUE(parsed->params.empty());
}

TEST(StartupPacketTest, EncryptionRequests) {
  for (int32_t code : {kSslRequestCode, kGssEncRequestCode}) {
    absl::StatusOr<StartupPacket> parsed = ParseStartupPacket(BE32(8) + BE32(code));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(parsed->code, code);
    EXPECT_TRUE(parsed->params.empty());
    // With a payload it is not a valid request.
    absl::StatusOr<StartupPacket> longer = ParseStartupPacket(BE32(12) + BE32(code) + BE32(0));
    EXPECT_TRUE(absl::IsInvalidArgument(longer.status())) << code << ": " << longer.status();
  }
}

TEST(StartupPacketTest, CancelRequestCarriesPidAndKey) {
  const std::string packet = CancelRequest(4242, -99);
  EXPECT_EQ(packet,
            BE32(16) + BE32(kCancelRequestCode) + BE32(4242) + BE32(static_cast<uint32_t>(-99)));
  absl::StatusOr<StartupPacket> parsed = ParseStartupPacket(packet);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->code, kCancelRequestCode);
  EXPECT_EQ(parsed->cancel_pid, 4242);
  EXPECT_EQ(parsed->cancel_key, -99);
  // Missing the key.
  EXPECT_TRUE(absl::IsInvalidArgument(
      ParseStartupPacket(BE32(12) + BE32(kCancelRequestCode) + BE32(4242)).status()));
}

TEST(StartupPacketTest, OtherProtocolVersionsRefused) {
  for (auto [major, text] :
       {std::pair<int32_t, const char*>{2, "2.0"}, std::pair<int32_t, const char*>{4, "4.0"}}) {
    const std::string packet =
        MessageBuilder(0).Int32(major << 16).CString("user").CString("bob").Byte(0).Finish();
    absl::StatusOr<StartupPacket> parsed = ParseStartupPacket(packet);
    ASSERT_FALSE(parsed.ok());
    EXPECT_TRUE(absl::IsInvalidArgument(parsed.status())) << parsed.status();
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("protocol"));
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr(text));
  }
}

TEST(StartupPacketTest, MissingTerminator) {
  const std::string packet =
      MessageBuilder(0).Int32(kProtocolV3).CString("user").CString("alice").Finish();
  absl::StatusOr<StartupPacket> parsed = ParseStartupPacket(packet);
  EXPECT_TRUE(absl::IsInvalidArgument(parsed.status())) << parsed.status();
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("terminated"));
}

TEST(StartupPacketTest, ParamWithoutValue) {
  // The name is the last thing in the packet.
  const std::string packet = MessageBuilder(0).Int32(kProtocolV3).CString("user").Finish();
  absl::StatusOr<StartupPacket> parsed = ParseStartupPacket(packet);
  EXPECT_TRUE(absl::IsInvalidArgument(parsed.status())) << parsed.status();
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("'user'"));
  // An odd number of strings before the terminator: the terminator is taken as the value and
  // the packet then lacks one.
  const std::string odd = MessageBuilder(0)
                              .Int32(kProtocolV3)
                              .CString("user")
                              .CString("alice")
                              .CString("database")
                              .Byte(0)
                              .Finish();
  EXPECT_TRUE(absl::IsInvalidArgument(ParseStartupPacket(odd).status()));
}

TEST(StartupPacketTest, WrongLengthField) {
  const std::string good = StartupMessage({{"user", "alice"}});
  ASSERT_TRUE(ParseStartupPacket(good).ok());
  for (uint32_t length : {static_cast<uint32_t>(good.size() - 1),
                          static_cast<uint32_t>(good.size() + 1), 0u, 4u, 7u, 0xffffffffu}) {
    const std::string packet = BE32(length) + good.substr(4);
    absl::StatusOr<StartupPacket> parsed = ParseStartupPacket(packet);
    EXPECT_TRUE(absl::IsInvalidArgument(parsed.status())) << length << ": " << parsed.status();
    EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("length")) << length;
  }
  EXPECT_TRUE(absl::IsInvalidArgument(ParseStartupPacket("").status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ParseStartupPacket(BE32(4)).status()));
}

TEST(StartupPacketTest, TrailingBytesAfterTerminator) {
  const std::string body = StartupMessage({{"user", "alice"}}).substr(4) + "xyz";
  const std::string packet = BE32(static_cast<uint32_t>(body.size() + 4)) + body;
  absl::StatusOr<StartupPacket> parsed = ParseStartupPacket(packet);
  EXPECT_TRUE(absl::IsInvalidArgument(parsed.status())) << parsed.status();
  EXPECT_THAT(std::string(parsed.status().message()), HasSubstr("trailing"));
}

// ---- ErrorResponse / notices ----------------------------------------------------------------

TEST(ProtocolErrorFieldsTest, ErrorResponseParsesBack) {
  const std::string message =
      ErrorResponse("FATAL", "28P01", "password authentication failed for user \"bob\"");
  std::string_view body = TypedBody(message, 'E');
  ASSERT_FALSE(body.empty());
  EXPECT_EQ(body.back(), '\0');  // The list terminator.
  std::map<char, std::string> fields = ParseErrorFields(body);
  EXPECT_THAT(fields, ElementsAre(Pair('C', "28P01"),
                                  Pair('M', "password authentication failed for user \"bob\""),
                                  Pair('S', "FATAL"), Pair('V', "FATAL")));
}

TEST(ProtocolErrorFieldsTest, NoticeResponse) {
  const std::string message = NoticeResponse("pooler is pausing");
  std::map<char, std::string> fields = ParseErrorFields(TypedBody(message, 'N'));
  EXPECT_EQ(fields['S'], "NOTICE");
  EXPECT_EQ(fields['C'], "00000");
  EXPECT_EQ(fields['M'], "pooler is pausing");
}

TEST(ProtocolErrorFieldsTest, StopsAtTerminatorAndDropsTruncatedField) {
  const std::string after_terminator("SERROR\0\0Mignored\0", 17);
  EXPECT_THAT(ParseErrorFields(after_terminator), ElementsAre(Pair('S', "ERROR")));
  const std::string truncated("SERROR\0Mno terminator", 21);
  EXPECT_THAT(ParseErrorFields(truncated), ElementsAre(Pair('S', "ERROR")));
  EXPECT_TRUE(ParseErrorFields("").empty());
}

// ---- QuoteLiteral -----------------------------------------------------------------------------

TEST(ProtocolQuoteLiteralTest, EscapesQuotes) {
  EXPECT_EQ(QuoteLiteral("abc"), "'abc'");
  EXPECT_EQ(QuoteLiteral(""), "''");
  EXPECT_EQ(QuoteLiteral("O'Brien"), "'O''Brien'");
  EXPECT_EQ(QuoteLiteral("'"), "''''");
  EXPECT_EQ(QuoteLiteral("a''b'"), "'a''''b'''");
  EXPECT_EQ(QuoteLiteral("x'; DROP TABLE t; --"), "'x''; DROP TABLE t; --'");
}

// ---- Result messages --------------------------------------------------------------------------

TEST(ProtocolResultMessagesTest, RowDescriptionLayout) {
  const std::vector<std::string> columns = {"database", "x"};
  const std::string message = RowDescription(columns);
  // Per column: name + NUL, then 18 bytes of table oid, attnum, type, size, typmod, format.
  EXPECT_EQ(message.size(), 5 + 2 + (9 + 18) + (2 + 18u));
  BodyReader reader(TypedBody(message, 'T'));
  ASSERT_EQ(reader.Int16(), 2);
  for (const std::string& column : columns) {
    EXPECT_EQ(reader.CString(), column);
    EXPECT_EQ(reader.Int32(), 0);   // Table oid.
    EXPECT_EQ(reader.Int16(), 0);   // Attribute number.
    EXPECT_EQ(reader.Int32(), 25);  // text.
    EXPECT_EQ(reader.Int16(), -1);  // Variable size.
    EXPECT_EQ(reader.Int32(), -1);  // No type modifier.
    EXPECT_EQ(reader.Int16(), 0);   // Text format.
  }
  EXPECT_TRUE(reader.ok());
  EXPECT_EQ(reader.remaining(), 0u);

  const std::string empty = RowDescription({});
  BodyReader none(TypedBody(empty, 'T'));
  EXPECT_EQ(none.Int16(), 0);
  EXPECT_EQ(none.remaining(), 0u);
}

TEST(ProtocolResultMessagesTest, DataRowLayout) {
  const std::vector<std::string> values = {"1", "", "hello", std::string("a\0b", 3)};
  const std::string message = DataRow(values);
  EXPECT_EQ(message.size(), 5 + 2 + 4 * 4 + 1 + 0 + 5 + 3u);
  BodyReader reader(TypedBody(message, 'D'));
  ASSERT_EQ(reader.Int16(), static_cast<int16_t>(values.size()));
  for (const std::string& value : values) {
    const int32_t length = reader.Int32();
    ASSERT_EQ(length, static_cast<int32_t>(value.size()));
    EXPECT_EQ(reader.Bytes(static_cast<size_t>(length)), value);
  }
  EXPECT_TRUE(reader.ok());
  EXPECT_EQ(reader.remaining(), 0u);
}

TEST(ProtocolResultMessagesTest, CommandCompleteLayout) {
  const std::string message = CommandComplete("SELECT 3");
  EXPECT_EQ(message.size(), 5 + 9u);
  BodyReader reader(TypedBody(message, 'C'));
  EXPECT_EQ(reader.CString(), "SELECT 3");
  EXPECT_TRUE(reader.ok());
  EXPECT_EQ(reader.remaining(), 0u);
}

TEST(ProtocolResultMessagesTest, OtherBackendMessages) {
  const std::string key_data = BackendKeyData(77, -1);
  BodyReader key(TypedBody(key_data, 'K'));
  EXPECT_EQ(key.Int32(), 77);
  EXPECT_EQ(key.Int32(), -1);
  EXPECT_EQ(key.remaining(), 0u);

  const std::string parameter = ParameterStatus("server_version", "16.2");
  BodyReader status(TypedBody(parameter, 'S'));
  EXPECT_EQ(status.CString(), "server_version");
  EXPECT_EQ(status.CString(), "16.2");
  EXPECT_EQ(status.remaining(), 0u);

  const std::string auth = AuthenticationRequest(kAuthMd5, "salt");
  BodyReader md5(TypedBody(auth, 'R'));
  EXPECT_EQ(md5.Int32(), kAuthMd5);
  EXPECT_EQ(md5.Rest(), "salt");

  const std::string initial = SaslInitialResponse("SCRAM-SHA-256", "n,,n=,r=abc");
  BodyReader sasl(TypedBody(initial, 'p'));
  EXPECT_EQ(sasl.CString(), "SCRAM-SHA-256");
  EXPECT_EQ(sasl.Int32(), 11);
  EXPECT_EQ(sasl.Bytes(11), "n,,n=,r=abc");
  EXPECT_TRUE(sasl.ok());
  EXPECT_EQ(sasl.remaining(), 0u);
}

// ---- Truncated and random input -----------------------------------------------------------

// Reads a DataRow body the way a client would; false when the body does not hold it.
bool ReadDataRow(std::string_view body, std::vector<std::string>* values) {
  BodyReader reader(body);
  const int16_t count = reader.Int16();
  for (int16_t i = 0; i < count && reader.ok(); ++i) {
    const int32_t length = reader.Int32();
    if (!reader.ok() || length < 0) return false;
    values->emplace_back(reader.Bytes(static_cast<size_t>(length)));
  }
  return reader.ok() && reader.remaining() == 0;
}

TEST(ProtocolFuzzTest, EveryPrefixOfValidMessagesIsRejected) {
  const std::string startup =
      StartupMessage({{"user", "alice"}, {"database", "appdb"}, {"options", "-c x=y"}});
  ASSERT_TRUE(ParseStartupPacket(startup).ok());
  for (size_t n = 0; n < startup.size(); ++n) {
    EXPECT_FALSE(ParseStartupPacket(std::string_view(startup).substr(0, n)).ok()) << n;
  }

  const std::string cancel = CancelRequest(1, 2);
  for (size_t n = 0; n < cancel.size(); ++n) {
    EXPECT_FALSE(ParseStartupPacket(std::string_view(cancel).substr(0, n)).ok()) << n;
  }

  const std::string row = DataRow({"alpha", "", "gamma"});
  const std::string_view row_body = std::string_view(row).substr(kHeaderSize);
  std::vector<std::string> values;
  ASSERT_TRUE(ReadDataRow(row_body, &values));
  EXPECT_THAT(values, ElementsAre("alpha", "", "gamma"));
  for (size_t n = 0; n < row_body.size(); ++n) {
    std::vector<std::string> partial;
    EXPECT_FALSE(ReadDataRow(row_body.substr(0, n), &partial)) << n;
  }

  // A truncated error body yields only complete fields, each with its full value.
  const std::string error = ErrorResponse("ERROR", "42P01", "relation \"t\" does not exist");
  const std::string_view error_body = std::string_view(error).substr(kHeaderSize);
  const std::map<char, std::string> full = ParseErrorFields(error_body);
  ASSERT_EQ(full.size(), 4u);
  size_t previous = 0;
  for (size_t n = 0; n <= error_body.size(); ++n) {
    const std::map<char, std::string> fields = ParseErrorFields(error_body.substr(0, n));
    for (const auto& [code, value] : fields) {
      ASSERT_TRUE(full.contains(code)) << n;
      EXPECT_EQ(value, full.at(code)) << "prefix " << n << " field " << code;
    }
    EXPECT_GE(fields.size(), previous) << n;
    previous = fields.size();
    // The message text is the last field: it is complete only with its NUL.
    if (n + 1 < error_body.size()) {
      EXPECT_FALSE(fields.contains('M')) << n;
    }
  }
  EXPECT_EQ(previous, 4u);
}

TEST(ProtocolFuzzTest, RandomBytesNeverReadOutOfBounds) {
  std::mt19937 rng(20240611);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> length(0, 48);
  std::uniform_int_distribution<int> op(0, 5);
  int startup_accepted = 0;
  for (int iteration = 0; iteration < 5000; ++iteration) {
    std::string data(static_cast<size_t>(length(rng)), '\0');
    for (char& c : data) {
      // Plenty of NULs so that C strings end inside the data often.
      c = static_cast<char>(byte(rng) < 64 ? 0 : byte(rng));
    }
    // Half of the time, give it a correct length and the v3 code so the parameter loop runs.
    if (iteration % 2 == 0 && data.size() >= 8) {
      const std::string head = BE32(static_cast<uint32_t>(data.size())) + BE32(kProtocolV3);
      data.replace(0, 8, head);
    }

    absl::StatusOr<StartupPacket> startup = ParseStartupPacket(data);
    if (startup.ok()) {
      ++startup_accepted;
      // Anything accepted is well formed: it rebuilds to the same bytes.
      ASSERT_EQ(startup->code, kProtocolV3) << iteration;
      ASSERT_EQ(StartupMessage(startup->params), data) << iteration;
    }

    for (const auto& [code, value] : ParseErrorFields(data)) {
      ASSERT_NE(code, '\0');
      ASSERT_EQ(value.find('\0'), std::string::npos);
      ASSERT_LE(value.size(), data.size());
    }

    BodyReader reader(data);
    size_t consumed = 0;
    for (int step = 0; step < 12; ++step) {
      const size_t before = reader.remaining();
      const bool was_ok = reader.ok();
      size_t want = 0;
      switch (op(rng)) {
        case 0:
          reader.Int32();
          want = 4;
          break;
        case 1:
          reader.Int16();
          want = 2;
          break;
        case 2:
          reader.Byte();
          want = 1;
          break;
        case 3: {
          const std::string_view s = reader.CString();
          want = s.size() + 1;
          break;
        }
        case 4: {
          const size_t n = static_cast<size_t>(byte(rng) % 16);
          EXPECT_LE(reader.Bytes(n).size(), before);
          want = n;
          break;
        }
        default:
          want = reader.Rest().size();
          break;
      }
      ASSERT_LE(reader.remaining(), before);
      if (reader.ok()) {
        ASSERT_TRUE(was_ok);
        ASSERT_EQ(before - reader.remaining(), want);
        consumed += want;
      } else {
        ASSERT_EQ(reader.remaining(), before) << "a failed read consumed bytes";
      }
    }
    ASSERT_EQ(consumed + reader.remaining(), data.size());
  }
  // The generator does reach the success path now and then (empty parameter lists).
  EXPECT_GT(startup_accepted, 0);
}

}  // namespace
}  // namespace pgfleet::agent::pg
