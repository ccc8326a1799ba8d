#include "agent/net/send_chains.h"

#include <event2/buffer.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>

namespace pgfleet::agent {

size_t SendChainsNow(int fd, evbuffer* from, size_t bytes) {
  std::array<evbuffer_iovec, 16> chains;
  const int count = evbuffer_peek(from, static_cast<ssize_t>(bytes), nullptr, chains.data(),
                                  static_cast<int>(chains.size()));
  std::array<iovec, 16> iov;
  size_t covered = 0;
  int used = 0;
  for (; used < count && used < static_cast<int>(chains.size()) && covered < bytes; ++used) {
    const size_t take = std::min(chains[used].iov_len, bytes - covered);
    iov[used] = {chains[used].iov_base, take};
    covered += take;
  }
  msghdr message{};
  message.msg_iov = iov.data();
  message.msg_iovlen = static_cast<size_t>(used);
  const ssize_t sent = sendmsg(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (sent <= 0) return 0;
  evbuffer_drain(from, static_cast<size_t>(sent));
  return static_cast<size_t>(sent);
}

}  // namespace pgfleet::agent
