// auth_hba_file / auth_ident_file parsing and matching, after PgBouncer's own
// test/hba_test.rules + hba_test.eval, and the malformed lines pgfleet refuses.
#include "common/config/hba.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgfleet::config {
namespace {

using ::testing::HasSubstr;

// The @files the tests include, by path.
std::map<std::string, std::string>& FakeFiles() {
  static auto* files = new std::map<std::string, std::string>;
  return *files;
}
absl::StatusOr<std::string> ReadFake(const std::string& path) {
  auto it = FakeFiles().find(path);
  if (it == FakeFiles().end()) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  return it->second;
}

HbaFile MustParse(const std::string& text, const IdentMaps& maps = {}) {
  absl::StatusOr<HbaFile> hba = ParseHbaFile(text, "/etc/pgb/hba.conf", maps, &ReadFake);
  EXPECT_TRUE(hba.ok()) << hba.status();
  return hba.ok() ? *std::move(hba) : HbaFile{};
}

std::string ParseError(const std::string& text, const IdentMaps& maps = {}) {
  absl::StatusOr<HbaFile> hba = ParseHbaFile(text, "/etc/pgb/hba.conf", maps, &ReadFake);
  return hba.ok() ? "accepted" : std::string(hba.status().message());
}

// What the first matching line says for a login from `address` ("unix" for the socket), or
// "reject" when none matches (as PgBouncer's hba_eval test does).
std::string Eval(const HbaFile& hba, const std::string& db, const std::string& user,
                 const std::string& address, bool tls = false) {
  sockaddr_storage storage{};
  HbaLogin login{.unix_socket = address == "unix", .tls = tls, .database = db, .user = user};
  if (!login.unix_socket) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&storage);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&storage);
    if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
      v4->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
      v6->sin6_family = AF_INET6;
    } else {
      ADD_FAILURE() << "bad test address " << address;
    }
    login.address = reinterpret_cast<sockaddr*>(&storage);
  }
  const HbaRule* rule = MatchHba(hba, login);
  return rule == nullptr ? "reject" : HbaMethodName(rule->method);
}

// PgBouncer's test/hba_test.rules, minus its gss lines.
constexpr char kRules[] = R"(# METHOD: trust, reject, md5, password, peer, cert
# The following lines test that weird whitespace does not break parsing
 	 	 	
			# z
host		pgbouncer	pgbouncer	127.0.0.1/32	trust
local		dbp		all					peer
local		all		userp					password
local		dbz		userz					trust
local		dbs		users					scram-sha-256
local		all		all					md5

hostssl		all		all	10.0.0.0/8			cert
hostnossl	all		all	11.0.0.0/8			md5
host		all		all	127.0.0.0  255.255.255.0	password

host		db1		all	0.0.0.0/0			md5
host		all		user1	15.0.0.0/8			md5

host		tmp1,all	user1,user2 , user3			16.0.0.0/8	md5
host		d1,d2,d3	t18user		18.0.0.0/8	trust # comment

host		"all"		"all"		19.0.0.0/8	cert
host		"q1""q2"	"a , b"		19.0.0.0/8	cert

host		mdb	muser		199.199.199.199/32	cert
host		mdb2	muser		128.0.0.0/9		trust
host		mdb2	muser		128.0.0.0/1		cert

host		mdb	muser		ff11::0/16		md5
host		mdb	muser		::1/128			trust

host		mdb3	muser		all			scram-sha-256
host		mdb4	muser		all			reject

host		replication	admin	::1/128			trust
host		db2,replication	admin2	::1/128			trust
)";

