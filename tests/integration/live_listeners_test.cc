// Listener settings applied live (issue 19), with a real PostgreSQL and the real agent binary:
// a RELOAD or SIGHUP that changes listen_port, listen_addr or unix_socket_dir binds the new
// listeners first, then closes the old ones, so no client is refused during the swap and every
// connected client keeps its session; an address that cannot be bound refuses the whole reload,
// naming it, and the old listeners and config stay. Restart-only keys (common/config/
// restart_keys.h) keep their running value and the RELOAD answers "restart pending: KEY".
//
// Nothing waits with a bare sleep: waits poll a condition with a deadline.

#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/json.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

// A TCP socket listening on 127.0.0.1:port (0: a free one), closed at destruction: a port
// another process holds.
class PortHolder {
 public:
  PortHolder() = default;
  ~PortHolder() {
    if (fd_ >= 0) close(fd_);
  }
  absl::Status Listen() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(fd_, 16) != 0) {
      return absl::ErrnoToStatus(errno, "cannot hold a port");
    }
    socklen_t length = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length);
    port_ = ntohs(addr.sin_port);
    return absl::OkStatus();
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// The NOTICE messages a libpq connection received.
class Notices {
 public:
  void Attach(PGconn* conn) { PQsetNoticeReceiver(conn, &Notices::Receive, this); }
  std::string Text() const {
    absl::MutexLock lock(&mu_);
    return text_;
  }

 private:
  static void Receive(void* arg, const PGresult* result) {
    auto* self = static_cast<Notices*>(arg);
    absl::MutexLock lock(&self->mu_);
    absl::StrAppend(&self->text_, PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY), "\n");
  }
  mutable absl::Mutex mu_;
  std::string text_;
};

bool IsRefused(const absl::Status& status) {
  return absl::StrContains(status.message(), "Connection refused");
}

class LiveListenersTest : public AgentTest {
 protected:
  std::map<std::string, std::string> DefaultAgentSettings() const override {
    // Session mode, so a client keeps its server (and its temp tables) across the swap.
    return {{"auth_type", "scram-sha-256"},
            {"pool_mode", "session"},
            {"default_pool_size", "30"},
            {"max_client_conn", "300"},
            {"admin_users", kAdminUser}};
  }

  AgentOptions Options(const std::map<std::string, std::string>& settings = {}) const {
    std::map<std::string, std::string> merged = DefaultAgentSettings();
    for (const auto& [key, value] : settings) merged[key] = value;
    return AppAgentOptions(merged);
  }

  // Rewrites the agent's ini from `options` with `listeners` on top: RewriteConfig keeps the
  // port the agent started on, these keys may move it.
  absl::Status WriteIni(const AgentOptions& options,
                        const std::map<std::string, std::string>& listeners) {
    PGF_RETURN_IF_ERROR(agent_->RewriteConfig(options));
    std::string ini = agent_->RenderIni(options);
    absl::StrAppend(&ini, "\n[pgbouncer]\n");
    for (const auto& [key, value] : listeners) absl::StrAppend(&ini, key, " = ", value, "\n");
    const std::string temp = agent_->ini_path() + ".tmp";
    PGF_RETURN_IF_ERROR(WriteFile(temp, ini));
    if (rename(temp.c_str(), agent_->ini_path().c_str()) != 0) {
      return absl::ErrnoToStatus(errno, "rename ini");
    }
    return absl::OkStatus();
  }

  static absl::StatusOr<PgConn> ConsoleOn(int port) {
    return Connect(TcpConnString(port, "pgbouncer", kAdminUser, kAdminPassword));
  }
  static absl::StatusOr<PgConn> AppOn(int port) {
    return Connect(TcpConnString(port, kAppDb, kAppUser, kAppPassword));
  }

  static absl::StatusOr<std::string> ConfigValue(PGconn* console, const std::string& key) {
    absl::StatusOr<Table> table = Show(console, "SHOW CONFIG");
    if (!table.ok()) return table.status();
    Rows rows = table->Where({{"key", key}});
    if (rows.size() != 1) return absl::NotFoundError(absl::StrCat(key, ":\n", table->Dump()));
    return table->At(rows[0], "value");
  }

