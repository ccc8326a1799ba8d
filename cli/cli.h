// fleetctl internals: parsed flags, the controller connection, output helpers.
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "pgfleet/v1/fleet.grpc.pb.h"

namespace pgfleet::cli {

// Exit codes scripts can rely on (also listed in `fleetctl --help`).
enum ExitCode {
  kExitOk = 0,
  kExitError = 1,        // The controller refused or failed the operation.
  kExitUsage = 2,        // Bad flags or arguments.
  kExitUnreachable = 3,  // No controller at --controller.
  kExitAuth = 4,         // Missing/unknown token or a role that may not do this.
  kExitFailed = 5,       // The operation ran and failed on agents (NACK, command error).
};

struct Flags {
  std::vector<std::string> positional;
  std::map<std::string, std::string> values;  // --key=value or --key value
  // Every value of a flag given more than once (--overlay A --overlay B); `values` has the last.
  std::map<std::string, std::vector<std::string>> all_values;
  std::vector<std::string> GetAll(const std::string& key) const {
    auto it = all_values.find(key);
    return it == all_values.end() ? std::vector<std::string>{} : it->second;
  }
  bool Has(const std::string& key) const { return values.count(key) > 0; }
  std::string Get(const std::string& key, const std::string& fallback = "") const {
    auto it = values.find(key);
    return it == values.end() ? fallback : it->second;
  }
};

class Context {
 public:
  Context(Flags flags);
  const Flags& flags() const { return flags_; }
  bool json() const { return flags_.Get("output", "table") == "json"; }
  pgfleet::v1::FleetService::Stub& stub();
  pgfleet::v1::RolloutService::Stub& rollouts();
  pgfleet::v1::MaintenanceService::Stub& maintenance();
  pgfleet::v1::TokenService::Stub& tokens();
  pgfleet::v1::SecretsService::Stub& secrets();
  // A context with the bearer token and a deadline.
  std::unique_ptr<grpc::ClientContext> NewCall(int timeout_seconds = 30) const;
  // Prints the error and maps it to an exit code.
  int Fail(const grpc::Status& status) const;
  void PrintJson(const google::protobuf::Message& message) const;

 private:
  Flags flags_;
  std::string token_;
  std::unique_ptr<pgfleet::v1::FleetService::Stub> stub_;
  std::unique_ptr<pgfleet::v1::RolloutService::Stub> rollout_stub_;
  std::unique_ptr<pgfleet::v1::MaintenanceService::Stub> maintenance_stub_;
  std::unique_ptr<pgfleet::v1::TokenService::Stub> token_stub_;
  std::unique_ptr<pgfleet::v1::SecretsService::Stub> secrets_stub_;
  std::shared_ptr<grpc::Channel> channel_;
};

// Prints rows as an aligned table with a header.
void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows);
std::string FormatTime(int64_t unix_ms);
// The most one call to the controller carries: gRPC's default receive limit, which the
// controller keeps. fleetctl refuses a bigger push itself, with the sizes, before sending.
inline constexpr size_t kMaxRequestBytes = 4 << 20;
// A file fleetctl sends (a config, an overlay, an attachment, a PEM): read whole, or the reason
// it cannot be, naming the path ("is a directory", "larger than 4 MiB" for anything bigger
// than one call can carry, /dev/zero included).
absl::StatusOr<std::string> ReadInputFile(const std::string& path);
// The API's text fields (a config's ini text, PEMs) are protobuf strings, so UTF-8: anything
// else is refused here with the line of the first bad byte (gRPC would fail the call with an
// empty message).
absl::Status CheckUtf8Text(const std::string& path, const std::string& text);
// A unified diff of two texts, like `diff -u`.
std::string UnifiedDiff(const std::string& a, const std::string& b, const std::string& a_name,
                        const std::string& b_name);

}  // namespace pgfleet::cli
