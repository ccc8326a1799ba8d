#include "agent/server_conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/forwarder.h"
#include "agent/io/evbuffer_frames.h"
#include "agent/pg/protocol.h"
#include "agent/server_conn_detail.h"
#include "common/log.h"

namespace pgfleet::agent {
using namespace server_conn_detail;

ServerConn::ServerConn(Agent& agent, Pool& pool, uint64_t id)
    : agent_(agent), pool_(pool), id_(id), generation_(pool.generation()) {
  connect_time_us_ = last_used_us_ = MonotonicMicros();
}

ServerConn::~ServerConn() {
  if (dns_request_ != nullptr) evdns_getaddrinfo_cancel(dns_request_);
}

void ServerConn::OnNetConnected() {
  const int fd = net_->fd();
  sockaddr_storage local{};
  socklen_t local_length = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length) == 0) {
    local_address_ = net::PeerAddress(reinterpret_cast<const sockaddr*>(&local));
  } else {
    PGF_WARN("server", "s=%d getsockname: %s (SHOW SERVERS shows no local address)", id_,
             strerror(errno));
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));  // Fails harmlessly on unix.
  ApplyKeepalive(fd, agent_.config());
  const std::string& host = endpoint_.host;
  const bool unix_socket = host.empty() || host[0] == '/';
  if (agent_.server_tls() != nullptr && !unix_socket) {
    tls_ = TlsState::kRequested;
    WriteRaw(SslRequestPacket());
  } else {
    SendStartup();
  }
}

void ServerConn::OnNetClosed(bool eof, const std::string& why) {
  std::string reason = eof                     ? std::string("server closed the connection")
                       : tls_ == TlsState::kOn ? absl::StrCat("TLS error: ", why)
                                               : absl::StrCat("server socket error: ", why);
  if (state_ == State::kLogin) {
    LoginFailed(absl::StrCat("could not connect to ", address_, ": ", reason));
  } else {
    Close(reason, /*is_error=*/true);
  }
}

void ServerConn::OnNetRead() { ProcessInput(); }

void ServerConn::OnNetDrained() {
  // Output to the server drained: the client may send again.
  if (client_ != nullptr) {
    client_->net().EnableRead();
    agent_.ready_clients().Schedule(client_);
  }
}

void ServerConn::ProcessInput() {
  if (net_ == nullptr) return;
  if (tls_ == TlsState::kRequested) {
    HandleTlsAnswer();
    return;
  }
  if (internal_replies_ > 0) {
    HandleInternal();
    return;
  }
  switch (state_) {
    case State::kLogin:
      HandleLogin();
      break;
    case State::kActive:
      ForwardToClient();
      break;
    case State::kIdle:
    case State::kUsed: {
      // An idle server may only send asynchronous messages; anything else means it is in a
      // state we do not understand, so it is closed rather than reused.
      evbuffer* in = net_->input();
      pg::MessageHeader header;
      while (PeekFrameHeader(in, 0, kMaxLoginMessage, &header) == pg::HeaderResult::kOk &&
             evbuffer_get_length(in) >= header.total()) {
        std::string body = RemoveFrame(in, header);
        if (header.type == 'S') {
          if (!OnParameterStatus(body)) {
            Close(TooManyParameters(), /*is_error=*/true);
            return;
          }
        } else if (header.type != 'N' && header.type != 'A') {
          Close(header.type == 'E' ? absl::StrCat("idle server got error: ", ErrorMessageOf(body))
                                   : absl::StrCat("idle server got unexpected message '",
                                                  std::string(1, header.type), "'"),
                /*is_error=*/true);
          return;
        }
      }
      break;
    }
    case State::kClosed:
      break;
  }
}

void ServerConn::Link(ClientConn* client, uint64_t now_us) {
  client_ = client;
  last_used_us_ = now_us;
  mid_client_message_ = false;  // Servers are released only at a message boundary.
  // A server is only linked when clean, so no prepared-statement answer is pending here,
  // and no ReadyForQuery.
  replies_.Reset();
  resume_client_ = false;
  last_query_size_ = 0;  // The previous client's query is not this one's.
  ps_tracking_ = pool_.pool_mode() != config::PoolMode::kSession &&
                 agent_.config().max_prepared_statements > 0;
}

void ServerConn::Unlink() {
  // mid_client_message_ stays: Pool::ReleaseServer reads it after unlinking.
  client_ = nullptr;
  forward_ = ForwardState();
  resume_client_ = false;
  last_used_us_ = MonotonicMicros();
}

