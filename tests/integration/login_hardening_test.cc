// Login and cancel paths of a real pgfleet-agent in front of a real PostgreSQL 15, from the
// point of view of someone who has no password:
//   - failed logins create no pool, and pools nobody configured are reclaimed when unused;
//   - SCRAM and md5 look the same for users that exist and users that do not;
//   - a CancelRequest, well-formed or not, is never answered; a second SSLRequest/GSSENCRequest
//     is refused as PostgreSQL refuses it (checked against the real server in the same test);
//   - a cancel reaches only the query of the client it belongs to, even when its server is
//     handed to another client while the cancel is on its way to PostgreSQL.
//
// One PostgreSQL cluster serves the whole binary; every test starts its own agent. Nothing
// waits with a bare sleep: tests poll a condition with a deadline.

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/auth_crypto.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/raw_client.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

// In auth_file with a plaintext password / a SCRAM secret; never PostgreSQL roles (the
// [databases] entries log in to PostgreSQL as app).
constexpr char kPlainUser[] = "plainuser";
constexpr char kPlainPassword[] = "plain-Secret-5";
constexpr char kScramUser[] = "scramuser";
constexpr char kScramPassword[] = "scram-Secret-6";
constexpr char kTempUser[] = "tempuser";
constexpr char kTempPassword[] = "temp-Secret-7";

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

std::string ScramSecretFor(const std::string& password) {
  return crypto::FormatScramSecret(
      crypto::ScramKeysFromPassword(password, "fixed-test-salt!", 4096));
}

// The user names SHOW POOLS lists for `database` ("" = every database).
std::vector<std::pair<std::string, std::string>> PoolKeys(const Table& pools) {
  std::vector<std::pair<std::string, std::string>> keys;
  for (const auto& row : pools.rows) {
    keys.emplace_back(pools.At(row, "database"), pools.At(row, "user"));
  }
  return keys;
}

bool HasPool(const Table& pools, const std::string& db, const std::string& user) {
  return !pools.Where({{"database", db}, {"user", user}}).empty();
}

class LoginHardeningTest : public AgentTest {
 protected:
  // Every database logs in to PostgreSQL as app, so client user names need no role.
  AgentOptions BaseOptions(const std::map<std::string, std::string>& settings) const {
    std::map<std::string, std::string> merged = {{"auth_type", "md5"},
                                                 {"pool_mode", "transaction"},
                                                 {"default_pool_size", "2"},
                                                 {"max_client_conn", "500"},
                                                 {"admin_users", kAdminUser}};
    // Each failure answered at once: the tests count, not guess (PgBouncer has no such key).
    if (!UsingForeignAgentBinary()) merged["auth_failure_burst"] = "0";
    for (const auto& [key, value] : settings) merged[key] = value;
    AgentOptions options = AppAgentOptions(merged);
    options.databases_section =
        absl::StrCat(kAppDb, " = host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb,
                     " user=", kAppUser, " password=", kAppPassword, "\n");
    options.userlist = {{kAppUser, kAppPassword},
                        {kAdminUser, kAdminPassword},
                        {kPlainUser, kPlainPassword},
                        {kScramUser, ScramSecretFor(kScramPassword)}};
    return options;
  }

  absl::StatusOr<PgConn> ConnectConsole() const {
    return Connect(agent_->ConnString("pgbouncer", kAdminUser, kAdminPassword));
  }

  absl::StatusOr<Table> ShowPools() const {
    PGF_ASSIGN_OR_RETURN(PgConn console, ConnectConsole());
    return Show(console.get(), "SHOW POOLS");
  }
};

// ---- Item: failed logins create no pool; unconfigured pools are reclaimed -------------------

