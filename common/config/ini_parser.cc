#include "common/config/ini_parser.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"

namespace pgfleet::config {
namespace {

struct IniState {
  std::vector<IniEntry> entries;
  // Canonical paths of the files being parsed, outermost first, to name include loops
  // instead of letting them run into the depth limit.
  std::vector<std::string> include_stack;
  const IncludeCheck* check_include = nullptr;
};

std::string Location(const std::string& file, int line) { return absl::StrCat(file, ":", line); }

absl::Status SyntaxError(const std::string& file, int line, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(Location(file, line), ": syntax error: ", what));
}

// The identity of a file for loop detection; a path that cannot be resolved (in-memory text
// in tests) is only normalized, which is still enough to see a file including itself.
std::string CanonicalPath(const std::string& path) {
  std::error_code ec;
  std::filesystem::path canonical = std::filesystem::weakly_canonical(path, ec);
  if (ec) return std::filesystem::path(path).lexically_normal().string();
  return canonical.string();
}

// Relative includes are anchored at the including file, so a config directory can be moved
// or loaded from any working directory (PgBouncer resolves them against its cwd).
std::string ResolveInclude(const std::string& including_file, const std::string& target) {
  std::filesystem::path target_path(target);
  if (target_path.is_absolute()) return target;
  std::filesystem::path dir = std::filesystem::path(including_file).parent_path();
  if (dir.empty()) return target;
  return (dir / target_path).string();
}

absl::Status ParseText(const std::string& text, const std::string& path, int depth,
                       IniState& state);

absl::Status HandleInclude(absl::string_view target, const std::string& path, int line, int depth,
                           IniState& state) {
  if (target.empty()) return SyntaxError(path, line, "%include needs a file name");
  std::string resolved = ResolveInclude(path, std::string(target));
  std::string where = absl::StrCat(Location(path, line), ": %include '", target, "'");
  if (depth >= kMaxIncludeDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": includes nested deeper than ", kMaxIncludeDepth, " levels"));
  }
  std::string canonical = CanonicalPath(resolved);
  for (const std::string& open_file : state.include_stack) {
    if (open_file == canonical) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": include loop: ", absl::StrJoin(state.include_stack, " -> "),
                       " -> ", canonical));
    }
  }
  if (state.check_include != nullptr && *state.check_include) {
    if (absl::Status allowed = (*state.check_include)(resolved); !allowed.ok()) {
      return absl::Status(allowed.code(), absl::StrCat(where, ": ", allowed.message()));
    }
  }
  absl::StatusOr<std::string> contents = ReadTextFile(resolved);
  if (!contents.ok()) {
    // Keep the code (NotFound, PermissionDenied) so callers can tell the cases apart.
    return absl::Status(contents.status().code(),
                        absl::StrCat(where, ": ", contents.status().message()));
  }
  return ParseText(*contents, resolved, depth + 1, state);
}

// `[name]`, optionally followed by a comment.
absl::Status HandleSection(absl::string_view stripped, const std::string& path, int line,
                           IniState& state) {
  size_t close = stripped.find(']');
  if (close == absl::string_view::npos) return SyntaxError(path, line, "missing ']'");
  absl::string_view rest = absl::StripLeadingAsciiWhitespace(stripped.substr(close + 1));
  if (!rest.empty() && rest.front() != ';' && rest.front() != '#') {
    return SyntaxError(path, line, absl::StrCat("unexpected '", rest, "' after ']'"));
  }
  absl::string_view name = absl::StripAsciiWhitespace(stripped.substr(1, close - 1));
  if (name.empty()) return SyntaxError(path, line, "empty section name");
  state.entries.push_back({IniEntry::Kind::kSection, path, line, std::string(name), std::string()});
  return absl::OkStatus();
}

// `key = value`. A key is a bare word or a double-quoted name with "" for a quote, which is
// how [databases] and [users] spell names with spaces or punctuation.
absl::Status HandleKeyValue(absl::string_view s, const std::string& path, int line,
                            IniState& state) {
  std::string key;
  size_t i = 0;
  if (s[0] == '"') {
    for (i = 1;; ++i) {
      if (i >= s.size()) return SyntaxError(path, line, "unterminated quoted name");
      if (s[i] == '"') {
        if (i + 1 < s.size() && s[i + 1] == '"') {
          key += '"';
          ++i;
          continue;
        }
        ++i;
        break;
      }
      key += s[i];
    }
    if (key.empty()) return SyntaxError(path, line, "empty quoted name");
  } else {
    while (i < s.size() && s[i] != '=' && !absl::ascii_isspace(static_cast<unsigned char>(s[i]))) {
      key += s[i++];
    }
    if (key.empty()) return SyntaxError(path, line, "missing key before '='");
  }
  while (i < s.size() && absl::ascii_isspace(static_cast<unsigned char>(s[i]))) ++i;
  if (i >= s.size() || s[i] != '=') {
    return SyntaxError(path, line, absl::StrCat("expected '=' after '", key, "'"));
  }
  absl::string_view value = absl::StripAsciiWhitespace(s.substr(i + 1));
  state.entries.push_back(
      {IniEntry::Kind::kKeyValue, path, line, std::move(key), std::string(value)});
  return absl::OkStatus();
}

absl::Status ParseText(const std::string& text, const std::string& path, int depth,
                       IniState& state) {
  state.include_stack.push_back(CanonicalPath(path));
  int line = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++line;
    // Also drops the '\r' of CRLF files.
    absl::string_view s = absl::StripAsciiWhitespace(raw);
    if (s.empty() || s.front() == ';' || s.front() == '#') continue;
    if (s.front() == '%') {
      constexpr absl::string_view kInclude = "%include";
      if (s.substr(0, kInclude.size()) == kInclude &&
          (s.size() == kInclude.size() ||
           absl::ascii_isblank(static_cast<unsigned char>(s[kInclude.size()])))) {
        absl::string_view target = absl::StripAsciiWhitespace(s.substr(kInclude.size()));
        PGF_RETURN_IF_ERROR(HandleInclude(target, path, line, depth, state));
        continue;
      }
      return SyntaxError(path, line, absl::StrCat("unknown directive '", s, "'"));
    }
    if (s.front() == '[') {
      PGF_RETURN_IF_ERROR(HandleSection(s, path, line, state));
      continue;
    }
    PGF_RETURN_IF_ERROR(HandleKeyValue(s, path, line, state));
  }
  state.include_stack.pop_back();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<IniEntry>> ParseIni(const std::string& text, const std::string& path,
                                               const IncludeCheck& check_include) {
  IniState state;
  state.check_include = &check_include;
  PGF_RETURN_IF_ERROR(ParseText(text, path, 0, state));
  return std::move(state.entries);
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot read '", path, "'"));
  std::string contents;
  struct stat st {};
  if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    close(fd);
    return absl::ErrnoToStatus(EISDIR, absl::StrCat("cannot read '", path, "'"));
  }
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      int saved_errno = errno;
      close(fd);
      return absl::ErrnoToStatus(saved_errno, absl::StrCat("cannot read '", path, "'"));
    }
    if (n == 0) break;
    contents.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return contents;
}

}  // namespace pgfleet::config
