#include "agent/prepared_statements.h"

#include <algorithm>
#include <iterator>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "agent/pg/protocol.h"

namespace pgfleet::agent::ps {
namespace {

// Closed to produce a CloseComplete that PostgreSQL sends in order with everything else:
// closing a statement that does not exist is not an error, and this name is never prepared.
constexpr char kNeverPrepared[] = "pgf_none";

// The process's distinct statements by definition. Leaked on purpose: statements held by
// connections may outlive static destruction at exit. The agent is single-threaded.
absl::flat_hash_map<std::string, std::weak_ptr<const Statement>>& Registry() {
  static auto* registry = new absl::flat_hash_map<std::string, std::weak_ptr<const Statement>>();
  return *registry;
}
uint64_t g_next_id = 1;

std::string Message(char type, std::string_view body) {
  return pg::MessageBuilder(type).Bytes(body).Finish();
}

// Splits a C string off the front of `body`; nullopt if there is no terminator.
std::optional<std::string_view> TakeCString(std::string_view& body) {
  const size_t end = body.find('\0');
  if (end == std::string_view::npos) return std::nullopt;
  std::string_view value = body.substr(0, end);
  body.remove_prefix(end + 1);
  return value;
}

}  // namespace

Statement::~Statement() {
  auto& registry = Registry();
  auto it = registry.find(definition);
  // A new statement with the same definition may already have replaced this entry.
  if (it != registry.end() && it->second.expired()) registry.erase(it);
}

StatementPtr Intern(std::string_view definition) {
  auto& registry = Registry();
  auto [it, inserted] = registry.try_emplace(std::string(definition));
  if (!inserted) {
    if (StatementPtr existing = it->second.lock()) return existing;
  }
  auto statement = std::make_shared<Statement>();
  statement->id = g_next_id++;
  statement->server_name = absl::StrCat("pgf_", statement->id);
  statement->definition = std::string(definition);
  it->second = statement;
  return statement;
}

StatementPtr FindInterned(std::string_view definition) {
  auto& registry = Registry();
  auto it = registry.find(absl::string_view(definition.data(), definition.size()));
  return it == registry.end() ? nullptr : it->second.lock();
}

size_t InternedCount() { return Registry().size(); }

// ---- ClientStatements -------------------------------------------------------------------------

const StatementPtr* ClientStatements::Find(std::string_view name) const {
  auto it = map_.find(absl::string_view(name.data(), name.size()));
  return it == map_.end() ? nullptr : &it->second;
}

void ClientStatements::Set(std::string_view name, StatementPtr statement) {
  StatementPtr& slot = map_[absl::string_view(name.data(), name.size())];
  bytes_ -= slot == nullptr ? 0 : name.size() + slot->definition.size();
  bytes_ += name.size() + statement->definition.size();
  slot = std::move(statement);
}

void ClientStatements::Erase(std::string_view name) {
  auto it = map_.find(absl::string_view(name.data(), name.size()));
  if (it == map_.end()) return;
  bytes_ -= name.size() + it->second->definition.size();
  map_.erase(it);
}

void ClientStatements::EraseIf(std::string_view name, const Statement* statement) {
  auto it = map_.find(absl::string_view(name.data(), name.size()));
  if (it != map_.end() && it->second.get() == statement) {
    bytes_ -= name.size() + statement->definition.size();
    map_.erase(it);
  }
}

// ---- ServerStatements: the LRU ----------------------------------------------------------------

void ServerStatements::ClearPrepared() {
  lru_.clear();
  lru_index_.clear();
  out_of_step_ = false;
}

void ServerStatements::DropSyncPoints(size_t skip, size_t count) {
  for (auto it = expected_.begin(); it != expected_.end() && count > 0;) {
    if (it->kind != Expect::kSyncPoint) {
      ++it;
    } else if (skip > 0) {
      --skip;
      ++it;
    } else {
      it = expected_.erase(it);
      --count;
    }
  }
}

void ServerStatements::Touch(uint64_t id) {
  auto it = lru_index_.find(id);
  if (it != lru_index_.end()) lru_.splice(lru_.begin(), lru_, it->second.position);
}

void ServerStatements::Forget(uint64_t id) {
  auto it = lru_index_.find(id);
  if (it == lru_index_.end()) return;
  lru_.erase(it->second.position);
  lru_index_.erase(it);
}

void ServerStatements::Insert(const StatementPtr& statement, size_t capacity, std::string& out) {
  lru_.push_front(statement);
  lru_index_[statement->id] = Slot{lru_.begin(), false};
  while (lru_.size() > capacity && lru_.size() > 1) {
    // The least recently used goes; a client that needs it again gets it re-prepared.
    const StatementPtr& victim = lru_.back();
    out += CloseStatementMessage(victim->server_name);
    expected_.push_back({Expect::kCloseSwallow, victim, {}, nullptr});
    lru_index_.erase(victim->id);
    lru_.pop_back();
  }
}

void ServerStatements::Ensure(const StatementPtr& statement, size_t capacity, std::string& out) {
  if (Has(statement->id)) {
    Touch(statement->id);
    return;
  }
  Insert(statement, capacity, out);
  out += ParseMessage(statement->server_name, statement->definition);
  expected_.push_back({Expect::kParseSwallow, statement, {}, nullptr});
}

// ---- ServerStatements: client messages ---------------------------------------------------------

std::string ServerStatements::OnParse(std::string_view body, ClientStatements& client,
                                      size_t capacity) {
  std::string_view rest = body;
  std::optional<std::string_view> name = TakeCString(rest);
  if (!name.has_value() || name->empty()) {
    // Unnamed (or malformed, which PostgreSQL will reject): as it came.
    expected_.push_back({Expect::kParseForward, nullptr, {}, nullptr});
    return Message('P', body);
  }
  std::string out;
  if (const StatementPtr* existing = client.Find(*name)) {
    // PostgreSQL refuses to redefine a name (42P05). Let it say so: re-parse the server copy,
    // which exists by then. The error names the agent's statement, not the client's.
    StatementPtr statement = *existing;
    Ensure(statement, capacity, out);
    out += ParseMessage(statement->server_name, rest);
    expected_.push_back({Expect::kParseForward, nullptr, {}, nullptr});
    return out;
  }
  StatementPtr statement = Intern(rest);
  client.Set(*name, statement);
  Expected expected{Expect::kParseForward, nullptr, std::string(*name), statement};
  if (Has(statement->id)) {
    Touch(statement->id);
    out += CloseStatementMessage(kNeverPrepared);
    expected.kind = Expect::kCloseAsParse;
  } else {
    Insert(statement, capacity, out);
    out += ParseMessage(statement->server_name, statement->definition);
    expected.statement = statement;
  }
  expected_.push_back(std::move(expected));
  return out;
}

std::string ServerStatements::OnBind(std::string_view body, ClientStatements& client,
                                     size_t capacity) {
  std::string_view rest = body;
  std::optional<std::string_view> portal = TakeCString(rest);
  std::optional<std::string_view> name = portal ? TakeCString(rest) : std::nullopt;
  if (!name.has_value() || name->empty()) return Message('B', body);
  std::optional<std::string> out = OnBindStart(*portal, *name, rest.size(), client, capacity);
  if (!out.has_value()) return Message('B', body);
  out->append(rest);
  return *std::move(out);
}

std::optional<std::string> ServerStatements::OnBindStart(std::string_view portal,
                                                         std::string_view name, size_t rest_size,
                                                         ClientStatements& client,
                                                         size_t capacity) {
  const StatementPtr* statement = name.empty() ? nullptr : client.Find(name);
  if (statement == nullptr) return std::nullopt;
  StatementPtr held = *statement;
  // The length field counts itself, the portal and the new name with their terminators, and
  // the rest of the client's message.
  const size_t length = 4 + portal.size() + 1 + held->server_name.size() + 1 + rest_size;
  if (length > 0x7fffffff) return std::nullopt;  // PostgreSQL refuses it either way.
  std::string out;
  Ensure(held, capacity, out);
  out.reserve(out.size() + 1 + length - rest_size);
  out.push_back('B');
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((length >> shift) & 0xff));
  }
  out.append(portal);
  out.push_back('\0');
  out.append(held->server_name);
  out.push_back('\0');
  return out;
}

