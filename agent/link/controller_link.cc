#include "agent/link/controller_link.h"

#include <grpcpp/grpcpp.h>

#include <fstream>
#include <random>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "agent/event_loop.h"
#include "common/log.h"

namespace pgfleet::agent {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

const char* LinkStateName(LinkState state) {
  switch (state) {
    case LinkState::kConnecting:
      return "connecting";
    case LinkState::kConnected:
      return "connected";
    case LinkState::kBackoff:
      return "backoff";
    case LinkState::kStopped:
      return "stopped";
  }
  return "?";
}

ControllerLink::ControllerLink(EventLoop& loop, LinkOptions options, HelloBuilder hello,
                               MessageHandler handler)
    : loop_(loop),
      options_(std::move(options)),
      hello_(std::move(hello)),
      handler_(std::move(handler)) {
  for (absl::string_view address : absl::StrSplit(options_.controller_address, ',')) {
    address = absl::StripAsciiWhitespace(address);
    if (!address.empty()) addresses_.emplace_back(address);
  }
  if (addresses_.empty()) addresses_.push_back(options_.controller_address);
}

ControllerLink::~ControllerLink() { Stop(); }

void ControllerLink::Start() {
  thread_ = std::thread([this] { Run(); });
}

void ControllerLink::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    if (active_context_ != nullptr) static_cast<grpc::ClientContext*>(active_context_)->TryCancel();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  state_ = LinkState::kStopped;
}

void ControllerLink::HoldReconnects(bool hold) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    hold_reconnects_ = hold;
  }
  cv_.notify_all();
}

void ControllerLink::Send(pgfleet::v1::AgentMessage message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stream_open_) return;
    // A controller that stopped reading must not make the agent grow without bound.
    if (outbox_.size() >= 1000) outbox_.pop_front();
    outbox_.push_back(std::move(message));
  }
  cv_.notify_all();
}

void ControllerLink::SleepBackoff(absl::Duration delay) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoMilliseconds(delay), [this] { return stopping_; });
}

std::string ControllerLink::current_address() const {
  return addresses_.empty() ? "" : addresses_[current_.load() % addresses_.size()];
}

void ControllerLink::Run() {
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (!options_.cert_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(options_.ca_file);
    ssl.pem_cert_chain = ReadFile(options_.cert_file);
    ssl.pem_private_key = ReadFile(options_.key_file);
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  // The link manages its own reconnects; keepalives notice a dead controller quickly.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // One channel per controller address, each verifying its own host name under TLS.
  std::vector<std::unique_ptr<pgfleet::v1::AgentService::Stub>> stubs;
  for (const std::string& address : addresses_) {
    stubs.push_back(
        pgfleet::v1::AgentService::NewStub(grpc::CreateCustomChannel(address, credentials, args)));
  }

  std::mt19937_64 rng(std::random_device{}());
  absl::Duration backoff = options_.initial_backoff;
  size_t failed_in_a_row = 0;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) break;
    }
    state_ = LinkState::kConnecting;
    const absl::Time started = absl::Now();
    const size_t index = current_.load() % addresses_.size();
    const bool connected = RunStream(*stubs[index], addresses_[index]);
    {
      // During a hand-over the new process's stream supersedes this one: reconnecting would
      // supersede it back. Wait until the hand-over failed (released) or the link stops.
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !hold_reconnects_; });
      if (stopping_) break;
    }
    // A stream that lived a while resets the backoff: the controller was healthy.
    if (absl::Now() - started > absl::Seconds(30)) backoff = options_.initial_backoff;
    failed_in_a_row = connected ? 0 : failed_in_a_row + 1;
    // With several controllers, the next one is tried at once; the backoff applies once a
    // whole round of them failed (and to the one that just dropped a stream it had).
    const bool try_next_now =
        addresses_.size() > 1 && !connected && failed_in_a_row % addresses_.size() != 0;
    if (addresses_.size() > 1) current_.store((index + 1) % addresses_.size());
    if (try_next_now) {
      PGF_INFO("link", "controller %s unreachable; trying %s", addresses_[index],
               current_address());
      continue;
    }
    // Full jitter: a restarted controller is not hit by the whole fleet at once.
    std::uniform_real_distribution<double> jitter(0.5, 1.0);
    absl::Duration delay = backoff * jitter(rng);
    state_ = LinkState::kBackoff;
    PGF_INFO("link", "controller %s unreachable or stream closed; retrying in %s%s",
             addresses_[index], absl::FormatDuration(delay),
             addresses_.size() > 1 ? absl::StrCat(" with ", current_address()) : "");
    SleepBackoff(delay);
    backoff = std::min(backoff * 2, options_.max_backoff);
  }
  state_ = LinkState::kStopped;
}

bool ControllerLink::RunStream(pgfleet::v1::AgentService::Stub& stub, const std::string& address) {
  grpc::ClientContext context;
  if (!options_.join_token_file.empty()) {
    const std::string token(absl::StripAsciiWhitespace(ReadFile(options_.join_token_file)));
    if (token.empty()) {
      PGF_WARN("link", "join token file %s is missing or empty: connecting without a token",
               options_.join_token_file);
    } else {
      context.AddMetadata("authorization", "Bearer " + token);
    }
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    active_context_ = &context;
  }
  std::unique_ptr<
      grpc::ClientReaderWriter<pgfleet::v1::AgentMessage, pgfleet::v1::ControllerMessage>>
      stream = stub.Connect(&context);
  pgfleet::v1::AgentMessage hello;
  *hello.mutable_hello() = hello_();
  bool ok = stream->Write(hello);
  pgfleet::v1::ControllerMessage first;
  ok = ok && stream->Read(&first);
  if (ok) {
    state_ = LinkState::kConnected;
    connects_++;
    PGF_INFO("link", "connected to controller %s as %s (env %s)", address, options_.agent_id,
             options_.environment);
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream_open_ = true;
      outbox_.clear();
    }
    loop_.Post([this, message = std::move(first)]() mutable { handler_(std::move(message)); });

    // The writer drains the outbox while this thread reads; gRPC allows one of each at once.
    std::thread writer([&] {
      std::unique_lock<std::mutex> lock(mu_);
      while (true) {
        cv_.wait(lock, [&] { return stopping_ || !stream_open_ || !outbox_.empty(); });
        if (stopping_ || !stream_open_) break;
        pgfleet::v1::AgentMessage message = std::move(outbox_.front());
        outbox_.pop_front();
        lock.unlock();
        bool written = stream->Write(message);
        lock.lock();
        if (!written) break;
      }
    });
    pgfleet::v1::ControllerMessage message;
    while (stream->Read(&message)) {
      loop_.Post([this, message]() mutable { handler_(std::move(message)); });
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      stream_open_ = false;
      outbox_.clear();
    }
    cv_.notify_all();
    context.TryCancel();
    writer.join();
  }
  grpc::Status status = stream->Finish();
  {
    std::lock_guard<std::mutex> lock(mu_);
    active_context_ = nullptr;
  }
  if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED ||
      status.error_code() == grpc::StatusCode::PERMISSION_DENIED ||
      status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
    // Retrying will not help until someone fixes the token, the certificate or the agent's
    // flags (an invalid --labels): say so plainly.
    PGF_ERROR("link", "controller %s refused this agent: %s", address, status.error_message());
  } else if (!status.ok()) {
    PGF_WARN("link", "controller %s: stream ended: %s (%d)", address, status.error_message(),
             static_cast<int>(status.error_code()));
  }
  return ok;
}

}  // namespace pgfleet::agent
