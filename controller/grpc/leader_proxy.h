// A follower's way to the leader (several controllers on one store): a write that reaches a
// follower, on either wire, is sent on to the leader over gRPC with the caller's own bearer
// token, and the leader's answer is returned as if the follower had served it. No leader known,
// or the leader not answering (it just died; a new one is elected within the lease): UNAVAILABLE
// naming the leader, which fleetctl reports as retryable.
#pragma once

#include <grpcpp/grpcpp.h>

#include <map>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "controller/api/control_api.h"
#include "controller/leader/leadership.h"

namespace pgfleet::controller {

class LeaderProxy {
 public:
  // `credentials`: how this controller reaches the others (TLS with --tls-ca, or plaintext).
  LeaderProxy(const Leadership& leadership, std::shared_ptr<grpc::ChannelCredentials> credentials)
      : leadership_(leadership), credentials_(std::move(credentials)) {}

  absl::StatusOr<std::unique_ptr<google::protobuf::Message>> Forward(
      const ApiMethod& method, const std::string& authorization,
      const google::protobuf::Message& request);

  // The ControlApi's routing: leader checks and forwarding through this proxy.
  LeaderRouting Routing();

 private:
  std::shared_ptr<grpc::Channel> ChannelTo(const std::string& address);

  const Leadership& leadership_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pgfleet::controller
