// One socket, accepted (a client) or connecting (a server): a bare fd, a few bits of state, and
// I/O buffers taken from the loop's BufferPool only while bytes are in flight (PgBouncer's sbuf.c
// is the model). The socket is watched through the loop's Poller (agent/net/poller.h), not a
// libevent event of its own. An idle connection holds no buffer and does not watch for
// writability: that is watched only while the kernel refuses output, the output buffer exists
// only while it holds unsent bytes, and the input buffer only while it holds bytes the protocol
// code has not consumed.
//
// The layer calls its Handler with events; the protocol code reads input() in place and
// sends through Send(). TLS, when started, runs OpenSSL directly on the socket (SSL_set_fd),
// in the same read and write handlers: a read that needs the socket writable (a handshake
// message the kernel would not take) waits for writability, and queued output that needs
// the peer's bytes first (the handshake still running) waits for the next read. OpenSSL's
// socket BIO writes with write(): the process ignores SIGPIPE (the agent does, agent.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

struct event_base;
struct evbuffer;
struct ssl_st;

namespace pgfleet::agent::net {

class Poller;

class NetConn {
 public:
  class Handler {
   public:
    // Bytes arrived in input().
    virtual void OnNetRead() = 0;
    // Output that had to wait for the socket is all sent.
    virtual void OnNetDrained() = 0;
    // The peer closed (`eof`) or the socket or TLS failed (`why` says how). Reading has
    // stopped; the handler closes the connection.
    virtual void OnNetClosed(bool eof, const std::string& why) = 0;
    // A connection made with kConnecting is established (a failed connect comes through
    // OnNetClosed with the socket's error).
    virtual void OnNetConnected() {}

   protected:
    ~Handler() = default;
  };

  enum class Start {
    kConnected,   // An accepted socket: reads start now.
    kConnecting,  // A non-blocking connect is in progress: the layer waits for the socket to
                  // become writable, checks SO_ERROR, then reads and reports OnNetConnected.
  };
  // Takes `fd` (closed by Close or the destructor) and starts reading it.
  NetConn(event_base* base, int fd, Handler* handler, Start start = Start::kConnected);
  ~NetConn();
  NetConn(const NetConn&) = delete;
  NetConn& operator=(const NetConn&) = delete;

  int fd() const { return open_ ? fd_ : -1; }
  bool open() const { return open_; }

  // What has arrived and was not consumed yet. Never null: with no input buffer attached it is
  // an always-empty shared buffer. Read and drain it; never add to it.
  evbuffer* input() const;
  size_t input_length() const;
  // Bytes queued because the socket did not take them yet.
  size_t output_length() const;

  // Sends now what the socket takes and queues the rest (sent, in order, when it is writable).
  void Send(const void* data, size_t size);
  // Moves the first `bytes` of `from` to the connection the same way.
  void Send(evbuffer* from, size_t bytes);

  void EnableRead();
  void DisableRead();
  bool reading() const { return reading_; }

  // Sends what is queued without blocking, before Close; the kernel's refusal drops the rest.
  void FlushBestEffort();

  // Starts TLS on the connected socket; takes `ssl`. Output must be empty (what was queued
  // went out in plain text first). False (and `ssl` freed) when it cannot start. As the
  // connecting side the handshake starts at once; its result comes through the first read or
  // send (a refused certificate closes the connection with OpenSSL's reason).
  enum class TlsRole { kAccept, kConnect };
  bool StartTls(ssl_st* ssl, TlsRole role = TlsRole::kAccept);
  ssl_st* ssl() const { return ssl_; }

  // Gives the input buffer back if the protocol code consumed it all. The layer does this
  // after every read; code that drains input outside a read (the loop's ReadyQueue) calls it.
  void ReleaseDrainedInput();

  // Stops both events, frees the buffers, closes the socket (and TLS). Idempotent.
  void Close();

  // For tests: whether any buffer is attached, whether writability is watched.
  bool connecting() const { return connecting_; }
  bool holds_buffers() const { return in_ != nullptr || out_ != nullptr; }
  bool has_write_event() const { return write_armed_; }

 private:
  friend class Poller;
  // The poller's events for the socket (EPOLLIN / EPOLLOUT / EPOLLERR / EPOLLHUP bits).
  void OnPollEvents(uint32_t events);
  // Poller::Activate's call: the read handler, whether or not the socket is readable.
  void OnActivated();
  void OnReadable();
  void OnWritable();
  // Tells the poller what the socket waits for now (reading_, write_armed_, connecting_).
  void UpdateWatch();
  // The connect finished (the socket became writable): SO_ERROR says how.
  void FinishConnect();

  // Reads what the socket (or TLS) has into the input buffer. Returns false when the
  // connection failed or ended (the handler has been told).
  bool ReadPlain();
  bool ReadTls();
  // Writes queued output. False when the connection failed (the handler has been told).
  bool WritePlain();
  bool WriteTls();
  // Sends `size` bytes now, without queueing; returns how many the socket took, or -1 on a
  // failure other than "would block" (left for the write path to meet and report).
  long SendNow(const void* data, size_t size);
  void Queue(const void* data, size_t size);
  void ArmWrite();
  void DisarmWrite();
  void Fail(bool eof, const std::string& why);
  std::string TlsFailure(int ssl_error);

  // Every byte here is paid per idle client (48 in all): no libevent event, the flags are bits.
  Handler* handler_;
  Poller* poller_;
  int fd_;
  // What the poller watches the socket for now (Poller::kRead / kWrite).
  uint8_t watched_ = 0;
  bool open_ : 1 = true;
  bool reading_ : 1 = false;
  // Writability is wanted: output waits for the socket, the connect is in progress, or a TLS
  // read waits to write (read_wants_write_).
  bool write_armed_ : 1 = false;
  // TLS: the last read stopped because OpenSSL must write first (waits for writability).
  bool read_wants_write_ : 1 = false;
  // TLS: queued output waits for the peer's bytes (the handshake); retried after each read.
  bool write_wants_read_ : 1 = false;
  // A non-blocking connect is in progress: reading waits for it (reading_ says whether it is
  // wanted afterwards), output is queued.
  bool connecting_ : 1 = false;
  evbuffer* in_ = nullptr;
  evbuffer* out_ = nullptr;
  ssl_st* ssl_ = nullptr;
};

}  // namespace pgfleet::agent::net
