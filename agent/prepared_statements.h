// Protocol-level named prepared statements in transaction and statement pooling modes
// (max_prepared_statements, as PgBouncer 1.21+).
//
// A client's named Parse is recorded in the client's own map (its name -> the statement) and
// sent to PostgreSQL under a name of the agent's: "pgf_<id>", where identical statements (same
// query text and parameter types) share one id, so a server keeps one copy for every client
// that prepared the same thing. Each server connection keeps an LRU of the statements prepared
// on it; a Bind or Describe naming a statement the server lacks gets the Parse injected first.
//
// Responses stay in step without parsing every server message: every Parse and Close the
// agent sends (the client's, rewritten, or its own) is answered by exactly one ParseComplete
// ('1') or CloseComplete ('3') unless an error makes PostgreSQL skip to the next Sync, and the
// answers come back in order. So a FIFO of what to do with each '1'/'3' (forward, swallow, or
// turn into a ParseComplete), cut at every message that ends in ReadyForQuery, is enough.
//
// What a Parse or Close changes (the server's LRU, the client's names) is recorded when it is
// sent, for the messages after it in the same Sync group: if PostgreSQL skips or refuses it,
// it skips every message after it up to the Sync as well. At the ReadyForQuery, whatever was
// never answered is undone, newest first. A message after that Sync, though, must not be
// rewritten on the strength of a change still unanswered (PostgreSQL may skip it): it waits
// for that ReadyForQuery (MustWait). When
// the agent owes the client a response without work on the server (a ParseComplete for a
// statement the server already has, a CloseComplete for a client Close), it sends a Close of a
// name that never exists, which PostgreSQL answers with '3' in order with everything else,
// in any transaction state, and with no side effect.
//
// No sockets here: the connections call in with message bodies and get bytes back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"

namespace pgfleet::agent::ps {

// One distinct statement: query text plus parameter types, shared by every client that
// prepared it and every server that has it.
struct Statement {
  uint64_t id = 0;
  std::string server_name;  // "pgf_<id>"
  std::string definition;   // Parse body after the name: query\0 int16 n, n x int32 oid.
  ~Statement();
};
using StatementPtr = std::shared_ptr<const Statement>;

// The shared Statement for `definition` (created on first use; released with its last user).
StatementPtr Intern(std::string_view definition);
// The shared Statement for `definition` if one is alive, without creating it.
StatementPtr FindInterned(std::string_view definition);
// Distinct statements alive in the process (for tests and SHOW).
size_t InternedCount();

// What one client may hold in named statements: the agent keeps each definition to prepare it
// again on other servers, so without a bound a client could make it keep any amount of text.
// Definitions shared with other clients are counted for each client that names them.
inline constexpr size_t kMaxClientStatements = 10000;
inline constexpr size_t kMaxClientStatementBytes = size_t{32} << 20;

// A client's named statements, by the client's names.
class ClientStatements {
 public:
  const StatementPtr* Find(std::string_view name) const;
  void Set(std::string_view name, StatementPtr statement);
  void Erase(std::string_view name);
  // Erases `name` only if it still maps to `statement` (undoing a Parse that failed).
  void EraseIf(std::string_view name, const Statement* statement);
  void Clear() {
    map_.clear();
    bytes_ = 0;
  }
  size_t size() const { return map_.size(); }
  // Bytes of the names and definitions held (what kMaxClientStatementBytes bounds).
  size_t bytes() const { return bytes_; }
  // Whether a new name `name` for `definition` stays within the limits above.
  bool HasRoomFor(std::string_view name, std::string_view definition) const {
    return map_.size() < kMaxClientStatements &&
           bytes_ + name.size() + definition.size() <= kMaxClientStatementBytes;
  }

