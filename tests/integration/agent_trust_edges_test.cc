// Trust at the edges of a real pgfleet-agent: a server peer that misbehaves during login, fleet
// state left broken on disk, and a signal that arrives while the agent starts.
//
// - Bad peers: the agent's [databases] entry "bad" points at a small TCP server this test runs,
//   standing in for a broken or hostile backend (it answers the startup packet with scripted
//   bytes: an unknown message type, a 2 GiB or negative length, an ErrorResponse without a
//   message, a GSSAPI request, a malformed SCRAM server-first-message, a ParameterStatus flood).
//   Beside it, appdb on the binary's real PostgreSQL. A client of "bad" must get a clear error at
//   once (not query_wait_timeout), the agent must log why, and a client of appdb, connected
//   throughout, must see nothing.
// - Bad fleet state: an agent started with --controller at a port nobody listens on and
//   --state-dir, so it runs fail-static from what the dir holds: a truncated applied.version,
//   an applied.ini that is gone, or one naming a file that is gone. It must start from the
//   local ini and say why.
// - Signals: a second SIGTERM during the shutdown wait exits at once; a SIGHUP sent before the
//   agent's loop handles signals reloads it.
//
// Nothing waits with a bare sleep: waits poll a condition with a deadline.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/raw_client.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

// A backend message: type, int32 length, body.
std::string BackendMessageBytes(char type, const std::string& body) {
  return absl::StrCat(std::string(1, type), BigEndian32(static_cast<uint32_t>(body.size() + 4)),
                      body);
}

