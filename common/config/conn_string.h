// The libpq-style `key=value key='quoted '' value'` strings of pgbouncer.ini's [databases] and
// [users] sections. The agent reads their meaning (config.cc); the controller also edits them
// in place (it redacts passwords), so each parameter keeps where its value sits in the text.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pgfleet::config {

struct ConnParam {
  std::string key;
  std::string value;  // Unquoted.
  // The value as written, quotes included: s.substr(value_begin, value_end - value_begin).
  size_t value_begin = 0;
  size_t value_end = 0;
};

// PgBouncer's cstr_get_pair: values end at whitespace unless single-quoted, '' inside quotes
// is a quote, and empty values are refused. InvalidArgument naming the parameter otherwise.
absl::StatusOr<std::vector<ConnParam>> SplitConnString(absl::string_view s);

// `value` written so SplitConnString reads it back: bare when it has no space or quote,
// single-quoted with '' for a quote otherwise.
std::string QuoteConnValue(absl::string_view value);

}  // namespace pgfleet::config
