// The Prometheus text exposition format (0.0.4), as both exporters write it: the agent's
// (pgbouncer_exporter names) and the controller's. Only the syntax lives here; what each
// exports is its own.
#pragma once

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace pgfleet::common {

// Appends `value` as a label value: backslash, double quote and newline escaped; bytes that
// are not UTF-8 become U+FFFD (values come from clients and operators: database, user and
// environment names), so a scraper's parser never breaks on them.
void AppendLabelValue(std::string* out, absl::string_view value);

// "# HELP name help\n# TYPE name type\n", with the help text's backslashes and newlines
// escaped as the format asks of docstrings.
void AppendFamilyHeader(std::string* out, absl::string_view name, absl::string_view type,
                        absl::string_view help);

// `name{label="value",...} sample\n`. `labels` is any range of (name, value) pairs.
template <typename LabelRange>
void AppendSample(std::string* out, absl::string_view name, const LabelRange& labels,
                  absl::string_view sample) {
  out->append(name.data(), name.size());
  bool first = true;
  for (const auto& [label, value] : labels) {
    out->push_back(first ? '{' : ',');
    first = false;
    absl::StrAppend(out, label, "=\"");
    AppendLabelValue(out, value);
    out->push_back('"');
  }
  if (!first) out->push_back('}');
  absl::StrAppend(out, " ", sample, "\n");
}

}  // namespace pgfleet::common
