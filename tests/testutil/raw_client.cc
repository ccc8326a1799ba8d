#include "tests/testutil/raw_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "tests/testutil/md5.h"

namespace pgfleet::testutil {
namespace {

constexpr size_t kMaxBackendMessage = 64 << 20;

absl::Status ErrnoStatus(const std::string& what, int err) {
  if (err == ECONNRESET || err == EPIPE) {
    return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(err)));
  }
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

std::string CString(std::string_view s) {
  std::string out(s);
  out.push_back('\0');
  return out;
}

}  // namespace

std::string ErrorFields::ToString() const {
  return absl::StrCat(severity, " ", code, ": ", message);
}

absl::StatusOr<ErrorFields> ParseErrorResponse(std::string_view body) {
  ErrorFields fields;
  size_t pos = 0;
  while (pos < body.size()) {
    const char type = body[pos++];
    if (type == '\0') break;
    const size_t end = body.find('\0', pos);
    if (end == std::string_view::npos) {
      return absl::InvalidArgumentError("unterminated field in ErrorResponse");
    }
    fields.all[type] = std::string(body.substr(pos, end - pos));
    pos = end + 1;
  }
  if (fields.all.count('V') != 0) {
    fields.severity = fields.all['V'];
  } else if (fields.all.count('S') != 0) {
    fields.severity = fields.all['S'];
  }
  if (fields.all.count('C') != 0) fields.code = fields.all['C'];
  if (fields.all.count('M') != 0) fields.message = fields.all['M'];
  if (fields.code.empty() && fields.message.empty()) {
    return absl::InvalidArgumentError("ErrorResponse without code or message");
  }
  return fields;
}

std::vector<BackendMessage> SplitMessages(std::string_view bytes) {
  std::vector<BackendMessage> messages;
  size_t pos = 0;
  while (bytes.size() - pos >= 5) {
    const uint32_t len = ReadBigEndian32(bytes.substr(pos + 1));
    if (len < 4 || bytes.size() - pos - 1 < len) break;
    messages.push_back({bytes[pos], std::string(bytes.substr(pos + 5, len - 4))});
    pos += 1 + len;
  }
  return messages;
}

std::optional<ErrorFields> FirstError(std::string_view bytes) {
  for (const BackendMessage& message : SplitMessages(bytes)) {
    if (message.type != 'E') continue;
    absl::StatusOr<ErrorFields> fields = ParseErrorResponse(message.body);
    if (fields.ok()) return *fields;
  }
  return std::nullopt;
}

std::string BigEndian32(uint32_t value) {
  std::string out(4, '\0');
  out[0] = static_cast<char>((value >> 24) & 0xff);
  out[1] = static_cast<char>((value >> 16) & 0xff);
  out[2] = static_cast<char>((value >> 8) & 0xff);
  out[3] = static_cast<char>(value & 0xff);
  return out;
}

uint32_t ReadBigEndian32(std::string_view bytes) {
  if (bytes.size() < 4) return 0;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  return (static_cast<uint32_t>(p[0]) << 24) | (static_cast<uint32_t>(p[1]) << 16) |
         (static_cast<uint32_t>(p[2]) << 8) | static_cast<uint32_t>(p[3]);
}

std::string StartupPacket(const std::vector<std::pair<std::string, std::string>>& params,
                          int32_t protocol) {
  std::string body = BigEndian32(static_cast<uint32_t>(protocol));
  for (const auto& [key, value] : params) absl::StrAppend(&body, CString(key), CString(value));
  body.push_back('\0');
  return absl::StrCat(BigEndian32(static_cast<uint32_t>(body.size() + 4)), body);
}

std::string FrontendMessage(char type, std::string_view body) {
  return std::string(1, type) + BigEndian32(static_cast<uint32_t>(body.size() + 4)) +
         std::string(body);
}

std::string QueryMessage(std::string_view sql) { return FrontendMessage('Q', CString(sql)); }

absl::StatusOr<std::unique_ptr<RawClient>> RawClient::Connect(int port, absl::Duration timeout) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket", errno);
  std::unique_ptr<RawClient> client(new RawClient(fd));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  struct timeval tv;
  tv.tv_sec = static_cast<time_t>(absl::ToInt64Seconds(timeout));
  tv.tv_usec = 0;
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return ErrnoStatus(absl::StrCat("connect 127.0.0.1:", port), errno);
  }
  return client;
}

RawClient::~RawClient() { Close(); }

void RawClient::Close() {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
}

void RawClient::CloseWithReset() {
  if (fd_ < 0) return;
  struct linger lin = {1, 0};
  setsockopt(fd_, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin));
  Close();
}

absl::Status RawClient::Send(std::string_view bytes) {
  if (fd_ < 0) return absl::FailedPreconditionError("socket closed");
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("send", errno);
    }
    sent += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status RawClient::ShutdownWrite() {
  if (fd_ < 0) return absl::FailedPreconditionError("socket closed");
  if (shutdown(fd_, SHUT_WR) != 0) return ErrnoStatus("shutdown", errno);
  return absl::OkStatus();
}

absl::Status RawClient::Fill(absl::Time deadline) {
  if (fd_ < 0) return absl::FailedPreconditionError("socket closed");
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError("timed out waiting for data from the server");
    }
    struct pollfd pfd = {fd_, POLLIN, 0};
    const int ms = static_cast<int>(absl::ToInt64Milliseconds(left)) + 1;
    const int ready = poll(&pfd, 1, ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("poll", errno);
    }
    if (ready == 0) continue;
    char buf[65536];
    const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    if (n > 0) {
      buffer_.append(buf, static_cast<size_t>(n));
      return absl::OkStatus();
    }
    if (n == 0) return absl::UnavailableError("connection closed by the server (EOF)");
    if (errno == EINTR || errno == EAGAIN) continue;
    return ErrnoStatus("recv", errno);
  }
}

