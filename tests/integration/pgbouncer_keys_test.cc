// Issue 22: PgBouncer 1.24/1.25 settings that pgfleet used to load without acting on, now with
// PgBouncer's semantics: transaction_timeout ([pgbouncer] and per user), the per-user
// client_idle_timeout / idle_transaction_timeout / query_timeout overriding the [pgbouncer]
// values. The real pgfleet-agent in front of a real PostgreSQL throughout.

#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/raw_client.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

class PgBouncerKeysTest : public AgentTest {
 protected:
  // The app database, [pgbouncer] `settings` over the fixture's defaults, `users` as the [users]
  // section.
  void StartWith(const std::map<std::string, std::string>& settings, const std::string& users) {
    std::map<std::string, std::string> merged = DefaultAgentSettings();
    for (const auto& [key, value] : settings) merged[key] = value;
    AgentOptions options = AppAgentOptions(merged);
    options.users_section = users;
    ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  }

  absl::StatusOr<PgConn> ConnectAppWith(const std::string& extra) const {
    return Connect(absl::StrCat(agent_->ConnString(kAppDb, kAppUser, kAppPassword), " ", extra));
  }

  // Waits until the agent's log says a client was closed for `reason` (PgBouncer's
  // "closing because: <reason>" line) `times` times.
  absl::Status AwaitClientClosedFor(const std::string& reason, int times = 1) const {
    const std::string needle = absl::StrCat("closing because: ", reason, " (");
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          const int seen = CountOccurrences(agent_->LogContents(), needle);
          *note = absl::StrCat(seen, " such lines");
          return seen >= times;
        },
        absl::Seconds(30), absl::StrCat("a client closed because: ", reason));
  }

  // What the next statement on a connection the agent closed reports: "SQLSTATE: message" of the
  // FATAL error the agent sent before closing.
  static std::string ErrorAfterClose(PGconn* conn) {
    absl::StatusOr<Rows> rows = Query(conn, "select 1");
    if (rows.ok()) return "no error";
    return std::string(rows.status().message());
  }
};

// PgBouncer 1.25 (janitor.c): a transaction that lasts longer than transaction_timeout, counted
// from its first query, has its server closed and the client disconnected with "transaction
// timeout" (08P01, PgBouncer's default SQLSTATE). A client idle between transactions is left
// alone, however long.
TEST_F(PgBouncerKeysTest, TransactionTimeoutDisconnectsALongTransaction) {
  ASSERT_NO_FATAL_FAILURE(StartWith({{"transaction_timeout", "1"}}, ""));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn between, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn in_transaction, ConnectApp());
  PGF_ASSERT_OK(Query(between.get(), "begin; select 1; commit").status());

  PGF_ASSERT_OK(Query(in_transaction.get(), "begin").status());
  PGF_ASSERT_OK(AwaitClientClosedFor("transaction timeout"));
  EXPECT_EQ(ErrorAfterClose(in_transaction.get()), "08P01: transaction timeout");
  // Its server went with it: PostgreSQL has only the other pooled connection left, if any, and
  // never one still in a transaction.
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(PgConn direct,
                             Connect(TcpConnString(g_pg->port(), kAppDb, kAppUser, kAppPassword)));
        PGF_ASSIGN_OR_RETURN(
            int64_t open,
            ScalarInt(direct.get(), absl::StrCat(kAppdbBackendsSql, " and state like 'idle in%'")));
        *note = absl::StrCat(open, " backends idle in transaction");
        return open == 0;
      },
      absl::Seconds(30), "the timed-out transaction's server to be closed"));

  // Idle longer than the timeout, but between transactions: untouched.
  PGF_ASSERT_OK_AND_ASSIGN(int64_t one, ScalarInt(between.get(), "select 1"));
  EXPECT_EQ(one, 1);
}

