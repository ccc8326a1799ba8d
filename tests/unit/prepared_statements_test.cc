// The prepared-statement rewriting of agent/prepared_statements.h: names, injection, the
// per-server LRU and the FIFO that keeps answers in step, without sockets.

#include "agent/prepared_statements.h"

#include <arpa/inet.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "agent/pg/protocol.h"
#include "gtest/gtest.h"

namespace pgfleet::agent::ps {
namespace {

struct Msg {
  char type;
  std::string body;
  bool operator==(const Msg& other) const { return type == other.type && body == other.body; }
};

std::ostream& operator<<(std::ostream& os, const Msg& msg) {
  std::string printable;
  for (char c : msg.body) printable += (c == '\0') ? '|' : c;
  return os << msg.type << "(" << printable << ")";
}

std::vector<Msg> Split(const std::string& bytes) {
  std::vector<Msg> out;
  size_t pos = 0;
  while (pos + 5 <= bytes.size()) {
    uint32_t length;
    memcpy(&length, bytes.data() + pos + 1, 4);
    length = ntohl(length);
    out.push_back({bytes[pos], bytes.substr(pos + 5, length - 4)});
    pos += 1 + length;
  }
  EXPECT_EQ(pos, bytes.size()) << "trailing partial message";
  return out;
}

std::string Str(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view part : parts) {
    out.append(part);
    out.push_back('\0');
  }
  return out;
}

// Parse body: name, query, no parameter types.
std::string ParseBody(std::string_view name, std::string_view query) {
  return Str({name, query}) + std::string("\0\0", 2);
}
std::string Definition(std::string_view query) { return Str({query}) + std::string("\0\0", 2); }
// Bind body: portal, statement, no formats, no parameters, no result formats.
std::string BindBody(std::string_view statement) {
  return Str({"", statement}) + std::string(6, '\0');
}

class PreparedStatementsTest : public ::testing::Test {
 protected:
  ClientStatements client_;
  ServerStatements server_;
};

TEST_F(PreparedStatementsTest, IdenticalStatementsShareOneServerName) {
  StatementPtr a = Intern(Definition("select 1"));
  StatementPtr b = Intern(Definition("select 1"));
  StatementPtr c = Intern(Definition("select 2"));
  EXPECT_EQ(a.get(), b.get());
  EXPECT_NE(a->server_name, c->server_name);
  EXPECT_EQ(a->server_name.rfind("pgf_", 0), 0u);
  const size_t before = InternedCount();
  c.reset();
  EXPECT_EQ(InternedCount(), before - 1) << "a statement nobody holds is released";
}

TEST_F(PreparedStatementsTest, NamedParseIsRenamedAndAnsweredByTheServer) {
  std::vector<Msg> sent = Split(server_.OnParse(ParseBody("s1", "select $1"), client_, 10));
  ASSERT_EQ(sent.size(), 1u);
  StatementPtr statement = *client_.Find("s1");
  EXPECT_EQ(sent[0], (Msg{'P', ParseBody(statement->server_name, "select $1")}));
  EXPECT_TRUE(server_.Has(statement->id));
  EXPECT_FALSE(server_.HasConfirmed(statement->id)) << "PostgreSQL has not accepted it yet";
  server_.OnSyncPoint();
  EXPECT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  EXPECT_TRUE(server_.HasConfirmed(statement->id));
  EXPECT_FALSE(server_.OnReadyForQuery(&client_));
  EXPECT_FALSE(server_.AnswersPending());
}

TEST_F(PreparedStatementsTest, ParseOfAStatementTheServerHasIsAnsweredInOrderWithoutParsing) {
  ClientStatements other;
  server_.OnParse(ParseBody("a", "select 42"), other, 10);
  server_.OnSyncPoint();
  ASSERT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  server_.OnReadyForQuery(&other);

  std::vector<Msg> sent = Split(server_.OnParse(ParseBody("mine", "select 42"), client_, 10));
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, 'C') << "a Close of a never-prepared name stands in for the Parse";
  EXPECT_EQ(sent[0].body[0], 'S');
  EXPECT_EQ(server_.OnResponse('3'), ResponseAction::kAsParseComplete);
  ASSERT_NE(client_.Find("mine"), nullptr);
  EXPECT_EQ(client_.Find("mine")->get(), other.Find("a")->get());
}

