// Token lifecycle in the real SQLite store and the authentication on top of it: ids, scopes,
// expiry, revocation, the bootstrap token ending when an admin token is made (also for databases
// migrated from before migration 0004), and agents' certificate URIs.

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "controller/api/fleet_api.h"
#include "controller/auth/agent_identity.h"
#include "controller/auth/token_admin.h"
#include "controller/auth/tokens.h"
#include "controller/clock.h"
#include "controller/store/sqlite_store.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/unit/store_backends.h"

namespace pgfleet::controller {
namespace {

// On both of the store's databases (store_backends.h).
class TokenLifecycleTest : public StoreBackendTest {
 protected:
  TokenLifecycleTest() { open_in_set_up_ = false; }
  void Open() { Reopen(); }
  // Creates a token through the store and returns its secret.
  std::string Create(const std::string& name, Role role, const std::string& env = "",
                     bool bootstrap = false, int64_t expires_unix_ms = 0) {
    TokenRow row;
    row.name = name;
    row.role = role;
    row.environment = env;
    row.created_unix_ms = NowMillis();
    row.bootstrap = bootstrap;
    row.expires_unix_ms = expires_unix_ms;
    const std::string secret = NewToken();
    absl::StatusOr<TokenRow> created = store_->CreateToken(row, HashToken(secret));
    EXPECT_TRUE(created.ok()) << created.status();
    return secret;
  }
  static std::string Bearer(const std::string& secret) { return "Bearer " + secret; }
  int64_t NowMillis() const { return UnixMillis(clock_.Now()); }

  SystemClock clock_;
};
INSTANTIATE_TEST_SUITE_P(Backends, TokenLifecycleTest, ::testing::ValuesIn(AllStoreBackends()),
                         StoreBackendName);

TEST_P(TokenLifecycleTest, ScopesAreCheckedAndTheSecretIsNeverStored) {
  Open();
  TokenRow agent;
  agent.name = "agent-prod";
  agent.role = Role::kAgent;
  agent.created_unix_ms = 1;
  // An agent token names its environment; operators' tokens do not have one.
  EXPECT_TRUE(absl::IsInvalidArgument(store_->CreateToken(agent, Sha256Hex("a")).status()));
  agent.environment = "prod";
  PGF_ASSERT_OK_AND_ASSIGN(TokenRow created, store_->CreateToken(agent, Sha256Hex("a")));
  EXPECT_GT(created.id, 0u);
  EXPECT_EQ(created.environment, "prod");
  TokenRow viewer;
  viewer.name = "v";
  viewer.role = Role::kViewer;
  viewer.environment = "prod";
  EXPECT_TRUE(absl::IsInvalidArgument(store_->CreateToken(viewer, Sha256Hex("v")).status()));

  // Only the hash is in the file.
  const std::string secret = Create("ci", Role::kOperator);
  store_.reset();
  std::ifstream in(path_, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_FALSE(absl::StrContains(bytes, secret));
}

TEST_P(TokenLifecycleTest, RevokedAndExpiredTokensAreRefusedAndLastUseIsRecorded) {
  Open();
  const std::string operator_secret = Create("ci", Role::kOperator);
  const std::string expired_secret = Create("old", Role::kViewer, "", false, NowMillis() - 1000);
  const std::string agent_secret = Create("agent-prod", Role::kAgent, "prod");

  PGF_ASSERT_OK_AND_ASSIGN(Caller caller,
                           AuthenticateBearer(*store_, Bearer(operator_secret), clock_.Now()));
  EXPECT_EQ(caller.role, Role::kOperator);
  PGF_ASSERT_OK_AND_ASSIGN(TokenRow used, store_->LookupToken(HashToken(operator_secret)));
  EXPECT_GT(used.last_used_unix_ms, 0);

  absl::Status expired = AuthenticateBearer(*store_, Bearer(expired_secret), clock_.Now()).status();
  EXPECT_TRUE(absl::IsUnauthenticated(expired)) << expired;
  EXPECT_TRUE(absl::StrContains(expired.message(), "expired")) << expired;

  // A join token is not an operator's token, and an operator's token is not a join token.
  absl::Status agent_as_operator =
      AuthenticateBearer(*store_, Bearer(agent_secret), clock_.Now()).status();
  EXPECT_TRUE(absl::IsPermissionDenied(agent_as_operator)) << agent_as_operator;
  PGF_ASSERT_OK_AND_ASSIGN(TokenRow join,
                           AuthenticateJoinToken(*store_, Bearer(agent_secret), clock_.Now()));
  EXPECT_EQ(join.environment, "prod");
  EXPECT_TRUE(absl::IsPermissionDenied(
      AuthenticateJoinToken(*store_, Bearer(operator_secret), clock_.Now()).status()));

  PGF_ASSERT_OK_AND_ASSIGN(TokenRow revoked, store_->RevokeToken(used.id, NowMillis()));
  EXPECT_GT(revoked.revoked_unix_ms, 0);
  absl::Status after = AuthenticateBearer(*store_, Bearer(operator_secret), clock_.Now()).status();
  EXPECT_TRUE(absl::IsUnauthenticated(after)) << after;
  EXPECT_TRUE(absl::StrContains(after.message(), "revoked")) << after;
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->RevokeToken(used.id, NowMillis()).status()));
  EXPECT_TRUE(absl::IsNotFound(store_->RevokeToken(999999, NowMillis()).status()));
}

TEST_P(TokenLifecycleTest, TheFirstAdminTokenEndsTheBootstrapToken) {
  Open();
  const std::string bootstrap = Create("bootstrap", Role::kAdmin, "", /*bootstrap=*/true);
  PGF_ASSERT_OK(AuthenticateBearer(*store_, Bearer(bootstrap), clock_.Now()).status());
  // Other tokens do not end it...
  Create("ci", Role::kOperator);
  PGF_ASSERT_OK(AuthenticateBearer(*store_, Bearer(bootstrap), clock_.Now()).status());

  // ...an admin token does, through the API as through the store.
  TokenAdmin admin(*store_, clock_);
  pgfleet::v1::CreateTokenRequest request;
  request.set_name("alice");
  request.set_role("admin");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::CreateTokenResponse alice,
                           admin.Create(Caller{"bootstrap", Role::kAdmin}, request));
  absl::Status refused = AuthenticateBearer(*store_, Bearer(bootstrap), clock_.Now()).status();
  EXPECT_TRUE(absl::IsUnauthenticated(refused)) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "bootstrap token stopped working")) << refused;
  PGF_ASSERT_OK(AuthenticateBearer(*store_, Bearer(alice.secret()), clock_.Now()).status());

  // It cannot come back: registering a bootstrap token again is refused.
  TokenRow again;
  again.name = "bootstrap";
  again.role = Role::kAdmin;
  again.bootstrap = true;
  EXPECT_TRUE(
      absl::IsFailedPrecondition(store_->CreateToken(again, Sha256Hex("another")).status()));

  // The list says what happened, and never shows a secret.
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListTokensResponse list,
                           admin.List(Caller{"alice", Role::kAdmin}, {}));
  ASSERT_EQ(list.tokens_size(), 3);
  EXPECT_EQ(list.tokens(0).state(), "superseded");
  EXPECT_EQ(list.tokens(1).state(), "active");
  EXPECT_EQ(list.tokens(2).created_by(), "bootstrap");
  EXPECT_FALSE(absl::StrContains(list.DebugString(), alice.secret()));

  // The last active admin token cannot be revoked; a viewer cannot list.
  pgfleet::v1::RevokeTokenRequest revoke;
  revoke.set_id(alice.token().id());
  EXPECT_TRUE(
      absl::IsFailedPrecondition(admin.Revoke(Caller{"alice", Role::kAdmin}, revoke).status()));
  EXPECT_TRUE(absl::IsPermissionDenied(admin.List(Caller{"v", Role::kViewer}, {}).status()));
}

