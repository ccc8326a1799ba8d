// One server connection to PostgreSQL: connect and log in, then forward results to the
// linked client, watching ReadyForQuery to know when the server can go back to the pool.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "agent/forwarder.h"
#include "agent/intrusive_list.h"
#include "agent/net/net_conn.h"
#include "agent/net/peer_address.h"
#include "agent/pg/protocol.h"
#include "agent/pool.h"
#include "agent/prepared_statements.h"
#include "agent/reply_tracker.h"
#include "common/auth_crypto.h"

struct evbuffer;
struct evdns_getaddrinfo_request;
struct evutil_addrinfo;
struct sockaddr;
struct ssl_st;

namespace pgfleet::agent {

class Agent;
class ClientConn;

class ServerConn final : public ListNode, private net::NetConn::Handler {
 public:
  enum class State { kLogin, kIdle, kActive, kUsed, kClosed };
  // What to do once an internal query (SET, reset, check, connect_query) completes.
  enum class AfterInternal { kNone, kLinkClient, kBackToIdle, kFinishLogin, kServerQuery };

  ServerConn(Agent& agent, Pool& pool, uint64_t id);
  ~ServerConn();

  // Starts connecting; failures come back through Pool::OnServerLoginFailed.
  void Connect();

  uint64_t id() const { return id_; }
  State state() const { return state_; }
  Pool& pool() const { return pool_; }
  ClientConn* client() const { return client_; }
  const ParamList& params() const { return params_; }
  int32_t backend_pid() const { return backend_pid_; }
  int32_t backend_key() const { return backend_key_; }
  uint64_t connect_time_us() const { return connect_time_us_; }
  uint64_t last_used_us() const { return last_used_us_; }
  // When the server last sent ReadyForQuery (idle_transaction_timeout counts from there).
  uint64_t last_ready_us() const { return last_ready_us_; }
  uint64_t generation() const { return generation_; }
  char tx_status() const { return tx_status_; }
  // True when nothing is in flight: ready to go back to the pool or to a new client.
  bool IsClean() const { return tx_status_ == 'I' && replies_.Idle() && !unsynced_; }
  bool InTransaction() const { return tx_status_ != 'I'; }
  int pending_replies() const { return static_cast<int>(replies_.owed()); }
  // The host this connection went to (one of the database's host list) and its address
  // ("host:port" or the unix socket path), as SHOW SERVERS shows them.
  const std::string& address() const { return address_; }
  const config::ServerEndpoint& endpoint() const { return endpoint_; }
  // This connection finds out whether a down host is back (agent/host_list.h).
  bool host_probe() const { return host_probe_; }
  // This end of the server socket as getsockname gave it once connected (SHOW SERVERS'
  // local_addr/local_port); nullopt before the connect completes. A unix socket has no local
  // address (PeerAddress spells it "unix").
  const std::optional<net::PeerAddress>& local_address() const { return local_address_; }
  // Where the stream to the client stands (SHOW SOCKETS' pkt_remain).
  const ForwardState& forward_state() const { return forward_; }
  // The TLS session once TLS is on (SHOW SERVERS), else null.
  ssl_st* ssl() const { return net_ != nullptr ? net_->ssl() : nullptr; }
  bool tls() const { return tls_ == TlsState::kOn; }
  // The socket (SHOW FDS), -1 before there is one.
  int fd() const { return net_ != nullptr ? net_->fd() : -1; }
  // Bytes received from the server and not read yet.
  size_t input_length() const { return net_ != nullptr ? net_->input_length() : 0; }
  // Bytes queued for the server because its socket did not take them yet.
  size_t output_length() const { return net_ != nullptr ? net_->output_length() : 0; }
  // Reading the server's socket (SUSPEND / RESUME, which walk the pool's const lists);
  // backpressure uses StartBackpressure and ResumeReading.
  void EnableRead() const {
    if (net_ != nullptr) net_->EnableRead();
  }
  void DisableRead() const {
    if (net_ != nullptr) net_->DisableRead();
  }

  // Linking; the pool calls these.
  void Link(ClientConn* client, uint64_t now_us);
  void Unlink();
  // Sends the SETs needed to match `client`'s parameters, then lets it forward.
  // Returns false if nothing needed setting.
  bool SyncParams(ClientConn* client);
  // Runs server_reset_query / check query / connect_query; the result comes back through
  // the pool (idle again) or closes the server on failure.
  void RunInternalQuery(const std::string& sql, AfterInternal after);
  // Runs an agent component's query (Pool::RunQuery); the server goes back to idle after it,
  // or closes if it failed.
  void RunQuery(ServerQuery* query);
  // The query's owner withdrew it: its answer is read and dropped.
  void DropQuery() { query_ = nullptr; }

  // Client -> server accounting, done by the client's forwarding loop.
  void NoteClientMessage(char type);
  // Whether the server has received only part of a client message (its start went out, the
  // rest has not arrived from the client yet). Such a server must never serve anyone else:
  // PostgreSQL would read the next client's bytes as the rest of that message. Set by the
  // client's forwarding loop each time it writes; cleared when the server is linked.
  bool mid_client_message() const { return mid_client_message_; }
  void set_mid_client_message(bool mid) { mid_client_message_ = mid; }
  // Whether this link rewrites named prepared statements (transaction/statement mode with
  // max_prepared_statements > 0); fixed at Link() so a reload cannot change it mid-stream.
  bool ps_tracking() const { return ps_tracking_; }
  // The client stopped before a message that depends on answers still out (see
  // ps::ServerStatements::MustWait): it is read again after the next server input.
  void ResumeClientAfterAnswers() { resume_client_ = true; }
  ps::ServerStatements& statements() { return statements_; }
  const ps::ServerStatements& statements() const { return statements_; }
  // Notes the start of the linked client's simple query (what has arrived of its body, of
  // which the first kQueryTextBytes are kept) for drain reports.
  static constexpr size_t kQueryTextBytes = 96;
  void NoteQueryText(std::string_view body);
  std::string_view last_query() const { return {last_query_.data(), last_query_size_}; }
  void Write(evbuffer* from, size_t bytes);
  void WriteRaw(const std::string& bytes);

