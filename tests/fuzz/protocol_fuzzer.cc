// The wire-protocol decoder, both directions, fed the way the agent's connections feed it:
// bytes arrive in arbitrary pieces into an evbuffer, messages are framed with PeekFrameHeader
// (agent/io/evbuffer_frames.h over pg::PeekHeader) and
// bodies are read with BodyReader. The framing loops below mirror ClientConn::HandleStartup,
// ClientConn::ForwardToServer / HandleAuthMessage and ServerConn::HandleLogin /
// ForwardToClient (which need sockets, so they are not linked here).
//
// Input: mode byte, chunking seed byte, then the byte stream.
//   mode % 4 == 0: a client: startup packets (SSLRequest, CancelRequest, StartupMessage),
//                  then frontend messages (Query, Parse/Bind/Execute, password, Terminate).
//   mode % 4 == 1: a server: backend messages during login and while forwarding.
//   mode % 4 == 2: builders round-trip through the parsers (NUL-separated strings).
//   mode % 4 == 3: ParseStartupPacket and PeekHeader on the raw bytes.
#include <arpa/inet.h>
#include <event2/buffer.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/io/evbuffer_frames.h"
#include "agent/pg/protocol.h"
#include "tests/fuzz/fuzz_util.h"

namespace pg = pgfleet::agent::pg;
using pgfleet::agent::PeekFrameHeader;

namespace {

// The limits the agent uses: max_packet_size's default, the login/auth caps.
constexpr uint32_t kMaxPacket = 2147483647;
constexpr uint32_t kMaxAuthMessage = 8192;
constexpr uint32_t kMaxLoginMessage = 1 << 20;

struct Frame {
  char type;
  uint32_t length;
  bool operator==(const Frame&) const = default;
};

// Splits `stream` into pieces of 1..64 bytes chosen by a small LCG, so the same input always
// arrives the same way and libFuzzer can explore the split points through the seed.
std::vector<std::string_view> Chunks(std::string_view stream, uint8_t seed) {
  std::vector<std::string_view> chunks;
  uint32_t state = seed * 2654435761u + 1;
  while (!stream.empty()) {
    state = state * 1103515245u + 12345u;
    const size_t size = std::min<size_t>(stream.size(), 1 + (state >> 16) % 64);
    chunks.push_back(stream.substr(0, size));
    stream.remove_prefix(size);
  }
  return chunks;
}

std::string Remove(evbuffer* in, size_t n) {
  std::string out(n, '\0');
  const int removed = evbuffer_remove(in, out.data(), n);
  PGF_FUZZ_CHECK(removed >= 0 && static_cast<size_t>(removed) == n);
  return out;
}

// ClientConn::HandleStartup + ParseStartupPacket. Returns false when the connection would be
// closed; true once a StartupMessage was accepted (the client moves on to messages).
enum class StartupResult { kNeedMore, kClosed, kStarted };

StartupResult ClientStartup(evbuffer* in) {
  while (true) {
    const size_t available = evbuffer_get_length(in);
    if (available < 4) return StartupResult::kNeedMore;
    uint32_t length;
    evbuffer_copyout(in, &length, 4);
    length = ntohl(length);
    if (length < 8 || length > pg::kMaxStartupPacket) return StartupResult::kClosed;
    if (available < length) return StartupResult::kNeedMore;
    const std::string packet = Remove(in, length);
    absl::StatusOr<pg::StartupPacket> startup = pg::ParseStartupPacket(packet);
    if (!startup.ok()) {
      PGF_FUZZ_CHECK(!startup.status().message().empty());
      return StartupResult::kClosed;
    }
    switch (startup->code) {
      case pg::kSslRequestCode:
      case pg::kGssEncRequestCode:
        continue;  // Answered 'N'; the client goes on in plain text.
      case pg::kCancelRequestCode:
        return StartupResult::kClosed;
      default:
        PGF_FUZZ_CHECK(startup->code == pg::kProtocolV3);
        for (const auto& [name, value] : startup->params) {
          PGF_FUZZ_CHECK(!name.empty());
          PGF_FUZZ_CHECK(name.find('\0') == std::string::npos);
          PGF_FUZZ_CHECK(value.find('\0') == std::string::npos);
        }
        return StartupResult::kStarted;
    }
  }
}

// The streaming framing loop of ForwardToServer/ForwardToClient: messages are passed on as
// they arrive, a large one in pieces; only `whole_types` are read whole before passing on.
// Returns false when the connection would be closed.
struct Forwarder {
  size_t forward_remaining = 0;
  uint64_t forwarded = 0;
  std::vector<Frame> frames;

