#include "agent/cert_peer_auth.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pwd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/str_cat.h"

namespace pgfleet::agent {
namespace {

// X509_check_host is the rule libtls's tls_check_name applies (DNS subjectAltNames when there
// are any, else the CommonName; case-insensitive; a leading "*." label a wildcard). A name
// starting with '.' would mean "any subdomain" to it: never a user name.
bool CertificateNames(X509* cert, const std::string& name) {
  if (name.empty() || name[0] == '.') return false;
  return X509_check_host(cert, name.data(), name.size(), 0, nullptr) == 1;
}

absl::StatusOr<uid_t> PeerUid(int fd) {
  ucred credentials{};
  socklen_t size = sizeof(credentials);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0) {
    return absl::ErrnoToStatus(errno, "cannot read the unix-socket peer's credentials");
  }
  return credentials.uid;
}

absl::StatusOr<std::string> OsUserName(uid_t uid) {
  passwd entry{};
  passwd* found = nullptr;
  char buffer[4096];
  const int error = getpwuid_r(uid, &entry, buffer, sizeof(buffer), &found);
  if (found == nullptr) {
    return error != 0 ? absl::ErrnoToStatus(error, absl::StrCat("uid ", uid))
                      : absl::NotFoundError(absl::StrCat("uid ", uid, " has no OS user name"));
  }
  return std::string(found->pw_name);
}

bool MapsTo(const config::IdentMapping& mapping, const std::string& user) {
  return mapping.any_database_user || mapping.database_user == user;
}

}  // namespace

absl::Status CheckCertLogin(ssl_st* ssl, const std::string& user,
                            const std::vector<config::IdentMapping>* mappings) {
  // PgBouncer's log lines for each case.
  if (ssl == nullptr) return absl::PermissionDeniedError("TLS connection required");
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) return absl::PermissionDeniedError("TLS client certificate required");
  if (mappings == nullptr) {
    if (CertificateNames(cert, user)) return absl::OkStatus();
    return absl::PermissionDeniedError("TLS certificate name mismatch");
  }
  for (const config::IdentMapping& mapping : *mappings) {
    if (MapsTo(mapping, user) && CertificateNames(cert, mapping.system_user)) {
      return absl::OkStatus();
    }
  }
  return absl::PermissionDeniedError("ident map does not have a match for the certificate");
}

absl::Status CheckPeerLogin(int fd, const std::string& user,
                            const std::vector<config::IdentMapping>* mappings) {
  absl::StatusOr<uid_t> uid = PeerUid(fd);
  if (!uid.ok()) return uid.status();
  absl::StatusOr<std::string> os_user = OsUserName(*uid);
  if (!os_user.ok()) return os_user.status();
  if (mappings == nullptr) {
    if (*os_user == user) return absl::OkStatus();
    return absl::PermissionDeniedError(
        absl::StrCat("peer OS user \"", *os_user, "\" is not \"", user, "\""));
  }
  for (const config::IdentMapping& mapping : *mappings) {
    if (mapping.system_user == *os_user && MapsTo(mapping, user)) return absl::OkStatus();
  }
  return absl::PermissionDeniedError(
      absl::StrCat("ident map cannot be matched for peer OS user \"", *os_user, "\""));
}

bool PeerIsOwnUid(int fd) {
  absl::StatusOr<uid_t> uid = PeerUid(fd);
  return uid.ok() && *uid == getuid();
}

}  // namespace pgfleet::agent
