// Named statements in a Sync group that PostgreSQL skips after an error (everything after the
// failing message up to the Sync), and messages of a later Sync group that depend on them
// (ServerStatements::OnReadyForQuery undo, ServerStatements::MustWait), without sockets.

#include <arpa/inet.h>

#include <cstring>
#include <string>
#include <vector>

#include "agent/prepared_statements.h"
#include "gtest/gtest.h"

namespace pgfleet::agent::ps {
namespace {

std::string ParseBody(std::string_view name, std::string_view query) {
  return std::string(name) + '\0' + std::string(query) + '\0' + std::string(2, '\0');
}
std::string Definition(std::string_view query) {
  return std::string(query) + '\0' + std::string(2, '\0');
}
std::string BindBody(std::string_view statement) {
  return std::string(1, '\0') + std::string(statement) + '\0' + std::string(6, '\0');
}
std::string CloseBody(std::string_view statement) { return "S" + std::string(statement) + '\0'; }

// Message types of a rewritten stream.
std::string Types(const std::string& bytes) {
  std::string types;
  size_t pos = 0;
  while (pos + 5 <= bytes.size()) {
    uint32_t length;
    memcpy(&length, bytes.data() + pos + 1, 4);
    types.push_back(bytes[pos]);
    pos += 1 + ntohl(length);
  }
  return types;
}

class SkippedAfterErrorTest : public ::testing::Test {
 protected:
  // The first message of a Sync group failed: an unnamed Parse, untracked but answered.
  void FailingUnnamedParse() { server_.OnUnnamedParse(); }