TEST_F(LoginHardeningTest, FailedLoginsWithRandomUsersCreateNoPools) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(BaseOptions({})));
  PGF_ASSERT_OK_AND_ASSIGN(Table before, ShowPools());

  std::mt19937_64 random(std::random_device{}());
  for (int i = 0; i < 200; ++i) {
    // Half unknown users, half users that exist, all with a wrong password; md5 and SCRAM.
    const std::string user = i % 4 == 0   ? kPlainUser
                             : i % 4 == 1 ? kScramUser
                                          : absl::StrCat("nobody_", random() % 1000000000);
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> client, RawClient::Connect(agent_->port()));
    PGF_ASSERT_OK_AND_ASSIGN(LoginResult login,
                             client->Login(user, kAppDb, "wrong password", absl::Seconds(10),
                                           /*scram_garbage_proof=*/true));
    ASSERT_FALSE(login.ok) << user;
    ASSERT_TRUE(login.error.has_value()) << user;
    EXPECT_EQ(login.error->code, "08P01") << user;  // PgBouncer's code for a refused login.
  }

  PGF_ASSERT_OK_AND_ASSIGN(Table after, ShowPools());
  EXPECT_EQ(PoolKeys(after), PoolKeys(before)) << after.Dump();
}

TEST_F(LoginHardeningTest, UnusedPoolsWithoutAConfigEntryAreReclaimed) {
  // Long enough for the pools to be seen before they go, short enough for a quick test.
  AgentOptions options = BaseOptions({{"autodb_idle_timeout", "3"}});
  // "*" serves any other database name (here PostgreSQL's own "postgres" and "template1").
  options.databases_section += absl::StrCat("* = host=127.0.0.1 port=", g_pg->port(),
                                            " user=", kAppUser, " password=", kAppPassword, "\n");
  // A database that does not force its user: each user has a pool of its own there (appdb's
  // forced user gives every client one shared pool, as in PgBouncer).
  options.databases_section +=
      absl::StrCat("ownusers = host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb, "\n");
  options.userlist.emplace_back(kTempUser, kTempPassword);
  PGF_ASSERT_OK(g_pg->CreateUser(kTempUser, kTempPassword));
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));

  auto run_query = [&](const std::string& db, const std::string& user,
                       const std::string& password) -> absl::Status {
    PGF_ASSIGN_OR_RETURN(PgConn conn, Connect(agent_->ConnString(db, user, password)));
    return ScalarInt(conn.get(), "select 1").status();
  };
  PGF_ASSERT_OK(run_query(kAppDb, kAppUser, kAppPassword));        // Configured: stays.
  PGF_ASSERT_OK(run_query("postgres", kAppUser, kAppPassword));    // Auto database.
  PGF_ASSERT_OK(run_query("ownusers", kTempUser, kTempPassword));  // User about to be removed.
  // A client that stays connected keeps its auto-database pool, however long it idles.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn staying,
                           Connect(agent_->ConnString("template1", kAppUser, kAppPassword)));
  PGF_ASSERT_OK(ScalarInt(staying.get(), "select 1").status());

  PGF_ASSERT_OK_AND_ASSIGN(Table pools, ShowPools());
  ASSERT_TRUE(HasPool(pools, "postgres", kAppUser)) << pools.Dump();
  ASSERT_TRUE(HasPool(pools, "ownusers", kTempUser)) << pools.Dump();

  // tempuser leaves auth_file.
  AgentOptions without_temp = options;
  without_temp.userlist.pop_back();
  PGF_ASSERT_OK(agent_->RewriteConfig(without_temp));
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
    PGF_ASSERT_OK(Command(console.get(), "RELOAD").status());
  }

  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(Table now, ShowPools());
        *note = now.Dump();
        return !HasPool(now, "postgres", kAppUser) && !HasPool(now, "ownusers", kTempUser);
      },
      absl::Seconds(20), "the auto-database pool and the removed user's pool to be reclaimed"));

  PGF_ASSERT_OK_AND_ASSIGN(Table after, ShowPools());
  EXPECT_TRUE(HasPool(after, kAppDb, kAppUser)) << after.Dump();
  EXPECT_TRUE(HasPool(after, "template1", kAppUser)) << after.Dump();
  PGF_EXPECT_OK(ScalarInt(staying.get(), "select 2").status());
  // And a reclaimed pool comes back on the next login.
  PGF_EXPECT_OK(run_query("postgres", kAppUser, kAppPassword));
}

