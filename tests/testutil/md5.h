// A self-contained MD5 (RFC 1321) so the raw protocol client can answer md5 authentication
// without sharing crypto code with the agent under test.
#pragma once

#include <string>
#include <string_view>

namespace pgfleet::testutil {

// Lower-case hex digest.
std::string Md5Hex(std::string_view data);
// PostgreSQL's stored form: "md5" + md5hex(password + user).
std::string PgMd5Secret(std::string_view password, std::string_view user);
// The PasswordMessage body for AuthenticationMD5Password:
// "md5" + md5hex(md5hex(password + user) + salt).
std::string PgMd5Response(std::string_view password, std::string_view user, std::string_view salt);

}  // namespace pgfleet::testutil