  ClientStatements client_;
  ServerStatements server_;
};

// Parse(bad) Parse(s1) Sync | Parse(s1) ...: the second Parse must not be judged against the
// first before PostgreSQL said whether it ran.
TEST_F(SkippedAfterErrorTest, ParseOfANameFromAnUnansweredGroupWaits) {
  FailingUnnamedParse();
  server_.OnParse(ParseBody("s1", "select 1"), client_, 10);
  server_.OnSyncPoint();
  EXPECT_TRUE(server_.MustWait("s1", client_, Definition("select 1")));
  EXPECT_FALSE(server_.MustWait("other", client_, Definition("select 2")));
  // ErrorResponse, then ReadyForQuery: both Parses unanswered, undone.
  EXPECT_FALSE(server_.OnReadyForQuery(&client_));
  EXPECT_EQ(client_.Find("s1"), nullptr);
  EXPECT_FALSE(server_.MustWait("s1", client_, Definition("select 1")));
  EXPECT_EQ(Types(server_.OnParse(ParseBody("s1", "select 1"), client_, 10)), "P");
  EXPECT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
}

// Within one Sync group a later message stands or falls with the earlier ones: no wait.
TEST_F(SkippedAfterErrorTest, SameGroupNeverWaits) {
  server_.OnParse(ParseBody("s1", "select 1"), client_, 10);
  EXPECT_FALSE(server_.MustWait("s1", client_));
  EXPECT_FALSE(server_.MustWait("s1", client_, Definition("select 1")));
}

// A statement the server already has (another client's): the client's Parse becomes a
// Close of a never-prepared name; skipped, the name goes, and the server copy stays.
TEST_F(SkippedAfterErrorTest, SkippedParseOfASharedStatementFreesOnlyTheClientName) {
  ClientStatements other;
  server_.OnParse(ParseBody("t", "select 'shared'"), other, 10);
  server_.OnSyncPoint();
  ASSERT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  server_.OnReadyForQuery(&other);
  const StatementPtr shared = *other.Find("t");

  FailingUnnamedParse();
  EXPECT_EQ(Types(server_.OnParse(ParseBody("s2", "select 'shared'"), client_, 10)), "C");
  server_.OnSyncPoint();
  EXPECT_TRUE(server_.MustWait("s2", client_, Definition("select 'shared'")));
  EXPECT_FALSE(server_.MustWait("t2", client_, Definition("select 'shared'")))
      << "the server copy was never in doubt";
  server_.OnReadyForQuery(&client_);
  EXPECT_EQ(client_.Find("s2"), nullptr);
  EXPECT_TRUE(server_.HasConfirmed(shared->id));
}

// With room for one statement: a Bind of an evicted statement injects Close(victim) and
// Parse; skipped, the victim is still on the server and the statement is not.
TEST_F(SkippedAfterErrorTest, SkippedInjectionIsUndoneNewestFirst) {
  server_.OnParse(ParseBody("s", "select 's'"), client_, 1);
  server_.OnSyncPoint();
  ASSERT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  server_.OnReadyForQuery(&client_);
  server_.OnParse(ParseBody("t", "select 't'"), client_, 1);
  server_.OnSyncPoint();
  ASSERT_EQ(server_.OnResponse('3'), ResponseAction::kSwallow);  // s evicted.
  ASSERT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  server_.OnReadyForQuery(&client_);
  const StatementPtr s = *client_.Find("s");
  const StatementPtr t = *client_.Find("t");

  FailingUnnamedParse();
  EXPECT_EQ(Types(server_.OnBind(BindBody("s"), client_, 1)), "CPB");
  server_.OnSyncPoint();
  EXPECT_TRUE(server_.MustWait("s", client_)) << "its injected Parse may be skipped";
  EXPECT_TRUE(server_.MustWait("t", client_)) << "its eviction may be skipped";
  server_.OnReadyForQuery(&client_);
  EXPECT_FALSE(server_.Has(s->id));
  EXPECT_TRUE(server_.HasConfirmed(t->id)) << "the skipped Close left it on the server";
  // Bound again after the Sync: injected again, evicting t again.
  EXPECT_EQ(Types(server_.OnBind(BindBody("s"), client_, 1)), "CPB");
  EXPECT_EQ(server_.OnResponse('3'), ResponseAction::kSwallow);
  EXPECT_EQ(server_.OnResponse('1'), ResponseAction::kSwallow);
}

// An eviction and a Parse of the same statement in one skipped group: undone in reverse, the
// statement stays where the server has it.
TEST_F(SkippedAfterErrorTest, EvictionAndReparseOfOneStatementInOneSkippedGroup) {
  server_.OnParse(ParseBody("a", "select 'a'"), client_, 1);
  server_.OnSyncPoint();
  ASSERT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  server_.OnReadyForQuery(&client_);
  const StatementPtr a = *client_.Find("a");

  FailingUnnamedParse();
  EXPECT_EQ(Types(server_.OnParse(ParseBody("b", "select 'b'"), client_, 1)), "CP");  // Evicts a.
  EXPECT_EQ(Types(server_.OnBind(BindBody("a"), client_, 1)), "CPB");  // Evicts b, a again.
  server_.OnSyncPoint();
  server_.OnReadyForQuery(&client_);
  EXPECT_TRUE(server_.HasConfirmed(a->id));
  EXPECT_EQ(server_.size(), 1u);
  EXPECT_EQ(client_.Find("b"), nullptr);
  EXPECT_EQ(Types(server_.OnBind(BindBody("a"), client_, 1)), "B") << "no second Parse: 42P05";
}

// A client Close skipped after an error leaves the client's statement defined.
TEST_F(SkippedAfterErrorTest, SkippedCloseKeepsTheClientsStatement) {
  server_.OnParse(ParseBody("s", "select 'kept'"), client_, 10);
  server_.OnSyncPoint();
  ASSERT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  server_.OnReadyForQuery(&client_);
  const StatementPtr s = *client_.Find("s");

  FailingUnnamedParse();
  EXPECT_EQ(Types(server_.OnClose(CloseBody("s"), client_)), "C");
  server_.OnSyncPoint();
  EXPECT_TRUE(server_.MustWait("s", client_));
  server_.OnReadyForQuery(&client_);
  ASSERT_NE(client_.Find("s"), nullptr);
  EXPECT_EQ(client_.Find("s")->get(), s.get());

  // Answered, the Close takes the name for good.
  server_.OnClose(CloseBody("s"), client_);
  server_.OnSyncPoint();
  EXPECT_EQ(server_.OnResponse('3'), ResponseAction::kForward);
  server_.OnReadyForQuery(&client_);
  EXPECT_EQ(client_.Find("s"), nullptr);
}

// Answered Parses leave nothing in doubt, even before their Sync's ReadyForQuery.
TEST_F(SkippedAfterErrorTest, AnsweredParseNeedsNoWait) {
  server_.OnParse(ParseBody("s", "select 'ok'"), client_, 10);
  server_.OnSyncPoint();
  ASSERT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  EXPECT_FALSE(server_.MustWait("s", client_));
}

// Which entries are of the group being sent (ServerStatements keeps their count as entries
// come and go rather than walk back to the last sync point on every message).
TEST_F(SkippedAfterErrorTest, TheGroupBeingSentFollowsAnswersAndDroppedSyncPoints) {
  server_.OnParse(ParseBody("s1", "select 1"), client_, 10);
  server_.OnSyncPoint();
  server_.OnParse(ParseBody("s2", "select 2"), client_, 10);
  EXPECT_TRUE(server_.MustWait("s1", client_));
  EXPECT_FALSE(server_.MustWait("s2", client_)) << "same group";
  EXPECT_EQ(server_.OnResponse('1'), ResponseAction::kForward);  // s1's answer.
  EXPECT_FALSE(server_.MustWait("s1", client_)) << "answered";
  EXPECT_FALSE(server_.OnReadyForQuery(&client_));
  EXPECT_FALSE(server_.MustWait("s2", client_)) << "still the group being sent";
  server_.OnSyncPoint();
  EXPECT_TRUE(server_.MustWait("s2", client_));
  // A Sync consumed by COPY IN: s2 is of the group being sent again.
  server_.DropSyncPoints(/*skip=*/0, /*count=*/1);
  EXPECT_FALSE(server_.MustWait("s2", client_));
  server_.OnSyncPoint();
  EXPECT_TRUE(server_.MustWait("s2", client_));
}

// Many unanswered groups (a client pipelining Parse+Sync pairs): each name and statement waits
// exactly as long as some unanswered group before the one being sent touched it.
TEST_F(SkippedAfterErrorTest, EveryUnansweredGroupKeepsItsNamesInDoubtUntilItsReadyForQuery) {
  for (int i = 0; i < 100; ++i) {
    server_.OnParse(ParseBody("s" + std::to_string(i), "select " + std::to_string(i)), client_,
                    1000);
    server_.OnSyncPoint();
  }
  server_.OnClose(CloseBody("s0"), client_);  // s0 named again, by a later group.
  server_.OnSyncPoint();
  EXPECT_TRUE(server_.MustWait("s0", client_));
  EXPECT_TRUE(server_.MustWait("s99", client_));
  EXPECT_TRUE(server_.MustWait("other", client_, Definition("select 50"))) << "its statement";
  EXPECT_FALSE(server_.MustWait("other", client_, Definition("select 100")));
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
    EXPECT_FALSE(server_.OnReadyForQuery(&client_));
    // s0 is still named by the Close's group.
    EXPECT_EQ(server_.MustWait("s" + std::to_string(i), client_), i == 0) << i;
    if (i < 99) {
      EXPECT_TRUE(server_.MustWait("s" + std::to_string(i + 1), client_)) << i;
    }
  }
  EXPECT_FALSE(server_.MustWait("other", client_, Definition("select 50")));
  EXPECT_TRUE(server_.MustWait("s0", client_)) << "its Close is not answered yet";
  EXPECT_EQ(server_.OnResponse('3'), ResponseAction::kForward);
  EXPECT_FALSE(server_.OnReadyForQuery(&client_));
  EXPECT_FALSE(server_.MustWait("s0", client_));
}

}  // namespace
}  // namespace pgfleet::agent::ps
