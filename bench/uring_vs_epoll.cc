// Issue 20: would io_uring cut the agent's CPU per transaction? A self-contained loopback
// measurement, not part of the agent (built and run by bench/uring_vs_epoll.sh).
//
// Shape of the agent's data path: N clients each do request/response ping-pong (100-byte
// request, 200-byte response, like pgbench -S) through a forwarding "proxy" thread to one
// server connection per client. The clients and the echo-like server share one "load" thread;
// the proxy runs alone in its own thread, so RUSAGE_THREAD gives the proxy's CPU only.
//
// Proxy modes:
//   epoll        level-triggered epoll_wait, then recv + send per ready fd (the agent's shape:
//                per transaction 2 recv + 2 send + about one epoll_wait).
//   uring        one recv SQE armed per fd; a completed recv queues a send to the peer linked
//                to the next recv on the same fd (IOSQE_IO_LINK: the buffer is reused only after
//                the send has taken it); a send posts a completion only if it fails, so the
//                loop wakes for received data only. All SQEs of one loop turn go in one
//                io_uring_submit_and_wait, so the loop makes one syscall per turn.
//   uring-defer  the same with IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (kernel
//                6.1+): completions run only when the proxy enters the kernel, in batches,
//                instead of interrupting it (the setup liburing recommends for one thread).
//
// Multishot recv with provided buffer rings would save re-arming recv, but it changes buffer
// ownership throughout; the linked recv already rides in the same syscall, so it is left out.
//
//   uring_vs_epoll [clients=50] [seconds=3] [rounds=3]
//
// Reports per mode and round: round trips/s, proxy CPU us per round trip (user+sys of the
// proxy thread), whole-process CPU us per round trip (catches io_uring work done by kernel
// worker threads, which RUSAGE_THREAD would miss), proxy syscalls per round trip (counted in
// the loop). Then medians and the ratio of each io_uring mode to epoll.

#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kRequestBytes = 100;
constexpr size_t kResponseBytes = 200;
constexpr size_t kBufferBytes = 16384;

[[noreturn]] void Die(const char* what) {
  std::perror(what);
  std::exit(1);
}

double CpuSeconds(int who) {
  rusage usage{};
  if (getrusage(who, &usage) != 0) Die("getrusage");
  auto seconds = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Flags the main thread raises; both worker threads poll them once per loop turn.
struct Phase {
  std::atomic<bool> measuring{false};  // warm-up over: snapshot counters now
  std::atomic<bool> stopped{false};    // measurement over: snapshot counters again
  std::atomic<bool> quit{false};       // load thread: close the clients' write side
};

// What the proxy thread reports about the measured window.
struct ProxyCounters {
  double cpu_seconds = 0;
  uint64_t syscalls = 0;
};

// Snapshots the proxy's CPU and syscall count at the two phase changes.
class ProxyMeter {
 public:
  explicit ProxyMeter(const Phase& phase) : phase_(phase) {}
  uint64_t syscalls = 0;
  void AtTurnEnd() {
    if (!started_ && phase_.measuring.load(std::memory_order_relaxed)) {
      started_ = true;
      start_cpu_ = CpuSeconds(RUSAGE_THREAD);
      start_syscalls_ = syscalls;
    }
    if (started_ && !finished_ && phase_.stopped.load(std::memory_order_relaxed)) {
      finished_ = true;
      result.cpu_seconds = CpuSeconds(RUSAGE_THREAD) - start_cpu_;
      result.syscalls = syscalls - start_syscalls_;
    }
  }
  ProxyCounters result;

 private:
  const Phase& phase_;
  bool started_ = false, finished_ = false;
  double start_cpu_ = 0;
  uint64_t start_syscalls_ = 0;
};

// One client's path: client <-> proxy_client_side ... proxy_server_side <-> server.
struct Path {
  int client = -1, proxy_client_side = -1, proxy_server_side = -1, server = -1;
};

int Listen(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) Die("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) Die("bind");
  if (listen(fd, 1024) != 0) Die("listen");
  socklen_t len = sizeof addr;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) Die("getsockname");
  *port = ntohs(addr.sin_port);
  return fd;
}

int Connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) Die("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) Die("connect");
  int one = 1;  // small messages, as a pooler sets: no Nagle delay
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

int Accept(int listener) {
  int fd = accept(listener, nullptr, nullptr);
  if (fd < 0) Die("accept");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Loopback connects complete against the listen backlog, so one thread can set up all paths.
std::vector<Path> MakePaths(int clients) {
  uint16_t proxy_port = 0, server_port = 0;
  int proxy_listener = Listen(&proxy_port), server_listener = Listen(&server_port);
  std::vector<Path> paths(clients);
  for (Path& p : paths) {
    p.client = Connect(proxy_port);
    p.proxy_client_side = Accept(proxy_listener);
    p.proxy_server_side = Connect(server_port);
    p.server = Accept(server_listener);
  }
  close(proxy_listener);
  close(server_listener);
  return paths;
}

void SendAll(int fd, const char* data, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n <= 0) Die("load send");
    data += n;
    len -= static_cast<size_t>(n);
  }
}

// Clients and server in one epoll loop. A client counts a round trip when its 200 response
// bytes have all arrived, then sends the next request; the server answers each complete
// 100-byte request. Byte counts, not recv calls, define messages: TCP may split or merge them.
void RunLoad(const std::vector<Path>& paths, Phase& phase, std::atomic<uint64_t>& round_trips) {
  const int n = static_cast<int>(paths.size());
  int ep = epoll_create1(0);
  if (ep < 0) Die("epoll_create1");
  // Index i < n: client i; index n + i: server side of path i.
  std::vector<size_t> pending(2 * n, 0);
  for (int i = 0; i < 2 * n; ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(i);
    int fd = i < n ? paths[i].client : paths[i - n].server;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) Die("epoll_ctl");
  }
  const std::string request(kRequestBytes, 'q'), response(kResponseBytes, 'r');
  for (const Path& p : paths) SendAll(p.client, request.data(), request.size());
  std::vector<epoll_event> events(2 * n);
  char buf[kBufferBytes];
  while (!phase.quit.load(std::memory_order_relaxed)) {
    int ready = epoll_wait(ep, events.data(), 2 * n, 100);
    if (ready < 0) Die("epoll_wait");
    for (int e = 0; e < ready; ++e) {
      const int i = static_cast<int>(events[e].data.u32);
      const bool is_client = i < n;
      const int fd = is_client ? paths[i].client : paths[i - n].server;
      ssize_t got = recv(fd, buf, sizeof buf, 0);
      if (got <= 0) Die("load recv");
      pending[i] += static_cast<size_t>(got);
      if (is_client) {
        while (pending[i] >= kResponseBytes) {
          pending[i] -= kResponseBytes;
          round_trips.fetch_add(1, std::memory_order_relaxed);
          SendAll(fd, request.data(), request.size());
        }
      } else {
        while (pending[i] >= kRequestBytes) {
          pending[i] -= kRequestBytes;
          SendAll(fd, response.data(), response.size());
        }
      }
    }
  }
  // EOF on the proxy's client side ends the proxy loop in every mode.
  for (const Path& p : paths) shutdown(p.client, SHUT_WR);
  close(ep);
}

// The agent's shape: level-triggered readiness, then one recv and one send per ready fd.
ProxyCounters RunEpollProxy(const std::vector<Path>& paths, const Phase& phase) {
  const int n = static_cast<int>(paths.size());
  std::vector<int> fd(2 * n), peer(2 * n);
  for (int i = 0; i < n; ++i) {
    fd[i] = paths[i].proxy_client_side;
    fd[n + i] = paths[i].proxy_server_side;
    peer[i] = n + i;
    peer[n + i] = i;
  }
  int ep = epoll_create1(0);
  if (ep < 0) Die("epoll_create1");
  for (int i = 0; i < 2 * n; ++i) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = static_cast<uint32_t>(i);
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev) != 0) Die("epoll_ctl");
  }
  ProxyMeter meter(phase);
  std::vector<epoll_event> events(2 * n);
  char buf[kBufferBytes];
  for (bool eof = false; !eof;) {
    int ready = epoll_wait(ep, events.data(), 2 * n, -1);
    ++meter.syscalls;
    if (ready < 0) Die("epoll_wait");
    for (int e = 0; e < ready && !eof; ++e) {
      const int i = static_cast<int>(events[e].data.u32);
      ssize_t got = recv(fd[i], buf, sizeof buf, 0);
      ++meter.syscalls;
      if (got < 0) Die("proxy recv");
      if (got == 0) {
        eof = true;
        break;
      }
      // 300 bytes never fill a loopback socket buffer: a short send would be a broken run.
      ssize_t sent = send(fd[peer[i]], buf, static_cast<size_t>(got), MSG_NOSIGNAL);
      ++meter.syscalls;
      if (sent != got) Die("proxy send (short or failed)");
    }
    meter.AtTurnEnd();
  }
  close(ep);
  return meter.result;
}

