// fleetctl's and the HTTP API's JSON replies as the protos they print.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"

namespace pgfleet::testutil {

// Parses `text`, which must be exactly one JSON object (progress lines belong on stderr), into
// a `Message`; fields the proto does not know are ignored.
template <typename Message>
absl::StatusOr<Message> ParseJson(const std::string& text) {
  if (!absl::StartsWith(text, "{")) {
    return absl::InvalidArgumentError(absl::StrCat("not one JSON object:\n", text));
  }
  Message message;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  auto status = google::protobuf::util::JsonStringToMessage(text, &message, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("not a ", Message::descriptor()->full_name(),
                                                   " in JSON (", status.ToString(), "):\n", text));
  }
  return message;
}

}  // namespace pgfleet::testutil
