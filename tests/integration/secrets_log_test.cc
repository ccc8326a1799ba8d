// Secrets never reach logs (issue #10). A real pgfleet-agent at its most verbose (-v and
// verbose = 2, log_connections, log_disconnections, log_pooler_errors) in front of a real
// PostgreSQL 15, with an auth_file holding a SCRAM-SHA-256 secret, a plaintext password and an
// md5 hash, is driven through every login path by real libpq clients: SCRAM (with SCRAM
// pass-through to PostgreSQL), md5 and cleartext, right and wrong passwords, an unknown user, a
// [databases] password, a failing server login, the admin console and RELOADs (one refused
// because of a broken auth_file line, one that rotates a password). Then its whole log (the
// logfile and stderr) must hold none of the passwords, secrets, StoredKey/ServerKey/ClientKey
// values, md5 hashes or SCRAM protocol messages, while holding the login-failure lines (so the
// test fails if logging went elsewhere). SHOW output and /metrics are checked the same way.
//
// A real pgfleet-controller on a real SQLite file gets a bootstrap token and two tokens minted
// by `pgfleet-controller token create`; they are used over gRPC (fleetctl) and HTTP, and no
// plaintext token may appear in the controller's log or in the bytes of the SQLite files, whose
// `tokens` table must hold exactly their sha256.
//
// Nothing waits with a bare sleep: the few waits poll a condition with a deadline.

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/auth_crypto.h"
#include "common/status_macros.h"
#include "controller/store/store.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/http.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

namespace crypto = ::pgfleet::crypto;

constexpr char kAppDb[] = "appdb";
// [databases] entries on appdb: one logs in as kForcedUser with a password from the ini, one
// with a password PostgreSQL refuses.
constexpr char kForcedDb[] = "forced_db";
constexpr char kBadDb[] = "bad_server_pw_db";

// A SCRAM-SHA-256 secret in auth_file (PostgreSQL's own verifier for the role).
constexpr char kScramUser[] = "scram_user";
constexpr char kScramPassword[] = "Scram-Pw-7fQ2xL9aW";
// A plaintext password in auth_file; PostgreSQL stores it as SCRAM.
constexpr char kPlainUser[] = "plain_user";
constexpr char kPlainPassword[] = "Plain-Pw-K3m8Zt1cE";
constexpr char kPlainPasswordRotated[] = "Plain-Pw2-Rb6Yw0eJ";
// An md5 hash in auth_file; PostgreSQL stores md5 too and pg_hba asks md5 for this role.
constexpr char kMd5User[] = "md5_user";
constexpr char kMd5Password[] = "Md5-Pw-Hs4Jq8VnD";
// Logs in to PostgreSQL with the password of forced_db's [databases] entry.
constexpr char kForcedUser[] = "forced_user";
constexpr char kForcedPassword[] = "Forced-Pw-Gd2Ue5TkM";
constexpr char kBadServerPassword[] = "Bad-Server-Pw-Lp9Xc3Q";
// Admin console only (not a PostgreSQL role); a SCRAM secret made up by the test.
constexpr char kAdminUser[] = "fleet_admin";
constexpr char kAdminPassword[] = "Admin-Pw-Nw5Bz7QsY";
constexpr char kUnknownUser[] = "nobody_here";
constexpr char kUnknownPassword[] = "Nobody-Pw-Ec8Sd4FhU";

std::string WrongPassword(const std::string& user) {
  return absl::StrCat("Wrong-Pw-", user, "-Tv1Mk6Ra");
}

// md5_user's stored password is an md5 hash and PostgreSQL asks md5 for it; everyone else
// logs in with SCRAM-SHA-256 (the default rule).
[[maybe_unused]] auto* const kCluster =
    RegisterSharedPostgres(PostgresWithMd5Role(kMd5User), [](PostgresEnv& pg_env) -> absl::Status {
      PGF_RETURN_IF_ERROR(pg_env.CreateUser(kScramUser, kScramPassword));
      PGF_RETURN_IF_ERROR(pg_env.CreateUser(kPlainUser, kPlainPassword));
      PGF_RETURN_IF_ERROR(pg_env.CreateUser(kMd5User, kMd5Password, "md5"));
      PGF_RETURN_IF_ERROR(pg_env.CreateUser(kForcedUser, kForcedPassword));
      return pg_env.CreateDatabase(kAppDb, kScramUser);
    });

// ---- What must never be printed -----------------------------------------------------------

std::string Digest(const crypto::Sha256Digest& digest) {
  return std::string(reinterpret_cast<const char*>(digest.data()), digest.size());
}

// Exact strings (passwords, secrets, keys, hashes) that must not appear in some text.
class SecretList {
 public:
  void Add(const std::string& what, const std::string& text) {
    ASSERT_GE(text.size(), 8u) << what << ": too short to search for reliably";
    items_.push_back({what, text});
  }

  // A password, plus the md5 forms the agent may compute from it (md5 auth and md5 secrets).
  void AddPassword(const std::string& user, const std::string& password) {
    const std::string who = absl::StrCat("password of ", user, " (", password, ")");
    Add(who, password);
    const std::string md5 = crypto::Md5PasswordHash(password, user);
    Add(absl::StrCat("md5 hash of the ", who), md5);
    Add(absl::StrCat("md5 hex of the ", who), md5.substr(3));
  }