TEST_F(PreparedStatementsTest, BindOnAServerWithoutTheStatementInjectsTheParse) {
  ServerStatements first;
  first.OnParse(ParseBody("s", "select now()"), client_, 10);
  const StatementPtr statement = *client_.Find("s");

  std::vector<Msg> sent = Split(server_.OnBind(BindBody("s"), client_, 10));
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0], (Msg{'P', Str({statement->server_name}) + statement->definition}));
  EXPECT_EQ(sent[1], (Msg{'B', BindBody(statement->server_name)}));
  EXPECT_EQ(server_.OnResponse('1'), ResponseAction::kSwallow);

  // Prepared there now: the next Bind is only renamed.
  sent = Split(server_.OnBind(BindBody("s"), client_, 10));
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0], (Msg{'B', BindBody(statement->server_name)}));

  // Describe of the statement likewise.
  sent = Split(server_.OnDescribe(std::string("S") + Str({"s"}), client_, 10));
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0], (Msg{'D', std::string("S") + Str({statement->server_name})}));
}

TEST_F(PreparedStatementsTest, UnknownAndUnnamedStatementsPassThrough) {
  EXPECT_EQ(Split(server_.OnBind(BindBody("nope"), client_, 10))[0], (Msg{'B', BindBody("nope")}));
  EXPECT_EQ(Split(server_.OnBind(BindBody(""), client_, 10))[0], (Msg{'B', BindBody("")}));
  EXPECT_EQ(Split(server_.OnParse(ParseBody("", "select 1"), client_, 10))[0],
            (Msg{'P', ParseBody("", "select 1")}));
  EXPECT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  const std::string portal_describe = std::string("P") + Str({""});
  EXPECT_EQ(Split(server_.OnDescribe(portal_describe, client_, 10))[0],
            (Msg{'D', portal_describe}));
}

TEST_F(PreparedStatementsTest, LeastRecentlyUsedIsClosedOnTheServerBeyondCapacity) {
  for (const char* name : {"a", "b"}) {
    server_.OnParse(ParseBody(name, std::string("select '") + name + "'"), client_, 2);
    ASSERT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  }
  const StatementPtr a = *client_.Find("a");
  const StatementPtr b = *client_.Find("b");
  server_.OnBind(BindBody("a"), client_, 2);  // a is now the most recently used.
  std::vector<Msg> sent = Split(server_.OnParse(ParseBody("c", "select 'c'"), client_, 2));
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0], (Msg{'C', std::string("S") + Str({b->server_name})}));
  EXPECT_EQ(sent[1].type, 'P');
  EXPECT_EQ(server_.OnResponse('3'), ResponseAction::kSwallow);
  EXPECT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  EXPECT_EQ(server_.size(), 2u);
  EXPECT_TRUE(server_.Has(a->id));
  EXPECT_FALSE(server_.Has(b->id));
  // The client still has b: binding it prepares it again (evicting a, now the oldest).
  sent = Split(server_.OnBind(BindBody("b"), client_, 2));
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[0], (Msg{'C', std::string("S") + Str({a->server_name})}));
  EXPECT_EQ(sent[1].type, 'P');
  EXPECT_EQ(sent[2], (Msg{'B', BindBody(b->server_name)}));
}

TEST_F(PreparedStatementsTest, FailedParseIsForgottenAtReadyForQuery) {
  server_.OnParse(ParseBody("bad", "selec 1"), client_, 10);
  server_.OnSyncPoint();
  const StatementPtr statement = *client_.Find("bad");
  // ErrorResponse, then ReadyForQuery: the ParseComplete never came.
  EXPECT_FALSE(server_.OnReadyForQuery(&client_));
  EXPECT_EQ(client_.Find("bad"), nullptr) << "the client's name must be free again";
  EXPECT_FALSE(server_.Has(statement->id));
  std::vector<Msg> sent = Split(server_.OnParse(ParseBody("bad", "select 1"), client_, 10));
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, 'P');
  EXPECT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
}