TEST(HbaTest, PgBouncersRulesEvaluateAsInItsOwnTest) {
  const HbaFile hba = MustParse(kRules);
  EXPECT_EQ(hba.rules.size(), 24u);
  EXPECT_EQ(hba.rules[0].line, 5);
  // Unix socket: local lines only, first match wins.
  EXPECT_EQ(Eval(hba, "db", "user", "unix"), "md5");
  EXPECT_EQ(Eval(hba, "dbp", "user", "unix"), "peer");
  EXPECT_EQ(Eval(hba, "db", "userp", "unix"), "password");
  EXPECT_EQ(Eval(hba, "dbz", "userz", "unix"), "trust");
  EXPECT_EQ(Eval(hba, "dbs", "users", "unix"), "scram-sha-256");
  // hostssl / hostnossl.
  EXPECT_EQ(Eval(hba, "db", "user", "10.1.1.1", /*tls=*/true), "cert");
  EXPECT_EQ(Eval(hba, "db", "user", "10.1.1.1"), "reject");
  EXPECT_EQ(Eval(hba, "db", "user", "11.1.1.1", /*tls=*/true), "reject");
  EXPECT_EQ(Eval(hba, "db", "user", "11.1.1.1"), "md5");
  // A separate netmask.
  EXPECT_EQ(Eval(hba, "db", "user", "127.0.0.2", true), "password");
  EXPECT_EQ(Eval(hba, "db", "user", "127.0.1.4"), "reject");
  EXPECT_EQ(Eval(hba, "db1", "user", "127.0.1.4"), "md5");
  // User and database lists.
  EXPECT_EQ(Eval(hba, "db1z", "user1", "15.0.0.1"), "md5");
  EXPECT_EQ(Eval(hba, "db1z", "user2", "15.0.0.1"), "reject");
  EXPECT_EQ(Eval(hba, "db2", "user3", "16.0.0.1"), "md5");
  EXPECT_EQ(Eval(hba, "db2", "user4", "16.0.0.1"), "reject");
  EXPECT_EQ(Eval(hba, "d3", "t18user", "18.0.0.2"), "trust");
  EXPECT_EQ(Eval(hba, "d1", "user", "18.0.0.2"), "reject");
  // Quoted names are names, never keywords.
  EXPECT_EQ(Eval(hba, "db", "t19user", "19.0.0.2"), "reject");
  EXPECT_EQ(Eval(hba, "all", "all", "19.0.0.2"), "cert");
  EXPECT_EQ(Eval(hba, "q1\"q2", "a , b", "19.0.0.2"), "cert");
  // Masks.
  EXPECT_EQ(Eval(hba, "mdb", "muser", "199.199.199.199"), "cert");
  EXPECT_EQ(Eval(hba, "mdb", "muser", "199.199.199.198"), "reject");
  EXPECT_EQ(Eval(hba, "mdb2", "muser", "128.1.1.1"), "trust");
  EXPECT_EQ(Eval(hba, "mdb2", "muser", "254.1.1.1"), "cert");
  // IPv6, and an IPv4-mapped address matching IPv4 lines.
  EXPECT_EQ(Eval(hba, "mdb", "muser", "ff11:2::1"), "md5");
  EXPECT_EQ(Eval(hba, "mdb", "muser", "::1"), "trust");
  EXPECT_EQ(Eval(hba, "mdb", "muser", "::2"), "reject");
  EXPECT_EQ(Eval(hba, "mdb", "muser", "::ffff:199.199.199.199"), "cert");
  // The "all" address.
  EXPECT_EQ(Eval(hba, "mdb3", "muser", "1.2.3.4"), "scram-sha-256");
  EXPECT_EQ(Eval(hba, "mdb3", "muser", "face::1"), "scram-sha-256");
  EXPECT_EQ(Eval(hba, "mdb4", "muser", "1.2.3.4"), "reject");
  // `replication` matches replication connections only (which the agent does not serve):
  // neither a database of that name nor others.
  EXPECT_EQ(Eval(hba, "replication", "admin", "::1"), "reject");
  EXPECT_EQ(Eval(hba, "db", "admin", "::1"), "reject");
  EXPECT_EQ(Eval(hba, "db2", "admin2", "::1"), "trust");
}