 private:
  absl::flat_hash_map<std::string, StatementPtr> map_;
  size_t bytes_ = 0;
};

// What to do with a ParseComplete / CloseComplete from the server.
enum class ResponseAction { kForward, kSwallow, kAsParseComplete, kOutOfStep };

// Per server connection: the statements prepared there (LRU) and the FIFO of expected
// ParseComplete/CloseComplete answers.
class ServerStatements {
 public:
  // Parse messages the agent has sent this server for clients' named statements (SHOW STATS'
  // server_parse_count).
  uint64_t parses_sent() const { return parses_sent_; }
  bool Has(uint64_t id) const { return lru_index_.contains(id); }
  // Prepared and confirmed by PostgreSQL (its ParseComplete arrived).
  bool HasConfirmed(uint64_t id) const {
    auto it = lru_index_.find(id);
    return it != lru_index_.end() && it->second.confirmed;
  }
  size_t size() const { return lru_index_.size(); }
  bool AnswersPending() const { return !expected_.empty(); }
  // Forgets everything prepared (after DISCARD ALL / DEALLOCATE ALL ran on the server).
  void ClearPrepared();
  // SQL changed the server's statements in a way the agent cannot follow (a DEALLOCATE or
  // PREPARE it did not rewrite, a Bind answered "does not exist"): the server must run
  // DEALLOCATE ALL before it serves another client. Cleared by ClearPrepared().
  void MarkOutOfStep() { out_of_step_ = true; }
  bool NeedsReset() const { return out_of_step_; }
  // PostgreSQL consumed `count` of the client's sync points without answering (Syncs sent
  // during COPY IN): drops their entries, skipping the first `skip` sync points.
  void DropSyncPoints(size_t skip, size_t count);
  // Whether a client message naming its statement `client_name` (for a Parse, also with
  // `parse_definition`) must wait before it is rewritten: a Parse or Close of that name or of
  // that statement went out before a Sync whose ReadyForQuery has not arrived, so whether
  // PostgreSQL ran it or skipped it after an error is not known yet.
  bool MustWait(std::string_view client_name, const ClientStatements& client,
                std::string_view parse_definition = {}) const;

  // -- Client messages. Each returns the bytes to send to the server in place of the client's
  // message, having queued the answers to expect. `capacity` is max_prepared_statements.
  std::string OnParse(std::string_view body, ClientStatements& client, size_t capacity);
  std::string OnBind(std::string_view body, ClientStatements& client, size_t capacity);
  // A Bind rewritten in stream: the statement name is at the front of the message, so only the
  // header, portal and name are replaced and the rest (parameters, formats: `rest_size` bytes)
  // follows unchanged, as it arrives, without the agent holding it. Returns what goes in place
  // of the header, portal and name (after any Parse the server lacks), or nullopt when the
  // client has no statement `name` (the Bind goes as it came).
  std::optional<std::string> OnBindStart(std::string_view portal, std::string_view name,
                                         size_t rest_size, ClientStatements& client,
                                         size_t capacity);
  // Describe ('D') or Close ('C').
  std::string OnDescribe(std::string_view body, ClientStatements& client, size_t capacity);
  std::string OnClose(std::string_view body, ClientStatements& client);
  // A message that ends in ReadyForQuery (Sync, Query, FunctionCall) went to the server.
  void OnUnnamedParse() { Push({Expect::kParseForward, nullptr, {}, nullptr}); }
  void OnSyncPoint() { Push({Expect::kSyncPoint, nullptr, {}, nullptr}); }
  // A simple-query DEALLOCATE of one of the client's statements: the query to send instead
  // (PostgreSQL answers it with the same "DEALLOCATE" tag and drops the shared copy).
  std::string OnDeallocate(std::string_view client_name, ClientStatements& client, size_t capacity);

  // -- Server messages.
  ResponseAction OnResponse(char type);  // '1' or '3'.
  // ReadyForQuery: answers still expected before it were skipped by PostgreSQL after an
  // error, so what they prepared does not exist (here, and for the client if it asked).
  // Returns true when this ReadyForQuery answers a Sync of the agent's own (swallow it).
  bool OnReadyForQuery(ClientStatements* client);
  // CommandComplete tag; DISCARD ALL and DEALLOCATE ALL empty the server (and the client's
  // map, as they would on a direct connection when the client ran them). A DEALLOCATE the
  // agent did not send, or a PREPARE, leaves the server out of step (MarkOutOfStep).
  void OnCommandComplete(std::string_view tag, ClientStatements* client);