  // A client that holds a session (a temp table lives in it) from before the swap.
  static absl::StatusOr<PgConn> SessionWithTempTable(int port) {
    absl::StatusOr<PgConn> conn = AppOn(port);
    if (!conn.ok()) return conn.status();
    absl::StatusOr<Rows> made =
        Query(conn->get(), "create temp table kept(x int); insert into kept values (1), (2), (3)");
    if (!made.ok()) return made.status();
    return conn;
  }
};

// The whole point: under steady load and a stream of new connections, listen_port moves with no
// failed transaction and no refused connection; everyone connected before keeps working.
TEST_F(LiveListenersTest, ListenPortChangeUnderLoadDropsNothing) {
  PGF_ASSERT_OK(InitPgbench(*g_pg));
  PGF_ASSERT_OK(AwaitNoAppdbBackends(*g_pg));
  const AgentOptions options = Options();
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  const int old_port = agent_->port();
  PGF_ASSERT_OK_AND_ASSIGN(int new_port, PickFreePort());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConsoleOn(old_port));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn session, SessionWithTempTable(old_port));

  absl::StatusOr<RunResult> bench;
  std::thread bench_thread([&] {
    RunOptions run = PgbenchRunOptions();
    run.timeout = absl::Seconds(90);
    bench = RunCommand({g_pg->BinPath("pgbench"), "-c", "10", "-j", "2", "-T", "8", "-h",
                        "127.0.0.1", "-p", absl::StrCat(old_port), "-U", kAppUser, kAppDb},
                       run);
  });
  // New connections all along: the old port while it accepts, the new one once the old one
  // refuses. The new one is bound before the old one closes, so both refusing is a failure.
  std::atomic<bool> stop{false};
  std::atomic<int> on_old{0}, on_new{0};
  std::vector<std::string> connect_failures;
  std::thread connect_loop([&] {
    bool moved = false;
    while (!stop.load()) {
      absl::StatusOr<PgConn> conn = AppOn(moved ? new_port : old_port);
      if (!conn.ok() && !moved && IsRefused(conn.status())) {
        moved = true;
        conn = AppOn(new_port);
      }
      if (!conn.ok()) {
        connect_failures.push_back(std::string(conn.status().message()));
        continue;
      }
      absl::StatusOr<int64_t> value = ScalarInt(conn->get(), "select 41 + 1");
      if (!value.ok() || *value != 42) {
        connect_failures.push_back(value.ok() ? "wrong answer" : value.status().ToString());
        continue;
      }
      (moved ? on_new : on_old).fetch_add(1);
    }
  });
  auto join = [&] {
    stop.store(true);
    if (connect_loop.joinable()) connect_loop.join();
    if (bench_thread.joinable()) bench_thread.join();
  };

  // Reload mid-run: once pgbench's clients are all in.
  absl::Status loaded = PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Table> pools = Show(console.get(), "SHOW POOLS");
        if (!pools.ok()) return pools.status();
        *note = pools->Dump();
        Rows rows = pools->Where({{"database", kAppDb}});
        return !rows.empty() && std::stoi(pools->At(rows[0], "cl_active")) >= 11 &&
               on_old.load() > 0;
      },
      absl::Seconds(20), "pgbench's clients connected");
  absl::Status written = WriteIni(options, {{"listen_port", absl::StrCat(new_port)}});
  absl::StatusOr<std::string> reload = Command(console.get(), "RELOAD");
  absl::Status served_new = PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = absl::StrCat("connections on the new port: ", on_new.load());
        return on_new.load() >= 5;
      },
      absl::Seconds(20), "the connect loop to be served on the new port");
  join();
  PGF_ASSERT_OK(loaded);
  PGF_ASSERT_OK(written);
  ASSERT_TRUE(reload.ok()) << reload.status() << "\n" << agent_->Diagnostics();
  EXPECT_EQ(*reload, "RELOAD");
  PGF_EXPECT_OK(served_new);

  ASSERT_TRUE(bench.ok()) << bench.status();
  EXPECT_TRUE(bench->Succeeded()) << bench->Describe();
  const PgbenchSummary summary = ParsePgbench(bench->stdout_text);
  EXPECT_GT(summary.processed, 0) << bench->Describe();
  EXPECT_EQ(summary.failed, 0) << bench->Describe();
  EXPECT_TRUE(connect_failures.empty())
      << connect_failures.size() << " failed connections, first: " << connect_failures.front();
  EXPECT_GT(on_old.load(), 0);

  // The session from before the swap is the same session.
  PGF_ASSERT_OK_AND_ASSIGN(int64_t kept, ScalarInt(session.get(), "select sum(x) from kept"));
  EXPECT_EQ(kept, 6);
  // The console connection too; it reports the new port.
  PGF_ASSERT_OK_AND_ASSIGN(std::string port_value, ConfigValue(console.get(), "listen_port"));
  EXPECT_EQ(port_value, absl::StrCat(new_port));
  // The old port is closed; the new one serves.
  absl::StatusOr<PgConn> on_old_port = AppOn(old_port);
  EXPECT_FALSE(on_old_port.ok()) << "the old port still accepts after the RELOAD";
  PGF_ASSERT_OK_AND_ASSIGN(PgConn fresh, AppOn(new_port));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t v, ScalarInt(fresh.get(), "select 7 * 6"));
  EXPECT_EQ(v, 42);
}

