// TLS for the agent's two sides, built from the [pgbouncer] client_tls_* / server_tls_*
// settings: one OpenSSL context towards clients (the agent is the TLS server) and one towards
// PostgreSQL (the agent is the TLS client). Built at start and again on every RELOAD, so a
// renewed certificate is picked up without a restart; a RELOAD whose files do not load keeps
// the previous contexts and says why.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/config/config.h"

struct ssl_ctx_st;
struct ssl_st;

namespace pgfleet::agent {

class TlsContext {
 public:
  // nullptr when client_tls_sslmode = disable.
  static absl::StatusOr<std::shared_ptr<const TlsContext>> ForClients(const config::Config& cfg);
  // nullptr when server_tls_sslmode = disable.
  static absl::StatusOr<std::shared_ptr<const TlsContext>> ForServers(const config::Config& cfg);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  config::TlsMode mode() const { return mode_; }
  // A new session; `host` (server side) sets SNI and, under verify-full, the name the
  // server's certificate must carry. The caller owns it (NetConn::StartTls takes it).
  ssl_st* NewSession(const std::string& host = "") const;

 private:
  TlsContext(ssl_ctx_st* ctx, config::TlsMode mode) : ctx_(ctx), mode_(mode) {}
  ssl_ctx_st* ctx_;
  config::TlsMode mode_;
};

// "TLSv1.3/TLS_AES_256_GCM_SHA384" for a TLS session, "" for none (SHOW CLIENTS' and SHOW
// SERVERS' tls column).
std::string DescribeTls(ssl_st* ssl);
// Why a connection's TLS failed (handshake, certificate): the reasons in this thread's
// OpenSSL error queue, then the certificate check's verdict when it failed.
std::string TlsErrorText(ssl_st* ssl);

}  // namespace pgfleet::agent