  // A SCRAM-SHA-256 secret, its StoredKey and ServerKey (base64 as written, and hex) and, when
  // the password is known, the ClientKey the agent recovers (or derives) from a login.
  void AddScramSecret(const std::string& what, const std::string& secret,
                      const std::string& password) {
    Add(absl::StrCat(what, " SCRAM secret"), secret);
    // SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
    const std::vector<std::string> halves = absl::StrSplit(secret, '$');
    ASSERT_EQ(halves.size(), 3u) << secret;
    const std::vector<std::string> keys_b64 = absl::StrSplit(halves[2], ':');
    ASSERT_EQ(keys_b64.size(), 2u) << secret;
    Add(absl::StrCat(what, " StoredKey (base64)"), keys_b64[0]);
    Add(absl::StrCat(what, " ServerKey (base64)"), keys_b64[1]);
    absl::StatusOr<crypto::ScramKeys> keys = crypto::ParseScramSecret(secret);
    ASSERT_TRUE(keys.ok()) << keys.status();
    Add(absl::StrCat(what, " StoredKey (hex)"), absl::BytesToHexString(Digest(keys->stored_key)));
    Add(absl::StrCat(what, " ServerKey (hex)"), absl::BytesToHexString(Digest(keys->server_key)));
    if (password.empty()) return;
    const crypto::ScramKeys derived =
        crypto::ScramKeysFromPassword(password, keys->salt, keys->iterations);
    ASSERT_EQ(derived.stored_key, keys->stored_key) << what << ": the test has the wrong password";
    ASSERT_TRUE(derived.client_key.has_value());
    Add(absl::StrCat(what, " ClientKey (base64)"), absl::Base64Escape(Digest(*derived.client_key)));
    Add(absl::StrCat(what, " ClientKey (hex)"),
        absl::BytesToHexString(Digest(*derived.client_key)));
  }

  // Descriptions of every item found in `text`.
  std::vector<std::string> FoundIn(const std::string& text) const {
    std::vector<std::string> found;
    for (const Item& item : items_) {
      if (absl::StrContains(text, item.text)) found.push_back(item.what);
    }
    return found;
  }

  size_t size() const { return items_.size(); }

 private:
  struct Item {
    std::string what;
    std::string text;
  };
  std::vector<Item> items_;
};

// Shapes of secrets and SCRAM/md5 protocol messages whose exact value the test cannot know
// (nonces, proofs, salted md5 responses): every match in `text`, with what it looks like.
std::vector<std::string> ProtocolLeaks(const std::string& text) {
  static const std::pair<const char*, const char*> kPatterns[] = {
      {"an md5 hash or md5 password response", R"(md5[0-9a-f]{32})"},
      {"a SCRAM secret", R"(SCRAM-SHA-256\$)"},
      {"a SCRAM client-first-message", R"([ny],,n=)"},
      {"a SCRAM client-final-message (c=biws)", R"(c=biws)"},
      {"a SCRAM nonce (r=)", R"((^|[^A-Za-z0-9_])r=[A-Za-z0-9+/]{16,})"},
      {"a SCRAM salt and iteration count", R"(s=[A-Za-z0-9+/]{16,}={0,2},i=[0-9])"},
      {"a SCRAM client proof (p=)", R"(p=[A-Za-z0-9+/]{43}=)"},
      {"a SCRAM server signature (v=)", R"(v=[A-Za-z0-9+/]{43}=)"},
  };
  std::vector<std::string> found;
  for (const auto& [what, pattern] : kPatterns) {
    const std::regex re(pattern);
    for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator();
         ++it) {
      found.push_back(absl::StrCat(what, ": \"", it->str(), "\""));
    }
  }
  return found;
}

// Expects `text` (named `where`) to hold no secret of `secrets` and no protocol message.
void ExpectNoSecrets(const SecretList& secrets, const std::string& text, const std::string& where) {
  for (const std::string& what : secrets.FoundIn(text)) {
    ADD_FAILURE() << where << " contains the " << what;
  }
  for (const std::string& what : ProtocolLeaks(text)) {
    ADD_FAILURE() << where << " contains " << what;
  }
}

// The detectors themselves, on real secrets and real SCRAM and md5 messages: a test that finds
// nothing must be because nothing is there.
TEST(LeakDetectorsTest, RecogniseSecretsAndAuthMessages) {
  const std::string password = "Detector-Pw-Zx8Qa1";
  const crypto::ScramKeys keys =
      crypto::ScramKeysFromPassword(password, crypto::RandomBytes(16), 4096);
  const std::string secret = crypto::FormatScramSecret(keys);
  SecretList secrets;
  ASSERT_NO_FATAL_FAILURE(secrets.AddPassword("someone", password));
  ASSERT_NO_FATAL_FAILURE(secrets.AddScramSecret("someone", secret, password));
  const std::vector<std::string> halves = absl::StrSplit(secret, '$');
  const std::vector<std::string> stored_and_server = absl::StrSplit(halves[2], ':');
  for (const std::string& text : {password, secret, stored_and_server[0], stored_and_server[1],
                                  absl::Base64Escape(Digest(*keys.client_key)),
                                  crypto::Md5PasswordHash(password, "someone")}) {
    EXPECT_FALSE(secrets.FoundIn(absl::StrCat("log line: ", text, " (end)")).empty()) << text;
  }

  crypto::ScramClientExchange client = crypto::ScramClientExchange::FromPassword(password);
  crypto::ScramServerExchange server(keys);
  const std::string client_first = client.ClientFirstMessage();
  PGF_ASSERT_OK_AND_ASSIGN(std::string server_first, server.HandleClientFirst(client_first));
  PGF_ASSERT_OK_AND_ASSIGN(std::string client_final, client.HandleServerFirst(server_first));
  PGF_ASSERT_OK_AND_ASSIGN(std::string server_final, server.HandleClientFinal(client_final));
  PGF_ASSERT_OK(client.VerifyServerFinal(server_final));
  const std::string md5_response = crypto::Md5SaltedResponse(
      crypto::Md5PasswordHash(password, "someone"), crypto::RandomBytes(4));
  for (const std::string& message :
       {client_first, server_first, client_final, server_final, md5_response}) {
    EXPECT_FALSE(ProtocolLeaks(absl::StrCat("c=3 got: ", message, " from 127.0.0.1")).empty())
        << message;
    EXPECT_FALSE(ProtocolLeaks(message).empty()) << message;
  }
  // While the agent's ordinary lines pass.
  EXPECT_TRUE(ProtocolLeaks("2026-01-01 00:00:00.000 UTC [7] WARNING C-0x4: appdb/scram_user@"
                            "127.0.0.1:38092 login failed: wrong password")
                  .empty());
  EXPECT_TRUE(ProtocolLeaks("LOG C-0x2: appdb/scram_user@127.0.0.1:38080 login attempt: "
                            "db=appdb user=scram_user tls=no")
                  .empty());
}

