// The controller's HTTP listener: the dashboard's static files from a web root and its JSON
// API under /api/ (ApiRouter). libevent's evhttp on a thread of its own; API calls can block
// (a pause waits for agents), so they run on a few worker threads and their replies are
// handed back to the event loop, which keeps serving files and polls meanwhile.
#pragma once

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "controller/http/api_router.h"
#include "controller/http/metrics_history.h"
#include "controller/registry/agent_registry.h"

namespace pgfleet::controller {

struct HttpServerOptions {
  std::string listen = "127.0.0.1:7080";  // host:port; port 0 picks a free one.
  std::string web_root;                   // Static files; empty: API only.
  int worker_threads = 4;
  // Request line and headers together; a longer head is answered 431 (our JSON error) and the
  // connection closed, as soon as it passes the limit.
  int max_header_bytes = 16 * 1024;
  // Open connections, idle ones included; one more is answered 503 and closed at once.
  int max_connections = 256;
  // Request bodies. PushConfig carries a whole pgbouncer.ini: a config reaches agents in one
  // gRPC message (4 MiB at most by default) and its JSON escaping can double it, hence 8 MiB;
  // a larger Content-Length is refused (413) before any of the body is read. Every other
  // method takes a small JSON request: at most max_body_bytes, 413 beyond it.
  int max_body_bytes = 1 << 20;
  int max_push_body_bytes = 8 << 20;
  // API requests waiting for or running on a worker; one more is answered 503 at once.
  int max_pending_requests = 64;
  // How often connected agents' newest reports are copied into the live metrics history.
  int sample_interval_ms = 500;
  // GET /metrics: the Prometheus exposition text; rendered on a worker (it reads the store).
  // Unset: /metrics is 404.
  std::function<absl::StatusOr<std::string>()> render_metrics;
  // Whether /metrics needs an operator token (any role) like the API; off by default, as
  // Prometheus scrapers seldom carry one and the listener is loopback unless told otherwise.
  bool metrics_require_token = false;
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, ApiRouter& router, MetricsHistory& metrics,
             const AgentRegistry& registry);
  ~HttpServer();  // Stop().
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts the threads; returns the bound port.
  absl::StatusOr<int> Start();
  void Stop();

 private:
  struct Job;  // One API request on its way through a worker.
  // One client connection. libevent 2.1's evhttp has no hook between a request's head and its
  // body (nor any for a new connection), so each connection's bytes are looked at as they
  // arrive, before evhttp parses them (Sniff): its first request head is checked there (size,
  // and for /api/ the token), and every reply closes the connection, so there is no second
  // head on it to miss.
  struct Connection;

  // evhttp's hooks: the bufferevent of each new connection, and the end of a connection.
  static bufferevent* NewConnection(event_base* base, void* self);
  static void OnConnectionClosed(evhttp_connection* evcon, void* connection);
  static void OnInput(evbuffer* input, const evbuffer_cb_info* info, void* connection);
  static void OnAdopt(evutil_socket_t, short, void* self);
  static void OnRefuse(evutil_socket_t, short, void* self);
  // Learns the evhttp_connection of each connection made since the last call; refuses those
  // over max_connections.
  void AdoptConnections();
  // Checks the head seen so far; false once the connection is being refused.
  void CheckHead(Connection& connection);
  // Answers `status` with ErrorJson(`why`) and closes the connection, reading nothing more.
  void Refuse(Connection& connection, int status, const absl::Status& why);
  void RefuseNow(Connection& connection);
  void ForgetConnection(Connection* connection);

  static void OnRequest(evhttp_request* request, void* self);
  static void OnJobsDone(evutil_socket_t, short, void* self);
  static void OnSampleTimer(evutil_socket_t, short, void* self);
  void HandleApi(evhttp_request* request, const std::string& path);
  void HandleMetrics(evhttp_request* request);
  void ServeFile(evhttp_request* request, const std::string& path);
  void WorkerLoop();
  void SendFinishedJobs();

  const HttpServerOptions options_;
  ApiRouter& router_;
  MetricsHistory& metrics_;
  const AgentRegistry& registry_;

  event_base* base_ = nullptr;
  evhttp* http_ = nullptr;
  event* jobs_done_event_ = nullptr;
  event* sample_timer_ = nullptr;
  int pending_requests_ = 0;  // Queued or running API requests; event loop only.
  // Open connections (event loop only), those whose evhttp_connection is not known yet, and
  // those to refuse once the current callback is over.
  std::map<Connection*, std::unique_ptr<Connection>> connections_;
  std::vector<Connection*> unadopted_;
  std::vector<Connection*> to_refuse_;
  event* adopt_event_ = nullptr;
  event* refuse_event_ = nullptr;
  std::thread loop_thread_;
  std::vector<std::thread> workers_;

  std::mutex mu_;
  std::condition_variable work_cv_;
  bool stopping_ = false;
  std::deque<std::unique_ptr<Job>> queued_;    // Waiting for a worker.
  std::deque<std::unique_ptr<Job>> finished_;  // Answered, waiting for the event loop.
};

// The Content-Type for a file name ("app.js" -> "text/javascript; charset=utf-8").
std::string ContentTypeFor(const std::string& path);

}  // namespace pgfleet::controller