// ---- Item: SCRAM and md5 do not tell whether a user exists ----------------------------------

struct ScramAttempt {
  std::string salt;  // base64, as sent.
  std::string iterations;
  std::optional<ErrorFields> error;  // What ended the login, if it failed.
  bool ok = false;
};

// A SCRAM login through the real wire protocol: records the server-first-message's salt and
// iteration count and answers with the proof for `password`.
absl::StatusOr<ScramAttempt> TryScram(int port, const std::string& user,
                                      const std::string& password) {
  PGF_ASSIGN_OR_RETURN(std::unique_ptr<RawClient> client, RawClient::Connect(port));
  PGF_RETURN_IF_ERROR(client->Send(StartupPacket({{"user", user}, {"database", kAppDb}})));
  crypto::ScramClientExchange scram = crypto::ScramClientExchange::FromPassword(password);
  ScramAttempt attempt;
  while (true) {
    PGF_ASSIGN_OR_RETURN(BackendMessage message, client->ReadMessage(absl::Seconds(10)));
    if (message.type == 'E') {
      PGF_ASSIGN_OR_RETURN(ErrorFields error, ParseErrorResponse(message.body));
      attempt.error = error;
      return attempt;
    }
    if (message.type == 'Z') {
      attempt.ok = true;
      return attempt;
    }
    if (message.type != 'R' || message.body.size() < 4) continue;
    const uint32_t code = ReadBigEndian32(message.body);
    const std::string data = message.body.substr(4);
    if (code == 10) {
      if (!absl::StrContains(data, "SCRAM-SHA-256")) {
        return absl::InternalError("no SCRAM-SHA-256 offered");
      }
      const std::string first = scram.ClientFirstMessage();
      PGF_RETURN_IF_ERROR(client->Send(FrontendMessage(
          'p', absl::StrCat(std::string("SCRAM-SHA-256\0", 14),
                            BigEndian32(static_cast<uint32_t>(first.size())), first))));
    } else if (code == 11) {
      for (absl::string_view attribute : absl::StrSplit(data, ',')) {
        if (absl::StartsWith(attribute, "s=")) attempt.salt = std::string(attribute.substr(2));
        if (absl::StartsWith(attribute, "i=")) {
          attempt.iterations = std::string(attribute.substr(2));
        }
      }
      PGF_ASSIGN_OR_RETURN(std::string final_message, scram.HandleServerFirst(data));
      PGF_RETURN_IF_ERROR(client->Send(FrontendMessage('p', final_message)));
    } else if (code != 12 && code != 0) {
      return absl::InternalError(absl::StrCat("unexpected authentication request ", code));
    }
  }
}

// The error as a client sees it, with the user name taken out (PostgreSQL names the user).
std::string ErrorWithoutUser(const ErrorFields& error, const std::string& user) {
  return absl::StrCat(error.severity, " ", error.code, " ",
                      absl::StrReplaceAll(error.message, {{user, "<user>"}}));
}

