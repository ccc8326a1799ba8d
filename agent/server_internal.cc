// ServerConn's internal queries: parameter sync before a client forwards, reset, check and
// connect queries, and the probe of the server's connection limits.
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/io/evbuffer_frames.h"
#include "agent/pg/protocol.h"
#include "agent/server_conn.h"
#include "agent/server_conn_detail.h"
#include "common/log.h"

namespace pgfleet::agent {
using namespace server_conn_detail;

void ServerConn::RunInternalQuery(const std::string& sql, AfterInternal after) {
  WriteRaw(pg::Query(sql));
  ++internal_replies_;
  after_internal_ = after;
  internal_error_.clear();
}

void ServerConn::RunQuery(ServerQuery* query) {
  WriteRaw(query->Messages());
  ++internal_replies_;
  after_internal_ = AfterInternal::kServerQuery;
  internal_error_.clear();
  query_ = query;
}

bool ServerConn::SyncParams(ClientConn* client) {
  // Each value travels as a Bind parameter of set_config(), never inside SQL text: a client may
  // have left this server with standard_conforming_strings off (or a client_encoding whose
  // multibyte characters swallow a backslash), and a quoted value would then be read
  // differently, breaking out of its literal on a connection other clients share.
  // Clients share their parameter lists (ClientConn::shared_params): a server that matched
  // this very list and has not changed since still matches it, without comparing strings.
  const std::shared_ptr<const ParamList>& wanted = client->shared_params();
  if (wanted != nullptr && wanted == in_step_with_) return false;
  std::vector<std::pair<std::string_view, std::string_view>> changes;
  for (const auto& [name, value] : client->params()) {
    bool same = false;
    for (const auto& [server_name, server_value] : params_) {
      if (server_name == name) {
        same = server_value == value;
        break;
      }
    }
    if (!same) changes.emplace_back(name, value);
  }
  if (changes.empty()) {
    in_step_with_ = wanted;
    return false;
  }
  in_step_with_.reset();  // The SETs' ParameterStatus change params_.
  // client_encoding first, so the server reads the other values in the client's encoding.
  std::stable_partition(changes.begin(), changes.end(),
                        [](const auto& change) { return change.first == "client_encoding"; });
  WriteRaw(pg::SetConfigMessages(changes));
  ++internal_replies_;  // One Sync, one ReadyForQuery.
  after_internal_ = AfterInternal::kLinkClient;
  internal_error_.clear();
  return true;
}

void ServerConn::HandleInternal() {
  evbuffer* in = net_->input();
  while (internal_replies_ > 0) {
    pg::MessageHeader header;
    pg::HeaderResult result = PeekFrameHeader(in, 0, kMaxLoginMessage, &header);
    if (result == pg::HeaderResult::kNeedMore) return;
    if (result == pg::HeaderResult::kMalformed) {
      Close("invalid message from server", /*is_error=*/true);
      return;
    }
    if (evbuffer_get_length(in) < header.total()) return;
    std::string body = RemoveFrame(in, header);
    if (header.type == 'S') {
      pg::BodyReader reader(body);
      const std::string_view name = reader.CString();
      const std::string_view value = reader.CString();
      if (reader.ok() && ParameterLimitExceeded(params_, name, value)) {
        // The same bound as at login: the internal queries run right after it (connect_query,
        // the limits probe) and on idle servers (server_check_query, server_reset_query).
        if (after_internal_ == AfterInternal::kFinishLogin) {
          LoginFailed(absl::StrCat(TooManyParameters(), " during login"));
        } else {
          Close(TooManyParameters(), /*is_error=*/true);
        }
        return;
      }
      OnParameterStatus(body);
    } else if (header.type == 'E') {
      internal_error_ = ErrorMessageOf(body);
    } else if (header.type == 'D' && probing_limits_) {
      NoteServerLimits(body);
    } else if ((header.type == 'T' || header.type == 'D') && query_ != nullptr &&
               after_internal_ == AfterInternal::kServerQuery) {
      query_->OnMessage(header.type, body);
    } else if (header.type == 'C') {
      // A server_reset_query of DISCARD ALL / DEALLOCATE ALL empties the server.
      statements_.OnCommandComplete(std::string_view(body.c_str()), nullptr);
    } else if (header.type == 'Z') {
      tx_status_ = body.empty() ? 'I' : body[0];
      --internal_replies_;
      probing_limits_ = false;
    }
  }
  AfterInternal after = after_internal_;
  after_internal_ = AfterInternal::kNone;
  if (after == AfterInternal::kServerQuery) {
    // Forgotten before anything else runs: the owner may queue its next query from OnDone.
    ServerQuery* query = std::exchange(query_, nullptr);
    if (query != nullptr) query->Detach();
    absl::Status result = absl::OkStatus();
    if (!internal_error_.empty() || tx_status_ != 'I') {
      result = absl::InternalError(internal_error_.empty() ? "the server stayed in a transaction"
                                                           : internal_error_);
      // As PgBouncer after a failed auth_query: whatever the query left behind goes with it.
      Close(absl::StrCat("query failed: ", result.message()), /*is_error=*/false);
    } else {
      pool_.OnServerIdle(this);
    }
    if (query != nullptr) query->OnDone(result);
    return;
  }
  if (!internal_error_.empty() || tx_status_ != 'I') {
    std::string reason = absl::StrCat("internal query failed: ", internal_error_);
    if (after == AfterInternal::kFinishLogin) {
      const bool check_failed = host_probe_ && pool_.db().connect_query.empty();
      LoginFailed(
          absl::StrCat(check_failed ? "server_check_query failed: " : "connect_query failed: ",
                       internal_error_));
    } else {
      Close(reason, /*is_error=*/true);
    }
    return;
  }
  switch (after) {
    case AfterInternal::kLinkClient:
      // The client's messages go out from the loop, after this handler.
      if (client_ != nullptr) agent_.ready_clients().Schedule(client_);
      // The client's own query may already have been answered in this read.
      if (evbuffer_get_length(in) > 0) ProcessInput();
      break;
    case AfterInternal::kBackToIdle:
      pool_.OnServerIdle(this);
      break;
    case AfterInternal::kFinishLogin:
      FinishLogin();
      break;
    case AfterInternal::kNone:
    case AfterInternal::kServerQuery:  // Handled above.
      break;
  }
}

}  // namespace pgfleet::agent