// A TCP server on 127.0.0.1 that reads each connection's startup packet and answers it with
// `reply()`, then keeps the connection open (a peer that says something wrong and waits).
class ScriptedServer {
 public:
  explicit ScriptedServer(std::function<std::string()> reply) : reply_(std::move(reply)) {
    absl::StatusOr<LoopbackListener> listener = ListenOnLoopback();
    if (!listener.ok()) return;
    listen_fd_ = listener->fd;
    port_ = listener->port;
    thread_ = std::thread([this] { Serve(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (int fd : connections_) close(fd);
    if (listen_fd_ >= 0) close(listen_fd_);
  }
  int port() const { return port_; }
  void SetReply(std::function<std::string()> reply) {
    std::lock_guard<std::mutex> lock(mu_);
    reply_ = std::move(reply);
  }
  // After the reply, answer each simple Query on the connection with `answer(sql)` until the
  // agent closes it (the one connection of a test that needs a server past its login).
  void SetQueryAnswer(std::function<std::string(const std::string&)> answer) {
    std::lock_guard<std::mutex> lock(mu_);
    answer_ = std::move(answer);
  }

 private:
  void Serve() {
    while (!stop_) {
      pollfd ready{listen_fd_, POLLIN, 0};
      if (poll(&ready, 1, 50) <= 0) continue;
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      connections_.push_back(fd);
      // The startup packet: its length, then the rest (the agent sends no SSLRequest here).
      std::string length_bytes = ReadN(fd, 4);
      if (length_bytes.size() != 4) continue;
      const uint32_t length = ReadBigEndian32(length_bytes);
      if (length < 8 || length > 10000) continue;
      ReadN(fd, length - 4);
      std::function<std::string()> reply;
      {
        std::lock_guard<std::mutex> lock(mu_);
        reply = reply_;
      }
      std::function<std::string(const std::string&)> answer;
      {
        std::lock_guard<std::mutex> lock(mu_);
        answer = answer_;
      }
      SendAll(fd, reply());
      while (answer && !stop_) {
        const std::string header = ReadN(fd, 5);
        if (header.size() != 5 || header[0] == 'X') break;
        const uint32_t body_length = ReadBigEndian32(header.substr(1)) - 4;
        const std::string body = ReadN(fd, body_length);
        if (body.size() != body_length) break;
        if (header[0] == 'Q') SendAll(fd, answer(body.substr(0, body.find('\0'))));
      }
    }
  }
  static void SendAll(int fd, const std::string& bytes) {
    for (size_t sent = 0; sent < bytes.size();) {
      const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += static_cast<size_t>(n);
    }
  }
  std::string ReadN(int fd, size_t n) {
    std::string out;
    while (out.size() < n && !stop_) {
      pollfd ready{fd, POLLIN, 0};
      if (poll(&ready, 1, 50) <= 0) continue;
      char buf[4096];
      const ssize_t got = read(fd, buf, std::min(sizeof(buf), n - out.size()));
      if (got <= 0) break;
      out.append(buf, static_cast<size_t>(got));
    }
    return out;
  }

  int listen_fd_ = -1;
  int port_ = -1;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::function<std::string()> reply_;
  std::function<std::string(const std::string&)> answer_;
  std::vector<int> connections_;  // Only the serving thread touches it until the join.
  std::thread thread_;
};

class AgentBadPeerTest : public ::testing::Test {
 protected:
  void TearDown() override {
    if (agent_ != nullptr) ExpectCleanStop(*agent_);
  }
  std::unique_ptr<AgentProcess> agent_;
};

// One misbehaviour per case: what the server sends after the startup packet, and what the
// client of "bad" must read in its error (the agent's log line says the same).
struct BadPeerCase {
  std::string name;
  std::string reply;
  std::string expected;
};

TEST_F(AgentBadPeerTest, AMisbehavingServerFailsItsClientsClearlyAndNobodyElse) {
  const std::string parameter_flood = [] {
    std::string flood = BackendMessageBytes('R', BigEndian32(0));  // AuthenticationOk.
    for (int i = 0; i < 1500; ++i) {
      flood += BackendMessageBytes(
          'S', absl::StrCat("p", i, std::string(1, '\0'), "v", std::string(1, '\0')));
    }
    return flood;
  }();
  const std::vector<BadPeerCase> cases = {
      {"unknown message type", BackendMessageBytes('Q', "hello"),
       "unexpected message type 'Q' from server during login"},
      {"2 GiB length", "R" + BigEndian32(0x80000000u) + std::string(64, 'x'),
       "invalid message from server during login: type 'R' with length -2147483648"},
      {"negative length", "R" + BigEndian32(static_cast<uint32_t>(-5)) + std::string(64, 'x'),
       "invalid message from server during login: type 'R' with length -5"},
      {"ErrorResponse without a message", BackendMessageBytes('E', std::string("junk\0", 5)),
       "server sent an ErrorResponse without a message"},
      {"GSSAPI", BackendMessageBytes('R', BigEndian32(7)),
       "server asked for an unsupported authentication method: GSSAPI (7)"},
      // SCRAM offered, then a server-first-message that does not extend the agent's nonce and
      // has a bad salt and iteration count (sent at once: the agent reads it after answering).
      {"SCRAM with a malformed server-first-message",
       BackendMessageBytes('R', BigEndian32(10) + std::string("SCRAM-SHA-256\0\0", 15)) +
           BackendMessageBytes('R', BigEndian32(11) + "r=xyz,s=!!!,i=-1"),
       "SCRAM: SCRAM server nonce does not extend the client nonce"},
      {"ParameterStatus flood", parameter_flood,
       "server sent more than 1000 parameters or 1048576 bytes of them (ParameterStatus)"},
  };
  ScriptedServer server([] { return std::string(); });
  ASSERT_GT(server.port(), 0);
  AgentOptions options = AppAgentOptions({{"server_tls_sslmode", "disable"},
                                          {"server_login_retry", "1"},
                                          {"server_connect_timeout", "60"},
                                          {"query_wait_timeout", "60"}});
  options.databases_section +=
      absl::StrCat("bad = host=127.0.0.1 port=", server.port(), " dbname=bad\n");
  PGF_ASSERT_OK_AND_ASSIGN(agent_, AgentProcess::Start(options));

  // A client of the real database, connected before and used after every case.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn bystander,
                           Connect(TcpConnString(agent_->port(), kAppDb, kAppUser, kAppPassword)));
  PGF_ASSERT_OK(Query(bystander.get(), "begin").status());

  for (const BadPeerCase& bad : cases) {
    SCOPED_TRACE(bad.name);
    server.SetReply([reply = bad.reply] { return reply; });
    absl::StatusOr<PgConn> client =
        Connect(TcpConnString(agent_->port(), "bad", kAppUser, kAppPassword));
    ASSERT_FALSE(client.ok()) << "a client of the bad server logged in";
    // The login failed on what the server said, not after a timeout (query_wait_timeout and
    // server_connect_timeout are 60 s: the connect timeout of the client is what bounds it).
    EXPECT_TRUE(absl::StrContains(client.status().message(),
                                  absl::StrCat("server login failed: ", bad.expected)))
        << client.status();
    PGF_EXPECT_OK(PollUntil(
        [&](std::string*) -> absl::StatusOr<bool> {
          return absl::StrContains(agent_->LogContents(),
                                   absl::StrCat("login failed: ", bad.expected));
        },
        absl::Seconds(10), absl::StrCat("the agent logs '", bad.expected, "'")));
    PGF_ASSERT_OK_AND_ASSIGN(std::string seven, ScalarText(bystander.get(), "select 7"));
    EXPECT_EQ(seven, "7");
  }
  PGF_EXPECT_OK(Query(bystander.get(), "commit").status());
  ASSERT_TRUE(agent_->IsRunning()) << agent_->Diagnostics();
}

// The same bound after login: a server that floods ParameterStatus in its answer to a client's
// query is closed (its parameters are kept for its life), and the client is told, not handed
// 1,500 parameters.
TEST_F(AgentBadPeerTest, AParameterFloodAfterLoginClosesTheServer) {
  ScriptedServer server(
      [] { return BackendMessageBytes('R', BigEndian32(0)) + BackendMessageBytes('Z', "I"); });
  ASSERT_GT(server.port(), 0);
  server.SetQueryAnswer([](const std::string& sql) {
    std::string answer;
    if (sql == "select flood") {
      for (int i = 0; i < 1500; ++i) {
        answer += BackendMessageBytes(
            'S', absl::StrCat("p", i, std::string(1, '\0'), "v", std::string(1, '\0')));
      }
    }
    // Anything else (the agent's probe of the server's limits): an empty, finished answer.
    return answer + BackendMessageBytes('C', std::string("SELECT 0\0", 9)) +
           BackendMessageBytes('Z', "I");
  });
  AgentOptions options = AppAgentOptions({{"server_tls_sslmode", "disable"}});
  options.databases_section +=
      absl::StrCat("bad = host=127.0.0.1 port=", server.port(), " dbname=bad\n");
  PGF_ASSERT_OK_AND_ASSIGN(agent_, AgentProcess::Start(options));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn client,
                           Connect(TcpConnString(agent_->port(), "bad", kAppUser, kAppPassword)));
  EXPECT_FALSE(Query(client.get(), "select flood").ok()) << "the flood reached the client";
  PGF_EXPECT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return absl::StrContains(agent_->LogContents(), "server sent more than 1000 parameters");
      },
      absl::Seconds(10), "the agent to log why it closed the server"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn other,
                           Connect(TcpConnString(agent_->port(), kAppDb, kAppUser, kAppPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(std::string seven, ScalarText(other.get(), "select 7"));
  EXPECT_EQ(seven, "7");
}

// ---- Bad fleet state --------------------------------------------------------------------------

class AgentBadStateTest : public ::testing::Test {
 protected:
  // Starts an agent in fleet mode on `state_dir` (its controller's port is closed) and returns
  // it once it serves.
  absl::StatusOr<std::unique_ptr<AgentProcess>> StartFailStatic(const std::string& state_dir) {
    PGF_ASSIGN_OR_RETURN(int closed_port, PickFreePort());
    AgentOptions options = AppAgentOptions({});
    options.extra_args = {absl::StrCat("--controller=127.0.0.1:", closed_port), "--env=dev",
                          absl::StrCat("--state-dir=", state_dir)};
    return AgentProcess::Start(options);
  }
};

// Each broken state: the agent starts from its local ini (appdb serves) and its log names what
// is wrong in the state dir.
TEST_F(AgentBadStateTest, BrokenAppliedStateFallsBackToTheLocalIniAndSaysWhy) {
  TempDir dir;
  PGF_ASSERT_OK(dir.Create("agent-state"));
  const std::string state = dir.path();
  // A pushed config that would serve nothing of appdb, as the controller would have left it.
  const std::string applied_ini = absl::StrCat(
      "[databases]\nother = host=127.0.0.1 port=1\n[pgbouncer]\nlisten_addr = 127.0.0.1\n"
      "listen_port = 1\nunix_socket_dir =\nauth_type = trust\n");
  const std::string good_meta = absl::StrCat("3 ", std::string(64, 'a'), "\n");
  struct BrokenState {
    std::string name;
    std::string ini;  // "" = no applied.ini.
    std::string meta;
    std::string expected;
  };
  const std::vector<BrokenState> states = {
      {"truncated applied.version", applied_ini, "3", "applied.version is truncated or malformed"},
      {"garbage applied.version", applied_ini, std::string("\0\xff garbage", 10),
       "applied.version is truncated or malformed"},
      {"applied.ini gone", "", good_meta, "cannot read " + state + "/applied.ini"},
      {"applied.ini naming a file that is gone",
       applied_ini + "auth_file = " + state + "/files/gone.txt\n", good_meta,
       "it names " + state + "/files/gone.txt, which cannot be read"},
  };
  // The lock file left by an agent that died names a process that is gone: the flock died with
  // it, so every start below must take the dir over.
  PGF_ASSERT_OK(WriteFile(state + "/lock", "999999999\n"));
  for (const BrokenState& broken : states) {
    SCOPED_TRACE(broken.name);
    unlink((state + "/applied.ini").c_str());
    if (!broken.ini.empty()) PGF_ASSERT_OK(WriteFile(state + "/applied.ini", broken.ini));
    PGF_ASSERT_OK(WriteFile(state + "/applied.version", broken.meta));
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<AgentProcess> agent, StartFailStatic(state));
    const std::string log = agent->LogContents() + agent->StderrContents();
    EXPECT_TRUE(absl::StrContains(log, broken.expected)) << log;
    EXPECT_TRUE(absl::StrContains(log, "not starting from the last applied config")) << log;
    // The local ini is in force: appdb serves.
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn,
                             Connect(TcpConnString(agent->port(), kAppDb, kAppUser, kAppPassword)));
    PGF_EXPECT_OK(Query(conn.get(), "select 1").status());
    conn.reset();  // A session client would hold the shutdown for its transaction.
    ExpectCleanStop(*agent);
  }
}

