// ClientConn's prepared-statement filter: what the forwarding loop calls for each client
// message of a link that rewrites named statements (see prepared_statements.h), and the Parse
// answered without a server.
#include <event2/buffer.h>
#include <event2/event.h>
#include <strings.h>
#include <sys/socket.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/client_conn_detail.h"
#include "agent/conn_state.h"
#include "agent/forwarder.h"
#include "agent/io/evbuffer_frames.h"
#include "agent/pg/protocol.h"
#include "agent/pg/startup_options.h"
#include "agent/server_conn.h"
#include "common/log.h"

namespace pgfleet::agent {
using namespace client_conn_detail;

bool ClientConn::AnswerKnownParse(const pg::MessageHeader& parse) {
  // Clients such as pgbench prepare synchronously (PQprepare) while other connections of the
  // same thread hold servers in open transactions; needing a server for that Parse can
  // deadlock them against each other when the pool is smaller than the client count.
  if (agent_.config().max_prepared_statements <= 0 ||
      pool_->pool_mode() == config::PoolMode::kSession) {
    return false;
  }
  evbuffer* in = net_.input();
  pg::MessageHeader sync;
  const uint32_t max_packet = static_cast<uint32_t>(agent_.config().max_packet_size);
  if (PeekFrameHeader(in, parse.total(), max_packet, &sync) != pg::HeaderResult::kOk ||
      sync.type != 'S' || evbuffer_get_length(in) < parse.total() + sync.total()) {
    return false;
  }
  std::string body(parse.body_size(), '\0');
  evbuffer_ptr pos;
  evbuffer_ptr_set(in, &pos, pg::kHeaderSize, EVBUFFER_PTR_SET);
  evbuffer_copyout_from(in, &pos, body.data(), body.size());
  const size_t name_end = body.find('\0');
  if (name_end == 0 || name_end == std::string::npos) return false;
  const std::string_view name(body.data(), name_end);
  if (statements().Find(name) != nullptr) return false;  // PostgreSQL's 42P05 is due.
  const std::string_view definition = std::string_view(body).substr(name_end + 1);
  if (!statements().HasRoomFor(name, definition)) {
    CloseTooManyStatements();
    return false;
  }
  ps::StatementPtr statement = ps::Intern(definition);
  if (!pool_->HasPreparedStatement(statement->id)) return false;
  evbuffer_drain(in, parse.total() + sync.total());
  pool_->stats().bytes_received += parse.total() + sync.total();
  pool_->stats().client_parse_count++;
  statements().Set(name, std::move(statement));
  Write(pg::MessageBuilder('1').Finish() + pg::ReadyForQuery('I'));
  return true;
}

void ClientConn::CloseTooManyStatements() {
  CloseWithError("53400",
                 absl::StrCat("too many prepared statements on this connection: the pooler keeps "
                              "at most ",
                              ps::kMaxClientStatements, " per client (and ",
                              ps::kMaxClientStatementBytes >> 20,
                              " MiB of their text); close the ones no longer needed"));
}

ClientConn::Rewrite ClientConn::RewriteForServer(Forwarder& forwarder,
                                                 const pg::MessageHeader& header) {
  const char type = header.type;
  if (type != 'P' && type != 'B' && type != 'D' && type != 'C' && type != 'Q') {
    return Rewrite::kPassThrough;
  }
  evbuffer* in = net_.input();
  ps::ServerStatements& server_statements = server_->statements();
  const uint64_t parses_before = server_statements.parses_sent();
  const size_t capacity = static_cast<size_t>(std::max(agent_.config().max_prepared_statements, 1));
  // The start of the body decides; the common messages (unnamed Parse/Bind, ordinary
  // queries) stay on the zero-copy path. A Parse is named by its first byte and a Describe of
  // a statement by its first two; those are then read whole (or refused) anyway.
  const size_t decisive = type == 'P' ? 1 : type == 'D' ? 2 : type == 'C' ? 0 : kRewriteHeadSize;
  const size_t head_size = std::min(decisive, header.body_size());
  // Valid until the next Body or until something is sent (forwarder.h).
  const std::string_view start = forwarder.Body(header, head_size);
  if (start.size() < head_size) return Rewrite::kNeedMore;
  switch (type) {
    case 'P':
      if (start.empty() || start[0] == '\0') {
        server_statements.OnUnnamedParse();
        return Rewrite::kPassThrough;
      }
      break;
    case 'B': {
      const size_t portal_end = start.find('\0');
      const size_t name_end =
          portal_end == std::string_view::npos ? portal_end : start.find('\0', portal_end + 1);
      // Unnamed statement, or names longer than anything PostgreSQL keeps: untouched.
      if (name_end == std::string_view::npos || name_end == portal_end + 1) {
        return Rewrite::kPassThrough;
      }
      if (server_statements.MustWait(start.substr(portal_end + 1, name_end - portal_end - 1),
                                     statements())) {
        return Rewrite::kWait;
      }
      // Rewritten in stream: the new header, portal and name now, the parameters as they
      // arrive, so a large Bind is never held (see ServerStatements::OnBindStart).
      const size_t names_size = name_end + 1;
      std::optional<std::string> rewritten = server_statements.OnBindStart(
          start.substr(0, portal_end), start.substr(portal_end + 1, name_end - portal_end - 1),
          header.body_size() - names_size, statements(), capacity);
      if (!rewritten.has_value()) return Rewrite::kPassThrough;
      pool_->stats().bind_count++;
      pool_->stats().server_parse_count += server_statements.parses_sent() - parses_before;
      forwarder.Flush();
      evbuffer_drain(in, pg::kHeaderSize + names_size);
      pool_->stats().bytes_received += pg::kHeaderSize + names_size;
      server_->NoteClientMessage(type);
      server_->WriteRaw(*rewritten);
      forward_.forward_remaining = header.body_size() - names_size;
      server_->set_mid_client_message(forward_.forward_remaining > 0);
      return Rewrite::kRewritten;
    }
    case 'D':
      if (start.size() < 2 || start[0] != 'S' || start[1] == '\0') return Rewrite::kPassThrough;
      break;
    case 'C':  // Every Close is answered by a CloseComplete the FIFO must expect.
      break;
    case 'Q': {
      // The start of the query decides, and only that is kept: the query itself is replaced
      // (see below), so its body is dropped as it arrives.
      const ps::SqlCommand sql = ps::ClassifySql(start);
      if (sql.kind == ps::SqlKind::kOther || sql.kind == ps::SqlKind::kDeallocateAll) {
        return Rewrite::kPassThrough;
      }
      if (sql.kind == ps::SqlKind::kDeallocate &&
          server_statements.MustWait(sql.name, statements())) {
        return Rewrite::kWait;
      }
      server_->NoteQueryText(start);
      forwarder.Flush();
      evbuffer_drain(in, pg::kHeaderSize);
      pool_->stats().bytes_received += pg::kHeaderSize;
      forward_.skip_remaining = header.body_size();
      std::string out;
      if (sql.kind == ps::SqlKind::kDeallocate) {
        out = server_statements.OnDeallocate(sql.name, statements(), capacity);
      }
      if (out.empty()) {
        // SQL-level prepared statements live in one server session, which a transaction
        // pooler does not give. PostgreSQL raises the explanation itself, so the error and the
        // transaction state arrive exactly as for any failed statement.
        PGF_DEBUG("client", "c=%d SQL prepared statement refused: %s", id_,
                  std::string(last_query()));
        out = ps::RejectionQuery(sql.kind, config::PoolModeName(pool_->pool_mode()));
      }
      // After the rewrite, so a Sync point is queued behind the answers it injected.
      server_->NoteClientMessage(type);
      server_->WriteRaw(out);
      return Rewrite::kRewritten;
    }
  }
  // A named Parse (whose definition the agent keeps), a Describe or a Close: read whole, up
  // to a bound.
  if (header.total() > kMaxHeldMessage) {
    forwarder.Flush();
    CloseWithError("54000", absl::StrCat("'", std::string(1, type), "' message of ", header.total(),
                                         " bytes is too large for the pooler to "
                                         "rewrite (at most ",
                                         kMaxHeldMessage, " bytes with a named statement)"));
    return Rewrite::kClosed;
  }
  if (!forwarder.Whole(header)) return Rewrite::kNeedMore;
  const std::string body(forwarder.Body(header));
  if (type == 'P') {
    const size_t name_end = body.find('\0');
    const std::string_view name(body.data(), std::min(name_end, body.size()));
    if (name_end != std::string::npos && statements().Find(name) == nullptr &&
        !statements().HasRoomFor(name, std::string_view(body).substr(name_end + 1))) {
      forwarder.Flush();
      CloseTooManyStatements();
      return Rewrite::kClosed;
    }
    if (name_end != std::string::npos &&
        server_statements.MustWait(name, statements(),
                                   std::string_view(body).substr(name_end + 1))) {
      return Rewrite::kWait;
    }
  } else if (type == 'D') {
    // A Describe of a statement ('S' then the name).
    const size_t name_end = body.find('\0', 1);
    if (name_end != std::string::npos &&
        server_statements.MustWait(std::string_view(body).substr(1, name_end - 1), statements())) {
      return Rewrite::kWait;
    }
  }
  forwarder.Flush();
  evbuffer_drain(in, header.total());
  pool_->stats().bytes_received += header.total();
  std::string out;
  switch (type) {
    case 'P':
      out = server_statements.OnParse(body, statements(), capacity);
      pool_->stats().client_parse_count++;
      break;
    case 'D':
      out = server_statements.OnDescribe(body, statements(), capacity);
      break;
    case 'C':
      out = server_statements.OnClose(body, statements());
      break;
  }
  pool_->stats().server_parse_count += server_statements.parses_sent() - parses_before;
  server_->NoteClientMessage(type);
  server_->WriteRaw(out);
  return Rewrite::kRewritten;
}

}  // namespace pgfleet::agent
