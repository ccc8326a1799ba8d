// The TLS keys of a config as two groups, client side and server side: what changes the
// agent's TLS contexts (SET and RELOAD rebuild a side only when its group changed, and close
// the server connections made under server settings that changed, as PgBouncer does).
#pragma once

#include "common/config/config.h"

namespace pgfleet::config {

// client_tls_sslmode, _cert_file, _key_file, _ca_file, _protocols, _ciphers, client_tls13_ciphers,
// _ecdhcurve, _dheparams.
bool ClientTlsDiffers(const Config& a, const Config& b);
// The same server_tls_* keys and server_tls13_ciphers.
bool ServerTlsDiffers(const Config& a, const Config& b);
// Both groups copied from `from` into `to`, with where each was set.
void CopyTlsSettings(const Config& from, Config& to);

}  // namespace pgfleet::config