  // Read from the server and forward to the linked client.
  void ProcessInput();
  // The client's output drained below the limit: read again.
  void ResumeReading();
  void StartBackpressure();

  void Close(const std::string& reason, bool is_error);

 private:
  friend struct ConnMover;
  // net::NetConn::Handler.
  void OnNetConnected() override;
  void OnNetRead() override;
  void OnNetDrained() override;
  void OnNetClosed(bool eof, const std::string& why) override;
  // The host name resolved (evdns): connect to its first address.
  static void OnResolved(int result, evutil_addrinfo* addresses, void* arg);
  void ConnectTo(const sockaddr* addr, unsigned length);

  void SendStartup();
  // The server's one-byte answer to our SSLRequest: wrap in TLS, go on in plain text, or fail
  // as server_tls_sslmode says.
  void HandleTlsAnswer();
  void HandleLogin();
  bool HandleAuthRequest(std::string_view body);
  // `error`: the fields of PostgreSQL's ErrorResponse when it refused the login (none when
  // the connection itself failed), passed on to the pool's waiting clients.
  void LoginFailed(const std::string& reason, std::map<char, std::string> error = {});
  // The login and its internal queries are done: the server joins the pool, unless it fails
  // the database's target_session_attrs (then it is a failed login, as in PgBouncer).
  void FinishLogin();
  // After PostgreSQL refused the current auth_file secret (28P01) while a rotation overlap is
  // open: logs in again on a new connection with the previous one. False if it does not apply.
  bool RetryWithPreviousSecret(std::string_view error_body);
  void HandleInternal();
  // The DataRow of kServerLimitsQuery: max_connections, superuser_reserved_connections.
  void NoteServerLimits(std::string_view data_row);
  void ForwardToClient();
  void OnReadyForQuery(char status, uint64_t now_us);
  // Sends the empty query that settles which Syncs a failed COPY swallowed, when it is time
  // (see reply_tracker.h).
  void MaybeSendProbe();
  // The body of an ErrorResponse: notes a "prepared statement does not exist" (26000) on a
  // server whose statements the agent tracks.
  void NoteErrorResponse(std::string_view body);
  void UpdateParam(std::string_view name, std::string_view value);
  // A ParameterStatus body from the server: kept, and passed to the linked client so the
  // next compare sees the server's canonical spelling. False: the server went over the
  // parameter limits (server_conn_detail.h) and is to be closed.
  bool OnParameterStatus(std::string_view body);
  // The Forwarder's filter for this direction (server_conn.cc).
  class ClientBound;

  Agent& agent_;
  Pool& pool_;
  uint64_t id_;
  // The socket (TLS, once started, runs inside it). Null until the host's address is known.
  std::unique_ptr<net::NetConn> net_;
  // The connection a retry with the previous secret replaced (RetryWithPreviousSecret runs
  // inside its read handler, so it is closed there and freed with this object).
  std::unique_ptr<net::NetConn> retired_net_;
  evdns_getaddrinfo_request* dns_request_ = nullptr;  // The host name being resolved.
  enum class TlsState { kNone, kRequested, kOn };
  TlsState tls_ = TlsState::kNone;
  State state_ = State::kLogin;  // Written only by ConnMover.
  ClientConn* client_ = nullptr;
  std::string address_;
  std::optional<net::PeerAddress> local_address_;
  config::ServerEndpoint endpoint_;
  bool endpoint_chosen_ = false;  // A reconnect (RetryWithPreviousSecret) keeps the host.
  bool host_probe_ = false;
  uint64_t generation_;

  ParamList params_;
  // The client parameter list params_ last matched (SyncParams); reset when params_ changes.
  std::shared_ptr<const ParamList> in_step_with_;
  int32_t backend_pid_ = 0;
  int32_t backend_key_ = 0;
  std::optional<crypto::ScramClientExchange> scram_;
  // The login sent the user's auth_file secret (not a database entry's password=).
  bool sent_auth_file_secret_ = false;
  // This login uses the previous secret of a rotation overlap (the current one was refused).
  bool using_previous_secret_ = false;

  char tx_status_ = 'I';
  ReplyTracker replies_;         // ReadyForQuery owed for the client's Query/Sync/FunctionCall.
  bool unsynced_ = false;        // Extended-protocol messages sent since the last Sync.
  int internal_replies_ = 0;     // ReadyForQuery still expected for internal queries.
  bool probing_limits_ = false;  // The internal query in flight reads max_connections.
  AfterInternal after_internal_ = AfterInternal::kNone;
  ServerQuery* query_ = nullptr;  // The component query in flight (kServerQuery), if still wanted.
  std::string internal_error_;
  ForwardState forward_;  // Where the stream to the client stands (forwarder.h).
  bool mid_client_message_ = false;
  bool ps_tracking_ = false;
  bool resume_client_ = false;
  ps::ServerStatements statements_;
  // A fixed buffer so noting the query costs a short copy and no allocation per message.
  std::array<char, kQueryTextBytes> last_query_{};
  size_t last_query_size_ = 0;

  uint64_t connect_time_us_;
  uint64_t last_used_us_;
  uint64_t last_ready_us_ = 0;
};

}  // namespace pgfleet::agent
