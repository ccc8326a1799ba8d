// HTTP over a raw socket for tests where the client must be able to misbehave (send half a
// head, announce a body and never send it, hold a connection open): the controller's HTTP
// limits are tested this way. For a plain GET, tests/testutil/http.h is simpler.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pgfleet::testutil {

struct RawReply {
  int status = 0;    // 0: the connection closed without a status line.
  std::string raw;   // Everything received.
  std::string head;  // Status line and headers, before the blank line.
  std::string body;  // After the blank line.
  bool timed_out = false;
};

// One TCP connection to 127.0.0.1:port.
class RawSocket {
 public:
  static absl::StatusOr<std::unique_ptr<RawSocket>> Connect(int port);
  ~RawSocket();
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;

  // Sends as much of `bytes` as the peer takes; stops quietly when it hangs up.
  size_t SendAll(const std::string& bytes);
  // Reads until the peer closes or resets, or `timeout` passes; parses the status line.
  RawReply ReadReply(absl::Duration timeout);

 private:
  explicit RawSocket(int fd) : fd_(fd) {}
  int fd_;
};

// A request head: "VERB TARGET HTTP/1.1", Host, Connection: close, the bearer token when not
// empty, a JSON Content-Type and Content-Length for POST, then `extra_headers` (each line
// ending in \r\n) and the blank line.
std::string RequestHead(const std::string& verb, const std::string& target,
                        const std::string& token, size_t content_length,
                        const std::string& extra_headers = "");

}  // namespace pgfleet::testutil
