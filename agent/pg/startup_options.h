// The `options` startup parameter (libpq's PGOPTIONS), read the way PgBouncer 1.20+ reads it.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace pgfleet::agent::pg {

// The settings in `options`: `-c name=value`, `-cname=value` or `--name=value`, separated by
// whitespace, a backslash making the next character literal (libpq's escaping of spaces).
// Anything else (another switch such as `-d`, a setting without '=') is InvalidArgument with
// PgBouncer's words: "unsupported options startup parameter: only '-c config=val' and
// '--config=val' are allowed".
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ParseStartupOptions(
    std::string_view options);

}  // namespace pgfleet::agent::pg
