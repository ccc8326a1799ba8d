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
#include <future>
#include <map>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/log.h"

namespace pgfleet::controller {

struct HttpServer::Connection {
  enum class State {
    kHead,      // Reading the first request head.
    kPassed,    // Its head was fine: evhttp has the connection to itself.
    kRefusing,  // Answered by Refuse; closed once the current callback is over.
  };
  HttpServer* server = nullptr;
  bufferevent* bev = nullptr;
  evhttp_connection* evcon = nullptr;  // Known once adopted.
  evbuffer_cb_entry* sniffer = nullptr;
  State state = State::kHead;
  std::string head;       // The head so far, at most max_header_bytes + 1 bytes of it.
  size_t line_start = 0;  // Where the line being scanned begins in `head`.
  std::string refusal;    // The whole reply of a refused connection.
};

struct HttpServer::Job {
  evhttp_request* request = nullptr;  // Owned by libevent; touched on the event loop only.
  ApiRequest api;
  bool metrics = false;  // GET /metrics rather than an API call.
  ApiResponse response;
  const char* content_type = "application/json";
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
  // One request per connection: the head checks (HttpServer::CheckHead) see the first head of
  // a connection only, as libevent 2.1 offers no hook before a later request's body.
  evhttp_add_header(headers, "Connection", "close");
}

const char* ReasonPhrase(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 413:
      return "Payload Too Large";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 503:
      return "Service Unavailable";
    default:
      return status < 500 ? "Bad Request" : "Internal Server Error";
  }
}