std::string ServerStatements::OnDescribe(std::string_view body, ClientStatements& client,
                                         size_t capacity) {
  if (body.size() < 2 || body[0] != 'S') return Message('D', body);
  std::string_view rest = body.substr(1);
  std::optional<std::string_view> name = TakeCString(rest);
  const StatementPtr* statement = name && !name->empty() ? client.Find(*name) : nullptr;
  if (statement == nullptr) return Message('D', body);
  StatementPtr held = *statement;
  std::string out;
  Ensure(held, capacity, out);
  out += pg::MessageBuilder('D').Byte('S').CString(held->server_name).Finish();
  return out;
}

std::string ServerStatements::OnClose(std::string_view body, ClientStatements& client) {
  std::string_view rest = body.size() >= 2 ? body.substr(1) : std::string_view();
  std::optional<std::string_view> name = TakeCString(rest);
  if (body.empty() || body[0] != 'S' || !name.has_value() || name->empty()) {
    expected_.push_back({Expect::kCloseForward, nullptr, {}, nullptr});
    return Message('C', body);
  }
  // The client's name goes; the server copy stays cached for whoever prepares it next.
  // Closing a name that does not exist is no error in PostgreSQL either.
  Expected expected{Expect::kCloseForward, nullptr, {}, nullptr};
  if (const StatementPtr* closed = client.Find(*name)) {
    // Given back if PostgreSQL skips this Close after an error.
    expected.client_name = std::string(*name);
    expected.client_statement = *closed;
    client.Erase(*name);
  }
  expected_.push_back(std::move(expected));
  return CloseStatementMessage(kNeverPrepared);
}

