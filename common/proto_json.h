// Protobuf messages as JSON, the same text as google::protobuf::util::MessageToJsonString, for
// messages that hold long lists.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"

namespace pgfleet {

// MessageToJsonString's output, byte for byte, but each element of the message's top-level
// repeated message fields is converted on its own and the pieces joined. With
// always_print_primitive_fields, protobuf's converter first builds a tree of the whole message
// in memory, one heap node per value: for `agents list` of 10,000 agents (35 MB of JSON) that
// was 3 s of CPU and most of it malloc; element by element the tree stays small.
absl::StatusOr<std::string> MessageToJson(const google::protobuf::Message& message,
                                          const google::protobuf::util::JsonPrintOptions& options);

}  // namespace pgfleet
