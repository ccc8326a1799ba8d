// The controller's HTTP listener: the dashboard's static files from a web root and its JSON
// API under /api/ (ApiRouter). libevent's evhttp on a thread of its own; API calls can block
// (a pause waits for agents), so they run on a few worker threads and their replies are
// handed back to the event loop, which keeps serving files and polls meanwhile.
#pragma once

#include <event2/event.h>
#include <event2/http.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
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
  // Request line and headers together. libevent 2.1 answers a longer head with 400 and closes
  // the connection (it has no hook to say 431).
  int max_header_bytes = 16 * 1024;
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

  static void OnRequest(evhttp_request* request, void* self);
  static void OnJobsDone(evutil_socket_t, short, void* self);
  static void OnSampleTimer(evutil_socket_t, short, void* self);
  void HandleApi(evhttp_request* request, const std::string& path);
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