TEST_F(LiveListenersTest, PortInUseRefusesTheReloadNamingTheAddressAndKeepsServing) {
  const AgentOptions options = Options({{"default_pool_size", "5"}});
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  const int old_port = agent_->port();
  PortHolder holder;
  PGF_ASSERT_OK(holder.Listen());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConsoleOn(old_port));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn session, SessionWithTempTable(old_port));

  AgentOptions changed = Options({{"default_pool_size", "7"}});
  PGF_ASSERT_OK(WriteIni(changed, {{"listen_port", absl::StrCat(holder.port())}}));
  absl::StatusOr<std::string> reload = Command(console.get(), "RELOAD");
  ASSERT_FALSE(reload.ok()) << "RELOAD onto a port in use was accepted";
  EXPECT_TRUE(
      absl::StrContains(reload.status().message(), absl::StrCat("127.0.0.1:", holder.port())))
      << reload.status();
  EXPECT_TRUE(absl::StrContains(reload.status().message(), "listen_addr")) << reload.status();

  // Nothing of the refused config was applied; the old port serves, old and new clients alike.
  PGF_ASSERT_OK_AND_ASSIGN(std::string port_value, ConfigValue(console.get(), "listen_port"));
  EXPECT_EQ(port_value, absl::StrCat(old_port));
  PGF_ASSERT_OK_AND_ASSIGN(std::string size, ConfigValue(console.get(), "default_pool_size"));
  EXPECT_EQ(size, "5");
  PGF_ASSERT_OK_AND_ASSIGN(int64_t kept, ScalarInt(session.get(), "select count(*) from kept"));
  EXPECT_EQ(kept, 3);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn fresh, AppOn(old_port));
  PGF_EXPECT_OK(Query(fresh.get(), "select 1"));

  // All or nothing: a new TCP port that binds, with a unix socket that cannot, opens neither.
  PGF_ASSERT_OK_AND_ASSIGN(int free_port, PickFreePort());
  PGF_ASSERT_OK(WriteIni(changed, {{"listen_port", absl::StrCat(free_port)},
                                   {"unix_socket_dir", "/nonexistent-pgfleet-dir"}}));
  reload = Command(console.get(), "RELOAD");
  ASSERT_FALSE(reload.ok()) << "RELOAD with an unusable unix_socket_dir was accepted";
  EXPECT_TRUE(absl::StrContains(reload.status().message(),
                                absl::StrCat("/nonexistent-pgfleet-dir/.s.PGSQL.", free_port)))
      << reload.status();
  EXPECT_FALSE(CanConnect(free_port)) << "a listener of the refused config was left open";
  PGF_ASSERT_OK_AND_ASSIGN(PgConn again, AppOn(old_port));
  PGF_EXPECT_OK(Query(again.get(), "select 1"));

  // Once the port is free, the same change goes through.
  PGF_ASSERT_OK(WriteIni(changed, {{"listen_port", absl::StrCat(free_port)}}));
  PGF_ASSERT_OK_AND_ASSIGN(std::string tag, Command(console.get(), "RELOAD"));
  EXPECT_EQ(tag, "RELOAD");
  PGF_ASSERT_OK_AND_ASSIGN(PgConn moved, AppOn(free_port));
  PGF_EXPECT_OK(Query(moved.get(), "select 1"));
  PGF_ASSERT_OK_AND_ASSIGN(size, ConfigValue(console.get(), "default_pool_size"));
  EXPECT_EQ(size, "7");
}

