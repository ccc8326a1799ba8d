// PgBouncer 1.25's TLS handshake keys beyond protocols and TLS 1.2 ciphers:
// client_tls13_ciphers / server_tls13_ciphers, client_tls_ecdhcurve and client_tls_dheparams.
// Each is checked when it is set (a file line, SET, RELOAD: an invalid value is refused there,
// so the running TLS contexts stay) and applied to an OpenSSL context by the agent's
// TlsContext. Both go through the same functions, so what the check accepts is exactly what
// the context takes.
//
// The errors carry the reason alone ("unknown TLS 1.3 cipher suite 'X'"); callers name the key
// and the value.
#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

struct ssl_ctx_st;

namespace pgfleet::config {

// Colon-separated TLS 1.3 suites in OpenSSL's names (TLS_AES_256_GCM_SHA384, ...), most
// preferred first; "" keeps OpenSSL's default suites, as PgBouncer does. Every name must be one
// this OpenSSL knows: OpenSSL itself skips unknown names in a list, which would hide a typo.
absl::Status ApplyTls13Ciphers(ssl_ctx_st* ctx, absl::string_view value);

// "auto" (default) and "none" keep OpenSSL's default groups: PgBouncer configures nothing for
// either, and OpenSSL 1.1+ cannot turn ECDHE off. Otherwise one group name as OpenSSL spells
// it (prime256v1 / P-256, secp384r1, X25519, ...): the only one the handshake may use.
absl::Status ApplyEcdhCurve(ssl_ctx_st* ctx, absl::string_view value);

// "none": no finite-field DHE (TLS 1.2 DHE-* suites cannot be chosen); "auto" (default): DHE
// with parameters sized to the certificate's key (2048 bits for RSA 2048); "legacy": 1024-bit
// DHE (RFC 2409 group 2), which OpenSSL's security level 2 (Debian's default) refuses unless
// the cipher string lowers it (client_tls_ciphers = "...:@SECLEVEL=1").
absl::Status ApplyDheParams(ssl_ctx_st* ctx, absl::string_view value);

// The checks the config's setters run: the Apply* above on a scratch server context. The
// DH security level is left to the real context, where client_tls_ciphers can lower it.
absl::Status CheckTls13Ciphers(absl::string_view value);
absl::Status CheckEcdhCurve(absl::string_view value);
absl::Status CheckDheParams(absl::string_view value);

}  // namespace pgfleet::config