// user_data of an SQE: the fd index and which operation it is.
enum class Op : uint64_t { kRecv = 0, kSend = 1 };
uint64_t Tag(int index, Op op) {
  return (static_cast<uint64_t>(index) << 1) | static_cast<uint64_t>(op);
}

ProxyCounters RunUringProxy(const std::vector<Path>& paths, const Phase& phase,
                            bool defer_taskrun) {
  const int n = static_cast<int>(paths.size());
  std::vector<int> fd(2 * n), peer(2 * n);
  for (int i = 0; i < n; ++i) {
    fd[i] = paths[i].proxy_client_side;
    fd[n + i] = paths[i].proxy_server_side;
    peer[i] = n + i;
    peer[n + i] = i;
  }
  // At most one recv in flight per fd, and a completed recv adds two SQEs: 4 per path fits.
  unsigned entries = 1;
  while (entries < static_cast<unsigned>(4 * n)) entries <<= 1;
  io_uring ring{};
  io_uring_params params{};
  if (defer_taskrun) params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  int rc = io_uring_queue_init_params(entries, &ring, &params);
  if (rc < 0) {
    errno = -rc;
    Die("io_uring_queue_init_params");
  }
  ProxyMeter meter(phase);
  // Each fd's buffer is reused for its next recv only after the send linked before it is done.
  std::vector<std::vector<char>> buffers(2 * n, std::vector<char>(kBufferBytes));
  auto get_sqe = [&]() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (sqe == nullptr) {  // sized not to happen; submit and retry rather than fail
      io_uring_submit(&ring);
      ++meter.syscalls;
      sqe = io_uring_get_sqe(&ring);
      if (sqe == nullptr) Die("io_uring_get_sqe");
    }
    return sqe;
  };
  auto prep_recv = [&](int i) {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_recv(sqe, fd[i], buffers[i].data(), kBufferBytes, 0);
    io_uring_sqe_set_data64(sqe, Tag(i, Op::kRecv));
  };
  for (int i = 0; i < 2 * n; ++i) prep_recv(i);
  for (bool eof = false; !eof;) {
    rc = io_uring_submit_and_wait(&ring, 1);  // one io_uring_enter: submit all, reap >= 1
    ++meter.syscalls;
    if (rc < 0 && rc != -EINTR) {
      errno = -rc;
      Die("io_uring_submit_and_wait");
    }
    io_uring_cqe* cqe = nullptr;
    unsigned head = 0, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      const int i = static_cast<int>(cqe->user_data >> 1);
      const Op op = static_cast<Op>(cqe->user_data & 1);
      if (op == Op::kSend) {
        // Only a failed send posts a completion (IOSQE_CQE_SKIP_SUCCESS below).
        errno = cqe->res < 0 ? -cqe->res : EIO;
        Die("proxy uring send");
        continue;
      }
      if (cqe->res == 0) {
        eof = true;
        continue;
      }
      if (cqe->res < 0) {
        errno = -cqe->res;
        Die("proxy uring recv");
      }
      io_uring_sqe* send_sqe = get_sqe();
      io_uring_prep_send(send_sqe, fd[peer[i]], buffers[i].data(), static_cast<size_t>(cqe->res),
                         MSG_NOSIGNAL | MSG_WAITALL);
      io_uring_sqe_set_data64(send_sqe, Tag(i, Op::kSend));
      // MSG_WAITALL makes a short send a failure (which breaks the link); a successful send
      // posts no completion, so it does not satisfy the next turn's wait for one and cost
      // a turn of its own: the loop wakes only for received data.
      send_sqe->flags |= IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS;
      prep_recv(i);
    }
    io_uring_cq_advance(&ring, seen);
    meter.AtTurnEnd();
  }
  io_uring_queue_exit(&ring);
  return meter.result;
}

struct Trial {
  double round_trips_per_second = 0;
  double proxy_cpu_us_per_rt = 0;
  double process_cpu_us_per_rt = 0;
  double syscalls_per_rt = 0;
};

enum class Mode { kEpoll, kUring, kUringDefer };
const char* Name(Mode mode) {
  switch (mode) {
    case Mode::kEpoll:
      return "epoll";
    case Mode::kUring:
      return "uring";
    case Mode::kUringDefer:
      return "uring-defer";
  }
  return "?";
}