TEST_F(PreparedStatementsTest, MessagesSkippedAfterAnErrorAreUndoneButLaterSegmentsKept) {
  // Segment 1: an Execute fails (not tracked), so PostgreSQL skips the Parse after it.
  server_.OnParse(ParseBody("skipped", "select 1"), client_, 10);
  server_.OnSyncPoint();
  // Segment 2, pipelined before segment 1's answers arrived.
  server_.OnParse(ParseBody("kept", "select 2"), client_, 10);
  server_.OnSyncPoint();
  EXPECT_FALSE(server_.OnReadyForQuery(&client_));
  EXPECT_EQ(client_.Find("skipped"), nullptr);
  ASSERT_NE(client_.Find("kept"), nullptr);
  EXPECT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  EXPECT_FALSE(server_.OnReadyForQuery(&client_));
  EXPECT_NE(client_.Find("kept"), nullptr);
  EXPECT_TRUE(server_.Has((*client_.Find("kept"))->id));
}

TEST_F(PreparedStatementsTest, CloseDropsTheClientNameAndKeepsTheServerCopy) {
  server_.OnParse(ParseBody("s", "select 3"), client_, 10);
  ASSERT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  const StatementPtr statement = *client_.Find("s");
  std::vector<Msg> sent = Split(server_.OnClose(std::string("S") + Str({"s"}), client_));
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].type, 'C');
  EXPECT_NE(sent[0].body, std::string("S") + Str({statement->server_name}));
  EXPECT_EQ(server_.OnResponse('3'), ResponseAction::kForward);
  EXPECT_EQ(client_.Find("s"), nullptr);
  EXPECT_TRUE(server_.Has(statement->id));
  // A portal Close goes through as it came.
  const std::string portal_close = std::string("P") + Str({"p"});
  EXPECT_EQ(Split(server_.OnClose(portal_close, client_))[0], (Msg{'C', portal_close}));
  EXPECT_EQ(server_.OnResponse('3'), ResponseAction::kForward);
}

TEST_F(PreparedStatementsTest, RedefiningANameIsLeftToPostgresToRefuse) {
  server_.OnParse(ParseBody("s", "select 1"), client_, 10);
  ASSERT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  const StatementPtr statement = *client_.Find("s");
  std::vector<Msg> sent = Split(server_.OnParse(ParseBody("s", "select 2"), client_, 10));
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0], (Msg{'P', ParseBody(statement->server_name, "select 2")}));
  server_.OnSyncPoint();
  server_.OnReadyForQuery(&client_);  // After PostgreSQL's 42P05.
  EXPECT_EQ(client_.Find("s")->get(), statement.get()) << "the original stays";
  EXPECT_TRUE(server_.Has(statement->id));
}

TEST_F(PreparedStatementsTest, DiscardAllEmptiesServerAndClient) {
  server_.OnParse(ParseBody("s", "select 4"), client_, 10);
  ASSERT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  server_.OnCommandComplete("SELECT 1", &client_);
  EXPECT_EQ(server_.size(), 1u);
  server_.OnCommandComplete("DISCARD ALL", &client_);
  EXPECT_EQ(server_.size(), 0u);
  EXPECT_EQ(client_.size(), 0u);
}

TEST_F(PreparedStatementsTest, SqlDeallocateOfAProtocolStatementDropsItOnConfirmation) {
  server_.OnParse(ParseBody("s", "select 5"), client_, 10);
  ASSERT_EQ(server_.OnResponse('1'), ResponseAction::kForward);
  const StatementPtr statement = *client_.Find("s");
  std::vector<Msg> sent = Split(server_.OnDeallocate("s", client_, 10));
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0], (Msg{'Q', Str({"DEALLOCATE " + statement->server_name})}));
  server_.OnSyncPoint();
  server_.OnCommandComplete("DEALLOCATE", &client_);
  EXPECT_FALSE(server_.OnReadyForQuery(&client_));
  EXPECT_EQ(client_.Find("s"), nullptr);
  EXPECT_FALSE(server_.Has(statement->id));
  EXPECT_EQ(server_.OnDeallocate("unknown", client_, 10), "");

  // On a server without it: prepared first in a Sync of the agent's own, swallowed.
  ServerStatements fresh;
  ClientStatements other;
  server_.OnParse(ParseBody("t", "select 6"), other, 10);
  sent = Split(fresh.OnDeallocate("t", other, 10));
  ASSERT_EQ(sent.size(), 3u);
  EXPECT_EQ(sent[0].type, 'P');
  EXPECT_EQ(sent[1].type, 'S');
  EXPECT_EQ(sent[2].type, 'Q');
  fresh.OnSyncPoint();
  EXPECT_EQ(fresh.OnResponse('1'), ResponseAction::kSwallow);
  EXPECT_TRUE(fresh.OnReadyForQuery(&other)) << "the agent's own Sync is swallowed";
  fresh.OnCommandComplete("DEALLOCATE", &other);
  EXPECT_FALSE(fresh.OnReadyForQuery(&other));
  EXPECT_EQ(other.Find("t"), nullptr);
}

