// The agent's configuration: PgBouncer's pgbouncer.ini model, with PgBouncer's defaults.
// A Config is immutable once loaded; RELOAD builds a new one and swaps a shared_ptr.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/config/ini_parser.h"

namespace pgfleet::config {

enum class PoolMode { kSession, kTransaction, kStatement };
// kHba: the method comes from auth_hba_file's first matching line (common/config/hba.h).
// kCert: a TLS client certificate whose name is the user's.
enum class AuthType { kTrust, kPlain, kMd5, kScramSha256, kAny, kHba, kCert };
// client_tls_sslmode / server_tls_sslmode, PgBouncer's (and libpq's) names.
enum class TlsMode { kDisable, kAllow, kPrefer, kRequire, kVerifyCa, kVerifyFull };

const char* PoolModeName(PoolMode mode);  // "session" | "transaction" | "statement"
// "trust" | "plain" | "md5" | "scram-sha-256" | "any" | "hba" | "cert"
const char* AuthTypeName(AuthType type);
const char* TlsModeName(TlsMode mode);  // "disable" | "allow" | ... | "verify-full"

// PgBouncer's per-database load_balance_hosts: which host of a host list (`host=a,b,c`) a new
// server connection goes to. round-robin: the next one each time; disable: the same one until
// a connection to it fails, then the next.
enum class LoadBalanceHosts { kRoundRobin, kDisable };
const char* LoadBalanceHostsName(LoadBalanceHosts mode);  // "round-robin" | "disable"

// PgBouncer's per-database target_session_attrs: which servers a new server connection may
// stay on, judged (as libpq does) from the in_hot_standby and default_transaction_read_only
// values PostgreSQL 14+ reports at login, after connect_query. A server that does not qualify is
// closed as a failed login ("server does not satisfy target_session_attrs") and the next host
// of the list is tried. prefer-standby is refused, as in PgBouncer.
enum class TargetSessionAttrs { kAny, kReadWrite, kReadOnly, kPrimary, kStandby };
// "any" | "read-write" | "read-only" | "primary" | "standby"
const char* TargetSessionAttrsName(TargetSessionAttrs attrs);

// One host of a database entry, with its port.
struct ServerEndpoint {
  std::string host;  // Empty: unix socket in /var/run/postgresql; "/dir": unix socket in dir.
  int port = 5432;
  bool operator==(const ServerEndpoint&) const = default;
};

// One entry of [databases]: `name = host=... port=... dbname=...`.
struct DatabaseConfig {
  std::string name;  // The name clients connect to.
  // As written, shown so by SHOW DATABASES: one host, or a comma-separated list of them
  // ("10.0.0.1,10.0.0.2,/var/run/postgresql"). Empty: unix socket in /var/run/postgresql
  // (PgBouncer's default). Endpoints() splits it.
  std::string host;
  int port = 5432;  // With a port list, its first entry.
  // `port=5432,5433`: one port per host of the list, in order. Empty when one port serves
  // every host (the usual form).
  std::vector<int> ports;
  LoadBalanceHosts load_balance_hosts = LoadBalanceHosts::kRoundRobin;
  TargetSessionAttrs target_session_attrs = TargetSessionAttrs::kAny;
  std::string dbname;    // Empty: same as `name`.
  std::string user;      // Forced server user; empty: the client's user.
  std::string password;  // Password for the forced/any user; empty: from auth_file.
  std::optional<int> pool_size;
  std::optional<int> min_pool_size;
  std::optional<int> reserve_pool;
  std::optional<PoolMode> pool_mode;
  std::optional<int> max_db_connections;
  // PgBouncer 1.23: how long a client may wait for a server; unset (or -1) falls back to the
  // user's, then the global value. A [users] value wins over this one.
  std::optional<absl::Duration> query_wait_timeout;
  std::optional<int> max_db_client_connections;  // PgBouncer 1.24.
  // PgBouncer 1.24: this database's servers are closed (when released or idle) once older than
  // this; unset (or 0, PgBouncer's "not set") falls back to the [pgbouncer] server_lifetime.
  std::optional<absl::Duration> server_lifetime;
  std::string connect_query;
  std::string client_encoding, datestyle, timezone, application_name;
  // auth_query overrides for clients of this database (PgBouncer's per-database keys); empty:
  // the [pgbouncer] value.
  std::string auth_user, auth_query, auth_dbname;
};

// One entry of [users]: `name = pool_mode=... max_user_connections=...`.
// PgBouncer's precedence for every override here: the user's value, then the database's, then
// the [pgbouncer] default.
struct UserConfig {
  std::string name;
  std::optional<PoolMode> pool_mode;
  std::optional<int> max_user_connections;
  std::optional<int> pool_size;                      // PgBouncer 1.23.
  std::optional<int> reserve_pool_size;              // PgBouncer 1.24.
  std::optional<absl::Duration> query_wait_timeout;  // PgBouncer 1.24; -1 in the file = unset.
  std::optional<int> max_user_client_connections;    // PgBouncer 1.24.
  // PgBouncer 1.24/1.25 per-user timeouts: a value above 0 replaces the [pgbouncer] one; 0 (or
  // unset) keeps it, as in PgBouncer, where a user's 0 means "not set".
  std::optional<absl::Duration> client_idle_timeout;
  std::optional<absl::Duration> idle_transaction_timeout;
  std::optional<absl::Duration> query_timeout;
  std::optional<absl::Duration> transaction_timeout;
};

// A PgBouncer 1.25 setting that pgfleet loads but does not act on, and why. One table, so the
// load warning, SHOW CONFIG and the README say the same thing.
struct UnsupportedSetting {
  const char* section;            // "pgbouncer", "databases" or "users".
  const char* key;                // PgBouncer's name.
  const char* pgbouncer_default;  // [pgbouncer] rows: SHOW CONFIG's default column.
  const char* reason;             // Why it has no effect in pgfleet.
};
// Every such setting, [pgbouncer] keys sorted by name first.
const std::vector<UnsupportedSetting>& UnsupportedSettings();
// The entry for `key` in `section`, or nullptr when pgfleet implements it (or PgBouncer has no
// such key).
const UnsupportedSetting* FindUnsupportedSetting(const std::string& section,
                                                 const std::string& key);

struct Config {
  // Where it came from, for error messages and RELOAD.
  std::string path;

