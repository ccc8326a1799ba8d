// SHOW POOLS sv_being_canceled (issue 17): a server whose client finished while a cancel
// request for it was still on its way to PostgreSQL is held out of the pool until the cancel
// has landed (else it could cancel the next client's query). PgBouncer 1.18 counts such servers
// in sv_being_canceled; ours read 0 whatever happened.
//
// A real PostgreSQL behind a small TCP relay the test controls: server connections pass
// through, cancel requests are held (read, not answered, not closed) until the test lets them
// go, so "a cancel in flight while its server is released" is a state the test can hold still.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/raw_client.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

// Relays TCP connections from a local port to PostgreSQL, except cancel requests: those are
// read and then held open until ReleaseCancels() closes them (which the agent's forwarder
// takes as "PostgreSQL read it and closed the connection": delivered).
class CancelHoldingRelay {
 public:
  explicit CancelHoldingRelay(int target_port) : target_port_(target_port) {}
  ~CancelHoldingRelay() {
    stopping_ = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int fd : open_fds_) shutdown(fd, SHUT_RDWR);
    }
    if (accept_thread_.joinable()) accept_thread_.join();
    for (std::thread& t : relays_) t.join();
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : held_) close(fd);
    if (listen_fd_ >= 0) close(listen_fd_);
  }

  absl::StatusOr<int> Start() {
    PGF_ASSIGN_OR_RETURN(LoopbackListener listener, ListenOnLoopback(64));
    listen_fd_ = listener.fd;
    accept_thread_ = std::thread([this] { AcceptLoop(); });
    return listener.port;
  }

  int held_cancels() {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int>(held_.size());
  }

  void ReleaseCancels() {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : held_) close(fd);
    held_.clear();
  }

 private:
  void AcceptLoop() {
    while (!stopping_) {
      pollfd pfd{listen_fd_, POLLIN, 0};
      if (poll(&pfd, 1, 100) <= 0) continue;
      const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      std::lock_guard<std::mutex> lock(mu_);
      open_fds_.insert(client);
      relays_.emplace_back([this, client] { Serve(client); });
    }
  }

  void Serve(int client) {
    char first[8];
    if (recv(client, first, sizeof(first), MSG_PEEK | MSG_WAITALL) != sizeof(first)) {
      Forget(client);
      return;
    }
    uint32_t code = 0;
    std::memcpy(&code, first + 4, sizeof(code));
    if (ntohl(code) == static_cast<uint32_t>(kCancelRequestCode)) {
      char packet[16];
      (void)recv(client, packet, sizeof(packet), MSG_WAITALL);
      std::lock_guard<std::mutex> lock(mu_);
      open_fds_.erase(client);
      held_.push_back(client);
      return;
    }
    const int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(target_port_));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (server < 0 ||
        connect(server, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      if (server >= 0) close(server);
      Forget(client);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_fds_.insert(server);
    }
    char buffer[65536];
    pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
    while (!stopping_) {
      if (poll(fds, 2, 100) <= 0) continue;
      bool done = false;
      for (int i = 0; i < 2 && !done; ++i) {
        if (fds[i].revents == 0) continue;
        const ssize_t n = recv(fds[i].fd, buffer, sizeof(buffer), 0);
        if (n <= 0) {
          done = true;
          break;
        }
        const int to = fds[1 - i].fd;
        for (ssize_t sent = 0; sent < n;) {
          const ssize_t w = send(to, buffer + sent, static_cast<size_t>(n - sent), MSG_NOSIGNAL);
          if (w <= 0) {
            done = true;
            break;
          }
          sent += w;
        }
      }
      if (done) break;
    }
    Forget(server);
    Forget(client);
  }

  void Forget(int fd) {
    std::lock_guard<std::mutex> lock(mu_);
    open_fds_.erase(fd);
    close(fd);
  }

  const int target_port_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::mutex mu_;
  std::vector<std::thread> relays_;  // Appended under mu_ by the accept thread only.
  std::set<int> open_fds_;
  std::vector<int> held_;
};

// The appdb/app row of SHOW POOLS as column -> value.
absl::StatusOr<std::map<std::string, std::string>> PoolRow(PGconn* console) {
  absl::StatusOr<Table> pools = Show(console, "SHOW POOLS");
  if (!pools.ok()) return pools.status();
  Rows rows = pools->Where({{"database", kAppDb}, {"user", kAppUser}});
  if (rows.size() != 1) return absl::NotFoundError("no appdb/app pool:\n" + pools->Dump());
  std::map<std::string, std::string> row;
  for (const std::string& column : pools->columns) row[column] = pools->At(rows[0], column);
  return row;
}

