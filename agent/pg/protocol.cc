#include "agent/pg/protocol.h"

#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace pgfleet::agent::pg {

HeaderResult PeekHeader(std::string_view bytes, uint32_t max_length, MessageHeader* out) {
  if (bytes.size() < kHeaderSize) return HeaderResult::kNeedMore;
  uint32_t length;
  memcpy(&length, bytes.data() + 1, 4);
  length = ntohl(length);
  if (length < 4 || length > max_length) return HeaderResult::kMalformed;
  out->type = bytes[0];
  out->length = length;
  return HeaderResult::kOk;
}

HeaderResult FrameReader::Next(Frame* out) {
  const std::string_view rest = bytes_.substr(consumed_);
  partial_ = MessageHeader{};
  const HeaderResult result = PeekHeader(rest, max_length_, &partial_);
  if (result != HeaderResult::kOk) return result;
  if (rest.size() < partial_.total()) return HeaderResult::kNeedMore;
  out->header = partial_;
  out->body = rest.substr(kHeaderSize, partial_.body_size());
  consumed_ += partial_.total();
  return HeaderResult::kOk;
}

uint32_t PeekStartupLength(std::string_view bytes) {
  if (bytes.size() < 4) return 0;
  uint32_t length;
  memcpy(&length, bytes.data(), 4);
  return ntohl(length);
}

MessageBuilder::MessageBuilder(char type) {
  if (type != 0) {
    data_.push_back(type);
  }
  length_offset_ = data_.size();
  data_.append(4, '\0');
}

MessageBuilder& MessageBuilder::Int32(int32_t value) {
  uint32_t net = htonl(static_cast<uint32_t>(value));
  data_.append(reinterpret_cast<const char*>(&net), 4);
  return *this;
}

MessageBuilder& MessageBuilder::Int16(int16_t value) {
  uint16_t net = htons(static_cast<uint16_t>(value));
  data_.append(reinterpret_cast<const char*>(&net), 2);
  return *this;
}

MessageBuilder& MessageBuilder::Byte(uint8_t value) {
  data_.push_back(static_cast<char>(value));
  return *this;
}

MessageBuilder& MessageBuilder::CString(std::string_view value) {
  data_.append(value);
  data_.push_back('\0');
  return *this;
}

MessageBuilder& MessageBuilder::Bytes(std::string_view value) {
  data_.append(value);
  return *this;
}

std::string MessageBuilder::Finish() {
  uint32_t net = htonl(static_cast<uint32_t>(data_.size() - length_offset_));
  memcpy(data_.data() + length_offset_, &net, 4);
  return std::move(data_);
}

int32_t BodyReader::Int32() {
  std::string_view raw = Bytes(4);
  if (raw.size() != 4) return 0;
  uint32_t net;
  memcpy(&net, raw.data(), 4);
  return static_cast<int32_t>(ntohl(net));
}

int16_t BodyReader::Int16() {
  std::string_view raw = Bytes(2);
  if (raw.size() != 2) return 0;
  uint16_t net;
  memcpy(&net, raw.data(), 2);
  return static_cast<int16_t>(ntohs(net));
}

uint8_t BodyReader::Byte() {
  std::string_view raw = Bytes(1);
  return raw.empty() ? 0 : static_cast<uint8_t>(raw[0]);
}

std::string_view BodyReader::CString() {
  size_t end = body_.find('\0', pos_);
  if (!ok_ || end == std::string_view::npos) {
    ok_ = false;
    return {};
  }
  std::string_view value = body_.substr(pos_, end - pos_);
  pos_ = end + 1;
  return value;
}

std::string_view BodyReader::Bytes(size_t n) {
  if (!ok_ || remaining() < n) {
    ok_ = false;
    return {};
  }
  std::string_view value = body_.substr(pos_, n);
  pos_ += n;
  return value;
}

std::string_view BodyReader::Rest() { return Bytes(remaining()); }

std::string ErrorResponse(std::string_view severity, std::string_view sqlstate,
                          std::string_view message) {
  return MessageBuilder('E')
      .Byte('S')
      .CString(severity)
      .Byte('V')
      .CString(severity)
      .Byte('C')
      .CString(sqlstate)
      .Byte('M')
      .CString(message)
      .Byte(0)
      .Finish();
}

std::string NoticeResponse(std::string_view message) {
  return MessageBuilder('N')
      .Byte('S')
      .CString("NOTICE")
      .Byte('V')
      .CString("NOTICE")
      .Byte('C')
      .CString("00000")
      .Byte('M')
      .CString(message)
      .Byte(0)
      .Finish();
}

std::string ReadyForQuery(char status) {
  return MessageBuilder('Z').Byte(static_cast<uint8_t>(status)).Finish();
}

std::string ParameterStatus(std::string_view name, std::string_view value) {
  return MessageBuilder('S').CString(name).CString(value).Finish();
}

std::string AuthenticationRequest(int32_t code, std::string_view extra) {
  return MessageBuilder('R').Int32(code).Bytes(extra).Finish();
}

std::string BackendKeyData(int32_t pid, int32_t key) {
  return MessageBuilder('K').Int32(pid).Int32(key).Finish();
}

std::string Query(std::string_view sql) { return MessageBuilder('Q').CString(sql).Finish(); }

std::string Terminate() { return MessageBuilder('X').Finish(); }

