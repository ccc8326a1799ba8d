// A throwaway PostgreSQL 15 cluster for integration tests: initdb into a temp dir, start on a
// free port on 127.0.0.1, stop and delete on destruction.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"

namespace pgfleet::testutil {

struct PostgresOptions {
  std::string bin_dir = "/usr/lib/postgresql/15/bin";
  std::string superuser = "postgres";
  std::string superuser_password = "pgfleet-test-superuser";
  int max_connections = 100;
  // Extra postgresql.conf lines, appended after ours.
  std::vector<std::string> extra_conf;
  // pg_hba.conf lines placed before the default "host all all 127.0.0.1/32 scram-sha-256".
  std::vector<std::string> extra_hba_lines;
};

class PostgresEnv {
 public:
  static absl::StatusOr<std::unique_ptr<PostgresEnv>> Start(const PostgresOptions& options = {});
  // A handle on a cluster another process started with `options` on `port` (see
  // tests/store_postgres_fixture.cc): Exec and friends work; destroying it leaves the cluster up.
  static std::unique_ptr<PostgresEnv> AttachRunning(int port, const PostgresOptions& options = {});
  // A hot standby of `primary`: `pg_basebackup -R` as the postgres OS user (streaming from
  // `primary` as its superuser), started on a free port with a socket dir of its own, and
  // accepting read-only connections when this returns. `primary` must let the superuser make
  // replication connections (kReplicationHbaLine in its extra_hba_lines).
  static absl::StatusOr<std::unique_ptr<PostgresEnv>> StartStandbyOf(const PostgresEnv& primary);
  ~PostgresEnv();

  PostgresEnv(const PostgresEnv&) = delete;
  PostgresEnv& operator=(const PostgresEnv&) = delete;

  int port() const { return port_; }
  const std::string& dir() const { return dir_.path(); }
  const std::string& log_path() const { return log_path_; }
  const PostgresOptions& options() const { return options_; }
  // Path of a program in the PostgreSQL bin dir (pgbench, psql, ...).
  std::string BinPath(const std::string& program) const;

  // TCP conninfo for 127.0.0.1:port().
  std::string ConnString(const std::string& db, const std::string& user,
                         const std::string& password) const;
  std::string SuperuserConnString(const std::string& db = "postgres") const;

  // Runs `sql` as the superuser (a fresh connection each time) in database `db`.
  absl::StatusOr<Rows> Exec(const std::string& sql, const std::string& db = "postgres") const;
  // CREATE ROLE name LOGIN PASSWORD ... (stored as SCRAM unless `encryption` says "md5").
  absl::Status CreateUser(const std::string& name, const std::string& password,
                          const std::string& encryption = "scram-sha-256") const;
  absl::Status CreateDatabase(const std::string& name, const std::string& owner = "") const;

  // The server log's tail, for failure messages.
  std::string LogTail(size_t max_bytes = 8192) const;

  // `pg_ctl -w ARGS` on this cluster's data directory (as the postgres OS user when we are
  // root); an error carries pg_ctl's output and the server log's tail.
  absl::Status PgCtl(const std::vector<std::string>& args) const;
  // A standby becomes a primary (`pg_ctl promote -w`: it accepts writes when this returns).
  absl::Status Promote() const { return PgCtl({"promote"}); }
  // Stops the server now (`pg_ctl stop -m immediate`), for tests of a server going away; the
  // destructor then only removes the directory.
  absl::Status StopServer() { return Stop(); }

 private:
  explicit PostgresEnv(PostgresOptions options) : options_(std::move(options)) {}
  absl::Status Init();
  // Creates the temp dir and sets data_dir_, log_path_ and run_as_postgres_ (owning the dir to
  // the postgres OS user when we are root).
  absl::Status PrepareDir(const std::string& prefix);
  // Appends the port and socket settings to postgresql.conf and starts the server on a free
  // port (trying another one if it was taken meanwhile).
  absl::Status StartOnFreePort();
  // argv run as the postgres OS user when we are root, else as ourselves.
  std::vector<std::string> AsPostgresUser(std::vector<std::string> argv) const;
  absl::Status Stop();

  PostgresOptions options_;
  TempDir dir_;
  std::string data_dir_;
  std::string log_path_;
  int port_ = 0;
  bool started_ = false;
  bool run_as_postgres_ = false;
};

// The pg_hba.conf line a primary needs for StartStandbyOf: the superuser's replication
// connections from 127.0.0.1, with its password.
inline constexpr char kReplicationHbaLine[] = "host replication all 127.0.0.1/32 scram-sha-256";

// Quotes an SQL identifier / string literal (for test-controlled names and passwords).
std::string QuoteIdent(const std::string& name);
std::string QuoteLiteral(const std::string& value);

}  // namespace pgfleet::testutil
