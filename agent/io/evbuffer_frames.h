// The codec (agent/pg) reads frames from plain bytes; the connections still keep their input
// in libevent buffers, which may hold a message split across several chunks. These adapters
// copy out the few bytes the codec needs to look at (a header, the start of a body) so that
// nothing is made contiguous that does not have to be. Header-only: the fuzz targets use them
// without linking the agent.
#pragma once

#include <event2/buffer.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "agent/pg/protocol.h"

namespace pgfleet::agent {

// Copies up to `size` bytes starting `offset` bytes into `buf` to `out`; returns how many.
inline size_t CopyOutAt(evbuffer* buf, size_t offset, void* out, size_t size) {
  const size_t length = evbuffer_get_length(buf);
  if (offset >= length || size == 0) return 0;
  evbuffer_ptr pos;
  if (evbuffer_ptr_set(buf, &pos, offset, EVBUFFER_PTR_SET) != 0) return 0;
  const ev_ssize_t copied = evbuffer_copyout_from(buf, &pos, out, std::min(size, length - offset));
  return copied > 0 ? static_cast<size_t>(copied) : 0;
}

// pg::PeekHeader for the message starting `offset` bytes into `buf`; consumes nothing.
inline pg::HeaderResult PeekFrameHeader(evbuffer* buf, size_t offset, uint32_t max_length,
                                        pg::MessageHeader* out) {
  char raw[pg::kHeaderSize];
  const size_t copied = CopyOutAt(buf, offset, raw, sizeof(raw));
  return pg::PeekHeader(std::string_view(raw, copied), max_length, out);
}

// The body of the whole message at `offset` whose header is `header` (the caller checked it
// has arrived).
inline std::string CopyFrameBody(evbuffer* buf, size_t offset, const pg::MessageHeader& header) {
  std::string body(header.body_size(), '\0');
  body.resize(CopyOutAt(buf, offset + pg::kHeaderSize, body.data(), body.size()));
  return body;
}

// Removes the whole message at the front of `buf` and returns its body.
inline std::string RemoveFrame(evbuffer* buf, const pg::MessageHeader& header) {
  std::string body(header.body_size(), '\0');
  evbuffer_drain(buf, pg::kHeaderSize);
  const int removed = evbuffer_remove(buf, body.data(), body.size());
  body.resize(removed > 0 ? static_cast<size_t>(removed) : 0);
  return body;
}

}  // namespace pgfleet::agent
