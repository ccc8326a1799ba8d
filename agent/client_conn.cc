#include "agent/client_conn.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <strings.h>
#include <sys/socket.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/client_auth.h"
#include "agent/client_conn_detail.h"
#include "agent/conn_state.h"
#include "agent/forwarder.h"
#include "agent/io/evbuffer_frames.h"
#include "agent/log_prefix.h"
#include "agent/pg/protocol.h"
#include "agent/pg/startup_options.h"
#include "agent/server_conn.h"
#include "common/log.h"

namespace pgfleet::agent {
using namespace client_conn_detail;

ClientConn::ClientConn(Agent& agent, int fd, net::PeerAddress peer, uint64_t id)
    : agent_(agent), net_(agent.loop().base(), fd, this), id_(id), peer_(peer) {
  connect_time_us_ = last_active_us_ = MonotonicMicros();
  sockaddr_storage local{};
  socklen_t length = sizeof(local);
  unix_socket_ = getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0 &&
                 local.ss_family == AF_UNIX;
}

ClientConn::~ClientConn() = default;

const std::string& ClientConn::user() const {
  static const std::string kNone;
  // Kept past the login only where the pool's user is another (a database forcing its user).
  if (login_names_ != nullptr) return login_names_->user;
  return pool_ != nullptr ? pool_->user() : kNone;
}

const std::string& ClientConn::database() const {
  static const std::string kNone;
  if (pool_ != nullptr) return pool_->db_name();
  return login_names_ != nullptr ? login_names_->database : kNone;
}

ClientConn::LoginNames& ClientConn::login_names() {
  if (login_names_ == nullptr) login_names_ = std::make_unique<LoginNames>();
  return *login_names_;
}

void ClientConn::OnNetRead() {
  last_active_us_ = MonotonicMicros();
  ProcessInput();
}

void ClientConn::OnNetDrained() {
  // Output drained: if we had stopped reading from the server, start again.
  if (server_ != nullptr) server_->ResumeReading();
  if (waiting_for_output_drain_) {
    waiting_for_output_drain_ = false;
    net_.EnableRead();
    ProcessInput();
  }
}

void ClientConn::OnNetClosed(bool eof, const std::string& why) {
  if (eof) {
    Close("client closed connection");
  } else {
    Close(absl::StrCat(tls_ ? "client TLS error: " : "client socket error: ", why));
  }
}

void ClientConn::Write(const std::string& bytes) { net_.Send(bytes.data(), bytes.size()); }

void ClientConn::ProcessInput() {
  switch (state_) {
    case State::kStartup:
      HandleStartup();
      break;
    case State::kAuth:
      HandleAuthMessage();
      break;
    case State::kIdle:
      HandleIdleInput();
      break;
    case State::kActive:
      ForwardToServer();
      break;
    case State::kAdmin:
      HandleAdminInput();
      break;
    case State::kWaiting:
    case State::kLoginWaiting:
      // Bytes (a pipelined query, or EOF) arrived while queued for a server, or before the
      // pool's first server logged in: they stay buffered until a server is linked (or the
      // welcome is sent), within a bound.
      if (net_.input_length() >= kWaitingInputLimit) net_.DisableRead();
      break;
    case State::kClosed:
      break;
  }
  // What was consumed leaves no buffer behind (a closed client gave its buffers back).
  net_.ReleaseDrainedInput();
}

namespace {

constexpr size_t kMaxSharedParamLists = 128;

// Clients of a pool mostly carry the same tracked parameters (the server's defaults and the
// driver's few settings): one copy is shared by all of them, as PgBouncer's string pool does
// for its variable cache. Six parameters in a vector of their own cost an idle client about
// half a kilobyte.
std::shared_ptr<const ParamList> Shared(ParamList params) {
  static thread_local std::vector<std::shared_ptr<const ParamList>> known;
  for (const auto& list : known) {
    if (*list == params) return list;
  }
  auto list = std::make_shared<const ParamList>(std::move(params));
  if (known.size() >= kMaxSharedParamLists) {
    std::erase_if(known, [](const auto& entry) { return entry.use_count() == 1; });
  }
  if (known.size() < kMaxSharedParamLists) known.push_back(list);
  return list;
}

}  // namespace

const ParamList& ClientConn::params() const {
  static const ParamList kNone;
  return params_ != nullptr ? *params_ : kNone;
}

void ClientConn::SetTrackedParam(const std::string& name, const std::string& value) {
  ParamList changed = params();
  SetParam(changed, name, value);
  params_ = Shared(std::move(changed));
}

void ClientConn::SendWelcome() {
  std::string welcome = pg::AuthenticationRequest(pg::kAuthOk);
  // Start from the server's values; the client's own startup values win.
  const ParamList& client_params = params();
  ParamList merged = client_params;
  for (const auto& [name, value] : pool_->welcome_params()) {
    bool client_set = false;
    for (const auto& [client_name, client_value] : client_params) {
      if (client_name == name) {
        welcome += pg::ParameterStatus(name, client_value);
        client_set = true;
        break;
      }
    }
    if (!client_set) {
      welcome += pg::ParameterStatus(name, value);
      if (!TrackedParamName(agent_.config(), name).empty()) SetParam(merged, name, value);
    }
  }
  params_ = Shared(std::move(merged));
  welcome += pg::BackendKeyData(cancel_pid_, cancel_key_);
  welcome += LoginNotice(agent_.config());
  welcome += pg::ReadyForQuery('I');
  Write(welcome);
  // Reading may have stopped at the input bound while the welcome was awaited (SUSPEND keeps
  // it stopped; RESUME starts every client reading).
  if (!agent_.suspended()) net_.EnableRead();
}

std::string_view ClientConn::last_query() const {
  return server_ != nullptr ? server_->last_query() : std::string_view();
}

void ClientConn::UpdateParam(const std::string& name, const std::string& value) {
  const std::string tracked = TrackedParamName(agent_.config(), name);
  if (tracked.empty()) return;
  for (const auto& [key, current] : params()) {
    if (key == tracked && current == value) return;  // Unchanged: no copy.
  }
  SetTrackedParam(tracked, value);
}

void ClientConn::HandleIdleInput() {
  evbuffer* in = net_.input();
  while (state_ == State::kIdle) {
    if (!SkipInput()) return;
    // Answers the agent gives on its own (AnswerKnownParse) are not queued without end for a
    // client that does not read them: reading resumes once its output drains (OnWrite).
    if (net_.output_length() > kOutputHighWater) {
      waiting_for_output_drain_ = true;
      net_.DisableRead();
      return;
    }
    pg::MessageHeader header;
    switch (
        PeekFrameHeader(in, 0, static_cast<uint32_t>(agent_.config().max_packet_size), &header)) {
      case pg::HeaderResult::kNeedMore:
        return;
      case pg::HeaderResult::kMalformed:
        CloseWithError("08P01", "invalid message length (max_packet_size exceeded?)");
        return;
      case pg::HeaderResult::kOk:
        break;
    }
    if (header.type == 'P') {
      if (AnswerKnownParse(header)) continue;
      if (state_ != State::kIdle) return;  // Closed by AnswerKnownParse.
    }
    if (header.type == 'X') {
      Close("client close request");
      return;
    }
    if (header.type == 'Q' && agent_.config().disable_pqexec) {
      RefuseSimpleQuery();
      return;
    }
    if (header.type == 'd' || header.type == 'c' || header.type == 'f') {
      // CopyData/CopyDone/CopyFail with no server: the rest of a COPY that PostgreSQL already
      // ended (it failed while the client was still sending). PostgreSQL ignores these outside
      // COPY; so does the agent, rather than take a server for them that no ReadyForQuery
      // would ever release.
      forward_.skip_remaining = header.total();
      continue;
    }
    if (agent_.shutting_down()) {
      CloseWithError("57P01", "pooler is shutting down");
      return;
    }
    if (agent_.handover_drain_bound_passed()) {
      // A transaction boundary past a hand-over's drain bound: the query is not run, and the
      // error (read as the query's answer, not an asynchronous notice) says to reconnect.
      CloseWithError("57P01", agent_.HandoverCloseMessage());
      return;
    }
    pool_->RequestServer(this);
    return;
  }
}

bool ClientConn::SkipInput() {
  if (forward_.skip_remaining == 0) return true;
  evbuffer* in = net_.input();
  const size_t dropped = std::min(forward_.skip_remaining, evbuffer_get_length(in));
  evbuffer_drain(in, dropped);
  pool_->stats().bytes_received += dropped;
  forward_.skip_remaining -= dropped;
  return forward_.skip_remaining == 0;
}

void ClientConn::OnLinked(ServerConn* server, uint64_t now_us, bool was_waiting) {
  if (was_waiting) {
    pool_->stats().wait_time_us += now_us - wait_start_us_;
    // A no-op (no syscall) unless the input limit or SUSPEND had stopped reading.
    net_.EnableRead();
  }
  server_ = server;
}

void ClientConn::OnUnlinked() {
  server_ = nullptr;
  // Unlinked in the middle of a message (its server was closed for it, see
  // Pool::ReleaseServer): the rest must not be read as messages of its own.
  forward_.skip_remaining += forward_.forward_remaining;
  forward_.forward_remaining = 0;
  // Reading may have stopped for the server's full output (StartBackpressure), which no longer
  // concerns this client; left stopped, a client whose input needs no server (the rest of a
  // failed COPY, dropped) would never be read again.
  if (!agent_.suspended()) net_.EnableRead();
  query_start_us = xact_start_us = 0;
}

ps::ClientStatements& ClientConn::statements() {
  if (statements_ == nullptr) statements_ = std::make_unique<ps::ClientStatements>();
  return *statements_;
}

void ClientConn::StartBackpressure() { net_.DisableRead(); }

// The client -> server direction of the Forwarder: Terminate, disable_pqexec, and the
// prepared-statement rewriting (client_rewrite.cc) on links that rewrite named statements.
class ClientConn::ServerBound final : public Forwarder::Filter {
 public:
  explicit ServerBound(ClientConn& client) : client_(client) {}

