#include "agent/admin/console.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "agent/admin/console_parse.h"
#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/pg/protocol.h"
#include "common/config/restart_keys.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace pgfleet::agent {
namespace {

std::string Upper(std::string_view s) { return absl::AsciiStrToUpper(std::string(s)); }

// Commands a stats_users member may run; everything else needs admin_users.
bool IsReadOnly(const std::string& verb) { return verb == "SHOW"; }

}  // namespace

void AdminConsole::HandleQuery(ClientConn* client, std::string_view sql) {
  std::optional<AdminCommand> parsed = ParseAdminCommand(sql);
  if (!parsed.has_value()) {
    // An empty query answers EmptyQueryResponse, as PostgreSQL does.
    client->Write(pg::MessageBuilder('I').Finish() + pg::ReadyForQuery('I'));
    return;
  }
  const std::string& verb = parsed->verb;
  const Args& args = parsed->args;
  const std::string& command = parsed->text;
  const bool is_admin = client->console_admin() || agent_.config().IsAdminUser(client->user()) ||
                        agent_.config().auth_type == config::AuthType::kAny;
  if (!is_admin && !IsReadOnly(verb)) {
    PGF_WARN("admin", "c=%d user %s refused: %s (stats_users may only SHOW)", client->id(),
             client->user(), command);
    Finish(client, pg::ErrorResponse("ERROR", "42501",
                                     absl::StrCat("admin access needed for '", command, "'")));
    return;
  }
  if (verb != "SHOW") {
    PGF_INFO("admin", "c=%d user %s from %s ran: %s", client->id(), client->user(), client->peer(),
             command);
  }
  if (verb == "SHOW") {
    if (args.empty()) {
      Finish(client, pg::ErrorResponse("ERROR", "42601", "SHOW what? use SHOW HELP;"));
      return;
    }
    // As in PgBouncer: SHOW FDS shows every connection's cancel key, so stats_users may not.
    if (!is_admin && Upper(args[0]) == "FDS") {
      Finish(client, pg::ErrorResponse("ERROR", "42501", "admin access needed"));
      return;
    }
    std::string response = Show(Upper(args[0]), client);
    Finish(client, response);
    return;
  }
  if (verb == "SET") {
    std::string reply;
    absl::Status status = Set(std::string(sql), &reply);
    std::string notice = std::exchange(reply_notice_, std::string());
    Finish(client, status.ok()
                       ? notice + pg::CommandComplete(reply)
                       : pg::ErrorResponse("ERROR", "22023", std::string(status.message())));
    return;
  }
  std::string reply;
  absl::Status status = RunCommand(client, verb, args, &reply);
  if (!status.ok()) {
    std::string sqlstate = status.code() == absl::StatusCode::kInvalidArgument ? "42601" : "55000";
    // PgBouncer answers an unknown database with its protocol-violation code, like all its errors.
    if (status.code() == absl::StatusCode::kNotFound) sqlstate = "08P01";
    Finish(client, pg::ErrorResponse("ERROR", sqlstate, std::string(status.message())));
    return;
  }
  std::string notice = std::exchange(reply_notice_, std::string());
  if (!reply.empty()) Finish(client, notice + pg::CommandComplete(reply));
  // Otherwise a Pending was registered and answers later.
}

void AdminConsole::Finish(ClientConn* client, const std::string& response) {
  client->Write(response + pg::ReadyForQuery('I'));
  client->AdminCommandDone();
}

