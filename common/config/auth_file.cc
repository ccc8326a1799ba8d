#include "common/config/auth_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/auth_crypto.h"

namespace pgfleet::config {
namespace {

absl::Status LineError(const std::string& path, int line_number, std::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(
      path, ":", line_number, ": ", absl::string_view(message.data(), message.size())));
}

// Reads a quoted field starting at line[*pos] == '"'; "" inside is a literal quote. On success
// *pos is just past the closing quote.
bool ReadQuoted(std::string_view line, size_t* pos, std::string* out) {
  out->clear();
  size_t i = *pos + 1;
  while (i < line.size()) {
    if (line[i] == '"') {
      if (i + 1 < line.size() && line[i + 1] == '"') {
        out->push_back('"');
        i += 2;
        continue;
      }
      *pos = i + 1;
      return true;
    }
    out->push_back(line[i]);
    ++i;
  }
  return false;
}

void SkipSpaces(std::string_view line, size_t* pos) {
  while (*pos < line.size() && absl::ascii_isspace(static_cast<unsigned char>(line[*pos]))) {
    ++*pos;
  }
}

// PostgreSQL's own test (get_password_type): "md5" + exactly 32 lower-case hex digits. Upper
// case is not an md5 hash to PostgreSQL either, and would not produce matching responses.
bool IsMd5Hash(std::string_view secret) {
  if (secret.size() != 35 || !secret.starts_with("md5")) return false;
  for (char c : secret.substr(3)) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<UserSecret> MakeUserSecret(const std::string& user, const std::string& secret) {
  UserSecret entry;
  entry.user = user;
  entry.secret = secret;
  if (IsMd5Hash(secret)) {
    entry.kind = SecretKind::kMd5;
  } else if (secret.starts_with("SCRAM-SHA-256$")) {
    absl::StatusOr<crypto::ScramKeys> keys = crypto::ParseScramSecret(secret);
    if (!keys.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("user \"", user, "\": ", keys.status().message()));
    }
    entry.kind = SecretKind::kScramSha256;
  } else {
    entry.kind = SecretKind::kPlain;
  }
  return entry;
}

absl::StatusOr<AuthFile> ParseAuthFile(const std::string& text, const std::string& path) {
  AuthFile result;
  int line_number = 0;
  std::string_view rest = text;
  while (!rest.empty()) {
    const size_t end = rest.find('\n');
    const std::string_view line = rest.substr(0, end);
    rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
    ++line_number;
    size_t pos = 0;
    SkipSpaces(line, &pos);
    if (pos == line.size() || line[pos] == ';' || line[pos] == '#') continue;
    if (line[pos] != '"') {
      return LineError(path, line_number, "expected a quoted user name");
    }
    UserSecret entry;
    if (!ReadQuoted(line, &pos, &entry.user)) {
      return LineError(path, line_number, "unterminated quote in user name");
    }
    if (entry.user.empty()) return LineError(path, line_number, "empty user name");
    // Line-based unlike PgBouncer, whose scanner would take the next line's first field as
    // the secret of a user written without one.
    SkipSpaces(line, &pos);
    if (pos == line.size()) {
      return LineError(path, line_number,
                       absl::StrCat("missing secret for user \"", entry.user, "\""));
    }
    if (line[pos] != '"') {
      return LineError(path, line_number,
                       absl::StrCat("expected a quoted secret for user \"", entry.user, "\""));
    }
    if (!ReadQuoted(line, &pos, &entry.secret)) {
      return LineError(path, line_number,
                       absl::StrCat("unterminated quote in secret for user \"", entry.user, "\""));
    }
    // Anything after the secret is ignored, as PgBouncer does.

    absl::StatusOr<UserSecret> made = MakeUserSecret(entry.user, entry.secret);
    if (!made.ok()) return LineError(path, line_number, std::string(made.status().message()));
    entry = *std::move(made);
    // A repeated user replaces the earlier entry, as in PgBouncer.
    std::string user = entry.user;
    result.insert_or_assign(std::move(user), std::move(entry));
  }
  return result;
}

absl::StatusOr<AuthFile> LoadAuthFile(const std::string& path) {
  // Plain POSIX I/O so errno is reliable for the error (iostreams do not promise it).
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    // "cannot read 'PATH': No such file or directory"; the caller names the key and line.
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot read '", path, "'"));
  }
  std::string contents;
  char buf[8192];
  while (true) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n > 0) {
      contents.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      const int error = errno;
      close(fd);
      return absl::ErrnoToStatus(error, absl::StrCat("cannot read '", path, "'"));
    }
  }
  close(fd);
  return ParseAuthFile(contents, path);
}

}  // namespace pgfleet::config
