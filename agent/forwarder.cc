#include "agent/forwarder.h"

#include <event2/buffer.h>

#include <algorithm>

namespace pgfleet::agent {

Forwarder::Forwarder(evbuffer* in, ForwardState& state, uint32_t max_length, Filter& filter)
    : in_(in), state_(state), max_length_(max_length), filter_(filter) {
  Refresh();
}

void Forwarder::Refresh() {
  length_ = evbuffer_get_length(in_);
  extent_offset_ = 0;
  extent_ = {};
  extent_pos_located_ = false;
  // The first chain, where the walk nearly always stays: found without an evbuffer_ptr.
  evbuffer_iovec chunk;
  if (length_ > 0 && evbuffer_peek(in_, -1, nullptr, &chunk, 1) > 0) {
    extent_ = std::string_view(static_cast<const char*>(chunk.iov_base), chunk.iov_len);
  }
}

void Forwarder::LocateExtentPos() {
  if (extent_pos_located_) return;
  // extent_offset_ is 0 until the extent first moves: the first chain, no walk.
  evbuffer_ptr_set(in_, &extent_pos_, extent_offset_, EVBUFFER_PTR_SET);
  extent_pos_located_ = true;
}

void Forwarder::Locate() {
  // From where the extent was, not from the front: the chains before it are not walked again.
  LocateExtentPos();
  evbuffer_ptr_set(in_, &extent_pos_, offset_ - extent_offset_, EVBUFFER_PTR_ADD);
  extent_offset_ = offset_;
  evbuffer_iovec chunk;
  // With a start and one vector, libevent fills it and stops: the rest is not counted.
  if (offset_ < length_ && evbuffer_peek(in_, -1, &extent_pos_, &chunk, 1) > 0) {
    extent_ = std::string_view(static_cast<const char*>(chunk.iov_base), chunk.iov_len);
  } else {
    extent_ = {};
  }
}

std::string_view Forwarder::ContiguousSlow(size_t size) {
  if (size == 0) return {};
  if (offset_ >= extent_offset_ + extent_.size()) Locate();
  const size_t skip = offset_ - extent_offset_;
  if (skip + size <= extent_.size()) return extent_.substr(skip, size);
  // The frame goes on in the next chain(s): only the bytes asked for are copied.
  LocateExtentPos();
  evbuffer_ptr from = extent_pos_;
  scratch_.resize(size);
  if (evbuffer_ptr_set(in_, &from, skip, EVBUFFER_PTR_ADD) != 0 ||
      evbuffer_copyout_from(in_, &from, scratch_.data(), size) != static_cast<ev_ssize_t>(size)) {
    return {};  // Cannot happen: the caller checked the bytes have arrived.
  }
  bytes_copied_ += size;
  return scratch_;
}

void Forwarder::Flush() {
  if (offset_ == 0) return;
  filter_.SendToPeer(offset_);
  offset_ = 0;
  Refresh();
}

void Forwarder::FlushThrough(const pg::MessageHeader& header) {
  offset_ += header.total();
  Flush();
}

void Forwarder::Drop(const pg::MessageHeader& header) {
  Flush();
  evbuffer_drain(in_, header.total());
  Refresh();
}

bool Forwarder::Run() {
  while (true) {
    if (state_.skip_remaining > 0) {
      Flush();
      const size_t dropped = std::min(state_.skip_remaining, length_);
      evbuffer_drain(in_, dropped);
      Refresh();
      state_.skip_remaining -= dropped;
      filter_.OnDropped(dropped);
      if (state_.skip_remaining > 0) break;
    }
    if (state_.forward_remaining > 0) {
      const size_t arrived = std::min(state_.forward_remaining, length_ - offset_);
      offset_ += arrived;
      state_.forward_remaining -= arrived;
      if (state_.forward_remaining > 0) break;
    }
    pg::MessageHeader header;
    const pg::HeaderResult result = pg::PeekHeader(
        Contiguous(std::min(pg::kHeaderSize, length_ - offset_)), max_length_, &header);
    if (result == pg::HeaderResult::kNeedMore) break;
    if (result == pg::HeaderResult::kMalformed) {
      Flush();
      filter_.OnMalformed();
      return false;
    }
    switch (filter_.OnMessage(*this, header)) {
      case Verdict::kForward:
        // Taken at the top of the loop: all of it if it has arrived, else what has.
        state_.forward_remaining = header.total();
        break;
      case Verdict::kNeedMore:
        Flush();
        return true;
      case Verdict::kHandled:
        Refresh();
        break;
      case Verdict::kStop:
        return false;
    }
  }
  Flush();
  return true;
}

}  // namespace pgfleet::agent
