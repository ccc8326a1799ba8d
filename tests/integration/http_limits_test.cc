// The controller's HTTP listener bounds what one request may make it hold (issue 17): request
// heads are limited in size, bodies are limited per method and refused on their Content-Length
// before they are read, and a request without a valid bearer token is answered 401 on the event
// loop before its body is looked at or anything is queued for a worker. A real
// pgfleet-controller, raw sockets (the client must be able to misbehave), and after every
// refusal the controller must still answer /healthz and a good API call.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/process.h"
#include "tests/testutil/raw_http.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kAdminToken[] = "pgf_http_limits_admin_token_0123456789abcdef";

// A JSON object of about `size` bytes that every method's parser accepts as "unknown field"
// free: one string field of the PushConfigRequest / ListAgentsRequest family would be
// rejected, so the padding is whitespace around an empty object.
std::string PaddedJson(size_t size) {
  std::string json = "{";
  json.append(size > 2 ? size - 2 : 0, ' ');
  json += "}";
  return json;
}

class HttpLimitsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<SharedHttpController>> started =
        SharedHttpController::Start("pgfleet-http-limits", kAdminToken);
    ASSERT_TRUE(started.ok()) << started.status();
    shared_ = started->release();
    controller_ = &shared_->controller();
    http_port_ = shared_->http_port();
  }
  static void TearDownTestSuite() {
    delete shared_;
    shared_ = nullptr;
    controller_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(shared_, nullptr); }
  void TearDown() override {
    if (HasFailure()) std::cerr << controller_->Diagnostics() << "\n";
  }

  // One request with `body` sent whole; the reply within 30 s.
  static RawReply Call(const std::string& head, const std::string& body = "") {
    return shared_->Call(head + body);
  }

  // The controller still serves: /healthz and an authorized API call.
  static void ExpectHealthy() {
    RawReply health = Call(RequestHead("GET", "/healthz", "", 0));
    EXPECT_EQ(health.status, 200) << health.raw;
    RawReply agents = Call(RequestHead("GET", "/api/ListAgents", kAdminToken, 0));
    EXPECT_EQ(agents.status, 200) << agents.raw;
    EXPECT_TRUE(controller_->IsRunning());
  }

  static SharedHttpController* shared_;
  static ControllerProcess* controller_;
  static int http_port_;
};

SharedHttpController* HttpLimitsTest::shared_ = nullptr;
ControllerProcess* HttpLimitsTest::controller_ = nullptr;
int HttpLimitsTest::http_port_ = 0;

TEST_F(HttpLimitsTest, AGoodRequestWithinTheLimitsWorks) {
  ExpectHealthy();
  RawReply pushed = Call(RequestHead("POST", "/api/ListAgents", kAdminToken, 2), "{}");
  EXPECT_EQ(pushed.status, 200) << pushed.raw;
}

TEST_F(HttpLimitsTest, OversizedHeadersAreRefused) {
  for (size_t padding : {20u * 1024, 256u * 1024}) {
    SCOPED_TRACE(absl::StrCat(padding, " bytes of header"));
    const std::string header = absl::StrCat("X-Padding: ", std::string(padding, 'a'), "\r\n");
    RawReply reply = Call(RequestHead("GET", "/api/ListAgents", kAdminToken, 0, header));
    EXPECT_FALSE(reply.timed_out);
    // 431 where the server can say so; libevent 2.1 answers 400 and closes.
    EXPECT_TRUE(reply.status == 431 || reply.status == 400 || reply.status == 0) << reply.raw;
  }
  {  // Many small headers add up the same way.
    std::string headers;
    for (int i = 0; i < 2000; ++i) absl::StrAppend(&headers, "X-H", i, ": value\r\n");
    RawReply reply = Call(RequestHead("GET", "/api/ListAgents", kAdminToken, 0, headers));
    EXPECT_TRUE(reply.status == 431 || reply.status == 400 || reply.status == 0) << reply.raw;
  }
  ExpectHealthy();
}