TEST_P(TokenLifecycleTest, MigrationEndsTheBootstrapTokenWhenAnAdminTokenExists) {
  // A database as the previous release left it: migrations 1-3, a bootstrap and an admin token.
  std::vector<Migration> old_migrations;
  for (const Migration& migration : SqliteStore::EmbeddedMigrations()) {
    if (migration.version <= 3) old_migrations.push_back(migration);
  }
  ASSERT_EQ(old_migrations.size(), 3u);
  {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteStore> old, OpenAgain(old_migrations));
    PGF_ASSERT_OK(old->ExecForTesting(
        absl::StrCat("INSERT INTO tokens (token_sha256, name, role, created_unix_ms) VALUES ('",
                     HashToken("boot"), "', 'bootstrap', 'admin', 1), ('", HashToken("root"),
                     "', 'root', 'admin', 2), ('", HashToken("view"), "', 'ci', 'viewer', 3)")));
  }
  Open();
  EXPECT_TRUE(
      absl::IsUnauthenticated(AuthenticateBearer(*store_, Bearer("boot"), clock_.Now()).status()));
  PGF_ASSERT_OK_AND_ASSIGN(Caller root, AuthenticateBearer(*store_, Bearer("root"), clock_.Now()));
  EXPECT_EQ(root.role, Role::kAdmin);
  PGF_ASSERT_OK_AND_ASSIGN(Caller viewer,
                           AuthenticateBearer(*store_, Bearer("view"), clock_.Now()));
  EXPECT_EQ(viewer.role, Role::kViewer);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<TokenRow> tokens, store_->ListTokens());
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_TRUE(tokens[0].bootstrap);
  EXPECT_GT(tokens[0].revoked_unix_ms, 0);
}

TEST(AgentIdentityTest, ParsesTheCertificateUri) {
  PGF_ASSERT_OK_AND_ASSIGN(CertificateBinding binding,
                           ParseAgentUri("pgfleet://env/prod/agent/prod-7.db_1"));
  EXPECT_EQ(binding.environment, "prod");
  EXPECT_EQ(binding.agent_id, "prod-7.db_1");
  for (const char* bad :
       {"pgfleet://env/prod", "pgfleet://env//agent/a", "pgfleet://env/prod/agent/",
        "pgfleet://env/prod/agent/a/b", "pgfleet://agent/a/env/prod", "pgfleet://env/p%20/agent/a",
        "spiffe://env/prod/agent/a"}) {
    EXPECT_FALSE(ParseAgentUri(bad).ok()) << bad;
  }
  EXPECT_FALSE(CertificateUris("not a certificate").ok());
}

}  // namespace
}  // namespace pgfleet::controller
