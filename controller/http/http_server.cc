#include "controller/http/http_server.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace pgfleet::controller {

struct HttpServer::Job {
  evhttp_request* request = nullptr;  // Owned by libevent; touched on the event loop only.
  ApiRequest api;
  ApiResponse response;
};

namespace {

// The dashboard loads nothing from elsewhere: the policy makes sure of it (and of no inline
// script), so a page that tried would show a console error in the browser tests.
constexpr char kContentSecurityPolicy[] =
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

void AddCommonHeaders(evhttp_request* request, const char* content_type) {
  evkeyvalq* headers = evhttp_request_get_output_headers(request);
  evhttp_add_header(headers, "Content-Type", content_type);
  evhttp_add_header(headers, "X-Content-Type-Options", "nosniff");
  evhttp_add_header(headers, "Referrer-Policy", "no-referrer");
  // Live data and a dashboard that is rebuilt in place: always revalidate.
  evhttp_add_header(headers, "Cache-Control", "no-store");
}

void Reply(evhttp_request* request, int status, const char* content_type, const std::string& body) {
  AddCommonHeaders(request, content_type);
  if (absl::StartsWith(content_type, "text/html")) {
    evhttp_add_header(evhttp_request_get_output_headers(request), "Content-Security-Policy",
                      kContentSecurityPolicy);
  }
  evbuffer* buffer = evbuffer_new();
  evbuffer_add(buffer, body.data(), body.size());
  // Also frees a request whose client has hung up meanwhile (libevent detached it for us).
  evhttp_send_reply(request, status, nullptr, buffer);
  evbuffer_free(buffer);
}

const char* MethodName(evhttp_cmd_type command) {
  switch (command) {
    case EVHTTP_REQ_GET:
      return "GET";
    case EVHTTP_REQ_HEAD:
      return "HEAD";
    case EVHTTP_REQ_POST:
      return "POST";
    default:
      return "OTHER";
  }
}

// "host:port" or "[v6]:port".
bool SplitHostPort(const std::string& listen, std::string* host, int* port) {
  size_t colon = listen.rfind(':');
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), port) ||
      *port < 0 || *port > 65535) {
    return false;
  }
  *host = listen.substr(0, colon);
  if (host->size() >= 2 && host->front() == '[' && host->back() == ']') {
    *host = host->substr(1, host->size() - 2);
  }
  return !host->empty();
}

}  // namespace

std::string ContentTypeFor(const std::string& path) {
  static const std::map<std::string, std::string> kTypes = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"},
      {".map", "application/json"},
      {".txt", "text/plain; charset=utf-8"},
      {".woff2", "font/woff2"}};
  size_t dot = path.rfind('.');
  if (dot != std::string::npos && path.find('/', dot) == std::string::npos) {
    if (auto it = kTypes.find(path.substr(dot)); it != kTypes.end()) return it->second;
  }
  return "application/octet-stream";
}

HttpServer::HttpServer(HttpServerOptions options, ApiRouter& router, MetricsHistory& metrics,
                       const AgentRegistry& registry)
    : options_(std::move(options)), router_(router), metrics_(metrics), registry_(registry) {}

HttpServer::~HttpServer() { Stop(); }

