// fleetctl pause, resume and maintenance: maintenance windows.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/commands/commands.h"

namespace pgfleet::cli {
namespace {

void PrintWindow(const pgfleet::v1::MaintenanceWindow& window) {
  printf("window %llu: %s %s%s  %s  %s -> %s%s\n", static_cast<unsigned long long>(window.id()),
         window.environment().c_str(),
         window.database().empty() ? "(all databases)" : window.database().c_str(),
         window.selector().empty() ? "" : absl::StrCat(" -l ", window.selector()).c_str(),
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
      if (agent.state() == "skipped" || agent.state() == "resumed") continue;
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

// What a new window covers, from --env, --db, --reason, --skip and -l (pause and schedule take
// the same). False after a usage error was printed.
template <typename WindowRequest>
bool FillWindowScope(Context& ctx, WindowRequest& request) {
  request.set_environment(ctx.flags().Get("env"));
  request.set_database(ctx.flags().Get("db"));
  request.set_reason(ctx.flags().Get("reason"));
  for (const std::string& agent : SplitList(ctx.flags().Get("skip"))) {
    request.add_skip_agents(agent);
  }
  std::string selector;
  if (!SelectorFlag(ctx, &selector)) return false;
  request.set_selector(selector);
  return true;
}

int Pause(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  pgfleet::v1::PauseWindowRequest request;
  if (!FillWindowScope(ctx, request)) return kExitUsage;
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
  std::string selector;
  if (!SelectorFlag(ctx, &selector)) return kExitUsage;
  request.set_selector(selector);
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
  if (!FillWindowScope(ctx, request)) return kExitUsage;
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

}  // namespace

std::vector<CommandSpec> MaintenanceCommands() {
  const FlagSpec env = {"env", "", "ENV", "the environment", true};
  const FlagSpec db = {"db", "", "DB", "only this database (default: all of them)"};
  const FlagSpec reason = {"reason", "", "TEXT", "why, shown with the window"};
  const FlagSpec skip = {"skip", "", "AGENT,AGENT", "agents left out of the window"};
  const FlagSpec drain_timeout = {"drain-timeout", "", "DURATION",
                                  "how long the drain may take before the window fails (60s)"};
  return {
      {{"pause"},
       "",
       0,
       "a maintenance window starting now: PAUSE on every agent (all must be connected, or "
       "skipped); each agent resumes by itself after --for (default 15m) even if the controller "
       "dies; --wait returns once all drained, or exits 5 naming what held the drain up (then "
       "everything is resumed)",
       {env,
        db,
        {"for", "", "DURATION", "how long the window lasts (default 15m)"},
        {"wait", "", "", "return once every agent drained (exit 5 if the drain failed)"},
        reason,
        skip,
        drain_timeout,
        SelectorFlagSpec("only the agents whose labels match (others are not paused)")},
       Pause},
      {{"resume"},
       "",
       0,
       "end the active window: RESUME everywhere; with -l, RESUME only the matching agents of the "
       "active windows, which go on for the others (and end once they pause nobody)",
       {env,
        {"db", "", "DB", "the database the window paused"},
        SelectorFlagSpec("only the paused agents whose labels match (the window goes on for the "
                         "others)")},
       Resume},
      {{"maintenance", "schedule"},
       "",
       0,
       "a window in the future (TIME: RFC 3339 or +30m); overlapping windows are refused",
       {env,
        db,
        {"at", "", "TIME", "when it starts: RFC 3339 (2026-11-25T22:00:00Z) or +30m", true},
        {"duration", "", "DURATION", "how long it lasts", true},
        reason,
        skip,
        drain_timeout,
        SelectorFlagSpec("only the agents whose labels match (others are not paused)")},
       MaintenanceSchedule},
      {{"maintenance", "list"},
       "",
       0,
       "windows, newest first",
       {{"env", "", "ENV", "only this environment's windows"}},
       MaintenanceList},
      {{"maintenance", "show"},
       "ID",
       1,
       "a window with each agent's drain status",
       {{"wait", "", "", "follow the drain until it ends (exit 5 if it failed)"}},
       MaintenanceShow},
      {{"maintenance", "cancel"},
       "ID",
       1,
       "cancel a scheduled window, or end an active one (RESUME)",
       {},
       MaintenanceCancel},
  };
}
}  // namespace pgfleet::cli