// A statement that runs past transaction_timeout is a transaction that lasts too long too
// (PgBouncer checks every server that is not idle, a query running included). The sleep is
// short so PostgreSQL's backend ends soon after: it notices its closed socket only then.
TEST_F(PgBouncerKeysTest, TransactionTimeoutCountsARunningStatement) {
  ASSERT_NO_FATAL_FAILURE(StartWith({{"transaction_timeout", "1"}}, ""));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  ASSERT_EQ(PQsendQuery(conn.get(), "select pg_sleep(5)"), 1) << PQerrorMessage(conn.get());
  EXPECT_EQ(ErrorOfPendingQuery(conn.get()), "08P01: transaction timeout");
}

// [users] name = transaction_timeout=N applies to that user when [pgbouncer] has none.
TEST_F(PgBouncerKeysTest, PerUserTransactionTimeout) {
  ASSERT_NO_FATAL_FAILURE(StartWith({}, absl::StrCat(kAppUser, " = transaction_timeout=1\n")));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK(Query(conn.get(), "begin").status());
  PGF_ASSERT_OK(AwaitClientClosedFor("transaction timeout"));
  EXPECT_EQ(ErrorAfterClose(conn.get()), "08P01: transaction timeout");
}

// PgBouncer 1.24's per-user client_idle_timeout, idle_transaction_timeout and query_timeout:
// with nothing set in [pgbouncer], the [users] values alone cut the user's clients off, each
// for its own reason.
TEST_F(PgBouncerKeysTest, PerUserTimeoutsOverrideDisabledGlobalOnes) {
  ASSERT_NO_FATAL_FAILURE(StartWith(
      {{"default_pool_size", "4"}},
      absl::StrCat(kAppUser,
                   " = client_idle_timeout=1 idle_transaction_timeout=1 query_timeout=1\n")));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn idle, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn idle_in_transaction, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn running, ConnectApp());

  ASSERT_EQ(PQsendQuery(running.get(), "select pg_sleep(5)"), 1) << PQerrorMessage(running.get());
  PGF_ASSERT_OK(Query(idle_in_transaction.get(), "begin").status());

  // PgBouncer's words and SQLSTATEs (pgbouncer_suite_parity_test checks them for the globals).
  EXPECT_EQ(ErrorOfPendingQuery(running.get()), "08P01: query timeout");
  PGF_ASSERT_OK(AwaitClientClosedFor("idle transaction timeout"));
  EXPECT_EQ(ErrorAfterClose(idle_in_transaction.get()), "08P01: idle transaction timeout");
  PGF_ASSERT_OK(AwaitClientClosedFor("client_idle_timeout"));
  EXPECT_TRUE(absl::StrContains(ErrorAfterClose(idle.get()), "client_idle_timeout"));
}

// PgBouncer's rule: a user's 0 means "not set", so the [pgbouncer] value still applies to it.
TEST_F(PgBouncerKeysTest, PerUserZeroKeepsTheGlobalTimeout) {
  ASSERT_NO_FATAL_FAILURE(StartWith({{"transaction_timeout", "1"}},
                                    absl::StrCat(kAppUser, " = transaction_timeout=0\n")));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK(Query(conn.get(), "begin").status());
  PGF_ASSERT_OK(AwaitClientClosedFor("transaction timeout"));
  EXPECT_EQ(ErrorAfterClose(conn.get()), "08P01: transaction timeout");
}

