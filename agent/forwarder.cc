#include "agent/forwarder.h"

#include <event2/buffer.h>

#include <algorithm>

namespace pgfleet::agent {

Forwarder::Forwarder(evbuffer* in, ForwardState& state, uint32_t max_length, Filter& filter)
    : in_(in), state_(state), max_length_(max_length), filter_(filter) {
  Refresh();
}

void Forwarder::Refresh() {
  const size_t length = evbuffer_get_length(in_);
  const unsigned char* data = length > 0 ? evbuffer_pullup(in_, -1) : nullptr;
  view_ = data != nullptr ? std::string_view(reinterpret_cast<const char*>(data), length)
                          : std::string_view();
}

std::string_view Forwarder::Body(const pg::MessageHeader& header, size_t max) const {
  const size_t start = offset_ + pg::kHeaderSize;
  if (start >= view_.size()) return {};
  return view_.substr(start, std::min({header.body_size(), max, view_.size() - start}));
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
      const size_t dropped = std::min(state_.skip_remaining, view_.size());
      evbuffer_drain(in_, dropped);
      Refresh();
      state_.skip_remaining -= dropped;
      filter_.OnDropped(dropped);
      if (state_.skip_remaining > 0) break;
    }
    if (state_.forward_remaining > 0) {
      const size_t arrived = std::min(state_.forward_remaining, view_.size() - offset_);
      offset_ += arrived;
      state_.forward_remaining -= arrived;
      if (state_.forward_remaining > 0) break;
    }
    pg::MessageHeader header;
    const pg::HeaderResult result = pg::PeekHeader(view_.substr(offset_), max_length_, &header);
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