std::string ServerStatements::OnDeallocate(std::string_view client_name, ClientStatements& client,
                                           size_t capacity) {
  const StatementPtr* found = client_name.empty() ? nullptr : client.Find(client_name);
  if (found == nullptr) return {};
  StatementPtr statement = *found;
  std::string out;
  if (!Has(statement->id)) {
    // DEALLOCATE of a name the server lacks fails; prepare it first, in its own Sync so an
    // answer of the simple query cannot be skipped. Both answers stay with the agent.
    Insert(statement, capacity, out);
    out += ParseMessage(statement->server_name, statement->definition);
    expected_.push_back({Expect::kParseSwallow, statement, {}, nullptr});
    out += pg::MessageBuilder('S').Finish();
    expected_.push_back({Expect::kSyncSwallow, nullptr, {}, nullptr});
  }
  deallocating_ = statement;
  deallocating_client_name_ = std::string(client_name);
  out += pg::Query(absl::StrCat("DEALLOCATE ", statement->server_name));
  return out;
}

// ---- ServerStatements: server messages ---------------------------------------------------------

ResponseAction ServerStatements::OnResponse(char type) {
  if (expected_.empty()) return ResponseAction::kOutOfStep;
  const Expect kind = expected_.front().kind;
  ResponseAction action = ResponseAction::kOutOfStep;
  if (type == '1') {
    if (kind == Expect::kParseForward) action = ResponseAction::kForward;
    if (kind == Expect::kParseSwallow) action = ResponseAction::kSwallow;
  } else if (type == '3') {
    if (kind == Expect::kCloseForward) action = ResponseAction::kForward;
    if (kind == Expect::kCloseSwallow) action = ResponseAction::kSwallow;
    if (kind == Expect::kCloseAsParse) action = ResponseAction::kAsParseComplete;
  }
  if (action == ResponseAction::kOutOfStep) return action;
  if (type == '1' && expected_.front().statement != nullptr) {
    auto it = lru_index_.find(expected_.front().statement->id);
    if (it != lru_index_.end()) it->second.confirmed = true;
  }
  expected_.pop_front();
  return action;
}

