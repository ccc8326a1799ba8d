#include "controller/grpc/leader_proxy.h"

#include <grpcpp/generic/generic_stub.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "controller/grpc/services.h"

namespace pgfleet::controller {

namespace pb = google::protobuf;

std::shared_ptr<grpc::Channel> LeaderProxy::ChannelTo(const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<grpc::Channel>& channel = channels_[address];
  if (channel == nullptr) channel = grpc::CreateChannel(address, credentials_);
  return channel;
}

absl::StatusOr<std::unique_ptr<pb::Message>> LeaderProxy::Forward(const ApiMethod& method,
                                                                  const std::string& authorization,
                                                                  const pb::Message& request) {
  const std::string leader = leadership_.leader();
  if (leader.empty() || leader == leadership_.self()) return leadership_.NotLeaderError();
  std::string bytes;
  if (!request.SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat(method.name, ": request does not serialize"));
  }
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  grpc::ClientContext context;
  context.AddMetadata("authorization", authorization);
  context.AddMetadata(kForwardedByMetadata, leadership_.self());
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::GenericStub stub(ChannelTo(leader));
  grpc::Status status;
  absl::Notification done;
  stub.UnaryCall(&context, absl::StrCat("/", method.service, "/", method.name), {}, &request_buffer,
                 &response_buffer, [&status, &done](grpc::Status result) {
                   status = std::move(result);
                   done.Notify();
                 });
  done.WaitForNotification();
  if (!status.ok()) {
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
        status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      PGF_WARN("leader", "%s not handed to the leader %s: %s", method.name, leader,
               status.error_message());
      return absl::UnavailableError(
          absl::StrCat("controller ", leadership_.self(), " is not the leader and the leader ",
                       leader, " did not answer (", status.error_message(),
                       "); a new leader is elected within the lease: retry shortly"));
    }
    return common::FromGrpcStatus(status);
  }
  std::vector<grpc::Slice> slices;
  if (!response_buffer.Dump(&slices).ok()) {
    return absl::InternalError(absl::StrCat(method.name, ": the leader's answer is unreadable"));
  }
  std::string response_bytes;
  for (const grpc::Slice& part : slices) {
    response_bytes.append(reinterpret_cast<const char*>(part.begin()), part.size());
  }
  const pb::Message* prototype =
      pb::MessageFactory::generated_factory()->GetPrototype(method.response_type);
  std::unique_ptr<pb::Message> response(prototype->New());
  if (!response->ParseFromString(response_bytes)) {
    return absl::InternalError(absl::StrCat(method.name, ": the leader's answer does not parse"));
  }
  PGF_DEBUG("leader", "%s handed to the leader %s", method.name, leader);
  return response;
}

LeaderRouting LeaderProxy::Routing() {
  LeaderRouting routing;
  routing.is_leader = [this] { return leadership_.IsLeader(); };
  routing.forward = [this](const ApiMethod& method, const std::string& authorization,
                           const pb::Message& request) {
    return Forward(method, authorization, request);
  };
  routing.not_leader = [this] { return leadership_.NotLeaderError(); };
  return routing;
}

}  // namespace pgfleet::controller
