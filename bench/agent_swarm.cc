// agent_swarm: one process playing N pgfleet agents against a controller, for the controller
// scale benchmark (bench/controller_scale.sh). Each simulated agent opens its own
// AgentService.Connect stream and behaves like pgfleet-agent's link (agent/link/):
//  * hello first (agent id, environment, labels, the config version it last applied);
//  * a MetricsReport right after the HelloAck, then every metrics_interval_seconds the
//    controller asked for, with pools and per-database totals like a small real pooler;
//  * an ACK with version and sha256 for every DesiredConfig, a CommandResult for every command;
//  * on a broken stream, a reconnect after a jittered backoff, saying hello again.
// No pooling happens: the point is the controller's cost per agent, not the agent's.
//
// The agents share a few threads: gRPC's callback API runs the streams, one ticker thread
// sends reports and starts (re)connects, the main thread writes the status file. Agents are
// spread over --agents-per-connection (1 by default, one TCP connection per agent as in a
// real fleet).
//
//   agent_swarm --controller=127.0.0.1:7070 [--agents=1000] [--env=scale]
//   (up to 10,000 agents and more: it raises its open-file limit to the hard limit and refuses
//   to start when that is below one descriptor per connection)
//               [--status-file=FILE] [--duration=SECONDS]
//
// --status-file is rewritten (atomically) every second with JSON counters: how many agents
// are connected, reports sent, and per config version how many agents received and ACKed it
// and when the first arrived and the last ACK left. SIGINT/SIGTERM end the swarm.
#include <grpcpp/grpcpp.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "pgfleet/v1/agent.grpc.pb.h"

namespace pgfleet::bench {
namespace {

using pgfleet::v1::AgentMessage;
using pgfleet::v1::ControllerMessage;

struct Options {
  std::string controller;
  int agents = 1000;
  std::string environment = "scale";
  std::string id_prefix = "swarm-";
  int agents_per_connection = 1;
  double connect_rate = 500;  // New streams per second while ramping up.
  int databases = 3;          // Per simulated agent, each with `users` pools.
  int users = 2;
  std::string status_file;
  int duration_seconds = 0;  // 0: until SIGINT/SIGTERM.
};

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr);
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 15]);
  }
  return hex;
}

int64_t NowMs() { return absl::ToUnixMillis(absl::Now()); }

// What the swarm as a whole has done; read by the status writer.
struct Counters {
  std::atomic<int> connected{0};  // Streams that got their HelloAck and are still open.
  std::atomic<uint64_t> streams_started{0};
  std::atomic<uint64_t> streams_ended{0};
  std::atomic<uint64_t> hello_acks{0};
  std::atomic<uint64_t> reports_sent{0};
  std::atomic<uint64_t> report_bytes{0};
  std::atomic<uint64_t> commands{0};

  struct VersionStats {
    int received = 0;  // DesiredConfig messages for this version.
    int acked = 0;
    int64_t first_received_ms = 0;
    int64_t last_acked_ms = 0;
  };
  std::mutex versions_mu;
  std::map<uint64_t, VersionStats> versions;  // Guarded by versions_mu.

  void ConfigReceived(uint64_t version) {
    std::lock_guard<std::mutex> lock(versions_mu);
    VersionStats& stats = versions[version];
    if (stats.received++ == 0) stats.first_received_ms = NowMs();
  }
  void ConfigAcked(uint64_t version) {
    std::lock_guard<std::mutex> lock(versions_mu);
    VersionStats& stats = versions[version];
    ++stats.acked;
    stats.last_acked_ms = NowMs();
  }
};

class AgentStream;

// One simulated agent: identity, what it has applied, and its pool statistics. Its stream
// comes and goes; the agent outlives them.
struct SimAgent {
  int index = 0;
  std::string agent_id;
  pgfleet::v1::AgentService::Stub* stub = nullptr;

