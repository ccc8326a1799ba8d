// The startup/auth exchange: what the agent parses from a client logging in to it
// (ClientConn::HandleAuthMessage: cleartext, md5, SCRAM SASLInitialResponse + client-final)
// and from a PostgreSQL server it logs in to (ServerConn::HandleAuthRequest: md5 salt, SASL
// mechanism list, server-first, server-final), plus SCRAM secrets from auth_file.
//
// Input: a mode byte, then records (big-endian uint16 length + bytes; see fuzz_util.h).
//   mode % 6 == 0: agent as server, SCRAM: record 1 = 'p' body of the SASLInitialResponse
//                  (mechanism, int32 length, client-first), record 2 = client-final.
//   mode % 6 == 1: as 0, but record 1 is the bare client-first-message.
//   mode % 6 == 2: agent as server, cleartext and md5: record 1 = 'p' body, checked
//                  against a plaintext, an md5 and a SCRAM secret.
//   mode % 6 == 3: agent as client: records are 'R' bodies from the server (int32 code +
//                  data), handled in order with a password and with pass-through keys.
//   mode % 6 == 4: a genuine exchange with fuzzed password, user, salt and nonce must succeed,
//                  and the recovered keys must log in again (the pass-through path).
//   mode % 6 == 5: ParseScramSecret on record 1; a parsed secret must format back to itself.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "agent/pg/protocol.h"
#include "common/auth_crypto.h"
#include "tests/fuzz/fuzz_util.h"

namespace crypto = pgfleet::crypto;
namespace pg = pgfleet::agent::pg;