TEST_F(LiveListenersTest, UnixSocketDirChangeMovesTheSocket) {
  TempDir first, second;
  PGF_ASSERT_OK(first.Create("pgfleet-sock-a"));
  PGF_ASSERT_OK(second.Create("pgfleet-sock-b"));
  const AgentOptions options = Options({{"unix_socket_dir", first.path()}});
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  const int port = agent_->port();
  const std::string old_socket = absl::StrCat(first.path(), "/.s.PGSQL.", port);
  const std::string new_socket = absl::StrCat(second.path(), "/.s.PGSQL.", port);
  auto unix_conninfo = [&](const std::string& dir) {
    return absl::StrCat("host=", dir, " port=", port, " dbname=", kAppDb, " user=", kAppUser,
                        " password=", kAppPassword, " connect_timeout=10");
  };
  ASSERT_TRUE(std::filesystem::exists(old_socket));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn over_unix, Connect(unix_conninfo(first.path())));
  PGF_ASSERT_OK(
      Query(over_unix.get(), "create temp table kept(x int); insert into kept values (5)"));

  PGF_ASSERT_OK(WriteIni(options, {{"unix_socket_dir", second.path()}}));
  PGF_ASSERT_OK(agent_->Signal(SIGHUP));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = ReadFileTail(agent_->log_path(), 1024);
        return std::filesystem::exists(new_socket) && !std::filesystem::exists(old_socket);
      },
      absl::Seconds(10), "SIGHUP to move the unix socket"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn moved, Connect(unix_conninfo(second.path())));
  PGF_EXPECT_OK(Query(moved.get(), "select 1"));
  EXPECT_FALSE(Connect(unix_conninfo(first.path())).ok());
  // The client connected through the old socket keeps its session; TCP never moved.
  PGF_ASSERT_OK_AND_ASSIGN(int64_t kept, ScalarInt(over_unix.get(), "select x from kept"));
  EXPECT_EQ(kept, 5);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn tcp, AppOn(port));
  PGF_EXPECT_OK(Query(tcp.get(), "select 1"));

  // No unix socket at all: the file goes, TCP stays.
  PGF_ASSERT_OK(WriteIni(options, {{"unix_socket_dir", ""}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConsoleOn(port));
  PGF_ASSERT_OK_AND_ASSIGN(std::string tag, Command(console.get(), "RELOAD"));
  EXPECT_EQ(tag, "RELOAD");
  EXPECT_FALSE(std::filesystem::exists(new_socket));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn tcp_again, AppOn(port));
  PGF_EXPECT_OK(Query(tcp_again.get(), "select 1"));
}