absl::StatusOr<int> HttpServer::Start() {
  std::string host;
  int port = 0;
  if (!SplitHostPort(options_.listen, &host, &port)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--http-listen: expected HOST:PORT, got '", options_.listen, "'"));
  }
  // Workers hand replies back with event_active from their own threads: the base must lock.
  if (evthread_use_pthreads() != 0) return absl::InternalError("libevent: no pthreads support");
  base_ = event_base_new();
  if (base_ == nullptr) return absl::InternalError("libevent: event_base_new failed");
  http_ = evhttp_new(base_);
  evhttp_set_allowed_methods(http_, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
  evhttp_set_max_headers_size(http_, options_.max_header_bytes);
  // The largest any method takes; the per-method limit is checked in HandleApi.
  evhttp_set_max_body_size(http_, std::max(options_.max_body_bytes, options_.max_push_body_bytes));
  evhttp_set_timeout(http_, 60);
  evhttp_set_gencb(http_, &HttpServer::OnRequest, this);
  evhttp_bound_socket* bound =
      evhttp_bind_socket_with_handle(http_, host.c_str(), static_cast<uint16_t>(port));
  if (bound == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen));
  }
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (getsockname(evhttp_bound_socket_get_fd(bound), reinterpret_cast<sockaddr*>(&address),
                  &length) != 0) {
    return absl::InternalError("getsockname failed on the HTTP socket");
  }
  const int bound_port =
      ntohs(address.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&address)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&address)->sin_port);

  jobs_done_event_ = event_new(base_, -1, 0, &HttpServer::OnJobsDone, this);
  sample_timer_ = event_new(base_, -1, EV_PERSIST, &HttpServer::OnSampleTimer, this);
  timeval interval{options_.sample_interval_ms / 1000, (options_.sample_interval_ms % 1000) * 1000};
  event_add(sample_timer_, &interval);

  for (int i = 0; i < options_.worker_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  loop_thread_ = std::thread([this] { event_base_dispatch(base_); });
  PGF_INFO("http", "dashboard and JSON API on http://%s:%d/ (web root %s)", host, bound_port,
           options_.web_root.empty() ? "none: API only" : options_.web_root);
  return bound_port;
}

void HttpServer::Stop() {
  if (base_ == nullptr) return;
  if (loop_thread_.joinable()) {
    event_base_loopbreak(base_);
    loop_thread_.join();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  // Whatever is left gets an answer, which also frees its request.
  for (std::unique_ptr<Job>& job : queued_) {
    job->response = {503, ErrorJson(absl::UnavailableError("the controller is shutting down"))};
    finished_.push_back(std::move(job));
  }
  queued_.clear();
  SendFinishedJobs();
  if (sample_timer_ != nullptr) event_free(sample_timer_);
  if (jobs_done_event_ != nullptr) event_free(jobs_done_event_);
  if (http_ != nullptr) evhttp_free(http_);
  event_base_free(base_);
  sample_timer_ = jobs_done_event_ = nullptr;
  http_ = nullptr;
  base_ = nullptr;
}

void HttpServer::OnRequest(evhttp_request* request, void* self_ptr) {
  auto* self = static_cast<HttpServer*>(self_ptr);
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(request);
  const char* raw_path = uri != nullptr ? evhttp_uri_get_path(uri) : nullptr;
  std::string path = raw_path != nullptr && *raw_path != '\0' ? raw_path : "/";
  if (absl::StartsWith(path, "/api/")) {
    self->HandleApi(request, path.substr(5));
  } else if (path == "/healthz") {
    Reply(request, 200, "text/plain; charset=utf-8", "ok\n");
  } else {
    self->ServeFile(request, path);
  }
}

void HttpServer::HandleApi(evhttp_request* request, const std::string& method) {
  auto reply_error = [request](int http_status, const absl::Status& status) {
    Reply(request, http_status, "application/json", ErrorJson(status));
  };
  // The token first, here on the event loop: a caller without one gets nothing else looked at
  // (not the method, not the body) and takes no worker and no place in the queue.
  const char* authorization =
      evhttp_find_header(evhttp_request_get_input_headers(request), "Authorization");
  if (absl::Status authenticated = router_.Authenticate(authorization ? authorization : "");
      !authenticated.ok()) {
    reply_error(HttpStatusFor(authenticated), authenticated);
    return;
  }
  evbuffer* body = evhttp_request_get_input_buffer(request);
  const size_t body_size = evbuffer_get_length(body);
  const size_t body_limit = static_cast<size_t>(
      method == "PushConfig" ? options_.max_push_body_bytes : options_.max_body_bytes);
  if (body_size > body_limit) {
    reply_error(413, absl::InvalidArgumentError(absl::StrCat("request body of ", body_size,
                                                             " bytes is over the limit of ",
                                                             body_limit, " bytes for ", method)));
    return;
  }
  if (pending_requests_ >= options_.max_pending_requests) {
    reply_error(503,
                absl::UnavailableError(absl::StrCat("too many API requests in progress (",
                                                    pending_requests_, "): try again shortly")));
    return;
  }
  auto job = std::make_unique<Job>();
  job->request = request;
  job->api.http_method = MethodName(evhttp_request_get_command(request));
  job->api.method = method;
  if (authorization != nullptr) job->api.authorization = authorization;
  if (job->api.http_method == "POST") {
    job->api.json.resize(body_size);
    if (body_size > 0) evbuffer_copyout(body, job->api.json.data(), body_size);
  } else {
    std::multimap<std::string, std::string> params;
    const evhttp_uri* uri = evhttp_request_get_evhttp_uri(request);
    if (const char* query = uri != nullptr ? evhttp_uri_get_query(uri) : nullptr) {
      evkeyvalq parsed;
      if (evhttp_parse_query_str(query, &parsed) != 0) {
        reply_error(400, absl::InvalidArgumentError("malformed query string"));
        return;
      }
      for (evkeyval* kv = parsed.tqh_first; kv != nullptr; kv = kv->next.tqe_next) {
        params.emplace(kv->key, kv->value);
      }
      evhttp_clear_headers(&parsed);
    }
    job->api.json = QueryToJson(params);
  }
  ++pending_requests_;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queued_.push_back(std::move(job));
  }
  work_cv_.notify_one();
}