  std::map<std::string, DatabaseConfig> databases;  // Key "*" is the fallback entry.
  std::map<std::string, UserConfig> users;

  // [pgbouncer]
  std::string listen_addr;  // Comma-separated; "*" = all. Empty: no TCP listener.
  int listen_port = 6432;
  // PgBouncer's listen_backlog: the queue of connections not yet accepted, passed to listen()
  // for every listener (the kernel caps it at net.core.somaxconn).
  int listen_backlog = 128;
  std::string unix_socket_dir = "/tmp";  // Empty: no unix socket.
  AuthType auth_type = AuthType::kMd5;
  std::string auth_file;
  // auth_type = hba: pg_hba.conf-style rules, and the ident maps their map= options name.
  std::string auth_hba_file;
  std::string auth_ident_file;
  // Users not in auth_file have their password looked up in PostgreSQL: auth_query (with the
  // user name as $1) runs as auth_user (whose own password is in auth_file) on the client's
  // database, or on auth_dbname when set. Empty auth_user: no lookups.
  std::string auth_user;
  std::string auth_query =
      "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM "
      "pg_authid WHERE rolname=$1 AND rolcanlogin";
  std::string auth_dbname;
  std::vector<std::string> admin_users;
  std::vector<std::string> stats_users;
  PoolMode pool_mode = PoolMode::kSession;
  int default_pool_size = 20;
  int min_pool_size = 0;
  int reserve_pool_size = 0;
  absl::Duration reserve_pool_timeout = absl::Seconds(5);
  int max_client_conn = 100;
  int max_db_connections = 0;    // 0 = unlimited.
  int max_user_connections = 0;  // 0 = unlimited.
  // Client connections per database / per user (PgBouncer 1.24); 0 = unlimited.
  int max_db_client_connections = 0;
  int max_user_client_connections = 0;
  std::string server_reset_query = "DISCARD ALL";
  bool server_reset_query_always = false;
  // PgBouncer's server_fast_close: in session mode, a server from before a RECONNECT or a
  // change of its database's connection settings is closed (with its client) as soon as it is
  // between transactions, rather than when the client leaves.
  bool server_fast_close = false;
  // PgBouncer's server_round_robin: off, the most recently released idle server is reused
  // first (LIFO: few servers take the load, the rest age out); on, the one idle the longest
  // (FIFO), so successive transactions spread evenly over the pool's servers.
  bool server_round_robin = false;
  std::string server_check_query = "select 1";
  absl::Duration server_check_delay = absl::Seconds(30);
  absl::Duration server_lifetime = absl::Seconds(3600);
  absl::Duration server_idle_timeout = absl::Seconds(600);
  absl::Duration server_connect_timeout = absl::Seconds(15);
  absl::Duration server_login_retry = absl::Seconds(15);
  absl::Duration client_login_timeout = absl::Seconds(60);
  // A pool of a database served by the "*" entry goes away after this long without clients
  // (PgBouncer's key and default). Pools of users no longer in auth_file (or, with auth_type
  // any, in no config section) go after the same time, at most 60 s.
  absl::Duration autodb_idle_timeout = absl::Seconds(3600);
  // PgBouncer 1.25: a pool (database/user pair) with no client and no server connection for
  // this long is dropped, so SHOW POOLS no longer lists it. 0 = never.
  absl::Duration pool_idle_timeout = absl::ZeroDuration();
  absl::Duration client_idle_timeout = absl::ZeroDuration();       // 0 = disabled.
  absl::Duration query_timeout = absl::ZeroDuration();             // 0 = disabled.
  absl::Duration query_wait_timeout = absl::Seconds(120);          // 0 = disabled.
  absl::Duration idle_transaction_timeout = absl::ZeroDuration();  // 0 = disabled.
  // PgBouncer 1.25: a client whose transaction (counted from its first query) lasts longer is
  // disconnected, its server closed. 0 = disabled.
  absl::Duration transaction_timeout = absl::ZeroDuration();
  std::vector<std::string> ignore_startup_parameters;
  // Parameters tracked per client and restored on whichever server it gets, besides the
  // built-in client_encoding, DateStyle, TimeZone, standard_conforming_strings and
  // application_name (PgBouncer 1.20's key and default).
  std::vector<std::string> track_extra_parameters = {"IntervalStyle"};
  // Iterations of the SCRAM verifiers the agent computes from plain-text auth_file passwords
  // (PgBouncer 1.25's key and default).
  int scram_iterations = 4096;
  // PgBouncer 1.24: a client queued for a server longer than this many whole seconds gets a
  // NOTICE saying so, once per connection. 0 = never.
  int query_wait_notify = 5;
  // PgBouncer's disable_pqexec: a client that sends a simple-protocol Query is disconnected
  // with "PQexec disallowed" (08P01); only the extended protocol works. The admin console,
  // which speaks the simple protocol only, is left usable.
  bool disable_pqexec = false;
  // PgBouncer's application_name_add_host: at login, the client's application_name (or "app"
  // when it sent none) gets " - ADDRESS:PORT" of the client appended, so pg_stat_activity says
  // where a query came from. A later SET application_name is passed through unchanged.
  bool application_name_add_host = false;
  // PgBouncer's user: the Unix user an agent started as root switches to once its listeners are
  // bound and its pidfile written (as -u, which wins over it). Empty: no switch. (Not named
  // `user`: the per-user lookups below take a parameter of that name.)
  std::string run_as_user;
  // PgBouncer 1.25: a NOTICE with this text goes to each client after its login. Empty: none.
  std::string login_notify_message;
  // PgBouncer's unix_socket_mode (file mode of the listening socket; written in octal as
  // "0777", shown in decimal like PgBouncer's SHOW CONFIG) and unix_socket_group (its group;
  // empty: the agent's own).
  int unix_socket_mode = 0777;
  std::string unix_socket_group;
  int max_packet_size = 2147483647;
  // Protocol-level named prepared statements kept per server connection in transaction and
  // statement modes (PgBouncer 1.22's default); 0 passes Parse/Bind/... through untouched.
  int max_prepared_statements = 200;
  // pgfleet: failed logins per source address answered at once in a minute; past that each
  // failure waits, 100 ms doubling up to auth_failure_max_delay (0 = no limit).
  int auth_failure_burst = 5;
  absl::Duration auth_failure_max_delay = absl::Seconds(2);
  // pgfleet: after a hand-over to a new process (RESTART, SIGUSR2), how long the old process's
  // clients may go on; then each is closed at its next transaction boundary (idle ones at once,
  // with 57P01). The flag --handover-drain-timeout overrides it. Read when the hand-over starts.
  absl::Duration handover_drain_timeout = absl::Seconds(30);
  int pkt_buf = 4096;
  bool tcp_keepalive = true;
  // PgBouncer's low-level socket keys, on client and server sockets alike: TCP_USER_TIMEOUT in
  // milliseconds and SO_SNDBUF/SO_RCVBUF in bytes (0 = the kernel's default), and
  // TCP_DEFER_ACCEPT (45 s, PgBouncer's hard-coded value) on the TCP listeners.
  int tcp_user_timeout = 0;
  int tcp_socket_buffer = 0;
  bool tcp_defer_accept = true;
  int tcp_keepcnt = 0;
  int tcp_keepidle = 0;
  int tcp_keepintvl = 0;
  std::string logfile;
  std::string pidfile;
  bool log_connections = true;
  bool log_disconnections = true;
  bool log_pooler_errors = true;
  absl::Duration stats_period = absl::Seconds(60);
  // PgBouncer's periodic "stats: N xacts/s, ..." log line, every stats_period.
  bool log_stats = true;
  // pgfleet's own: "text" (PgBouncer's line shape, which pgbadger reads) or "json" (one object
  // per line for log pipelines); see common/log.h.
  std::string log_format = "text";
  // PgBouncer's syslog keys: log lines go to syslog(3) as well (common/log.h SetSyslog).
  bool syslog = false;
  std::string syslog_ident = "pgbouncer";
  std::string syslog_facility = "daemon";  // auth, authpriv, daemon, user, local0-local7.
  bool verbose = false;

