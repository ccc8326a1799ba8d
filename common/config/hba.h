// PgBouncer's auth_type = hba: the auth_hba_file (pg_hba.conf's format, the subset PgBouncer
// 1.25 supports) and the auth_ident_file it can name maps of (map=). Parsed whole when the
// config loads, so a bad line refuses the start or the RELOAD with file and line, instead of
// being skipped with a warning as PgBouncer does (a skipped `reject` line silently widens who
// may log in).
//
// Supported, as PgBouncer: record types local, host, hostssl, hostnossl; databases all,
// sameuser, replication (physical replication only, which the agent does not serve), names,
// "quoted" names, @file; users all, names, @file; addresses all, IPv4 or IPv6 with /bits or a
// separate mask; methods trust, reject, password, md5, scram-sha-256, cert, peer; the option
// map=NAME (used by cert and peer). Refused with the reason: samerole, samegroup, +group, host
// names, samehost / samenet, a mask with address bits outside it, and the methods PgBouncer
// has but pgfleet does not (ldap, gss, pam...).
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace pgfleet::config {

enum class HbaMethod { kTrust, kReject, kPassword, kMd5, kScramSha256, kCert, kPeer };
const char* HbaMethodName(HbaMethod method);  // As written in the file.

// One auth_ident_file line: `map system_user database_user` (database_user `all`: any).
struct IdentMapping {
  std::string system_user;
  std::string database_user;
  bool any_database_user = false;
};
// Map name -> its lines, in file order.
using IdentMaps = std::map<std::string, std::vector<IdentMapping>>;

// The database or user column of a rule.
struct HbaNames {
  bool all = false;
  bool sameuser = false;     // Database column: the database named as the user.
  bool replication = false;  // Database column: physical replication connections.
  std::set<std::string> names;
};

struct HbaRule {
  enum class Type { kLocal, kHost, kHostSsl, kHostNoSsl };
  Type type = Type::kLocal;
  HbaNames databases;
  HbaNames users;
  // host* lines: `all`, or family (AF_INET / AF_INET6) with address and mask (network order).
  bool any_address = false;
  int family = AF_UNSPEC;
  std::array<uint8_t, 16> address{};
  std::array<uint8_t, 16> mask{};
  HbaMethod method = HbaMethod::kReject;
  // map=NAME, and that map's lines (copied: the rule stands alone).
  std::string map_name;
  std::vector<IdentMapping> mappings;
  int line = 0;  // In the hba file, for logs.
};

struct HbaFile {
  std::string path;
  std::vector<HbaRule> rules;
};

// What a login is matched on. `address` is the client's socket address (AF_INET / AF_INET6;
// ignored when `unix_socket`); an IPv4-mapped IPv6 address matches IPv4 lines, as in
// PostgreSQL.
struct HbaLogin {
  bool unix_socket = false;
  const sockaddr* address = nullptr;
  bool tls = false;
  std::string_view database;
  std::string_view user;
};

// The first rule that matches, as PgBouncer's hba_eval; nullptr when none does (the login is
// refused).
const HbaRule* MatchHba(const HbaFile& hba, const HbaLogin& login);

// Errors name file and line. `read_file` reads @file includes (names relative to the hba
// file's directory): tests pass their own, and a controller-linked agent one that refuses files
// outside its allowed paths (agent/path_policy.h) before they are opened.
using ReadFileFn = std::function<absl::StatusOr<std::string>(const std::string& path)>;
absl::StatusOr<IdentMaps> ParseIdentFile(const std::string& text, const std::string& path);
absl::StatusOr<HbaFile> ParseHbaFile(const std::string& text, const std::string& path,
                                     const IdentMaps& ident_maps, ReadFileFn read_file);

// The syntax of an hba file away from the host that loads it (the controller, when one is
// pushed): every line, method and address is checked, but @file includes are not read (they
// name files on that host) and, with `ident_maps` nullptr, map=NAME is not looked up.
absl::Status CheckHbaText(const std::string& text, const std::string& path,
                          const IdentMaps* ident_maps);

// Reads and parses auth_hba_file and, when set, auth_ident_file; @file includes through
// `read_include` (empty: read as any file).
absl::StatusOr<HbaFile> LoadHbaFile(const std::string& hba_path, const std::string& ident_path,
                                    const ReadFileFn& read_include = {});

}  // namespace pgfleet::config
