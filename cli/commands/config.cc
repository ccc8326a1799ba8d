// fleetctl config: config versions.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <thread>
#include <utility>
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

// Credentials and TLS files by fingerprint (the API never shows their contents), and rotation
// overlaps: "changed (fp A -> fp B)", "unchanged (fp A)", "added", "removed". Empty when
// neither version has any.
std::string SecretsDiff(const pgfleet::v1::ConfigVersion& a, const pgfleet::v1::ConfigVersion& b) {
  std::map<std::string, std::pair<std::string, std::string>> files;  // key -> (fp in a, in b)
  for (const auto& file : a.files()) files[file.key()].first = file.fingerprint();
  for (const auto& file : b.files()) files[file.key()].second = file.fingerprint();
  std::map<std::string, std::pair<int64_t, int64_t>> overlaps;  // user -> (expiry a, b)
  for (const auto& overlap : a.credential_overlaps()) {
    overlaps[overlap.user()].first = overlap.expires_unix_ms();
  }
  for (const auto& overlap : b.credential_overlaps()) {
    overlaps[overlap.user()].second = overlap.expires_unix_ms();
  }
  if (files.empty() && overlaps.empty()) return "";
  std::string out;
  for (const auto& [key, fps] : files) {
    const auto& [in_a, in_b] = fps;
    if (in_a.empty()) {
      absl::StrAppend(&out, "file ", key, ": added (fp ", in_b, ")\n");
    } else if (in_b.empty()) {
      absl::StrAppend(&out, "file ", key, ": removed (fp ", in_a, ")\n");
    } else if (in_a != in_b) {
      absl::StrAppend(&out, "file ", key, ": changed (fp ", in_a, " -> fp ", in_b, ")\n");
    } else {
      absl::StrAppend(&out, "file ", key, ": unchanged (fp ", in_a, ")\n");
    }
  }
  for (const auto& [user, expiries] : overlaps) {
    const auto& [in_a, in_b] = expiries;
    if (in_a == 0) {
      absl::StrAppend(&out, "rotation of ", user, ": opened (old secret accepted until ",
                      FormatTime(in_b), " UTC)\n");
    } else if (in_b == 0) {
      absl::StrAppend(&out, "rotation of ", user, ": closed\n");
    } else if (in_a != in_b) {
      absl::StrAppend(&out, "rotation of ", user, ": changed (until ", FormatTime(in_a), " -> ",
                      FormatTime(in_b), " UTC)\n");
    } else {
      absl::StrAppend(&out, "rotation of ", user, ": unchanged\n");
    }
  }
  return out;
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
  printf("%s", SecretsDiff(a, b).c_str());
  return kExitOk;
}

// Polls until every connected agent of `env` runs `version`, or one NACKs it.

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

}  // namespace

std::vector<CommandSpec> ConfigCommands() {
  return {
      {{"config", "push"},
       "",
       0,
       "store a new config version (validated first); does not deploy it",
       {{"env", "", "ENV", "the environment the version belongs to", true},
        {"file", "f", "FILE", "the pgbouncer.ini to store", true},
        {"message", "m", "MESSAGE", "why, kept with the version"}},
       ConfigPush},
      {{"config", "list"},
       "",
       0,
       "config versions, newest first",
       {{"env", "", "ENV", "the environment", true}},
       ConfigList},
      {{"config", "show"}, "VERSION", 1, "print a version's pgbouncer.ini", {}, ConfigShow},
      {{"config", "diff"},
       "VERSION_A VERSION_B",
       2,
       "unified diff of two versions",
       {},
       ConfigDiff},
      {{"config", "apply"},
       "",
       0,
       "make V the desired config of ENV at once (every agent); --wait shows progress until all "
       "converge, exit 5 on a NACK",
       {{"env", "", "ENV", "the environment", true},
        {"version", "", "V", "the version (v12 or 12)", true},
        {"wait", "", "", "follow the agents until all run V (exit 5 on a NACK)"}},
       ConfigApply},
  };
}
}  // namespace pgfleet::cli
