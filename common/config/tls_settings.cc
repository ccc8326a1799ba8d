#include "common/config/tls_settings.h"

#include <tuple>

namespace pgfleet::config {
namespace {

// References to one side's fields, for comparing and copying them as a whole (const or not).
template <typename AnyConfig>
auto ClientTls(AnyConfig& c) {
  return std::tie(c.client_tls_sslmode, c.client_tls_cert_file, c.client_tls_key_file,
                  c.client_tls_ca_file, c.client_tls_protocols, c.client_tls_ciphers,
                  c.client_tls13_ciphers, c.client_tls_ecdhcurve, c.client_tls_dheparams);
}

template <typename AnyConfig>
auto ServerTls(AnyConfig& c) {
  return std::tie(c.server_tls_sslmode, c.server_tls_cert_file, c.server_tls_key_file,
                  c.server_tls_ca_file, c.server_tls_protocols, c.server_tls_ciphers,
                  c.server_tls13_ciphers);
}

constexpr const char* kTlsKeys[] = {
    "client_tls_sslmode",   "client_tls_cert_file", "client_tls_key_file",  "client_tls_ca_file",
    "client_tls_protocols", "client_tls_ciphers",   "server_tls_sslmode",   "server_tls_cert_file",
    "server_tls_key_file",  "server_tls_ca_file",   "server_tls_protocols", "server_tls_ciphers",
    "client_tls13_ciphers", "client_tls_ecdhcurve", "client_tls_dheparams", "server_tls13_ciphers"};

}  // namespace

bool ClientTlsDiffers(const Config& a, const Config& b) { return ClientTls(a) != ClientTls(b); }

bool ServerTlsDiffers(const Config& a, const Config& b) { return ServerTls(a) != ServerTls(b); }

void CopyTlsSettings(const Config& from, Config& to) {
  ClientTls(to) = ClientTls(from);
  ServerTls(to) = ServerTls(from);
  for (const char* key : kTlsKeys) {
    if (auto where = from.locations.find(key); where != from.locations.end()) {
      to.locations[key] = where->second;
    } else {
      to.locations.erase(key);
    }
  }
}

}  // namespace pgfleet::config