namespace {

constexpr std::string_view kPassword = "pencil";
constexpr std::string_view kUser = "user";
// Fixed nonces, so a client-final can echo the combined nonce and get to the proof check.
constexpr std::string_view kServerNonce = "3rfcNHYJY1ZVvWVs7j";
constexpr std::string_view kClientNonce = "rOprNGfwEbeRWgbNEkqO";
// Few iterations keep each run fast; the parsers do not care.
constexpr int kIterations = 16;
// An attacker-chosen iteration count above this would make a run slow, not find a bug
// (ParseIterations caps real ones at kMaxScramIterations).
constexpr int kMaxFuzzIterations = 4096;

const crypto::ScramKeys& ServerKeys() {
  static const crypto::ScramKeys keys =
      crypto::ScramKeysFromPassword(kPassword, "fuzzsalt", kIterations);
  return keys;
}

// As RFC 5802's "printable" minus ','; mirrors auth_crypto.cc's IsValidNonce.
bool IsValidNonce(std::string_view nonce) {
  if (nonce.empty()) return false;
  for (char c : nonce) {
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return true;
}

// True when some "i=" in `message` is followed by a number above kMaxFuzzIterations.
bool HasLargeIterationCount(std::string_view message) {
  for (size_t at = message.find("i="); at != std::string_view::npos;
       at = message.find("i=", at + 1)) {
    uint64_t value = 0;
    for (size_t i = at + 2; i < message.size() && message[i] >= '0' && message[i] <= '9'; ++i) {
      value = value * 10 + static_cast<uint64_t>(message[i] - '0');
      if (value > kMaxFuzzIterations) return true;
    }
  }
  return false;
}

// ClientConn::HandleAuthMessage's SCRAM branch for the first 'p' message.
absl::StatusOr<std::string> SaslInitialResponse(crypto::ScramServerExchange& server,
                                                std::string_view body) {
  pg::BodyReader reader(body);
  std::string_view mechanism = reader.CString();
  const int32_t length = reader.Int32();
  if (!reader.ok() || mechanism != "SCRAM-SHA-256" || length < 0 ||
      static_cast<size_t>(length) != reader.remaining()) {
    return absl::InvalidArgumentError("invalid SASLInitialResponse");
  }
  return server.HandleClientFirst(reader.Rest());
}

void ServerScram(std::string_view first_body, std::string_view client_final) {
  crypto::ScramServerExchange server(ServerKeys(), std::string(kServerNonce));
  absl::StatusOr<std::string> server_first = SaslInitialResponse(server, first_body);
  if (!server_first.ok()) {
    PGF_FUZZ_CHECK(!server_first.status().message().empty());
    // The exchange is over: nothing more is accepted.
    PGF_FUZZ_CHECK(!server.HandleClientFinal(client_final).ok());
    return;
  }
  PGF_FUZZ_CHECK(server_first->starts_with("r="));
  absl::StatusOr<std::string> server_final = server.HandleClientFinal(client_final);
  if (server_final.ok()) {
    // Only a client that knows the password gets here; the fuzzer cannot compute a proof.
    PGF_FUZZ_CHECK(server_final->starts_with("v="));
    PGF_FUZZ_CHECK(server.keys().client_key.has_value());
  } else {
    const absl::StatusCode code = server_final.status().code();
    PGF_FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument ||
                   code == absl::StatusCode::kPermissionDenied);
  }
  // One attempt per exchange.
  PGF_FUZZ_CHECK(!server.HandleClientFinal(client_final).ok());
}

// ClientConn::HandleAuthMessage's cleartext and md5 branches against each kind of secret.
void ServerPassword(std::string_view body) {
  pg::BodyReader reader(body);
  const std::string password(reader.CString());
  if (!reader.ok()) return;  // The agent refuses the message.
  const bool plain_ok = crypto::SecretEquals(password, kPassword);
  const bool md5_ok = crypto::SecretEquals(crypto::Md5PasswordHash(password, kUser),
                                           crypto::Md5PasswordHash(kPassword, kUser));
  PGF_FUZZ_CHECK(plain_ok == md5_ok);
  static const std::string scram_secret = crypto::FormatScramSecret(ServerKeys());
  absl::StatusOr<crypto::ScramKeys> keys = crypto::ParseScramSecret(scram_secret);
  PGF_FUZZ_CHECK(keys.ok());
  const crypto::ScramKeys derived =
      crypto::ScramKeysFromPassword(password, keys->salt, keys->iterations);
  PGF_FUZZ_CHECK((derived.stored_key == keys->stored_key) == plain_ok);
  // md5: the response to a salt, compared with what a client knowing the password sends.
  const std::string salt = "\x01\x02\x03\x04";
  const std::string expected =
      crypto::Md5SaltedResponse(crypto::Md5PasswordHash(kPassword, kUser), salt);
  PGF_FUZZ_CHECK(expected.size() == 35);
  (void)crypto::SecretEquals(expected, password);
}

// ServerConn::HandleAuthRequest for each 'R' body in turn.
void ClientAuth(pgfleet::fuzz::RecordReader& input, bool with_keys) {
  std::optional<crypto::ScramClientExchange> scram;
  for (int i = 0; i < 4 && !input.empty(); ++i) {
    const std::string_view body = input.Record();
    pg::BodyReader reader(body);
    const int32_t code = reader.Int32();
    switch (code) {
      case pg::kAuthOk:
      case pg::kAuthCleartext:
        continue;
      case pg::kAuthMd5: {
        const std::string salt(reader.Bytes(4));
        if (!reader.ok()) return;
        PGF_FUZZ_CHECK(
            crypto::Md5SaltedResponse(crypto::Md5PasswordHash(kPassword, kUser), salt).size() ==
            35);
        continue;
      }
      case pg::kAuthSasl: {
        bool has_scram = false;
        while (reader.ok() && reader.remaining() > 0) {
          std::string_view mechanism = reader.CString();
          if (mechanism == "SCRAM-SHA-256") has_scram = true;
          if (mechanism.empty()) break;
        }
        if (!has_scram) return;
        if (with_keys) {
          crypto::ScramKeys keys =
              crypto::ScramKeysFromPassword(kPassword, "fuzzsalt", kIterations);
          scram.emplace(crypto::ScramClientExchange::FromKeys(keys, std::string(kClientNonce)));
        } else {
          scram.emplace(crypto::ScramClientExchange::FromPassword(std::string(kPassword),
                                                                  std::string(kClientNonce)));
        }
        const std::string first = scram->ClientFirstMessage();
        PGF_FUZZ_CHECK(first.starts_with("n,,n="));
        continue;
      }
      case pg::kAuthSaslContinue: {
        if (!scram.has_value()) return;
        const std::string_view server_first = reader.Rest();
        if (HasLargeIterationCount(server_first)) return;
        absl::StatusOr<std::string> final_message = scram->HandleServerFirst(server_first);
        if (!final_message.ok()) return;
        PGF_FUZZ_CHECK(final_message->starts_with("c=biws,r="));
        continue;
      }
      case pg::kAuthSaslFinal: {
        if (!scram.has_value()) return;
        absl::Status verified = scram->VerifyServerFinal(reader.Rest());
        if (!verified.ok()) return;
        continue;
      }
      default:
        return;  // Unsupported method: login fails.
    }
  }
}

// A genuine exchange between the agent's two SCRAM sides must succeed whatever the password,
// user name, salt and nonce, and the keys the server recovers must log in again.
void GenuineExchange(pgfleet::fuzz::RecordReader& input) {
  const std::string password(input.Record());
  const std::string user(input.Record());
  const std::string salt(input.Record());
  const std::string client_nonce(input.Record());
  const int iterations = 1 + input.Byte() % kIterations;
  // A ',' would make the rest of the nonce read as extensions, which is another test.
  if (client_nonce.find(',') != std::string::npos) return;

  const crypto::ScramKeys keys = crypto::ScramKeysFromPassword(password, salt, iterations);
  crypto::ScramServerExchange server(keys);
  crypto::ScramClientExchange client =
      crypto::ScramClientExchange::FromPassword(password, client_nonce);
  client.SetUserName(user);
  absl::StatusOr<std::string> server_first = server.HandleClientFirst(client.ClientFirstMessage());
  // An empty nonce makes the client pick a random one.
  const bool nonce_ok = client_nonce.empty() || IsValidNonce(client_nonce);
  PGF_FUZZ_CHECK(server_first.ok() == nonce_ok);
  if (!server_first.ok()) return;
  absl::StatusOr<std::string> client_final = client.HandleServerFirst(*server_first);
  // The salt travels as base64; an empty one is refused by the client.
  PGF_FUZZ_CHECK(client_final.ok() == !salt.empty());
  if (!client_final.ok()) return;
  absl::StatusOr<std::string> server_final = server.HandleClientFinal(*client_final);
  PGF_FUZZ_CHECK(server_final.ok());
  PGF_FUZZ_CHECK(client.VerifyServerFinal(*server_final).ok());
  PGF_FUZZ_CHECK(server.keys().client_key.has_value());

  // The secret as auth_file stores it parses back to the same keys.
  absl::StatusOr<crypto::ScramKeys> reparsed =
      crypto::ParseScramSecret(crypto::FormatScramSecret(keys));
  PGF_FUZZ_CHECK(reparsed.ok());
  PGF_FUZZ_CHECK(reparsed->salt == keys.salt && reparsed->iterations == keys.iterations &&
                 reparsed->stored_key == keys.stored_key &&
                 reparsed->server_key == keys.server_key);

  // Pass-through: the recovered ClientKey logs in to a server holding the same secret.
  crypto::ScramServerExchange second_server(*reparsed);
  crypto::ScramClientExchange pass_through = crypto::ScramClientExchange::FromKeys(server.keys());
  absl::StatusOr<std::string> second_first =
      second_server.HandleClientFirst(pass_through.ClientFirstMessage());
  PGF_FUZZ_CHECK(second_first.ok());
  absl::StatusOr<std::string> second_final = pass_through.HandleServerFirst(*second_first);
  PGF_FUZZ_CHECK(second_final.ok());
  absl::StatusOr<std::string> second_verifier = second_server.HandleClientFinal(*second_final);
  PGF_FUZZ_CHECK(second_verifier.ok());
  PGF_FUZZ_CHECK(pass_through.VerifyServerFinal(*second_verifier).ok());

  // md5: the stored form is "md5" + 32 hex digits, and the salted response has the same form.
  const std::string stored = crypto::Md5PasswordHash(password, user);
  PGF_FUZZ_CHECK(stored.size() == 35 && stored.starts_with("md5"));
  PGF_FUZZ_CHECK(crypto::Md5SaltedResponse(stored, salt).size() == 35);
}

void ScramSecret(std::string_view secret) {
  absl::StatusOr<crypto::ScramKeys> keys = crypto::ParseScramSecret(secret);
  if (!keys.ok()) {
    PGF_FUZZ_CHECK(keys.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  PGF_FUZZ_CHECK(!keys->salt.empty());
  PGF_FUZZ_CHECK(keys->iterations >= 1 && keys->iterations <= crypto::kMaxScramIterations);
  const std::string formatted = crypto::FormatScramSecret(*keys);
  absl::StatusOr<crypto::ScramKeys> again = crypto::ParseScramSecret(formatted);
  PGF_FUZZ_CHECK(again.ok());
  PGF_FUZZ_CHECK(crypto::FormatScramSecret(*again) == formatted);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pgfleet::fuzz::RecordReader input(data, size);
  switch (input.Byte() % 6) {
    case 0: {
      const std::string_view first = input.Record();
      ServerScram(first, input.Record());
      break;
    }
    case 1: {
      const std::string_view client_first = input.Record();
      const std::string body = pg::SaslInitialResponse("SCRAM-SHA-256", client_first).substr(5);
      ServerScram(body, input.Record());
      break;
    }
    case 2:
      ServerPassword(input.Record());
      break;
    case 3: {
      pgfleet::fuzz::RecordReader copy = input;
      ClientAuth(input, /*with_keys=*/false);
      ClientAuth(copy, /*with_keys=*/true);
      break;
    }
    case 4:
      GenuineExchange(input);
      break;
    case 5:
      ScramSecret(input.Record());
      break;
  }
  return 0;
}