  // TLS towards clients (off by default) and towards PostgreSQL (tried by default, as in
  // PgBouncer). Files are read again on every RELOAD.
  TlsMode client_tls_sslmode = TlsMode::kDisable;
  std::string client_tls_cert_file, client_tls_key_file, client_tls_ca_file;
  std::string client_tls_protocols = "secure";  // "secure" = TLSv1.2 and TLSv1.3.
  std::string client_tls_ciphers = "default";
  // PgBouncer 1.25's handshake keys, as written (common/config/tls_handshake.h has their forms):
  // TLS 1.3 suites ("" = OpenSSL's), the ECDH curve and the DHE parameters clients get.
  std::string client_tls13_ciphers;
  std::string client_tls_ecdhcurve = "auto";
  std::string client_tls_dheparams = "auto";
  TlsMode server_tls_sslmode = TlsMode::kPrefer;
  std::string server_tls_cert_file, server_tls_key_file, server_tls_ca_file;
  std::string server_tls_protocols = "secure";
  std::string server_tls_ciphers = "default";
  std::string server_tls13_ciphers;  // The TLS 1.3 suites offered to PostgreSQL.

  // [pgbouncer] keys of UnsupportedSettings() the file set, with the value as written, so SHOW
  // CONFIG lists what the file says even where pgfleet does not act on it.
  std::map<std::string, std::string> unsupported_values;