// ---- Clients ---------------------------------------------------------------------------------

// Logs in through `conninfo` and runs `sql` (one value); the value, or why it failed.
absl::StatusOr<std::string> LoginAndQuery(const std::string& conninfo, const std::string& sql) {
  PGF_ASSIGN_OR_RETURN(PgConn conn, Connect(conninfo));
  return ScalarText(conn.get(), sql);
}

// ---- The agent -------------------------------------------------------------------------------

class AgentSecretsTest : public AgentTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(AgentTest::SetUp());
    if (UsingForeignAgentBinary()) {
      GTEST_SKIP() << "checks pgfleet-agent's own log lines and flags";
    }
    PGF_ASSERT_OK_AND_ASSIGN(
        Rows verifiers,
        g_pg->Exec(absl::StrCat("select rolname, rolpassword from pg_authid where rolname in (",
                                QuoteLiteral(kScramUser), ", ", QuoteLiteral(kPlainUser), ", ",
                                QuoteLiteral(kMd5User), ", ", QuoteLiteral(kForcedUser), ")")));
    for (const std::vector<std::string>& row : verifiers) verifiers_[row[0]] = row[1];
    ASSERT_EQ(verifiers_.size(), 4u);
    ASSERT_TRUE(absl::StartsWith(verifiers_[kScramUser], "SCRAM-SHA-256$"));
    ASSERT_EQ(verifiers_[kMd5User], crypto::Md5PasswordHash(kMd5Password, kMd5User));
    admin_secret_ = crypto::FormatScramSecret(
        crypto::ScramKeysFromPassword(kAdminPassword, crypto::RandomBytes(16), 4096));

    ASSERT_NO_FATAL_FAILURE(AddSecrets());

    PGF_ASSERT_OK_AND_ASSIGN(metrics_port_, PickFreePort());
    ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options("md5", kPlainPassword)));
  }

  // Everything the agent could know or see, and the wrong passwords clients try.
  void AddSecrets() {
    for (const char* user : {kScramUser, kPlainUser, kMd5User, kAdminUser}) {
      secrets_.AddPassword(user, WrongPassword(user));
    }
    secrets_.AddPassword(kScramUser, kScramPassword);
    secrets_.AddPassword(kPlainUser, kPlainPassword);
    secrets_.AddPassword(kPlainUser, kPlainPasswordRotated);
    secrets_.AddPassword(kMd5User, kMd5Password);
    secrets_.AddPassword(kForcedUser, kForcedPassword);
    secrets_.AddPassword(kPlainUser, kBadServerPassword);
    secrets_.AddPassword(kAdminUser, kAdminPassword);
    secrets_.AddPassword(kUnknownUser, kUnknownPassword);
    secrets_.AddScramSecret(kScramUser, verifiers_[kScramUser], kScramPassword);
    secrets_.AddScramSecret(kPlainUser, verifiers_[kPlainUser], kPlainPassword);
    secrets_.AddScramSecret(kForcedUser, verifiers_[kForcedUser], kForcedPassword);
    secrets_.AddScramSecret(kAdminUser, admin_secret_, kAdminPassword);
  }

  // The agent's config: `auth_type` and plain_user's plaintext password in auth_file.
  AgentOptions Options(const std::string& auth_type, const std::string& plain_password) const {
    AgentOptions options;
    const std::string server =
        absl::StrCat("host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb);
    options.databases_section = absl::StrCat(
        kAppDb, " = ", server, "\n",                                                           //
        kForcedDb, " = ", server, " user=", kForcedUser, " password=", kForcedPassword, "\n",  //
        kBadDb, " = ", server, " user=", kPlainUser, " password=", kBadServerPassword, "\n");
    options.pgbouncer_settings = {
        {"auth_type", auth_type},
        {"admin_users", kAdminUser},
        {"pool_mode", "session"},
        {"verbose", "2"},
        {"log_connections", "1"},
        {"log_disconnections", "1"},
        {"log_pooler_errors", "1"},
        {"server_login_retry", "1"},
        // Every failure answered at once and logged on its own line (the per-address login
        // failure limiter would otherwise stop logging them one by one after a burst).
        {"auth_failure_burst", "0"},
    };
    options.userlist = {{kScramUser, verifiers_.at(kScramUser)},
                        {kPlainUser, plain_password},
                        {kMd5User, verifiers_.at(kMd5User)},
                        {kAdminUser, admin_secret_}};
    options.extra_args = {"-v", absl::StrCat("--metrics-listen=127.0.0.1:", metrics_port_)};
    return options;
  }

  std::string Conn(const std::string& db, const std::string& user,
                   const std::string& password) const {
    return agent_->ConnString(db, user, password);
  }

  // A login that must work; returns `sql`'s value ("" after a failure, which is recorded).
  std::string ExpectLogin(const std::string& db, const std::string& user,
                          const std::string& password, const std::string& sql) {
    absl::StatusOr<std::string> value = LoginAndQuery(Conn(db, user, password), sql);
    EXPECT_TRUE(value.ok()) << user << "@" << db << ": " << value.status();
    return value.ok() ? *value : "";
  }

  // A login that must be refused with an error containing `expected`.
  void ExpectRefused(const std::string& db, const std::string& user, const std::string& password,
                     const std::string& expected) {
    absl::StatusOr<PgConn> conn = Connect(Conn(db, user, password));
    ASSERT_FALSE(conn.ok()) << user << "@" << db << " logged in with a password it should not have";
    EXPECT_TRUE(absl::StrContains(conn.status().message(), expected))
        << user << "@" << db << ": " << conn.status();
    ExpectNoSecrets(secrets_, std::string(conn.status().message()),
                    absl::StrCat("the error for ", user, "@", db));
  }

  absl::StatusOr<PgConn> Admin() const {
    return Connect(Conn("pgbouncer", kAdminUser, kAdminPassword));
  }

  // Runs every SHOW on the console and checks that none prints a secret; returns the tables.
  std::map<std::string, Table> ShowEverything(PGconn* admin) {
    std::map<std::string, Table> tables;
    for (const char* what : {"USERS", "CONFIG", "DATABASES", "POOLS", "CLIENTS", "SERVERS",
                             "SOCKETS", "FDS", "LISTS", "MEM", "STATS", "STATE", "VERSION"}) {
      absl::StatusOr<Table> table = Show(admin, absl::StrCat("SHOW ", what));
      EXPECT_TRUE(table.ok()) << "SHOW " << what << ": " << table.status();
      if (!table.ok()) continue;
      ExpectNoSecrets(secrets_, table->Dump(), absl::StrCat("SHOW ", what));
      tables[what] = std::move(*table);
    }
    return tables;
  }

  std::map<std::string, std::string> verifiers_;  // rolname -> pg_authid.rolpassword
  std::string admin_secret_;
  SecretList secrets_;
  int metrics_port_ = 0;
};

