// The one loop that forwards protocol messages from a connection's input to its peer, in both
// directions: client -> server (ClientConn, with prepared-statement rewriting) and server ->
// client (ServerConn, with reply tracking and ReadyForQuery). It walks the frames of the input
// in place and sends runs of whole messages, and what has arrived of a large one, in one write;
// for each message a per-direction Filter decides whether it goes on as it is, waits for more,
// or is handled by the filter itself (dropped, replaced, answered).
//
// The walk reads the input where it lies, in libevent's chains: a header or the start of a body
// that sits in one chain (nearly always: the layer reads into one chain) is a plain memory
// read. Only a frame that straddles two chains is copied, and only the bytes of it the walk or
// the filter asks for (the header; the body when a filter reads it), so input held back behind
// a waiting message or a full peer costs nothing per read however much of it piles up.
#pragma once

#include <event2/buffer.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/pg/protocol.h"

namespace pgfleet::agent {

// Where one direction's stream stands between two reads.
struct ForwardState {
  // Bytes of a message whose start went to the peer: the rest follows as it arrives.
  size_t forward_remaining = 0;
  // Bytes of a message to drop as they arrive: one the filter replaced whole, the rest of one
  // whose destination went away, a CopyData with no COPY to go to.
  size_t skip_remaining = 0;
};

class Forwarder {
 public:
  enum class Verdict {
    kForward,   // The message goes to the peer as it is (streamed if not whole yet).
    kNeedMore,  // Wait for more input before deciding; what precedes the message goes now.
    kHandled,   // The filter dealt with it (Flush, Drop, the state's remaining counts): the
                // walk goes on from the front of what is left.
    kStop,      // The filter closed a connection or handed the link back: nothing more is
                // sent or looked at in this pass.
  };

  class Filter {
   public:
    virtual Verdict OnMessage(Forwarder& forwarder, const pg::MessageHeader& header) = 0;
    // Sends the first `bytes` of the input to the peer (they leave the input).
    virtual void SendToPeer(size_t bytes) = 0;
    // `bytes` of the input were dropped for ForwardState::skip_remaining.
    virtual void OnDropped(size_t bytes) = 0;
    // The next frame's length is invalid; what preceded it has been sent.
    virtual void OnMalformed() = 0;

   protected:
    ~Filter() = default;
  };

  // `max_length`: the largest frame accepted (pg::PeekHeader).
  Forwarder(evbuffer* in, ForwardState& state, uint32_t max_length, Filter& filter);

  // Walks what has arrived. True when it is all sent or waits for more (the filter may then
  // look at the state); false when the filter stopped or the input was malformed.
  bool Run();

  // -- For the filter, about the message it is deciding on.
  evbuffer* input() const { return in_; }
  ForwardState& state() { return state_; }
  // Where the message starts in the input.
  size_t offset() const { return offset_; }
  // All of it has arrived.
  bool Whole(const pg::MessageHeader& header) const { return offset_ + header.total() <= length_; }
  // What has arrived of its body, at most `max` bytes: read in place, or copied when it
  // straddles chains. Valid until the next Body or anything that sends or drops.
  std::string_view Body(const pg::MessageHeader& header, size_t max = SIZE_MAX) {
    const size_t start = offset_ + pg::kHeaderSize;
    if (start >= length_) return {};
    const size_t size = std::min({header.body_size(), max, length_ - start});
    const std::string_view frame = Contiguous(pg::kHeaderSize + size);
    return frame.size() > pg::kHeaderSize ? frame.substr(pg::kHeaderSize) : std::string_view();
  }
  // Sends what precedes the message; it is then at the front of the input.
  void Flush();
  // Sends what precedes the message and the message itself (it must be whole).
  void FlushThrough(const pg::MessageHeader& header);
  // Sends what precedes the message, then removes the message (it must be whole).
  void Drop(const pg::MessageHeader& header);

  // Bytes this pass copied to give a straddling frame one contiguous view (for tests: what is
  // held back must not be copied again on every read).
  size_t bytes_copied() const { return bytes_copied_; }

 private:
  // Takes the input's length again after the filter or a send changed it; the extent is
  // looked up afresh from the front.
  void Refresh();
  // The `size` bytes at offset_ (they have arrived) as one span. Inline: on the common path
  // they lie in the extent.
  std::string_view Contiguous(size_t size) {
    const size_t skip = offset_ - extent_offset_;
    if (skip + size <= extent_.size()) return std::string_view(extent_.data() + skip, size);
    return ContiguousSlow(size);
  }
  // Past the extent: moves it, or copies a straddling frame.
  std::string_view ContiguousSlow(size_t size);
  // Moves the extent forward to the chain holding offset_.
  void Locate();
  // Sets extent_pos_ (left unset by Refresh: a one-chain input never needs it).
  void LocateExtentPos();

  evbuffer* in_;
  ForwardState& state_;
  uint32_t max_length_;
  Filter& filter_;
  size_t length_ = 0;
  // The first offset_ bytes of the input are decided on and go to the peer at the next flush.
  size_t offset_ = 0;
  // The bytes of one chain from extent_offset_ (<= offset_; extent_pos_ points there once
  // located) to the chain's end. It only moves forward between two Refreshes, so a pass walks each
  // chain once.
  size_t extent_offset_ = 0;
  evbuffer_ptr extent_pos_{};
  bool extent_pos_located_ = false;
  std::string_view extent_;
  // A straddling frame's bytes, copied out of the input.
  std::string scratch_;
  size_t bytes_copied_ = 0;
};

}  // namespace pgfleet::agent