// ---- Stop signals -----------------------------------------------------------------------------

// The first SIGTERM waits for the transaction in flight; a second one during that wait exits at
// once, cleanly (status 0), and says so.
TEST(AgentStopSignalTest, ASecondSigtermDuringTheShutdownWaitExitsNow) {
  AgentOptions options = AppAgentOptions({});
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<AgentProcess> agent, AgentProcess::Start(options));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn,
                           Connect(TcpConnString(agent->port(), kAppDb, kAppUser, kAppPassword)));
  PGF_ASSERT_OK(Query(conn.get(), "begin").status());
  PGF_ASSERT_OK(agent->Signal(SIGTERM));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return absl::StrContains(agent->LogContents(), "SIGTERM: shutting down");
      },
      absl::Seconds(10), "the first SIGTERM starts the shutdown"));
  EXPECT_TRUE(agent->IsRunning()) << "the transaction in flight was not waited for";
  PGF_ASSERT_OK(agent->Signal(SIGTERM));
  PGF_ASSERT_OK_AND_ASSIGN(int wait_status, agent->WaitForExit(absl::Seconds(10)));
  EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0)
      << DescribeWaitStatus(wait_status) << "\n"
      << agent->Diagnostics();
  EXPECT_TRUE(absl::StrContains(agent->LogContents(), "SIGTERM during shutdown: exiting now"))
      << agent->LogContents();
  EXPECT_EQ(agent->SanitizerReport(), "");
}