TEST_F(LoginHardeningTest, ScramShowsTheSameSaltToUsersThatDoNotExist) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(BaseOptions({{"auth_type", "scram-sha-256"}})));
  const int port = agent_->port();
  const std::string unknown = "nobody_at_all";

  PGF_ASSERT_OK_AND_ASSIGN(ScramAttempt unknown1, TryScram(port, unknown, "guess-1"));
  PGF_ASSERT_OK_AND_ASSIGN(ScramAttempt unknown2, TryScram(port, unknown, "guess-2"));
  PGF_ASSERT_OK_AND_ASSIGN(ScramAttempt plain1, TryScram(port, kPlainUser, "guess-1"));
  PGF_ASSERT_OK_AND_ASSIGN(ScramAttempt plain2, TryScram(port, kPlainUser, "guess-2"));
  PGF_ASSERT_OK_AND_ASSIGN(ScramAttempt scram1, TryScram(port, kScramUser, "guess-1"));
  PGF_ASSERT_OK_AND_ASSIGN(ScramAttempt scram2, TryScram(port, kScramUser, "guess-2"));

  // A user that does not exist keeps its salt from one attempt to the next, as real ones do.
  ASSERT_FALSE(unknown1.salt.empty());
  EXPECT_EQ(unknown1.salt, unknown2.salt);
  EXPECT_EQ(unknown1.iterations, unknown2.iterations);
  EXPECT_EQ(unknown1.iterations, "4096");
  EXPECT_EQ(plain1.salt, plain2.salt);
  EXPECT_EQ(plain1.iterations, "4096");
  EXPECT_EQ(scram1.salt, scram2.salt);
  EXPECT_EQ(scram1.iterations, "4096");
  // Different users, different salts (a shared mock salt would single out the unknown ones).
  EXPECT_NE(unknown1.salt, plain1.salt);
  PGF_ASSERT_OK_AND_ASSIGN(ScramAttempt other_unknown, TryScram(port, "nobody_else", "x"));
  EXPECT_NE(other_unknown.salt, unknown1.salt);

  // A wrong password and a user that does not exist fail the same way.
  for (const ScramAttempt* attempt : {&unknown1, &plain1, &scram1}) {
    ASSERT_TRUE(attempt->error.has_value());
    EXPECT_FALSE(attempt->ok);
  }
  EXPECT_EQ(ErrorWithoutUser(*unknown1.error, unknown),
            ErrorWithoutUser(*plain1.error, kPlainUser));
  EXPECT_EQ(ErrorWithoutUser(*unknown1.error, unknown),
            ErrorWithoutUser(*scram1.error, kScramUser));
  EXPECT_EQ(unknown1.error->code, "08P01");

  // The exchange the test drives is a real one: the right password logs in.
  PGF_ASSERT_OK_AND_ASSIGN(ScramAttempt right, TryScram(port, kPlainUser, kPlainPassword));
  EXPECT_TRUE(right.ok) << (right.error ? right.error->ToString() : "");
  PGF_ASSERT_OK_AND_ASSIGN(ScramAttempt right_scram, TryScram(port, kScramUser, kScramPassword));
  EXPECT_TRUE(right_scram.ok) << (right_scram.error ? right_scram.error->ToString() : "");
  EXPECT_EQ(right.salt, plain1.salt);
}

TEST_F(LoginHardeningTest, Md5LooksTheSameForUsersThatDoNotExist) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(BaseOptions({{"auth_type", "md5"}})));
  const std::string unknown = "nobody_at_all";
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> first, RawClient::Connect(agent_->port()));
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult unknown_login, first->Login(unknown, kAppDb, "guess"));
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> second, RawClient::Connect(agent_->port()));
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult known_login, second->Login(kPlainUser, kAppDb, "guess"));

  EXPECT_EQ(unknown_login.auth_requests, std::vector<int32_t>{5});  // A salt, then the answer.
  EXPECT_EQ(known_login.auth_requests, std::vector<int32_t>{5});
  ASSERT_TRUE(unknown_login.error.has_value());
  ASSERT_TRUE(known_login.error.has_value());
  EXPECT_EQ(ErrorWithoutUser(*unknown_login.error, unknown),
            ErrorWithoutUser(*known_login.error, kPlainUser));
}

// ---- Item: cancel requests get no answer; one encryption request of each kind --------------

std::string Packet(std::vector<uint32_t> words) {
  std::string out = BigEndian32(static_cast<uint32_t>(4 + 4 * words.size()));
  for (uint32_t word : words) out += BigEndian32(word);
  return out;
}