// Waits until the pool's `column` reads `value`.
absl::Status AwaitPoolValue(PGconn* console, const std::string& column, const std::string& value) {
  return PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<std::map<std::string, std::string>> row = PoolRow(console);
        if (!row.ok()) return row.status();
        *note =
            absl::StrCat(column, " = ", (*row)[column], " (sv_used ", (*row)["sv_used"],
                         ", sv_idle ", (*row)["sv_idle"], ", sv_active ", (*row)["sv_active"], ")");
        return (*row)[column] == value;
      },
      absl::Seconds(15), absl::StrCat("SHOW POOLS ", column, " = ", value));
}

TEST(CancelHoldTest, AServerHeldForALandingCancelIsCountedAsBeingCanceled) {
  ASSERT_NE(g_pg, nullptr);
  CancelHoldingRelay relay(g_pg->port());
  PGF_ASSERT_OK_AND_ASSIGN(int relay_port, relay.Start());

  const AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                                {"pool_mode", "transaction"},
                                                {"default_pool_size", "1"},
                                                {"admin_users", kAdminUser},
                                                // The held cancel must outlast the test.
                                                {"server_connect_timeout", "120"}},
                                               relay_port);
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<AgentProcess> agent, AgentProcess::Start(options));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console,
                           Connect(agent->ConnString("pgbouncer", kAdminUser, kAdminPassword)));

  // The client's query waits on a lock the test holds, so it is running when the cancel comes
  // and ends when the test says (not because of the cancel, which the relay holds).
  PGF_ASSERT_OK_AND_ASSIGN(PgConn locker, Connect(g_pg->SuperuserConnString(kAppDb)));
  PGF_ASSERT_OK(Query(locker.get(), "SELECT pg_advisory_lock(4242)").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn client,
                           Connect(agent->ConnString(kAppDb, kAppUser, kAppPassword)));
  ASSERT_EQ(PQsendQuery(client.get(), "SELECT pg_advisory_xact_lock(4242)"), 1)
      << PQerrorMessage(client.get());
  PGF_ASSERT_OK(AwaitPoolValue(console.get(), "sv_active", "1"));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Rows> waiting = g_pg->Exec(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
            "query LIKE '%pg_advisory_xact_lock%'");
        if (!waiting.ok()) return waiting.status();
        *note = (*waiting)[0][0];
        return (*waiting)[0][0] == "1";
      },
      absl::Seconds(15), "the client's query to wait for the lock"));

  PGcancel* cancel = PQgetCancel(client.get());
  ASSERT_NE(cancel, nullptr);
  char errbuf[256];
  const int sent = PQcancel(cancel, errbuf, sizeof(errbuf));
  PQfreeCancel(cancel);
  ASSERT_EQ(sent, 1) << errbuf;
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = absl::StrCat(relay.held_cancels());
        return relay.held_cancels() == 1;
      },
      absl::Seconds(15), "the agent to forward the cancel to the relay"));
  // PgBouncer's sv_active_cancel: a cancel request on its way to PostgreSQL.
  PGF_EXPECT_OK(AwaitPoolValue(console.get(), "sv_active_cancel", "1"));

  // The query ends while its cancel is still in flight: the server is released by its client
  // but held out of the pool.
  PGF_ASSERT_OK(Query(locker.get(), "SELECT pg_advisory_unlock(4242)").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgResult result, GetResultWithin(client.get(), absl::Seconds(15)));
  ASSERT_NE(result, nullptr);
  EXPECT_EQ(PQresultStatus(result.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(result.get());
  while (result != nullptr) {
    PGF_ASSERT_OK_AND_ASSIGN(result, GetResultWithin(client.get(), absl::Seconds(15)));
  }
  PGF_EXPECT_OK(AwaitPoolValue(console.get(), "sv_being_canceled", "1"));
  PGF_ASSERT_OK_AND_ASSIGN(auto held, PoolRow(console.get()));
  EXPECT_EQ(held["sv_used"], "0") << "a held server is counted twice";
  EXPECT_EQ(held["sv_idle"], "0") << "a held server is in the pool";
  EXPECT_EQ(held["sv_active"], "0");

  // The cancel lands: the server goes back to the pool and is no longer being canceled.
  relay.ReleaseCancels();
  PGF_EXPECT_OK(AwaitPoolValue(console.get(), "sv_being_canceled", "0"));
  PGF_EXPECT_OK(AwaitPoolValue(console.get(), "sv_active_cancel", "0"));
  PGF_EXPECT_OK(AwaitPoolValue(console.get(), "sv_idle", "1"));
  PGF_EXPECT_OK(Query(client.get(), "SELECT 1").status());
  if (HasFailure()) std::cerr << agent->Diagnostics() << "\n";
}

}  // namespace
}  // namespace pgfleet::testutil