// PgBouncer 1.24's query_wait_notify: a client queued for a server longer than that many
// seconds gets PgBouncer's NOTICE, then its answer once a server frees up.
TEST_F(PgBouncerKeysTest, QueryWaitNotifyTellsAQueuedClient) {
  ASSERT_NO_FATAL_FAILURE(StartWith({{"query_wait_notify", "1"}, {"default_pool_size", "1"}}, ""));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn holder, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn queued, ConnectApp());
  std::vector<std::string> notices;
  PQsetNoticeReceiver(
      queued.get(),
      [](void* arg, const PGresult* result) {
        const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
        static_cast<std::vector<std::string>*>(arg)->push_back(
            absl::StrCat(PQresultErrorField(result, PG_DIAG_SEVERITY_NONLOCALIZED), " ",
                         state != nullptr ? state : "", ": ",
                         PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY)));
      },
      &notices);

  PGF_ASSERT_OK(Query(holder.get(), "begin").status());  // The pool's one server.
  ASSERT_EQ(PQsendQuery(queued.get(), "select 42"), 1) << PQerrorMessage(queued.get());
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        if (PQconsumeInput(queued.get()) != 1) {
          return absl::UnavailableError(PQerrorMessage(queued.get()));
        }
        PQisBusy(queued.get());  // Parses what arrived; notices go to the receiver.
        *note = absl::StrCat(notices.size(), " notices");
        return !notices.empty();
      },
      absl::Seconds(30), "the queued client's NOTICE"));
  EXPECT_EQ(notices.front(),
            "NOTICE 00000: No server connection available in postgres backend, client being "
            "queued");

  PGF_ASSERT_OK(Query(holder.get(), "commit").status());
  absl::StatusOr<PgResult> answer = GetResultWithin(queued.get(), absl::Seconds(30));
  PGF_ASSERT_OK(answer.status());
  ASSERT_NE(*answer, nullptr);
  ASSERT_EQ(PQresultStatus(answer->get()), PGRES_TUPLES_OK) << PQerrorMessage(queued.get());
  EXPECT_EQ(std::string(PQgetvalue(answer->get(), 0, 0)), "42");
  while (PgResult rest{PQgetResult(queued.get())}) {
  }
  EXPECT_EQ(notices.size(), 1u);  // Once per connection, as PgBouncer.
}

// unix_socket_mode and unix_socket_group on the socket file the agent creates.
TEST_F(PgBouncerKeysTest, UnixSocketModeAndGroup) {
  TempDir socket_dir;
  PGF_ASSERT_OK(socket_dir.Create("pgf-sock"));
  // The agent may run as another OS user (PGFLEET_TEST_AGENT_RUN_AS): it must create its socket.
  ASSERT_EQ(chmod(socket_dir.path().c_str(), 0777), 0);
  std::map<std::string, std::string> settings = {{"unix_socket_dir", socket_dir.path()},
                                                 {"unix_socket_mode", "0640"}};
  // Only root may give a file a group it is not in; "daemon" is in every Debian base system.
  const group* daemon_group = getgrnam("daemon");
  const bool check_group = geteuid() == 0 && daemon_group != nullptr &&
                           std::getenv("PGFLEET_TEST_AGENT_RUN_AS") == nullptr;
  const gid_t wanted_gid = daemon_group != nullptr ? daemon_group->gr_gid : 0;
  if (check_group) settings["unix_socket_group"] = "daemon";
  ASSERT_NO_FATAL_FAILURE(StartWith(settings, ""));

  const std::string path = absl::StrCat(socket_dir.path(), "/.s.PGSQL.", agent_->port());
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  if (check_group) {
    EXPECT_EQ(st.st_gid, wanted_gid);
  }
}

// An unknown group is an error at start, naming the key's problem, not a silently open socket.
TEST_F(PgBouncerKeysTest, UnixSocketGroupThatDoesNotExistFailsTheStart) {
  TempDir socket_dir;
  PGF_ASSERT_OK(socket_dir.Create("pgf-sock"));
  ASSERT_EQ(chmod(socket_dir.path().c_str(), 0777), 0);
  std::map<std::string, std::string> settings = DefaultAgentSettings();
  settings["unix_socket_dir"] = socket_dir.path();
  settings["unix_socket_group"] = "no-such-group-pgfleet";
  AgentOptions options = AppAgentOptions(settings);
  options.start_timeout = absl::Seconds(5);
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent = AgentProcess::Start(options);
  if (agent.ok()) {
    // The TCP listener is bound before the unix socket, so the harness may see the port accept
    // in the moment before the agent gives up: then the agent must exit by itself, saying why.
    PGF_ASSERT_OK_AND_ASSIGN(int status, (*agent)->WaitForExit(absl::Seconds(10)));
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0)
        << DescribeWaitStatus(status) << "\n"
        << (*agent)->LogContents();
    EXPECT_TRUE(absl::StrContains((*agent)->LogContents(), "no-such-group-pgfleet"))
        << (*agent)->LogContents();
    return;
  }
  EXPECT_TRUE(absl::StrContains(agent.status().message(), "no-such-group-pgfleet"))
      << agent.status();
}

