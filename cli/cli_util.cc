#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "cli/cli.h"
#include "common/proto_json.h"
#include "google/protobuf/util/json_util.h"

namespace pgfleet::cli {
namespace {

// The largest reply fleetctl accepts: `agents list` of a 100,000-agent fleet with metrics.
constexpr int kMaxReplyBytes = 256 << 20;

std::string TokenFromFile() {
  const char* home = getenv("HOME");
  if (home == nullptr) return "";
  std::ifstream in(absl::StrCat(home, "/.config/pgfleet/token"));
  std::string token;
  in >> token;
  return token;
}

}  // namespace

Context::Context(Flags flags) : flags_(std::move(flags)) {
  // Token: flag, then environment, then ~/.config/pgfleet/token.
  token_ = flags_.Get("token");
  if (token_.empty() && getenv("PGFLEET_TOKEN") != nullptr) token_ = getenv("PGFLEET_TOKEN");
  if (token_.empty()) token_ = TokenFromFile();
  // A header value may not hold whitespace or control characters (gRPC aborts the process on
  // one): a token pasted with a line break is dropped with the reason, and the call then
  // fails as unauthenticated.
  token_ = std::string(absl::StripAsciiWhitespace(token_));
  for (char c : token_) {
    if (c < 0x21 || c > 0x7e) {
      fprintf(stderr,
              "fleetctl: ignoring the token: it holds a space or a control character "
              "(--token, PGFLEET_TOKEN or ~/.config/pgfleet/token)\n");
      token_.clear();
      break;
    }
  }
}

pgfleet::v1::FleetService::Stub& Context::stub() {
  if (stub_ == nullptr) {
    std::string address = flags_.Get("controller");
    if (address.empty() && getenv("PGFLEET_CONTROLLER") != nullptr) {
      address = getenv("PGFLEET_CONTROLLER");
    }
    if (address.empty()) address = "127.0.0.1:7070";
    std::vector<std::string> addresses;
    for (absl::string_view one : absl::StrSplit(address, ',')) {
      one = absl::StripAsciiWhitespace(one);
      if (!one.empty()) addresses.emplace_back(one);
    }
    if (addresses.empty()) addresses.push_back(address);
    // gRPC dials an empty port as 443 and one past 65535 as another port: say so instead of
    // "is pgfleet-controller running at ...?". Its other target forms (unix:, dns:///) pass.
    for (const std::string& one : addresses) {
      if (absl::StrContains(one, "/") || absl::StartsWith(one, "unix:")) continue;
      const size_t colon = one.rfind(':');
      int port = 0;
      if (colon == std::string::npos || !absl::SimpleAtoi(one.substr(colon + 1), &port) ||
          port < 1 || port > 65535 ||
          one.substr(colon + 1).find_first_not_of("0123456789") != std::string::npos) {
        fprintf(stderr,
                "fleetctl: --controller '%s': expected HOST:PORT with a port from 1 to 65535, "
                "like 127.0.0.1:7070\n",
                one.c_str());
        exit(kExitUsage);
      }
    }
    std::shared_ptr<grpc::ChannelCredentials> credentials;
    if (flags_.Has("tls-ca")) {
      // Unread, gRPC would fall back to its default roots and fail every call with a
      // handshake error that does not name the file.
      absl::StatusOr<std::string> pem = ReadInputFile(flags_.Get("tls-ca"));
      if (!pem.ok()) {
        fprintf(stderr, "fleetctl: --tls-ca %s\n", std::string(pem.status().message()).c_str());
        exit(kExitUsage);
      }
      grpc::SslCredentialsOptions ssl;
      ssl.pem_root_certs = *pem;
      credentials = grpc::SslCredentials(ssl);
    } else {
      credentials = grpc::InsecureChannelCredentials();
    }
    // Replies grow with the fleet: `agents list` carries each agent's newest metrics, about
    // 500 bytes an agent, so gRPC's default 4 MiB receive limit failed at ~8,000 agents.
    grpc::ChannelArguments arguments;
    arguments.SetMaxReceiveMessageSize(kMaxReplyBytes);
    auto connect = [&](const std::string& target) {
      return grpc::CreateCustomChannel(target, credentials, arguments);
    };
    // Several controllers: the first that accepts a connection serves this command (each is
    // given a few seconds); if none does, the first is used and the call says why it failed.
    channel_ = connect(addresses[0]);
    if (addresses.size() > 1) {
      for (const std::string& candidate : addresses) {
        std::shared_ptr<grpc::Channel> channel = connect(candidate);
        if (channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(3))) {
          channel_ = std::move(channel);
          break;
        }
        fprintf(stderr, "fleetctl: controller %s does not answer\n", candidate.c_str());
      }
    }
    stub_ = pgfleet::v1::FleetService::NewStub(channel_);
    rollout_stub_ = pgfleet::v1::RolloutService::NewStub(channel_);
    maintenance_stub_ = pgfleet::v1::MaintenanceService::NewStub(channel_);
    token_stub_ = pgfleet::v1::TokenService::NewStub(channel_);
    secrets_stub_ = pgfleet::v1::SecretsService::NewStub(channel_);
  }
  return *stub_;
}