Trial RunTrial(Mode mode, int clients, double seconds) {
  std::vector<Path> paths = MakePaths(clients);
  Phase phase;
  std::atomic<uint64_t> round_trips{0};
  ProxyCounters proxy;
  std::thread proxy_thread([&] {
    proxy = mode == Mode::kEpoll ? RunEpollProxy(paths, phase)
                                 : RunUringProxy(paths, phase, mode == Mode::kUringDefer);
  });
  std::thread load_thread([&] { RunLoad(paths, phase, round_trips); });
  using Clock = std::chrono::steady_clock;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // warm-up: caches, TCP windows
  const uint64_t rt_start = round_trips.load();
  const double process_cpu_start = CpuSeconds(RUSAGE_SELF);
  const auto wall_start = Clock::now();
  phase.measuring = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  phase.stopped = true;
  const uint64_t rt_end = round_trips.load();
  const double process_cpu_end = CpuSeconds(RUSAGE_SELF);
  const double wall = std::chrono::duration<double>(Clock::now() - wall_start).count();
  phase.quit = true;
  load_thread.join();
  proxy_thread.join();
  for (const Path& p : paths) {
    close(p.client);
    close(p.proxy_client_side);
    close(p.proxy_server_side);
    close(p.server);
  }
  const double rts = static_cast<double>(rt_end - rt_start);
  if (rts == 0) {
    std::fprintf(stderr, "%s: no round trips measured\n", Name(mode));
    std::exit(1);
  }
  Trial t;
  t.round_trips_per_second = rts / wall;
  t.proxy_cpu_us_per_rt = proxy.cpu_seconds * 1e6 / rts;
  // Main thread sleeps; the load thread's CPU is in here too, so this only sanity-checks that
  // no io_uring kernel worker took work off the proxy thread's books (compare the two modes).
  t.process_cpu_us_per_rt = (process_cpu_end - process_cpu_start) * 1e6 / rts;
  t.syscalls_per_rt = static_cast<double>(proxy.syscalls) / rts;
  return t;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  const int clients = argc > 1 ? std::atoi(argv[1]) : 50;
  const double seconds = argc > 2 ? std::atof(argv[2]) : 3;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 3;
  const Mode modes[] = {Mode::kEpoll, Mode::kUring, Mode::kUringDefer};
  std::printf("clients=%d seconds=%.1f rounds=%d request=%zuB response=%zuB\n", clients, seconds,
              rounds, kRequestBytes, kResponseBytes);
  std::printf("%-6s %-12s %12s %14s %16s %12s\n", "round", "mode", "rt/s", "proxy_us/rt",
              "process_us/rt", "syscalls/rt");
  std::vector<Trial> trials[3];
  // Interleaved rounds, so drift in the machine's load hits every mode alike.
  for (int r = 1; r <= rounds; ++r) {
    for (int m = 0; m < 3; ++m) {
      Trial t = RunTrial(modes[m], clients, seconds);
      trials[m].push_back(t);
      std::printf("%-6d %-12s %12.0f %14.2f %16.2f %12.2f\n", r, Name(modes[m]),
                  t.round_trips_per_second, t.proxy_cpu_us_per_rt, t.process_cpu_us_per_rt,
                  t.syscalls_per_rt);
      std::fflush(stdout);
    }
  }
  auto median_of = [&](int m, double Trial::*field) {
    std::vector<double> values;
    for (const Trial& t : trials[m]) values.push_back(t.*field);
    return Median(values);
  };
  std::printf("\nmedians\n");
  std::printf("%-12s %12s %14s %16s %12s\n", "mode", "rt/s", "proxy_us/rt", "process_us/rt",
              "syscalls/rt");
  for (int m = 0; m < 3; ++m) {
    std::printf("%-12s %12.0f %14.2f %16.2f %12.2f\n", Name(modes[m]),
                median_of(m, &Trial::round_trips_per_second),
                median_of(m, &Trial::proxy_cpu_us_per_rt),
                median_of(m, &Trial::process_cpu_us_per_rt), median_of(m, &Trial::syscalls_per_rt));
  }
  std::printf("\nratio to epoll (medians)\n");
  for (int m = 1; m < 3; ++m) {
    auto ratio = [&](double Trial::*field) { return median_of(m, field) / median_of(0, field); };
    std::printf("%-12s rt/s %.2fx  proxy_us/rt %.2fx  process_us/rt %.2fx  syscalls/rt %.2fx\n",
                Name(modes[m]), ratio(&Trial::round_trips_per_second),
                ratio(&Trial::proxy_cpu_us_per_rt), ratio(&Trial::process_cpu_us_per_rt),
                ratio(&Trial::syscalls_per_rt));
  }
  return 0;
}
