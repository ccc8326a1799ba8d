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
  // The group being sent may now reach back past an erased sync point (COPY IN only): counted
  // again from scratch.
  open_group_size_ = 0;
  while (open_group_size_ < expected_.size() &&
         !IsSyncPoint(expected_[expected_.size() - 1 - open_group_size_].kind)) {
    ++open_group_size_;
  }
  open_group_names_ = open_group_size_;  // An upper bound is enough.
  doubt_names_.clear();
  doubt_ids_.clear();
  for (size_t i = 0; i < expected_.size() - open_group_size_; ++i) CountInDoubt(expected_[i], 1);
}

// What MustWait needs is kept as entries come and go rather than found by walking expected_: a
// client that pipelines N named Parses (with or without a Sync after each) would otherwise
// cost N^2.
void ServerStatements::CloseOpenGroup() {
  // The group being sent is closed: what it did is in doubt until its ReadyForQuery.
  for (size_t i = expected_.size() - open_group_size_; i < expected_.size(); ++i) {
    CountInDoubt(expected_[i], 1);
  }
  open_group_names_ = 0;
}

void ServerStatements::PopFront(size_t count) {
  const size_t in_doubt = expected_.size() - open_group_size_;
  for (size_t i = 0; i < count && !expected_.empty(); ++i) {
    if (i < in_doubt) CountInDoubt(expected_.front(), -1);
    expected_.pop_front();  // One at a time: cheaper than a range erase for the usual one.
  }
  open_group_size_ = std::min(open_group_size_, expected_.size());
}

namespace {
template <typename Key>
void AdjustCount(absl::flat_hash_map<Key, uint32_t>& counts, const Key& key, int delta) {
  if (delta > 0) {
    ++counts[key];
    return;
  }
  auto it = counts.find(key);
  if (it != counts.end() && --it->second == 0) counts.erase(it);
}
}  // namespace

void ServerStatements::CountNamesInDoubt(const Expected& expected, int delta) {
  if (!expected.client_name.empty()) AdjustCount(doubt_names_, expected.client_name, delta);
  if (expected.statement != nullptr && expected.statement->id != 0) {
    AdjustCount(doubt_ids_, expected.statement->id, delta);
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
    Push({Expect::kCloseSwallow, victim, {}, nullptr});
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
  ++parses_sent_;
  out += ParseMessage(statement->server_name, statement->definition);
  Push({Expect::kParseSwallow, statement, {}, nullptr});
}

// ---- ServerStatements: client messages ---------------------------------------------------------

std::string ServerStatements::OnParse(std::string_view body, ClientStatements& client,
                                      size_t capacity) {
  std::string_view rest = body;
  std::optional<std::string_view> name = TakeCString(rest);
  if (!name.has_value() || name->empty()) {
    // Unnamed (or malformed, which PostgreSQL will reject): as it came.
    Push({Expect::kParseForward, nullptr, {}, nullptr});
    return Message('P', body);
  }
  std::string out;
  if (const StatementPtr* existing = client.Find(*name)) {
    // PostgreSQL refuses to redefine a name (42P05). Let it say so: re-parse the server copy,
    // which exists by then. The error names the agent's statement, not the client's.
    StatementPtr statement = *existing;
    Ensure(statement, capacity, out);
    ++parses_sent_;
    out += ParseMessage(statement->server_name, rest);
    Push({Expect::kParseForward, nullptr, {}, nullptr});
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
    ++parses_sent_;
    out += ParseMessage(statement->server_name, statement->definition);
    expected.statement = statement;
  }
  Push(std::move(expected));
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
    Push({Expect::kCloseForward, nullptr, {}, nullptr});
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
  Push(std::move(expected));
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
    ++parses_sent_;
    out += ParseMessage(statement->server_name, statement->definition);
    Push({Expect::kParseSwallow, statement, {}, nullptr});
    out += pg::MessageBuilder('S').Finish();
    Push({Expect::kSyncSwallow, nullptr, {}, nullptr});
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
  PopFront(1);
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
  PopFront(popped);
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
  // Entries of the Sync group being sent stand or fall with the message being rewritten. Only
  // the ones before it are in doubt.
  if (expected_.size() == open_group_size_) return false;
  if (!client_name.empty()) {
    if (doubt_names_.contains(absl::string_view(client_name.data(), client_name.size()))) {
      return true;
    }
    const StatementPtr* named = client.Find(client_name);
    if (named != nullptr && (*named)->id != 0 && doubt_ids_.contains((*named)->id)) return true;
  }
  if (parse_definition.empty()) return false;
  const StatementPtr parsed = FindInterned(parse_definition);
  return parsed != nullptr && parsed->id != 0 && doubt_ids_.contains(parsed->id);
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

std::string ParseMessage(std::string_view name, std::string_view definition) {
  return pg::MessageBuilder('P').CString(name).Bytes(definition).Finish();
}

std::string CloseStatementMessage(std::string_view name) {
  return pg::MessageBuilder('C').Byte('S').CString(name).Finish();
}

}  // namespace pgfleet::agent::ps