// Sends `packet` on a fresh connection to `port` and returns all the peer sent before closing.
absl::StatusOr<std::string> AnswerTo(int port, const std::string& packet) {
  PGF_ASSIGN_OR_RETURN(std::unique_ptr<RawClient> client, RawClient::Connect(port));
  PGF_RETURN_IF_ERROR(client->Send(packet));
  return client->ReadUntilClose(absl::Seconds(5));
}

TEST_F(LoginHardeningTest, CancelRequestsAreNeverAnsweredLikePostgres) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(BaseOptions({})));
  const uint32_t cancel = static_cast<uint32_t>(kCancelRequestCode);
  const std::vector<std::pair<std::string, std::string>> packets = {
      {"too short", Packet({cancel, 1234})},
      {"too long", Packet({cancel, 1234, 5678, 9})},
      {"unknown key", Packet({cancel, 1234, 5678})},
  };
  for (const auto& [what, packet] : packets) {
    SCOPED_TRACE(what);
    PGF_ASSERT_OK_AND_ASSIGN(std::string from_postgres, AnswerTo(g_pg->port(), packet));
    PGF_ASSERT_OK_AND_ASSIGN(std::string from_agent, AnswerTo(agent_->port(), packet));
    EXPECT_EQ(from_postgres, "");
    EXPECT_EQ(from_agent, "") << FirstError(from_agent).value_or(ErrorFields{}).ToString();
  }
}

// What a server says to a sequence of encryption requests (each answered before the next is
// sent), then to a startup packet: the one-byte answers, then the type of the first message
// (or the error) that follows.
struct NegotiationAnswer {
  std::string bytes;     // One byte per request answered.
  std::string then;      // 'R' (authentication request), 'E', or "closed".
  std::string sqlstate;  // For 'E'.
  bool closed = false;   // The server closed the connection after the error.
};

absl::StatusOr<NegotiationAnswer> Negotiate(int port, const std::vector<int32_t>& requests) {
  PGF_ASSIGN_OR_RETURN(std::unique_ptr<RawClient> client, RawClient::Connect(port));
  NegotiationAnswer answer;
  for (int32_t request : requests) {
    PGF_RETURN_IF_ERROR(client->Send(Packet({static_cast<uint32_t>(request)})));
    absl::StatusOr<std::string> byte = client->ReadExactly(1, absl::Seconds(5));
    if (!byte.ok()) return byte.status();
    if (*byte != "N") {
      // An ErrorResponse: read it all.
      PGF_ASSIGN_OR_RETURN(std::string rest, client->ReadUntilClose(absl::Seconds(5)));
      std::optional<ErrorFields> error = FirstError(*byte + rest);
      answer.then = *byte;
      answer.sqlstate = error ? error->code : "unparsable";
      answer.closed = true;
      return answer;
    }
    answer.bytes += *byte;
  }
  PGF_RETURN_IF_ERROR(client->Send(StartupPacket({{"user", kAppUser}, {"database", kAppDb}})));
  PGF_ASSIGN_OR_RETURN(BackendMessage message, client->ReadMessage(absl::Seconds(5)));
  answer.then = std::string(1, message.type);
  return answer;
}