  std::mutex mu;
  std::shared_ptr<AgentStream> stream;  // Null between streams. Guarded by mu.
  absl::Time connect_at;                // When to (re)connect if stream is null. Guarded by mu.
  absl::Duration backoff = absl::Milliseconds(250);  // Guarded by mu.
  absl::Duration interval = absl::ZeroDuration();    // Zero until HelloAck. Guarded by mu.
  absl::Time next_report;                            // Guarded by mu.
  uint64_t applied_version = 0;                      // Guarded by mu.
  std::string applied_sha256;                        // Guarded by mu.

  // Monotonic totals reported as SHOW STATS_TOTALS; touched only by the ticker thread.
  std::vector<pgfleet::v1::DatabaseStats> totals;
  std::mt19937 rng;
};

class Swarm;

// One AgentService.Connect call, driven by gRPC's callback API. gRPC may run a reaction
// inline in the thread that starts an operation, so no lock is held while calling
// StartWrite/RemoveHold. A hold keeps the call alive while the ticker may still write; it is
// dropped once reads have ended and no write is in flight, and OnDone then ends the object.
class AgentStream final : public grpc::ClientBidiReactor<AgentMessage, ControllerMessage> {
 public:
  AgentStream(Swarm& swarm, SimAgent& agent) : swarm_(swarm), agent_(agent) {}

  void Start(std::shared_ptr<AgentStream> self, AgentMessage hello);
  // Queues a message; false once the stream is closing.
  bool Send(AgentMessage message);
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  void Handle(const ControllerMessage& message);
  void ReleaseHoldIfIdle(std::unique_lock<std::mutex>& lock);

  Swarm& swarm_;
  SimAgent& agent_;
  grpc::ClientContext context_;
  std::shared_ptr<AgentStream> self_;  // Keeps the reactor alive until OnDone.
  ControllerMessage incoming_;
  bool established_ = false;  // HelloAck seen; only the reading thread touches it.

  std::mutex mu_;
  bool open_ = true;                 // Reads still going. Guarded by mu_.
  bool writing_ = false;             // A StartWrite is in flight (or about to be). Guarded by mu_.
  bool hold_released_ = false;       // Guarded by mu_.
  std::deque<AgentMessage> outbox_;  // Guarded by mu_.
  AgentMessage in_flight_;           // Owned by whoever set writing_.
};

class Swarm {
 public:
  explicit Swarm(Options options) : options_(std::move(options)) {}

  void Run();
  Counters& counters() { return counters_; }
  const Options& options() const { return options_; }
  // Called by a stream as it ends.
  void StreamEnded(SimAgent& agent, const AgentStream* stream, bool was_established,
                   const grpc::Status& status);

 private:
  void Connect(SimAgent& agent);
  void Tick();  // The ticker thread's loop.
  AgentMessage BuildHello(SimAgent& agent);
  AgentMessage BuildReport(SimAgent& agent);
  void WriteStatus(absl::Time started);

  Options options_;
  Counters counters_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<pgfleet::v1::AgentService::Stub>> stubs_;
  std::vector<std::unique_ptr<SimAgent>> agents_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> failures_logged_{0};
};

void AgentStream::Start(std::shared_ptr<AgentStream> self, AgentMessage hello) {
  self_ = std::move(self);
  agent_.stub->async()->Connect(&context_, this);
  AddHold();
  StartRead(&incoming_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = true;
    in_flight_ = std::move(hello);
  }
  StartWrite(&in_flight_);
  StartCall();
}

bool AgentStream::Send(AgentMessage message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!open_) return false;
    if (writing_) {
      // A controller that stopped reading must not make the swarm grow without bound.
      if (outbox_.size() >= 1000) outbox_.pop_front();
      outbox_.push_back(std::move(message));
      return true;
    }
    writing_ = true;
    in_flight_ = std::move(message);
  }
  StartWrite(&in_flight_);
  return true;
}

void AgentStream::OnWriteDone(bool ok) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!ok || !open_ || outbox_.empty()) {
    writing_ = false;
    if (!ok) outbox_.clear();
    ReleaseHoldIfIdle(lock);
    return;
  }
  in_flight_ = std::move(outbox_.front());
  outbox_.pop_front();
  lock.unlock();
  StartWrite(&in_flight_);
}