bool ServerStatements::OnReadyForQuery(ClientStatements* client) {
  // Entries still here before the sync point were never answered: PostgreSQL refused the
  // first of them and skipped the rest up to the Sync. Each had recorded its effect as it was
  // sent, on top of the ones before it, so they are undone newest first (an eviction's Close
  // and a later Parse of the same statement leave it prepared, as on the server).
  size_t unanswered = 0;
  bool own_sync = false;
  while (unanswered < expected_.size()) {
    const Expect kind = expected_[unanswered].kind;
    if (kind == Expect::kSyncPoint || kind == Expect::kSyncSwallow) {
      own_sync = kind == Expect::kSyncSwallow;
      break;
    }
    ++unanswered;
  }
  for (size_t i = unanswered; i > 0; --i) Undo(expected_[i - 1], client);
  const size_t popped = std::min(unanswered + 1, expected_.size());
  expected_.erase(expected_.begin(), expected_.begin() + static_cast<std::ptrdiff_t>(popped));
  // The agent's own Sync comes before the DEALLOCATE it prepared for.
  if (own_sync) return true;
  deallocating_.reset();
  return false;
}

void ServerStatements::Undo(const Expected& expected, ClientStatements* client) {
  switch (expected.kind) {
    case Expect::kParseForward:
    case Expect::kParseSwallow:
    case Expect::kCloseAsParse:
      if (expected.statement != nullptr) Forget(expected.statement->id);
      if (!expected.client_name.empty() && client != nullptr) {
        client->EraseIf(expected.client_name, expected.client_statement.get());
      }
      break;
    case Expect::kCloseSwallow:
      // The evicted statement is still on the server: least recently used again, so the next
      // insertion closes it.
      if (expected.statement != nullptr && !Has(expected.statement->id)) {
        lru_.push_back(expected.statement);
        lru_index_[expected.statement->id] = Slot{std::prev(lru_.end()), true};
      }
      break;
    case Expect::kCloseForward:
      // The client still has the statement it asked to close.
      if (!expected.client_name.empty() && client != nullptr &&
          client->Find(expected.client_name) == nullptr) {
        client->Set(expected.client_name, expected.client_statement);
      }
      break;
    case Expect::kSyncPoint:
    case Expect::kSyncSwallow:
      break;
  }
}

bool ServerStatements::MustWait(std::string_view client_name, const ClientStatements& client,
                                std::string_view parse_definition) const {
  // Entries after the last sync point are in the Sync group being sent: they stand or fall
  // with the message being rewritten. Only the ones before it are in doubt.
  size_t in_doubt = expected_.size();
  while (in_doubt > 0 && expected_[in_doubt - 1].kind != Expect::kSyncPoint &&
         expected_[in_doubt - 1].kind != Expect::kSyncSwallow) {
    --in_doubt;
  }
  if (in_doubt == 0) return false;
  const StatementPtr* named = client_name.empty() ? nullptr : client.Find(client_name);
  const uint64_t named_id = named != nullptr ? (*named)->id : 0;
  StatementPtr parsed = parse_definition.empty() ? nullptr : FindInterned(parse_definition);
  const uint64_t parsed_id = parsed != nullptr ? parsed->id : 0;
  for (size_t i = 0; i < in_doubt; ++i) {
    const Expected& expected = expected_[i];
    if (!client_name.empty() && expected.client_name == client_name) return true;
    if (expected.statement != nullptr && expected.statement->id != 0 &&
        (expected.statement->id == named_id || expected.statement->id == parsed_id)) {
      return true;
    }
  }
  return false;
}

void ServerStatements::OnCommandComplete(std::string_view tag, ClientStatements* client) {
  if (tag == "DISCARD ALL" || tag == "DEALLOCATE ALL") {
    ClearPrepared();
    if (client != nullptr) client->Clear();
  } else if (tag == "DEALLOCATE" && deallocating_ != nullptr) {
    Forget(deallocating_->id);
    if (client != nullptr) client->EraseIf(deallocating_client_name_, deallocating_.get());
    deallocating_.reset();
  } else if (tag == "DEALLOCATE" || tag == "PREPARE") {
    // Not the agent's: which statement it dropped or whether the new one shadows a name the
    // agent will use cannot be told from the tag.
    out_of_step_ = true;
  }
}

// ---- SQL classification ------------------------------------------------------------------------

