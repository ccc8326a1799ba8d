// fleetctl: the operator's CLI for pgfleet-controller.
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/cli.h"

namespace pgfleet::cli {
namespace {

using Handler = std::function<int(Context&)>;

struct Command {
  const char* name;  // "config push"
  const char* usage;
  const char* help;
  Handler run;
};

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    parts.emplace_back(part);
  }
  return parts;
}

int RequireFlag(const Context& ctx, const char* flag) {
  if (!ctx.flags().Has(flag) || ctx.flags().Get(flag).empty()) {
    fprintf(stderr, "fleetctl: --%s is required\n", flag);
    return kExitUsage;
  }
  return kExitOk;
}

int EnvList(Context& ctx) {
  pgfleet::v1::ListEnvironmentsResponse response;
  grpc::Status status = ctx.stub().ListEnvironments(ctx.NewCall().get(), {}, &response);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(response);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& env : response.environments()) {
    rows.push_back({env.name(),
                    env.desired_version() ? absl::StrCat("v", env.desired_version()) : "-",
                    absl::StrCat(env.agents_connected(), "/", env.agents_total()),
                    absl::StrCat(env.agents_converged(), "/", env.agents_connected())});
  }
  PrintTable({"ENVIRONMENT", "DESIRED", "CONNECTED", "CONVERGED"}, rows);
  return kExitOk;
}

int ConfigPush(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  if (int rc = RequireFlag(ctx, "file")) return rc;
  bool ok = false;
  pgfleet::v1::PushConfigRequest request;
  request.set_environment(ctx.flags().Get("env"));
  request.set_ini_text(ReadFileOrDie(ctx.flags().Get("file"), &ok));
  request.set_message(ctx.flags().Get("message"));
  if (!ok) {
    fprintf(stderr, "fleetctl: cannot read %s\n", ctx.flags().Get("file").c_str());
    return kExitUsage;
  }
  pgfleet::v1::ConfigVersion version;
  grpc::Status status = ctx.stub().PushConfig(ctx.NewCall().get(), request, &version);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(version);
  } else {
    printf("pushed config version v%llu to %s (sha256 %s)\n",
           static_cast<unsigned long long>(version.version()), version.environment().c_str(),
           version.sha256().substr(0, 12).c_str());
  }
  return kExitOk;
}

int ConfigList(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  pgfleet::v1::ListConfigsRequest request;
  request.set_environment(ctx.flags().Get("env"));
  pgfleet::v1::ListConfigsResponse response;
  grpc::Status status = ctx.stub().ListConfigs(ctx.NewCall().get(), request, &response);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(response);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& v : response.versions()) {
    rows.push_back({absl::StrCat("v", v.version()), v.sha256().substr(0, 12), v.author(),
                    FormatTime(v.created_unix_ms()),
                    v.parent_version() ? absl::StrCat("v", v.parent_version()) : "-", v.message()});
  }
  PrintTable({"VERSION", "SHA256", "AUTHOR", "CREATED (UTC)", "PARENT", "MESSAGE"}, rows);
  return kExitOk;
}

bool ParseVersion(const std::string& text, uint64_t* version) {
  std::string digits = !text.empty() && (text[0] == 'v' || text[0] == 'V') ? text.substr(1) : text;
  return absl::SimpleAtoi(digits, version) && *version > 0;
}

int FetchConfig(Context& ctx, const std::string& text, pgfleet::v1::ConfigVersion* out) {
  pgfleet::v1::GetConfigRequest request;
  uint64_t version = 0;
  if (!ParseVersion(text, &version)) {
    fprintf(stderr, "fleetctl: '%s' is not a version (like v12 or 12)\n", text.c_str());
    return kExitUsage;
  }
  request.set_version(version);
  grpc::Status status = ctx.stub().GetConfig(ctx.NewCall().get(), request, out);
  return status.ok() ? kExitOk : ctx.Fail(status);
}

int ConfigShow(Context& ctx) {
  if (ctx.flags().positional.size() != 1) {
    fprintf(stderr, "usage: fleetctl config show VERSION\n");
    return kExitUsage;
  }
  pgfleet::v1::ConfigVersion version;
  if (int rc = FetchConfig(ctx, ctx.flags().positional[0], &version)) return rc;
  if (ctx.json()) {
    ctx.PrintJson(version);
  } else {
    printf("%s", version.ini_text().c_str());
  }
  return kExitOk;
}

int ConfigDiff(Context& ctx) {
  if (ctx.flags().positional.size() != 2) {
    fprintf(stderr, "usage: fleetctl config diff VERSION_A VERSION_B\n");
    return kExitUsage;
  }
  pgfleet::v1::ConfigVersion a, b;
  if (int rc = FetchConfig(ctx, ctx.flags().positional[0], &a)) return rc;
  if (int rc = FetchConfig(ctx, ctx.flags().positional[1], &b)) return rc;
  printf("%s", UnifiedDiff(a.ini_text(), b.ini_text(), absl::StrCat("v", a.version()),
                           absl::StrCat("v", b.version()))
                   .c_str());
  return kExitOk;
}

