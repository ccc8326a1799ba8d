// How many ReadyForQuery a server connection still owes the agent, counted the way
// PostgreSQL answers, including around COPY.
//
// Every Query, FunctionCall and Sync normally gets exactly one ReadyForQuery, in order. COPY
// FROM STDIN (and COPY BOTH) changes that: from the CopyInResponse until it reads CopyDone or
// CopyFail, PostgreSQL consumes what the client sends itself, ignoring Sync and Flush (libpq
// sends a Sync right after the Execute of a COPY it did not know was one, and another after
// CopyDone: two Syncs, one ReadyForQuery). Any other message there ends the connection.
//
// So the tracker keeps the client's messages that matter, in the order they went to the
// server (sync points Q/F/S, copy ends c/f, and "other" extended messages), pops them as
// ReadyForQuery arrive, and when a copy ends it knows which Syncs the copy swallowed:
//  * CommandComplete: the copy read up to its CopyDone, so every Sync between the COPY and
//    that CopyDone was ignored. Exact.
//  * ErrorResponse: the copy stopped wherever the error happened (a bad row, CopyFail, but also
//    a BEFORE STATEMENT trigger or a cancel before PostgreSQL read anything), so each Sync
//    between the COPY and the copy's end may or may not be answered. These are kept as
//    "maybe" sync points, counted as owed (never too few: a ReadyForQuery arriving after the
//    server went back to the pool would reach the next client). The uncertainty is settled by
//    the first reply that is not a ReadyForQuery (nor asynchronous): PostgreSQL answers a bare
//    Sync with a ReadyForQuery alone, and every other message (a Query, a group of extended
//    messages) with something else first. So when such a reply comes, every sync point still
//    outstanding in the run of bare Syncs before the message it answers (the maybe ones, the
//    Sync after CopyDone, Syncs the client sent alone after it) got all the ReadyForQuery it
//    will ever get. When the client has nothing but Syncs in flight, no such reply is coming:
//    the agent then sends a probe, an empty Query, whose EmptyQueryResponse settles it the
//    same way.
// Sequences whose position in the stream is ambiguous (a CopyDone sent before the copy began,
// a COPY started while a previous one is unsettled) are never resolved by guessing: the count stays
// on the safe side (too many), so at worst the server stays with that client until it disconnects,
// as with an open transaction.
#pragma once

#include <algorithm>
#include <cstddef>
#include <deque>

namespace pgfleet::agent {

class ReplyTracker {
 public:
  // Sync points PostgreSQL will never answer, as positions among the outstanding ones: skip
  // the first `skip`, the next `count` are gone (for the prepared-statement reply FIFO, which
  // keeps one entry per sync point in the same order).
  struct Dropped {
    size_t skip = 0;
    size_t count = 0;
  };

  // A new client: what an earlier one left behind (a stray CopyDone after its last Sync) was
  // processed before anything the new one sends and cannot touch its count.
  // Field by field: a fresh std::deque allocates (libstdc++), and a server is reset at every
  // link, that is every transaction in transaction mode.
  void Reset() {
    sent_.clear();
    owed_ = 0;
    in_copy_in_ = false;
    copy_start_ = 0;
    copy_ambiguous_ = false;
    late_copy_end_ = false;
    unsettled_ = false;
    probe_possible_ = false;
    probe_ = Probe::kNone;
    before_probe_ = 0;
  }

  // -- Client -> server: every message the client's stream puts on the server, in order.
  void OnClientMessage(char type);

  // -- Server -> client.
  // CopyInResponse or CopyBothResponse: PostgreSQL now reads the client's messages itself.
  void OnCopyInStart();
  bool in_copy_in() const { return in_copy_in_; }
  // The CommandComplete (ok) or ErrorResponse (!ok) that ends a COPY IN.
  Dropped OnCopyInEnd(bool ok);
  // A ReadyForQuery for one of the client's sync points.
  void OnReadyForQuery();
  // Any other reply to the client's messages: not ReadyForQuery, not asynchronous (Notice,
  // ParameterStatus, Notification), not the message that ends a COPY IN, not the probe's. With
  // "maybe" sync points outstanding, it answers a message after them: those of the bare run
  // before that message not answered by now never will be (returned, to drop).
  Dropped OnOtherReply();

  // The probe: when WantsProbe(), the caller sends an empty Query and calls OnProbeSent().
  bool WantsProbe() const;
  void OnProbeSent();
  bool probe_sent() const { return probe_ == Probe::kSent; }
  bool probe_answered() const { return probe_ == Probe::kAnswered; }
  // Its EmptyQueryResponse: everything sent before it has been answered.
  Dropped OnProbeAnswered();
  // True (once) for the ReadyForQuery that follows the probe's EmptyQueryResponse.
  bool TakeProbeReadyForQuery();

  // ReadyForQuery still owed for the client's messages (an upper bound while unsettled), plus
  // the probe's while it is out.
  size_t owed() const { return owed_ + (probe_ != Probe::kNone ? 1 : 0); }
  // Nothing owed, nothing uncertain, no copy in progress, no extended message waiting for its
  // Sync: the server may change hands. (The last matters after an extended COPY: the Sync the
  // client sent after Execute was swallowed by the copy, so the Execute's implicit transaction
  // stays open until the next Sync.)
  bool Idle() const {
    return owed_ == 0 && !unsettled_ && probe_ == Probe::kNone && !in_copy_in_ &&
           std::find(sent_.begin(), sent_.end(), 'O') == sent_.end();
  }
  // For tests.
  bool unsettled() const { return unsettled_; }

 private:
  // Tokens: 'Q', 'F', 'S' sync points; 'M' a Sync that may not be answered; 'T' a copy end
  // (CopyDone/CopyFail; consecutive ones collapse); 'O' other messages (consecutive collapse).
  static bool IsSyncPoint(char token) {
    return token == 'Q' || token == 'F' || token == 'S' || token == 'M';
  }
  size_t SyncPointsBefore(size_t end) const;

  std::deque<char> sent_;
  size_t owed_ = 0;  // Sync points in sent_.

  bool in_copy_in_ = false;
  // Where the copy's consumption of the client's stream starts, in sent_; and whether that
  // position is certain.
  size_t copy_start_ = 0;
  bool copy_ambiguous_ = false;
  // The copy ended with an error before the client's CopyDone/CopyFail went out: the next
  // one, if nothing but CopyData comes first, belongs to it and is ignored by PostgreSQL.
  bool late_copy_end_ = false;

  // "Maybe" sync points exist, and whether a probe can settle them (only Syncs and copy
  // messages since, so the EmptyQueryResponse can only be the probe's).
  bool unsettled_ = false;
  bool probe_possible_ = false;
  enum class Probe { kNone, kSent, kAnswered };
  Probe probe_ = Probe::kNone;
  size_t before_probe_ = 0;  // sent_ tokens that precede the probe.
};

}  // namespace pgfleet::agent
