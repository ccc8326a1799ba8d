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