namespace {

// Skips whitespace and comments (-- to end of line, nested /* */).
void SkipSpace(std::string_view& sql) {
  while (!sql.empty()) {
    if (absl::ascii_isspace(static_cast<unsigned char>(sql[0]))) {
      sql.remove_prefix(1);
    } else if (sql.size() >= 2 && sql[0] == '-' && sql[1] == '-') {
      const size_t end = sql.find('\n');
      sql = end == std::string_view::npos ? std::string_view() : sql.substr(end + 1);
    } else if (sql.size() >= 2 && sql[0] == '/' && sql[1] == '*') {
      int depth = 0;
      size_t i = 0;
      while (i + 1 < sql.size()) {
        if (sql[i] == '/' && sql[i + 1] == '*') {
          ++depth;
          i += 2;
        } else if (sql[i] == '*' && sql[i + 1] == '/') {
          i += 2;
          if (--depth == 0) break;
        } else {
          ++i;
        }
      }
      sql = depth == 0 ? sql.substr(i) : std::string_view();
    } else {
      return;
    }
  }
}

bool IdentChar(char c) {
  const auto u = static_cast<unsigned char>(c);
  return absl::ascii_isalnum(u) || c == '_' || c == '$' || u >= 0x80;
}

// The next word, lower-cased; or a double-quoted identifier, verbatim (quoted = true).
std::string NextWord(std::string_view& sql, bool* quoted = nullptr) {
  SkipSpace(sql);
  if (quoted != nullptr) *quoted = false;
  std::string word;
  if (!sql.empty() && sql[0] == '"') {
    size_t i = 1;
    while (i < sql.size()) {
      if (sql[i] == '"') {
        if (i + 1 < sql.size() && sql[i + 1] == '"') {
          word.push_back('"');
          i += 2;
          continue;
        }
        if (quoted != nullptr) *quoted = true;
        sql.remove_prefix(i + 1);
        return word;
      }
      word.push_back(sql[i++]);
    }
    sql = {};
    return {};
  }
  size_t i = 0;
  while (i < sql.size() && IdentChar(sql[i])) ++i;
  word = absl::AsciiStrToLower(absl::string_view(sql.data(), i));
  sql.remove_prefix(i);
  return word;
}

// Where the statement at the start of `sql` ends: the index of its top-level ';', or npos.
// Skips comments, 'strings' (E'' with backslash escapes), "identifiers" and $tag$ bodies.
size_t StatementEnd(std::string_view sql) {
  size_t i = 0;
  while (i < sql.size()) {
    const char c = sql[i];
    const bool after_word = i > 0 && IdentChar(sql[i - 1]);
    if (c == ';') return i;
    if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      const size_t end = sql.find('\n', i);
      if (end == std::string_view::npos) return end;
      i = end + 1;
    } else if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
      std::string_view rest = sql.substr(i);
      SkipSpace(rest);  // Skips the (nested) comment and any space after it.
      if (rest.empty()) return std::string_view::npos;
      i = sql.size() - rest.size();
    } else if (c == '\'' || c == '"') {
      const bool backslashes = c == '\'' && after_word &&
                               (sql[i - 1] == 'e' || sql[i - 1] == 'E') &&
                               (i < 2 || !IdentChar(sql[i - 2]));
      ++i;
      while (i < sql.size()) {
        if (backslashes && sql[i] == '\\') {
          i += 2;
        } else if (sql[i] == c) {
          if (i + 1 < sql.size() && sql[i + 1] == c) {
            i += 2;
          } else {
            break;
          }
        } else {
          ++i;
        }
      }
      if (i >= sql.size()) return std::string_view::npos;
      ++i;
    } else if (c == '$' && !after_word) {
      size_t tag_end = i + 1;
      if (tag_end < sql.size() && absl::ascii_isdigit(static_cast<unsigned char>(sql[tag_end]))) {
        ++i;  // $1: a parameter.
        continue;
      }
      while (tag_end < sql.size() && IdentChar(sql[tag_end]) && sql[tag_end] != '$') ++tag_end;
      if (tag_end >= sql.size() || sql[tag_end] != '$') {
        ++i;
        continue;
      }
      const std::string_view tag = sql.substr(i, tag_end - i + 1);
      const size_t close = sql.find(tag, tag_end + 1);
      if (close == std::string_view::npos) return close;
      i = close + tag.size();
    } else {
      ++i;
    }
  }
  return std::string_view::npos;
}

