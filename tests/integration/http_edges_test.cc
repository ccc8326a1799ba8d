// The controller's HTTP listener, what http_limits_test leaves open (issue 17, item 14): an
// oversized request head is answered 431 with the API's JSON error (libevent 2.1 on its own
// sends 400 and an HTML page); a request without a valid token is refused from its head alone,
// before any of its body is read; and the number of open connections is capped
// (--http-max-connections), the next one answered 503 and closed. A real pgfleet-controller
// and raw sockets: the client must be able to misbehave.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

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

constexpr char kAdminToken[] = "pgf_http_edges_admin_token_0123456789abcdef";
constexpr int kMaxConnections = 8;

bool IsJsonError(const RawReply& reply) {
  return absl::StrContains(absl::AsciiStrToLower(reply.head), "content-type: application/json") &&
         absl::StartsWith(reply.body, "{") && absl::StrContains(reply.body, "\"error\"");
}

class HttpEdgesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<SharedHttpController>> started =
        SharedHttpController::Start("pgfleet-http-edges", kAdminToken,
                                    {absl::StrCat("--http-max-connections=", kMaxConnections)});
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

  static RawReply Call(const std::string& request, absl::Duration timeout = absl::Seconds(30)) {
    return shared_->Call(request, timeout);
  }

  // The controller still serves (a connection slot may take a moment to be given back).
  static void ExpectHealthy() {
    PGF_EXPECT_OK(PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          RawReply agents = Call(RequestHead("GET", "/api/ListAgents", kAdminToken, 0));
          *note = agents.raw.substr(0, 200);
          return agents.status == 200;
        },
        absl::Seconds(15), "an authorized API call to succeed"));
    EXPECT_TRUE(controller_->IsRunning());
  }

  static SharedHttpController* shared_;
  static ControllerProcess* controller_;
  static int http_port_;
};

SharedHttpController* HttpEdgesTest::shared_ = nullptr;
ControllerProcess* HttpEdgesTest::controller_ = nullptr;
int HttpEdgesTest::http_port_ = 0;

TEST_F(HttpEdgesTest, AnOversizedHeadIsAnswered431WithAJsonError) {
  for (size_t padding : {20u * 1024, 256u * 1024}) {
    SCOPED_TRACE(absl::StrCat(padding, " bytes of header"));
    RawReply reply =
        Call(RequestHead("GET", "/api/ListAgents", kAdminToken, 0,
                         absl::StrCat("X-Padding: ", std::string(padding, 'a'), "\r\n")));
    EXPECT_FALSE(reply.timed_out);
    EXPECT_EQ(reply.status, 431) << reply.raw.substr(0, 400);
    EXPECT_TRUE(IsJsonError(reply)) << reply.raw.substr(0, 400);
  }
  {  // Many small headers, and a request line alone over the limit, the same.
    std::string headers;
    for (int i = 0; i < 2000; ++i) absl::StrAppend(&headers, "X-H", i, ": value\r\n");
    RawReply many = Call(RequestHead("GET", "/api/ListAgents", kAdminToken, 0, headers));
    EXPECT_EQ(many.status, 431) << many.raw.substr(0, 400);
    EXPECT_TRUE(IsJsonError(many)) << many.raw.substr(0, 400);
    RawReply long_line = Call(RequestHead("GET", "/" + std::string(40 * 1024, 'x'), "", 0));
    EXPECT_EQ(long_line.status, 431) << long_line.raw.substr(0, 400);
  }
  // A head that never ends is answered as soon as it passes the limit, not when it ends.
  {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawSocket> socket, RawSocket::Connect(http_port_));
    socket->SendAll("GET /api/ListAgents HTTP/1.1\r\nX-Padding: " + std::string(32 * 1024, 'b'));
    RawReply reply = socket->ReadReply(absl::Seconds(10));
    EXPECT_FALSE(reply.timed_out) << "the controller waited for the rest of the head";
    EXPECT_EQ(reply.status, 431) << reply.raw.substr(0, 400);
  }
  ExpectHealthy();
}