// Polls until every connected agent of `env` runs `version`, or one NACKs it.
int WaitConverged(Context& ctx, const std::string& env, uint64_t version) {
  const bool tty = isatty(STDOUT_FILENO);
  const absl::Time deadline = absl::Now() + absl::Seconds(120);
  while (absl::Now() < deadline) {
    pgfleet::v1::ListAgentsRequest request;
    request.set_environment(env);
    pgfleet::v1::ListAgentsResponse response;
    grpc::Status status = ctx.stub().ListAgents(ctx.NewCall().get(), request, &response);
    if (!status.ok()) return ctx.Fail(status);
    int connected = 0, converged = 0;
    std::vector<std::string> nacks;
    for (const auto& agent : response.agents()) {
      if (!agent.connected()) continue;
      ++connected;
      if (agent.applied_version() == version) {
        ++converged;
      } else if (absl::StartsWith(agent.last_error(), absl::StrCat("v", version, ": "))) {
        // last_error names the version it is about: an older refusal is not this one's.
        nacks.push_back(absl::StrCat(agent.agent_id(), ": ", agent.last_error()));
      }
    }
    if (tty) {
      printf("\r%s: %d/%d agents on v%llu", env.c_str(), converged, connected,
             static_cast<unsigned long long>(version));
      fflush(stdout);
    } else {
      printf("%s: %d/%d agents on v%llu\n", env.c_str(), converged, connected,
             static_cast<unsigned long long>(version));
    }
    if (!nacks.empty()) {
      if (tty) printf("\n");
      fprintf(stderr, "fleetctl: agents refused v%llu (NACK):\n  %s\n",
              static_cast<unsigned long long>(version), absl::StrJoin(nacks, "\n  ").c_str());
      return kExitFailed;
    }
    if (converged == connected) {
      if (tty) printf("\n");
      return kExitOk;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // Poll interval, not a sync.
  }
  fprintf(stderr, "\nfleetctl: timed out waiting for agents to converge\n");
  return kExitFailed;
}

int ConfigApply(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  if (int rc = RequireFlag(ctx, "version")) return rc;
  pgfleet::v1::SetDesiredConfigRequest request;
  uint64_t version = 0;
  if (!ParseVersion(ctx.flags().Get("version"), &version)) {
    fprintf(stderr, "fleetctl: --version wants a version like v12\n");
    return kExitUsage;
  }
  request.set_environment(ctx.flags().Get("env"));
  request.set_version(version);
  pgfleet::v1::Environment env;
  grpc::Status status = ctx.stub().SetDesiredConfig(ctx.NewCall().get(), request, &env);
  if (!status.ok()) return ctx.Fail(status);
  if (!ctx.flags().Has("wait")) {
    if (ctx.json()) {
      ctx.PrintJson(env);
    } else {
      printf("%s now wants v%llu\n", env.name().c_str(),
             static_cast<unsigned long long>(env.desired_version()));
    }
    return kExitOk;
  }
  return WaitConverged(ctx, env.name(), version);
}

int AgentsList(Context& ctx) {
  pgfleet::v1::ListAgentsRequest request;
  request.set_environment(ctx.flags().Get("env"));
  pgfleet::v1::ListAgentsResponse response;
  grpc::Status status = ctx.stub().ListAgents(ctx.NewCall().get(), request, &response);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(response);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& agent : response.agents()) {
    int clients = agent.last_metrics().client_count();
    rows.push_back({agent.agent_id(), agent.environment(), agent.connected() ? "up" : "down",
                    agent.applied_version() ? absl::StrCat("v", agent.applied_version()) : "local",
                    agent.desired_version() ? absl::StrCat("v", agent.desired_version()) : "-",
                    agent.desired_version() && agent.applied_version() != agent.desired_version()
                        ? "DRIFT"
                        : "",
                    agent.connected() ? absl::StrCat(clients) : "-", agent.last_error()});
  }
  PrintTable({"AGENT", "ENV", "LINK", "APPLIED", "DESIRED", "", "CLIENTS", "LAST ERROR"}, rows);
  return kExitOk;
}

int AgentsShow(Context& ctx) {
  if (ctx.flags().positional.size() != 1) {
    fprintf(stderr, "usage: fleetctl agents show AGENT_ID\n");
    return kExitUsage;
  }
  pgfleet::v1::GetAgentRequest request;
  request.set_agent_id(ctx.flags().positional[0]);
  pgfleet::v1::Agent agent;
  grpc::Status status = ctx.stub().GetAgent(ctx.NewCall().get(), request, &agent);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(agent);
    return kExitOk;
  }
  std::vector<std::string> labels;
  for (const auto& [k, v] : agent.labels()) labels.push_back(absl::StrCat(k, "=", v));
  printf(
      "agent:        %s\nenvironment:  %s\nlabels:       %s\nhost:         %s\n"
      "link:         %s\nversion:      %s\nfirst seen:   %s\nlast seen:    %s\n"
      "applied:      v%llu\ndesired:      v%llu%s\nlast error:   %s\n",
      agent.agent_id().c_str(), agent.environment().c_str(), absl::StrJoin(labels, ",").c_str(),
      agent.hostname().c_str(), agent.connected() ? "connected" : "disconnected",
      agent.agent_version().c_str(), FormatTime(agent.first_seen_unix_ms()).c_str(),
      FormatTime(agent.last_seen_unix_ms()).c_str(),
      static_cast<unsigned long long>(agent.applied_version()),
      static_cast<unsigned long long>(agent.desired_version()),
      agent.applied_version() != agent.desired_version() ? "  (drift)" : "",
      agent.last_error().empty() ? "-" : agent.last_error().c_str());
  if (agent.last_metrics().pools_size() > 0) {
    printf("\npools:\n");
    std::vector<std::vector<std::string>> rows;
    for (const auto& pool : agent.last_metrics().pools()) {
      rows.push_back({pool.database(), pool.user(), pool.pool_mode(),
                      absl::StrCat(pool.cl_active()), absl::StrCat(pool.cl_waiting()),
                      absl::StrCat(pool.sv_active()), absl::StrCat(pool.sv_idle()),
                      absl::StrCat(pool.maxwait_us() / 1000000)});
    }
    PrintTable(
        {"DATABASE", "USER", "MODE", "CL_ACTIVE", "CL_WAITING", "SV_ACTIVE", "SV_IDLE", "MAXWAIT"},
        rows);
  }
  return kExitOk;
}