// Every column value of SHOW CONFIG's `key` row.
std::string ConfigValue(const Table& config, const std::string& key) {
  for (const std::vector<std::string>& row : config.rows) {
    if (row.size() >= 2 && row[0] == key) return row[1];
  }
  return "<missing>";
}

TEST_F(AgentSecretsTest, NoPasswordSecretOrScramMessageReachesTheLogOrTheConsole) {
  constexpr char kWhoAmI[] = "select current_user";
  // PgBouncer's "password authentication failed" (md5, plain) or "SASL authentication failed".
  constexpr char kRefused[] = "authentication failed";

  // ---- auth_type = md5: SCRAM for the SCRAM secrets, md5 for the others. ----
  // SCRAM login, then a server login with the ClientKey recovered from it (SCRAM pass-through:
  // the agent has no password for scram_user).
  EXPECT_EQ(ExpectLogin(kAppDb, kScramUser, kScramPassword, kWhoAmI), kScramUser);
  ExpectRefused(kAppDb, kScramUser, WrongPassword(kScramUser), kRefused);
  // md5 against a plaintext auth_file password; the server login is SCRAM with that password.
  EXPECT_EQ(ExpectLogin(kAppDb, kPlainUser, kPlainPassword, kWhoAmI), kPlainUser);
  ExpectRefused(kAppDb, kPlainUser, WrongPassword(kPlainUser), kRefused);
  // md5 against an md5 auth_file hash; the server login is md5 with that hash.
  EXPECT_EQ(ExpectLogin(kAppDb, kMd5User, kMd5Password, kWhoAmI), kMd5User);
  ExpectRefused(kAppDb, kMd5User, WrongPassword(kMd5User), kRefused);
  ExpectRefused(kAppDb, kUnknownUser, kUnknownPassword, kRefused);
  // A [databases] password; and one PostgreSQL refuses (the server login fails).
  EXPECT_EQ(ExpectLogin(kForcedDb, kScramUser, kScramPassword, kWhoAmI), kForcedUser);
  // PostgreSQL's own refusal, passed through as PgBouncer does.
  ExpectRefused(kBadDb, kPlainUser, kPlainPassword, "password authentication failed for user");
  // The admin console's own login (SCRAM, a secret PostgreSQL never saw).
  ExpectRefused("pgbouncer", kAdminUser, WrongPassword(kAdminUser), kRefused);

  // ---- The console, with clients connected so CLIENTS/SERVERS/FDS have rows. ----
  PGF_ASSERT_OK_AND_ASSIGN(PgConn held_scram, Connect(Conn(kAppDb, kScramUser, kScramPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn held_md5, Connect(Conn(kAppDb, kMd5User, kMd5Password)));
  PGF_ASSERT_OK(ScalarText(held_scram.get(), "select 1"));
  PGF_ASSERT_OK(ScalarText(held_md5.get(), "select 1"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, Admin());
  {
    std::map<std::string, Table> tables = ShowEverything(admin.get());
    // As PgBouncer 1.25: SHOW USERS is names, per-user settings and counts, never a secret.
    const Table& users = tables["USERS"];
    EXPECT_EQ(users.columns, (std::vector<std::string>{
                                 "name", "pool_size", "reserve_pool_size", "pool_mode",
                                 "max_user_connections", "current_connections",
                                 "max_user_client_connections", "current_client_connections"}))
        << users.Dump();
    std::set<std::string> names;
    for (const std::vector<std::string>& row : users.rows) names.insert(row[0]);
    for (const char* user : {kScramUser, kPlainUser, kMd5User, kAdminUser}) {
      EXPECT_EQ(names.count(user), 1u) << user << " missing from SHOW USERS:\n" << users.Dump();
    }
    // SHOW CONFIG names the auth_file; its contents stay in the file.
    const Table& config = tables["CONFIG"];
    EXPECT_EQ(ConfigValue(config, "auth_type"), "md5") << config.Dump();
    EXPECT_EQ(ConfigValue(config, "auth_file"), agent_->dir() + "/userlist.txt") << config.Dump();
    // SHOW FDS has PgBouncer's password and SCRAM key columns (for online restart, which
    // pgfleet does not do): they stay NULL even for the SCRAM pass-through pool.
    const Table& fds = tables["FDS"];
    ASSERT_GE(fds.rows.size(), 2u) << fds.Dump();
    for (const char* column : {"password", "scram_client_key", "scram_server_key"}) {
      const int c = fds.Col(column);
      ASSERT_GE(c, 0) << column << "\n" << fds.Dump();
      for (const std::vector<std::string>& row : fds.rows) {
        EXPECT_EQ(row[static_cast<size_t>(c)], "") << column << "\n" << fds.Dump();
      }
    }
    // SHOW DATABASES names forced_db's user, never its password.
    EXPECT_TRUE(absl::StrContains(tables["DATABASES"].Dump(), kForcedUser))
        << tables["DATABASES"].Dump();
  }
  held_scram.reset();
  held_md5.reset();

  // ---- A RELOAD refused because of a broken SCRAM secret in auth_file. ----
  {
    AgentOptions broken = Options("md5", kPlainPassword);
    // A real StoredKey, then a ServerKey that is not base64: the error must not quote either.
    const std::string& secret = verifiers_[kScramUser];
    broken.userlist[0].second = secret.substr(0, secret.rfind(':') + 1) + "not*base64*at*all";
    PGF_ASSERT_OK(agent_->RewriteConfig(broken));
    absl::StatusOr<std::string> reload = Command(admin.get(), "RELOAD");
    ASSERT_FALSE(reload.ok()) << "a broken auth_file was accepted";
    EXPECT_TRUE(absl::StrContains(reload.status().message(), "ServerKey")) << reload.status();
    ExpectNoSecrets(secrets_, std::string(reload.status().message()), "the RELOAD error");
  }

  // ---- auth_type = plain: cleartext passwords against all three kinds of secret. ----
  PGF_ASSERT_OK(agent_->RewriteConfig(Options("plain", kPlainPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(std::string reloaded, Command(admin.get(), "RELOAD"));
  EXPECT_EQ(reloaded, "RELOAD");
  EXPECT_EQ(ExpectLogin(kAppDb, kScramUser, kScramPassword, kWhoAmI), kScramUser);
  EXPECT_EQ(ExpectLogin(kAppDb, kMd5User, kMd5Password, kWhoAmI), kMd5User);
  const std::string old_backend =
      ExpectLogin(kAppDb, kPlainUser, kPlainPassword, "select pg_backend_pid()::text");
  for (const char* user : {kScramUser, kPlainUser, kMd5User}) {
    ExpectRefused(kAppDb, user, WrongPassword(user), kRefused);
  }
  ExpectRefused(kAppDb, kUnknownUser, kUnknownPassword, kRefused);
  ExpectRefused("pgbouncer", kAdminUser, WrongPassword(kAdminUser), kRefused);

  // ---- auth_type = scram-sha-256, and plain_user's password rotated (PostgreSQL and
  // auth_file), then RELOAD and RECONNECT so the next server login uses the new one. ----
  PGF_ASSERT_OK(g_pg->Exec(absl::StrCat("ALTER ROLE ", QuoteIdent(kPlainUser), " PASSWORD ",
                                        QuoteLiteral(kPlainPasswordRotated))));
  PGF_ASSERT_OK_AND_ASSIGN(
      Rows rotated, g_pg->Exec(absl::StrCat("select rolpassword from pg_authid where rolname = ",
                                            QuoteLiteral(kPlainUser))));
  ASSERT_EQ(rotated.size(), 1u);
  ASSERT_NO_FATAL_FAILURE(
      secrets_.AddScramSecret("rotated plain_user", rotated[0][0], kPlainPasswordRotated));
  PGF_ASSERT_OK(agent_->RewriteConfig(Options("scram-sha-256", kPlainPasswordRotated)));
  PGF_ASSERT_OK_AND_ASSIGN(reloaded, Command(admin.get(), "RELOAD"));
  EXPECT_EQ(reloaded, "RELOAD");
  PGF_ASSERT_OK(Command(admin.get(), absl::StrCat("RECONNECT ", kAppDb)));
  ExpectRefused(kAppDb, kPlainUser, kPlainPassword, kRefused);
  // SCRAM against a plaintext password (keys derived by the agent), and a new server login.
  const std::string new_backend =
      ExpectLogin(kAppDb, kPlainUser, kPlainPasswordRotated, "select pg_backend_pid()::text");
  EXPECT_NE(new_backend, old_backend) << "plain_user's server connection was not logged in again";
  EXPECT_EQ(ExpectLogin(kAppDb, kScramUser, kScramPassword, kWhoAmI), kScramUser);
  ExpectRefused(kAppDb, kScramUser, WrongPassword(kScramUser), kRefused);
  // An md5 hash cannot answer SCRAM (the exchange runs with keys nobody knows, as for an
  // unknown user, so the client sees a wrong password; the log says why).
  ExpectRefused(kAppDb, kMd5User, kMd5Password, kRefused);
  ExpectRefused(kAppDb, kUnknownUser, kUnknownPassword, kRefused);
  {
    std::map<std::string, Table> tables = ShowEverything(admin.get());
    EXPECT_EQ(ConfigValue(tables["CONFIG"], "auth_type"), "scram-sha-256");
  }

  // ---- /metrics ----
  absl::StatusOr<HttpResponse> metrics = HttpGet(metrics_port_, "/metrics");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ(metrics->status, 200) << metrics->raw;
  EXPECT_TRUE(absl::StrContains(metrics->body, "pgbouncer_")) << metrics->body;
  ExpectNoSecrets(secrets_, metrics->raw, "/metrics");

  // ---- The whole log, once the agent has exited (every line written). ----
  admin.reset();
  PGF_ASSERT_OK_AND_ASSIGN(int exit_status, agent_->Stop());
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
      << DescribeWaitStatus(exit_status);
  const std::string logfile = agent_->LogContents();
  const std::string stderr_text = agent_->StderrContents();
  ASSERT_GT(secrets_.size(), 50u);
  ExpectNoSecrets(secrets_, logfile, "the agent's logfile");
  ExpectNoSecrets(secrets_, stderr_text, "the agent's stderr");

  // The log is the one the failures went to, at debug level.
  const std::vector<std::string> expected_lines = {
      " DEBUG ",
      absl::StrCat("login failed for user '", kScramUser, "' db 'appdb': wrong password"),
      absl::StrCat("login failed for user '", kPlainUser, "' db 'appdb': wrong password"),
      absl::StrCat("login failed for user '", kMd5User, "' db 'appdb': wrong password"),
      absl::StrCat("login failed for user '", kUnknownUser, "' db 'appdb': user not in auth_file"),
      absl::StrCat("login failed for user '", kAdminUser, "' db 'pgbouncer': wrong password"),
      "pooler error: SASL authentication failed",
      absl::StrCat("login attempt: db=appdb user=", kScramUser),
      absl::StrCat("login attempt: db=", kForcedDb, " user=", kScramUser),
      "closing because: client close request",
      absl::StrCat("login failed: password authentication failed for user \"", kPlainUser, "\""),
      absl::StrCat("pooler error: password authentication failed for user \"", kPlainUser, "\""),
      "RELOAD refused, keeping the previous config",
      "RELOAD: configuration",
      "ran: RECONNECT",
  };
  // Failures of every phase (md5, cleartext, SCRAM), each on its own line.
  const std::vector<std::pair<std::string, size_t>> expected_counts = {
      {absl::StrCat("login failed for user '", kScramUser, "' db 'appdb': wrong password"), 3},
      {absl::StrCat("login failed for user '", kPlainUser, "' db 'appdb': wrong password"), 3},
      {absl::StrCat("login failed for user '", kMd5User, "' db 'appdb': wrong password"), 2},
      {absl::StrCat("login failed for user '", kMd5User,
                    "' db 'appdb': auth_file has only an md5 secret"),
       1},
      // (the reason is "user not in auth_file" in every phase)
      {absl::StrCat("login failed for user '", kUnknownUser, "' db 'appdb': user not in auth_file"),
       3},
      {absl::StrCat("login failed for user '", kAdminUser, "' db 'pgbouncer': wrong password"), 2},
      {"RELOAD: configuration", 2},
  };
  for (const auto& [line, count] : expected_counts) {
    size_t seen = 0;
    for (size_t at = logfile.find(line); at != std::string::npos; at = logfile.find(line, at + 1)) {
      ++seen;
    }
    EXPECT_EQ(seen, count) << "\"" << line << "\" in the logfile";
  }
  // The secrets the agent was given are among those searched for: the SCRAM secrets (whole,
  // StoredKey, ServerKey) of scram_user and fleet_admin, plain_user's password and md5_user's
  // hash (whole and hex).
  PGF_ASSERT_OK_AND_ASSIGN(std::string userlist, ReadFile(agent_->dir() + "/userlist.txt"));
  const std::vector<std::string> in_userlist = secrets_.FoundIn(userlist);
  EXPECT_GE(in_userlist.size(), 9u) << absl::StrJoin(in_userlist, "\n");
  for (const std::string& line : expected_lines) {
    EXPECT_TRUE(absl::StrContains(logfile, line)) << "the logfile lacks \"" << line << "\"";
    EXPECT_TRUE(absl::StrContains(stderr_text, line)) << "stderr lacks \"" << line << "\"";
  }
  EXPECT_EQ(agent_->SanitizerReport(), "");
}

// ---- The controller --------------------------------------------------------------------------

// Every file of `dir` whose name starts with `prefix` (the database, its -wal and -shm).
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ReadFiles(
    const std::string& dir, const std::string& prefix) {
  std::vector<std::pair<std::string, std::string>> files;
  for (const std::filesystem::directory_entry& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!absl::StartsWith(name, prefix)) continue;
    PGF_ASSIGN_OR_RETURN(std::string bytes, ReadFile(entry.path().string()));
    files.emplace_back(name, std::move(bytes));
  }
  return files;
}

struct TokenTableRow {
  std::string sha256;
  std::string name;
  std::string role;
};

// The `tokens` table, read with SQLite itself (read-only).
absl::StatusOr<std::vector<TokenTableRow>> ReadTokenTable(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::string error = db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return absl::InternalError(absl::StrCat("open ", path, ": ", error));
  }
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, "SELECT token_sha256, name, role FROM tokens ORDER BY name", -1, &stmt,
                         nullptr) != SQLITE_OK) {
    std::string error = sqlite3_errmsg(db);
    sqlite3_close(db);
    return absl::InternalError(absl::StrCat("select from tokens: ", error));
  }
  std::vector<TokenTableRow> rows;
  auto text = [&](int column) {
    const unsigned char* value = sqlite3_column_text(stmt, column);
    return value == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(value));
  };
  int rc = SQLITE_OK;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) rows.push_back({text(0), text(1), text(2)});
  const std::string error = sqlite3_errmsg(db);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  if (rc != SQLITE_DONE) return absl::InternalError(absl::StrCat("reading tokens: ", error));
  return rows;
}

