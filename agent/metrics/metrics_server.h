// The agent's Prometheus endpoint: GET /metrics renders pools, per-database stats and
// config limits in the text exposition format (0.0.4), GET /healthz answers "ok". Metric
// names and labels follow prometheus-community/pgbouncer_exporter where it has one, so
// dashboards and alerts written for PgBouncer keep working; pgfleet's own are pgfleet_*.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

struct evhttp;
struct evhttp_request;

namespace pgfleet::agent {

class Agent;

// Renders the agent's state in Prometheus text exposition format 0.0.4. Pure: no I/O.
// Call on the loop thread (it reads the pools). `now_us` is MonotonicMicros() (maxwait).
std::string RenderPrometheusMetrics(const Agent& agent, uint64_t now_us);

// An HTTP server on the agent's loop (libevent evhttp). Serves:
//   GET /metrics  200, text/plain; version=0.0.4
//   GET /healthz  200, "ok\n"
//   other paths   404; methods other than GET (and HEAD) 405.
// Lives on the loop thread: create, use and destroy it there, before the Agent goes.
class MetricsServer {
 public:
  // Listens on "host:port" ("[::1]:port" for IPv6; empty host or "*" = all IPv4
  // addresses); port 0 picks a free port.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(Agent& agent,
                                                              const std::string& listen);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  int port() const { return port_; }  // The bound port.

 private:
  explicit MetricsServer(Agent& agent) : agent_(agent) {}
  static void OnRequest(evhttp_request* request, void* arg);
  void HandleRequest(evhttp_request* request);

  Agent& agent_;
  evhttp* http_ = nullptr;
  int port_ = 0;
};

}  // namespace pgfleet::agent
