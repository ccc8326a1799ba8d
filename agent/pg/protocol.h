// PostgreSQL v3 wire protocol: constants, message builders and the few parsers the pooler
// needs. No sockets here (like Odyssey's kiwi): bytes in, bytes or values out.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace pgfleet::agent::pg {

constexpr int32_t kProtocolV3 = 196608;  // 3.0
constexpr int32_t kCancelRequestCode = 80877102;
constexpr int32_t kSslRequestCode = 80877103;
constexpr int32_t kGssEncRequestCode = 80877104;
constexpr size_t kHeaderSize = 5;  // Type byte + int32 length.
// A startup packet larger than this is refused before it is read (PgBouncer uses 10000).
constexpr uint32_t kMaxStartupPacket = 10000;

// Authentication request codes ('R' messages).
enum AuthCode : int32_t {
  kAuthOk = 0,
  kAuthCleartext = 3,
  kAuthMd5 = 5,
  kAuthSasl = 10,
  kAuthSaslContinue = 11,
  kAuthSaslFinal = 12,
};

struct MessageHeader {
  char type = 0;
  uint32_t length = 0;  // As on the wire: includes the 4 length bytes, not the type byte.
  size_t total() const { return 1 + static_cast<size_t>(length); }
  size_t body_size() const { return length - 4; }
};

enum class HeaderResult { kNeedMore, kOk, kMalformed };

// Reads the header of the message at the front of `bytes` (which may hold only part of it, or
// several messages). kNeedMore when fewer than kHeaderSize bytes are there; kMalformed when the
// length is < 4 or > max_length.
HeaderResult PeekHeader(std::string_view bytes, uint32_t max_length, MessageHeader* out);

// One whole message: its header and its body (which points into the bytes it was read from).
struct Frame {
  MessageHeader header;
  std::string_view body;
};

// Walks the whole messages of a byte span, front to back, consuming nothing: the owner of the
// bytes drains consumed() of them when it is done. Stops at the first message that has not
// fully arrived (kNeedMore, with its header in header_of_partial() so a streaming forwarder
// can pass its start on) or is malformed.
class FrameReader {
 public:
  FrameReader(std::string_view bytes, uint32_t max_length)
      : bytes_(bytes), max_length_(max_length) {}
  HeaderResult Next(Frame* out);
  size_t consumed() const { return consumed_; }
  std::string_view rest() const { return bytes_.substr(consumed_); }
  const MessageHeader& header_of_partial() const { return partial_; }

 private:
  std::string_view bytes_;
  uint32_t max_length_;
  size_t consumed_ = 0;
  MessageHeader partial_;
};

// The length of the startup-style packet (no type byte) at the front of `bytes`, once its 4
// length bytes are there; 0 before.
uint32_t PeekStartupLength(std::string_view bytes);

// Builds one message; Finish() fills in the length.
class MessageBuilder {
 public:
  explicit MessageBuilder(char type);  // type 0: untyped (startup-style) packet.
  MessageBuilder& Int32(int32_t value);
  MessageBuilder& Int16(int16_t value);
  MessageBuilder& Byte(uint8_t value);
  MessageBuilder& CString(std::string_view value);
  MessageBuilder& Bytes(std::string_view value);
  std::string Finish();

 private:
  std::string data_;
  size_t length_offset_;
};

// Reads fields out of a message body; a read past the end sets !ok() instead of crashing.
class BodyReader {
 public:
  explicit BodyReader(std::string_view body) : body_(body) {}
  int32_t Int32();
  int16_t Int16();
  uint8_t Byte();
  std::string_view CString();
  std::string_view Bytes(size_t n);
  std::string_view Rest();
  bool ok() const { return ok_; }
  size_t remaining() const { return body_.size() - pos_; }

 private:
  std::string_view body_;
  size_t pos_ = 0;
  bool ok_ = true;
};

std::string ErrorResponse(std::string_view severity, std::string_view sqlstate,
                          std::string_view message);
std::string NoticeResponse(std::string_view message);
std::string ReadyForQuery(char status);
std::string ParameterStatus(std::string_view name, std::string_view value);
std::string AuthenticationRequest(int32_t code, std::string_view extra = {});
std::string BackendKeyData(int32_t pid, int32_t key);
std::string Query(std::string_view sql);
std::string Terminate();
std::string PasswordMessage(std::string_view password);  // 'p' with a C string.
std::string SaslInitialResponse(std::string_view mechanism, std::string_view data);
std::string SaslResponse(std::string_view data);
std::string StartupMessage(const std::vector<std::pair<std::string, std::string>>& params);
std::string CancelRequest(int32_t pid, int32_t key);
// RowDescription with text columns, DataRow, CommandComplete: enough for simple answers.
std::string RowDescription(const std::vector<std::string>& columns);
std::string DataRow(const std::vector<std::string>& values);
std::string CommandComplete(std::string_view tag);

// The first packet of a connection (no type byte).
struct StartupPacket {
  int32_t code = 0;                                         // kProtocolV3, kSslRequestCode...
  std::vector<std::pair<std::string, std::string>> params;  // For kProtocolV3.
  int32_t cancel_pid = 0;                                   // For kCancelRequestCode.
  int32_t cancel_key = 0;
};
// `packet` is the whole packet, length included.
absl::StatusOr<StartupPacket> ParseStartupPacket(std::string_view packet);

// Fields of an ErrorResponse/NoticeResponse body, keyed by field code ('S', 'C', 'M'...).
std::map<char, std::string> ParseErrorFields(std::string_view body);

// Quotes `value` as an SQL string literal: '...' with '' escapes, or E'...' with \\ and ''
// escapes when it holds a backslash, so that it reads the same whatever the server's
// standard_conforming_strings (as PostgreSQL's quote_literal()).
std::string QuoteLiteral(std::string_view value);

// Extended-protocol messages that apply `settings` (name, value) in order with
// pg_catalog.set_config(name, value, false) and end with one Sync: the values travel as Bind
// parameters, never as SQL text, so no standard_conforming_strings or client_encoding can make
// one of them read as anything but itself. One ReadyForQuery answers the lot.
std::string SetConfigMessages(
    const std::vector<std::pair<std::string_view, std::string_view>>& settings);

}  // namespace pgfleet::agent::pg
