#include "agent/reply_tracker.h"

#include <algorithm>

namespace pgfleet::agent {

size_t ReplyTracker::SyncPointsBefore(size_t end) const {
  return static_cast<size_t>(
      std::count_if(sent_.begin(), sent_.begin() + static_cast<std::ptrdiff_t>(end), IsSyncPoint));
}

void ReplyTracker::OnClientMessage(char type) {
  switch (type) {
    case 'Q':
    case 'F':
    case 'S':
      sent_.push_back(type);
      ++owed_;
      break;
    case 'c':
    case 'f':
      if (late_copy_end_) {
        // The CopyDone/CopyFail of a COPY that already failed: PostgreSQL ignores it.
        late_copy_end_ = false;
        return;
      }
      if (sent_.empty() || sent_.back() != 'T') sent_.push_back('T');
      return;
    case 'd':  // CopyData
    case 'H':  // Flush
      return;
    default:
      if (sent_.empty() || sent_.back() != 'O') sent_.push_back('O');
      break;
  }
  late_copy_end_ = false;
  // Only a Sync keeps the probe's EmptyQueryResponse unmistakable.
  if (type != 'S') probe_possible_ = false;
}

void ReplyTracker::OnCopyInStart() {
  in_copy_in_ = true;
  // Every sync point before the first one still in sent_ has been answered, so the COPY is in
  // the unit that ends with that one: it is the Query itself, or an Execute before the Sync.
  size_t first = 0;
  while (first < sent_.size() && !IsSyncPoint(sent_[first])) ++first;
  const bool query = first < sent_.size() && sent_[first] == 'Q';
  copy_start_ = query ? first + 1 : first;
  copy_ambiguous_ = unsettled_ || probe_ != Probe::kNone ||
                    (first < sent_.size() && sent_[first] != 'Q' && sent_[first] != 'S');
  for (size_t i = 0; i < first; ++i) {
    // A copy end in the COPY's own unit may come before or after the COPY; extended messages
    // before a Query may hold the COPY themselves.
    if (sent_[i] == 'T' || (query && sent_[i] == 'O')) copy_ambiguous_ = true;
  }
}

ReplyTracker::Dropped ReplyTracker::OnCopyInEnd(bool ok) {
  in_copy_in_ = false;
  if (copy_ambiguous_) return {};
  size_t end = copy_start_;
  while (end < sent_.size() && sent_[end] == 'S') ++end;
  const bool terminated = end < sent_.size() && sent_[end] == 'T';
  // Anything but Syncs between the COPY and its end made PostgreSQL drop the connection (or,
  // in older versions, raise an error and go on): keep counting everything.
  if (end < sent_.size() && !terminated) return {};
  const size_t syncs = end - copy_start_;
  const auto first = sent_.begin() + static_cast<std::ptrdiff_t>(copy_start_);
  if (ok) {
    // A COPY IN completes only at CopyDone: every Sync before it was ignored.
    if (!terminated) return {};
    Dropped dropped{SyncPointsBefore(copy_start_), syncs};
    sent_.erase(first, first + static_cast<std::ptrdiff_t>(syncs) + 1);
    owed_ -= syncs;
    return dropped;
  }
  if (terminated) {
    sent_.erase(first + static_cast<std::ptrdiff_t>(syncs));
  } else {
    late_copy_end_ = true;
  }
  if (syncs > 0) {
    // Erasing from a deque invalidates its iterators: from the index again.
    const auto maybe = sent_.begin() + static_cast<std::ptrdiff_t>(copy_start_);
    std::fill(maybe, maybe + static_cast<std::ptrdiff_t>(syncs), 'M');
    unsettled_ = true;
    // Only Syncs (and copy ends) after them: nothing the client sent can produce an
    // EmptyQueryResponse of its own.
    probe_possible_ = std::all_of(maybe + static_cast<std::ptrdiff_t>(syncs), sent_.end(),
                                  [](char token) { return token == 'S' || token == 'T'; });
  }
  return {};
}

void ReplyTracker::OnReadyForQuery() {
  in_copy_in_ = false;  // Not expected during a copy; the copy is over either way.
  size_t through = 0;
  while (through < sent_.size() && !IsSyncPoint(sent_[through])) ++through;
  if (through == sent_.size()) return;  // Nothing owed: PostgreSQL's surplus, as before.
  sent_.erase(sent_.begin(), sent_.begin() + static_cast<std::ptrdiff_t>(through) + 1);
  --owed_;
  if (probe_ == Probe::kSent) before_probe_ -= std::min(before_probe_, through + 1);
  // Every sync point answered, the maybe ones included: nothing left to settle.
  if (owed_ == 0 && probe_ == Probe::kNone) unsettled_ = false;
}

ReplyTracker::Dropped ReplyTracker::OnOtherReply() {
  if (!unsettled_ || probe_ != Probe::kNone || in_copy_in_) return {};
  // The bare run at the front: sync points with nothing between them that PostgreSQL answers
  // with more than a ReadyForQuery (copy ends are ignored outside a COPY).
  size_t end = 0;
  size_t syncs = 0;
  while (end < sent_.size() && (sent_[end] == 'S' || sent_[end] == 'M' || sent_[end] == 'T')) {
    if (sent_[end] != 'T') ++syncs;
    ++end;
  }
  // A reply with nothing outstanding to answer it, or one that may answer what precedes the
  // maybe sync points: nothing can be concluded.
  if (end == sent_.size()) return {};
  if (syncs == 0 && std::find(sent_.begin(), sent_.end(), 'M') != sent_.end()) return {};
  sent_.erase(sent_.begin(), sent_.begin() + static_cast<std::ptrdiff_t>(end));
  owed_ -= syncs;
  unsettled_ = std::find(sent_.begin(), sent_.end(), 'M') != sent_.end();
  if (!unsettled_) probe_possible_ = false;
  return {0, syncs};
}

bool ReplyTracker::WantsProbe() const {
  return unsettled_ && probe_possible_ && probe_ == Probe::kNone && !in_copy_in_ && owed_ > 0 &&
         sent_.back() == 'S';
}

void ReplyTracker::OnProbeSent() {
  probe_ = Probe::kSent;
  before_probe_ = sent_.size();
}

ReplyTracker::Dropped ReplyTracker::OnProbeAnswered() {
  Dropped dropped{0, SyncPointsBefore(before_probe_)};
  sent_.erase(sent_.begin(), sent_.begin() + static_cast<std::ptrdiff_t>(before_probe_));
  owed_ -= dropped.count;
  before_probe_ = 0;
  unsettled_ = false;
  probe_possible_ = false;
  probe_ = Probe::kAnswered;
  return dropped;
}

bool ReplyTracker::TakeProbeReadyForQuery() {
  if (probe_ != Probe::kAnswered) return false;
  probe_ = Probe::kNone;
  return true;
}

}  // namespace pgfleet::agent