bool IsLowerHex64(const std::string& text) {
  if (text.size() != 64) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

class ControllerTokensTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGF_ASSERT_OK(temp_dir_.Create("pgfleet-secrets"));
    dir_ = temp_dir_.path();
  }
  void TearDown() override {
    if (HasFailure() && controller_ != nullptr) std::cerr << controller_->Diagnostics();
    controller_.reset();
  }

  TempDir temp_dir_;
  std::string dir_;
  std::unique_ptr<ControllerProcess> controller_;
};

TEST_F(ControllerTokensTest, TokensAreStoredAsSha256AndNeverLogged) {
  const std::string bootstrap =
      absl::StrCat("pgf_", absl::BytesToHexString(crypto::RandomBytes(32)));
  const std::string wrong = absl::StrCat("pgf_", absl::BytesToHexString(crypto::RandomBytes(32)));
  const std::string db_path = dir_ + "/fleet.db";
  const std::string http_port_file = dir_ + "/http.port";
  ControllerOptions options;
  options.db_path = db_path;
  options.bootstrap_token = bootstrap;
  options.extra_args = {"-v"};
  AddHttpListener(options, http_port_file);
  PGF_ASSERT_OK_AND_ASSIGN(controller_, ControllerProcess::Start(options));
  PGF_ASSERT_OK_AND_ASSIGN(const int http_port, AwaitHttpPort(http_port_file));

  // Tokens minted into the running controller's SQLite file, as an operator would.
  auto mint = [&](const std::string& name, const std::string& role) -> std::string {
    absl::StatusOr<RunResult> minted =
        RunCommand({PGFLEET_CONTROLLER_BINARY, "token", "create", absl::StrCat("--db=", db_path),
                    absl::StrCat("--name=", name), absl::StrCat("--role=", role)});
    EXPECT_TRUE(minted.ok() && minted->Succeeded())
        << (minted.ok() ? minted->Describe() : minted.status().ToString());
    return minted.ok() ? std::string(absl::StripAsciiWhitespace(minted->stdout_text)) : "";
  };
  const std::string ops = mint("ops", "operator");
  const std::string viewer = mint("watcher", "viewer");
  for (const std::string* token : {&ops, &viewer}) {
    ASSERT_TRUE(absl::StartsWith(*token, "pgf_") && token->size() == 68) << *token;
  }
  const std::vector<std::pair<std::string, const std::string*>> tokens = {
      {"the bootstrap token", &bootstrap},
      {"the operator token", &ops},
      {"the viewer token", &viewer},
      {"a wrong token", &wrong}};

  // Used over gRPC (fleetctl) ...
  const std::string address = controller_->address();
  auto ctl = [&](const std::string& token, const std::vector<std::string>& args) {
    absl::StatusOr<FleetctlResult> result = RunFleetctl(args, token, address);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return FleetctlResult{};
    for (const auto& [what, value] : tokens) {
      EXPECT_FALSE(absl::StrContains(result->stdout_text + result->stderr_text, *value))
          << "fleetctl printed " << what << ": " << result->Describe();
    }
    return *result;
  };
  const std::string ini = dir_ + "/pushed.ini";
  PGF_ASSERT_OK(WriteFile(dir_ + "/users.txt", "\"app\" \"app-password-1\"\n"));
  PGF_ASSERT_OK(WriteFile(ini, absl::StrCat("[databases]\nappdb = host=127.0.0.1 port=5432\n\n"
                                            "[pgbouncer]\nlisten_addr = 127.0.0.1\n"
                                            "listen_port = 6432\nauth_type = scram-sha-256\n"
                                            "auth_file = ",
                                            dir_, "/users.txt\n")));
  FleetctlResult listed = ctl(bootstrap, {"agents", "list"});
  EXPECT_EQ(listed.exit_code, 0) << listed.Describe();
  FleetctlResult pushed = ctl(ops, {"config", "push", "--env", "dev", "-f", ini, "-m", "tokens"});
  EXPECT_EQ(pushed.exit_code, 0) << pushed.Describe();
  FleetctlResult viewed = ctl(viewer, {"config", "list", "--env", "dev"});
  EXPECT_EQ(viewed.exit_code, 0) << viewed.Describe();
  FleetctlResult refused = ctl(viewer, {"config", "push", "--env", "dev", "-f", ini});
  EXPECT_EQ(refused.exit_code, 4) << refused.Describe();
  FleetctlResult unknown = ctl(wrong, {"agents", "list"});
  EXPECT_EQ(unknown.exit_code, 4) << unknown.Describe();

  // ... and over HTTP (the dashboard's JSON API).
  auto who_am_i = [&](const std::string& token) -> HttpResponse {
    absl::StatusOr<HttpResponse> response =
        HttpGet(http_port, "/api/WhoAmI", {absl::StrCat("Authorization: Bearer ", token)});
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return HttpResponse{};
    for (const auto& [what, value] : tokens) {
      EXPECT_FALSE(absl::StrContains(response->raw, *value))
          << "the HTTP answer holds " << what << ": " << response->raw;
    }
    return *response;
  };
  HttpResponse me = who_am_i(ops);
  EXPECT_EQ(me.status, 200) << me.raw;
  EXPECT_TRUE(absl::StrContains(me.body, "ops") && absl::StrContains(me.body, "operator"))
      << me.body;
  HttpResponse stranger = who_am_i(wrong);
  EXPECT_EQ(stranger.status, 401) << stranger.raw;

  // The SQLite files' bytes, while the controller runs (the WAL holds the recent writes) and
  // after it stopped.
  auto expect_not_on_disk = [&](const std::string& when) {
    absl::StatusOr<std::vector<std::pair<std::string, std::string>>> files =
        ReadFiles(dir_, "fleet.db");
    ASSERT_TRUE(files.ok()) << files.status();
    ASSERT_FALSE(files->empty()) << "no fleet.db in " << dir_;
    for (const auto& [name, bytes] : *files) {
      for (const auto& [what, value] : tokens) {
        EXPECT_FALSE(absl::StrContains(bytes, *value)) << name << " " << when << " holds " << what;
      }
    }
  };
  ASSERT_NO_FATAL_FAILURE(expect_not_on_disk("while the controller runs"));
  PGF_ASSERT_OK_AND_ASSIGN(int exit_status, controller_->Stop());
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0)
      << DescribeWaitStatus(exit_status);
  ASSERT_NO_FATAL_FAILURE(expect_not_on_disk("after the controller stopped"));
  // The bytes searched are the real ones: the hashes are in them.
  {
    PGF_ASSERT_OK_AND_ASSIGN(std::string bytes, ReadFile(db_path));
    for (const std::string* token : {&bootstrap, &ops, &viewer}) {
      EXPECT_TRUE(absl::StrContains(bytes, controller::Sha256Hex(*token)))
          << "fleet.db lacks the sha256 of " << *token;
    }
  }

  // The tokens table holds each token's sha256 (lowercase hex), nothing else.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<TokenTableRow> rows, ReadTokenTable(db_path));
  ASSERT_EQ(rows.size(), 3u);
  const std::vector<std::vector<std::string>> expected = {
      {controller::Sha256Hex(bootstrap), "bootstrap", "admin"},
      {controller::Sha256Hex(ops), "ops", "operator"},
      {controller::Sha256Hex(viewer), "watcher", "viewer"}};
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_TRUE(IsLowerHex64(rows[i].sha256)) << rows[i].sha256;
    EXPECT_EQ((std::vector<std::string>{rows[i].sha256, rows[i].name, rows[i].role}), expected[i]);
  }

  // The controller's log (every run, -v) names the token's owner, never the token.
  const std::string log = controller_->LogContents();
  for (const auto& [what, value] : tokens) {
    EXPECT_FALSE(absl::StrContains(log, *value)) << "the controller log holds " << what;
  }
  EXPECT_TRUE(absl::StrContains(log, "ops pushed config version 1 to dev")) << log;
}