int SendCommand(Context& ctx, pgfleet::v1::Command command, const char* verb) {
  pgfleet::v1::SendCommandRequest request;
  request.set_environment(ctx.flags().Get("env"));
  request.set_agent_id(ctx.flags().Get("agent"));
  if (request.environment().empty() && request.agent_id().empty()) {
    fprintf(stderr, "fleetctl: %s needs --env or --agent\n", verb);
    return kExitUsage;
  }
  *request.mutable_command() = std::move(command);
  pgfleet::v1::SendCommandResponse response;
  grpc::Status status = ctx.stub().SendCommand(ctx.NewCall(60).get(), request, &response);
  if (!status.ok()) return ctx.Fail(status);
  int failed = 0;
  for (const auto& outcome : response.outcomes()) failed += outcome.ok() ? 0 : 1;
  if (ctx.json()) {
    ctx.PrintJson(response);
  } else {
    std::vector<std::vector<std::string>> rows;
    for (const auto& outcome : response.outcomes()) {
      rows.push_back({outcome.agent_id(), outcome.ok() ? "ok" : "FAILED", outcome.error()});
    }
    PrintTable({"AGENT", verb, "ERROR"}, rows);
    if (response.outcomes_size() == 0) printf("no connected agent matched\n");
  }
  return failed > 0 ? kExitFailed : kExitOk;
}

void PrintWindow(const pgfleet::v1::MaintenanceWindow& window) {
  printf("window %llu: %s %s  %s  %s -> %s%s\n", static_cast<unsigned long long>(window.id()),
         window.environment().c_str(),
         window.database().empty() ? "(all databases)" : window.database().c_str(),
         window.state().c_str(), FormatTime(window.starts_unix_ms()).c_str(),
         FormatTime(window.ends_unix_ms()).c_str(),
         window.reason().empty() ? "" : absl::StrCat("  (", window.reason(), ")").c_str());
  if (!window.failure().empty()) printf("  %s\n", window.failure().c_str());
  std::vector<std::vector<std::string>> rows;
  for (const auto& agent : window.agents()) {
    std::string holder;
    if (!agent.oldest_client().empty()) {
      holder = absl::StrCat(agent.oldest_client(), ", ", agent.oldest_xact_age_ms() / 1000, "s",
                            agent.oldest_query().empty() ? "" : ": " + agent.oldest_query());
    }
    rows.push_back({agent.agent_id(), agent.state(), absl::StrCat(agent.servers_in_use()),
                    absl::StrCat(agent.clients_waiting()), holder});
  }
  if (!rows.empty()) {
    PrintTable({"AGENT", "STATE", "SERVERS IN USE", "WAITING", "OLDEST TRANSACTION"}, rows);
  }
}

int FinishWindow(Context& ctx, const pgfleet::v1::MaintenanceWindow& window) {
  if (ctx.json()) {
    ctx.PrintJson(window);
  } else {
    PrintWindow(window);
  }
  return window.state() == "failed" ? kExitFailed : kExitOk;
}

// Follows a window until every agent drained (exit 0) or the drain failed (exit 5). A window
// that ended another way while we waited (resumed, cancelled) did not drain either: exit 5.
// Progress goes to stdout for people, to stderr under --output json so stdout stays one
// JSON document.
int WaitDrained(Context& ctx, uint64_t id) {
  FILE* progress = ctx.json() ? stderr : stdout;
  const bool tty = isatty(fileno(progress));
  std::string last;
  while (true) {
    pgfleet::v1::GetWindowRequest request;
    request.set_id(id);
    pgfleet::v1::MaintenanceWindow window;
    grpc::Status status = ctx.maintenance().GetWindow(ctx.NewCall().get(), request, &window);
    if (!status.ok()) return ctx.Fail(status);
    int paused = 0, total = 0, in_use = 0;
    for (const auto& agent : window.agents()) {
      if (agent.state() == "skipped") continue;
      ++total;
      paused += agent.state() == "paused" ? 1 : 0;
      in_use += agent.servers_in_use();
    }
    std::string line =
        absl::StrCat("window ", window.id(), " ", window.state(), ": ", paused, "/", total,
                     " agents drained, ", in_use, " server connections still in use");
    if (tty) {
      fprintf(progress, "\r\033[K%s", line.c_str());
      fflush(progress);
    } else if (line != last) {
      fprintf(progress, "%s\n", line.c_str());
      fflush(progress);
    }
    last = line;
    if (window.state() != "pausing" && window.state() != "scheduled") {
      if (tty) fprintf(progress, "\n");
      const int rc = FinishWindow(ctx, window);
      if (rc == kExitOk && window.state() != "paused") {
        fprintf(stderr, "fleetctl: window %llu ended (%s) before every agent drained\n",
                static_cast<unsigned long long>(window.id()), window.state().c_str());
        return kExitFailed;
      }
      return rc;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // Poll interval.
  }
}

bool ParseDurationFlag(const Context& ctx, const char* flag, int64_t* seconds) {
  if (!ctx.flags().Has(flag)) return true;
  absl::Duration duration;
  if (!absl::ParseDuration(ctx.flags().Get(flag), &duration) || duration <= absl::ZeroDuration()) {
    fprintf(stderr, "fleetctl: --%s wants a duration like 15m\n", flag);
    return false;
  }
  *seconds = std::max<int64_t>(1, absl::ToInt64Seconds(duration));
  return true;
}

int Pause(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  pgfleet::v1::PauseWindowRequest request;
  request.set_environment(ctx.flags().Get("env"));
  request.set_database(ctx.flags().Get("db"));
  request.set_reason(ctx.flags().Get("reason"));
  for (const std::string& agent : SplitList(ctx.flags().Get("skip")))
    request.add_skip_agents(agent);
  int64_t duration = 0, drain = 0;
  if (!ParseDurationFlag(ctx, "for", &duration) ||
      !ParseDurationFlag(ctx, "drain-timeout", &drain)) {
    return kExitUsage;
  }
  request.set_duration_seconds(duration);
  request.set_drain_timeout_seconds(drain);
  pgfleet::v1::MaintenanceWindow window;
  grpc::Status status = ctx.maintenance().Pause(ctx.NewCall().get(), request, &window);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.flags().Has("wait")) return WaitDrained(ctx, window.id());
  return FinishWindow(ctx, window);
}

