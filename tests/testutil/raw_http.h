// HTTP over a raw socket for tests where the client must be able to misbehave (send half a
// head, announce a body and never send it, hold a connection open): the controller's HTTP
// limits are tested this way. For a plain GET, tests/testutil/http.h is simpler.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/temp_dir.h"

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

// One controller with its HTTP listener, started once for a whole test suite
// (SetUpTestSuite) by tests that only talk HTTP to it. PGFLEET_TEST_CONTROLLER_BINARY runs
// another build (the one before a fix, say).
class SharedHttpController {
 public:
  // `name` names the temp dir; `admin_token` is the bootstrap admin token.
  static absl::StatusOr<std::unique_ptr<SharedHttpController>> Start(
      const std::string& name, const std::string& admin_token,
      const std::vector<std::string>& extra_args = {});

  ControllerProcess& controller() { return *controller_; }
  int http_port() const { return http_port_; }
  // `request` (head and body) on a new connection; the reply within `timeout`.
  RawReply Call(const std::string& request, absl::Duration timeout = absl::Seconds(30)) const;

 private:
  SharedHttpController() = default;
  TempDir dir_;
  std::unique_ptr<ControllerProcess> controller_;
  int http_port_ = 0;
};

}  // namespace pgfleet::testutil