absl::StatusOr<std::string> RawClient::ReadExactly(size_t n, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (buffer_.size() < n) {
    if (absl::Status s = Fill(deadline); !s.ok()) return s;
  }
  std::string out = buffer_.substr(0, n);
  buffer_.erase(0, n);
  return out;
}

absl::StatusOr<BackendMessage> RawClient::ReadMessage(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (buffer_.size() < 5) {
    if (absl::Status s = Fill(deadline); !s.ok()) return s;
  }
  const uint32_t len = ReadBigEndian32(std::string_view(buffer_).substr(1));
  if (len < 4 || len > kMaxBackendMessage) {
    return absl::DataLossError(absl::StrCat("bad backend message length ", len, " for type '",
                                            std::string(1, buffer_[0]), "'"));
  }
  while (buffer_.size() < 1 + static_cast<size_t>(len)) {
    if (absl::Status s = Fill(deadline); !s.ok()) return s;
  }
  BackendMessage message{buffer_[0], buffer_.substr(5, len - 4)};
  buffer_.erase(0, 1 + len);
  return message;
}

absl::StatusOr<std::string> RawClient::ReadUntilClose(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    absl::Status s = Fill(deadline);
    if (absl::IsUnavailable(s)) {
      std::string out = std::move(buffer_);
      buffer_.clear();
      return out;
    }
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat(s.message(), " (connection still open; ",
                                                 buffer_.size(), " bytes received)"));
    }
  }
}

absl::StatusOr<LoginResult> RawClient::Login(const std::string& user, const std::string& database,
                                             const std::string& password, absl::Duration timeout,
                                             bool scram_garbage_proof) {
  const absl::Time deadline = absl::Now() + timeout;
  LoginResult result;
  if (absl::Status s = Send(StartupPacket({{"user", user}, {"database", database}})); !s.ok()) {
    return s;
  }
  while (true) {
    absl::StatusOr<BackendMessage> message = ReadMessage(deadline - absl::Now());
    if (!message.ok()) return message.status();
    const std::string& body = message->body;
    switch (message->type) {
      case 'R': {
        if (body.size() < 4) return absl::DataLossError("short Authentication message");
        const auto code = static_cast<int32_t>(ReadBigEndian32(body));
        result.auth_requests.push_back(code);
        if (code == 0) break;
        if (code == 3) {
          if (absl::Status s = Send(FrontendMessage('p', CString(password))); !s.ok()) return s;
        } else if (code == 5) {
          if (body.size() < 8) return absl::DataLossError("short AuthenticationMD5Password");
          const std::string response = PgMd5Response(password, user, body.substr(4, 4));
          if (absl::Status s = Send(FrontendMessage('p', CString(response))); !s.ok()) return s;
        } else if (code == 10) {
          for (absl::string_view mech : absl::StrSplit(body.substr(4), '\0', absl::SkipEmpty())) {
            result.sasl_mechanisms.emplace_back(mech);
          }
          if (!scram_garbage_proof) {
            return absl::UnimplementedError("RawClient cannot complete a SASL login");
          }
          const std::string client_first = "n,,n=,r=pgfleetTestClientNonce0123";
          const std::string initial =
              absl::StrCat(CString("SCRAM-SHA-256"),
                           BigEndian32(static_cast<uint32_t>(client_first.size())), client_first);
          if (absl::Status s = Send(FrontendMessage('p', initial)); !s.ok()) return s;
        } else if (code == 11) {
          // server-first-message: r=<nonce>,s=<salt>,i=<iterations>. Answer with a proof of
          // the right length and the wrong value.
          std::string nonce;
          for (absl::string_view attr : absl::StrSplit(body.substr(4), ',')) {
            if (absl::StartsWith(attr, "r=")) nonce = std::string(attr.substr(2));
          }
          const std::string client_final =
              absl::StrCat("c=biws,r=", nonce, ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
          if (absl::Status s = Send(FrontendMessage('p', client_final)); !s.ok()) return s;
        } else if (code == 12) {
          // SASLFinal: wait for AuthenticationOk.
        } else {
          return absl::UnimplementedError(
              absl::StrCat("RawClient cannot answer authentication request ", code));
        }
        break;
      }
      case 'E': {
        absl::StatusOr<ErrorFields> fields = ParseErrorResponse(body);
        if (!fields.ok()) return fields.status();
        result.error = *fields;
        return result;
      }
      case 'S': {
        std::vector<std::string> parts = absl::StrSplit(body, '\0');
        if (parts.size() >= 2) result.parameters[parts[0]] = parts[1];
        break;
      }
      case 'K':
        if (body.size() >= 8) {
          result.got_backend_key = true;
          result.backend_pid = static_cast<int32_t>(ReadBigEndian32(body));
          result.backend_secret = static_cast<int32_t>(ReadBigEndian32(body.substr(4)));
        }
        break;
      case 'Z':
        result.ok = true;
        return result;
      default:
        break;  // NoticeResponse, NegotiateProtocolVersion, ...
    }
  }
}

absl::StatusOr<std::vector<BackendMessage>> RawClient::SimpleQuery(const std::string& sql,
                                                                   absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  if (absl::Status s = Send(QueryMessage(sql)); !s.ok()) return s;
  std::vector<BackendMessage> messages;
  while (true) {
    absl::StatusOr<BackendMessage> message = ReadMessage(deadline - absl::Now());
    if (!message.ok()) return message.status();
    messages.push_back(*message);
    if (message->type == 'Z') return messages;
  }
}

}  // namespace pgfleet::testutil
