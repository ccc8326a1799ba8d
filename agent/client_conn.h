// One client socket: startup, authentication against auth_file, then forwarding its
// messages to whichever server connection the pool links it to.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "agent/event_loop.h"
#include "agent/forwarder.h"
#include "agent/intrusive_list.h"
#include "agent/net/net_conn.h"
#include "agent/net/peer_address.h"
#include "agent/pg/protocol.h"
#include "agent/pool.h"
#include "agent/prepared_statements.h"
#include "common/auth_crypto.h"
#include "common/config/auth_file.h"

namespace pgfleet::agent {

class Agent;
class ClientAuth;
class ServerConn;

// login_notify_message's NOTICE for the end of a client's welcome; empty when none is set.
std::string LoginNotice(const config::Config& config);

class ClientConn final : public ListNode, private net::NetConn::Handler {
 public:
  enum class State : uint8_t {
    kStartup,       // Reading the startup packet (agent login list).
    kAuth,          // Waiting for a password / SASL message (agent login list).
    kLoginWaiting,  // Authenticated, waiting for the pool's first server login.
    kIdle,          // Logged in, no server (pool active list).
    kWaiting,       // Has a message, queued for a server (pool waiting list).
    kActive,        // Linked to a server (pool active list).
    kAdmin,         // Talking to the admin console.
    kClosed,
  };

  ClientConn(Agent& agent, int fd, net::PeerAddress peer, uint64_t id);
  ~ClientConn();

  uint64_t id() const { return id_; }
  State state() const { return state_; }
  std::string peer() const { return peer_.ToString(); }
  // The login's names: the pool's once the client joined one (they are its key), the
  // client's own before that and on the admin console.
  const std::string& user() const;
  const std::string& database() const;
  Pool* pool() const { return pool_; }
  ServerConn* server() const { return server_; }
  const ParamList& params() const;
  // The same list as shared with other clients (null before the login set any).
  const std::shared_ptr<const ParamList>& shared_params() const { return params_; }
  int32_t cancel_pid() const { return cancel_pid_; }
  int32_t cancel_key() const { return cancel_key_; }
  uint64_t connect_time_us() const { return connect_time_us_; }
  uint64_t last_active_us() const { return last_active_us_; }
  uint64_t wait_start_us() const { return wait_start_us_; }
  void set_wait_start_us(uint64_t us) { wait_start_us_ = us; }
  int fd() const { return net_.fd(); }

  // Sends an ErrorResponse (FATAL) and closes. `sqlstate` as PostgreSQL's.
  void CloseWithError(const std::string& sqlstate, const std::string& message);
  void Close(const std::string& reason);
  // disable_pqexec: a simple-protocol Query closes the client with PgBouncer's error.
  void RefuseSimpleQuery();

  // Pool callbacks (the pool moves the client between states: agent/conn_state.h).
  void OnLinked(ServerConn* server, uint64_t now_us, bool was_waiting);
  void OnUnlinked();
  // The pool learned the server's parameters: send AuthenticationOk ... ReadyForQuery.
  void SendWelcome();
  // Updates a tracked parameter from the server (ParameterStatus).
  void UpdateParam(const std::string& name, const std::string& value);
  // Handles what has arrived, as the state says. Called from the connection's own events and
  // from the loop (ReadyQueue); others mark the client ready instead of calling it.
  void ProcessInput();
  void Write(const std::string& bytes);
  // The socket: its buffers, read event and TLS (agent/net/net_conn.h).
  net::NetConn& net() { return net_; }
  const net::NetConn& net() const { return net_; }
  bool tls() const { return tls_; }
  // Where the stream to the server stands (SHOW SOCKETS' pkt_remain).
  const ForwardState& forward_state() const { return forward_; }
  // Logged in to the console as PgBouncer's own `pgbouncer` user (the unix socket, the agent's
  // own uid): an admin whatever admin_users says (cert_peer_auth.h).
  bool console_admin() const { return console_admin_; }
  // Called by the server side when the client's output buffer grew past the limit.
  void StartBackpressure();
  // PgBouncer 1.24's query_wait_notify: tells a client queued that long that it waits for a
  // server, once per connection.
  void SendWaitNoticeOnce();

  // Admin console: a command that answers later stops the client's input until it does.
  void AdminCommandStarted();
  void AdminCommandDone();

  // Named protocol-level prepared statements, by the client's names (transaction mode).
  // Made on first use (a client that never sends a named Parse or Bind has none): never freed
  // before the client, so a reference taken in a forwarding step stays valid through it.
  ps::ClientStatements& statements();
  size_t statement_count() const { return statements_ != nullptr ? statements_->size() : 0; }

  // The start of the last simple query sent through the linked server, for drain reports
  // ("who holds the pause up"); kept by the server (ServerConn::NoteQueryText), since only a
  // linked client holds anything up and servers are few while idle clients are many.
  std::string_view last_query() const;