void HttpServer::WorkerLoop() {
  while (true) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [this] { return stopping_ || !queued_.empty(); });
      if (stopping_) return;
      job = std::move(queued_.front());
      queued_.pop_front();
    }
    job->response = router_.Handle(job->api);
    {
      std::lock_guard<std::mutex> lock(mu_);
      finished_.push_back(std::move(job));
    }
    event_active(jobs_done_event_, EV_TIMEOUT, 0);
  }
}

void HttpServer::OnJobsDone(evutil_socket_t, short, void* self) {
  static_cast<HttpServer*>(self)->SendFinishedJobs();
}

void HttpServer::SendFinishedJobs() {
  std::deque<std::unique_ptr<Job>> done;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done.swap(finished_);
  }
  for (const std::unique_ptr<Job>& job : done) {
    Reply(job->request, job->response.http_status, "application/json", job->response.json);
    --pending_requests_;
  }
}

void HttpServer::OnSampleTimer(evutil_socket_t, short, void* self_ptr) {
  auto* self = static_cast<HttpServer*>(self_ptr);
  self->metrics_.Sample(self->registry_);
}

void HttpServer::ServeFile(evhttp_request* request, const std::string& raw_path) {
  if (options_.web_root.empty()) {
    Reply(request, 404, "text/plain; charset=utf-8",
          "No dashboard here: the controller was started without a web root (--web-root).\n");
    return;
  }
  size_t decoded_size = 0;
  char* decoded = evhttp_uridecode(raw_path.c_str(), 0, &decoded_size);
  std::string path = decoded != nullptr ? std::string(decoded, decoded_size) : "";
  free(decoded);
  // Only plain paths inside the web root: no "..", no NUL, no backslashes.
  if (path.empty() || path.front() != '/' || absl::StrContains(path, "..") ||
      path.find('\0') != std::string::npos || absl::StrContains(path, "\\")) {
    Reply(request, 400, "text/plain; charset=utf-8", "bad path\n");
    return;
  }
  if (path.back() == '/') path += "index.html";
  std::ifstream file(options_.web_root + path, std::ios::binary);
  std::stringstream contents;
  if (!file || !(contents << file.rdbuf())) {
    Reply(request, 404, "text/plain; charset=utf-8", "not found\n");
    return;
  }
  Reply(request, 200, ContentTypeFor(path).c_str(), contents.str());
}

}  // namespace pgfleet::controller
