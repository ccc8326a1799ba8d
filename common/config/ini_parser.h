// The line syntax of pgbouncer.ini, without any meaning attached to sections or keys: what
// libusual's parse_ini_file accepts, plus quoted key names and %include resolved relative to
// the including file. config.cc gives the entries their meaning.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pgfleet::config {

// PgBouncer's (libusual's) MAX_INCLUDE: the top file is depth 0, an %include in a file at
// this depth is refused. It also ends include loops that the loop check cannot see.
inline constexpr int kMaxIncludeDepth = 10;

struct IniEntry {
  enum class Kind { kSection, kKeyValue };
  Kind kind = Kind::kKeyValue;
  std::string file;   // The file the line is in (an %include'd file for its own lines).
  int line = 0;       // 1-based.
  std::string key;    // Section name, or the key with double quotes removed ("" -> ").
  std::string value;  // Rest of the line after '=', surrounding whitespace trimmed, verbatim.
};

// Splits `text` (the contents of `path`) into entries in file order, with %include'd files
// expanded in place. `path` names the text in errors and its directory anchors relative
// %include paths; included files are read from disk. Errors are InvalidArgument
// "FILE:LINE: ..." for syntax, and the read error's code (NotFound, ...) for includes.
// `check_include`, when set, is called with each %include'd file's path before it is read; an
// error refuses the include (a config pushed by the controller may only include files where
// the agent's command line allows).
using IncludeCheck = std::function<absl::Status(const std::string& path)>;
absl::StatusOr<std::vector<IniEntry>> ParseIni(const std::string& text, const std::string& path,
                                               const IncludeCheck& check_include = {});

// Reads a whole file. NotFound / PermissionDenied / ... naming `path` and the errno text.
absl::StatusOr<std::string> ReadTextFile(const std::string& path);

}  // namespace pgfleet::config
