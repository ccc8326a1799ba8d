// The mock SCRAM salt that keeps unknown users indistinguishable from real ones (PostgreSQL's
// scram_mock_salt), and the autodb_idle_timeout key that bounds unconfigured pools.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/auth_crypto.h"
#include "common/config/config.h"
#include "gtest/gtest.h"

namespace pgfleet::crypto {
namespace {

// HMAC-SHA-256 through OpenSSL directly, not through the code under test.
std::string ReferenceHmac(const std::string& key, const std::string& data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &length);
  return std::string(reinterpret_cast<const char*>(out), length);
}

TEST(ScramMockSaltTest, IsTheTruncatedHmacOfTheUserName) {
  const std::string secret = "a per-process secret of 32 bytes";
  EXPECT_EQ(ScramMockSalt(secret, "alice"), ReferenceHmac(secret, "alice").substr(0, 16));
  EXPECT_EQ(ScramMockSalt(secret, "alice").size(), kScramMockSaltBytes);
  EXPECT_EQ(ScramMockSalt(secret, ""), ReferenceHmac(secret, "").substr(0, 16));
}

TEST(ScramMockSaltTest, StableForAUserAndDifferentAcrossUsersAndSecrets) {
  const std::string secret = RandomBytes(32);
  EXPECT_EQ(ScramMockSalt(secret, "alice"), ScramMockSalt(secret, "alice"));
  EXPECT_NE(ScramMockSalt(secret, "alice"), ScramMockSalt(secret, "bob"));
  EXPECT_NE(ScramMockSalt(secret, "alice"), ScramMockSalt(RandomBytes(32), "alice"));
}

TEST(ScramMockSaltTest, MockKeysShowTheMockSaltAndAcceptNoPassword) {
  const std::string secret = RandomBytes(32);
  const ScramKeys keys = ScramMockKeys(secret, "mallory");
  EXPECT_EQ(keys.salt, ScramMockSalt(secret, "mallory"));
  EXPECT_EQ(keys.iterations, 4096);
  EXPECT_FALSE(keys.client_key.has_value());
  // Two exchanges for the same name show the same salt and iteration count.
  for (const char* password : {"", "mallory", "password"}) {
    ScramServerExchange server(ScramMockKeys(secret, "mallory"));
    ScramClientExchange client = ScramClientExchange::FromPassword(password);
    absl::StatusOr<std::string> server_first =
        server.HandleClientFirst(client.ClientFirstMessage());
    ASSERT_TRUE(server_first.ok()) << server_first.status();
    EXPECT_NE(server_first->find(",i=4096"), std::string::npos) << *server_first;
    absl::StatusOr<std::string> client_final = client.HandleServerFirst(*server_first);
    ASSERT_TRUE(client_final.ok()) << client_final.status();
    absl::StatusOr<std::string> server_final = server.HandleClientFinal(*client_final);
    EXPECT_EQ(server_final.status().code(), absl::StatusCode::kPermissionDenied) << password;
  }
}

TEST(AutodbIdleTimeoutTest, ParsedInSecondsWithPgBouncersDefault) {
  absl::StatusOr<config::Config> defaults = config::ParseConfig("[pgbouncer]\n", "test.ini");
  ASSERT_TRUE(defaults.ok()) << defaults.status();
  EXPECT_EQ(defaults->autodb_idle_timeout, absl::Seconds(3600));
  absl::StatusOr<config::Config> set =
      config::ParseConfig("[pgbouncer]\nautodb_idle_timeout = 1.5\n", "test.ini");
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->autodb_idle_timeout, absl::Milliseconds(1500));
  EXPECT_TRUE(set->warnings.empty());
}

}  // namespace
}  // namespace pgfleet::crypto