  bool Run(evbuffer* in, uint32_t max_length, std::string_view whole_types) {
    const size_t available = evbuffer_get_length(in);
    size_t offset = 0;
    if (forward_remaining > 0) {
      offset = std::min(forward_remaining, available);
      forward_remaining -= offset;
    }
    bool open = true;
    while (forward_remaining == 0) {
      pg::MessageHeader header;
      const pg::HeaderResult result = PeekFrameHeader(in, offset, max_length, &header);
      if (result == pg::HeaderResult::kNeedMore) break;
      if (result == pg::HeaderResult::kMalformed) {
        open = false;
        break;
      }
      PGF_FUZZ_CHECK(header.length >= 4 && header.length <= max_length);
      PGF_FUZZ_CHECK(header.total() == header.body_size() + pg::kHeaderSize);
      if (whole_types.find(header.type) != std::string_view::npos) {
        if (offset + header.total() > available) break;
        std::string body(header.body_size(), '\0');
        evbuffer_ptr pos;
        PGF_FUZZ_CHECK(evbuffer_ptr_set(in, &pos, offset + pg::kHeaderSize, EVBUFFER_PTR_SET) == 0);
        const ssize_t copied = evbuffer_copyout_from(in, &pos, body.data(), body.size());
        PGF_FUZZ_CHECK(copied == static_cast<ssize_t>(body.size()));
        HandleServerBody(header.type, body);
        frames.push_back({header.type, header.length});
        offset += header.total();
        continue;
      }
      frames.push_back({header.type, header.length});
      if (header.type == 'Q') {
        // ForwardToServer keeps the start of each query for SHOW CLIENTS.
        char query[64];
        evbuffer_ptr pos;
        evbuffer_ptr_set(in, &pos, offset + pg::kHeaderSize, EVBUFFER_PTR_SET);
        const ssize_t copied =
            evbuffer_copyout_from(in, &pos, query, std::min(sizeof(query), header.body_size()));
        PGF_FUZZ_CHECK(copied >= 0 && static_cast<size_t>(copied) <= sizeof(query));
        (void)strnlen(query, static_cast<size_t>(copied));
      }
      if (offset + header.total() <= available) {
        offset += header.total();
      } else {
        forward_remaining = offset + header.total() - available;
        offset = available;
      }
    }
    PGF_FUZZ_CHECK(offset <= available);
    forwarded += offset;
    evbuffer_drain(in, offset);
    return open;
  }

