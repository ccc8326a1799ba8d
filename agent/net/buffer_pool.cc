#include "agent/net/buffer_pool.h"

#include <event2/buffer.h>

namespace pgfleet::agent::net {

BufferPool& BufferPool::Local() {
  static thread_local BufferPool pool;
  return pool;
}

BufferPool::~BufferPool() {
  for (evbuffer* buffer : free_) evbuffer_free(buffer);
}

evbuffer* BufferPool::Take() {
  ++in_use_;
  if (free_.empty()) return evbuffer_new();
  evbuffer* buffer = free_.back();
  free_.pop_back();
  return buffer;
}

void BufferPool::Give(evbuffer* buffer) {
  if (buffer == nullptr) return;
  --in_use_;
  // Callers give back drained buffers; one that is not is emptied rather than reused with
  // someone else's bytes.
  evbuffer_drain(buffer, evbuffer_get_length(buffer));
  if (free_.size() < kMaxFree) {
    free_.push_back(buffer);
  } else {
    evbuffer_free(buffer);
  }
}

evbuffer* BufferPool::Empty() {
  static thread_local struct EmptyBuffer {
    evbuffer* buffer = evbuffer_new();
    ~EmptyBuffer() { evbuffer_free(buffer); }
  } empty;
  return empty.buffer;
}

}  // namespace pgfleet::agent::net