// track_extra_parameters (PgBouncer 1.20): a listed parameter a client sets at connect time
// (here through `options`, PGOPTIONS) is kept per client and restored on whichever server it
// gets in transaction pooling, like the built-in ones; unlisted, it is refused as before.
TEST_F(PgBouncerKeysTest, TrackExtraParametersKeepsEachClientsSearchPath) {
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn direct,
                             Connect(TcpConnString(g_pg->port(), kAppDb, kAppUser, kAppPassword)));
    PGF_ASSERT_OK(
        Query(direct.get(), "create schema if not exists s_one; create schema if not exists s_two")
            .status());
  }
  ASSERT_NO_FATAL_FAILURE(StartWith(
      {{"track_extra_parameters", "search_path, IntervalStyle"}, {"default_pool_size", "1"}}, ""));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn one, ConnectAppWith("options='-c search_path=s_one'"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn two, ConnectAppWith("options='-c search_path=s_two'"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn plain, ConnectApp());
  // One server for all three, in turns.
  for (int round = 0; round < 3; ++round) {
    PGF_ASSERT_OK_AND_ASSIGN(std::string first, ScalarText(one.get(), "show search_path"));
    EXPECT_EQ(first, "s_one");
    PGF_ASSERT_OK_AND_ASSIGN(std::string second, ScalarText(two.get(), "show search_path"));
    EXPECT_EQ(second, "s_two");
  }
  PGF_ASSERT_OK_AND_ASSIGN(std::string style, ScalarText(plain.get(), "show IntervalStyle"));
  EXPECT_EQ(style, "postgres");
}

// PgBouncer's rule: only the listed parameters are tracked, so with IntervalStyle left out of
// the list a client that sets it at connect time is refused like any unknown parameter.
TEST_F(PgBouncerKeysTest, ParametersLeftOutOfTheListAreRefused) {
  ASSERT_NO_FATAL_FAILURE(StartWith({{"track_extra_parameters", "search_path"}}, ""));
  absl::StatusOr<PgConn> refused = ConnectAppWith("options='-c IntervalStyle=iso_8601'");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "IntervalStyle")) << refused.status();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn tracked, ConnectAppWith("options='-c search_path=public'"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string path, ScalarText(tracked.get(), "show search_path"));
  EXPECT_EQ(path, "public");
}

// scram_iterations: the verifier the agent computes from a plain-text auth_file password uses
// that many iterations (the client sees it in the server-first-message), and so does the mock
// exchange of a user who does not exist, so the count gives nobody away.
TEST_F(PgBouncerKeysTest, ScramIterationsForPlainTextPasswords) {
  ASSERT_NO_FATAL_FAILURE(StartWith({{"scram_iterations", "1234"}}, ""));
  auto server_first = [&](const std::string& user) -> absl::StatusOr<std::string> {
    PGF_ASSIGN_OR_RETURN(std::unique_ptr<RawClient> raw, RawClient::Connect(agent_->port()));
    PGF_RETURN_IF_ERROR(raw->Send(StartupPacket({{"user", user}, {"database", kAppDb}})));
    PGF_ASSIGN_OR_RETURN(BackendMessage sasl, raw->ReadMessage(absl::Seconds(10)));
    if (sasl.type != 'R' || ReadBigEndian32(sasl.body) != 10) {
      return absl::InternalError(
          absl::StrCat("expected AuthenticationSASL, got ", std::string(1, sasl.type)));
    }
    const std::string first = "n,,n=,r=pgfleetclientnonce";
    std::string body = "SCRAM-SHA-256";
    body.push_back('\0');
    body += BigEndian32(static_cast<uint32_t>(first.size())) + first;
    PGF_RETURN_IF_ERROR(raw->Send(FrontendMessage('p', body)));
    PGF_ASSIGN_OR_RETURN(BackendMessage answer, raw->ReadMessage(absl::Seconds(10)));
    if (answer.type != 'R' || ReadBigEndian32(answer.body) != 11) {
      return absl::InternalError(
          absl::StrCat("expected SASLContinue, got ", std::string(1, answer.type)));
    }
    return answer.body.substr(4);
  };
  PGF_ASSERT_OK_AND_ASSIGN(std::string known, server_first(kAppUser));
  EXPECT_TRUE(absl::StrContains(known, ",i=1234")) << known;
  PGF_ASSERT_OK_AND_ASSIGN(std::string unknown, server_first("nobody_here"));
  EXPECT_TRUE(absl::StrContains(unknown, ",i=1234")) << unknown;
  // And the verifier works: a real SCRAM login with the password.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(int64_t one, ScalarInt(conn.get(), "select 1"));
  EXPECT_EQ(one, 1);
}