std::string PasswordMessage(std::string_view password) {
  return MessageBuilder('p').CString(password).Finish();
}

std::string SaslInitialResponse(std::string_view mechanism, std::string_view data) {
  return MessageBuilder('p')
      .CString(mechanism)
      .Int32(static_cast<int32_t>(data.size()))
      .Bytes(data)
      .Finish();
}

std::string SaslResponse(std::string_view data) { return MessageBuilder('p').Bytes(data).Finish(); }

std::string StartupMessage(const std::vector<std::pair<std::string, std::string>>& params) {
  MessageBuilder builder(0);
  builder.Int32(kProtocolV3);
  for (const auto& [name, value] : params) {
    builder.CString(name).CString(value);
  }
  builder.Byte(0);
  return builder.Finish();
}

std::string CancelRequest(int32_t pid, int32_t key) {
  return MessageBuilder(0).Int32(kCancelRequestCode).Int32(pid).Int32(key).Finish();
}

std::string RowDescription(const std::vector<std::string>& columns) {
  MessageBuilder builder('T');
  builder.Int16(static_cast<int16_t>(columns.size()));
  for (const std::string& column : columns) {
    // table oid, column attnum, type oid (25 = text), type size, type modifier, format.
    builder.CString(column).Int32(0).Int16(0).Int32(25).Int16(-1).Int32(-1).Int16(0);
  }
  return builder.Finish();
}

std::string DataRow(const std::vector<std::string>& values) {
  MessageBuilder builder('D');
  builder.Int16(static_cast<int16_t>(values.size()));
  for (const std::string& value : values) {
    builder.Int32(static_cast<int32_t>(value.size())).Bytes(value);
  }
  return builder.Finish();
}

std::string CommandComplete(std::string_view tag) {
  return MessageBuilder('C').CString(tag).Finish();
}

absl::StatusOr<StartupPacket> ParseStartupPacket(std::string_view packet) {
  BodyReader reader(packet);
  int32_t length = reader.Int32();
  if (!reader.ok() || length < 8 || static_cast<size_t>(length) != packet.size()) {
    return absl::InvalidArgumentError("invalid startup packet length");
  }
  StartupPacket result;
  result.code = reader.Int32();
  if (result.code == kCancelRequestCode) {
    if (length != 16) {
      return absl::InvalidArgumentError("invalid cancel request length");
    }
    result.cancel_pid = reader.Int32();
    result.cancel_key = reader.Int32();
    return result;
  }
  if (result.code == kSslRequestCode || result.code == kGssEncRequestCode) {
    if (length != 8) {
      return absl::InvalidArgumentError("invalid encryption request length");
    }
    return result;
  }
  if (result.code != kProtocolV3) {
    return absl::InvalidArgumentError(
        absl::StrCat("unsupported frontend protocol ", static_cast<uint32_t>(result.code) >> 16,
                     ".", result.code & 0xffff, ": server supports 3.0 only"));
  }
  while (true) {
    std::string_view name = reader.CString();
    if (!reader.ok()) {
      return absl::InvalidArgumentError("startup packet is not terminated");
    }
    if (name.empty()) {
      break;
    }
    std::string_view value = reader.CString();
    if (!reader.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("startup parameter '", std::string(name), "' has no value"));
    }
    result.params.emplace_back(std::string(name), std::string(value));
  }
  if (reader.remaining() != 0) {
    return absl::InvalidArgumentError("trailing bytes after startup parameters");
  }
  return result;
}

std::map<char, std::string> ParseErrorFields(std::string_view body) {
  std::map<char, std::string> fields;
  BodyReader reader(body);
  while (reader.remaining() > 0) {
    char code = static_cast<char>(reader.Byte());
    if (code == 0 || !reader.ok()) break;
    std::string_view value = reader.CString();
    if (!reader.ok()) break;
    fields[code] = std::string(value);
  }
  return fields;
}

std::string QuoteLiteral(std::string_view value) {
  // With a backslash, the E'' form (as PostgreSQL's quote_literal does): it reads the same
  // whatever standard_conforming_strings is, where '...' would take \' as an escaped quote
  // when it is off and let the rest of the value out of the literal.
  const bool escape_form = value.find('\\') != std::string_view::npos;
  std::string quoted = escape_form ? "E'" : "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') quoted.push_back(c);
    quoted.push_back(c);
  }
  quoted.push_back('\'');
  return quoted;
}

std::string SetConfigMessages(
    const std::vector<std::pair<std::string_view, std::string_view>>& settings) {
  std::string messages = MessageBuilder('P')
                             .CString("")
                             .CString("SELECT pg_catalog.set_config($1, $2, false)")
                             .Int16(0)
                             .Finish();
  for (const auto& [name, value] : settings) {
    messages += MessageBuilder('B')
                    .CString("")  // Unnamed portal.
                    .CString("")  // Unnamed statement.
                    .Int16(0)     // Parameters in text.
                    .Int16(2)
                    .Int32(static_cast<int32_t>(name.size()))
                    .Bytes(name)
                    .Int32(static_cast<int32_t>(value.size()))
                    .Bytes(value)
                    .Int16(0)  // Results in text.
                    .Finish();
    messages += MessageBuilder('E').CString("").Int32(0).Finish();
  }
  messages += MessageBuilder('S').Finish();
  return messages;
}

}  // namespace pgfleet::agent::pg