// The path of a request target: "/api/X?y" and "http://host/api/X" both give "/api/X".
absl::string_view TargetPath(absl::string_view target) {
  if (size_t scheme = target.find("://");
      scheme != absl::string_view::npos && target.find('/') == scheme + 1) {
    size_t slash = target.find('/', scheme + 3);
    target = slash == absl::string_view::npos ? absl::string_view("/") : target.substr(slash);
  }
  return target.substr(0, target.find_first_of("?#"));
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
  // CheckHead answers an oversized head first (431, JSON); evhttp's own limit (400, HTML)
  // is only a backstop.
  evhttp_set_max_headers_size(http_, 2 * static_cast<ev_ssize_t>(options_.max_header_bytes));
  evhttp_set_bevcb(http_, &HttpServer::NewConnection, this);
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
  adopt_event_ = event_new(base_, -1, 0, &HttpServer::OnAdopt, this);
  refuse_event_ = event_new(base_, -1, 0, &HttpServer::OnRefuse, this);
  sample_timer_ = event_new(base_, -1, EV_PERSIST, &HttpServer::OnSampleTimer, this);
  timeval interval{options_.sample_interval_ms / 1000, (options_.sample_interval_ms % 1000) * 1000};
  event_add(sample_timer_, &interval);

  for (int i = 0; i < options_.worker_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  // Start returns once the loop runs: event_base_dispatch clears a loopbreak that came before
  // it, so a Stop right after Start (a start-up that fails just after, e.g. on
  // --http-port-file) would otherwise join a loop that never ends.
  std::promise<void> running;
  const timeval now{0, 0};
  event_base_once(
      base_, -1, EV_TIMEOUT,
      [](evutil_socket_t, short, void* promise) {
        static_cast<std::promise<void>*>(promise)->set_value();
      },
      &running, &now);
  loop_thread_ = std::thread([this] { event_base_dispatch(base_); });
  running.get_future().wait();
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
  // Frees every connection evhttp has, which tells OnConnectionClosed; those not adopted
  // yet are only held by the reference NewConnection took.
  if (http_ != nullptr) evhttp_free(http_);
  std::vector<Connection*> unadopted;
  unadopted.swap(unadopted_);
  for (Connection* connection : unadopted) {
    bufferevent* bev = connection->bev;
    ForgetConnection(connection);
    bufferevent_decref(bev);
  }
  connections_.clear();
  to_refuse_.clear();
  if (adopt_event_ != nullptr) event_free(adopt_event_);
  if (refuse_event_ != nullptr) event_free(refuse_event_);
  adopt_event_ = refuse_event_ = nullptr;
  event_base_free(base_);
  sample_timer_ = jobs_done_event_ = nullptr;
  http_ = nullptr;
  base_ = nullptr;
}

bufferevent* HttpServer::NewConnection(event_base* base, void* self_ptr) {
  auto* self = static_cast<HttpServer*>(self_ptr);
  bufferevent* bev = bufferevent_socket_new(base, -1, 0);
  if (bev == nullptr) return nullptr;  // evhttp tries to make one itself.
  auto connection = std::make_unique<Connection>();
  connection->server = self;
  connection->bev = bev;
  // evhttp sets the connection up right after this returns, and OnAdopt runs before any of
  // its input is read; the reference keeps the bufferevent valid for OnAdopt all the same.
  bufferevent_incref(bev);
  connection->sniffer =
      evbuffer_add_cb(bufferevent_get_input(bev), &HttpServer::OnInput, connection.get());
  self->unadopted_.push_back(connection.get());
  self->connections_.emplace(connection.get(), std::move(connection));
  event_active(self->adopt_event_, EV_TIMEOUT, 0);
  return bev;
}

void HttpServer::OnAdopt(evutil_socket_t, short, void* self) {
  static_cast<HttpServer*>(self)->AdoptConnections();
}

void HttpServer::AdoptConnections() {
  std::vector<Connection*> fresh;
  fresh.swap(unadopted_);
  std::vector<Connection*> adopted;
  for (Connection* connection : fresh) {
    bufferevent* bev = connection->bev;
    bufferevent_data_cb read_cb = nullptr;
    bufferevent_data_cb write_cb = nullptr;
    bufferevent_event_cb event_cb = nullptr;
    void* evcon = nullptr;
    // evhttp's callbacks carry its connection; cleared callbacks mean evhttp freed it.
    bufferevent_getcb(bev, &read_cb, &write_cb, &event_cb, &evcon);
    if (event_cb == nullptr || evcon == nullptr) {
      ForgetConnection(connection);
    } else {
      connection->evcon = static_cast<evhttp_connection*>(evcon);
      evhttp_connection_set_closecb(connection->evcon, &HttpServer::OnConnectionClosed, connection);
      adopted.push_back(connection);
    }
    bufferevent_decref(bev);
  }
  int open = 0;
  for (const auto& [connection, owned] : connections_) {
    open += connection->state != Connection::State::kRefusing ? 1 : 0;
  }
  // The newest ones are over the cap.
  for (auto it = adopted.rbegin(); it != adopted.rend() && open > options_.max_connections;
       ++it, --open) {
    PGF_WARN("http", "%d HTTP connections are open (--http-max-connections): one more refused",
             open - 1);
    Refuse(**it, 503,
           absl::UnavailableError(absl::StrCat("too many open HTTP connections (",
                                               options_.max_connections, "): try again shortly")));
  }
}

void HttpServer::OnConnectionClosed(evhttp_connection*, void* connection_ptr) {
  auto* connection = static_cast<Connection*>(connection_ptr);
  connection->server->ForgetConnection(connection);
}

void HttpServer::ForgetConnection(Connection* connection) {
  if (connection->sniffer != nullptr) {
    evbuffer_remove_cb_entry(bufferevent_get_input(connection->bev), connection->sniffer);
  }
  std::erase(unadopted_, connection);
  std::erase(to_refuse_, connection);
  connections_.erase(connection);
}

void HttpServer::OnInput(evbuffer* input, const evbuffer_cb_info* info, void* connection_ptr) {
  auto* connection = static_cast<Connection*>(connection_ptr);
  if (connection->state != Connection::State::kHead || info->n_added == 0) return;
  // Runs as bytes are read, before evhttp parses them: the new ones are at the end.
  const size_t keep = static_cast<size_t>(connection->server->options_.max_header_bytes) + 1;
  const size_t length = evbuffer_get_length(input);
  const size_t added = std::min(info->n_added, length);
  const size_t take = std::min(added, keep - std::min(keep, connection->head.size()));
  if (take > 0) {
    evbuffer_ptr start;
    evbuffer_ptr_set(input, &start, length - added, EVBUFFER_PTR_SET);
    const size_t old_size = connection->head.size();
    connection->head.resize(old_size + take);
    evbuffer_copyout_from(input, &start, connection->head.data() + old_size, take);
  }
  connection->server->CheckHead(*connection);
}

void HttpServer::CheckHead(Connection& connection) {
  // The head ends at its first empty line; lines end in "\r\n" or "\n", as evhttp reads them.
  std::string& head = connection.head;
  size_t head_end = std::string::npos;
  while (head_end == std::string::npos) {
    const size_t newline = head.find('\n', connection.line_start);
    if (newline == std::string::npos) break;
    size_t line_end = newline;
    if (line_end > connection.line_start && head[line_end - 1] == '\r') --line_end;
    const bool empty = line_end == connection.line_start && connection.line_start > 0;
    connection.line_start = newline + 1;
    if (empty) head_end = newline + 1;
  }
  const size_t limit = static_cast<size_t>(options_.max_header_bytes);
  if (head_end == std::string::npos ? head.size() > limit : head_end > limit) {
    Refuse(connection, 431,
           absl::InvalidArgumentError(
               absl::StrCat("the request line and headers are over ", limit, " bytes")));
    return;
  }
  if (head_end == std::string::npos) return;
  connection.state = Connection::State::kPassed;
  absl::string_view request_line(head.data(), head.find('\n'));
  if (absl::EndsWith(request_line, "\r")) request_line.remove_suffix(1);
  std::vector<absl::string_view> parts = absl::StrSplit(request_line, ' ');
  if (parts.size() < 2 || !absl::StartsWith(TargetPath(parts[1]), "/api/")) {
    std::string().swap(head);  // Done with it: no 16 KiB kept per connection.
    return;
  }
  // The token, on the head alone: a caller without one has none of its body read (evhttp
  // would read all of it, up to the 8 MiB a config push may have, before OnRequest).
  std::string authorization;
  bool authorization_seen = false;
  uint64_t content_length = 0;
  for (absl::string_view line : absl::StrSplit(absl::string_view(head).substr(0, head_end), '\n')) {
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    const absl::string_view name = line.substr(0, colon);
    const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (absl::EqualsIgnoreCase(name, "Content-Length")) {
      (void)absl::SimpleAtoi(value, &content_length);  // evhttp refuses a malformed one.
    } else if (!authorization_seen && absl::EqualsIgnoreCase(name, "Authorization")) {
      // The first one, as evhttp_find_header would give HandleApi.
      authorization = std::string(value);
      authorization_seen = true;
    }
  }
  // A copy: `parts` points into `head`, released below.
  const std::string method(TargetPath(parts[1]).substr(5));  // After "/api/".
  const uint64_t body_limit = static_cast<uint64_t>(
      method == "PushConfig" ? options_.max_push_body_bytes : options_.max_body_bytes);
  std::string().swap(head);
  if (absl::Status authenticated = router_.Authenticate(authorization); !authenticated.ok()) {
    Refuse(connection, HttpStatusFor(authenticated), authenticated);
    return;
  }
  // Announced too large: our JSON 413 now, not evhttp's HTML one after its own limit.
  if (content_length > body_limit) {
    Refuse(connection, 413,
           absl::InvalidArgumentError(absl::StrCat("request body of ", content_length,
                                                   " bytes is over the limit of ", body_limit,
                                                   " bytes for ", method)));
  }
}

void HttpServer::Refuse(Connection& connection, int status, const absl::Status& why) {
  if (connection.state == Connection::State::kRefusing) return;
  connection.state = Connection::State::kRefusing;
  const std::string body = ErrorJson(why);
  connection.refusal =
      absl::StrCat("HTTP/1.1 ", status, " ", ReasonPhrase(status),
                   "\r\nContent-Type: application/json\r\n", "Content-Length: ", body.size(),
                   "\r\nConnection: close\r\nX-Content-Type-Options: nosniff\r\n"
                   "Cache-Control: no-store\r\n\r\n",
                   body);
  std::string().swap(connection.head);
  // Nothing more of this connection reaches evhttp, and nothing more is read.
  evbuffer* input = bufferevent_get_input(connection.bev);
  evbuffer_drain(input, evbuffer_get_length(input));
  bufferevent_disable(connection.bev, EV_READ);
  // Closed from the event loop, not from inside the bufferevent's own read callback.
  to_refuse_.push_back(&connection);
  event_active(refuse_event_, EV_TIMEOUT, 0);
}

void HttpServer::OnRefuse(evutil_socket_t, short, void* self_ptr) {
  auto* self = static_cast<HttpServer*>(self_ptr);
  std::vector<Connection*> refused;
  refused.swap(self->to_refuse_);
  for (Connection* connection : refused) self->RefuseNow(*connection);
}

void HttpServer::RefuseNow(Connection& connection) {
  if (connection.evcon == nullptr) return;  // Not adopted: cannot happen (OnAdopt runs first).
  const evutil_socket_t fd = bufferevent_getfd(connection.bev);
  if (fd >= 0) {
    // A few hundred bytes on a connection that has sent nothing back yet: the socket buffer
    // takes them whole. Then FIN, so the client reads the reply and sees the end.
    (void)send(fd, connection.refusal.data(), connection.refusal.size(),
               MSG_NOSIGNAL | MSG_DONTWAIT);
    shutdown(fd, SHUT_WR);
  }
  evhttp_connection_free(connection.evcon);  // OnConnectionClosed forgets `connection`.
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
  } else if (path == "/metrics" && self->options_.render_metrics) {
    self->HandleMetrics(request);
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

void HttpServer::HandleMetrics(evhttp_request* request) {
  auto reply_error = [request](int http_status, const absl::Status& status) {
    Reply(request, http_status, "application/json", ErrorJson(status));
  };
  const evhttp_cmd_type command = evhttp_request_get_command(request);
  if (command != EVHTTP_REQ_GET && command != EVHTTP_REQ_HEAD) {
    reply_error(405, absl::InvalidArgumentError("/metrics: use GET"));
    return;
  }
  if (options_.metrics_require_token) {
    const char* authorization =
        evhttp_find_header(evhttp_request_get_input_headers(request), "Authorization");
    if (absl::Status authenticated = router_.Authenticate(authorization ? authorization : "");
        !authenticated.ok()) {
      reply_error(HttpStatusFor(authenticated), authenticated);
      return;
    }
  }
  if (pending_requests_ >= options_.max_pending_requests) {
    reply_error(503, absl::UnavailableError("too many requests in progress: try again shortly"));
    return;
  }
  auto job = std::make_unique<Job>();
  job->request = request;
  job->metrics = true;
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
    if (job->metrics) {
      absl::StatusOr<std::string> text = options_.render_metrics();
      job->response = text.ok()
                          ? ApiResponse{200, std::move(*text)}
                          : ApiResponse{HttpStatusFor(text.status()), ErrorJson(text.status())};
      if (text.ok()) job->content_type = "text/plain; version=0.0.4; charset=utf-8";
    } else {
      job->response = router_.Handle(job->api);
    }
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
    Reply(job->request, job->response.http_status, job->content_type, job->response.json);
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
