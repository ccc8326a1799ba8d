// The agent's Prometheus endpoint: GET /metrics renders pools, per-database stats and
// config limits in the text exposition format (0.0.4), GET /healthz answers "ok". Metric
// names and labels follow prometheus-community/pgbouncer_exporter where it has one, so
// dashboards and alerts written for PgBouncer keep working; pgfleet's own are pgfleet_*.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

struct evhttp;
struct evhttp_request;

namespace pgfleet::agent {

class Agent;
struct StatsSnapshot;

// Renders the agent's state in Prometheus text exposition format 0.0.4. Pure: no I/O.
// Call on the loop thread (it reads the config); pool counts and counters come from
// `snapshot` (agent.Snapshot()), the same reading SHOW POOLS and the link's report use.
std::string RenderPrometheusMetrics(const Agent& agent, const StatsSnapshot& snapshot);

// An HTTP server on the agent's loop (libevent evhttp). Serves:
//   GET /metrics  200, text/plain; version=0.0.4
//   GET /healthz  200, "ok\n"
//   other paths   404; methods other than GET (and HEAD) 405.
// Lives on the loop thread: create, use and destroy it there, before the Agent goes.
struct MetricsListenAddress {
  std::string host;  // numeric, as evhttp binds it
  int port = 0;
};

// Parses --metrics-listen: "[host:]port", "[::1]:port" for IPv6. No host (or "localhost") is
// 127.0.0.1, "*" is every IPv4 address; port 0 picks a free port.
absl::StatusOr<MetricsListenAddress> ParseMetricsListen(absl::string_view listen);

class MetricsServer {
 public:
  // Listens on the address ParseMetricsListen reads.
  // Listens on the address ParseMetricsListen reads, or serves `inherited_fd` (a listening
  // socket handed over by the old process) when >= 0; the server owns it either way.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(Agent& agent,
                                                              const std::string& listen,
                                                              int inherited_fd = -1);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }  // The bound port.
  int fd() const { return fd_; }      // The listening socket (handed over on a restart).

 private:
  explicit MetricsServer(Agent& agent) : agent_(agent) {}
  static void OnRequest(evhttp_request* request, void* arg);
  void HandleRequest(evhttp_request* request);

  Agent& agent_;
  evhttp* http_ = nullptr;
  int port_ = 0;
  int fd_ = -1;
};

}  // namespace pgfleet::agent