void ServerConn::NoteClientMessage(char type) {
  if (replies_.owed() == 0 && !unsynced_ && client_ != nullptr) {
    uint64_t now = MonotonicMicros();
    client_->query_start_us = now;
    if (tx_status_ == 'I' && client_->xact_start_us == 0) client_->xact_start_us = now;
  }
  // Which ReadyForQuery are owed, COPY included (reply_tracker.h): every message, in order.
  replies_.OnClientMessage(type);
  switch (type) {
    case 'Q':
    case 'F':
      if (ps_tracking_) statements_.OnSyncPoint();
      break;
    case 'S':
      unsynced_ = false;
      if (ps_tracking_) statements_.OnSyncPoint();
      break;
    case 'P':
    case 'B':
    case 'D':
    case 'E':
    case 'C':
      unsynced_ = true;
      break;
    default:  // Flush, CopyData/Done/Fail: no ReadyForQuery of their own.
      break;
  }
}

void ServerConn::NoteQueryText(std::string_view body) {
  const size_t copied = std::min(last_query_.size(), body.size());
  std::copy_n(body.data(), copied, last_query_.data());
  last_query_size_ = strnlen(last_query_.data(), copied);
}

void ServerConn::Write(evbuffer* from, size_t bytes) {
  if (net_ != nullptr) {
    net_->Send(from, bytes);
  } else {
    evbuffer_drain(from, bytes);
  }
}

void ServerConn::WriteRaw(const std::string& bytes) {
  if (net_ != nullptr) net_->Send(bytes.data(), bytes.size());
}

void ServerConn::ResumeReading() {
  if (state_ == State::kClosed || net_ == nullptr) return;
  net_->EnableRead();
  ProcessInput();
  if (net_ != nullptr) net_->ReleaseDrainedInput();  // Read outside the layer's own handler.
}

void ServerConn::StartBackpressure() { DisableRead(); }

bool ServerConn::OnParameterStatus(std::string_view body) {
  pg::BodyReader reader(body);
  std::string name(reader.CString());
  std::string value(reader.CString());
  if (!reader.ok()) return true;
  // The same bound as at login: a server that floods parameters later is not kept either.
  if (ParameterLimitExceeded(params_, name, value)) return false;
  UpdateParam(name, value);
  if (client_ != nullptr) client_->UpdateParam(name, value);
  return true;
}

void ServerConn::UpdateParam(std::string_view name, std::string_view value) {
  in_step_with_.reset();
  for (auto& [key, current] : params_) {
    if (key == name) {
      current = std::string(value);
      return;
    }
  }
  params_.emplace_back(std::string(name), std::string(value));
}

void ServerConn::OnReadyForQuery(char status, uint64_t now_us) {
  replies_.OnReadyForQuery();
  tx_status_ = status;
  last_ready_us_ = now_us;
  PoolStats& stats = pool_.stats();
  stats.query_count++;
  if (client_ != nullptr) {
    if (client_->query_start_us != 0) stats.query_time_us += now_us - client_->query_start_us;
    const bool more = replies_.owed() > 0;
    client_->query_start_us = more ? now_us : 0;
    if (status == 'I' && !more && client_->xact_start_us != 0) {
      stats.xact_count++;
      stats.xact_time_us += now_us - client_->xact_start_us;
      client_->xact_start_us = 0;
    }
  }
}

void ServerConn::MaybeSendProbe() {
  if (!replies_.WantsProbe()) return;
  PGF_DEBUG("server", "s=%d sending an empty query to learn which Syncs a failed COPY ignored",
            id_);
  WriteRaw(pg::Query(""));
  replies_.OnProbeSent();
}

void ServerConn::NoteErrorResponse(std::string_view body) {
  std::map<char, std::string> fields = pg::ParseErrorFields(body);
  if (fields['C'] == "26000") {
    // A statement the agent believes prepared here is gone (SQL DEALLOCATE it could not see):
    // this server's statements are reset before anyone else gets it.
    PGF_INFO("server",
             "s=%d %s: prepared statement missing on the server (%s); its statements "
             "will be reset",
             id_, address_, fields['M']);
    statements_.MarkOutOfStep();
  }
}

// The server -> client direction of the Forwarder: reply tracking (COPY, the agent's probe),
// prepared-statement answers, ParameterStatus, and ReadyForQuery, which may hand the server
// back to the pool.
class ServerConn::ClientBound final : public Forwarder::Filter {
 public:
  explicit ClientBound(ServerConn& server)
      : server_(server), client_net_(server.client_->net()), mode_(server.pool_.pool_mode()) {}

