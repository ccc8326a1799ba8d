#include "agent/pg/startup_options.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"

namespace pgfleet::agent::pg {
namespace {

bool IsSpace(char c) { return absl::ascii_isspace(static_cast<unsigned char>(c)); }

void SkipSpaces(std::string_view text, size_t& pos) {
  while (pos < text.size() && IsSpace(text[pos])) ++pos;
}

// Up to the next unescaped whitespace; "\x" stands for x.
std::string ReadEscapedToken(std::string_view text, size_t& pos) {
  std::string token;
  while (pos < text.size() && !IsSpace(text[pos])) {
    if (text[pos] == '\\' && pos + 1 < text.size()) ++pos;
    token += text[pos++];
  }
  return token;
}

}  // namespace

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseStartupOptions(
    std::string_view options) {
  const absl::Status unsupported = absl::InvalidArgumentError(
      "unsupported options startup parameter: only '-c config=val' and '--config=val' are "
      "allowed");
  std::vector<std::pair<std::string, std::string>> settings;
  size_t pos = 0;
  for (;;) {
    SkipSpaces(options, pos);
    if (pos >= options.size()) break;
    const std::string_view rest = options.substr(pos);
    if (rest.substr(0, 2) == "--") {
      pos += 2;
    } else if (rest.substr(0, 2) == "-c") {
      pos += 2;
      SkipSpaces(options, pos);
    } else {
      return unsupported;
    }
    const std::string token = ReadEscapedToken(options, pos);
    const size_t equals = token.find('=');
    if (equals == std::string::npos) return unsupported;
    settings.emplace_back(token.substr(0, equals), token.substr(equals + 1));
  }
  return settings;
}

}  // namespace pgfleet::agent::pg