absl::Status AdminConsole::RunCommand(ClientConn* client, const std::string& verb, const Args& args,
                                      std::string* reply) {
  auto db_arg = [&](size_t max_args) -> absl::StatusOr<std::string> {
    if (args.size() > max_args) {
      return absl::InvalidArgumentError(absl::StrCat("too many arguments for ", verb));
    }
    return args.empty() ? std::string() : args[0];
  };
  auto require_db = [&](const std::string& db) -> absl::Status {
    if (db.empty()) return absl::InvalidArgumentError(absl::StrCat(verb, " needs a database name"));
    if (!agent_.config().FindDatabase(db).has_value()) {
      return absl::NotFoundError(absl::StrCat("no such database: ", db));
    }
    return absl::OkStatus();
  };

  if (verb == "PAUSE") return Pause(client, args, reply);
  if (verb == "RESUME") return Resume(args, reply);
  if (verb == "RELOAD") {
    if (!args.empty()) return absl::InvalidArgumentError("RELOAD takes no arguments");
    if (absl::Status reloaded = agent_.Reload(); !reloaded.ok()) {
      PGF_ERROR("admin", "RELOAD refused, keeping the previous config: %s", reloaded.message());
      return absl::InvalidArgumentError(
          absl::StrCat("RELOAD failed, previous config kept: ", reloaded.message()));
    }
    if (std::vector<std::string> pending = agent_.restart_pending(); !pending.empty()) {
      reply_notice_ = pg::NoticeResponse(absl::StrCat(
          config::RestartPendingText(pending),
          " (applied everything else; these keep their running value until a restart)"));
    }
    *reply = "RELOAD";
    return absl::OkStatus();
  }
  if ((verb == "SUSPEND" || verb == "DISABLE" || verb == "ENABLE") && agent_.handing_over()) {
    // The new process starts with this one's state as it was when the RESTART began.
    return absl::UnavailableError(
        absl::StrCat("a RESTART is in progress: ", verb, " again once it has ended"));
  }
  if (verb == "SUSPEND") {
    if (agent_.suspended()) return absl::FailedPreconditionError("already suspended");
    agent_.Suspend();
    *reply = "SUSPEND";
    return absl::OkStatus();
  }
  if (verb == "DISABLE" || verb == "ENABLE") {
    absl::StatusOr<std::string> db = db_arg(1);
    if (!db.ok()) return db.status();
    if (absl::Status ok = require_db(*db); !ok.ok()) return ok;
    agent_.SetDisabled(*db, verb == "DISABLE");
    *reply = verb;
    return absl::OkStatus();
  }
  if (verb == "KILL") {
    absl::StatusOr<std::string> db = db_arg(1);
    if (!db.ok()) return db.status();
    // PgBouncer 1.25: KILL without a database kills every database but the console.
    if (!db->empty()) {
      if (absl::Status ok = require_db(*db); !ok.ok()) return ok;
    }
    // A KILL ends a PAUSE still draining: nothing is left to drain (PgBouncer #715).
    CancelPendingPauses(*db, "PAUSE ended by KILL");
    agent_.Kill(*db);
    *reply = "KILL";
    return absl::OkStatus();
  }
  if (verb == "KILL_CLIENT") {
    absl::StatusOr<uint64_t> id = ParseKillClientArgs(args);
    if (!id.ok()) return id.status();
    if (!agent_.KillClient(*id)) {
      return absl::NotFoundError(absl::StrCat("no such client: ", args[0]));
    }
    *reply = "KILL_CLIENT";
    return absl::OkStatus();
  }
  if (verb == "RECONNECT") {
    absl::StatusOr<std::string> db = db_arg(1);
    if (!db.ok()) return db.status();
    if (!db->empty()) {
      if (absl::Status ok = require_db(*db); !ok.ok()) return ok;
    }
    agent_.Reconnect(*db);
    *reply = "RECONNECT";
    return absl::OkStatus();
  }
  if (verb == "WAIT_CLOSE") {
    absl::StatusOr<std::string> db = db_arg(1);
    if (!db.ok()) return db.status();
    if (!db->empty()) {
      if (absl::Status ok = require_db(*db); !ok.ok()) return ok;
    }
    pending_.push_back({Pending::Kind::kWaitClose, client, *db, "WAIT_CLOSE"});
    client->AdminCommandStarted();
    CheckPending();
    return absl::OkStatus();
  }
  if (verb == "RESTART") {
    // pgfleet's own (PgBouncer has no console command for its -R online restart): hands the
    // listeners to a new process of the binary now on disk and answers once that process
    // serves, or with the reason it could not start (this process then keeps serving).
    if (!args.empty()) return absl::InvalidArgumentError("RESTART takes no arguments");
    client->AdminCommandStarted();
    const uint64_t id = client->id();
    reply->clear();
    agent_.BeginHandover(0, [this, client, id](absl::StatusOr<pid_t> outcome) {
      if (!agent_.IsLiveAdminClient(client, id)) return;
      if (!outcome.ok()) {
        Finish(client, pg::ErrorResponse("ERROR", "55000",
                                         absl::StrCat("RESTART failed, this process keeps "
                                                      "serving: ",
                                                      outcome.status().message())));
        return;
      }
      Finish(client, pg::NoticeResponse(absl::StrCat("pid ", *outcome,
                                                     " serves now; this process drains and "
                                                     "exits")) +
                         pg::CommandComplete("RESTART"));
    });
    return absl::OkStatus();
  }
  if (verb == "SHUTDOWN") {
    Agent::ShutdownMode mode = Agent::ShutdownMode::kImmediate;
    if (args.size() == 1 && Upper(args[0]) == "WAIT_FOR_SERVERS") {
      mode = Agent::ShutdownMode::kWaitForServers;
    } else if (args.size() == 1 && Upper(args[0]) == "WAIT_FOR_CLIENTS") {
      mode = Agent::ShutdownMode::kWaitForClients;
    } else if (!args.empty()) {
      return absl::InvalidArgumentError("usage: SHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]");
    }
    // A shutdown ends any PAUSE still draining, so its caller is not left hanging.
    CancelPendingPauses("", "PAUSE ended by SHUTDOWN");
    Finish(client, pg::CommandComplete("SHUTDOWN"));
    reply->clear();
    agent_.Shutdown(mode, client->user());
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid command '", verb, args.empty() ? "" : absl::StrCat(" ", absl::StrJoin(args, " ")),
      "', use SHOW HELP;"));
}

