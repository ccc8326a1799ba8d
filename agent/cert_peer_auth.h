// The two logins that need no password, as PgBouncer 1.25 does them (client.c's
// login_via_cert and login_as_unix_peer): a TLS client certificate that names the user, and a
// unix-socket client whose OS user is the user; both optionally through an ident map
// (auth_ident_file, named by an hba line's map=). And admin.c's rule for the console: the user
// `pgbouncer` over the unix socket from the agent's own OS user needs no password.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/config/hba.h"

struct ssl_st;

namespace pgfleet::agent {

// OK when the client certificate of `ssl` (nullptr: no TLS) logs in as `user`; otherwise the
// reason, for the log (the client is told only "certificate authentication failed"). Without
// `mappings` the certificate must name `user`; with them, some line must map a name the
// certificate carries to `user` (or to all). A certificate names what libtls's
// tls_peer_cert_contains_name finds, as in PgBouncer: its subjectAltName DNS entries, or its
// CommonName when it has none; case-insensitively.
absl::Status CheckCertLogin(ssl_st* ssl, const std::string& user,
                            const std::vector<config::IdentMapping>* mappings);

// OK when the unix-socket peer on `fd` runs as an OS user whose name is `user`, or, with
// `mappings`, is mapped to `user` (or to all); otherwise the reason, for the log.
absl::Status CheckPeerLogin(int fd, const std::string& user,
                            const std::vector<config::IdentMapping>* mappings);

// Whether the unix-socket peer on `fd` runs as the agent's own (real) uid.
bool PeerIsOwnUid(int fd);

}  // namespace pgfleet::agent