bool IsBlank(std::string_view sql) {
  SkipSpace(sql);
  return sql.empty();
}

SqlCommand ClassifyStatement(std::string_view sql);

// One statement of several: what makes the whole query refused, if anything.
std::optional<SqlCommand> RefusedInBatch(std::string_view statement) {
  SqlCommand command = ClassifyStatement(statement);
  if (command.kind == SqlKind::kOther || command.kind == SqlKind::kDeallocateAll) {
    return std::nullopt;
  }
  command.name.clear();  // Never matches a client statement: the query is refused.
  return command;
}

}  // namespace

SqlCommand ClassifySql(std::string_view sql) {
  // The query text ends at its terminator when the whole message is here; otherwise `sql` is
  // a prefix, whose last statement may be cut short.
  const size_t terminator = sql.find('\0');
  const bool complete = terminator != std::string_view::npos;
  if (complete) sql = sql.substr(0, terminator);
  // Several statements: one of them that uses SQL-level prepared statements makes the query
  // refused as a whole (it cannot be rewritten around it). DEALLOCATE ALL passes: its command
  // tag tells the agent the server's statements are gone. No allocation on the way: this runs
  // for every simple query.
  std::string_view first;
  size_t statements = 0;
  std::string_view rest = sql;
  for (;;) {
    const size_t end = StatementEnd(rest);
    const bool last = end == std::string_view::npos;
    const std::string_view statement = rest.substr(0, end);
    if (!IsBlank(statement)) {
      ++statements;
      if (statements == 1) {
        first = statement;
      } else {
        // The first statement waits until a second shows the query has several.
        if (statements == 2) {
          if (std::optional<SqlCommand> refused = RefusedInBatch(first)) return *refused;
        }
        if (!last || complete) {
          if (std::optional<SqlCommand> refused = RefusedInBatch(statement)) return *refused;
        }
      }
    }
    if (last) break;
    rest.remove_prefix(end + 1);
  }
  return statements <= 1 ? ClassifyStatement(sql) : SqlCommand{};
}

namespace {

SqlCommand ClassifyStatement(std::string_view sql) {
  SqlCommand command;
  const std::string first = NextWord(sql);
  if (first == "prepare") {
    // PREPARE TRANSACTION is two-phase commit, not a prepared statement.
    std::string_view peek = sql;
    if (NextWord(peek) != "transaction") command.kind = SqlKind::kPrepare;
  } else if (first == "execute") {
    command.kind = SqlKind::kExecute;
  } else if (first == "deallocate") {
    bool quoted = false;
    std::string name = NextWord(sql, &quoted);
    if (!quoted && name == "prepare") name = NextWord(sql, &quoted);
    if (!quoted && name == "all") {
      command.kind = SqlKind::kDeallocateAll;
    } else {
      command.kind = SqlKind::kDeallocate;
      command.name = std::move(name);
    }
  }
  return command;
}

}  // namespace

std::string RejectionMessage(SqlKind kind, std::string_view pool_mode) {
  const char* keyword = kind == SqlKind::kExecute   ? "EXECUTE"
                        : kind == SqlKind::kPrepare ? "PREPARE"
                                                    : "DEALLOCATE";
  return absl::StrCat("SQL ", keyword, " is not supported in ",
                      absl::string_view(pool_mode.data(), pool_mode.size()),
                      " pooling mode: use protocol-level prepared statements (your driver's "
                      "prepareThreshold / prepare=True), or session mode");
}

std::string RejectionQuery(SqlKind kind, std::string_view pool_mode) {
  return pg::Query(absl::StrCat(
      "DO $pgfleet$BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = ",
      pg::QuoteLiteral(RejectionMessage(kind, pool_mode)),
      ", HINT = ", pg::QuoteLiteral(kRejectionHint), "; END$pgfleet$"));
}

std::string ParseMessage(std::string_view name, std::string_view definition) {
  return pg::MessageBuilder('P').CString(name).Bytes(definition).Finish();
}

std::string CloseStatementMessage(std::string_view name) {
  return pg::MessageBuilder('C').Byte('S').CString(name).Finish();
}

}  // namespace pgfleet::agent::ps