int Resume(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  pgfleet::v1::ResumeWindowRequest request;
  request.set_environment(ctx.flags().Get("env"));
  request.set_database(ctx.flags().Get("db"));
  pgfleet::v1::MaintenanceWindow window;
  grpc::Status status = ctx.maintenance().Resume(ctx.NewCall().get(), request, &window);
  if (!status.ok()) return ctx.Fail(status);
  return FinishWindow(ctx, window);
}

int MaintenanceSchedule(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  if (int rc = RequireFlag(ctx, "at")) return rc;
  if (int rc = RequireFlag(ctx, "duration")) return rc;
  pgfleet::v1::ScheduleWindowRequest request;
  request.set_environment(ctx.flags().Get("env"));
  request.set_database(ctx.flags().Get("db"));
  request.set_reason(ctx.flags().Get("reason"));
  for (const std::string& agent : SplitList(ctx.flags().Get("skip")))
    request.add_skip_agents(agent);
  // --at takes RFC 3339 ("2026-11-25T22:00:00Z") or an offset from now ("+10m").
  const std::string at = ctx.flags().Get("at");
  absl::Time start;
  std::string error;
  absl::Duration offset;
  if (!at.empty() && at[0] == '+' && absl::ParseDuration(at.substr(1), &offset)) {
    start = absl::Now() + offset;
  } else if (!absl::ParseTime(absl::RFC3339_full, at, &start, &error)) {
    fprintf(stderr, "fleetctl: --at wants RFC 3339 (2026-11-25T22:00:00Z) or +DURATION: %s\n",
            error.c_str());
    return kExitUsage;
  }
  request.set_starts_unix_ms(absl::ToUnixMillis(start));
  int64_t duration = 0, drain = 0;
  if (!ParseDurationFlag(ctx, "duration", &duration) ||
      !ParseDurationFlag(ctx, "drain-timeout", &drain)) {
    return kExitUsage;
  }
  request.set_duration_seconds(duration);
  request.set_drain_timeout_seconds(drain);
  pgfleet::v1::MaintenanceWindow window;
  grpc::Status status = ctx.maintenance().Schedule(ctx.NewCall().get(), request, &window);
  if (!status.ok()) return ctx.Fail(status);
  return FinishWindow(ctx, window);
}

int MaintenanceList(Context& ctx) {
  pgfleet::v1::ListWindowsRequest request;
  request.set_environment(ctx.flags().Get("env"));
  pgfleet::v1::ListWindowsResponse response;
  grpc::Status status = ctx.maintenance().ListWindows(ctx.NewCall().get(), request, &response);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(response);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& w : response.windows()) {
    rows.push_back({absl::StrCat(w.id()), w.environment(),
                    w.database().empty() ? "*" : w.database(), w.state(),
                    FormatTime(w.starts_unix_ms()), FormatTime(w.ends_unix_ms()), w.reason(),
                    w.failure()});
  }
  PrintTable({"ID", "ENV", "DB", "STATE", "STARTS (UTC)", "ENDS (UTC)", "REASON", "FAILURE"}, rows);
  return kExitOk;
}

int MaintenanceShow(Context& ctx) {
  uint64_t id = 0;
  if (ctx.flags().positional.size() != 1 || !absl::SimpleAtoi(ctx.flags().positional[0], &id)) {
    fprintf(stderr, "usage: fleetctl maintenance show ID\n");
    return kExitUsage;
  }
  if (ctx.flags().Has("wait")) return WaitDrained(ctx, id);
  pgfleet::v1::GetWindowRequest request;
  request.set_id(id);
  pgfleet::v1::MaintenanceWindow window;
  grpc::Status status = ctx.maintenance().GetWindow(ctx.NewCall().get(), request, &window);
  if (!status.ok()) return ctx.Fail(status);
  return FinishWindow(ctx, window);
}

int MaintenanceCancel(Context& ctx) {
  uint64_t id = 0;
  if (ctx.flags().positional.size() != 1 || !absl::SimpleAtoi(ctx.flags().positional[0], &id)) {
    fprintf(stderr, "usage: fleetctl maintenance cancel ID\n");
    return kExitUsage;
  }
  pgfleet::v1::CancelWindowRequest request;
  request.set_id(id);
  pgfleet::v1::MaintenanceWindow window;
  grpc::Status status = ctx.maintenance().CancelWindow(ctx.NewCall().get(), request, &window);
  if (!status.ok()) return ctx.Fail(status);
  return FinishWindow(ctx, window);
}

int Reload(Context& ctx) {
  pgfleet::v1::Command command;
  command.mutable_reload();
  return SendCommand(ctx, std::move(command), "RELOAD");
}

// ---- Rollouts ----