void AgentStream::ReleaseHoldIfIdle(std::unique_lock<std::mutex>& lock) {
  if (open_ || writing_ || hold_released_) return;
  hold_released_ = true;
  lock.unlock();
  RemoveHold();
}

void AgentStream::OnReadDone(bool ok) {
  if (ok) {
    Handle(incoming_);
    StartRead(&incoming_);
    return;
  }
  // The controller ended the stream (or it broke): a pending write must not wait forever.
  context_.TryCancel();
  std::unique_lock<std::mutex> lock(mu_);
  open_ = false;
  outbox_.clear();
  ReleaseHoldIfIdle(lock);
}

void AgentStream::OnDone(const grpc::Status& status) {
  std::shared_ptr<AgentStream> keep_alive = std::move(self_);
  swarm_.StreamEnded(agent_, this, established_, status);
}

void AgentStream::Handle(const ControllerMessage& message) {
  Counters& counters = swarm_.counters();
  switch (message.body_case()) {
    case ControllerMessage::kHelloAck: {
      const int seconds = std::max(1, message.hello_ack().metrics_interval_seconds());
      if (!established_) {
        established_ = true;
        counters.connected++;
        counters.hello_acks++;
      }
      std::lock_guard<std::mutex> lock(agent_.mu);
      agent_.interval = absl::Seconds(seconds);
      agent_.next_report = absl::Now();  // Like the agent: one report right away.
      agent_.backoff = absl::Milliseconds(250);
      break;
    }
    case ControllerMessage::kDesiredConfig: {
      const pgfleet::v1::DesiredConfig& desired = message.desired_config();
      counters.ConfigReceived(desired.version());
      AgentMessage reply;
      pgfleet::v1::ConfigResult* result = reply.mutable_config_result();
      result->set_version(desired.version());
      const std::string sha256 = Sha256Hex(desired.ini_text());
      result->set_sha256(sha256);
      if (!desired.sha256().empty() && desired.sha256() != sha256) {
        result->set_accepted(false);
        result->set_error("sha256 mismatch");
      } else {
        result->set_accepted(true);
        std::lock_guard<std::mutex> lock(agent_.mu);
        agent_.applied_version = desired.version();
        agent_.applied_sha256 = sha256;
      }
      const bool accepted = result->accepted();
      if (Send(std::move(reply)) && accepted) counters.ConfigAcked(desired.version());
      break;
    }
    case ControllerMessage::kCommand: {
      counters.commands++;
      AgentMessage reply;
      reply.mutable_command_result()->set_command_id(message.command().command_id());
      reply.mutable_command_result()->set_ok(true);
      Send(std::move(reply));
      break;
    }
    case ControllerMessage::BODY_NOT_SET:
      break;
  }
}

void Swarm::StreamEnded(SimAgent& agent, const AgentStream* stream, bool was_established,
                        const grpc::Status& status) {
  counters_.streams_ended++;
  if (was_established) counters_.connected--;
  if (!stopping_ && failures_logged_.fetch_add(1) < 20) {
    fprintf(stderr, "agent_swarm: %s stream ended: %s (%d)\n", agent.agent_id.c_str(),
            status.error_message().c_str(), static_cast<int>(status.error_code()));
  }
  std::lock_guard<std::mutex> lock(agent.mu);
  if (agent.stream.get() == stream) agent.stream.reset();
  agent.interval = absl::ZeroDuration();
  // Full jitter, as the real link does: a restarted controller is not hit all at once.
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  agent.connect_at = absl::Now() + agent.backoff * jitter(agent.rng);
  agent.backoff = std::min(agent.backoff * 2, absl::Seconds(15));
}

AgentMessage Swarm::BuildHello(SimAgent& agent) {
  AgentMessage message;
  pgfleet::v1::AgentHello* hello = message.mutable_hello();
  hello->set_agent_id(agent.agent_id);
  hello->set_environment(options_.environment);
  (*hello->mutable_labels())["zone"] = absl::StrCat("zone-", agent.index % 3);
  (*hello->mutable_labels())["role"] = "app";
  hello->set_agent_version("0.1.0-swarm");
  {
    std::lock_guard<std::mutex> lock(agent.mu);
    hello->set_applied_config_version(agent.applied_version);
    hello->set_applied_config_sha256(agent.applied_sha256);
  }
  hello->set_hostname(absl::StrCat("app-host-", agent.index));
  hello->set_listen_port(6432);
  return message;
}