TEST_F(PreparedStatementsTest, AnswersNobodyAskedForAreOutOfStep) {
  EXPECT_EQ(server_.OnResponse('1'), ResponseAction::kOutOfStep);
  server_.OnClose(std::string("P") + Str({""}), client_);
  EXPECT_EQ(server_.OnResponse('1'), ResponseAction::kOutOfStep);
  EXPECT_EQ(server_.OnResponse('3'), ResponseAction::kForward);
}

TEST(ClassifySqlTest, LeadingKeywordAfterSpaceAndComments) {
  EXPECT_EQ(ClassifySql("PREPARE q AS select 1").kind, SqlKind::kPrepare);
  EXPECT_EQ(ClassifySql("  \n\tprepare q(int) as select $1").kind, SqlKind::kPrepare);
  EXPECT_EQ(ClassifySql("-- hi\n/* a /* nested */ comment */ Execute q(1)").kind,
            SqlKind::kExecute);
  EXPECT_EQ(ClassifySql("PREPARE TRANSACTION 'tx1'").kind, SqlKind::kOther);
  EXPECT_EQ(ClassifySql("select 'PREPARE x as select 1'").kind, SqlKind::kOther);
  EXPECT_EQ(ClassifySql("prepared_things").kind, SqlKind::kOther);
  EXPECT_EQ(ClassifySql("executes").kind, SqlKind::kOther);
  EXPECT_EQ(ClassifySql("/* unterminated PREPARE").kind, SqlKind::kOther);
  EXPECT_EQ(ClassifySql("-- PREPARE x").kind, SqlKind::kOther);
  EXPECT_EQ(ClassifySql("DEALLOCATE ALL").kind, SqlKind::kDeallocateAll);
  EXPECT_EQ(ClassifySql("deallocate prepare all;").kind, SqlKind::kDeallocateAll);
  SqlCommand named = ClassifySql("DEALLOCATE _PG3_1");
  EXPECT_EQ(named.kind, SqlKind::kDeallocate);
  EXPECT_EQ(named.name, "_pg3_1");
  named = ClassifySql("DEALLOCATE PREPARE \"Mixed\"\"Case\"");
  EXPECT_EQ(named.kind, SqlKind::kDeallocate);
  EXPECT_EQ(named.name, "Mixed\"Case");
  EXPECT_EQ(ClassifySql("DEALLOCATE \"all\"").name, "all");
}