TEST_F(LiveListenersTest, ListenAddrChangeAddsAndRemovesAddresses) {
  const AgentOptions options = Options();
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  const int port = agent_->port();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConsoleOn(port));
  auto conninfo = [&](const std::string& host) {
    return absl::StrCat("host=", host, " port=", port, " dbname=", kAppDb, " user=", kAppUser,
                        " password=", kAppPassword, " sslmode=disable connect_timeout=10");
  };
  EXPECT_FALSE(Connect(conninfo("127.0.0.2")).ok());

  // 127.0.0.1 stays open (the console on it keeps working), 127.0.0.2 is added.
  PGF_ASSERT_OK(WriteIni(options, {{"listen_addr", "127.0.0.1,127.0.0.2"}}));
  PGF_ASSERT_OK_AND_ASSIGN(std::string tag, Command(console.get(), "RELOAD"));
  EXPECT_EQ(tag, "RELOAD");
  PGF_ASSERT_OK_AND_ASSIGN(PgConn second, Connect(conninfo("127.0.0.2")));
  PGF_EXPECT_OK(Query(second.get(), "select 1"));

  // Now 127.0.0.1 goes: the console that came in through it stays connected.
  PGF_ASSERT_OK(WriteIni(options, {{"listen_addr", "127.0.0.2"}}));
  PGF_ASSERT_OK_AND_ASSIGN(tag, Command(console.get(), "RELOAD"));
  EXPECT_EQ(tag, "RELOAD");
  EXPECT_FALSE(CanConnect(port));
  PGF_ASSERT_OK_AND_ASSIGN(std::string addr, ConfigValue(console.get(), "listen_addr"));
  EXPECT_EQ(addr, "127.0.0.2");
  PGF_EXPECT_OK(Query(second.get(), "select 1"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn third, Connect(conninfo("127.0.0.2")));
  PGF_EXPECT_OK(Query(third.get(), "select 1"));

  // Back to 127.0.0.1 for the fixture's TearDown, which reaches the agent there.
  PGF_ASSERT_OK(WriteIni(options, {{"listen_addr", "127.0.0.1"}}));
  PGF_ASSERT_OK_AND_ASSIGN(tag, Command(console.get(), "RELOAD"));
  EXPECT_TRUE(CanConnect(port));
}

// --- restart-only keys ---------------------------------------------------------------------------

TEST_F(LiveListenersTest, ReloadChangingARestartOnlyKeyWarnsAndKeepsTheRunningValue) {
  TempDir pids;
  PGF_ASSERT_OK(pids.Create("pgfleet-pids"));
  const std::string first_pidfile = pids.path() + "/first.pid";
  const std::string second_pidfile = pids.path() + "/second.pid";
  ASSERT_NO_FATAL_FAILURE(
      StartAgentWith(Options({{"pidfile", first_pidfile}, {"default_pool_size", "5"}})));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConsoleOn(agent_->port()));
  Notices notices;
  notices.Attach(console.get());

  PGF_ASSERT_OK(
      agent_->RewriteConfig(Options({{"pidfile", second_pidfile}, {"default_pool_size", "6"}})));
  PGF_ASSERT_OK_AND_ASSIGN(std::string tag, Command(console.get(), "RELOAD"));
  EXPECT_EQ(tag, "RELOAD");
  EXPECT_TRUE(absl::StrContains(notices.Text(), "restart pending: pidfile")) << notices.Text();
  // Everything else applied; the pidfile is the one the agent started with.
  PGF_ASSERT_OK_AND_ASSIGN(std::string size, ConfigValue(console.get(), "default_pool_size"));
  EXPECT_EQ(size, "6");
  PGF_ASSERT_OK_AND_ASSIGN(std::string pidfile, ConfigValue(console.get(), "pidfile"));
  EXPECT_EQ(pidfile, first_pidfile);
  EXPECT_TRUE(std::filesystem::exists(first_pidfile));
  EXPECT_FALSE(std::filesystem::exists(second_pidfile));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = ReadFileTail(agent_->log_path(), 1024);
        return absl::StrContains(agent_->LogContents(), "restart pending: pidfile");
      },
      absl::Seconds(10), "the log to say a restart is pending"));

  // Back to the running value: nothing pending, no notice.
  PGF_ASSERT_OK(
      agent_->RewriteConfig(Options({{"pidfile", first_pidfile}, {"default_pool_size", "7"}})));
  Notices quiet;
  quiet.Attach(console.get());
  PGF_ASSERT_OK_AND_ASSIGN(tag, Command(console.get(), "RELOAD"));
  EXPECT_EQ(tag, "RELOAD");
  EXPECT_FALSE(absl::StrContains(quiet.Text(), "restart pending")) << quiet.Text();
}

