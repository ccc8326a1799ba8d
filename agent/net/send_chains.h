// One non-blocking sendmsg() of the first bytes of an evbuffer, straight from its chains: the
// common case of forwarding, where a read's worth of messages goes out without being copied
// into an output buffer first (NetConn's sends, for clients and servers alike).
#pragma once

#include <cstddef>

struct evbuffer;

namespace pgfleet::agent {

// Sends up to `bytes` of `from` on `fd` (at most 16 chains, usually one), drains what the
// kernel took and returns how much that was: 0 when it would block or failed, in which case
// the caller queues the rest and its write path meets the failure.
size_t SendChainsNow(int fd, evbuffer* from, size_t bytes);

}  // namespace pgfleet::agent
