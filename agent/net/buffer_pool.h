// I/O buffers shared by every connection of the loop. A connection takes a buffer only while
// it has bytes in flight and gives it back once they are gone (PgBouncer's lazily allocated
// IOBuf), so an idle connection holds none: at 10,000 idle clients that is the difference
// between a few hundred bytes per client and a couple of kilobytes.
//
// A buffer is a libevent evbuffer: the codec's adapters (agent/io/evbuffer_frames.h) and the
// forwarding code read it in place, and moving bytes between two of them moves chains rather
// than copying. An empty evbuffer holds no chains, so a pooled buffer costs its header only.
#pragma once

#include <cstddef>
#include <vector>

struct evbuffer;

namespace pgfleet::agent::net {

class BufferPool {
 public:
  // The loop's pool (the agent runs one event loop on one thread).
  static BufferPool& Local();

  BufferPool() = default;
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // An empty buffer, from the free list when it has one.
  evbuffer* Take();
  // Takes back `buffer`, which must be empty. A few are kept for the next Take; past that
  // they are freed, so a burst does not pin its peak for good.
  void Give(evbuffer* buffer);

  // Buffers handed out and not given back: what connections hold right now.
  size_t in_use() const { return in_use_; }
  size_t free_count() const { return free_.size(); }

  // A buffer that is always empty, for a connection with no input buffer attached: reading
  // code sees zero bytes without a buffer being taken. Nobody may add to it.
  static evbuffer* Empty();

  static constexpr size_t kMaxFree = 256;

 private:
  std::vector<evbuffer*> free_;
  size_t in_use_ = 0;
};

}  // namespace pgfleet::agent::net