// ---- Start-up signals -------------------------------------------------------------------------

// Whether /proc/PID/status shows `sig` in the mask `field` ("SigBlk", "SigCgt"); false once the
// process is gone.
bool ProcSignalBit(pid_t pid, const char* field, int sig) {
  absl::StatusOr<std::string> status = ReadFile(absl::StrCat("/proc/", pid, "/status"));
  if (!status.ok()) return false;
  const size_t at = status->find(absl::StrCat(field, ":"));
  if (at == std::string::npos) return false;
  const uint64_t mask = std::stoull(status->substr(at + strlen(field) + 1), nullptr, 16);
  return (mask >> (sig - 1)) & 1;
}

// A SIGHUP that arrives while the agent starts, before its loop handles signals, used to take
// the default action and kill it. Sent while it is held (blocked, not yet caught), it must
// reload the agent once it runs. The window is a few milliseconds: the agent is started again
// until the signal lands in it.
TEST(AgentStartupSignalTest, SighupDuringStartupReloadsInsteadOfKilling) {
  TempDir dir;
  PGF_ASSERT_OK(dir.Create("agent-hup"));
  PGF_ASSERT_OK_AND_ASSIGN(int port, PickFreePort());
  const std::string ini = dir.path() + "/pgbouncer.ini";
  bool landed = false;
  for (int attempt = 0; attempt < 20 && !landed; ++attempt) {
    // A log of its own per attempt: what it says is about this process alone.
    const std::string log = absl::StrCat(dir.path(), "/agent-", attempt, ".log");
    PGF_ASSERT_OK(WriteFile(
        ini, absl::StrCat("[databases]\n", kAppDb, " = host=127.0.0.1 port=", g_pg->port(),
                          "\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = ", port,
                          "\nunix_socket_dir =\nauth_type = any\nlogfile = ", log, "\n")));
    SpawnOptions spawn;
    spawn.stderr_path = absl::StrCat(dir.path(), "/agent-", attempt, ".stderr");
    PGF_ASSERT_OK_AND_ASSIGN(pid_t pid, Spawn({AgentBinaryUnderTest(), ini}, spawn));
    // Busy-polls /proc: the held window is shorter than any polling interval.
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline && !ProcSignalBit(pid, "SigBlk", SIGHUP) &&
           !ProcSignalBit(pid, "SigCgt", SIGHUP)) {
    }
    landed = ProcSignalBit(pid, "SigBlk", SIGHUP) && !ProcSignalBit(pid, "SigCgt", SIGHUP);
    ASSERT_EQ(kill(pid, SIGHUP), 0);
    auto log_says = [&](const std::string& text, const std::string& what) {
      return PollUntil(
          [&](std::string*) -> absl::StatusOr<bool> {
            absl::StatusOr<std::string> contents = ReadFile(log);
            return contents.ok() && absl::StrContains(*contents, text);
          },
          absl::Seconds(10), what);
    };
    if (landed) {
      PGF_EXPECT_OK(log_says("RELOAD: configuration", "the held SIGHUP reloads the agent"));
    }
    // Whether or not it was held, the agent must be alive, and stop cleanly once it serves (a
    // SIGTERM before its handlers exist would take the default action, which is not the
    // subject here).
    PGF_EXPECT_OK(log_says("pgfleet-agent started", "the agent to serve"));
    ASSERT_EQ(kill(pid, SIGTERM), 0);
    PGF_ASSERT_OK_AND_ASSIGN(int wait_status, WaitPid(pid, absl::Seconds(10)));
    EXPECT_TRUE(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0)
        << "attempt " << attempt << ": " << DescribeWaitStatus(wait_status) << "\n"
        << ReadFileTail(log) << ReadFileTail(spawn.stderr_path);
  }
  EXPECT_TRUE(landed) << "no SIGHUP was sent while the agent held it during start-up";
}

}  // namespace
}  // namespace pgfleet::testutil
