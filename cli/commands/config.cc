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
#include "common/config/overlay.h"
#include "controller/config/overlay_proto.h"

namespace pgfleet::cli {
namespace {

using controller::OverlayFromProto;
using controller::OverlayToProto;

int ConfigPush(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  if (int rc = RequireFlag(ctx, "file")) return rc;
  pgfleet::v1::PushConfigRequest request;
  request.set_environment(ctx.flags().Get("env"));
  request.set_message(ctx.flags().Get("message"));
  {
    const std::string path = ctx.flags().Get("file");
    absl::StatusOr<std::string> text = ReadInputFile(path);
    absl::Status utf8 = text.ok() ? CheckUtf8Text(path, *text) : text.status();
    if (!utf8.ok()) {
      fprintf(stderr, "fleetctl: %s\n", std::string(utf8.message()).c_str());
      return kExitUsage;
    }
    request.set_ini_text(*std::move(text));
  }
  // Files pushed with the config, each backing one [pgbouncer] key (auth_hba_file=hba.conf):
  // the agents write them under their state dir and point the key at their copy.
  for (const std::string& attach : ctx.flags().GetAll("attach")) {
    const size_t equals = attach.find('=');
    if (equals == std::string::npos || equals == 0 || equals + 1 == attach.size()) {
      fprintf(stderr, "fleetctl: --attach %s: expected KEY=FILE (auth_hba_file=hba.conf)\n",
              attach.c_str());
      return kExitUsage;
    }
    const std::string path = attach.substr(equals + 1);
    pgfleet::v1::ConfigFile* file = request.add_files();
    file->set_key(attach.substr(0, equals));
    absl::StatusOr<std::string> content = ReadInputFile(path);
    if (!content.ok()) {
      fprintf(stderr, "fleetctl: --attach %s\n", std::string(content.status().message()).c_str());
      return kExitUsage;
    }
    file->set_content(*std::move(content));
  }
  for (const std::string& key : ctx.flags().GetAll("detach")) request.add_remove_files(key);
  for (const std::string& path : ctx.flags().GetAll("overlay")) {
    absl::StatusOr<std::string> text = ReadInputFile(path);
    if (!text.ok()) {
      fprintf(stderr, "fleetctl: --overlay %s\n", std::string(text.status().message()).c_str());
      return kExitUsage;
    }
    absl::StatusOr<std::vector<config::ConfigOverlay>> overlays =
        config::ParseOverlayFile(*text, path);
    if (!overlays.ok()) {
      fprintf(stderr, "fleetctl: %s\n", std::string(overlays.status().message()).c_str());
      return kExitUsage;
    }
    for (const config::ConfigOverlay& overlay : *overlays) {
      *request.add_overlays() = OverlayToProto(overlay);
    }
  }
  // Said here, with the sizes: the controller's refusal would only say "larger than max".
  if (const size_t size = request.ByteSizeLong(); size > kMaxRequestBytes) {
    fprintf(stderr,
            "fleetctl: this push is %zu bytes (the config with its overlays and attached "
            "files); the controller takes at most %zu MiB in one call\n",
            size, kMaxRequestBytes >> 20);
    return kExitUsage;
  }
  pgfleet::v1::ConfigVersion version;
  grpc::Status status = ctx.stub().PushConfig(ctx.NewCall().get(), request, &version);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(version);
  } else {
    printf("pushed config version v%llu to %s (sha256 %s%s)\n",
           static_cast<unsigned long long>(version.version()), version.environment().c_str(),
           version.sha256().substr(0, 12).c_str(),
           version.overlays().empty()
               ? ""
               : absl::StrCat(", ", version.overlays_size(), " overlays").c_str());
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
  } else if (version.overlays().empty()) {
    printf("%s", version.ini_text().c_str());
  } else {
    // The base, then the overlays in the file format `config push --overlay` reads.
    std::vector<config::ConfigOverlay> overlays;
    for (const auto& overlay : version.overlays()) overlays.push_back(OverlayFromProto(overlay));
    printf("; ---- base ----\n%s", version.ini_text().c_str());
    if (!version.ini_text().empty() && version.ini_text().back() != '\n') printf("\n");
    printf("; ---- %d overlays (base < label overlays < agent overlays) ----\n%s",
           version.overlays_size(), config::FormatOverlays(overlays).c_str());
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

int FetchRender(Context& ctx, const std::string& agent, const std::string& version_text,
                pgfleet::v1::RenderedConfig* out) {
  pgfleet::v1::RenderConfigRequest request;
  request.set_agent_id(agent);
  request.set_environment(ctx.flags().Get("env"));
  if (!version_text.empty()) {
    uint64_t version = 0;
    if (!ParseVersion(version_text, &version)) {
      fprintf(stderr, "fleetctl: '%s' is not a version (like v12 or 12)\n", version_text.c_str());
      return kExitUsage;
    }
    request.set_version(version);
  }
  grpc::Status status = ctx.stub().RenderConfig(ctx.NewCall().get(), request, out);
  return status.ok() ? kExitOk : ctx.Fail(status);
}

int ConfigRender(Context& ctx) {
  if (int rc = RequireFlag(ctx, "agent")) return rc;
  pgfleet::v1::RenderedConfig rendered;
  if (int rc = FetchRender(ctx, ctx.flags().Get("agent"), ctx.flags().Get("version"), &rendered)) {
    return rc;
  }
  if (ctx.json()) {
    ctx.PrintJson(rendered);
    return kExitOk;
  }
  // stdout is exactly the agent's ini (its sha256 is the render's); the summary goes to stderr.
  fprintf(stderr, "v%llu for agent %s (sha256 %s): %s\n",
          static_cast<unsigned long long>(rendered.version()), rendered.agent_id().c_str(),
          rendered.sha256().substr(0, 12).c_str(),
          rendered.applied_overlays().empty()
              ? "the base, no overlay applies"
              : absl::StrCat("base + ", absl::StrJoin(rendered.applied_overlays(), " + ")).c_str());
  printf("%s", rendered.ini_text().c_str());
  return kExitOk;
}

int ConfigDiff(Context& ctx) {
  if (ctx.flags().positional.size() != 2) {
    fprintf(stderr, "usage: fleetctl config diff VERSION_A VERSION_B\n");
    return kExitUsage;
  }
  if (ctx.flags().Has("agent")) {
    // Both versions as this agent runs them: base plus the overlays that apply to it.
    const std::string agent = ctx.flags().Get("agent");
    pgfleet::v1::RenderedConfig a, b;
    if (int rc = FetchRender(ctx, agent, ctx.flags().positional[0], &a)) return rc;
    if (int rc = FetchRender(ctx, agent, ctx.flags().positional[1], &b)) return rc;
    printf("%s", UnifiedDiff(a.ini_text(), b.ini_text(), absl::StrCat("v", a.version(), "@", agent),
                             absl::StrCat("v", b.version(), "@", agent))
                     .c_str());
    return kExitOk;
  }
  pgfleet::v1::ConfigVersion a, b;
  if (int rc = FetchConfig(ctx, ctx.flags().positional[0], &a)) return rc;
  if (int rc = FetchConfig(ctx, ctx.flags().positional[1], &b)) return rc;
  printf("%s", UnifiedDiff(a.ini_text(), b.ini_text(), absl::StrCat("v", a.version()),
                           absl::StrCat("v", b.version()))
                   .c_str());
  if (a.overlays_size() + b.overlays_size() > 0) {
    std::vector<config::ConfigOverlay> oa, ob;
    for (const auto& overlay : a.overlays()) oa.push_back(OverlayFromProto(overlay));
    for (const auto& overlay : b.overlays()) ob.push_back(OverlayFromProto(overlay));
    printf("%s", UnifiedDiff(config::FormatOverlays(oa), config::FormatOverlays(ob),
                             absl::StrCat("v", a.version(), " overlays"),
                             absl::StrCat("v", b.version(), " overlays"))
                     .c_str());
  }
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
      if (AgentConverged(agent, version)) {
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
       "store a new config version (validated first, as rendered for every agent of ENV); does "
       "not deploy it. An overlay file holds per-host edits: one or more blocks, each a "
       "[pgfleet.overlay] section with `selector = LABEL SELECTOR` (zone=a, size in "
       "(large,xlarge)) "
       "or `agent = ID`, optional `name = TEXT` and `remove = SECTION.KEY, ...`, followed by "
       "ordinary sections ([pgbouncer], [databases], [users]...) with the keys to set. "
       "Precedence: base < label overlays < agent overlays; two label overlays (or two for one "
       "agent) that could select the same agent and set or remove a key differently are refused",
       {{"env", "", "ENV", "the environment the version belongs to", true},
        {"file", "f", "FILE", "the pgbouncer.ini to store (the base)", true},
        {"overlay", "", "FILE", "an overlay file (repeat --overlay for several; order kept)"},
        {"attach", "", "KEY=FILE",
         "push FILE's content as the file backing [pgbouncer] KEY (auth_file, auth_hba_file, "
         "auth_ident_file, client_/server_tls_{key,cert,ca}_file); repeat for several. Files "
         "not attached are kept from the newest version"},
        {"detach", "", "KEY", "drop the pushed file backing KEY (repeat for several)"},
        {"message", "m", "MESSAGE", "why, kept with the version"}},
       ConfigPush},
      {{"config", "list"},
       "",
       0,
       "config versions, newest first",
       {{"env", "", "ENV", "the environment", true}},
       ConfigList},
      {{"config", "show"},
       "VERSION",
       1,
       "print a version's pgbouncer.ini (the base) and its overlays",
       {},
       ConfigShow},
      {{"config", "render"},
       "",
       0,
       "print the pgbouncer.ini one agent runs for a version (base + the overlays that apply to "
       "it, by its current labels); stdout is exactly the agent's file",
       {{"agent", "", "ID", "the agent", true},
        {"env", "", "ENV", "the agent's environment (checked when given)"},
        {"version", "", "V", "the version (default: the agent's desired one)"}},
       ConfigRender},
      {{"config", "diff"},
       "VERSION_A VERSION_B",
       2,
       "unified diff of two versions (base, then overlays); with --agent, of the two as rendered "
       "for that agent",
       {{"agent", "", "ID", "diff the versions as this agent would run them"}},
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