// --- through the controller ----------------------------------------------------------------------

class LiveListenersFleetTest : public FleetFixture {
 protected:
  LiveListenersFleetTest() : FleetFixture("pgfleet-live-listeners") {}

  void StartAgent(const std::string& id) {
    AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                            {"pool_mode", "session"},
                                            {"default_pool_size", "5"},
                                            {"admin_users", kAdminUser}});
    options.extra_args = LinkArgs(id, "dev", controller_->address());
    options.extra_args.push_back(absl::StrCat("--allow-path=", dir_));
    ASSERT_NO_FATAL_FAILURE(StartLinkedAgent(id, options));
  }

  std::string FleetIni(int listen_port, const std::map<std::string, std::string>& overrides) const {
    std::map<std::string, std::string> settings = {
        {"listen_addr", "127.0.0.1"}, {"listen_port", absl::StrCat(listen_port)},
        {"unix_socket_dir", ""},      {"auth_type", "scram-sha-256"},
        {"auth_file", users_path_},   {"admin_users", kAdminUser},
        {"pool_mode", "session"},     {"default_pool_size", "5"},
    };
    for (const auto& [key, value] : overrides) settings[key] = value;
    std::string ini = absl::StrCat("[databases]\n", kAppDb, " = host=127.0.0.1 port=", g_pg->port(),
                                   " dbname=", kAppDb, "\n\n[pgbouncer]\n");
    for (const auto& [key, value] : settings) absl::StrAppend(&ini, key, " = ", value, "\n");
    return ini;
  }

  // `fleetctl config push` then `config apply --wait`: apply's result (exit 5 on a NACK).
  FleetctlResult PushAndApply(const std::string& ini) {
    const std::string path = absl::StrCat(dir_, "/push-", ++pushes_, ".ini");
    absl::Status written = WriteFile(path, ini);
    EXPECT_TRUE(written.ok()) << written;
    FleetctlResult push =
        Ctl({"config", "push", "--env", "dev", "-f", path, "-m", "test", "--output", "json"});
    EXPECT_EQ(push.exit_code, 0) << push.Describe();
    absl::StatusOr<pgfleet::v1::ConfigVersion> version =
        ParseJson<pgfleet::v1::ConfigVersion>(push.stdout_text);
    EXPECT_TRUE(version.ok()) << push.Describe();
    if (!version.ok()) return push;
    return Ctl({"config", "apply", "--env", "dev", "--version",
                absl::StrCat("v", version->version()), "--wait"});
  }

  absl::StatusOr<pgfleet::v1::Agent> AgentEntry(const std::string& id) const {
    FleetctlResult result = Ctl({"agents", "list", "-o", "json"});
    if (result.exit_code != 0) return absl::InternalError(result.Describe());
    absl::StatusOr<pgfleet::v1::ListAgentsResponse> list =
        ParseJson<pgfleet::v1::ListAgentsResponse>(result.stdout_text);
    if (!list.ok()) return list.status();
    for (const auto& agent : list->agents()) {
      if (agent.agent_id() == id) return agent;
    }
    return absl::NotFoundError(result.stdout_text);
  }

  absl::Status AwaitConnected(const std::string& id) const {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<pgfleet::v1::Agent> agent = AgentEntry(id);
          *note = agent.ok() ? agent->DebugString() : agent.status().ToString();
          return agent.ok() && agent->connected();
        },
        absl::Seconds(30), absl::StrCat(id, " connected"), absl::Milliseconds(100));
  }

  int pushes_ = 0;
};

