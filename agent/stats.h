// Per-pool counters, kept from day one so SHOW STATS and the controller's metrics read them.
#pragma once

#include <cstdint>

namespace pgfleet::agent {

struct PoolStats {
  uint64_t xact_count = 0;
  uint64_t query_count = 0;
  uint64_t bytes_received = 0;  // Client -> server.
  uint64_t bytes_sent = 0;      // Server -> client.
  uint64_t xact_time_us = 0;
  uint64_t query_time_us = 0;
  uint64_t wait_time_us = 0;
  uint64_t client_login_failures = 0;
  uint64_t server_login_failures = 0;
  uint64_t server_errors = 0;  // Server connections lost or closed for a fault.

  PoolStats& operator+=(const PoolStats& other) {
    xact_count += other.xact_count;
    query_count += other.query_count;
    bytes_received += other.bytes_received;
    bytes_sent += other.bytes_sent;
    xact_time_us += other.xact_time_us;
    query_time_us += other.query_time_us;
    wait_time_us += other.wait_time_us;
    client_login_failures += other.client_login_failures;
    server_login_failures += other.server_login_failures;
    server_errors += other.server_errors;
    return *this;
  }
};

}  // namespace pgfleet::agent