  Forwarder::Verdict OnMessage(Forwarder& forwarder, const pg::MessageHeader& header) override;
  void SendToPeer(size_t bytes) override {
    server_.pool_.stats().bytes_sent += bytes;
    client_net_.Send(server_.net_->input(), bytes);
  }
  void OnDropped(size_t) override {}
  void OnMalformed() override {
    server_.Close("invalid message length from server", /*is_error=*/true);
  }

 private:
  // The answers to the agent's own prepared-statement messages (see prepared_statements.h).
  Forwarder::Verdict OnStatementReply(Forwarder& forwarder, const pg::MessageHeader& header);
  Forwarder::Verdict OnReadyForQuery(Forwarder& forwarder, const pg::MessageHeader& header);

  ServerConn& server_;
  net::NetConn& client_net_;
  const config::PoolMode mode_;
};

Forwarder::Verdict ServerConn::ClientBound::OnMessage(Forwarder& forwarder,
                                                      const pg::MessageHeader& header) {
  using Verdict = Forwarder::Verdict;
  ReplyTracker& replies = server_.replies_;
  const bool ps_tracking = server_.ps_tracking_;
  const char type = header.type;
  // COPY and the agent's probe change what the ReadyForQuery count means (reply_tracker.h).
  // The type decides; each step changes state, so a message seen again after waiting for the
  // rest of it is not counted twice.
  if (replies.unsettled() && type != 'Z' && type != 'N' && type != 'S' && type != 'A' &&
      !(type == 'I' && replies.probe_sent())) {
    // A reply after a failed COPY's maybe-answered Syncs settles them.
    const ReplyTracker::Dropped dropped = replies.OnOtherReply();
    if (ps_tracking && dropped.count > 0) {
      server_.statements_.DropSyncPoints(dropped.skip, dropped.count);
    }
  }
  if ((type == 'G' || type == 'W') && !replies.in_copy_in()) {
    replies.OnCopyInStart();
  } else if ((type == 'C' || type == 'E') && replies.in_copy_in()) {
    const ReplyTracker::Dropped dropped = replies.OnCopyInEnd(type == 'C');
    if (ps_tracking && dropped.count > 0) {
      server_.statements_.DropSyncPoints(dropped.skip, dropped.count);
    }
    server_.MaybeSendProbe();
  } else if ((type == 'I' && replies.probe_sent()) || (type == 'Z' && replies.probe_answered())) {
    // The probe's EmptyQueryResponse and ReadyForQuery are the agent's: not forwarded.
    if (!forwarder.Whole(header)) return Verdict::kNeedMore;
    if (type == 'I') {
      const ReplyTracker::Dropped dropped = replies.OnProbeAnswered();
      if (ps_tracking && dropped.count > 0) server_.statements_.DropSyncPoints(0, dropped.count);
    } else {
      replies.TakeProbeReadyForQuery();
      const std::string_view body = forwarder.Body(header, 1);
      server_.tx_status_ = body.empty() ? 'I' : body[0];
    }
    forwarder.Drop(header);
    if (type == 'Z' && mode_ != config::PoolMode::kSession && server_.IsClean()) {
      server_.pool_.ReleaseServer(&server_);
      return Verdict::kStop;
    }
    return Verdict::kHandled;
  }
  if (type == 'E' && ps_tracking && server_.statements_.size() > 0) {
    if (!forwarder.Whole(header)) return Verdict::kNeedMore;
    server_.NoteErrorResponse(forwarder.Body(header));
  }
  if (ps_tracking && (type == '1' || type == '3' || type == 'C' || type == 'Z')) {
    const Verdict verdict = OnStatementReply(forwarder, header);
    if (verdict != Verdict::kForward || type != 'Z') return verdict;
  }
  if (type == 'Z') return OnReadyForQuery(forwarder, header);
  if (type == 'S') {
    // Read whole before it is passed on: it changes the pool's view of the server.
    if (!forwarder.Whole(header)) return Verdict::kNeedMore;
    if (!server_.OnParameterStatus(forwarder.Body(header))) {
      server_.Close(TooManyParameters(), /*is_error=*/true);
      return Verdict::kStop;
    }
  }
  return Verdict::kForward;
}