TEST_F(LiveListenersFleetTest, PushedListenPortIsAppliedLiveOrRefusedNamingTheAddress) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  ASSERT_NO_FATAL_FAILURE(StartAgent("edge-1"));
  PGF_ASSERT_OK(AwaitConnected("edge-1"));
  const int old_port = port("edge-1");
  PGF_ASSERT_OK_AND_ASSIGN(PgConn session,
                           Connect(TcpConnString(old_port, kAppDb, kAppUser, kAppPassword)));
  PGF_ASSERT_OK(Query(session.get(), "create temp table kept(x int); insert into kept values (9)"));

  // A port another process holds: NACK naming the address; the agent stays where it was.
  PortHolder holder;
  PGF_ASSERT_OK(holder.Listen());
  FleetctlResult refused = PushAndApply(FleetIni(holder.port(), {}));
  EXPECT_EQ(refused.exit_code, 5) << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text, "NACK")) << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text, absl::StrCat("127.0.0.1:", holder.port())))
      << refused.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn still,
                           Connect(TcpConnString(old_port, kAppDb, kAppUser, kAppPassword)));
  PGF_EXPECT_OK(Query(still.get(), "select 1"));

  // A free port: ACK, the agent moves there at once, the session from before is intact.
  PGF_ASSERT_OK_AND_ASSIGN(int new_port, PickFreePort());
  FleetctlResult applied = PushAndApply(FleetIni(new_port, {}));
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn moved,
                           Connect(TcpConnString(new_port, kAppDb, kAppUser, kAppPassword)));
  PGF_EXPECT_OK(Query(moved.get(), "select 1"));
  EXPECT_FALSE(CanConnect(old_port)) << "the old port still accepts after the ACK";
  PGF_ASSERT_OK_AND_ASSIGN(int64_t kept, ScalarInt(session.get(), "select x from kept"));
  EXPECT_EQ(kept, 9);
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Agent entry, AgentEntry("edge-1"));
  EXPECT_TRUE(entry.restart_pending().empty()) << entry.DebugString();
}

TEST_F(LiveListenersFleetTest, PushedRestartOnlyKeyIsAckedAndShownAsPendingRestart) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  ASSERT_NO_FATAL_FAILURE(StartAgent("edge-2"));
  PGF_ASSERT_OK(AwaitConnected("edge-2"));
  const int port_now = port("edge-2");

  const std::string pidfile = dir_ + "/edge-2.pid";
  FleetctlResult applied =
      PushAndApply(FleetIni(port_now, {{"pidfile", pidfile}, {"default_pool_size", "6"}}));
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Agent entry, AgentEntry("edge-2"));
  ASSERT_EQ(entry.restart_pending_size(), 1) << entry.DebugString();
  EXPECT_EQ(entry.restart_pending(0), "pidfile");
  FleetctlResult table = Ctl({"agents", "list"});
  EXPECT_TRUE(absl::StrContains(table.stdout_text, "PENDING RESTART")) << table.Describe();
  EXPECT_TRUE(absl::StrContains(table.stdout_text, "pidfile")) << table.Describe();
  // Applied except the pidfile: none was written.
  EXPECT_FALSE(std::filesystem::exists(pidfile));
  PGF_ASSERT_OK_AND_ASSIGN(
      PgConn console, Connect(TcpConnString(port_now, "pgbouncer", kAdminUser, kAdminPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(Table config, Show(console.get(), "SHOW CONFIG"));
  Rows size = config.Where({{"key", "default_pool_size"}});
  ASSERT_EQ(size.size(), 1u);
  EXPECT_EQ(config.At(size[0], "value"), "6");

  // A config without the change: nothing pending any more.
  applied = PushAndApply(FleetIni(port_now, {{"default_pool_size", "7"}}));
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(entry, AgentEntry("edge-2"));
  EXPECT_TRUE(entry.restart_pending().empty()) << entry.DebugString();
}

}  // namespace
}  // namespace pgfleet::testutil