  Forwarder::Verdict OnMessage(Forwarder& forwarder, const pg::MessageHeader& header) override {
    using Verdict = Forwarder::Verdict;
    ServerConn* server = client_.server_;
    if (header.type == 'X') {
      forwarder.Flush();
      client_.Close("client close request");
      return Verdict::kStop;
    }
    if (header.type == 'Q' && client_.agent_.config().disable_pqexec) {
      // What came before it goes on; the Query itself never reaches the server.
      forwarder.Flush();
      client_.RefuseSimpleQuery();
      return Verdict::kStop;
    }
    if (server->ps_tracking()) {
      switch (client_.RewriteForServer(forwarder, header)) {
        case Rewrite::kPassThrough:
          break;
        case Rewrite::kRewritten:
          return Verdict::kHandled;
        case Rewrite::kNeedMore:
          return Verdict::kNeedMore;
        case Rewrite::kWait:
          // Read no more meanwhile: what waits is bounded by what was already read.
          client_.net_.DisableRead();
          server->ResumeClientAfterAnswers();
          return Verdict::kNeedMore;
        case Rewrite::kClosed:
          return Verdict::kStop;
      }
    }
    server->NoteClientMessage(header.type);
    if (header.type == 'Q') {
      server->NoteQueryText(forwarder.Body(header, ServerConn::kQueryTextBytes));
    }
    return Verdict::kForward;
  }
  void SendToPeer(size_t bytes) override {
    client_.pool_->stats().bytes_received += bytes;
    client_.server_->Write(client_.net_.input(), bytes);
  }
  void OnDropped(size_t bytes) override { client_.pool_->stats().bytes_received += bytes; }
  void OnMalformed() override {
    client_.CloseWithError("08P01", "invalid message length (max_packet_size exceeded?)");
  }