int FillRolloutOptions(const Context& ctx, pgfleet::v1::StartRolloutRequest* request) {
  for (const std::string& wave : SplitList(ctx.flags().Get("waves"))) request->add_waves(wave);
  if (ctx.flags().Has("bake")) {
    absl::Duration bake;
    if (!absl::ParseDuration(ctx.flags().Get("bake"), &bake) || bake <= absl::ZeroDuration()) {
      fprintf(stderr, "fleetctl: --bake wants a duration like 60s\n");
      return kExitUsage;
    }
    request->set_bake_seconds(std::max<int64_t>(1, absl::ToInt64Seconds(bake)));
  }
  if (ctx.flags().Has("max-unavailable")) {
    int value = 0;
    if (!absl::SimpleAtoi(ctx.flags().Get("max-unavailable"), &value) || value < 0) {
      fprintf(stderr, "fleetctl: --max-unavailable wants a number\n");
      return kExitUsage;
    }
    request->set_max_unavailable(value);
  }
  auto threshold = [&](const char* flag, auto setter) -> bool {
    if (!ctx.flags().Has(flag)) return true;
    int64_t value = 0;
    if (!absl::SimpleAtoi(ctx.flags().Get(flag), &value) || value < 0) {
      fprintf(stderr, "fleetctl: --%s wants a number\n", flag);
      return false;
    }
    setter(value);
    return true;
  };
  pgfleet::v1::HealthThresholds* t = request->mutable_thresholds();
  if (!threshold("max-cl-waiting",
                 [&](int64_t v) { t->set_max_cl_waiting(static_cast<int32_t>(v)); }) ||
      !threshold("max-maxwait-ms", [&](int64_t v) { t->set_max_maxwait_ms(v); }) ||
      !threshold("max-server-errors",
                 [&](int64_t v) { t->set_max_new_server_errors(static_cast<int32_t>(v)); }) ||
      !threshold("max-login-failures",
                 [&](int64_t v) { t->set_max_new_login_failures(static_cast<int32_t>(v)); })) {
    return kExitUsage;
  }
  if (ctx.flags().Has("connection-reserve")) {
    int value = 0;
    if (!absl::SimpleAtoi(ctx.flags().Get("connection-reserve"), &value) || value < 1) {
      fprintf(stderr, "fleetctl: --connection-reserve wants a positive number of connections\n");
      return kExitUsage;
    }
    request->set_connection_reserve(value);
  }
  if (ctx.flags().Has("force")) {
    request->set_force(true);
    request->set_force_reason(ctx.flags().Get("reason"));
  }
  return kExitOk;
}

void PrintRollout(const pgfleet::v1::Rollout& rollout) {
  printf("rollout %llu: %s v%llu -> v%llu  %s", static_cast<unsigned long long>(rollout.id()),
         rollout.environment().c_str(), static_cast<unsigned long long>(rollout.from_version()),
         static_cast<unsigned long long>(rollout.to_version()), rollout.state().c_str());
  if (rollout.state() == "running" || rollout.state() == "paused") {
    printf(" (wave %d/%d, %s)", rollout.current_wave() + 1, rollout.waves_size(),
           rollout.phase().c_str());
  }
  printf("\n");
  if (!rollout.reason().empty()) printf("  %s\n", rollout.reason().c_str());
  if (!rollout.force_reason().empty()) printf("  forced: %s\n", rollout.force_reason().c_str());
  for (const std::string& warning : rollout.warnings()) printf("  warning: %s\n", warning.c_str());
  std::vector<std::vector<std::string>> rows;
  for (const auto& agent : rollout.agents()) {
    rows.push_back(
        {agent.agent_id(), absl::StrCat(agent.wave() + 1), agent.state(), agent.error()});
  }
  if (!rows.empty()) PrintTable({"AGENT", "WAVE", "STATE", "ERROR"}, rows);
}

// Exit code for a rollout that has ended.
int RolloutExit(const pgfleet::v1::Rollout& rollout) {
  return rollout.state() == "succeeded" ? kExitOk : kExitFailed;
}