// The agent's own sockets, read from outside through pidfd_getfd(2): tcp_user_timeout and
// tcp_socket_buffer on the client's and the server's TCP sockets, tcp_defer_accept on the
// listener.
class AgentSockets {
 public:
  // Duplicates every socket of process `pid` into this one.
  static absl::StatusOr<AgentSockets> Of(pid_t pid) {
    AgentSockets sockets;
    const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) return absl::ErrnoToStatus(errno, "pidfd_open");
    for (const auto& entry :
         std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"))) {
      std::error_code error;
      const std::string target = std::filesystem::read_symlink(entry.path(), error).string();
      if (error || !absl::StartsWith(target, "socket:")) continue;
      const int remote = std::stoi(entry.path().filename().string());
      const int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, remote, 0));
      if (fd < 0) {
        const int saved = errno;
        close(pidfd);
        return absl::ErrnoToStatus(saved, "pidfd_getfd");
      }
      sockets.fds_.push_back(fd);
    }
    close(pidfd);
    return sockets;
  }
  AgentSockets() = default;
  AgentSockets(AgentSockets&& other) noexcept : fds_(std::move(other.fds_)) { other.fds_.clear(); }
  ~AgentSockets() {
    for (int fd : fds_) close(fd);
  }

  // The TCP socket whose local (or peer) port is `port`, and that listens or not.
  std::optional<int> Find(int port, bool peer, bool listening) const {
    for (int fd : fds_) {
      sockaddr_storage addr{};
      socklen_t length = sizeof(addr);
      const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &length)
                          : getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
      if (rc != 0 || addr.ss_family != AF_INET) continue;
      if (ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port) != port) continue;
      int accepting = 0;
      socklen_t size = sizeof(accepting);
      getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &size);
      if ((accepting != 0) == listening) return fd;
    }
    return std::nullopt;
  }

  static int Option(int fd, int level, int name) {
    int value = -1;
    socklen_t size = sizeof(value);
    if (getsockopt(fd, level, name, &value, &size) != 0) return -1;
    return value;
  }

 private:
  std::vector<int> fds_;
};

int LocalPort(int fd) {
  sockaddr_in addr{};
  socklen_t length = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) return -1;
  return ntohs(addr.sin_port);
}