TEST(ClassifySqlTest, EveryStatementOfAMultiStatementQuery) {
  // The whole query (with its terminator, as in a Query message).
  auto whole = [](std::string sql) { return sql + std::string(1, '\0'); };
  SqlCommand second = ClassifySql(whole("SELECT 1; DEALLOCATE pgf_1"));
  EXPECT_EQ(second.kind, SqlKind::kDeallocate);
  EXPECT_EQ(second.name, "") << "refused as a whole, never rewritten";
  EXPECT_EQ(ClassifySql(whole("select 1 /* ; */ ;\n-- x\n DeAlLoCaTe prepare \"pgf_1\"")).kind,
            SqlKind::kDeallocate);
  EXPECT_EQ(ClassifySql(whole("select 1; prepare q as select 2")).kind, SqlKind::kPrepare);
  EXPECT_EQ(ClassifySql(whole("select ';'; EXECUTE q")).kind, SqlKind::kExecute);
  EXPECT_EQ(ClassifySql(whole("select 1;; select 2; deallocate all")).kind, SqlKind::kOther)
      << "DEALLOCATE ALL shows in its command tag";
  EXPECT_EQ(ClassifySql(whole("select 1; prepare transaction 'x'")).kind, SqlKind::kOther);
  // Semicolons and keywords inside strings, identifiers, dollar quotes and comments.
  EXPECT_EQ(ClassifySql(whole("select '; deallocate x'; select 2")).kind, SqlKind::kOther);
  EXPECT_EQ(ClassifySql(whole("select 'it''s; execute x'")).kind, SqlKind::kOther);
  EXPECT_EQ(ClassifySql(whole("select E'\\'; execute x'")).kind, SqlKind::kOther);
  EXPECT_EQ(ClassifySql(whole("select \"a;execute x\" from t")).kind, SqlKind::kOther);
  EXPECT_EQ(ClassifySql(whole("do $f$ begin execute 'deallocate x'; end $f$; select 1")).kind,
            SqlKind::kOther);
  EXPECT_EQ(ClassifySql(whole("select $$;$$, $1; select 2")).kind, SqlKind::kOther);
  EXPECT_EQ(ClassifySql(whole("select 1 -- ; execute x\n")).kind, SqlKind::kOther);
  // A prefix: its last statement may be cut short ("execute" of "executed_at").
  EXPECT_EQ(ClassifySql("select 1; execute").kind, SqlKind::kOther);
  EXPECT_EQ(ClassifySql("select 1; execute q; select").kind, SqlKind::kExecute);
  // One statement, as before.
  EXPECT_EQ(ClassifySql(whole("DEALLOCATE s1;")).name, "s1");
}

TEST_F(PreparedStatementsTest, ForeignDeallocateOrPrepareNeedsAReset) {
  EXPECT_FALSE(server_.NeedsReset());
  server_.OnCommandComplete("SELECT 1", &client_);
  EXPECT_FALSE(server_.NeedsReset());
  server_.OnCommandComplete("DEALLOCATE", &client_);
  EXPECT_TRUE(server_.NeedsReset()) << "which statement went is unknown";
  server_.OnCommandComplete("DEALLOCATE ALL", nullptr);
  EXPECT_FALSE(server_.NeedsReset()) << "the server is empty: in step again";
  server_.OnCommandComplete("PREPARE", &client_);
  EXPECT_TRUE(server_.NeedsReset());
  server_.ClearPrepared();
  server_.OnCommandComplete("PREPARE TRANSACTION", &client_);
  EXPECT_FALSE(server_.NeedsReset());
}

TEST_F(PreparedStatementsTest, SyncPointsSwallowedByCopyLeaveTheFifo) {
  // Query; COPY ... Sync (ignored by PostgreSQL in COPY IN); Parse s1; Sync.
  server_.OnSyncPoint();
  server_.OnSyncPoint();
  server_.OnParse(ParseBody("s1", "select 1"), client_, 10);
  server_.OnSyncPoint();
  server_.DropSyncPoints(/*skip=*/1, /*count=*/1);
  EXPECT_FALSE(server_.OnReadyForQuery(&client_));  // The Query's.
  EXPECT_EQ(server_.OnResponse('1'), ResponseAction::kForward) << "in step with PostgreSQL";
  EXPECT_FALSE(server_.OnReadyForQuery(&client_));
  EXPECT_FALSE(server_.AnswersPending());
}

TEST(ClassifySqlTest, RejectionNamesTheCauseAndTheWayOut) {
  const std::string message = RejectionMessage(SqlKind::kPrepare, "transaction");
  EXPECT_NE(message.find("SQL PREPARE is not supported in transaction pooling mode"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("protocol-level prepared statements"), std::string::npos);
  std::vector<Msg> query = Split(RejectionQuery(SqlKind::kExecute, "statement"));
  ASSERT_EQ(query.size(), 1u);
  EXPECT_EQ(query[0].type, 'Q');
  EXPECT_NE(query[0].body.find("feature_not_supported"), std::string::npos);
  EXPECT_NE(query[0].body.find("driver''s"), std::string::npos) << "quotes are escaped";
}

}  // namespace
}  // namespace pgfleet::agent::ps