// The token is checked on the request head: a client without one gets 401 although it never
// sends the body it announced, so the controller has read none of it.
TEST_F(HttpEdgesTest, ARequestWithoutAValidTokenIsRefusedBeforeItsBody) {
  for (const std::string& token : {std::string(), std::string("pgf_not_a_real_token")}) {
    for (const std::string& method : {std::string("PushConfig"), std::string("ListAgents")}) {
      SCOPED_TRACE(absl::StrCat(token.empty() ? "no token" : "bad token", ", ", method));
      PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawSocket> socket, RawSocket::Connect(http_port_));
      socket->SendAll(RequestHead("POST", "/api/" + method, token, 512 * 1024));
      RawReply reply = socket->ReadReply(absl::Seconds(10));
      EXPECT_FALSE(reply.timed_out) << "the controller waited for the body before saying 401";
      EXPECT_EQ(reply.status, 401) << reply.raw.substr(0, 400);
      EXPECT_TRUE(IsJsonError(reply)) << reply.raw.substr(0, 400);
      EXPECT_TRUE(absl::StrContains(reply.body, "UNAUTHENTICATED")) << reply.body;
    }
  }
  // A GET without a token, and a request with a good token and a body, as before.
  RawReply get = Call(RequestHead("GET", "/api/ListAgents", "", 0));
  EXPECT_EQ(get.status, 401) << get.raw.substr(0, 400);
  RawReply good = Call(RequestHead("POST", "/api/ListAgents", kAdminToken, 2) + "{}");
  EXPECT_EQ(good.status, 200) << good.raw.substr(0, 400);
  // Files and /healthz need no token.
  RawReply health = Call(RequestHead("GET", "/healthz", "", 0));
  EXPECT_EQ(health.status, 200) << health.raw.substr(0, 400);
  ExpectHealthy();
}

// Idle connections hold a slot each: past --http-max-connections the next one is answered 503
// and closed, and a slot freed by a client that leaves is usable again.
TEST_F(HttpEdgesTest, ConnectionsPastTheCapAreRefused) {
  std::vector<std::unique_ptr<RawSocket>> idle;
  for (int i = 0; i < kMaxConnections; ++i) {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawSocket> socket, RawSocket::Connect(http_port_));
    idle.push_back(std::move(socket));
  }
  // The controller counts a connection when it accepts it, in order: the next one is over.
  RawReply refused = Call(RequestHead("GET", "/healthz", "", 0), absl::Seconds(10));
  EXPECT_FALSE(refused.timed_out) << "a connection past the cap was left hanging";
  EXPECT_EQ(refused.status, 503) << refused.raw.substr(0, 400);
  EXPECT_TRUE(IsJsonError(refused)) << refused.raw.substr(0, 400);
  RawReply api = Call(RequestHead("GET", "/api/ListAgents", kAdminToken, 0), absl::Seconds(10));
  EXPECT_EQ(api.status, 503) << api.raw.substr(0, 400);

  // One idle client leaves: its slot serves again.
  idle.pop_back();
  ExpectHealthy();
  // Every slot comes back once the idle clients are gone: the cap counts open connections,
  // not connections ever made.
  idle.clear();
  PGF_EXPECT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        std::vector<std::unique_ptr<RawSocket>> held;
        for (int i = 0; i < kMaxConnections - 1; ++i) {
          absl::StatusOr<std::unique_ptr<RawSocket>> socket = RawSocket::Connect(http_port_);
          if (!socket.ok()) return socket.status();
          held.push_back(std::move(*socket));
        }
        RawReply reply = Call(RequestHead("GET", "/healthz", "", 0), absl::Seconds(10));
        *note = reply.raw.substr(0, 100);
        return reply.status == 200;
      },
      absl::Seconds(20), "all the slots to be free again"));
}

}  // namespace
}  // namespace pgfleet::testutil