  // Stats bookkeeping done by the server side on ReadyForQuery.
  uint64_t query_start_us = 0;
  uint64_t xact_start_us = 0;

 private:
  friend struct ConnMover;
  friend class ReadyQueue;
  friend class ClientAuth;
  // net::NetConn::Handler.
  void OnNetRead() override;
  void OnNetDrained() override;
  void OnNetClosed(bool eof, const std::string& why) override;

  void SetTrackedParam(const std::string& name, const std::string& value);
  void HandleStartup();
  void HandleStartupPacket(std::string_view packet);
  // PgBouncer 1.20+'s rule for `options` (PGOPTIONS): tracked settings in it are kept like
  // startup parameters, those in ignore_startup_parameters (or all unknown ones when
  // "options" is listed there) are dropped, anything else ends the login. False when it did.
  bool ApplyStartupOptions(const std::string& options);
  // PgBouncer 1.24's max_db_client_connections / max_user_client_connections, checked as the
  // client joins its pool. False when the login was ended.
  bool WithinClientLimits();
  // SSLRequest: answers S and wraps the socket in TLS, or N when TLS is off.
  void StartTls();
  void StartAuth();
  void HandleAuthMessage();
  void AuthSucceeded();
  void HandleIdleInput();
  // A named Parse + Sync from a client without a server, of a statement some server of the
  // pool has prepared: answered here (the statement is prepared wherever the client's Bind
  // lands). `parse`: the header of the Parse at the front of the input. Returns true if it
  // answered one.
  bool AnswerKnownParse(const pg::MessageHeader& parse);
  // Closes the client that went over ps::kMaxClientStatements / kMaxClientStatementBytes.
  void CloseTooManyStatements();
  void ForwardToServer();
  // The Forwarder's filter for this direction (client_conn.cc).
  class ServerBound;
  // Drops up to forward_.skip_remaining bytes from the front of the input; true when all are
  // gone.
  bool SkipInput();
  // Prepared-statement bookkeeping for the message the forwarder is at (see
  // prepared_statements.h). kPassThrough: forward it as usual. kRewritten: what preceded it
  // went to the server, and the message's replacement or its rewritten start (the rest then
  // follows through forward_.forward_remaining, or is dropped through skip_remaining). kNeedMore:
  // wait for more of it. kClosed: the client was closed.
  // kWait: the message depends on answers still out (ServerStatements::MustWait); it stays in
  // the input until the server's next ReadyForQuery.
  enum class Rewrite { kPassThrough, kRewritten, kNeedMore, kWait, kClosed };
  Rewrite RewriteForServer(Forwarder& forwarder, const pg::MessageHeader& header);
  void HandleTerminate();
  void HandleAdminInput();

  // The user and database names of the startup packet, kept until the client joins its pool
  // (whose key holds them for every client of the pool), or for good when the pool's user is
  // another one (a database that forces its user: the client's own name stays its own).
  struct LoginNames {
    std::string user;
    std::string database;
  };
  LoginNames& login_names();

  // Laid out for size, not by topic: every byte is paid per idle client (bench/README.md), so
  // the small fields share one word. A test pins the size (client_conn_size_test.cc).
  Agent& agent_;
  net::NetConn net_;
  uint64_t id_;
  std::unique_ptr<LoginNames> login_names_;
  // Tracked parameters (client_encoding, TimeZone...), shared with the clients that have the
  // same ones; changed by copy (SetTrackedParam).
  std::shared_ptr<const ParamList> params_;
  Pool* pool_ = nullptr;
  ServerConn* server_ = nullptr;
  // The authentication exchange, while logging in (client_auth.h).
  std::unique_ptr<ClientAuth> auth_;
  std::unique_ptr<ps::ClientStatements> statements_;
  // Where the stream to the server stands: the rest of a message partly forwarded, or of one
  // to drop (forwarder.h).
  ForwardState forward_;
  uint64_t connect_time_us_;
  uint64_t last_active_us_;
  uint64_t wait_start_us_ = 0;
  int32_t cancel_pid_ = 0;
  int32_t cancel_key_ = 0;
  net::PeerAddress peer_;
  State state_ = State::kStartup;  // Written only by ConnMover.
  bool input_scheduled_ = false;   // On the agent's ReadyQueue.
  bool tls_ = false;
  bool unix_socket_ = false;  // TLS is neither offered nor required over a unix socket.
  // An SSLRequest / GSSENCRequest was answered: a second one is a protocol error.
  bool ssl_negotiated_ = false;
  bool gss_negotiated_ = false;
  // query_wait_notify's NOTICE went out (PgBouncer sends it once per client connection).
  bool wait_notice_sent_ = false;
  bool admin_busy_ = false;
  bool console_admin_ = false;  // Set by ClientAuth.
  // A failed login's closing goes unlogged (past the auth failure burst, one summary line
  // stands for it).
  bool quiet_close_ = false;
  // Reading stopped until the client takes the answers the agent queued for it.
  bool waiting_for_output_drain_ = false;
};

}  // namespace pgfleet::agent
