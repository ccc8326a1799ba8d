// common/proto_json: the same JSON text as protobuf's converter, built element by element.
#include "common/proto_json.h"

#include <gtest/gtest.h>

#include <string>

#include "pgfleet/v1/fleet.pb.h"

namespace pgfleet {
namespace {

namespace pb = google::protobuf;

std::string Reference(const pb::Message& message, const pb::util::JsonPrintOptions& options) {
  std::string out;
  EXPECT_TRUE(pb::util::MessageToJsonString(message, &out, options).ok());
  return out;
}

pb::util::JsonPrintOptions Options(bool whitespace) {
  pb::util::JsonPrintOptions options;
  options.add_whitespace = whitespace;
  options.always_print_primitive_fields = true;
  return options;
}

// Agents with maps, nested lists, strings that look like JSON keys and escapes, and empty
// nested lists: everything the element-by-element path must reproduce.
pgfleet::v1::ListAgentsResponse Fleet(int agents) {
  pgfleet::v1::ListAgentsResponse response;
  for (int i = 0; i < agents; ++i) {
    pgfleet::v1::Agent* agent = response.add_agents();
    agent->set_agent_id("app-" + std::to_string(i));
    agent->set_environment("prod");
    (*agent->mutable_labels())["zone"] = "a";
    (*agent->mutable_labels())["note"] = "\"agents\": [] {\n}";
    agent->set_last_error(i % 2 ? "line one\nline \"two\"" : "");
    agent->set_applied_version(static_cast<uint64_t>(i) * 1000000000000ULL);
    pgfleet::v1::PoolMetrics* pool = agent->mutable_last_metrics()->add_pools();
    pool->set_database("appdb");
    pool->set_cl_active(i);
    agent->add_restart_pending("pidfile");
  }
  return response;
}

TEST(ProtoJsonTest, ListsMatchProtobufsConverterByteForByte) {
  for (bool whitespace : {true, false}) {
    for (int agents : {0, 1, 3}) {
      pgfleet::v1::ListAgentsResponse response = Fleet(agents);
      absl::StatusOr<std::string> json = MessageToJson(response, Options(whitespace));
      ASSERT_TRUE(json.ok()) << json.status();
      EXPECT_EQ(*json, Reference(response, Options(whitespace)))
          << "whitespace=" << whitespace << " agents=" << agents;
    }
  }
}

TEST(ProtoJsonTest, MessagesWithoutTopLevelListsAreConvertedWhole) {
  pgfleet::v1::Agent agent = Fleet(1).agents(0);
  for (bool whitespace : {true, false}) {
    absl::StatusOr<std::string> json = MessageToJson(agent, Options(whitespace));
    ASSERT_TRUE(json.ok());
    EXPECT_EQ(*json, Reference(agent, Options(whitespace)));
  }
}

TEST(ProtoJsonTest, WithoutDefaultsTheListIsStillInItsPlace) {
  pgfleet::v1::ListAgentsResponse response = Fleet(2);
  pb::util::JsonPrintOptions options;
  options.add_whitespace = true;
  absl::StatusOr<std::string> json = MessageToJson(response, options);
  ASSERT_TRUE(json.ok());
  EXPECT_EQ(*json, Reference(response, options));
}

}  // namespace
}  // namespace pgfleet