pgfleet::v1::MaintenanceService::Stub& Context::maintenance() {
  stub();
  return *maintenance_stub_;
}

pgfleet::v1::TokenService::Stub& Context::tokens() {
  stub();
  return *token_stub_;
}

pgfleet::v1::SecretsService::Stub& Context::secrets() {
  stub();
  return *secrets_stub_;
}

pgfleet::v1::RolloutService::Stub& Context::rollouts() {
  stub();
  return *rollout_stub_;
}

std::unique_ptr<grpc::ClientContext> Context::NewCall(int timeout_seconds) const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!token_.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token_));
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_seconds));
  return context;
}

int Context::Fail(const grpc::Status& status) const {
  fprintf(stderr, "fleetctl: %s\n", status.error_message().c_str());
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      // Several controllers: one that answered but could not reach a leader says so, and when
      // to retry; the controller is running.
      if (absl::StrContains(status.error_message(), "leader")) return kExitUnreachable;
      {
        const std::string address =
            flags_.Get("controller", getenv("PGFLEET_CONTROLLER") ? getenv("PGFLEET_CONTROLLER")
                                                                  : "127.0.0.1:7070");
        // gRPC's words when a TCP connection was made but what answered is not a gRPC server:
        // an HTTP/1 reply (the dashboard's port) reads as one of these, depending on timing.
        const std::string& text = status.error_message();
        if (absl::StrContains(text, "http1.x server") ||
            absl::StrContains(text, "Failed parsing HTTP/2") ||
            absl::StrContains(text, "last error: OK")) {
          fprintf(stderr,
                  "fleetctl: something answers at %s but it is not a pgfleet-controller's gRPC "
                  "port (the dashboard's HTTP port?); give the controller's --listen address "
                  "(--controller, PGFLEET_CONTROLLER)\n",
                  address.c_str());
        } else if (absl::StrContains(text, "SETTINGS frame") ||
                   absl::StrContains(text, "Socket closed") ||
                   absl::StrContains(text, "Connection reset")) {
          // Also what a controller that is stopping does: a question, not a verdict.
          fprintf(stderr,
                  "fleetctl: %s accepted the connection but did not answer as gRPC: is it a "
                  "pgfleet-controller's --listen address (not PostgreSQL's or another "
                  "service's port)? A controller with TLS closes plaintext connections: give "
                  "--tls-ca (--controller, PGFLEET_CONTROLLER)\n",
                  address.c_str());
        } else {
          fprintf(stderr,
                  "fleetctl: is pgfleet-controller running at %s? (--controller, "
                  "PGFLEET_CONTROLLER)\n",
                  address.c_str());
        }
      }
      return kExitUnreachable;
    case grpc::StatusCode::UNAUTHENTICATED:
      fprintf(stderr,
              "fleetctl: give a token with --token, PGFLEET_TOKEN or "
              "~/.config/pgfleet/token\n");
      return kExitAuth;
    case grpc::StatusCode::PERMISSION_DENIED:
      return kExitAuth;
    case grpc::StatusCode::INVALID_ARGUMENT:
      return kExitUsage;
    default:
      return kExitError;
  }
}

void Context::PrintJson(const google::protobuf::Message& message) const {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  // The HTTP API's names (lowerCamelCase, as the dashboard reads them): one JSON shape for
  // scripts whichever wire they use.
  json = MessageToJson(message, options).value_or("");
  printf("%s", json.c_str());
  if (json.empty() || json.back() != '\n') printf("\n");
}

void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths(header.size());
  for (size_t i = 0; i < header.size(); ++i) widths[i] = header[i].size();
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  auto print_row = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    printf("%s\n", line.c_str());
  };
  print_row(header);
  for (const auto& row : rows) print_row(row);
}

std::string FormatTime(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}