int WatchRollout(Context& ctx, uint64_t id) {
  // Under --output json the live lines go to stderr, so stdout is one JSON document.
  FILE* progress = ctx.json() ? stderr : stdout;
  const bool tty = isatty(fileno(progress));
  std::string last;
  while (true) {
    pgfleet::v1::GetRolloutRequest request;
    request.set_id(id);
    pgfleet::v1::Rollout rollout;
    grpc::Status status = ctx.rollouts().GetRollout(ctx.NewCall().get(), request, &rollout);
    if (!status.ok()) return ctx.Fail(status);
    int applied = 0;
    for (const auto& agent : rollout.agents()) applied += agent.state() == "applied" ? 1 : 0;
    const int total = rollout.agents_size();
    std::string line = absl::StrCat(
        "rollout ", rollout.id(), " ", rollout.state(), " wave ",
        std::min(rollout.current_wave() + 1, rollout.waves_size()), "/", rollout.waves_size(), " ",
        rollout.phase(), " ", applied, "/", total, " agents on v", rollout.to_version(),
        rollout.reason().empty() ? "" : absl::StrCat(" - ", rollout.reason()));
    if (tty) {
      const int width = 30;
      const int filled = total == 0 ? width : applied * width / total;
      fprintf(progress, "\r\033[K[%s%s] %s", std::string(filled, '#').c_str(),
              std::string(width - filled, '.').c_str(), line.c_str());
      fflush(progress);
    } else if (line != last) {
      fprintf(progress, "%s\n", line.c_str());
      fflush(progress);
    }
    last = line;
    if (rollout.state() != "running" && rollout.state() != "paused") {
      if (tty) fprintf(progress, "\n");
      if (ctx.json()) {
        ctx.PrintJson(rollout);
      } else {
        PrintRollout(rollout);
      }
      return RolloutExit(rollout);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // Poll interval.
  }
}

int ShowRollout(Context& ctx, const pgfleet::v1::Rollout& rollout) {
  if (ctx.flags().Has("watch")) return WatchRollout(ctx, rollout.id());
  if (ctx.json()) {
    ctx.PrintJson(rollout);
  } else {
    PrintRollout(rollout);
  }
  if (rollout.state() == "failed" || rollout.state() == "aborted") return kExitFailed;
  return kExitOk;
}

int RolloutStart(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  if (int rc = RequireFlag(ctx, "version")) return rc;
  pgfleet::v1::StartRolloutRequest request;
  request.set_environment(ctx.flags().Get("env"));
  uint64_t version = 0;
  if (!ParseVersion(ctx.flags().Get("version"), &version)) {
    fprintf(stderr, "fleetctl: --version wants a version like v12\n");
    return kExitUsage;
  }
  request.set_version(version);
  if (int rc = FillRolloutOptions(ctx, &request)) return rc;
  pgfleet::v1::Rollout rollout;
  grpc::Status status = ctx.rollouts().StartRollout(ctx.NewCall().get(), request, &rollout);
  if (!status.ok()) return ctx.Fail(status);
  // --watch redraws the rollout; the pre-flight warnings would scroll away with it.
  if (ctx.flags().Has("watch")) {
    for (const std::string& warning : rollout.warnings()) {
      fprintf(stderr, "fleetctl: warning: %s\n", warning.c_str());
    }
  }
  return ShowRollout(ctx, rollout);
}

int RolloutStatus(Context& ctx) {
  pgfleet::v1::GetRolloutRequest request;
  if (!ctx.flags().positional.empty()) {
    uint64_t id = 0;
    if (!absl::SimpleAtoi(ctx.flags().positional[0], &id)) {
      fprintf(stderr, "fleetctl: rollout ids are numbers\n");
      return kExitUsage;
    }
    request.set_id(id);
  } else {
    request.set_environment(ctx.flags().Get("env"));
  }
  pgfleet::v1::Rollout rollout;
  grpc::Status status = ctx.rollouts().GetRollout(ctx.NewCall().get(), request, &rollout);
  if (!status.ok()) return ctx.Fail(status);
  return ShowRollout(ctx, rollout);
}

int RolloutList(Context& ctx) {
  pgfleet::v1::ListRolloutsRequest request;
  request.set_environment(ctx.flags().Get("env"));
  pgfleet::v1::ListRolloutsResponse response;
  grpc::Status status = ctx.rollouts().ListRollouts(ctx.NewCall().get(), request, &response);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(response);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& r : response.rollouts()) {
    rows.push_back({absl::StrCat(r.id()), r.environment(),
                    absl::StrCat("v", r.from_version(), " -> v", r.to_version()), r.state(),
                    absl::StrJoin(r.waves(), ","), r.created_by(), FormatTime(r.created_unix_ms()),
                    r.reason()});
  }
  PrintTable({"ID", "ENV", "VERSIONS", "STATE", "WAVES", "BY", "STARTED (UTC)", "REASON"}, rows);
  return kExitOk;
}

int RolloutAction(Context& ctx, const char* what) {
  if (ctx.flags().positional.size() != 1) {
    fprintf(stderr, "usage: fleetctl rollout %s ID\n", what);
    return kExitUsage;
  }
  pgfleet::v1::RolloutActionRequest request;
  uint64_t id = 0;
  if (!absl::SimpleAtoi(ctx.flags().positional[0], &id)) {
    fprintf(stderr, "fleetctl: rollout ids are numbers\n");
    return kExitUsage;
  }
  request.set_id(id);
  pgfleet::v1::Rollout rollout;
  grpc::Status status;
  std::string verb = what;
  if (verb == "pause") {
    status = ctx.rollouts().PauseRollout(ctx.NewCall().get(), request, &rollout);
  } else if (verb == "resume") {
    status = ctx.rollouts().ResumeRollout(ctx.NewCall().get(), request, &rollout);
  } else {
    status = ctx.rollouts().AbortRollout(ctx.NewCall().get(), request, &rollout);
  }
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(rollout);
  } else {
    PrintRollout(rollout);
  }
  return kExitOk;
}

int RolloutRollback(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  pgfleet::v1::RollbackRequest request;
  request.set_environment(ctx.flags().Get("env"));
  for (const std::string& wave : SplitList(ctx.flags().Get("waves"))) request.add_waves(wave);
  pgfleet::v1::Rollout rollout;
  grpc::Status status = ctx.rollouts().Rollback(ctx.NewCall().get(), request, &rollout);
  if (!status.ok()) return ctx.Fail(status);
  return ShowRollout(ctx, rollout);
}

int Promote(Context& ctx) {
  if (int rc = RequireFlag(ctx, "from")) return rc;
  if (int rc = RequireFlag(ctx, "to")) return rc;
  pgfleet::v1::PromoteRequest request;
  request.set_from_environment(ctx.flags().Get("from"));
  request.set_to_environment(ctx.flags().Get("to"));
  if (ctx.flags().Has("version")) {
    uint64_t version = 0;
    if (!ParseVersion(ctx.flags().Get("version"), &version)) {
      fprintf(stderr, "fleetctl: --version wants a version like v12\n");
      return kExitUsage;
    }
    request.set_version(version);
  }
  if (int rc = FillRolloutOptions(ctx, request.mutable_rollout())) return rc;
  pgfleet::v1::Rollout rollout;
  grpc::Status status = ctx.rollouts().Promote(ctx.NewCall().get(), request, &rollout);
  if (!status.ok()) return ctx.Fail(status);
  return ShowRollout(ctx, rollout);
}

int EnvSetUpstream(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  pgfleet::v1::SetUpstreamRequest request;
  request.set_environment(ctx.flags().Get("env"));
  request.set_upstream(ctx.flags().Get("upstream"));
  pgfleet::v1::Environment env;
  grpc::Status status = ctx.rollouts().SetUpstream(ctx.NewCall().get(), request, &env);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(env);
  } else {
    printf("%s: upstream %s\n", env.name().c_str(),
           env.upstream().empty() ? "(none)" : env.upstream().c_str());
  }
  return kExitOk;
}

// ---- Tokens ----

