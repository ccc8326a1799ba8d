#include "common/proto_json.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace pgfleet {
namespace {

namespace pb = google::protobuf;

absl::StatusOr<std::string> Convert(const pb::Message& message,
                                    const pb::util::JsonPrintOptions& options) {
  std::string out;
  pb::util::Status printed = pb::util::MessageToJsonString(message, &out, options);
  if (!printed.ok()) return absl::InternalError(std::string(printed.message()));
  return out;
}

// The offset just after `"key":` (and the space add_whitespace puts there) among the keys of
// the outermost object of `json`, or npos. Keys of nested objects and text inside strings are
// skipped: only depth-1 keys count.
size_t FindTopLevelValue(const std::string& json, const std::string& key, bool whitespace) {
  const std::string wanted = absl::StrCat("\"", key, "\":", whitespace ? " " : "");
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      if (depth == 1 && json.compare(i, wanted.size(), wanted) == 0) return i + wanted.size();
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return std::string::npos;
}

}  // namespace

absl::StatusOr<std::string> MessageToJson(const pb::Message& message,
                                          const pb::util::JsonPrintOptions& options) {
  const pb::Reflection& reflection = *message.GetReflection();
  std::vector<const pb::FieldDescriptor*> lists;
  std::vector<const pb::FieldDescriptor*> fields;
  reflection.ListFields(message, &fields);
  for (const pb::FieldDescriptor* field : fields) {
    if (field->is_repeated() && !field->is_map() &&
        field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      lists.push_back(field);
    }
  }
  if (lists.empty() || !options.always_print_primitive_fields) return Convert(message, options);

  // The message without its lists, then each list spliced in where its empty value stands:
  // always_print_primitive_fields prints an empty list as `[]` in its place.
  std::unique_ptr<pb::Message> rest(message.New());
  rest->CopyFrom(message);
  for (const pb::FieldDescriptor* field : lists) {
    rest->GetReflection()->ClearField(rest.get(), field);
  }
  absl::StatusOr<std::string> json = Convert(*rest, options);
  if (!json.ok()) return json.status();

  const bool whitespace = options.add_whitespace;
  for (const pb::FieldDescriptor* field : lists) {
    const std::string& key =
        options.preserve_proto_field_names ? field->name() : field->json_name();
    const size_t value = FindTopLevelValue(*json, key, whitespace);
    if (value == std::string::npos || json->compare(value, 2, "[]") != 0) {
      return Convert(message, options);  // Not the shape expected: the slow way, still right.
    }
    std::string list = "[";
    const int count = reflection.FieldSize(message, field);
    for (int i = 0; i < count; ++i) {
      absl::StatusOr<std::string> element =
          Convert(reflection.GetRepeatedMessage(message, field, i), options);
      if (!element.ok()) return element.status();
      if (whitespace) {
        // An element sits two levels deep (object, array), one space of indent per level.
        if (!element->empty() && element->back() == '\n') element->pop_back();
        absl::StrAppend(&list, i == 0 ? "\n" : ",\n", "  ",
                        absl::StrReplaceAll(*element, {{"\n", "\n  "}}));
      } else {
        absl::StrAppend(&list, i == 0 ? "" : ",", *element);
      }
    }
    absl::StrAppend(&list, whitespace && count > 0 ? "\n ]" : "]");
    json->replace(value, 2, list);
  }
  return json;
}

}  // namespace pgfleet