  // ServerConn reads these bodies while forwarding: ParameterStatus and ReadyForQuery.
  static void HandleServerBody(char type, std::string_view body) {
    if (type == 'S') {
      pg::BodyReader reader(body);
      std::string name(reader.CString());
      std::string value(reader.CString());
      if (reader.ok()) PGF_FUZZ_CHECK(name.size() + value.size() + 2 <= body.size());
    }
  }
};

enum class Next { kMore, kDone, kClose };

// Login-time reading: whole messages up to `max_length`, body by body, as ServerConn::HandleLogin
// and ClientConn::HandleAuthMessage do. `handle` says whether to read on, stop (login is over)
// or close the connection.
template <typename Handler>
Next ReadWholeMessages(evbuffer* in, uint32_t max_length, Handler handle) {
  while (true) {
    pg::MessageHeader header;
    switch (PeekFrameHeader(in, 0, max_length, &header)) {
      case pg::HeaderResult::kNeedMore:
        return Next::kMore;
      case pg::HeaderResult::kMalformed:
        return Next::kClose;
      case pg::HeaderResult::kOk:
        break;
    }
    if (evbuffer_get_length(in) < header.total()) return Next::kMore;
    evbuffer_drain(in, pg::kHeaderSize);
    const std::string body = Remove(in, header.body_size());
    const Next next = handle(header.type, body);
    if (next != Next::kMore) return next;
  }
}

// The bodies ServerConn::HandleLogin and HandleAuthRequest take apart.
Next HandleLoginMessage(char type, std::string_view body) {
  pg::BodyReader reader(body);
  switch (type) {
    case 'R': {
      const int32_t code = reader.Int32();
      if (code == pg::kAuthMd5) {
        std::string salt(reader.Bytes(4));
        PGF_FUZZ_CHECK(!reader.ok() || salt.size() == 4);
      } else if (code == pg::kAuthSasl) {
        while (reader.ok() && reader.remaining() > 0) {
          if (reader.CString().empty()) break;
        }
      } else if (code == pg::kAuthSaslContinue || code == pg::kAuthSaslFinal) {
        std::string_view rest = reader.Rest();
        PGF_FUZZ_CHECK(!reader.ok() || rest.size() + 4 == body.size());
      }
      return reader.ok() ? Next::kMore : Next::kClose;
    }
    case 'S': {
      std::string_view name = reader.CString();
      std::string_view value = reader.CString();
      if (reader.ok()) PGF_FUZZ_CHECK(name.size() + value.size() + 2 <= body.size());
      return Next::kMore;
    }
    case 'K':
      reader.Int32();
      reader.Int32();
      return Next::kMore;
    case 'E':
    case 'N': {
      std::map<char, std::string> fields = pg::ParseErrorFields(body);
      for (const auto& [code, value] : fields) {
        PGF_FUZZ_CHECK(code != 0);
        PGF_FUZZ_CHECK(value.size() < body.size());
      }
      return type == 'E' ? Next::kClose : Next::kMore;
    }
    case 'Z':
      return Next::kDone;  // Logged in: forwarding starts.
    default:
      return Next::kMore;
  }
}

// A frontend password message, as ClientConn::HandleAuthMessage reads it for each method.
Next HandlePasswordMessage(char type, std::string_view body) {
  if (type != 'p') return Next::kClose;
  pg::BodyReader cleartext(body);
  (void)cleartext.CString();
  pg::BodyReader sasl(body);
  std::string_view mechanism = sasl.CString();
  const int32_t length = sasl.Int32();
  if (sasl.ok() && mechanism == "SCRAM-SHA-256" && length >= 0 &&
      static_cast<size_t>(length) == sasl.remaining()) {
    PGF_FUZZ_CHECK(sasl.Rest().size() == static_cast<size_t>(length));
  }
  return Next::kDone;  // Authenticated (or not: the property under test is the framing).
}

// Feeds `chunks` and runs the framing after each, as the event loop does on each read.
std::vector<Frame> Stream(const std::vector<std::string_view>& chunks, bool client_side) {
  evbuffer* in = evbuffer_new();
  PGF_FUZZ_CHECK(in != nullptr);
  enum class Phase {
    kStartup,
    kAuth,
    kForward,
    kClosed
  } phase = client_side ? Phase::kStartup : Phase::kAuth;
  Forwarder forwarder;
  std::vector<Frame> login_frames;
  uint64_t fed = 0;
  for (std::string_view chunk : chunks) {
    if (phase == Phase::kClosed) break;
    evbuffer_add(in, chunk.data(), chunk.size());
    fed += chunk.size();
    if (phase == Phase::kStartup) {
      switch (ClientStartup(in)) {
        case StartupResult::kNeedMore:
          continue;
        case StartupResult::kClosed:
          phase = Phase::kClosed;
          continue;
        case StartupResult::kStarted:
          phase = Phase::kAuth;
          break;
      }
    }
    if (phase == Phase::kAuth) {
      const Next next = ReadWholeMessages(
          in, client_side ? kMaxAuthMessage : kMaxLoginMessage,
          [&](char type, std::string_view body) {
            login_frames.push_back({type, static_cast<uint32_t>(body.size() + 4)});
            return client_side ? HandlePasswordMessage(type, body) : HandleLoginMessage(type, body);
          });
      if (next == Next::kClose) phase = Phase::kClosed;
      if (next != Next::kDone) continue;
      phase = Phase::kForward;
    }
    if (phase == Phase::kForward) {
      const bool open =
          client_side ? forwarder.Run(in, kMaxPacket, "") : forwarder.Run(in, 0x7fffffff, "ZS");
      if (!open) phase = Phase::kClosed;
    }
  }
  PGF_FUZZ_CHECK(forwarder.forwarded <= fed);
  evbuffer_free(in);
  std::vector<Frame> frames = std::move(login_frames);
  frames.push_back({'-', 0});
  frames.insert(frames.end(), forwarder.frames.begin(), forwarder.frames.end());
  return frames;
}

std::vector<std::string> SplitNul(std::string_view data) {
  std::vector<std::string> parts;
  while (true) {
    const size_t end = data.find('\0');
    parts.emplace_back(data.substr(0, end));
    if (end == std::string_view::npos) return parts;
    data.remove_prefix(end + 1);
  }
}

void RoundTrip(std::string_view data) {
  std::vector<std::string> strings = SplitNul(data);

  // StartupMessage -> ParseStartupPacket: the same parameters, unless a name is empty (an empty
  // name ends the list, so what follows is refused as trailing bytes).
  std::vector<std::pair<std::string, std::string>> params;
  bool empty_name = false;
  for (size_t i = 0; i + 1 < strings.size(); i += 2) {
    params.emplace_back(strings[i], strings[i + 1]);
    empty_name = empty_name || strings[i].empty();
  }
  const std::string startup = pg::StartupMessage(params);
  absl::StatusOr<pg::StartupPacket> parsed = pg::ParseStartupPacket(startup);
  PGF_FUZZ_CHECK(parsed.ok() == !empty_name);
  if (parsed.ok()) {
    PGF_FUZZ_CHECK(parsed->code == pg::kProtocolV3);
    PGF_FUZZ_CHECK(parsed->params == params);
  }

  // ErrorResponse -> ParseErrorFields.
  const std::string severity = strings[0];
  const std::string sqlstate = strings.size() > 1 ? strings[1] : "";
  const std::string message = strings.size() > 2 ? strings[2] : "";
  const std::string error = pg::ErrorResponse(severity, sqlstate, message);
  std::map<char, std::string> fields = pg::ParseErrorFields(std::string_view(error).substr(5));
  PGF_FUZZ_CHECK(fields['S'] == severity && fields['V'] == severity);
  PGF_FUZZ_CHECK(fields['C'] == sqlstate && fields['M'] == message);

  // Every built message frames as one message of its own length.
  const std::vector<std::string> messages = {
      error,
      pg::NoticeResponse(message),
      pg::ParameterStatus(severity, sqlstate),
      pg::Query(message),
      pg::PasswordMessage(message),
      pg::SaslInitialResponse(severity, message),
      pg::SaslResponse(data),
      pg::AuthenticationRequest(pg::kAuthSaslContinue, data),
      pg::RowDescription(std::vector<std::string>(
          strings.begin(), strings.begin() + std::min<size_t>(strings.size(), 100))),
      pg::DataRow(std::vector<std::string>(
          strings.begin(), strings.begin() + std::min<size_t>(strings.size(), 100))),
      pg::CommandComplete(message),
  };
  evbuffer* buf = evbuffer_new();
  for (const std::string& built : messages) evbuffer_add(buf, built.data(), built.size());
  size_t offset = 0;
  for (const std::string& built : messages) {
    pg::MessageHeader header;
    PGF_FUZZ_CHECK(PeekFrameHeader(buf, offset, kMaxPacket, &header) == pg::HeaderResult::kOk);
    PGF_FUZZ_CHECK(header.type == built[0] && header.total() == built.size());
    offset += header.total();
  }
  evbuffer_free(buf);

  // DataRow's values read back with BodyReader.
  if (strings.size() <= 100) {
    const std::string row = pg::DataRow(strings);
    pg::BodyReader reader(std::string_view(row).substr(5));
    PGF_FUZZ_CHECK(static_cast<size_t>(reader.Int16()) == strings.size());
    for (const std::string& value : strings) {
      const int32_t length = reader.Int32();
      PGF_FUZZ_CHECK(reader.ok() && static_cast<size_t>(length) == value.size());
      PGF_FUZZ_CHECK(reader.Bytes(value.size()) == value);
    }
    PGF_FUZZ_CHECK(reader.ok() && reader.remaining() == 0);
  }

  // QuoteLiteral: quoted, and undoing '' (and \\ in the E'' form, used when the value has a
  // backslash) gives the original back.
  const std::string quoted = pg::QuoteLiteral(data);
  const bool escape_form = data.find('\\') != std::string_view::npos;
  const size_t open = escape_form ? 1 : 0;
  PGF_FUZZ_CHECK(quoted.size() >= open + 2 && quoted[open] == '\'' && quoted.back() == '\'');
  PGF_FUZZ_CHECK(!escape_form || quoted.front() == 'E');
  std::string unquoted;
  for (size_t i = open + 1; i + 1 < quoted.size(); ++i) {
    unquoted.push_back(quoted[i]);
    if (quoted[i] == '\'' || (escape_form && quoted[i] == '\\')) {
      PGF_FUZZ_CHECK(quoted[i + 1] == quoted[i]);
      ++i;
    }
  }
  PGF_FUZZ_CHECK(unquoted == data);
}

void RawParsers(std::string_view data) {
  absl::StatusOr<pg::StartupPacket> startup = pg::ParseStartupPacket(data);
  if (startup.ok()) {
    PGF_FUZZ_CHECK(data.size() >= 8);
  }
  evbuffer* buf = evbuffer_new();
  evbuffer_add(buf, data.data(), data.size());
  for (size_t offset = 0; offset <= data.size() && offset < 64; ++offset) {
    pg::MessageHeader header;
    if (PeekFrameHeader(buf, offset, 1 << 16, &header) == pg::HeaderResult::kOk) {
      PGF_FUZZ_CHECK(offset + pg::kHeaderSize <= data.size());
      PGF_FUZZ_CHECK(header.type == data[offset]);
    }
  }
  evbuffer_free(buf);
  // The same bytes framed in place: FrameReader agrees with PeekHeader and never reads past.
  pg::FrameReader frames(data, 1 << 16);
  pg::Frame frame;
  size_t at = 0;
  while (frames.Next(&frame) == pg::HeaderResult::kOk) {
    PGF_FUZZ_CHECK(frame.header.type == data[at]);
    at += frame.header.total();
    PGF_FUZZ_CHECK(frames.consumed() == at && at <= data.size());
    PGF_FUZZ_CHECK(frame.body.data() + frame.body.size() <= data.data() + data.size());
  }
  pg::BodyReader reader(data);
  while (reader.ok() && reader.remaining() > 0) {
    switch (reader.Byte() % 5) {
      case 0:
        reader.Int32();
        break;
      case 1:
        reader.Int16();
        break;
      case 2:
        reader.CString();
        break;
      case 3:
        reader.Bytes(reader.Byte());
        break;
      default:
        reader.Byte();
        break;
    }
  }
  if (!reader.ok()) PGF_FUZZ_CHECK(reader.Rest().empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pgfleet::fuzz::RecordReader input(data, size);
  const uint8_t mode = input.Byte() % 4;
  const uint8_t seed = input.Byte();
  const std::string_view stream = input.Rest();
  switch (mode) {
    case 0:
    case 1: {
      const bool client_side = mode == 0;
      // However the bytes are split, the agent must see the same messages.
      const std::vector<Frame> whole = Stream({stream}, client_side);
      PGF_FUZZ_CHECK(Stream(Chunks(stream, seed), client_side) == whole);
      if (stream.size() <= 4096) {
        std::vector<std::string_view> bytes;
        for (size_t i = 0; i < stream.size(); ++i) bytes.push_back(stream.substr(i, 1));
        PGF_FUZZ_CHECK(Stream(bytes, client_side) == whole);
      }
      break;
    }
    case 2:
      RoundTrip(stream);
      break;
    case 3:
      RawParsers(stream);
      break;
  }
  return 0;
}