// Credentials and TLS material pushed through the controller (issue 18): a plaintext password
// (the worst case: --plaintext) and a rotation's previous one, set with fleetctl from stdin,
// appear in no log line (-v), no audit entry, no JSON API answer (viewer and admin), no dashboard
// page, and not in the SQLite file's bytes, where they are only encrypted.
TEST_F(ControllerTokensTest, CredentialsNeverLeaveTheControllerExceptToAgents) {
  const std::string admin = absl::StrCat("pgf_", absl::BytesToHexString(crypto::RandomBytes(32)));
  const std::string db_path = dir_ + "/fleet.db";
  const std::string key_path = dir_ + "/secrets.key";
  PGF_ASSERT_OK(WriteFile(key_path, absl::BytesToHexString(crypto::RandomBytes(32))));
  ASSERT_EQ(chmod(key_path.c_str(), 0600), 0);
  const std::string http_port_file = dir_ + "/http.port";
  ControllerOptions options;
  options.db_path = db_path;
  options.bootstrap_token = admin;
  options.extra_args = {"-v", "--secrets-key-file=" + key_path};
  AddHttpListener(options, http_port_file);
  PGF_ASSERT_OK_AND_ASSIGN(controller_, ControllerProcess::Start(options));
  PGF_ASSERT_OK_AND_ASSIGN(const int http_port, AwaitHttpPort(http_port_file));
  const std::string old_password = "Old-Plaintext-Marmot-5521";
  const std::string new_password = "New-Plaintext-Walrus-9934";

  const std::string ini = dir_ + "/pushed.ini";
  PGF_ASSERT_OK(WriteFile(ini,
                          "[databases]\nappdb = host=127.0.0.1 port=5432\n\n"
                          "[pgbouncer]\nlisten_port = 6432\nauth_type = md5\n"
                          "auth_file = users.txt\n"));
  absl::StatusOr<FleetctlResult> pushed =
      RunFleetctl({"config", "push", "--env", "dev", "-f", ini}, admin, controller_->address());
  ASSERT_TRUE(pushed.ok() && pushed->exit_code == 0) << pushed->Describe();
  // The password on fleetctl's stdin, as a script would give it.
  auto with_stdin = [&](const std::vector<std::string>& args, const std::string& input) {
    std::vector<std::string> argv = {"/bin/sh",
                                     "-c",
                                     "printf '%s\\n' \"$PGF_TEST_INPUT\" | \"$@\"",
                                     "sh",
                                     PGFLEET_FLEETCTL_BINARY,
                                     "--controller=" + controller_->address(),
                                     "--token=" + admin};
    argv.insert(argv.end(), args.begin(), args.end());
    RunOptions run;
    run.env = {{"PGF_TEST_INPUT", input}, {"HOME", dir_}, {"PGFLEET_TOKEN", ""}};
    absl::StatusOr<RunResult> result = RunCommand(argv, run);
    EXPECT_TRUE(result.ok() && result->Succeeded())
        << (result.ok() ? result->Describe() : result.status().ToString());
    return result.ok() ? result->stdout_text + result->stderr_text : std::string();
  };
  std::vector<std::string> seen;
  seen.push_back(
      with_stdin({"secrets", "set", "--env", "dev", "--user", "app", "--plaintext"}, old_password));
  seen.push_back(with_stdin({"secrets", "rotate", "begin", "--env", "dev", "--user", "app",
                             "--overlap", "30m", "--plaintext"},
                            new_password));

  // The JSON API (GET, as the dashboard reads it) and the dashboard's pages.
  const std::string auth = absl::StrCat("Authorization: Bearer ", admin);
  for (const std::string& path :
       {std::string("/api/ListConfigs?environment=dev"), std::string("/api/GetConfig?version=2"),
        std::string("/api/GetConfig?version=3"), std::string("/api/ListSecrets?environment=dev"),
        std::string("/api/ListEnvironments"), std::string("/"), std::string("/index.html")}) {
    absl::StatusOr<HttpResponse> response = HttpGet(http_port, path, {auth});
    ASSERT_TRUE(response.ok()) << path << ": " << response.status();
    if (absl::StartsWith(path, "/api/")) {
      EXPECT_EQ(response->status, 200) << path << ": " << response->raw;
    }
    seen.push_back(response->raw);
  }
  EXPECT_TRUE(absl::StrContains(seen[3], "fingerprint")) << "GetConfig shows no files: " << seen[3];

  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<controller::Store> store,
                           controller::OpenSqliteStore(db_path));
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<controller::AuditEntry> audit, store->ListAudit(0));
  ASSERT_GE(audit.size(), 3u);
  for (const controller::AuditEntry& entry : audit) {
    seen.push_back(absl::StrCat(entry.action, " ", entry.target, " ", entry.details));
  }
  store.reset();
  seen.push_back(controller_->LogContents());
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> files =
      ReadFiles(dir_, "fleet.db");
  ASSERT_TRUE(files.ok()) << files.status();
  for (const auto& [name, bytes] : *files) seen.push_back(bytes);
  for (const std::string& text : seen) {
    for (const std::string* secret : {&old_password, &new_password}) {
      EXPECT_FALSE(absl::StrContains(text, *secret)) << "found " << *secret << " in:\n" << text;
    }
  }
}

}  // namespace
}  // namespace pgfleet::testutil