int TokenList(Context& ctx) {
  pgfleet::v1::ListTokensResponse response;
  grpc::Status status = ctx.tokens().ListTokens(ctx.NewCall().get(), {}, &response);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(response);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : response.tokens()) {
    rows.push_back({absl::StrCat(t.id()), t.name(), t.role(),
                    t.environment().empty() ? "-" : t.environment(), t.state(),
                    FormatTime(t.created_unix_ms()),
                    t.expires_unix_ms() ? FormatTime(t.expires_unix_ms()) : "never",
                    t.last_used_unix_ms() ? FormatTime(t.last_used_unix_ms()) : "never",
                    t.created_by().empty() ? "-" : t.created_by()});
  }
  PrintTable({"ID", "NAME", "ROLE", "ENV", "STATE", "CREATED (UTC)", "EXPIRES (UTC)",
              "LAST USED (UTC)", "CREATED BY"},
             rows);
  return kExitOk;
}

int TokenCreate(Context& ctx) {
  if (int rc = RequireFlag(ctx, "role")) return rc;
  pgfleet::v1::CreateTokenRequest request;
  request.set_role(ctx.flags().Get("role"));
  request.set_environment(ctx.flags().Get("env"));
  // A name people can recognise in `token list`: agent-prod, operator...
  std::string name = ctx.flags().Get("name");
  if (name.empty()) {
    name = request.environment().empty() ? request.role()
                                         : absl::StrCat(request.role(), "-", request.environment());
  }
  request.set_name(name);
  int64_t expires_in = 0;
  if (!ParseDurationFlag(ctx, "expires-in", &expires_in)) return kExitUsage;
  request.set_expires_in_seconds(expires_in);
  pgfleet::v1::CreateTokenResponse response;
  grpc::Status status = ctx.tokens().CreateToken(ctx.NewCall().get(), request, &response);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(response);
    return kExitOk;
  }
  // The secret alone on stdout (`fleetctl token create ... > token-file`); the rest to stderr.
  const pgfleet::v1::Token& token = response.token();
  fprintf(stderr, "created token %llu (%s, role %s%s, expires %s); it is shown only this once\n",
          static_cast<unsigned long long>(token.id()), token.name().c_str(), token.role().c_str(),
          token.environment().empty() ? ""
                                      : absl::StrCat(", environment ", token.environment()).c_str(),
          token.expires_unix_ms()
              ? absl::StrCat(FormatTime(token.expires_unix_ms()), " UTC").c_str()
              : "never");
  printf("%s\n", response.secret().c_str());
  return kExitOk;
}

int TokenRevoke(Context& ctx) {
  uint64_t id = 0;
  if (ctx.flags().positional.size() != 1 || !absl::SimpleAtoi(ctx.flags().positional[0], &id)) {
    fprintf(stderr, "usage: fleetctl token revoke ID (the ID column of fleetctl token list)\n");
    return kExitUsage;
  }
  pgfleet::v1::RevokeTokenRequest request;
  request.set_id(id);
  pgfleet::v1::Token token;
  grpc::Status status = ctx.tokens().RevokeToken(ctx.NewCall().get(), request, &token);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(token);
  } else {
    printf("revoked token %llu (%s, role %s)\n", static_cast<unsigned long long>(token.id()),
           token.name().c_str(), token.role().c_str());
  }
  return kExitOk;
}

