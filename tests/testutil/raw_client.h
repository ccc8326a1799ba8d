// A blocking TCP client that speaks (or deliberately mis-speaks) the PostgreSQL wire protocol,
// for tests that feed the agent bad input and inspect exactly what comes back.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pgfleet::testutil {

inline constexpr int32_t kProtocolV3 = 196608;  // 3.0
inline constexpr int32_t kSslRequestCode = 80877103;
inline constexpr int32_t kGssEncRequestCode = 80877104;
inline constexpr int32_t kCancelRequestCode = 80877102;

struct BackendMessage {
  char type = 0;
  std::string body;  // Without type byte and length.
};

struct ErrorFields {
  std::string severity;  // 'S' (localized) or 'V'
  std::string code;      // 'C'
  std::string message;   // 'M'
  std::map<char, std::string> all;
  std::string ToString() const;  // "FATAL 28P01: password authentication failed ..."
};

// Parses the body of an ErrorResponse / NoticeResponse.
absl::StatusOr<ErrorFields> ParseErrorResponse(std::string_view body);
// Splits a byte string into complete backend messages; a trailing partial message is dropped.
std::vector<BackendMessage> SplitMessages(std::string_view bytes);
// Finds and parses the first ErrorResponse in a byte stream, if any.
std::optional<ErrorFields> FirstError(std::string_view bytes);

std::string BigEndian32(uint32_t value);
uint32_t ReadBigEndian32(std::string_view bytes);  // First 4 bytes.
// Startup packet: int32 length, int32 protocol, key\0value\0...\0.
std::string StartupPacket(const std::vector<std::pair<std::string, std::string>>& params,
                          int32_t protocol = kProtocolV3);
// A typed frontend message: type, int32 length, body.
std::string FrontendMessage(char type, std::string_view body);
std::string QueryMessage(std::string_view sql);

// What happened during Login().
struct LoginResult {
  bool ok = false;                     // Reached ReadyForQuery.
  std::vector<int32_t> auth_requests;  // Authentication codes seen (0 ok, 3 clear, 5 md5, 10 SASL).
  std::vector<std::string> sasl_mechanisms;
  std::optional<ErrorFields> error;               // The ErrorResponse that ended the login.
  std::map<std::string, std::string> parameters;  // ParameterStatus.
  bool got_backend_key = false;
  int32_t backend_pid = 0;
  int32_t backend_secret = 0;
};

class RawClient {
 public:
  static absl::StatusOr<std::unique_ptr<RawClient>> Connect(
      int port, absl::Duration timeout = absl::Seconds(5));
  ~RawClient();

  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  int fd() const { return fd_; }

  absl::Status Send(std::string_view bytes);
  // Half-close: the peer sees EOF, we can still read.
  absl::Status ShutdownWrite();
  // Closes with a TCP RST (SO_LINGER 0).
  void CloseWithReset();
  void Close();

  // Exactly n bytes. Errors: DeadlineExceeded on timeout, Unavailable if the peer closed or
  // reset the connection (bytes read so far are lost).
  absl::StatusOr<std::string> ReadExactly(size_t n, absl::Duration timeout);
  // One backend message (type, int32 length, body).
  absl::StatusOr<BackendMessage> ReadMessage(absl::Duration timeout);
  // Everything until the peer closes (EOF or reset). DeadlineExceeded if still open.
  absl::StatusOr<std::string> ReadUntilClose(absl::Duration timeout);

  // Sends a v3 startup packet for user/database and answers cleartext or md5 password
  // requests with `password`. For SASL (SCRAM) it can only fail: with `scram_garbage_proof`
  // it sends a well-formed exchange with a wrong proof; otherwise it stops and returns
  // Unimplemented. Reads until ReadyForQuery or ErrorResponse.
  absl::StatusOr<LoginResult> Login(const std::string& user, const std::string& database,
                                    const std::string& password,
                                    absl::Duration timeout = absl::Seconds(10),
                                    bool scram_garbage_proof = false);
  // Sends a simple Query and returns every message up to and including ReadyForQuery.
  absl::StatusOr<std::vector<BackendMessage>> SimpleQuery(
      const std::string& sql, absl::Duration timeout = absl::Seconds(10));

 private:
  explicit RawClient(int fd) : fd_(fd) {}
  // Reads at least one more byte into buffer_.
  absl::Status Fill(absl::Time deadline);

  int fd_ = -1;
  std::string buffer_;
};

}  // namespace pgfleet::testutil
