#include "tests/testutil/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace pgfleet::testutil {

absl::StatusOr<HttpResponse> HttpGet(int port, const std::string& path,
                                     const std::vector<std::string>& headers) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("connect 127.0.0.1:", port, ": ", std::strerror(err)));
  }
  std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n");
  for (const std::string& header : headers) absl::StrAppend(&request, header, "\r\n");
  absl::StrAppend(&request, "Connection: close\r\n\r\n");
  size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      close(fd);
      return absl::UnavailableError("send failed");
    }
    sent += static_cast<size_t>(n);
  }
  HttpResponse response;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      close(fd);
      return absl::DeadlineExceededError(absl::StrCat("GET ", path, ": no end of response"));
    }
    pollfd pfd = {fd, POLLIN, 0};
    poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(left) + 1));
    char buf[16384];
    const ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) continue;
      break;  // Reset after the response: keep what arrived.
    }
    response.raw.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t header_end = response.raw.find("\r\n\r\n");
  response.status_line = response.raw.substr(0, response.raw.find("\r\n"));
  const std::vector<std::string> status_words = absl::StrSplit(response.status_line, ' ');
  if (header_end == std::string::npos || status_words.size() < 2 ||
      !absl::SimpleAtoi(status_words[1], &response.status)) {
    return absl::DataLossError(absl::StrCat("GET ", path, ": malformed response: ", response.raw));
  }
  response.body = response.raw.substr(header_end + 4);
  return response;
}

}  // namespace pgfleet::testutil