// A report the size and shape of a small production pooler's: databases x users pools with
// a little traffic, and STATS_TOTALS counters that keep growing.
AgentMessage Swarm::BuildReport(SimAgent& agent) {
  AgentMessage message;
  pgfleet::v1::MetricsReport* report = message.mutable_metrics();
  report->set_timestamp_unix_ms(NowMs());
  std::uniform_int_distribution<int> small(0, 8);
  int clients = 0;
  for (int db = 0; db < options_.databases; ++db) {
    const std::string database = absl::StrCat("appdb_", db);
    for (int user = 0; user < options_.users; ++user) {
      pgfleet::v1::PoolMetrics* pool = report->add_pools();
      pool->set_database(database);
      pool->set_user(absl::StrCat("app_user_", user));
      pool->set_pool_mode("transaction");
      const int active = 10 + small(agent.rng);
      clients += active;
      pool->set_cl_active(active);
      pool->set_cl_waiting(0);
      pool->set_sv_active(small(agent.rng));
      pool->set_sv_idle(4 + small(agent.rng));
      pool->set_sv_used(small(agent.rng) / 4);
      pool->set_sv_login(0);
      pool->set_maxwait_us(0);
    }
    pgfleet::v1::DatabaseStats& totals = agent.totals[static_cast<size_t>(db)];
    const uint64_t xacts = 200 + static_cast<uint64_t>(small(agent.rng)) * 50;
    totals.set_database(database);
    totals.set_xact_count(totals.xact_count() + xacts);
    totals.set_query_count(totals.query_count() + xacts * 3);
    totals.set_bytes_received(totals.bytes_received() + xacts * 420);
    totals.set_bytes_sent(totals.bytes_sent() + xacts * 1900);
    totals.set_xact_time_us(totals.xact_time_us() + xacts * 1100);
    totals.set_query_time_us(totals.query_time_us() + xacts * 900);
    totals.set_wait_time_us(totals.wait_time_us() + xacts * 3);
    *report->add_databases() = totals;
  }
  report->set_client_count(clients);
  report->set_suspended(false);
  return message;
}

void Swarm::Connect(SimAgent& agent) {
  auto stream = std::make_shared<AgentStream>(*this, agent);
  {
    std::lock_guard<std::mutex> lock(agent.mu);
    agent.stream = stream;
    agent.interval = absl::ZeroDuration();
  }
  counters_.streams_started++;
  AgentMessage hello = BuildHello(agent);
  stream->Start(stream, std::move(hello));
}

