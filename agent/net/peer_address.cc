#include "agent/net/peer_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "absl/strings/str_cat.h"

namespace pgfleet::agent::net {

PeerAddress::PeerAddress(const sockaddr* addr) {
  if (addr == nullptr) return;
  if (addr->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    family_ = AF_INET;
    port_ = ntohs(in->sin_port);
    memcpy(address_.data(), &in->sin_addr, sizeof(in->sin_addr));
  } else if (addr->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    family_ = AF_INET6;
    port_ = ntohs(in6->sin6_port);
    memcpy(address_.data(), &in6->sin6_addr, sizeof(in6->sin6_addr));
  }
}

std::string PeerAddress::ToString() const {
  char host[INET6_ADDRSTRLEN] = "";
  if (family_ == AF_INET) {
    inet_ntop(AF_INET, address_.data(), host, sizeof(host));
    return absl::StrCat(host, ":", port_);
  }
  if (family_ == AF_INET6) {
    inet_ntop(AF_INET6, address_.data(), host, sizeof(host));
    return absl::StrCat("[", host, "]:", port_);
  }
  return "unix";
}

}  // namespace pgfleet::agent::net
