// Many clients pipelining bursts of queries at once through a tiny pool, against a real
// pgfleet-agent and PostgreSQL 15. Each transaction that ends releases a server to the pool,
// which links the next queued client, whose input then has to be read; a client whose burst
// holds more queries asks for a server again at once. This is where input handling used to
// re-enter the pool and the connections on one stack (server -> pool -> client -> server);
// the loop now reads a linked or released client's input (agent/ready_queue.h), and every
// state change goes through one mover (agent/conn_state.h).
//
// Checked: every client gets every answer, in order, none twice and none another client's;
// clients that disconnect or send Terminate in the middle of the burst do not disturb the
// others; afterwards the pool's lists (SHOW POOLS) add up and the agent stops cleanly.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/raw_client.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

constexpr int kClients = 40;
constexpr int kQueriesPerClient = 30;

class PipelinedBurstTest : public AgentTest {
 protected:
  std::map<std::string, std::string> DefaultAgentSettings() const override {
    return {{"auth_type", "md5"},
            {"pool_mode", "transaction"},
            {"default_pool_size", "2"},
            {"max_client_conn", "200"},
            {"admin_users", kAdminUser}};
  }

  absl::StatusOr<std::unique_ptr<RawClient>> LoginRaw() {
    PGF_ASSIGN_OR_RETURN(std::unique_ptr<RawClient> client, RawClient::Connect(agent_->port()));
    PGF_ASSIGN_OR_RETURN(LoginResult login, client->Login(kAppUser, kAppDb, kAppPassword));
    if (!login.ok) {
      return absl::InternalError(
          absl::StrCat("login failed: ", login.error ? login.error->ToString() : "?"));
    }
    return client;
  }

  // A burst of simple queries, each in its own transaction except for one BEGIN..COMMIT block
  // (the server stays with the client across several ReadyForQuery), plus an extended-protocol
  // query (Parse/Bind/Execute/Sync, unnamed).
  static std::string Burst(int client) {
    std::string bytes;
    for (int i = 0; i < kQueriesPerClient; ++i) {
      const std::string value = absl::StrCat(client * 1000 + i);
      if (i == 10) bytes += QueryMessage("BEGIN");
      if (i == 20) {
        bytes += FrontendMessage('P', std::string("\0SELECT $1::int\0\0\0", 18));
        const std::string param = value;
        std::string bind("\0\0\0\0\0\1", 6);  // Portal, statement, 0 formats, 1 parameter.
        bind += BigEndian32(static_cast<uint32_t>(param.size())) + param;
        bind += std::string("\0\0", 2);  // Result formats: none.
        bytes += FrontendMessage('B', bind);
        bytes += FrontendMessage('E', std::string("\0\0\0\0\0", 5));
        bytes += FrontendMessage('S', "");
      } else {
        bytes += QueryMessage(absl::StrCat("SELECT ", value));
      }
      if (i == 12) bytes += QueryMessage("COMMIT");
    }
    return bytes;
  }

  // Reads the answers to Burst(client), in order.
  static void ExpectBurstAnswers(RawClient& raw, int client) {
    std::vector<std::string> values;
    int ready = 0;
    const int expected_ready = kQueriesPerClient + 2;  // BEGIN and COMMIT answer too.
    while (ready < expected_ready) {
      absl::StatusOr<BackendMessage> message = raw.ReadMessage(absl::Seconds(30));
      ASSERT_TRUE(message.ok()) << "client " << client << " after " << ready
                                << " answers: " << message.status();
      if (message->type == 'E') {
        absl::StatusOr<ErrorFields> error = ParseErrorResponse(message->body);
        FAIL() << "client " << client << ": " << (error.ok() ? error->ToString() : "error");
      }
      if (message->type == 'D' && message->body.size() >= 6) {
        const uint32_t length = ReadBigEndian32(message->body.substr(2, 4));
        values.push_back(message->body.substr(6, length));
      }
      if (message->type == 'Z') ++ready;
    }
    ASSERT_EQ(values.size(), static_cast<size_t>(kQueriesPerClient)) << "client " << client;
    for (int i = 0; i < kQueriesPerClient; ++i) {
      EXPECT_EQ(values[i], absl::StrCat(client * 1000 + i))
          << "client " << client << " query " << i;
    }
  }

  // SHOW POOLS's row for appdb.
  absl::StatusOr<NamedRow> AppdbPool() {
    PGF_ASSIGN_OR_RETURN(std::vector<NamedRow> rows, AdminShow(agent_->port(), "SHOW POOLS"));
    for (const NamedRow& row : rows) {
      if (row.at("database") == kAppDb) return row;
    }
    return absl::NotFoundError("no appdb pool");
  }
};

int Column(const NamedRow& row, const std::string& name) {
  int value = -1;
  EXPECT_TRUE(absl::SimpleAtoi(row.at(name), &value)) << name << "=" << row.at(name);
  return value;
}

std::string Describe(const NamedRow& pool) {
  return absl::StrCat("cl_active=", pool.at("cl_active"), " cl_waiting=", pool.at("cl_waiting"),
                      " sv_active=", pool.at("sv_active"), " sv_idle=", pool.at("sv_idle"));
}

TEST_F(PipelinedBurstTest, EveryClientGetsItsOwnAnswersInOrder) {
  StartAgent();
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> client, LoginRaw());
    clients.push_back(std::move(client));
  }
  // All bursts go out before any answer is read: the pool sees every client queued at once.
  for (int i = 0; i < kClients; ++i) PGF_ASSERT_OK(clients[i]->Send(Burst(i)));
  for (int i = 0; i < kClients; ++i) ExpectBurstAnswers(*clients[i], i);

  // Everyone is idle again: every client on the active list, none waiting, no server linked.
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(NamedRow pool, AppdbPool());
        *note = Describe(pool);
        return Column(pool, "cl_active") == kClients && Column(pool, "cl_waiting") == 0 &&
               Column(pool, "sv_active") == 0;
      },
      absl::Seconds(10), "appdb pool back to idle clients and no active server"));
}

TEST_F(PipelinedBurstTest, ClientsLeavingMidBurstDoNotDisturbTheOthers) {
  StartAgent();
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> client, LoginRaw());
    clients.push_back(std::move(client));
  }
  // Every third client ends its burst with a Terminate, every third (offset 1) disconnects
  // with a reset right after sending: both while queued for a server or linked to one.
  for (int i = 0; i < kClients; ++i) {
    std::string burst = Burst(i);
    if (i % 3 == 0) burst += FrontendMessage('X', "");
    PGF_ASSERT_OK(clients[i]->Send(burst));
    if (i % 3 == 1) clients[i]->CloseWithReset();
  }
  int staying = 0;
  for (int i = 0; i < kClients; ++i) {
    if (i % 3 != 2) continue;
    ExpectBurstAnswers(*clients[i], i);
    ++staying;
  }
  // The pool serves a newcomer, and its lists hold exactly the clients still connected.
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> late, LoginRaw());
  PGF_ASSERT_OK(late->Send(Burst(99)));
  ExpectBurstAnswers(*late, 99);
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(NamedRow pool, AppdbPool());
        *note = Describe(pool);
        return Column(pool, "cl_active") == staying + 1 && Column(pool, "cl_waiting") == 0 &&
               Column(pool, "sv_active") == 0;
      },
      absl::Seconds(10), "appdb pool lists match the clients still connected"));
}

}  // namespace
}  // namespace pgfleet::testutil