// A body over the largest limit (PushConfig's 8 MiB) is refused on its Content-Length: the
// answer comes although the client sends nothing after the head.
TEST_F(HttpLimitsTest, ABodyOverTheLimitIsRefusedBeforeItIsSent) {
  for (size_t length : {size_t{9} << 20, size_t{64} << 20, size_t{1} << 40}) {
    SCOPED_TRACE(absl::StrCat("Content-Length ", length));
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawSocket> socket, RawSocket::Connect(http_port_));
    socket->SendAll(RequestHead("POST", "/api/PushConfig", kAdminToken, length));
    RawReply reply = socket->ReadReply(absl::Seconds(10));
    EXPECT_FALSE(reply.timed_out) << "the controller waited for the body";
    EXPECT_EQ(reply.status, 413) << reply.raw;
    // The API's JSON error naming the limit (libevent's own answer is an HTML page).
    EXPECT_TRUE(absl::StrContains(reply.body, "over the limit of 8388608 bytes for PushConfig"))
        << reply.raw;
  }
  ExpectHealthy();
}

// Only PushConfig carries whole files: every other method stops at 1 MiB.
TEST_F(HttpLimitsTest, MethodsOtherThanPushConfigTakeAtMostOneMebibyte) {
  const std::string body = PaddedJson((1 << 20) + 1024);
  RawReply reply = Call(RequestHead("POST", "/api/ListAgents", kAdminToken, body.size()), body);
  EXPECT_EQ(reply.status, 413) << reply.raw.substr(0, 400);
  EXPECT_TRUE(absl::StrContains(reply.body, "\"error\"")) << reply.body.substr(0, 400);

  // Just under the limit is still parsed.
  const std::string fits = PaddedJson((1 << 20) - 1024);
  RawReply ok = Call(RequestHead("POST", "/api/ListAgents", kAdminToken, fits.size()), fits);
  EXPECT_EQ(ok.status, 200) << ok.raw.substr(0, 400);

  // A config push may be larger than that.
  const std::string ini = std::string("[databases]\n") + std::string(2 << 20, '\n') +
                          "[pgbouncer]\nlisten_port = 6432\n";
  std::string push = R"({"environment":"limits","iniText":")";
  for (char c : ini) push += c == '\n' ? "\\n" : std::string(1, c);
  push += "\"}";
  RawReply pushed = Call(RequestHead("POST", "/api/PushConfig", kAdminToken, push.size()), push);
  EXPECT_EQ(pushed.status, 200) << pushed.raw.substr(0, 400);
  ExpectHealthy();
}

// No token, or a wrong one: 401 whatever the method, the path or the body, and before the body
// is parsed (a malformed or oversized body does not change the answer).
TEST_F(HttpLimitsTest, RequestsWithoutAValidTokenGet401First) {
  for (const std::string& token : {std::string(), std::string("pgf_not_a_real_token")}) {
    SCOPED_TRACE(token.empty() ? "no token" : "bad token");
    // Unknown method, GET on a method that needs POST, malformed JSON, an oversized body.
    RawReply unknown = Call(RequestHead("GET", "/api/NoSuchMethod", token, 0));
    EXPECT_EQ(unknown.status, 401) << unknown.raw;
    RawReply get_on_post = Call(RequestHead("GET", "/api/PushConfig", token, 0));
    EXPECT_EQ(get_on_post.status, 401) << get_on_post.raw;
    RawReply malformed = Call(RequestHead("POST", "/api/ListAgents", token, 5), "{{{{{");
    EXPECT_EQ(malformed.status, 401) << malformed.raw;
    EXPECT_TRUE(absl::StrContains(malformed.body, "UNAUTHENTICATED")) << malformed.body;
    const std::string big = PaddedJson(3 << 20);
    RawReply oversized = Call(RequestHead("POST", "/api/ListAgents", token, big.size()), big);
    EXPECT_EQ(oversized.status, 401) << oversized.raw.substr(0, 400);
  }
  ExpectHealthy();
}

}  // namespace
}  // namespace pgfleet::testutil