absl::Status AdminConsole::Pause(ClientConn* client, const Args& args, std::string* reply) {
  // PAUSE [db] [FOR <duration>]: the FOR form resumes by itself when the duration passes.
  absl::StatusOr<PauseArgs> parsed = ParsePauseArgs(args);
  if (!parsed.ok()) return parsed.status();
  const std::string& db = parsed->db;
  if (absl::Status paused = agent_.Pause(db, parsed->duration); !paused.ok()) return paused;
  // The reply comes once no server connection is in use (PgBouncer semantics).
  pending_.push_back({Pending::Kind::kPause, client, db, "PAUSE"});
  client->AdminCommandStarted();
  CheckPending();
  reply->clear();
  return absl::OkStatus();
}

absl::Status AdminConsole::Resume(const Args& args, std::string* reply) {
  if (args.size() > 1) return absl::InvalidArgumentError("usage: RESUME [db]");
  std::string db = args.empty() ? "" : args[0];
  if (absl::Status resumed = agent_.Resume(db); !resumed.ok()) return resumed;
  *reply = "RESUME";
  return absl::OkStatus();
}

absl::Status AdminConsole::Set(const std::string& sql, std::string* reply) {
  absl::StatusOr<SetArgs> parsed = ParseSetCommand(sql);
  if (!parsed.ok()) return parsed.status();
  const std::string& key = parsed->key;
  const std::string& value = parsed->value;
  config::Config updated = agent_.ConfigForSet();
  if (absl::Status applied = config::ApplySetting(updated, key, value); !applied.ok()) {
    return applied;
  }
  const bool new_logfile = key == "logfile" && updated.logfile != agent_.config().logfile;
  if (new_logfile && !updated.logfile.empty()) {
    // The agent appends to it (as root, if it runs as root): confined like a pushed config's
    // logfile, and opened now so a file that cannot be written is refused here, not lost.
    PGF_RETURN_IF_ERROR(agent_.CheckWritablePath("logfile", updated.logfile));
    if (!common::SetLogFile(updated.logfile)) {
      common::SetLogFile(agent_.config().logfile);  // Keep logging where it did.
      return absl::InvalidArgumentError(
          absl::StrCat("logfile: cannot open '", updated.logfile, "'"));
    }
  } else if (new_logfile) {
    common::SetLogFile("");
  }
  if (std::string note = agent_.ReplaceConfig(std::move(updated)); !note.empty()) {
    reply_notice_ = pg::NoticeResponse(note);
  }
  PGF_INFO("admin", "SET %s = %s", key, value);
  *reply = "SET";
  return absl::OkStatus();
}

bool AdminConsole::PendingDone(const Pending& pending) const {
  switch (pending.kind) {
    case Pending::Kind::kPause:
      return agent_.IsDrained(pending.db);
    case Pending::Kind::kWaitClose:
      return agent_.OldServersClosed(pending.db);
  }
  return false;
}

void AdminConsole::CheckPending() {
  if (pending_.empty()) return;
  std::vector<Pending> done;
  auto it = std::stable_partition(pending_.begin(), pending_.end(),
                                  [&](const Pending& p) { return !PendingDone(p); });
  done.assign(it, pending_.end());
  pending_.erase(it, pending_.end());
  for (const Pending& pending : done) {
    if (pending.kind == Pending::Kind::kPause) {
      PGF_INFO("admin", "PAUSE %s: drained, no server connection left",
               pending.db.empty() ? "(all)" : pending.db);
    }
    Finish(pending.client, pg::CommandComplete(pending.tag));
  }
}

void AdminConsole::CancelPendingPauses(const std::string& db, const std::string& message) {
  std::vector<Pending> cancelled;
  auto it = std::stable_partition(pending_.begin(), pending_.end(), [&](const Pending& p) {
    return !(p.kind == Pending::Kind::kPause && (db.empty() || p.db == db));
  });
  cancelled.assign(it, pending_.end());
  pending_.erase(it, pending_.end());
  for (const Pending& pending : cancelled) {
    Finish(pending.client, pg::ErrorResponse("ERROR", "57014", message));
  }
}

void AdminConsole::OnClientClosed(ClientConn* client) {
  pending_.erase(std::remove_if(pending_.begin(), pending_.end(),
                                [&](const Pending& p) { return p.client == client; }),
                 pending_.end());
}

}  // namespace pgfleet::agent