 private:
  ClientConn& client_;
};

void ClientConn::ForwardToServer() {
  if (server_ == nullptr || server_->state() != ServerConn::State::kActive) return;
  ServerBound filter(*this);
  Forwarder forwarder(net_.input(), forward_,
                      static_cast<uint32_t>(agent_.config().max_packet_size), filter);
  if (!forwarder.Run()) return;
  // A server that has only part of a message must not serve anyone else (Pool::ReleaseServer).
  server_->set_mid_client_message(forward_.forward_remaining > 0);
  if (server_->output_length() > kOutputHighWater) StartBackpressure();
}

void ClientConn::HandleAdminInput() {
  evbuffer* in = net_.input();
  while (state_ == State::kAdmin && !admin_busy_) {
    pg::MessageHeader header;
    switch (PeekFrameHeader(in, 0, kMaxAdminMessage, &header)) {
      case pg::HeaderResult::kNeedMore:
        return;
      case pg::HeaderResult::kMalformed:
        CloseWithError("08P01", "invalid message length on the admin console");
        return;
      case pg::HeaderResult::kOk:
        break;
    }
    if (evbuffer_get_length(in) < header.total()) return;
    std::string body(header.body_size(), '\0');
    evbuffer_drain(in, pg::kHeaderSize);
    evbuffer_remove(in, body.data(), body.size());
    switch (header.type) {
      case 'Q': {
        std::string_view sql(body);
        if (!sql.empty() && sql.back() == '\0') sql.remove_suffix(1);
        agent_.admin().HandleQuery(this, sql);
        break;
      }
      case 'X':
        Close("client close request");
        return;
      case 'S':
        // The console speaks the simple protocol only; extended messages are answered once
        // at their Sync, like a server that rejected the statement.
        Write(pg::ErrorResponse("ERROR", "0A000",
                                "the admin console supports the simple query protocol only") +
              pg::ReadyForQuery('I'));
        break;
      default:
        break;
    }
  }
}

void ClientConn::AdminCommandStarted() {
  admin_busy_ = true;
  net_.DisableRead();
}

void ClientConn::AdminCommandDone() {
  if (!admin_busy_) return;
  admin_busy_ = false;
  net_.EnableRead();
  // Queries sent while the command waited are still buffered; run them from the loop so a
  // long pipeline does not recurse (Close takes the client off the queue).
  agent_.ready_clients().Schedule(this);
}

void ClientConn::RefuseSimpleQuery() {
  // PgBouncer's disable_pqexec answer and log line (client.c handle_client_work).
  PGF_ERROR("client", "%s client used \"Query\" packet type",
            ClientLogPrefix(id_, database(), user(), peer()));
  CloseWithError("08P01", "PQexec disallowed");
}

std::string LoginNotice(const config::Config& config) {
  if (config.login_notify_message.empty()) return std::string();
  return pg::NoticeResponse(config.login_notify_message);
}

void ClientConn::SendWaitNoticeOnce() {
  if (wait_notice_sent_ || state_ == State::kClosed) return;
  wait_notice_sent_ = true;
  // PgBouncer's words (janitor.c), as a NOTICE with SQLSTATE 00000.
  Write(pg::NoticeResponse(
      "No server connection available in postgres backend, client being queued"));
}

void ClientConn::CloseWithError(const std::string& sqlstate, const std::string& message) {
  if (state_ == State::kClosed) return;
  if (agent_.config().log_pooler_errors && !quiet_close_) {
    PGF_WARN("client", "%s pooler error: %s", ClientLogPrefix(id_, database(), user(), peer()),
             message);
  }
  Write(pg::ErrorResponse("FATAL", sqlstate, message));
  // The socket is closed right after: push what is queued (results, then the error) out now.
  net_.FlushBestEffort();
  Close(message);
}

void ClientConn::Close(const std::string& reason) {
  if (state_ == State::kClosed) return;
  if (auth_ != nullptr) auth_->CancelDelay();
  if (agent_.config().log_disconnections && state_ != State::kStartup && !quiet_close_) {
    PGF_INFO("client", "%s closing because: %s (age=%ds)",
             ClientLogPrefix(id_, database(), user(), peer()), reason,
             static_cast<int>((MonotonicMicros() - connect_time_us_) / 1000000));
  }
  agent_.UnregisterCancelKey(this);
  if (input_scheduled_) agent_.ready_clients().Cancel(this);
  switch (state_) {
    case State::kStartup:
    case State::kAuth:
      ConnMover::Move(this, State::kClosed);
      break;
    case State::kLoginWaiting:
    case State::kIdle:
    case State::kWaiting:
    case State::kActive:
      pool_->DetachClient(this);
      break;
    case State::kAdmin:
      ConnMover::Move(this, State::kClosed);
      agent_.admin().OnClientClosed(this);
      break;
    case State::kClosed:
      break;
  }
  net_.Close();
  agent_.OnClientClosed(this);
  agent_.DeferDelete(this);
}

}  // namespace pgfleet::agent