absl::StatusOr<std::string> ReadInputFile(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat(path, ": ", strerror(errno)));
  std::string text;
  char chunk[64 << 10];
  absl::Status status;
  while (true) {
    const ssize_t got = read(fd, chunk, sizeof(chunk));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      status = absl::FailedPreconditionError(absl::StrCat(path, ": ", strerror(errno)));
      break;
    }
    if (got == 0) break;
    text.append(chunk, static_cast<size_t>(got));
    if (text.size() > kMaxRequestBytes) {
      status =
          absl::ResourceExhaustedError(absl::StrCat(path, ": larger than ", kMaxRequestBytes >> 20,
                                                    " MiB, the most the controller takes "
                                                    "in one call"));
      break;
    }
  }
  close(fd);
  if (!status.ok()) return status;
  return text;
}

absl::Status CheckUtf8Text(const std::string& path, const std::string& text) {
  size_t line = 1;
  for (size_t i = 0; i < text.size();) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    if (lead == '\n') ++line;
    // Sequence length, and the smallest code point it may encode (no overlong forms).
    size_t length = 1;
    uint32_t minimum = 0, code = lead;
    if (lead >= 0xf0 && lead <= 0xf4) {
      length = 4, minimum = 0x10000, code = lead & 0x07;
    } else if (lead >= 0xe0 && lead <= 0xef) {
      length = 3, minimum = 0x800, code = lead & 0x0f;
    } else if (lead >= 0xc2 && lead <= 0xdf) {
      length = 2, minimum = 0x80, code = lead & 0x1f;
    } else if (lead >= 0x80) {
      length = 0;
    }
    bool valid = length > 0 && i + length <= text.size();
    for (size_t k = 1; valid && k < length; ++k) {
      const unsigned char next = static_cast<unsigned char>(text[i + k]);
      valid = (next & 0xc0) == 0x80;
      code = (code << 6) | (next & 0x3f);
    }
    valid = valid && code >= minimum && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff);
    if (!valid) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: not UTF-8 text (byte 0x%02x on line %d); is it the right file?", path, lead, line));
    }
    i += length;
  }
  return absl::OkStatus();
}

std::string UnifiedDiff(const std::string& a, const std::string& b, const std::string& a_name,
                        const std::string& b_name) {
  std::vector<std::string> x = absl::StrSplit(a, '\n');
  std::vector<std::string> y = absl::StrSplit(b, '\n');
  // Longest common subsequence; configs are small, so the O(n*m) table is fine.
  const size_t n = x.size(), m = y.size();
  std::vector<std::vector<int>> lcs(n + 1, std::vector<int>(m + 1, 0));
  for (size_t i = n; i-- > 0;) {
    for (size_t j = m; j-- > 0;) {
      lcs[i][j] = x[i] == y[j] ? lcs[i + 1][j + 1] + 1 : std::max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  struct Line {
    char op;
    std::string text;
  };
  std::vector<Line> script;
  size_t i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] == y[j]) {
      script.push_back({' ', x[i++]});
      j++;
    } else if (i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1])) {
      script.push_back({'-', x[i++]});  // Removals before additions, as diff -u prints them.
    } else {
      script.push_back({'+', y[j++]});
    }
  }
  std::string out = absl::StrCat("--- ", a_name, "\n+++ ", b_name, "\n");
  const size_t kContext = 3;
  size_t k = 0;
  while (k < script.size()) {
    if (script[k].op == ' ') {
      ++k;
      continue;
    }
    size_t start = k >= kContext ? k - kContext : 0;
    size_t end = k;
    // Extend the hunk while changes are within 2*context lines of each other.
    while (end < script.size()) {
      size_t next = end;
      while (next < script.size() && script[next].op == ' ') ++next;
      if (next == script.size() || next - end > 2 * kContext) break;
      end = next + 1;
    }
    end = std::min(script.size(), end + kContext);
    size_t a_line = 1, b_line = 1;
    for (size_t t = 0; t < start; ++t) {
      if (script[t].op != '+') ++a_line;
      if (script[t].op != '-') ++b_line;
    }
    size_t a_count = 0, b_count = 0;
    for (size_t t = start; t < end; ++t) {
      if (script[t].op != '+') ++a_count;
      if (script[t].op != '-') ++b_count;
    }
    absl::StrAppend(&out, "@@ -", a_line, ",", a_count, " +", b_line, ",", b_count, " @@\n");
    for (size_t t = start; t < end; ++t) {
      absl::StrAppend(&out, std::string(1, script[t].op), script[t].text, "\n");
    }
    k = end;
  }
  return out;
}

}  // namespace pgfleet::cli
