// ServerConn, its login: connect, the TLS request, the startup packet and the authentication
// exchange with PostgreSQL (with the previous secret of a rotation overlap).
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/io/evbuffer_frames.h"
#include "agent/net/connect.h"
#include "agent/pg/protocol.h"
#include "agent/server_conn.h"
#include "agent/server_conn_detail.h"
#include "common/log.h"

namespace pgfleet::agent {
using namespace server_conn_detail;
namespace {

// A message type byte as a log line and a client can read it: 'R', or 0x00 when unprintable.
std::string TypeByte(char type) {
  const auto byte = static_cast<unsigned char>(type);
  if (byte >= 0x21 && byte < 0x7f) return absl::StrCat("'", std::string(1, type), "'");
  return absl::StrFormat("0x%02x", byte);
}

// Why the message header at the front of `in` was refused: its type and the length it declares
// (an int32 on the wire, so 2 GiB reads as negative), against what a login message may be.
std::string MalformedLoginHeader(evbuffer* in) {
  char raw[pg::kHeaderSize] = {};
  CopyOutAt(in, 0, raw, sizeof(raw));
  uint32_t length = 0;
  memcpy(&length, raw + 1, sizeof(length));
  return absl::StrCat("invalid message from server during login: type ", TypeByte(raw[0]),
                      " with length ", static_cast<int32_t>(ntohl(length)), " (must be 4..",
                      kMaxLoginMessage, ")");
}

// The name of an authentication request pgfleet does not answer (PostgreSQL's AuthenticationXxx
// codes), so the log says what the server wanted.
const char* AuthMethodName(int32_t code) {
  switch (code) {
    case 2:
      return "Kerberos V5";
    case 6:
      return "SCM credentials";
    case 7:
      return "GSSAPI";
    case 8:
      return "GSSAPI continue";
    case 9:
      return "SSPI";
    default:
      return "unknown";
  }
}

}  // namespace

void ServerConn::Connect() {
  if (!endpoint_chosen_) {
    HostPick pick = pool_.PickHost(id_);
    endpoint_ = std::move(pick.endpoint);
    address_ = std::move(pick.address);
    host_probe_ = pick.probe;
    endpoint_chosen_ = true;
  }
  const config::ServerEndpoint& endpoint = endpoint_;
  if (endpoint.host.empty() || endpoint.host[0] == '/') {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (address_.size() >= sizeof(addr.sun_path)) {
      LoginFailed(absl::StrCat("unix socket path too long: ", address_));
      return;
    }
    memcpy(addr.sun_path, address_.c_str(), address_.size() + 1);
    ConnectTo(reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    return;
  }
  // The first address the name resolves to, as libevent's connect_hostname took. A numeric
  // host is answered at once, inside this call.
  evutil_addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  const std::string port = std::to_string(endpoint.port);
  evdns_getaddrinfo_request* request = evdns_getaddrinfo(agent_.loop().dns(), endpoint.host.c_str(),
                                                         port.c_str(), &hints, &OnResolved, this);
  // Null when the answer came at once (OnResolved has run).
  if (request != nullptr) dns_request_ = request;
}

void ServerConn::OnResolved(int result, evutil_addrinfo* addresses, void* arg) {
  // Cancelled by Close: the server may be gone, so it is not touched.
  if (result == EVUTIL_EAI_CANCEL) {
    if (addresses != nullptr) evutil_freeaddrinfo(addresses);
    return;
  }
  auto* server = static_cast<ServerConn*>(arg);
  server->dns_request_ = nullptr;
  if (result != 0 || addresses == nullptr) {
    server->LoginFailed(absl::StrCat("could not connect to ", server->address_,
                                     ": cannot resolve host: ", evutil_gai_strerror(result)));
  } else {
    server->ConnectTo(addresses->ai_addr, static_cast<unsigned>(addresses->ai_addrlen));
  }
  if (addresses != nullptr) evutil_freeaddrinfo(addresses);
}

void ServerConn::ConnectTo(const sockaddr* addr, unsigned length) {
  if (state_ == State::kClosed) return;
  absl::StatusOr<int> fd = net::StartConnect(addr, static_cast<socklen_t>(length));
  if (!fd.ok()) {
    LoginFailed(absl::StrCat("could not connect to ", address_,
                             ": server socket error: ", fd.status().message()));
    return;
  }
  net::NetConn::Handler* handler = this;
  net_ = std::make_unique<net::NetConn>(agent_.loop().base(), *fd, handler,
                                        net::NetConn::Start::kConnecting);
}

void ServerConn::HandleTlsAnswer() {
  evbuffer* in = net_->input();
  if (evbuffer_get_length(in) == 0) return;
  char answer = 0;
  evbuffer_remove(in, &answer, 1);
  const TlsContext* tls = agent_.server_tls();
  if (tls == nullptr) {  // A RELOAD turned TLS off meanwhile.
    LoginFailed("server TLS was disabled during the handshake");
    return;
  }
  const char* mode = config::TlsModeName(tls->mode());
  if (answer == 'N') {
    if (tls->mode() >= config::TlsMode::kRequire) {
      LoginFailed(absl::StrCat("server does not support TLS (server_tls_sslmode = ", mode, ")"));
      return;
    }
    tls_ = TlsState::kNone;
    SendStartup();
    return;
  }
  if (answer != 'S') {
    LoginFailed(
        absl::StrCat("server answered the TLS request with '", std::string(1, answer), "'"));
    return;
  }
  // Anything after 'S' arrived before encryption: someone in the middle (CVE-2021-23222).
  if (evbuffer_get_length(in) != 0) {
    LoginFailed("server sent unencrypted data after accepting TLS");
    return;
  }
  if (!net_->StartTls(tls->NewSession(endpoint_.host), net::NetConn::TlsRole::kConnect)) {
    LoginFailed("cannot start TLS");
    return;
  }
  tls_ = TlsState::kOn;
  SendStartup();  // Sent once the handshake is done.
}

void ServerConn::SendStartup() {
  const config::DatabaseConfig& db = pool_.db();
  std::vector<std::pair<std::string, std::string>> params = {
      {"user", pool_.server_user()},
      {"database", db.dbname.empty() ? db.name : db.dbname},
  };
  if (!db.client_encoding.empty()) params.emplace_back("client_encoding", db.client_encoding);
  if (!db.datestyle.empty()) params.emplace_back("DateStyle", db.datestyle);
  if (!db.timezone.empty()) params.emplace_back("TimeZone", db.timezone);
  if (!db.application_name.empty()) params.emplace_back("application_name", db.application_name);
  WriteRaw(pg::StartupMessage(params));
}

void ServerConn::HandleLogin() {
  evbuffer* in = net_->input();
  while (state_ == State::kLogin && internal_replies_ == 0) {
    pg::MessageHeader header;
    pg::HeaderResult result = PeekFrameHeader(in, 0, kMaxLoginMessage, &header);
    if (result == pg::HeaderResult::kNeedMore) return;
    if (result == pg::HeaderResult::kMalformed) {
      LoginFailed(MalformedLoginHeader(in));
      return;
    }
    if (evbuffer_get_length(in) < header.total()) return;
    std::string body = RemoveFrame(in, header);
    switch (header.type) {
      case 'R':
        if (!HandleAuthRequest(body)) return;
        break;
      case 'S': {
        pg::BodyReader reader(body);
        std::string_view name = reader.CString();
        std::string_view value = reader.CString();
        if (!reader.ok()) break;
        if (ParameterLimitExceeded(params_, name, value)) {
          LoginFailed(absl::StrCat(TooManyParameters(), " during login"));
          return;
        }
        UpdateParam(name, value);
        break;
      }
      case 'K': {
        pg::BodyReader reader(body);
        backend_pid_ = reader.Int32();
        backend_key_ = reader.Int32();
        break;
      }
      case 'E': {
        if (RetryWithPreviousSecret(body)) return;
        std::map<char, std::string> fields = pg::ParseErrorFields(body);
        // A server that refuses without saying why still gets a reason the client can read.
        const std::string reason = fields['M'].empty()
                                       ? "server sent an ErrorResponse without a message"
                                       : ErrorMessageOf(body);
        if (fields['M'].empty()) fields['M'] = reason;
        LoginFailed(reason, std::move(fields));
        return;
      }
      case 'Z': {
        tx_status_ = body.empty() ? 'I' : body[0];
        scram_.reset();
        const bool probe = agent_.ServerLimitsStale(address_, MonotonicMicros());
        if (probe) {
          // One extra round trip on the first login to each server: what it allows, for the
          // controller's connection-budget check. Readable by every role.
          probing_limits_ = true;
          RunInternalQuery(kServerLimitsQuery, AfterInternal::kFinishLogin);
        }
        if (!pool_.db().connect_query.empty()) {
          RunInternalQuery(pool_.db().connect_query, AfterInternal::kFinishLogin);
        }
        // A host that was down serves clients again only once it answers the check query.
        const std::string& check_query = agent_.config().server_check_query;
        const bool check_host = host_probe_ && !check_query.empty();
        if (check_host) RunInternalQuery(check_query, AfterInternal::kFinishLogin);
        if (!probe && pool_.db().connect_query.empty() && !check_host) FinishLogin();
        return;
      }
      case 'N':  // NoticeResponse, NegotiateProtocolVersion: nothing to do.
      case 'v':
        break;
      default:
        // As PgBouncer ("unknown pkt from server"): a server that says something else before
        // ReadyForQuery is not speaking the protocol, and waiting for it would only hold the
        // clients until server_connect_timeout.
        LoginFailed(absl::StrCat("unexpected message type ", TypeByte(header.type),
                                 " from server during login"));
        return;
    }
  }
}

bool ServerConn::HandleAuthRequest(std::string_view body) {
  pg::BodyReader reader(body);
  int32_t code = reader.Int32();
  const std::string& user = pool_.server_user();
  std::string password = pool_.db().password;
  const config::UserSecret* secret = nullptr;
  const bool from_auth_file = password.empty();
  if (from_auth_file) {
    if (using_previous_secret_) {
      // The retry after PostgreSQL refused the current secret (nullptr if the overlap has
      // closed meanwhile: then no password is known).
      secret = agent_.PreviousSecret(user);
    } else if (auto it = agent_.auth_file().find(user); it != agent_.auth_file().end()) {
      secret = &it->second;
    } else {
      // A user auth_query looked up when a client of this database logged in.
      secret = agent_.auth_query_cache().Find(pool_.db_name(), user);
    }
    if (secret != nullptr && secret->kind == config::SecretKind::kPlain) password = secret->secret;
  }
  switch (code) {
    case pg::kAuthOk:
      if (sent_auth_file_secret_ && (using_previous_secret_ || agent_.PreviousSecret(user))) {
        // During a rotation the operator needs to know which password PostgreSQL takes (never
        // the password itself).
        PGF_INFO("server", "s=%d %s@%s: PostgreSQL accepted the %s secret (rotation overlap open)",
                 id_, user, address_, using_previous_secret_ ? "previous" : "current");
      }
      return true;
    case pg::kAuthCleartext:
      if (password.empty()) {
        LoginFailed(
            absl::StrCat("server asked for a cleartext password and no plaintext password "
                         "is known for user \"",
                         user, "\""));
        return false;
      }
      sent_auth_file_secret_ = from_auth_file;
      WriteRaw(pg::PasswordMessage(password));
      return true;
    case pg::kAuthMd5: {
      std::string salt(reader.Bytes(4));
      std::string stored;
      if (!password.empty()) {
        stored = crypto::Md5PasswordHash(password, user);
      } else if (secret != nullptr && secret->kind == config::SecretKind::kMd5) {
        stored = secret->secret;
      }
      if (!reader.ok() || stored.empty()) {
        LoginFailed(
            absl::StrCat("server asked for md5 and no password is known for user \"", user, "\""));
        return false;
      }
      sent_auth_file_secret_ = from_auth_file;
      WriteRaw(pg::PasswordMessage(crypto::Md5SaltedResponse(stored, salt)));
      return true;
    }
    case pg::kAuthSasl: {
      bool has_scram = false;
      while (reader.ok() && reader.remaining() > 0) {
        std::string_view mechanism = reader.CString();
        if (mechanism == "SCRAM-SHA-256") has_scram = true;
        if (mechanism.empty()) break;
      }
      if (!has_scram) {
        LoginFailed("server offers no SASL mechanism pgfleet supports (SCRAM-SHA-256)");
        return false;
      }
      if (!password.empty()) {
        sent_auth_file_secret_ = from_auth_file;
        scram_.emplace(crypto::ScramClientExchange::FromPassword(password));
      } else if (pool_.scram_keys().has_value()) {
        scram_.emplace(crypto::ScramClientExchange::FromKeys(*pool_.scram_keys()));
      } else {
        LoginFailed(absl::StrCat("server asked for SCRAM and no password is known for user \"",
                                 user, "\""));
        return false;
      }
      WriteRaw(pg::SaslInitialResponse("SCRAM-SHA-256", scram_->ClientFirstMessage()));
      return true;
    }
    case pg::kAuthSaslContinue: {
      if (!scram_.has_value()) {
        LoginFailed("unexpected SASLContinue from server");
        return false;
      }
      absl::StatusOr<std::string> final_message = scram_->HandleServerFirst(reader.Rest());
      if (!final_message.ok()) {
        LoginFailed(absl::StrCat("SCRAM: ", final_message.status().message()));
        return false;
      }
      WriteRaw(pg::SaslResponse(*final_message));
      return true;
    }
    case pg::kAuthSaslFinal: {
      absl::Status verified = scram_.has_value()
                                  ? scram_->VerifyServerFinal(reader.Rest())
                                  : absl::InternalError("unexpected SASLFinal from server");
      if (!verified.ok()) {
        LoginFailed(absl::StrCat("SCRAM: ", verified.message()));
        return false;
      }
      return true;
    }
    default:
      LoginFailed(absl::StrCat("server asked for an unsupported authentication method: ",
                               AuthMethodName(code), " (", code, ")"));
      return false;
  }
}

bool ServerConn::RetryWithPreviousSecret(std::string_view error_body) {
  if (using_previous_secret_ || !sent_auth_file_secret_) return false;
  if (pg::ParseErrorFields(error_body)['C'] != "28P01") return false;
  const config::UserSecret* previous = agent_.PreviousSecret(pool_.server_user());
  // A SCRAM verifier cannot log in to a server: only a plaintext or md5 secret can.
  if (previous == nullptr || previous->kind == config::SecretKind::kScramSha256) return false;
  PGF_INFO("server",
           "s=%d %s@%s: PostgreSQL refused the current secret; trying the previous one "
           "(rotation overlap open)",
           id_, pool_.server_user(), address_);
  // PostgreSQL closes the connection after a failed login: start a new one. The pool still
  // sees one server logging in, so the clients waiting for it keep waiting.
  using_previous_secret_ = true;
  sent_auth_file_secret_ = false;
  // This runs inside the old connection's read handler: closed now, freed with this object.
  net_->Close();
  retired_net_ = std::move(net_);
  tls_ = TlsState::kNone;
  params_.clear();
  backend_pid_ = backend_key_ = 0;
  scram_.reset();
  Connect();
  return true;
}

void ServerConn::LoginFailed(const std::string& reason, std::map<char, std::string> error) {
  if (state_ == State::kClosed) return;
  PGF_WARN("server", "s=%d %s@%s login failed: %s", id_, pool_.server_user(), address_, reason);
  pool_.OnServerLoginFailed(this, reason, error['C'], error['M']);
  Close(reason, /*is_error=*/false);
}

void ServerConn::FinishLogin() {
  if (!SatisfiesTargetSessionAttrs(pool_.db().target_session_attrs, params_)) {
    LoginFailed(std::string(kTargetSessionAttrsMismatch));
    return;
  }
  pool_.OnServerLoginDone(this, params_);
}

void ServerConn::NoteServerLimits(std::string_view data_row) {
  pg::BodyReader reader(data_row);
  if (reader.Int16() != 2) return;
  int values[2] = {0, 0};
  for (int& value : values) {
    const int32_t length = reader.Int32();
    if (length < 0 || !reader.ok()) return;
    const std::string_view text = reader.Bytes(static_cast<size_t>(length));
    if (!absl::SimpleAtoi(absl::string_view(text.data(), text.size()), &value)) return;
  }
  if (!reader.ok()) return;
  PGF_DEBUG("server", "s=%d %s allows max_connections=%d (%d reserved for superusers)", id_,
            address_, values[0], values[1]);
  agent_.NoteServerLimits(address_, {values[0], values[1], MonotonicMicros()});
}

}  // namespace pgfleet::agent
