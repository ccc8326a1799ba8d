#include "common/config/conn_string.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace pgfleet::config {
namespace {

bool IsSpace(char c) { return absl::ascii_isspace(static_cast<unsigned char>(c)); }

}  // namespace

absl::StatusOr<std::vector<ConnParam>> SplitConnString(absl::string_view s) {
  std::vector<ConnParam> params;
  size_t i = 0;
  for (;;) {
    while (i < s.size() && IsSpace(s[i])) ++i;
    if (i >= s.size()) break;
    ConnParam param;
    while (i < s.size() && s[i] != '=' && !IsSpace(s[i])) param.key += s[i++];
    while (i < s.size() && IsSpace(s[i])) ++i;
    if (param.key.empty()) return absl::InvalidArgumentError("missing parameter name before '='");
    if (i >= s.size() || s[i] != '=') {
      return absl::InvalidArgumentError(absl::StrCat("expected '=' after '", param.key, "'"));
    }
    ++i;
    while (i < s.size() && IsSpace(s[i])) ++i;
    param.value_begin = i;
    if (i < s.size() && s[i] == '\'') {
      for (++i;; ++i) {
        if (i >= s.size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("unterminated quoted value for '", param.key, "'"));
        }
        if (s[i] == '\'') {
          if (i + 1 < s.size() && s[i + 1] == '\'') {
            param.value += '\'';
            ++i;
            continue;
          }
          ++i;
          break;
        }
        param.value += s[i];
      }
      if (i < s.size() && !IsSpace(s[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected text after quoted value for '", param.key, "'"));
      }
    } else {
      while (i < s.size() && !IsSpace(s[i])) param.value += s[i++];
    }
    param.value_end = i;
    if (param.value.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("empty value for '", param.key, "'"));
    }
    params.push_back(std::move(param));
  }
  return params;
}

std::string QuoteConnValue(absl::string_view value) {
  bool needs_quotes = value.empty();
  for (char c : value) needs_quotes = needs_quotes || IsSpace(c) || c == '\'';
  if (!needs_quotes) return std::string(value);
  std::string quoted = "'";
  for (char c : value) {
    if (c == '\'') quoted += '\'';
    quoted += c;
  }
  quoted += '\'';
  return quoted;
}

}  // namespace pgfleet::config