TEST(HbaTest, SameuserAndAtFiles) {
  FakeFiles()["/etc/pgb/apps.txt"] = "app1, app2\n# a comment\napp3 \"app 4\"\n";
  FakeFiles()["/lists/dbs"] = "@nested\n";
  FakeFiles()["/lists/nested"] = "shop\n";
  const HbaFile hba = MustParse(
      "host sameuser all 10.0.0.0/8 trust\n"
      "host @/lists/dbs @apps.txt 10.0.0.0/8 md5\n");
  EXPECT_EQ(Eval(hba, "alice", "alice", "10.0.0.1"), "trust");
  EXPECT_EQ(Eval(hba, "alice", "bob", "10.0.0.1"), "reject");
  EXPECT_EQ(Eval(hba, "shop", "app3", "10.0.0.1"), "md5");
  EXPECT_EQ(Eval(hba, "shop", "app 4", "10.0.0.1"), "md5");
  EXPECT_EQ(Eval(hba, "shop", "app5", "10.0.0.1"), "reject");
  EXPECT_THAT(ParseError("host all @missing.txt all md5\n"),
              AllOf(HasSubstr("/etc/pgb/hba.conf:1: @missing.txt: cannot read"),
                    HasSubstr("/etc/pgb/missing.txt")));
  FakeFiles()["/etc/pgb/loop"] = "@loop\n";
  EXPECT_THAT(ParseError("host all @loop all md5\n"), HasSubstr("nested deeper than"));
}

TEST(HbaTest, MalformedLinesAreRefusedWithTheirLineNumber) {
  const std::map<std::string, std::string> cases = {
      {"hots all all all md5", "unknown connection type \"hots\""},
      {"host all all", "expected an address"},
      {"host all", "expected a user name"},
      {"local", "expected a database name"},
      {"host all all all", "expected an authentication method"},
      {"host all all all md4", "unknown authentication method \"md4\""},
      {"host all all all ldap", "\"ldap\" is not supported by pgfleet"},
      {"host all all all gss", "\"gss\" is not supported by pgfleet"},
      {"host all all example.com md5", "host names and domain suffixes are not supported"},
      {"host all all samenet md5", "\"samenet\" is not supported"},
      {"host all all 10.0.0.0/33 md5", "invalid mask length \"/33\""},
      {"host all all 10.0.0.0/x md5", "invalid mask length"},
      {"host all all 10.0.0.0 md5", "needs a /bits suffix or a netmask"},
      {"host all all 10.0.0.1/8 reject", "has bits set outside its mask"},
      {"host samerole all all md5", "\"samerole\" is not supported"},
      {"host all +admins all md5", "group name \"+admins\" is not supported"},
      {"host \"unterminated all all md5", "unterminated quoted name"},
      {"host all all all md5 include_realm=0", "unsupported option \"include_realm=0\""},
      {"host all all all peer map=nosuch", "ident map \"nosuch\" is not in auth_ident_file"},
      {"host all all all md5 map=x extra", "ident map \"x\" is not in auth_ident_file"},
      {"host all all all trust trust", "unsupported option \"trust\""},
  };
  for (const auto& [line, error] : cases) {
    EXPECT_THAT(ParseError(absl::StrCat("# first line\n\n", line, "\n")),
                AllOf(HasSubstr("/etc/pgb/hba.conf:3: "), HasSubstr(error)))
        << line;
  }
}