TEST_F(LoginHardeningTest, ASecondEncryptionRequestIsRefusedLikePostgres) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(BaseOptions({})));
  // SSL is off on both sides, so PostgreSQL is the reference for SSLRequests.
  for (const auto& [what, requests] : std::vector<std::pair<std::string, std::vector<int32_t>>>{
           {"SSL", {kSslRequestCode}}, {"SSL, SSL", {kSslRequestCode, kSslRequestCode}}}) {
    SCOPED_TRACE(what);
    PGF_ASSERT_OK_AND_ASSIGN(NegotiationAnswer postgres, Negotiate(g_pg->port(), requests));
    PGF_ASSERT_OK_AND_ASSIGN(NegotiationAnswer agent, Negotiate(agent_->port(), requests));
    EXPECT_EQ(agent.bytes, postgres.bytes);
    EXPECT_EQ(agent.then, postgres.then);
    EXPECT_EQ(agent.sqlstate, postgres.sqlstate);
    EXPECT_EQ(agent.closed, postgres.closed);
  }
  // What PostgreSQL does, spelled out, so the comparison above cannot pass vacuously.
  PGF_ASSERT_OK_AND_ASSIGN(NegotiationAnswer twice,
                           Negotiate(g_pg->port(), {kSslRequestCode, kSslRequestCode}));
  EXPECT_EQ(twice.bytes, "N");
  EXPECT_EQ(twice.then, "E");
  EXPECT_EQ(twice.sqlstate, "0A000");

  // Debian's PostgreSQL has GSSAPI and answers a GSSENCRequest with 'G', the agent (like a
  // PostgreSQL built without it) with 'N'; its rules are PostgreSQL 15's ProcessStartupPacket:
  // one SSLRequest and one GSSENCRequest at most, in either order.
  struct Case {
    std::string what;
    std::vector<int32_t> requests;
    std::string bytes, then, sqlstate;
  };
  for (const Case& c : std::vector<Case>{
           {"GSS, GSS", {kGssEncRequestCode, kGssEncRequestCode}, "N", "E", "0A000"},
           {"SSL, GSS, SSL",
            {kSslRequestCode, kGssEncRequestCode, kSslRequestCode},
            "NN",
            "E",
            "0A000"},
           {"GSS, SSL, GSS",
            {kGssEncRequestCode, kSslRequestCode, kGssEncRequestCode},
            "NN",
            "E",
            "0A000"},
           {"SSL, GSS", {kSslRequestCode, kGssEncRequestCode}, "NN", "R", ""},
           {"GSS, SSL", {kGssEncRequestCode, kSslRequestCode}, "NN", "R", ""},
       }) {
    SCOPED_TRACE(c.what);
    PGF_ASSERT_OK_AND_ASSIGN(NegotiationAnswer agent, Negotiate(agent_->port(), c.requests));
    EXPECT_EQ(agent.bytes, c.bytes);
    EXPECT_EQ(agent.then, c.then);
    EXPECT_EQ(agent.sqlstate, c.sqlstate);
  }
}

// ---- Item: a cancel reaches only its own client's query --------------------------------------

// Waits for the next result of a PQsendQuery (and drains the rest): Ok, or the error.
absl::Status AwaitQuery(PGconn* conn, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status outcome = absl::OkStatus();
  while (true) {
    PGF_ASSIGN_OR_RETURN(PgResult result, GetResultWithin(conn, deadline - absl::Now()));
    if (result == nullptr) return outcome;
    const ExecStatusType status = PQresultStatus(result.get());
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK && outcome.ok()) {
      outcome = ResultError(conn, result.get());
    }
    if (PQstatus(conn) == CONNECTION_BAD) return outcome;
  }
}

int CountOf(const std::string& haystack, const std::string& needle) {
  int count = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

absl::Status SetPreAuthDelay(const std::string& value) {
  PGF_RETURN_IF_ERROR(
      g_pg->Exec(absl::StrCat("alter system set pre_auth_delay = '", value, "'")).status());
  PGF_RETURN_IF_ERROR(g_pg->Exec("select pg_reload_conf()").status());
  // A new connection sees the value once the postmaster has reloaded.
  return PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(Rows rows, g_pg->Exec("show pre_auth_delay"));
        *note = rows[0][0];
        return rows[0][0] == value;
      },
      absl::Seconds(30), absl::StrCat("pre_auth_delay to become ", value));
}

