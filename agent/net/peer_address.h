// A client's address as the kernel gave it, in 20 bytes instead of a string (every byte of a
// ClientConn is paid per idle client); spelled out only when something prints it.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>

namespace pgfleet::agent::net {

class PeerAddress {
 public:
  PeerAddress() = default;
  explicit PeerAddress(const sockaddr* addr);

  // "192.0.2.1:5432", "[2001:db8::1]:5432", or "unix" (a unix socket, or no address).
  std::string ToString() const;

 private:
  uint8_t family_ = AF_UNSPEC;
  uint16_t port_ = 0;  // Host order.
  std::array<uint8_t, 16> address_{};
};

}  // namespace pgfleet::agent::net
