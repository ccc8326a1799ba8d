// Which binary this agent runs, and whether the one now on disk at its path is another (a
// package upgrade replaced it): what `fleetctl agents list` shows and --only-outdated uses.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace pgfleet::agent {

// The project's version (CMake's PROJECT_VERSION, set for build_info.cc alone so a version
// bump recompiles one file).
extern const char kAgentVersion[];
// What SHOW VERSION prints and --version's first line. Tools (pgbouncer_exporter, the PgBouncer
// test suite) parse "PgBouncer X.Y.Z" and pick SHOW columns and features by it, so it names the
// release whose console and config the agent has: "PgBouncer 1.25.2 (pgfleet-agent VERSION)".
extern const char kVersionLine[];

// The GNU build id of an ELF file (the linker's NT_GNU_BUILD_ID note, hex), or "sha256:HEX" of
// the whole file when it has none (a stripped or non-ELF binary, a script).
absl::StatusOr<std::string> BuildIdOfFile(const std::string& path);

// The running binary's build id, read once from /proc/self/exe (the inode this process runs,
// even after an upgrade removed its path). Empty if it could not be read.
const std::string& RunningBuildId();

// Whether the file at the executable's path now has another build id than the running one. A
// file that cannot be read counts as not outdated (nothing newer to restart into). The file is
// re-read only when its inode, size or mtime changed.
bool BinaryOutdated();

// The binary now at the executable's path: its build id and the agent version it embeds (both
// empty when it cannot be read; version empty for a binary that embeds none). Re-read under
// the same rule as BinaryOutdated.
struct OnDiskBinary {
  std::string build_id;
  std::string version;
};
OnDiskBinary BinaryOnDisk();

// The version a binary file embeds (what BinaryOnDisk reads), or empty.
std::string EmbeddedVersionOfFile(const std::string& path);

}  // namespace pgfleet::agent