const std::vector<Command>& Commands() {
  static const std::vector<Command> commands = {
      {"env list", "fleetctl env list", "environments, their desired version and convergence",
       EnvList},
      {"config push", "fleetctl config push --env ENV -f pgbouncer.ini [-m MESSAGE]",
       "store a new config version (validated first); does not deploy it", ConfigPush},
      {"config list", "fleetctl config list --env ENV", "config versions, newest first",
       ConfigList},
      {"config show", "fleetctl config show VERSION", "print a version's pgbouncer.ini",
       ConfigShow},
      {"config diff", "fleetctl config diff VERSION_A VERSION_B", "unified diff of two versions",
       ConfigDiff},
      {"config apply", "fleetctl config apply --env ENV --version V [--wait]",
       "make V the desired config of ENV at once (every agent); --wait shows progress until all "
       "converge, exit 5 on a NACK",
       ConfigApply},
      {"agents list", "fleetctl agents list [--env ENV]",
       "agents, link state, applied vs desired version", AgentsList},
      {"agents show", "fleetctl agents show AGENT_ID", "one agent in detail, with its pools",
       AgentsShow},
      {"pause",
       "fleetctl pause --env ENV [--db DB] [--for 15m] [--wait] [--reason TEXT] [--skip a,b] "
       "[--drain-timeout 60s]",
       "a maintenance window starting now: PAUSE on every agent (all must be connected, or "
       "skipped); each agent resumes by itself after --for (default 15m) even if the controller "
       "dies; --wait returns once all drained, or exits 5 naming what held the drain up (then "
       "everything is resumed)",
       Pause},
      {"resume", "fleetctl resume --env ENV [--db DB]", "end the active window: RESUME everywhere",
       Resume},
      {"maintenance schedule",
       "fleetctl maintenance schedule --env ENV [--db DB] --at TIME --duration D [--reason TEXT]",
       "a window in the future (TIME: RFC 3339 or +30m); overlapping windows are refused",
       MaintenanceSchedule},
      {"maintenance list", "fleetctl maintenance list [--env ENV]", "windows, newest first",
       MaintenanceList},
      {"maintenance show", "fleetctl maintenance show ID [--wait]",
       "a window with each agent's drain status", MaintenanceShow},
      {"maintenance cancel", "fleetctl maintenance cancel ID",
       "cancel a scheduled window, or end an active one (RESUME)", MaintenanceCancel},
      {"reload", "fleetctl reload (--env ENV | --agent ID)", "RELOAD the agents' configs", Reload},
      {"env set-upstream", "fleetctl env set-upstream --env ENV --upstream UPSTREAM",
       "require versions to complete in UPSTREAM before rolling out in ENV (admin)",
       EnvSetUpstream},
      {"rollout start",
       "fleetctl rollout start --env ENV --version V [--waves 1,25%,100%] [--bake 60s] "
       "[--max-unavailable N] [--max-cl-waiting N] [--max-maxwait-ms MS] [--max-server-errors N] "
       "[--max-login-failures N] [--connection-reserve N] [--force --reason TEXT] [--watch]",
       "roll V out in waves with health gates; a NACK or a failed gate rolls back by itself",
       RolloutStart},
      {"rollout status", "fleetctl rollout status [ID | --env ENV] [--watch]",
       "a rollout's waves and agents; --watch follows it live (exit 0 succeeded, 5 failed)",
       RolloutStatus},
      {"rollout list", "fleetctl rollout list [--env ENV]", "rollouts, newest first", RolloutList},
      {"rollout pause", "fleetctl rollout pause ID", "hold between waves",
       [](Context& ctx) { return RolloutAction(ctx, "pause"); }},
      {"rollout resume", "fleetctl rollout resume ID", "continue a paused rollout",
       [](Context& ctx) { return RolloutAction(ctx, "resume"); }},
      {"rollout abort", "fleetctl rollout abort ID", "stop and move changed agents back",
       [](Context& ctx) { return RolloutAction(ctx, "abort"); }},
      {"rollout rollback", "fleetctl rollout rollback --env ENV [--waves 100%] [--watch]",
       "roll the environment back to its previous good version", RolloutRollback},
      {"promote",
       "fleetctl promote --from staging --to prod [--version V] [rollout flags] [--watch]",
       "copy a version that completed upstream into the next environment and roll it out", Promote},
      {"token list", "fleetctl token list",
       "every token: id, name, role, environment scope, state (active, expired, revoked, "
       "superseded), created, expires, last used (to the minute); never the secret (admin)",
       TokenList},
      {"token create",
       "fleetctl token create --role agent|viewer|operator|admin [--env ENV] [--name NAME] "
       "[--expires-in 720h]",
       "a new token, printed once on stdout (the controller keeps only its sha256). Role agent "
       "is an agent's join token for one environment (--env required; give it to the agent with "
       "--join-token-file). The first admin token created ends the bootstrap token "
       "(PGFLEET_BOOTSTRAP_TOKEN) for good (admin)",
       TokenCreate},
      {"token revoke", "fleetctl token revoke ID",
       "the token stops working at once; agents using it are refused at their next connect. "
       "The last active admin token cannot be revoked (admin)",
       TokenRevoke},
  };
  return commands;
}

void PrintHelp(FILE* out) {
  fprintf(out, "fleetctl: the operator's CLI for pgfleet-controller\n\nCommands:\n");
  for (const Command& command : Commands()) {
    fprintf(out, "  %s\n      %s\n", command.usage, command.help);
  }
  fprintf(out,
          "\nGlobal flags:\n"
          "  --controller HOST:PORT   (or PGFLEET_CONTROLLER; default 127.0.0.1:7070)\n"
          "  --token TOKEN            (or PGFLEET_TOKEN, or ~/.config/pgfleet/token)\n"
          "  --tls-ca FILE            verify the controller's TLS certificate with this CA\n"
          "  --output table|json      (default table)\n"
          "  -h, --help               help for any command\n"
          "\nExit codes: 0 ok, 1 error, 2 bad usage, 3 controller unreachable,\n"
          "            4 not authenticated / not allowed, 5 failed on agents (NACK, command).\n");
}

}  // namespace
}  // namespace pgfleet::cli

int main(int argc, char** argv) {
  using namespace pgfleet::cli;
  Flags flags;
  std::vector<std::string> words;
  bool help = false;
  static const std::map<std::string, std::string> kShort = {
      {"-f", "file"}, {"-m", "message"}, {"-o", "output"}};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      help = true;
    } else if (kShort.count(arg) > 0 || arg.rfind("--", 0) == 0) {
      std::string key = kShort.count(arg) > 0 ? kShort.at(arg) : arg.substr(2);
      std::string value;
      size_t eq = key.find('=');
      if (eq != std::string::npos) {
        value = key.substr(eq + 1);
        key = key.substr(0, eq);
      } else if (key != "wait" && key != "watch" && key != "force" && i + 1 < argc) {
        value = argv[++i];
      }
      flags.values[key] = value;
    } else {
      words.push_back(arg);
    }
  }
  if (flags.Has("output") && flags.Get("output") != "json" && flags.Get("output") != "table") {
    fprintf(stderr, "fleetctl: --output is table or json\n");
    return kExitUsage;
  }
  // Longest match of command words: "config push" before "config".
  const Command* found = nullptr;
  size_t used = 0;
  for (const Command& command : Commands()) {
    std::vector<std::string> parts = absl::StrSplit(command.name, ' ');
    if (parts.size() <= words.size() && std::equal(parts.begin(), parts.end(), words.begin()) &&
        parts.size() > used) {
      found = &command;
      used = parts.size();
    }
  }
  if (found == nullptr) {
    if (!words.empty())
      fprintf(stderr, "fleetctl: unknown command '%s'\n\n", absl::StrJoin(words, " ").c_str());
    PrintHelp(words.empty() && help ? stdout : stderr);
    return words.empty() && help ? kExitOk : kExitUsage;
  }
  if (help) {
    printf("usage: %s\n\n%s\n\nRun 'fleetctl --help' for global flags and exit codes.\n",
           found->usage, found->help);
    return kExitOk;
  }
  flags.positional.assign(words.begin() + static_cast<long>(used), words.end());
  Context context(std::move(flags));
  return found->run(context);
}
