// A plain HTTP/1.0 GET over a raw socket, for the agent's metrics endpoint and the
// controller's HTTP API: no client library stands between a test and the server.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pgfleet::testutil {

struct HttpResponse {
  int status = 0;           // 200, 404...
  std::string status_line;  // "HTTP/1.0 200 OK"
  std::string raw;          // Status line, headers and body, as received.
  std::string body;
};

// GET `path` from 127.0.0.1:port with extra header lines ("Name: value"); reads until the
// server closes (10 s at most). A reset after the response keeps what arrived.
absl::StatusOr<HttpResponse> HttpGet(int port, const std::string& path,
                                     const std::vector<std::string>& headers = {});

}  // namespace pgfleet::testutil
