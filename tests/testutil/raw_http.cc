#include "tests/testutil/raw_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "tests/testutil/fixtures.h"

namespace pgfleet::testutil {

absl::StatusOr<std::unique_ptr<RawSocket>> RawSocket::Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  auto result = std::unique_ptr<RawSocket>(new RawSocket(fd));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    return absl::UnavailableError(absl::StrCat("connect: ", std::strerror(errno)));
  }
  return result;
}

RawSocket::~RawSocket() { close(fd_); }

size_t RawSocket::SendAll(const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  return sent;
}

RawReply RawSocket::ReadReply(absl::Duration timeout) {
  RawReply reply;
  const absl::Time deadline = absl::Now() + timeout;
  char buffer[16384];
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      reply.timed_out = true;
      break;
    }
    pollfd pfd{fd_, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
    const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
    if (n <= 0) break;  // EOF or reset: keep what arrived.
    reply.raw.append(buffer, static_cast<size_t>(n));
  }
  // "HTTP/1.1 413 Payload Too Large\r\n..."
  if (absl::StartsWith(reply.raw, "HTTP/1.") && reply.raw.size() > 12) {
    (void)absl::SimpleAtoi(reply.raw.substr(9, 3), &reply.status);
  }
  if (size_t blank = reply.raw.find("\r\n\r\n"); blank != std::string::npos) {
    reply.head = reply.raw.substr(0, blank);
    reply.body = reply.raw.substr(blank + 4);
  }
  return reply;
}

std::string RequestHead(const std::string& verb, const std::string& target,
                        const std::string& token, size_t content_length,
                        const std::string& extra_headers) {
  std::string head =
      absl::StrCat(verb, " ", target, " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
  if (!token.empty()) absl::StrAppend(&head, "Authorization: Bearer ", token, "\r\n");
  if (verb == "POST") {
    absl::StrAppend(&head, "Content-Type: application/json\r\nContent-Length: ", content_length,
                    "\r\n");
  }
  absl::StrAppend(&head, extra_headers, "\r\n");
  return head;
}

absl::StatusOr<std::unique_ptr<SharedHttpController>> SharedHttpController::Start(
    const std::string& name, const std::string& admin_token,
    const std::vector<std::string>& extra_args) {
  std::unique_ptr<SharedHttpController> shared(new SharedHttpController());
  PGF_RETURN_IF_ERROR(shared->dir_.Create(name));
  const std::string http_port_file = shared->dir_.path() + "/http-port";
  ControllerOptions options;
  options.bootstrap_token = admin_token;
  if (const char* binary = std::getenv("PGFLEET_TEST_CONTROLLER_BINARY"); binary != nullptr) {
    options.binary = binary;
  }
  AddHttpListener(options, http_port_file);
  for (const std::string& arg : extra_args) options.extra_args.push_back(arg);
  PGF_ASSIGN_OR_RETURN(shared->controller_, ControllerProcess::Start(options));
  PGF_ASSIGN_OR_RETURN(shared->http_port_, AwaitHttpPort(http_port_file));
  return shared;
}

RawReply SharedHttpController::Call(const std::string& request, absl::Duration timeout) const {
  absl::StatusOr<std::unique_ptr<RawSocket>> socket = RawSocket::Connect(http_port_);
  if (!socket.ok()) {
    RawReply failed;
    failed.raw = absl::StrCat("[test harness] ", socket.status().ToString());
    return failed;
  }
  (*socket)->SendAll(request);
  return (*socket)->ReadReply(timeout);
}

}  // namespace pgfleet::testutil
