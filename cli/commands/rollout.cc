// fleetctl rollout and promote: rollouts in waves.
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

namespace {

bool IsRestart(const pgfleet::v1::Rollout& rollout) { return rollout.kind() == "restart"; }

void PrintRollout(const pgfleet::v1::Rollout& rollout) {
  if (IsRestart(rollout)) {
    printf("rollout %llu: %s restart%s%s  %s", static_cast<unsigned long long>(rollout.id()),
           rollout.environment().c_str(), rollout.only_outdated() ? " (only outdated)" : "",
           rollout.binary_version().empty()
               ? ""
               : absl::StrCat(" (binary on disk ", rollout.binary_version(), ")").c_str(),
           rollout.state().c_str());
  } else {
    printf("rollout %llu: %s v%llu -> v%llu  %s", static_cast<unsigned long long>(rollout.id()),
           rollout.environment().c_str(), static_cast<unsigned long long>(rollout.from_version()),
           static_cast<unsigned long long>(rollout.to_version()), rollout.state().c_str());
  }
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
    if (IsRestart(rollout)) {
      rows.push_back({agent.agent_id(), absl::StrCat(agent.wave() + 1),
                      agent.state() == "applied" ? "restarted" : agent.state(),
                      agent.old_pid() ? absl::StrCat(agent.old_pid()) : "-",
                      agent.new_pid() ? absl::StrCat(agent.new_pid()) : "-", agent.error()});
    } else {
      rows.push_back(
          {agent.agent_id(), absl::StrCat(agent.wave() + 1), agent.state(), agent.error()});
    }
  }
  if (rows.empty()) return;
  if (IsRestart(rollout)) {
    PrintTable({"AGENT", "WAVE", "STATE", "OLD PID", "NEW PID", "ERROR"}, rows);
  } else {
    PrintTable({"AGENT", "WAVE", "STATE", "ERROR"}, rows);
  }
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
    std::string line =
        absl::StrCat("rollout ", rollout.id(), " ", rollout.state(), " wave ",
                     std::min(rollout.current_wave() + 1, rollout.waves_size()), "/",
                     rollout.waves_size(), " ", rollout.phase(), " ", applied, "/", total,
                     IsRestart(rollout) ? std::string(" agents restarted")
                                        : absl::StrCat(" agents on v", rollout.to_version()),
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

}  // namespace

int StartAndShowRollout(Context& ctx, pgfleet::v1::StartRolloutRequest request) {
  if (int rc = FillRolloutOptions(ctx, &request)) return rc;
  std::string selector;
  if (!SelectorFlag(ctx, &selector)) return kExitUsage;
  request.set_selector(selector);
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

namespace {

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
  return StartAndShowRollout(ctx, std::move(request));
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
                    IsRestart(r) ? absl::StrCat("restart (v", r.to_version(), ")")
                                 : absl::StrCat("v", r.from_version(), " -> v", r.to_version()),
                    r.state(), absl::StrJoin(r.waves(), ","), r.created_by(),
                    FormatTime(r.created_unix_ms()), r.reason()});
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

}  // namespace

namespace {

// The flags of a rollout, shared by `rollout start` and `promote`.
std::vector<FlagSpec> RolloutOptionFlags() {
  return {
      {"waves", "", "1,25%,100%", "agents per wave: counts or percentages"},
      {"bake", "", "DURATION", "how long each wave must stay healthy before the next (60s)"},
      {"max-unavailable", "", "N", "agents that may be down or unconverged in a wave"},
      {"max-cl-waiting", "", "N", "health gate: clients waiting per pool"},
      {"max-maxwait-ms", "", "MS", "health gate: the longest client wait"},
      {"max-server-errors", "", "N", "health gate: new server connection errors"},
      {"max-login-failures", "", "N", "health gate: new client login failures"},
      {"connection-reserve", "", "N",
       "server connections to leave free under max_connections in the pre-flight check"},
      {"force", "", "", "start despite pre-flight refusals (needs --reason)"},
      {"reason", "", "TEXT", "why --force is needed, kept with the rollout"},
      {"watch", "", "", "follow the rollout live (exit 0 succeeded, 5 failed)"},
  };
}

}  // namespace

std::vector<CommandSpec> RolloutCommands() {
  std::vector<FlagSpec> start_flags = {{"env", "", "ENV", "the environment", true},
                                       {"version", "", "V", "the version (v12 or 12)", true}};
  for (FlagSpec& flag : RolloutOptionFlags()) start_flags.push_back(std::move(flag));
  start_flags.push_back(SelectorFlagSpec(
      "only the agents whose labels match move; they stay pinned to V and the environment's "
      "desired version is unchanged (a full rollout unpins them)"));
  std::vector<FlagSpec> promote_flags = {
      {"from", "", "ENV", "the environment the version completed in", true},
      {"to", "", "ENV", "the environment to roll it out in", true},
      {"version", "", "V", "the version (default: the newest that completed in --from)"}};
  for (FlagSpec& flag : RolloutOptionFlags()) promote_flags.push_back(std::move(flag));
  const FlagSpec watch = {"watch", "", "", "follow the rollout live (exit 0 succeeded, 5 failed)"};
  return {
      {{"rollout", "start"},
       "",
       0,
       "roll V out in waves with health gates; a NACK or a failed gate rolls back by itself",
       start_flags,
       RolloutStart},
      {{"rollout", "status"},
       "[ID]",
       1,
       "a rollout's waves and agents (ID, or the latest of --env); --watch follows it live (exit "
       "0 succeeded, 5 failed)",
       {{"env", "", "ENV", "the environment's latest rollout"}, watch},
       RolloutStatus},
      {{"rollout", "list"},
       "",
       0,
       "rollouts, newest first",
       {{"env", "", "ENV", "only this environment's rollouts"}},
       RolloutList},
      {{"rollout", "pause"},
       "ID",
       1,
       "hold between waves",
       {},
       [](Context& ctx) { return RolloutAction(ctx, "pause"); }},
      {{"rollout", "resume"},
       "ID",
       1,
       "continue a paused rollout",
       {},
       [](Context& ctx) { return RolloutAction(ctx, "resume"); }},
      {{"rollout", "abort"},
       "ID",
       1,
       "stop and move changed agents back",
       {},
       [](Context& ctx) { return RolloutAction(ctx, "abort"); }},
      {{"rollout", "rollback"},
       "",
       0,
       "roll the environment back to its previous good version",
       {{"env", "", "ENV", "the environment", true},
        {"waves", "", "100%", "agents per wave (default: all at once)"},
        watch},
       RolloutRollback},
      {{"promote"},
       "",
       0,
       "copy a version that completed upstream into the next environment and roll it out",
       promote_flags,
       Promote},
  };
}
}  // namespace pgfleet::cli