Forwarder::Verdict ServerConn::ClientBound::OnStatementReply(Forwarder& forwarder,
                                                             const pg::MessageHeader& header) {
  using Verdict = Forwarder::Verdict;
  // Answers to the agent's own messages are dropped or rewritten here, in stream order.
  if (!forwarder.Whole(header)) return Verdict::kNeedMore;
  ps::ServerStatements& statements = server_.statements_;
  ps::ResponseAction action = ps::ResponseAction::kForward;
  if (header.type == 'C') {
    // Only DISCARD ALL, DEALLOCATE and DEALLOCATE ALL matter; other tags are not read.
    const std::string_view tag = forwarder.Body(header);
    if (tag.size() <= 16 && tag.size() >= 2 && (tag[0] == 'D' || tag[0] == 'P')) {
      statements.OnCommandComplete(tag.substr(0, tag.size() - 1), &server_.client_->statements());
    }
  } else if (header.type == 'Z') {
    // Without answers pending the client's map is not touched: not made for nothing.
    if (statements.OnReadyForQuery(statements.AnswersPending() ? &server_.client_->statements()
                                                               : nullptr)) {
      action = ps::ResponseAction::kSwallow;
    }
  } else {
    action = statements.OnResponse(header.type);
  }
  if (action == ps::ResponseAction::kOutOfStep) {
    server_.Close(absl::StrCat("unexpected '", std::string(1, header.type),
                               "' from server (prepared statement bookkeeping out of step)"),
                  /*is_error=*/true);
    return Verdict::kStop;
  }
  if (action == ps::ResponseAction::kForward) return Verdict::kForward;
  forwarder.Drop(header);
  if (action == ps::ResponseAction::kAsParseComplete) {
    // ParseComplete: type '1', length 4, no body.
    static constexpr char kParseComplete[] = {'1', 0, 0, 0, 4};
    client_net_.Send(kParseComplete, sizeof(kParseComplete));
  }
  return Verdict::kHandled;
}

Forwarder::Verdict ServerConn::ClientBound::OnReadyForQuery(Forwarder& forwarder,
                                                            const pg::MessageHeader& header) {
  using Verdict = Forwarder::Verdict;
  if (!forwarder.Whole(header)) return Verdict::kNeedMore;
  const std::string_view body = forwarder.Body(header, 1);
  const char status = body.empty() ? 'I' : body[0];
  if (mode_ == config::PoolMode::kStatement && status != 'I') {
    forwarder.Flush();
    ClientConn* client = server_.client_;
    server_.Close("statement pooling: transaction block", /*is_error=*/false);
    client->CloseWithError("08P01", "transaction blocks not allowed in statement pooling mode");
    return Verdict::kStop;
  }
  server_.OnReadyForQuery(status, MonotonicMicros());
  server_.MaybeSendProbe();
  if (mode_ != config::PoolMode::kSession && server_.IsClean()) {
    forwarder.FlushThrough(header);
    server_.pool_.ReleaseServer(&server_);
    return Verdict::kStop;
  }
  return Verdict::kForward;
}

void ServerConn::ForwardToClient() {
  if (client_ == nullptr) return;
  ClientBound filter(*this);
  Forwarder forwarder(net_->input(), forward_, 0x7fffffff, filter);
  if (!forwarder.Run()) return;
  net::NetConn& client_net = client_->net();
  if (client_net.output_length() > kOutputHighWater) {
    StartBackpressure();
  }
  if (resume_client_) {
    // The answers a waiting client message depended on may have arrived: it checks again (and
    // waits again if they have not). Last, as the client may close meanwhile.
    resume_client_ = false;
    if (!agent_.suspended()) client_net.EnableRead();
    agent_.ready_clients().Schedule(client_);
  }
}

void ServerConn::Close(const std::string& reason, bool is_error) {
  if (state_ == State::kClosed) return;
  PGF_LOG_AT(is_error ? common::LogLevel::kWarning : common::LogLevel::kInfo, "server",
             "s=%d %s@%s closing because: %s", id_, pool_.server_user(), address_, reason);
  if (is_error) pool_.stats().server_errors++;
  ClientConn* client = client_;
  ServerQuery* query = std::exchange(query_, nullptr);
  if (query != nullptr) query->Detach();
  agent_.ForgetCancelTarget(this);
  pool_.DetachServer(this);  // Moves it to kClosed.
  if (dns_request_ != nullptr) {
    evdns_getaddrinfo_cancel(std::exchange(dns_request_, nullptr));
  }
  if (net_ != nullptr && net_->open()) {
    if (tx_status_ == 'I' && internal_replies_ == 0 && !net_->connecting()) {
      // Tell PostgreSQL we are leaving; it would otherwise log an unexpected EOF.
      WriteRaw(pg::Terminate());
      net_->FlushBestEffort();
    }
    // Closed, not freed: this may run inside its read handler. Freed with this object.
    net_->Close();
  }
  if (client != nullptr && is_error) {
    client->CloseWithError("08P01", absl::StrCat("server conn crashed? (", reason, ")"));
  }
  agent_.DeferDelete(this);
  if (query != nullptr) {
    query->OnDone(absl::UnavailableError(absl::StrCat("server connection closed: ", reason)));
  }
}

}  // namespace pgfleet::agent