TEST_F(PgBouncerKeysTest, TcpSocketOptionsOnClientServerAndListener) {
  ASSERT_NO_FATAL_FAILURE(StartWith(
      {{"tcp_user_timeout", "12345"}, {"tcp_socket_buffer", "65536"}, {"pool_mode", "session"}},
      ""));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK(Query(conn.get(), "select 1").status());  // Linked to a server now.
  absl::StatusOr<AgentSockets> sockets = AgentSockets::Of(agent_->pid());
  if (!sockets.ok() && absl::IsPermissionDenied(sockets.status())) {
    GTEST_SKIP() << "cannot read the agent's sockets here: " << sockets.status();
  }
  PGF_ASSERT_OK(sockets.status());

  const std::optional<int> client = sockets->Find(LocalPort(PQsocket(conn.get())), true, false);
  ASSERT_TRUE(client.has_value()) << "no agent socket connected to this client";
  EXPECT_EQ(AgentSockets::Option(*client, IPPROTO_TCP, TCP_USER_TIMEOUT), 12345);
  // Linux doubles what SO_RCVBUF asks for (its bookkeeping overhead).
  EXPECT_EQ(AgentSockets::Option(*client, SOL_SOCKET, SO_RCVBUF), 2 * 65536);
  EXPECT_EQ(AgentSockets::Option(*client, SOL_SOCKET, SO_SNDBUF), 2 * 65536);

  const std::optional<int> server = sockets->Find(g_pg->port(), true, false);
  ASSERT_TRUE(server.has_value()) << "no agent socket connected to PostgreSQL";
  EXPECT_EQ(AgentSockets::Option(*server, IPPROTO_TCP, TCP_USER_TIMEOUT), 12345);
  EXPECT_EQ(AgentSockets::Option(*server, SOL_SOCKET, SO_RCVBUF), 2 * 65536);

  // tcp_defer_accept is on by default (Linux), as in PgBouncer.
  const std::optional<int> listener = sockets->Find(agent_->port(), false, true);
  ASSERT_TRUE(listener.has_value()) << "no listening socket on the agent's port";
  EXPECT_GT(AgentSockets::Option(*listener, IPPROTO_TCP, TCP_DEFER_ACCEPT), 0);
}

TEST_F(PgBouncerKeysTest, TcpDeferAcceptOff) {
  ASSERT_NO_FATAL_FAILURE(StartWith({{"tcp_defer_accept", "0"}}, ""));
  absl::StatusOr<AgentSockets> sockets = AgentSockets::Of(agent_->pid());
  if (!sockets.ok() && absl::IsPermissionDenied(sockets.status())) {
    GTEST_SKIP() << "cannot read the agent's sockets here: " << sockets.status();
  }
  PGF_ASSERT_OK(sockets.status());
  const std::optional<int> listener = sockets->Find(agent_->port(), false, true);
  ASSERT_TRUE(listener.has_value());
  EXPECT_EQ(AgentSockets::Option(*listener, IPPROTO_TCP, TCP_DEFER_ACCEPT), 0);
}

// server_fast_close in session mode: after RECONNECT, a session whose server is between
// transactions ends at once (server and client closed, "database configuration changed"); one
// inside a transaction goes on until the transaction ends, then ends the same way.
TEST_F(PgBouncerKeysTest, ServerFastCloseEndsSessionsAfterReconnect) {
  ASSERT_NO_FATAL_FAILURE(StartWith(
      {{"server_fast_close", "1"}, {"pool_mode", "session"}, {"admin_users", kAdminUser}}, ""));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn idle_session, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn busy_session, ConnectApp());
  PGF_ASSERT_OK(Query(idle_session.get(), "select 1").status());
  PGF_ASSERT_OK(Query(busy_session.get(), "begin; select 1").status());

  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin,
                           Connect(agent_->ConnString("pgbouncer", kAdminUser, kAdminPassword)));
  PGF_ASSERT_OK(Query(admin.get(), "RECONNECT").status());

  PGF_ASSERT_OK(AwaitClientClosedFor("database configuration changed"));
  EXPECT_EQ(ErrorAfterClose(idle_session.get()), "08P01: database configuration changed");
  // The transaction was not cut short.
  PGF_ASSERT_OK_AND_ASSIGN(int64_t two, ScalarInt(busy_session.get(), "select 2"));
  EXPECT_EQ(two, 2);
  PGF_ASSERT_OK(Query(busy_session.get(), "commit").status());
  PGF_ASSERT_OK(AwaitClientClosedFor("database configuration changed", 2));
  EXPECT_EQ(ErrorAfterClose(busy_session.get()), "08P01: database configuration changed");
}

}  // namespace
}  // namespace pgfleet::testutil