TEST_F(LoginHardeningTest, ACancelNeverHitsTheNextClientOfItsServer) {
  // One server for two clients, so whatever A leaves, B gets next.
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(BaseOptions({{"pool_mode", "transaction"},
                                                      {"default_pool_size", "1"},
                                                      {"server_idle_timeout", "3600"}})));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn a, Connect(agent_->ConnString(kAppDb, kAppUser, kAppPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn b, Connect(agent_->ConnString(kAppDb, kAppUser, kAppPassword)));
  PGF_ASSERT_OK(ScalarInt(a.get(), "select 1").status());  // The pool's one server is up.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());

  // PostgreSQL reads a CancelRequest only after pre_auth_delay, so a cancel sent while A's
  // query runs lands a second later: after A's query has ended on its own and B's has
  // started on the same backend. That makes the race this test is about happen every time.
  PGF_ASSERT_OK(SetPreAuthDelay("1s"));
  absl::Cleanup reset_delay = [] { PGF_EXPECT_OK(SetPreAuthDelay("0")); };

  auto await_pool = [&](const std::string& column, const std::string& value) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          PGF_ASSIGN_OR_RETURN(Table pools, Show(console.get(), "SHOW POOLS"));
          Rows rows = pools.Where({{"database", kAppDb}, {"user", kAppUser}});
          if (rows.empty()) return false;
          *note = pools.Dump();
          return pools.At(rows[0], column) == value;
        },
        absl::Seconds(10), absl::StrCat(column, " = ", value));
  };

  constexpr int kRounds = 4;
  int wrongful_cancels = 0;
  int own_query_cancelled = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    const int forwarded_before = CountOf(agent_->LogContents(), "cancel request forwarded");
    ASSERT_EQ(PQsendQuery(a.get(), "select pg_sleep(0.5)"), 1);
    PGF_ASSERT_OK(await_pool("sv_active", "1"));
    ASSERT_EQ(PQsendQuery(b.get(), "select pg_sleep(1.5)"), 1);
    PGF_ASSERT_OK(await_pool("cl_waiting", "1"));

    std::unique_ptr<PGcancel, void (*)(PGcancel*)> cancel(PQgetCancel(a.get()), PQfreeCancel);
    char error[256] = "";
    ASSERT_EQ(PQcancel(cancel.get(), error, sizeof(error)), 1) << error;

    absl::Status a_outcome = AwaitQuery(a.get(), absl::Seconds(20));
    absl::Status b_outcome = AwaitQuery(b.get(), absl::Seconds(20));
    if (SqlStateOf(a_outcome) == "57014") ++own_query_cancelled;
    if (SqlStateOf(b_outcome) == "57014") ++wrongful_cancels;
    EXPECT_TRUE(a_outcome.ok() || SqlStateOf(a_outcome) == "57014") << a_outcome;
    EXPECT_TRUE(b_outcome.ok()) << "B's query: " << b_outcome;
    // The cancel did go to PostgreSQL while A's query ran (so the round tested the race).
    EXPECT_EQ(CountOf(agent_->LogContents(), "cancel request forwarded"), forwarded_before + 1);
  }
  std::cerr << "wrongful cancels: " << wrongful_cancels << " of " << kRounds
            << "; A's own query cancelled: " << own_query_cancelled << "\n";
  EXPECT_EQ(wrongful_cancels, 0);

  // A cancel for a client with nothing running is not forwarded at all.
  const std::string log_before = agent_->LogContents();
  {
    std::unique_ptr<PGcancel, void (*)(PGcancel*)> cancel(PQgetCancel(a.get()), PQfreeCancel);
    char error[256] = "";
    ASSERT_EQ(PQcancel(cancel.get(), error, sizeof(error)), 1) << error;
  }
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return CountOf(agent_->LogContents(), "cancel request while no query runs: ignored") >
               CountOf(log_before, "cancel request while no query runs: ignored");
      },
      absl::Seconds(10), "the agent to ignore the idle client's cancel"));
  EXPECT_EQ(CountOf(agent_->LogContents(), "cancel request forwarded"),
            CountOf(log_before, "cancel request forwarded"));
  PGF_EXPECT_OK(ScalarInt(b.get(), "select 1").status());
}

}  // namespace
}  // namespace pgfleet::testutil
