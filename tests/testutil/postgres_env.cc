#include "tests/testutil/postgres_env.h"

#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "tests/testutil/process.h"

namespace pgfleet::testutil {
namespace {

absl::Status ChownTo(const std::string& path, uid_t uid, gid_t gid) {
  if (chown(path.c_str(), uid, gid) != 0) {
    return absl::InternalError(absl::StrCat("chown ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

std::string QuoteIdent(const std::string& name) {
  return absl::StrCat("\"", absl::StrReplaceAll(name, {{"\"", "\"\""}}), "\"");
}

std::string QuoteLiteral(const std::string& value) {
  return absl::StrCat("'", absl::StrReplaceAll(value, {{"'", "''"}}), "'");
}

absl::StatusOr<std::unique_ptr<PostgresEnv>> PostgresEnv::Start(const PostgresOptions& options) {
  std::unique_ptr<PostgresEnv> env(new PostgresEnv(options));
  absl::Status status = env->Init();
  if (!status.ok()) return status;  // The destructor stops whatever got started.
  return env;
}

std::unique_ptr<PostgresEnv> PostgresEnv::AttachRunning(int port, const PostgresOptions& options) {
  std::unique_ptr<PostgresEnv> env(new PostgresEnv(options));
  env->port_ = port;  // started_ stays false: Stop() leaves the cluster to its owner.
  return env;
}

std::string PostgresEnv::BinPath(const std::string& program) const {
  return absl::StrCat(options_.bin_dir, "/", program);
}

std::vector<std::string> PostgresEnv::AsPostgresUser(std::vector<std::string> argv) const {
  if (!run_as_postgres_) return argv;
  std::vector<std::string> wrapped = {"runuser", "-u", "postgres", "--"};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  return wrapped;
}

absl::Status PostgresEnv::PrepareDir(const std::string& prefix) {
  if (absl::Status created = dir_.Create(prefix); !created.ok()) return created;
  data_dir_ = dir() + "/data";
  log_path_ = dir() + "/postgres.log";
  if (geteuid() != 0) return absl::OkStatus();
  struct passwd* pw = getpwnam("postgres");
  if (pw == nullptr) {
    return absl::FailedPreconditionError(
        "running as root but there is no 'postgres' user to run PostgreSQL as");
  }
  run_as_postgres_ = true;
  return ChownTo(dir(), pw->pw_uid, pw->pw_gid);
}

absl::Status PostgresEnv::Init() {
  if (absl::Status prepared = PrepareDir("pgfleet-pg"); !prepared.ok()) return prepared;
  const std::string pwfile = dir() + "/pwfile";

  uid_t uid = 0;
  gid_t gid = 0;
  if (run_as_postgres_) {
    struct passwd* pw = getpwnam("postgres");
    uid = pw->pw_uid;
    gid = pw->pw_gid;
  }
  if (absl::Status s = WriteFile(pwfile, options_.superuser_password + "\n"); !s.ok()) return s;
  chmod(pwfile.c_str(), 0600);
  if (run_as_postgres_) {
    if (absl::Status s = ChownTo(pwfile, uid, gid); !s.ok()) return s;
  }

  RunOptions run_options;
  run_options.working_dir = dir();
  run_options.timeout = absl::Seconds(120);
  run_options.env = {{"LC_ALL", "C"}, {"LANG", "C"}};
  absl::StatusOr<RunResult> initdb =
      RunCommand(AsPostgresUser({BinPath("initdb"), "-D", data_dir_, "-U", options_.superuser,
                                 "--auth=scram-sha-256", absl::StrCat("--pwfile=", pwfile), "-E",
                                 "UTF8", "--locale=C", "--no-sync"}),
                 run_options);
  if (!initdb.ok()) return initdb.status();
  if (!initdb->Succeeded()) {
    return absl::InternalError(absl::StrCat("initdb failed: ", initdb->Describe()));
  }

  std::vector<std::string> hba = {"local all all scram-sha-256"};
  for (const std::string& line : options_.extra_hba_lines) hba.push_back(line);
  hba.push_back("host all all 127.0.0.1/32 scram-sha-256");
  hba.push_back("host all all ::1/128 scram-sha-256");
  const std::string hba_path = data_dir_ + "/pg_hba.conf";
  if (absl::Status s = WriteFile(hba_path, absl::StrJoin(hba, "\n") + "\n"); !s.ok()) return s;
  if (run_as_postgres_) {
    if (absl::Status s = ChownTo(hba_path, uid, gid); !s.ok()) return s;
  }
  return StartOnFreePort();
}

absl::Status PostgresEnv::StartOnFreePort() {
  RunOptions run_options;
  run_options.working_dir = dir();
  run_options.timeout = absl::Seconds(120);
  run_options.env = {{"LC_ALL", "C"}, {"LANG", "C"}};
  return LaunchOnFreePort([&](int port) -> absl::Status {
    port_ = port;
    const std::string conf = absl::StrCat(
        "\n# pgfleet test overrides\n", "listen_addresses = '127.0.0.1'\n", "port = ", port_, "\n",
        "unix_socket_directories = '", dir(), "'\n", "max_connections = ", options_.max_connections,
        "\n", "fsync = off\n", "synchronous_commit = off\n", "full_page_writes = off\n",
        "shared_buffers = 32MB\n", "log_min_messages = warning\n",
        "log_line_prefix = '%m [%p] %q%u@%d '\n", absl::StrJoin(options_.extra_conf, "\n"), "\n");
    // Appended: later settings win over initdb's (and, for a standby, over its primary's).
    {
      std::ofstream out(data_dir_ + "/postgresql.conf", std::ios::app);
      if (!out) return absl::InternalError("cannot append to postgresql.conf");
      out << conf;
    }
    absl::StatusOr<RunResult> start =
        RunCommand(AsPostgresUser({BinPath("pg_ctl"), "-D", data_dir_, "-l", log_path_, "-w", "-t",
                                   "60", "start"}),
                   run_options);
    if (!start.ok()) return start.status();
    if (!start->Succeeded()) {
      return absl::InternalError(absl::StrCat("pg_ctl start failed: ", start->Describe(),
                                              "\n--- server log ---\n", LogTail()));
    }
    started_ = true;
    return absl::OkStatus();
  });
}

absl::StatusOr<std::unique_ptr<PostgresEnv>> PostgresEnv::StartStandbyOf(
    const PostgresEnv& primary) {
  std::unique_ptr<PostgresEnv> env(new PostgresEnv(primary.options_));
  if (absl::Status prepared = env->PrepareDir("pgfleet-standby"); !prepared.ok()) return prepared;
  RunOptions run_options;
  run_options.working_dir = env->dir();
  run_options.timeout = absl::Seconds(120);
  run_options.env = {{"LC_ALL", "C"}, {"LANG", "C"}};
  // -R writes standby.signal and primary_conninfo (with this connection string's password).
  absl::StatusOr<RunResult> backup = RunCommand(
      env->AsPostgresUser({env->BinPath("pg_basebackup"), "-D", env->data_dir_, "-R", "-X",
                           "stream", "--checkpoint=fast", "--no-sync", "-d",
                           absl::StrCat("host=127.0.0.1 port=", primary.port(),
                                        " user=", primary.options_.superuser, " password=",
                                        primary.options_.superuser_password, " sslmode=disable")}),
      run_options);
  if (!backup.ok()) return backup.status();
  if (!backup->Succeeded()) {
    return absl::InternalError(absl::StrCat("pg_basebackup failed: ", backup->Describe(),
                                            "\n--- primary's log ---\n", primary.LogTail()));
  }
  if (absl::Status started = env->StartOnFreePort(); !started.ok()) return started;
  return env;
}

absl::Status PostgresEnv::PgCtl(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {BinPath("pg_ctl"), "-D", data_dir_, "-w", "-t", "60"};
  argv.insert(argv.end(), args.begin(), args.end());
  RunOptions run_options;
  run_options.working_dir = dir();
  run_options.timeout = absl::Seconds(90);
  run_options.env = {{"LC_ALL", "C"}, {"LANG", "C"}};
  absl::StatusOr<RunResult> result = RunCommand(AsPostgresUser(argv), run_options);
  if (!result.ok()) return result.status();
  if (!result->Succeeded()) {
    return absl::InternalError(absl::StrCat("pg_ctl ", absl::StrJoin(args, " "),
                                            " failed: ", result->Describe(),
                                            "\n--- server log ---\n", LogTail()));
  }
  return absl::OkStatus();
}

absl::Status PostgresEnv::Stop() {
  if (!started_) return absl::OkStatus();
  started_ = false;
  RunOptions run_options;
  run_options.working_dir = dir();
  run_options.timeout = absl::Seconds(60);
  absl::StatusOr<RunResult> stop = RunCommand(
      AsPostgresUser({BinPath("pg_ctl"), "-D", data_dir_, "-m", "immediate", "-w", "stop"}),
      run_options);
  if (!stop.ok()) return stop.status();
  if (!stop->Succeeded()) {
    return absl::InternalError(absl::StrCat("pg_ctl stop failed: ", stop->Describe()));
  }
  return absl::OkStatus();
}

// dir_ goes after this body: the cluster stops first.
PostgresEnv::~PostgresEnv() {
  absl::Status stopped = Stop();
  if (!stopped.ok()) {
    fprintf(stderr, "PostgresEnv: %s\n", stopped.ToString().c_str());
  }
}

std::string PostgresEnv::ConnString(const std::string& db, const std::string& user,
                                    const std::string& password) const {
  return TcpConnString(port_, db, user, password);
}

std::string PostgresEnv::SuperuserConnString(const std::string& db) const {
  return ConnString(db, options_.superuser, options_.superuser_password);
}

absl::StatusOr<Rows> PostgresEnv::Exec(const std::string& sql, const std::string& db) const {
  absl::StatusOr<PgConn> conn = Connect(SuperuserConnString(db));
  if (!conn.ok()) return conn.status();
  return Query(conn->get(), sql);
}

absl::Status PostgresEnv::CreateUser(const std::string& name, const std::string& password,
                                     const std::string& encryption) const {
  return Exec(absl::StrCat("SET password_encryption = ", QuoteLiteral(encryption), "; CREATE ROLE ",
                           QuoteIdent(name), " LOGIN PASSWORD ", QuoteLiteral(password)))
      .status();
}

absl::Status PostgresEnv::CreateDatabase(const std::string& name, const std::string& owner) const {
  std::string sql = absl::StrCat("CREATE DATABASE ", QuoteIdent(name));
  if (!owner.empty()) absl::StrAppend(&sql, " OWNER ", QuoteIdent(owner));
  return Exec(sql).status();
}

std::string PostgresEnv::LogTail(size_t max_bytes) const {
  return ReadFileTail(log_path_, max_bytes);
}

}  // namespace pgfleet::testutil