 private:
  uint64_t parses_sent_ = 0;
  enum class Expect : uint8_t {
    kParseForward,  // '1' to the client.
    kParseSwallow,  // '1' of an injected Parse.
    kCloseForward,  // '3' to the client (client_name: the statement Close took from it).
    kCloseSwallow,  // '3' of an eviction (statement: the one evicted).
    kCloseAsParse,  // '3' that stands for a ParseComplete the client is owed.
    kSyncPoint,     // ReadyForQuery.
    kSyncSwallow,   // ReadyForQuery of a Sync of the agent's own.
  };
  struct Expected {
    Expect kind;
    // Set when this Parse prepares `statement` on the server, or this Close evicts it: undone
    // if never answered.
    StatementPtr statement;
    // Set when this Parse gave the client's map this name, or this Close took it: undone
    // likewise.
    std::string client_name;
    StatementPtr client_statement;
  };
  static bool IsSyncPoint(Expect kind) {
    return kind == Expect::kSyncPoint || kind == Expect::kSyncSwallow;
  }
  // Appends to expected_, keeping open_group_size_ and the in-doubt counts. Inline, as
  // push_back was: every Query and Sync comes here.
  void Push(Expected&& expected) {
    if (IsSyncPoint(expected.kind)) {
      if (open_group_names_ > 0) CloseOpenGroup();
      open_group_size_ = 0;
    } else {
      ++open_group_size_;
      if (NamesSomething(expected)) ++open_group_names_;
    }
    expected_.push_back(std::move(expected));
  }
  // A sync point closes the group being sent: its entries are counted in doubt.
  void CloseOpenGroup();
  // Removes the first `count` entries of expected_ (answered, or skipped and undone).
  void PopFront(size_t count);
  // Adds (+1) or takes away (-1) what one entry names to or from the in-doubt counts.
  static bool NamesSomething(const Expected& expected) {
    return !expected.client_name.empty() || expected.statement != nullptr;
  }
  void CountInDoubt(const Expected& expected, int delta) {
    if (NamesSomething(expected)) CountNamesInDoubt(expected, delta);
  }
  void CountNamesInDoubt(const Expected& expected, int delta);
  // Reverts what an entry PostgreSQL never answered had recorded.
  void Undo(const Expected& expected, ClientStatements* client);

  // Makes sure the server has `statement` (injecting a Parse and evictions into `out`).
  void Ensure(const StatementPtr& statement, size_t capacity, std::string& out);
  // Adds to the LRU, sending Close for what falls out.
  void Insert(const StatementPtr& statement, size_t capacity, std::string& out);
  void Touch(uint64_t id);
  void Forget(uint64_t id);

  std::list<StatementPtr> lru_;  // Most recently used first.
  struct Slot {
    std::list<StatementPtr>::iterator position;
    bool confirmed = false;
  };
  absl::flat_hash_map<uint64_t, Slot> lru_index_;
  std::deque<Expected> expected_;
  // How many entries at the back of expected_ follow its last sync point: the Sync group being
  // sent, whose messages stand or fall together (MustWait looks only before it).
  size_t open_group_size_ = 0;
  // How many of those name something (at least that many: entries of the group that leave
  // from the front are not subtracted). Unnamed Parses and plain Syncs then cost no walk.
  size_t open_group_names_ = 0;
  // What the entries before that group (in doubt until their ReadyForQuery) name, counted, so
  // that MustWait is a lookup rather than a scan of every unanswered group.
  absl::flat_hash_map<std::string, uint32_t> doubt_names_;
  absl::flat_hash_map<uint64_t, uint32_t> doubt_ids_;
  bool out_of_step_ = false;
  // A simple-query DEALLOCATE in flight: forgotten when PostgreSQL confirms it.
  StatementPtr deallocating_;
  std::string deallocating_client_name_;
};

// -- Simple-query SQL that a transaction pooler cannot honour.
enum class SqlKind { kOther, kPrepare, kExecute, kDeallocate, kDeallocateAll };
struct SqlCommand {
  SqlKind kind = SqlKind::kOther;
  std::string name;  // For kDeallocate: the statement name as PostgreSQL would fold it.
};
// Classifies by the leading keyword(s) after whitespace and comments, case-insensitively.
// `sql` may be a prefix of the query (the whole query when it holds the terminating NUL).
// A query of several statements is classified by the first one that PREPAREs, EXECUTEs or
// DEALLOCATEs (by name), with `name` empty: such a query is refused as a whole.
SqlCommand ClassifySql(std::string_view sql);
// The Query message that makes PostgreSQL itself raise the explanatory error, so the error
// arrives in order and the transaction state changes exactly as for any failed statement.
std::string RejectionQuery(SqlKind kind, std::string_view pool_mode);
// The text of that error, for answering a client that holds no server.
std::string RejectionMessage(SqlKind kind, std::string_view pool_mode);
inline constexpr char kRejectionHint[] =
    "Use protocol-level prepared statements (your driver's prepareThreshold / prepare=True / "
    "named queries), or session pooling mode.";

// Message builders (frontend messages the agent sends on its own).
std::string ParseMessage(std::string_view name, std::string_view definition);
std::string CloseStatementMessage(std::string_view name);

}  // namespace pgfleet::agent::ps
