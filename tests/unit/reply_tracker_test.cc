// ReplyTracker: the ReadyForQuery count around COPY, message sequence by message sequence, as
// PostgreSQL answers them (src/backend/tcop/postgres.c, commands/copyfromparse.c).

#include "agent/reply_tracker.h"

#include <string>

#include "gtest/gtest.h"

namespace pgfleet::agent {
namespace {

void Send(ReplyTracker& tracker, const std::string& types) {
  for (char type : types) tracker.OnClientMessage(type);
}

TEST(ReplyTrackerTest, PlainQueriesAndPipelines) {
  ReplyTracker tracker;
  EXPECT_TRUE(tracker.Idle());
  Send(tracker, "PBDES");
  Send(tracker, "Q");
  EXPECT_EQ(tracker.owed(), 2u);
  tracker.OnReadyForQuery();
  EXPECT_EQ(tracker.owed(), 1u);
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
  tracker.OnReadyForQuery();  // Surplus: tolerated, nothing goes negative.
  EXPECT_TRUE(tracker.Idle());
}

TEST(ReplyTrackerTest, LibpqExtendedCopyInSyncAfterExecuteIsIgnored) {
  ReplyTracker tracker;
  Send(tracker, "PBDES");  // PQexecParams("COPY ... FROM STDIN")
  tracker.OnCopyInStart();
  Send(tracker, "ddcS");  // PQputCopyData x2, PQputCopyEnd: CopyDone + Sync
  EXPECT_EQ(tracker.owed(), 2u);
  ReplyTracker::Dropped dropped = tracker.OnCopyInEnd(/*ok=*/true);
  EXPECT_EQ(dropped.skip, 0u);
  EXPECT_EQ(dropped.count, 1u);
  EXPECT_EQ(tracker.owed(), 1u);
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
}

// CopyDone without the Sync after it: the copy's Sync after Execute was swallowed, so the
// Execute's implicit transaction is open until the next Sync. Not idle: a client leaving now
// must not hand that transaction (its COPY rows uncommitted) to the next client.
TEST(ReplyTrackerTest, ExtendedCopyDoneBeforeItsSyncIsNotIdle) {
  ReplyTracker tracker;
  Send(tracker, "PBES");
  tracker.OnCopyInStart();
  Send(tracker, "dc");
  EXPECT_EQ(tracker.OnCopyInEnd(/*ok=*/true).count, 1u);
  EXPECT_EQ(tracker.owed(), 0u);
  EXPECT_FALSE(tracker.Idle());
  Send(tracker, "S");
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
}

TEST(ReplyTrackerTest, SimpleCopyInWithStraySyncsAndFlushes) {
  ReplyTracker tracker;
  Send(tracker, "Q");
  tracker.OnCopyInStart();
  Send(tracker, "dHSdSc");
  ReplyTracker::Dropped dropped = tracker.OnCopyInEnd(true);
  EXPECT_EQ(dropped.skip, 1u) << "the Query's own sync point stays";
  EXPECT_EQ(dropped.count, 2u);
  EXPECT_EQ(tracker.owed(), 1u);
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
}

TEST(ReplyTrackerTest, CopyPipelinedBeforeItsCopyInResponse) {
  ReplyTracker tracker;
  Send(tracker, "PBESdcSPBESQ");  // All in one write.
  tracker.OnCopyInStart();
  EXPECT_EQ(tracker.OnCopyInEnd(true).count, 1u);
  EXPECT_EQ(tracker.owed(), 3u);
  tracker.OnReadyForQuery();
  tracker.OnReadyForQuery();
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
}

TEST(ReplyTrackerTest, SimpleCopyErrorIsExact) {
  ReplyTracker tracker;
  Send(tracker, "Q");
  tracker.OnCopyInStart();
  EXPECT_EQ(tracker.OnCopyInEnd(false).count, 0u);
  EXPECT_FALSE(tracker.unsettled());
  tracker.OnReadyForQuery();
  Send(tracker, "dc");  // The client's CopyDone after the error: ignored by PostgreSQL.
  EXPECT_TRUE(tracker.Idle());
  // Nothing left behind that would make the next COPY ambiguous.
  Send(tracker, "PBES");
  tracker.OnCopyInStart();
  Send(tracker, "cS");
  EXPECT_EQ(tracker.OnCopyInEnd(true).count, 1u);
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
}

TEST(ReplyTrackerTest, ExtendedCopyErrorAfterTheSyncWasReadIsSettledByTheProbe) {
  ReplyTracker tracker;
  Send(tracker, "PBES");
  tracker.OnCopyInStart();
  Send(tracker, "ddcS");  // Bad row in the second CopyData; the first Sync was read before it.
  tracker.OnCopyInEnd(false);
  EXPECT_TRUE(tracker.unsettled());
  EXPECT_EQ(tracker.owed(), 2u) << "the maybe-Sync counts until settled";
  EXPECT_TRUE(tracker.WantsProbe());
  tracker.OnProbeSent();
  EXPECT_FALSE(tracker.WantsProbe());
  tracker.OnReadyForQuery();  // The only ReadyForQuery: the second Sync's.
  EXPECT_FALSE(tracker.Idle());
  Send(tracker, "Q");  // The client goes on meanwhile.
  ReplyTracker::Dropped dropped = tracker.OnProbeAnswered();
  EXPECT_EQ(dropped.skip, 0u);
  EXPECT_EQ(dropped.count, 1u);
  EXPECT_TRUE(tracker.TakeProbeReadyForQuery());
  EXPECT_FALSE(tracker.TakeProbeReadyForQuery());
  EXPECT_EQ(tracker.owed(), 1u);
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
}

TEST(ReplyTrackerTest, ExtendedCopyErrorBeforeTheSyncWasReadSettlesByCount) {
  ReplyTracker tracker;
  Send(tracker, "PBES");
  tracker.OnCopyInStart();
  tracker.OnCopyInEnd(false);  // A BEFORE STATEMENT trigger: error before reading anything.
  EXPECT_FALSE(tracker.WantsProbe()) << "the client is still in its copy";
  tracker.OnReadyForQuery();  // Nothing else was sent: it can only be the maybe-Sync's.
  EXPECT_FALSE(tracker.unsettled());
  Send(tracker, "dcS");  // CopyDone is the failed copy's own; the Sync is certain.
  EXPECT_EQ(tracker.owed(), 1u);
  EXPECT_FALSE(tracker.WantsProbe());
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
}

TEST(ReplyTrackerTest, ExtendedCopyErrorSeenBeforeTheClientsCopyDone) {
  ReplyTracker tracker;
  Send(tracker, "PBES");
  tracker.OnCopyInStart();
  Send(tracker, "d");
  tracker.OnCopyInEnd(false);  // Bad row: the first Sync may or may not have been read.
  Send(tracker, "dcS");
  EXPECT_EQ(tracker.owed(), 2u);
  tracker.OnReadyForQuery();  // Whose? Ask.
  EXPECT_TRUE(tracker.WantsProbe());
  tracker.OnProbeSent();
  EXPECT_EQ(tracker.OnProbeAnswered().count, 1u);  // The second Sync never will be answered.
  EXPECT_FALSE(tracker.Idle()) << "the probe's own ReadyForQuery is still to come";
  EXPECT_TRUE(tracker.TakeProbeReadyForQuery());
  EXPECT_TRUE(tracker.Idle());
}

TEST(ReplyTrackerTest, NoProbeWhenQueriesFollowTheFailedCopy) {
  ReplyTracker tracker;
  Send(tracker, "PBES");
  tracker.OnCopyInStart();
  Send(tracker, "dcSPBES");
  tracker.OnCopyInEnd(false);
  EXPECT_FALSE(tracker.WantsProbe()) << "an EmptyQueryResponse could be the client's";
  tracker.OnReadyForQuery();
  tracker.OnReadyForQuery();
  EXPECT_FALSE(tracker.Idle()) << "unsure: never hand the server on early";
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
}

// Queries pipelined behind a failed extended COPY (libpq's Sync after Execute): the first reply
// to them that is not a ReadyForQuery tells how many of the Syncs before them PostgreSQL
// answered. The COPY read its Sync before the bad row (the usual case): one ReadyForQuery.
TEST(ReplyTrackerTest, ReplyAfterAFailedCopySettlesTheSyncItSwallowed) {
  ReplyTracker tracker;
  Send(tracker, "PBES");
  tracker.OnCopyInStart();
  Send(tracker, "dcSPBES");
  tracker.OnCopyInEnd(false);
  EXPECT_EQ(tracker.OnOtherReply().count, 0u) << "no ReadyForQuery yet: nothing to conclude";
  tracker.OnReadyForQuery();                                     // The Sync after CopyDone.
  const ReplyTracker::Dropped dropped = tracker.OnOtherReply();  // ParseComplete of the next.
  EXPECT_EQ(dropped.skip, 0u);
  EXPECT_EQ(dropped.count, 1u);
  EXPECT_FALSE(tracker.unsettled());
  EXPECT_EQ(tracker.owed(), 1u);
  EXPECT_EQ(tracker.OnOtherReply().count, 0u) << "settled once";
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
}

// Two COPYs pipelined, the first failing: its maybe-Sync is the one after its own Execute
// (the deque's iterators were used after an erase and marked the wrong token).
TEST(ReplyTrackerTest, FailedCopyFollowedByAnotherMarksItsOwnSync) {
  ReplyTracker tracker;
  Send(tracker, "PBES");
  tracker.OnCopyInStart();
  Send(tracker, "dcSPBESdfS");
  tracker.OnCopyInEnd(false);
  EXPECT_EQ(tracker.owed(), 4u);
  tracker.OnReadyForQuery();
  EXPECT_EQ(tracker.OnOtherReply().count, 1u);  // The second COPY's ParseComplete.
  EXPECT_EQ(tracker.owed(), 2u);
}

// The same when the error came before the COPY read anything (a BEFORE STATEMENT trigger):
// both Syncs answered, nothing dropped.
TEST(ReplyTrackerTest, ReplyAfterAFailedCopyKeepsSyncsThatWereAnswered) {
  ReplyTracker tracker;
  Send(tracker, "PBES");
  tracker.OnCopyInStart();
  Send(tracker, "dcSQ");
  tracker.OnCopyInEnd(false);
  tracker.OnReadyForQuery();
  tracker.OnReadyForQuery();
  EXPECT_EQ(tracker.OnOtherReply().count, 0u);  // The Query's RowDescription.
  EXPECT_FALSE(tracker.unsettled());
  EXPECT_EQ(tracker.owed(), 1u);
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
}

// Syncs sent alone after the copy are answered by a ReadyForQuery alone too: the reply that
// settles is the first one after them, and counts them in the run.
TEST(ReplyTrackerTest, BareSyncsAfterAFailedCopyBelongToTheRun) {
  ReplyTracker tracker;
  Send(tracker, "PBESS");  // Two Syncs after Execute.
  tracker.OnCopyInStart();
  Send(tracker, "dfSSSQ");  // CopyFail, its Sync, two lone Syncs, a Query.
  tracker.OnCopyInEnd(false);
  EXPECT_EQ(tracker.owed(), 6u);
  // The COPY had read both Syncs: the Sync after CopyFail and the lone ones are answered.
  tracker.OnReadyForQuery();
  tracker.OnReadyForQuery();
  tracker.OnReadyForQuery();
  EXPECT_EQ(tracker.OnOtherReply().count, 2u);
  EXPECT_EQ(tracker.owed(), 1u);
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
}

// A simple-protocol COPY with Syncs sent during it: the Query's ReadyForQuery comes at once,
// then one per Sync the COPY had not read yet.
TEST(ReplyTrackerTest, SimpleCopyWithSyncsSettledByTheNextReply) {
  ReplyTracker tracker;
  Send(tracker, "Q");
  tracker.OnCopyInStart();
  Send(tracker, "SdcPBES");
  tracker.OnCopyInEnd(false);  // The Sync was read, then a bad row.
  EXPECT_TRUE(tracker.unsettled());
  tracker.OnReadyForQuery();  // The Query's.
  EXPECT_EQ(tracker.OnOtherReply().count, 1u);
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
}

// Before the first ReadyForQuery the front is still the COPY's own unit: a reply there (not
// one PostgreSQL sends, but never guessed from) concludes nothing.
TEST(ReplyTrackerTest, ReplyBeforeTheCopysUnitIsAnsweredConcludesNothing) {
  ReplyTracker tracker;
  Send(tracker, "PBES");
  tracker.OnCopyInStart();
  Send(tracker, "dcSQ");
  tracker.OnCopyInEnd(false);
  EXPECT_EQ(tracker.OnOtherReply().count, 0u);
  EXPECT_TRUE(tracker.unsettled());
  EXPECT_EQ(tracker.owed(), 3u);
}

TEST(ReplyTrackerTest, CopyEndSentBeforeTheCopyBeganIsNeverTrusted) {
  // Execute(COPY) CopyDone Query Sync CopyDone Sync: PostgreSQL ends the copy at the first
  // CopyDone and answers the Query and both Syncs. Guessing the second CopyDone ended it
  // would drop a Sync and hand a ReadyForQuery to the next client.
  ReplyTracker tracker;
  Send(tracker, "PBEcQScS");
  tracker.OnCopyInStart();
  EXPECT_EQ(tracker.OnCopyInEnd(true).count, 0u);
  EXPECT_EQ(tracker.owed(), 3u);
}

TEST(ReplyTrackerTest, ExtendedMessagesBeforeAQueryMakeTheCopyAmbiguous) {
  ReplyTracker tracker;
  Send(tracker, "PBEQSdcS");  // The COPY may be the Execute: then the Query ends the copy.
  tracker.OnCopyInStart();
  EXPECT_EQ(tracker.OnCopyInEnd(true).count, 0u);
  EXPECT_EQ(tracker.owed(), 3u);
}

TEST(ReplyTrackerTest, CopyOutChangesNothing) {
  ReplyTracker tracker;
  Send(tracker, "PBESQ");
  tracker.OnReadyForQuery();
  tracker.OnReadyForQuery();
  EXPECT_TRUE(tracker.Idle());
}

}  // namespace
}  // namespace pgfleet::agent