TEST(HbaTest, IdentMapsAndMapOption) {
  absl::StatusOr<IdentMaps> maps = ParseIdentFile(
      "# MAP SYSTEM-USER DATABASE-USER\n"
      "ops   alice   app\n"
      "ops   root    all\n"
      "certs \"CN with space\" app\n",
      "ident.conf");
  ASSERT_TRUE(maps.ok()) << maps.status();
  ASSERT_EQ(maps->size(), 2u);
  const std::vector<IdentMapping>& ops = maps->at("ops");
  ASSERT_EQ(ops.size(), 2u);
  EXPECT_EQ(ops[0].system_user, "alice");
  EXPECT_EQ(ops[0].database_user, "app");
  EXPECT_TRUE(ops[1].any_database_user);
  EXPECT_EQ(maps->at("certs")[0].system_user, "CN with space");

  const HbaFile hba = MustParse("local all all peer map=ops\nhostssl all all all cert\n", *maps);
  ASSERT_EQ(hba.rules.size(), 2u);
  EXPECT_EQ(hba.rules[0].map_name, "ops");
  EXPECT_EQ(hba.rules[0].mappings.size(), 2u);
  EXPECT_TRUE(hba.rules[1].map_name.empty());

  auto ident_error = [](const std::string& text) {
    absl::StatusOr<IdentMaps> parsed = ParseIdentFile(text, "ident.conf");
    return parsed.ok() ? "accepted" : std::string(parsed.status().message());
  };
  EXPECT_THAT(ident_error("\nops alice\n"), HasSubstr("ident.conf:2: expected \"MAP SYSTEM-USER"));
  EXPECT_THAT(ident_error("ops alice app extra\n"), HasSubstr("ident.conf:1: expected"));
  EXPECT_THAT(ident_error("include other.conf\n"), HasSubstr("include lines are not supported"));
  EXPECT_THAT(ident_error("ops /^(.*)$ \\1\n"), HasSubstr("regular expressions are not supported"));
  EXPECT_THAT(ident_error("ops alice +admins\n"), HasSubstr("groups, regular expressions"));
}

TEST(HbaTest, AuthTypesHbaAndCertLoadWithWhatTheyNeed) {
  auto error = [](const std::string& body) {
    absl::StatusOr<Config> c = ParseConfig(absl::StrCat("[pgbouncer]\n", body), "test.ini");
    return c.ok() ? std::string("accepted") : std::string(c.status().message());
  };
  EXPECT_EQ(error("auth_type = hba\nauth_hba_file = /x/hba.conf\nauth_ident_file = /x/id\n"),
            "accepted");
  EXPECT_THAT(error("auth_type = hba\n"),
              HasSubstr("test.ini:2: auth_type = hba needs auth_hba_file"));
  const std::string tls =
      "client_tls_cert_file = /c.pem\nclient_tls_key_file = /k.pem\nclient_tls_ca_file = /ca\n";
  EXPECT_EQ(error("auth_type = cert\nclient_tls_sslmode = verify-full\n" + tls), "accepted");
  EXPECT_EQ(error("auth_type = CERT\nclient_tls_sslmode = verify-ca\n" + tls), "accepted");
  EXPECT_THAT(error("auth_type = cert\nclient_tls_sslmode = require\n" + tls),
              HasSubstr("auth_type = cert needs client_tls_sslmode = verify-full"));
  EXPECT_THAT(error("auth_type = cert\n"), HasSubstr("test.ini:2: auth_type = cert needs"));
  absl::StatusOr<Config> c = ParseConfig("[pgbouncer]\nauth_type = hba\nauth_hba_file = /h\n", "t");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->auth_type, AuthType::kHba);
  EXPECT_EQ(c->auth_hba_file, "/h");
  EXPECT_TRUE(c->warnings.empty());
}

// The controller's check of a pushed file: every line is parsed, but @file includes are not
// read (they are on the agents' hosts) and, without maps, map=NAME is not looked up.
TEST(HbaTest, CheckHbaTextParsesLinesWithoutTheHostsFiles) {
  EXPECT_TRUE(
      CheckHbaText("host all @/nowhere/names 10.0.0.0/8 md5 map=corp\n", "hba", nullptr).ok());
  const absl::Status bad = CheckHbaText(
      "host all all 10.0.0.0/8 md5\n# ok\nhost all all 10.0.0.0/8 bogus\n", "hba", nullptr);
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.message()), ::testing::StartsWith("hba:3: "));
  const IdentMaps maps;  // Pushed and empty: the map must be in it.
  const absl::Status unmapped =
      CheckHbaText("host all all 10.0.0.0/8 md5 map=corp\n", "hba", &maps);
  EXPECT_THAT(std::string(unmapped.message()), ::testing::HasSubstr("hba:1: ident map \"corp\""));
}

}  // namespace
}  // namespace pgfleet::config