  // Non-fatal findings, each "FILE:LINE: ...": PgBouncer keys, sections and parameters that
  // pgfleet accepts but ignores, and keys it does not know at all.
  std::vector<std::string> warnings;

  // "FILE:LINE" of the line that last set each [pgbouncer] key (lower-case name), so errors
  // found after parsing (a missing auth_file, a port in use) can point at that line.
  std::map<std::string, std::string> locations;
  // locations[key], or the config's path when no line set the key (a default value).
  std::string Where(const std::string& key) const;

  // The database entry clients asking for `name` get: the exact entry, else "*" with
  // dbname = name. nullopt when neither exists.
  std::optional<DatabaseConfig> FindDatabase(const std::string& name) const;
  const UserConfig* FindUser(const std::string& name) const;
  // The effective per-pool settings under PgBouncer's precedence: [users] entry, then the
  // [databases] entry, then [pgbouncer].
  int PoolSizeFor(const DatabaseConfig& db, const std::string& user) const;
  int ReservePoolSizeFor(const DatabaseConfig& db, const std::string& user) const;
  PoolMode PoolModeFor(const DatabaseConfig& db, const std::string& user) const;
  absl::Duration QueryWaitTimeoutFor(const DatabaseConfig& db, const std::string& user) const;
  // The database's server_lifetime when set, else the [pgbouncer] one.
  absl::Duration ServerLifetimeFor(const DatabaseConfig& db) const;
  int MaxDbClientConnectionsFor(const DatabaseConfig& db) const;  // 0 = unlimited.
  int MaxUserClientConnectionsFor(const std::string& user) const;
  // The timeouts for `user` (PgBouncer's rule: the [users] value when above 0, else the
  // [pgbouncer] one). client_idle_timeout goes by the client's login user; the others by the
  // user the server connection logs in as.
  absl::Duration ClientIdleTimeoutFor(const std::string& user) const;
  absl::Duration IdleTransactionTimeoutFor(const std::string& user) const;
  absl::Duration QueryTimeoutFor(const std::string& user) const;
  absl::Duration TransactionTimeoutFor(const std::string& user) const;
  // The auth_query settings for clients of `db`: its own entry's, else [pgbouncer]'s.
  // AuthDbnameFor is the database the lookup runs on (the client's when none is set).
  const std::string& AuthUserFor(const DatabaseConfig& db) const;
  const std::string& AuthQueryFor(const DatabaseConfig& db) const;
  std::string AuthDbnameFor(const DatabaseConfig& db) const;
  // Whether any auth_user is set ([pgbouncer] or a [databases] entry).
  bool UsesAuthQuery() const;
  bool IsAdminUser(const std::string& user) const;
  bool IsStatsUser(const std::string& user) const;
};

// Reads and validates `path` (following %include). Errors name file, line and key:
// "pgbouncer.ini:12: key 'default_pool_size': invalid integer 'abc'".
// `check_include` vets each %include'd file before it is read (see ParseIni).
absl::StatusOr<Config> LoadConfig(const std::string& path, const IncludeCheck& check_include = {});
// Same, from text in memory; `path` names it in errors and resolves relative %include.
absl::StatusOr<Config> ParseConfig(const std::string& text, const std::string& path,
                                   const IncludeCheck& check_include = {});

// The hosts of a database entry, in the order written, each with its port: one entry for a
// single host (or none: the default unix socket), several for `host=a,b,c`.
std::vector<ServerEndpoint> Endpoints(const DatabaseConfig& db);

// Where a server connection goes: "host:port", or the unix socket path
// ("/var/run/postgresql/.s.PGSQL.5432") when host is empty or a directory. The agent reports
// each server's max_connections under this name; the controller's connection-budget check
// computes it from a pushed config, so both sides must agree.
std::string EndpointAddress(const ServerEndpoint& endpoint);
// EndpointAddress of the entry's first host.
std::string ServerAddress(const DatabaseConfig& db);

// The most server connections one agent running `config` may open to each server address:
// per [databases] entry, its pool size plus reserve pool (one pool: an entry with a forced
// user has exactly one, and without one the count of client users is unknown), capped by
// max_db_connections. The "*" fallback entry is skipped: the databases it serves are unknown.
// Every host of a host list counts the entry's whole share: when the others are down, one host
// gets all of them.
std::map<std::string, int> MaxServerConnectionsByAddress(const Config& config);

// One row of the admin console's SHOW CONFIG.
struct ConfigEntry {
  std::string key;            // PgBouncer's name for the [pgbouncer] setting.
  std::string value;          // Current value, formatted as PgBouncer 1.18 prints it.
  std::string default_value;  // PgBouncer's default, same formatting.
  bool changeable = true;     // Whether SET may change it online (PgBouncer's "changeable").
};

// Every [pgbouncer] setting of PgBouncer 1.25, sorted by key: the ones pgfleet implements,
// and those of UnsupportedSettings() (value as the file wrote it, else PgBouncer's default;
// never changeable). Formatted like PgBouncer 1.18's SHOW CONFIG: durations as seconds through "%g"
// ("600", "0.5"), booleans "0"/"1", lists comma-joined, pool_mode/auth_type by name.
std::vector<ConfigEntry> DescribeConfig(const Config& config);

// The admin console's `SET key = value`, through the same per-key parser as the file.
// InvalidArgument, leaving `config` untouched, for an unknown key ("unknown config parameter:
// x"), a key pgfleet ignores, a key that needs a restart ("config parameter 'listen_port'
// cannot be changed online"), or a bad value (the file parser's message without FILE:LINE,
// e.g. "key 'default_pool_size': invalid integer 'abc'").
absl::Status ApplySetting(Config& config, const std::string& key, const std::string& value);

}  // namespace pgfleet::config