void Swarm::Tick() {
  while (!stopping_) {
    const absl::Time now = absl::Now();
    for (const std::unique_ptr<SimAgent>& agent : agents_) {
      if (stopping_) break;
      std::shared_ptr<AgentStream> stream;
      bool report_due = false, connect_due = false;
      {
        std::lock_guard<std::mutex> lock(agent->mu);
        if (agent->stream == nullptr) {
          connect_due = now >= agent->connect_at;
        } else if (agent->interval > absl::ZeroDuration() && now >= agent->next_report) {
          report_due = true;
          stream = agent->stream;
          agent->next_report += agent->interval;
          // Fell behind (a stall): keep the cadence instead of sending a burst.
          if (agent->next_report < now) agent->next_report = now + agent->interval;
        }
      }
      if (connect_due) Connect(*agent);
      if (report_due) {
        AgentMessage report = BuildReport(*agent);
        const size_t bytes = report.ByteSizeLong();
        if (stream->Send(std::move(report))) {
          counters_.reports_sent++;
          counters_.report_bytes += bytes;
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void Swarm::WriteStatus(absl::Time started) {
  if (options_.status_file.empty()) return;
  std::vector<std::string> versions;
  {
    std::lock_guard<std::mutex> lock(counters_.versions_mu);
    for (const auto& [version, stats] : counters_.versions) {
      versions.push_back(absl::StrFormat(
          "\"%d\": {\"received\": %d, \"acked\": %d, \"first_received_ms\": %d, "
          "\"last_acked_ms\": %d}",
          version, stats.received, stats.acked, stats.first_received_ms, stats.last_acked_ms));
    }
  }
  const std::string json = absl::StrFormat(
      "{\"time_ms\": %d, \"uptime_s\": %.1f, \"agents\": %d, \"connected\": %d, "
      "\"streams_started\": %d, \"streams_ended\": %d, \"hello_acks\": %d, "
      "\"reports_sent\": %d, \"report_bytes\": %d, \"commands\": %d, \"versions\": {%s}}\n",
      NowMs(), absl::ToDoubleSeconds(absl::Now() - started), options_.agents,
      counters_.connected.load(), counters_.streams_started.load(), counters_.streams_ended.load(),
      counters_.hello_acks.load(), counters_.reports_sent.load(), counters_.report_bytes.load(),
      counters_.commands.load(), absl::StrJoin(versions, ", "));
  const std::string temp = options_.status_file + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << json;
  }
  rename(temp.c_str(), options_.status_file.c_str());
}

void Swarm::Run() {
  // Signals are taken by the main thread with sigtimedwait; blocked before gRPC starts threads.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const int connections =
      (options_.agents + options_.agents_per_connection - 1) / options_.agents_per_connection;
  for (int i = 0; i < connections; ++i) {
    grpc::ChannelArguments args;
    // The same keepalive settings as the real agent's link.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    // Channels with equal arguments would share one TCP connection through gRPC's global
    // subchannel pool; real agents each have their own.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("pgfleet.swarm_connection", i);
    channels_.push_back(
        grpc::CreateCustomChannel(options_.controller, grpc::InsecureChannelCredentials(), args));
    stubs_.push_back(pgfleet::v1::AgentService::NewStub(channels_.back()));
  }
  const absl::Time started = absl::Now();
  for (int i = 0; i < options_.agents; ++i) {
    auto agent = std::make_unique<SimAgent>();
    agent->index = i;
    agent->agent_id = absl::StrFormat("%s%04d", options_.id_prefix, i);
    agent->stub = stubs_[static_cast<size_t>(i / options_.agents_per_connection)].get();
    agent->connect_at = started + absl::Seconds(i / options_.connect_rate);
    agent->rng.seed(static_cast<unsigned>(i) * 7919u + 1);
    agent->totals.resize(static_cast<size_t>(options_.databases));
    agents_.push_back(std::move(agent));
  }
  fprintf(stderr, "agent_swarm: %d agents in environment %s -> %s over %d connections\n",
          options_.agents, options_.environment.c_str(), options_.controller.c_str(), connections);
  std::thread ticker([this] { Tick(); });

  int last_connected = -1;
  while (true) {
    timespec wait{1, 0};
    const int sig = sigtimedwait(&signals, nullptr, &wait);
    WriteStatus(started);
    const int connected = counters_.connected.load();
    if (connected != last_connected) {
      fprintf(stderr, "agent_swarm: %d/%d agents connected, %llu reports sent\n", connected,
              options_.agents, static_cast<unsigned long long>(counters_.reports_sent.load()));
      last_connected = connected;
    }
    if (sig == SIGINT || sig == SIGTERM) break;
    if (options_.duration_seconds > 0 &&
        absl::Now() - started >= absl::Seconds(options_.duration_seconds)) {
      break;
    }
  }
  stopping_ = true;
  ticker.join();
  for (const std::unique_ptr<SimAgent>& agent : agents_) {
    std::shared_ptr<AgentStream> stream;
    {
      std::lock_guard<std::mutex> lock(agent->mu);
      stream = agent->stream;
    }
    if (stream != nullptr) stream->Cancel();
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  while (counters_.streams_ended.load() < counters_.streams_started.load() &&
         absl::Now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  WriteStatus(started);
  fprintf(stderr, "agent_swarm: stopped after %llu reports\n",
          static_cast<unsigned long long>(counters_.reports_sent.load()));
  if (counters_.streams_ended.load() < counters_.streams_started.load()) {
    // Streams still open would be torn down under gRPC's feet by destructors.
    fflush(nullptr);
    _exit(0);
  }
}

bool ParseFlag(const std::string& arg, const char* name, std::string* value) {
  const std::string prefix = absl::StrCat("--", name, "=");
  if (arg.rfind(prefix, 0) != 0) return false;
  *value = arg.substr(prefix.size());
  return true;
}

void Usage(FILE* out) {
  fprintf(out,
          "Usage: agent_swarm --controller=HOST:PORT [options]\n"
          "  --agents=N                 simulated agents (default 1000)\n"
          "  --env=NAME                 their environment (default scale)\n"
          "  --id-prefix=P              agent ids are P0000, P0001... (default swarm-)\n"
          "  --agents-per-connection=K  streams per TCP connection (default 1)\n"
          "  --connect-rate=R           new streams per second while ramping up (default 500)\n"
          "  --databases=D --users=U    pools per report: D x U (default 3 x 2)\n"
          "  --status-file=FILE         JSON counters, rewritten every second\n"
          "  --duration=SECONDS         stop after this long (default: at SIGINT/SIGTERM)\n");
}

int Main(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    std::string value;
    bool ok = true;
    if (arg == "-h" || arg == "--help") {
      Usage(stdout);
      return 0;
    } else if (ParseFlag(arg, "controller", &value)) {
      options.controller = value;
    } else if (ParseFlag(arg, "agents", &value)) {
      ok = absl::SimpleAtoi(value, &options.agents) && options.agents > 0;
    } else if (ParseFlag(arg, "env", &value)) {
      options.environment = value;
    } else if (ParseFlag(arg, "id-prefix", &value)) {
      options.id_prefix = value;
    } else if (ParseFlag(arg, "agents-per-connection", &value)) {
      ok = absl::SimpleAtoi(value, &options.agents_per_connection) &&
           options.agents_per_connection > 0;
    } else if (ParseFlag(arg, "connect-rate", &value)) {
      ok = absl::SimpleAtod(value, &options.connect_rate) && options.connect_rate > 0;
    } else if (ParseFlag(arg, "databases", &value)) {
      ok = absl::SimpleAtoi(value, &options.databases) && options.databases >= 0;
    } else if (ParseFlag(arg, "users", &value)) {
      ok = absl::SimpleAtoi(value, &options.users) && options.users >= 0;
    } else if (ParseFlag(arg, "status-file", &value)) {
      options.status_file = value;
    } else if (ParseFlag(arg, "duration", &value)) {
      ok = absl::SimpleAtoi(value, &options.duration_seconds) && options.duration_seconds >= 0;
    } else {
      ok = false;
    }
    if (!ok) {
      fprintf(stderr, "agent_swarm: bad argument %s\n\n", arg.c_str());
      Usage(stderr);
      return 2;
    }
  }
  if (options.controller.empty()) {
    Usage(stderr);
    return 2;
  }
  // One socket per connection plus gRPC's own descriptors: raise the soft limit to the hard one.
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  // 10,000 agents need 10,000 sockets: say so up front rather than fail agents at random.
  const rlim_t needed = static_cast<rlim_t>(
      (options.agents + options.agents_per_connection - 1) / options.agents_per_connection + 100);
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
      limit.rlim_cur < needed) {
    fprintf(stderr,
            "agent_swarm: %d connections need about %llu open files, the limit is %llu "
            "(raise the hard limit: ulimit -Hn, or use --agents-per-connection)\n",
            (options.agents + options.agents_per_connection - 1) / options.agents_per_connection,
            static_cast<unsigned long long>(needed),
            static_cast<unsigned long long>(limit.rlim_cur));
    return 1;
  }
  Swarm swarm(std::move(options));
  swarm.Run();
  return 0;
}

}  // namespace
}  // namespace pgfleet::bench

int main(int argc, char** argv) { return pgfleet::bench::Main(argc, argv); }
