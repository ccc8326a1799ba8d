#include "common/config/hba.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>
#include <filesystem>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/config/ini_parser.h"
#include "common/status_macros.h"

namespace pgfleet::config {
namespace {

// @file includes nested deeper than this are refused (a file that includes itself).
constexpr int kMaxIncludeDepth = 8;

// PgBouncer's hba tokens: a bare word runs to blank, ',', '#' or '"'; a "quoted" one may hold
// anything, "" standing for a quote, and is never a keyword (so "all" is a name); '#' starts
// a comment.
struct Token {
  enum class Kind { kWord, kQuoted, kComma };
  Kind kind;
  std::string text;
  bool Is(std::string_view keyword) const { return kind == Kind::kWord && text == keyword; }
  bool IsName() const { return kind != Kind::kComma; }
};

absl::StatusOr<std::vector<Token>> Tokenize(absl::string_view line) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < line.size()) {
    const char c = line[i];
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '#') {
      break;
    } else if (c == ',') {
      tokens.push_back({Token::Kind::kComma, ","});
      ++i;
    } else if (c == '"') {
      std::string text;
      size_t j = i + 1;
      bool closed = false;
      for (; j < line.size(); ++j) {
        if (line[j] != '"') {
          text.push_back(line[j]);
        } else if (j + 1 < line.size() && line[j + 1] == '"') {
          text.push_back('"');
          ++j;
        } else {
          closed = true;
          break;
        }
      }
      if (!closed) return absl::InvalidArgumentError("unterminated quoted name");
      tokens.push_back({Token::Kind::kQuoted, std::move(text)});
      i = j + 1;
    } else {
      size_t j = i + 1;
      while (j < line.size() && line[j] != ',' && line[j] != '#' && line[j] != '"' &&
             !absl::ascii_isspace(static_cast<unsigned char>(line[j]))) {
        ++j;
      }
      tokens.push_back({Token::Kind::kWord, std::string(line.substr(i, j - i))});
      i = j;
    }
  }
  return tokens;
}

// Reads one rule's tokens left to right.
class Cursor {
 public:
  explicit Cursor(const std::vector<Token>& tokens) : tokens_(tokens) {}
  bool AtEnd() const { return pos_ >= tokens_.size(); }
  const Token* Peek() const { return AtEnd() ? nullptr : &tokens_[pos_]; }
  const Token* Next() { return AtEnd() ? nullptr : &tokens_[pos_++]; }

 private:
  const std::vector<Token>& tokens_;
  size_t pos_ = 0;
};

struct ParseContext {
  std::string hba_path;
  ReadFileFn read_file;
};

absl::Status AddNamesFromFile(const ParseContext& ctx, const std::string& including,
                              const std::string& name, bool database, int depth, HbaNames& out);

// One element of a database or user list, in the file `including`.
absl::Status AddName(const ParseContext& ctx, const std::string& including, const Token& token,
                     bool database, int depth, HbaNames& out) {
  if (token.kind == Token::Kind::kQuoted) {
    out.names.insert(token.text);
    return absl::OkStatus();
  }
  const std::string& word = token.text;
  if (word == "all") {
    out.all = true;
  } else if (database && word == "sameuser") {
    out.sameuser = true;
  } else if (database && word == "replication") {
    out.replication = true;
  } else if (database && (word == "samerole" || word == "samegroup")) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", word, "\" is not supported (PgBouncer has no role membership)"));
  } else if (word.starts_with("+")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group name \"", word, "\" is not supported (PgBouncer has no role membership)"));
  } else if (word.starts_with("@")) {
    return AddNamesFromFile(ctx, including, word.substr(1), database, depth + 1, out);
  } else {
    out.names.insert(word);
  }
  return absl::OkStatus();
}

// An @file: names separated by commas or blanks, over any number of lines (PostgreSQL's
// format), relative to the directory of the file that names it.
absl::Status AddNamesFromFile(const ParseContext& ctx, const std::string& including,
                              const std::string& name, bool database, int depth, HbaNames& out) {
  if (name.empty()) return absl::InvalidArgumentError("\"@\" without a file name");
  if (depth > kMaxIncludeDepth) {
    return absl::InvalidArgumentError(absl::StrCat(
        "@", name, ": @file includes nested deeper than ", kMaxIncludeDepth, " (a loop?)"));
  }
  std::filesystem::path path(name);
  if (path.is_relative()) path = std::filesystem::path(including).parent_path() / path;
  absl::StatusOr<std::string> text = ctx.read_file(path.string());
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("@", name, ": ", text.status().message()));
  }
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(*text, '\n')) {
    ++line_number;
    absl::StatusOr<std::vector<Token>> tokens = Tokenize(line);
    if (!tokens.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path.string(), ":", line_number, ": ", tokens.status().message()));
    }
    for (const Token& token : *tokens) {
      if (token.kind == Token::Kind::kComma) continue;
      absl::Status added = AddName(ctx, path.string(), token, database, depth, out);
      if (!added.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path.string(), ":", line_number, ": ", added.message()));
      }
    }
  }
  return absl::OkStatus();
}

// A comma-separated list (blanks around the commas allowed).
absl::StatusOr<HbaNames> ParseNames(const ParseContext& ctx, Cursor& cursor, bool database) {
  const char* what = database ? "database" : "user";
  HbaNames names;
  while (true) {
    const Token* token = cursor.Next();
    if (token == nullptr || !token->IsName()) {
      return absl::InvalidArgumentError(absl::StrCat("expected a ", what, " name"));
    }
    PGF_RETURN_IF_ERROR(AddName(ctx, ctx.hba_path, *token, database, 0, names));
    const Token* next = cursor.Peek();
    if (next == nullptr || next->kind != Token::Kind::kComma) return names;
    cursor.Next();
  }
}

absl::Status ParseAddress(Cursor& cursor, HbaRule& rule) {
  const Token* token = cursor.Next();
  if (token == nullptr || token->kind != Token::Kind::kWord) {
    return absl::InvalidArgumentError("expected an address");
  }
  std::string text = token->text;
  if (text == "all") {
    rule.any_address = true;
    return absl::OkStatus();
  }
  if (text == "samehost" || text == "samenet") {
    return absl::InvalidArgumentError(absl::StrCat("address \"", text, "\" is not supported"));
  }
  std::string bits;
  if (size_t slash = text.find('/'); slash != std::string::npos) {
    bits = text.substr(slash + 1);
    text.resize(slash);
  }
  if (inet_pton(AF_INET6, text.c_str(), rule.address.data()) == 1) {
    rule.family = AF_INET6;
  } else if (inet_pton(AF_INET, text.c_str(), rule.address.data()) == 1) {
    rule.family = AF_INET;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid address \"", token->text,
                     "\" (host names and domain suffixes are not supported, as in PgBouncer)"));
  }
  const size_t address_bytes = rule.family == AF_INET ? 4 : 16;
  if (token->text.find('/') == std::string::npos) {
    const Token* mask = cursor.Next();
    if (mask == nullptr || mask->kind != Token::Kind::kWord ||
        inet_pton(rule.family, mask->text.c_str(), rule.mask.data()) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "address \"", token->text, "\" needs a /bits suffix or a netmask of the same family"));
    }
  } else {
    uint32_t count = 0;
    if (!absl::SimpleAtoi(bits, &count) || bits.empty() || !absl::ascii_isdigit(bits[0]) ||
        count > address_bytes * 8) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid mask length \"/", bits, "\" in \"", token->text, "\""));
    }
    for (size_t i = 0; i < address_bytes && count > 0; ++i) {
      const uint32_t take = count >= 8 ? 8 : count;
      rule.mask[i] = static_cast<uint8_t>(0xff << (8 - take));
      count -= take;
    }
  }
  for (size_t i = 0; i < address_bytes; ++i) {
    // PgBouncer only warns, and the line then never matches: a reject line meant for a
    // network would silently let that network through to the lines below it.
    if ((rule.address[i] & ~rule.mask[i]) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("address \"", token->text, "\" has bits set outside its mask"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseMethod(Cursor& cursor, HbaRule& rule) {
  const Token* token = cursor.Next();
  if (token == nullptr || token->kind != Token::Kind::kWord) {
    return absl::InvalidArgumentError("expected an authentication method");
  }
  for (HbaMethod method :
       {HbaMethod::kTrust, HbaMethod::kReject, HbaMethod::kPassword, HbaMethod::kMd5,
        HbaMethod::kScramSha256, HbaMethod::kCert, HbaMethod::kPeer}) {
    if (token->text == HbaMethodName(method)) {
      rule.method = method;
      return absl::OkStatus();
    }
  }
  for (const char* other : {"ldap", "gss", "pam", "ident", "radius", "sspi", "bsd", "oauth"}) {
    if (token->text == other) {
      return absl::InvalidArgumentError(
          absl::StrCat("authentication method \"", other, "\" is not supported by pgfleet"));
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown authentication method \"", token->text,
                   "\" (expected trust, reject, password, md5, scram-sha-256, cert or peer)"));
}

// `ident_maps` nullptr: the maps are not known here (CheckHbaText), so map=NAME is not looked up.
absl::StatusOr<HbaRule> ParseRule(const ParseContext& ctx, const IdentMaps* ident_maps,
                                  Cursor& cursor) {
  HbaRule rule;
  const Token* type = cursor.Next();
  if (type->Is("local")) {
    rule.type = HbaRule::Type::kLocal;
  } else if (type->Is("host")) {
    rule.type = HbaRule::Type::kHost;
  } else if (type->Is("hostssl")) {
    rule.type = HbaRule::Type::kHostSsl;
  } else if (type->Is("hostnossl")) {
    rule.type = HbaRule::Type::kHostNoSsl;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown connection type \"", type->text,
                     "\" (expected local, host, hostssl or hostnossl)"));
  }
  PGF_ASSIGN_OR_RETURN(rule.databases, ParseNames(ctx, cursor, /*database=*/true));
  PGF_ASSIGN_OR_RETURN(rule.users, ParseNames(ctx, cursor, /*database=*/false));
  if (rule.type != HbaRule::Type::kLocal) PGF_RETURN_IF_ERROR(ParseAddress(cursor, rule));
  PGF_RETURN_IF_ERROR(ParseMethod(cursor, rule));
  if (const Token* option = cursor.Next(); option != nullptr) {
    if (option->kind != Token::Kind::kWord || !option->text.starts_with("map=") ||
        option->text.size() == 4) {
      return absl::InvalidArgumentError(absl::StrCat("unsupported option \"", option->text,
                                                     "\" (only map=NAME is, as in PgBouncer)"));
    }
    rule.map_name = option->text.substr(4);
    if (ident_maps != nullptr) {
      auto map = ident_maps->find(rule.map_name);
      if (map == ident_maps->end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("ident map \"", rule.map_name, "\" is not in auth_ident_file"));
      }
      rule.mappings = map->second;
    }
  }
  if (!cursor.AtEnd()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unexpected \"", cursor.Peek()->text, "\" after the method's options"));
  }
  return rule;
}

// IPv4 bytes of an AF_INET address or an IPv4-mapped AF_INET6 one.
bool AddressBytes(const sockaddr* address, int& family, const uint8_t*& bytes) {
  if (address == nullptr) return false;
  if (address->sa_family == AF_INET) {
    family = AF_INET;
    bytes = reinterpret_cast<const uint8_t*>(
        &reinterpret_cast<const sockaddr_in*>(address)->sin_addr.s_addr);
    return true;
  }
  if (address->sa_family == AF_INET6) {
    const in6_addr& v6 = reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&v6)) {
      family = AF_INET;
      bytes = v6.s6_addr + 12;
    } else {
      family = AF_INET6;
      bytes = v6.s6_addr;
    }
    return true;
  }
  return false;
}

bool AddressMatches(const HbaRule& rule, const sockaddr* address) {
  if (rule.any_address) return true;
  int family = AF_UNSPEC;
  const uint8_t* bytes = nullptr;
  if (!AddressBytes(address, family, bytes) || family != rule.family) return false;
  const size_t size = family == AF_INET ? 4 : 16;
  for (size_t i = 0; i < size; ++i) {
    if ((bytes[i] & rule.mask[i]) != rule.address[i]) return false;
  }
  return true;
}

}  // namespace

const char* HbaMethodName(HbaMethod method) {
  switch (method) {
    case HbaMethod::kTrust:
      return "trust";
    case HbaMethod::kReject:
      return "reject";
    case HbaMethod::kPassword:
      return "password";
    case HbaMethod::kMd5:
      return "md5";
    case HbaMethod::kScramSha256:
      return "scram-sha-256";
    case HbaMethod::kCert:
      return "cert";
    case HbaMethod::kPeer:
      return "peer";
  }
  return "?";
}

const HbaRule* MatchHba(const HbaFile& hba, const HbaLogin& login) {
  for (const HbaRule& rule : hba.rules) {
    if (login.unix_socket != (rule.type == HbaRule::Type::kLocal)) continue;
    if (!login.unix_socket) {
      if (rule.type == HbaRule::Type::kHostSsl && !login.tls) continue;
      if (rule.type == HbaRule::Type::kHostNoSsl && login.tls) continue;
      if (!AddressMatches(rule, login.address)) continue;
    }
    // The agent serves no physical replication connections, which alone `replication`
    // matches (and `all` does not).
    const HbaNames& dbs = rule.databases;
    const std::string database(login.database);
    const std::string user(login.user);
    if (!dbs.all && !(dbs.sameuser && login.database == login.user) &&
        !dbs.names.contains(database)) {
      continue;
    }
    if (!rule.users.all && !rule.users.names.contains(user)) continue;
    return &rule;
  }
  return nullptr;
}

absl::StatusOr<IdentMaps> ParseIdentFile(const std::string& text, const std::string& path) {
  IdentMaps maps;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    auto error = [&](absl::string_view message) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line_number, ": ", message));
    };
    absl::StatusOr<std::vector<Token>> tokens = Tokenize(line);
    if (!tokens.ok()) return error(tokens.status().message());
    if (tokens->empty()) continue;
    if (tokens->size() != 3 || (*tokens)[0].kind != Token::Kind::kWord || !(*tokens)[1].IsName() ||
        !(*tokens)[2].IsName()) {
      return error("expected \"MAP SYSTEM-USER DATABASE-USER\" (include lines are not supported)");
    }
    IdentMapping mapping;
    mapping.system_user = (*tokens)[1].text;
    if ((*tokens)[1].kind == Token::Kind::kWord && mapping.system_user.starts_with("/")) {
      return error("regular expressions are not supported (as in PgBouncer)");
    }
    const Token& database_user = (*tokens)[2];
    if (database_user.Is("all")) {
      mapping.any_database_user = true;
    } else if (database_user.kind == Token::Kind::kWord &&
               (database_user.text.starts_with("+") || database_user.text.starts_with("/") ||
                database_user.text.starts_with("\\"))) {
      return error(absl::StrCat("database user \"", database_user.text,
                                "\": groups, regular expressions and \\1 are not supported"));
    } else {
      mapping.database_user = database_user.text;
    }
    maps[(*tokens)[0].text].push_back(std::move(mapping));
  }
  return maps;
}

namespace {

absl::StatusOr<HbaFile> ParseHba(const std::string& text, const std::string& path,
                                 const IdentMaps* ident_maps, ReadFileFn read_file) {
  HbaFile hba;
  hba.path = path;
  const ParseContext ctx{path, read_file};
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    absl::StatusOr<std::vector<Token>> tokens = Tokenize(line);
    absl::StatusOr<HbaRule> rule;
    if (tokens.ok()) {
      if (tokens->empty()) continue;
      Cursor cursor(*tokens);
      rule = ParseRule(ctx, ident_maps, cursor);
    } else {
      rule = tokens.status();
    }
    if (!rule.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_number, ": ", rule.status().message()));
    }
    rule->line = line_number;
    hba.rules.push_back(*std::move(rule));
  }
  return hba;
}

}  // namespace

absl::StatusOr<HbaFile> ParseHbaFile(const std::string& text, const std::string& path,
                                     const IdentMaps& ident_maps, ReadFileFn read_file) {
  return ParseHba(text, path, &ident_maps, std::move(read_file));
}

absl::Status CheckHbaText(const std::string& text, const std::string& path,
                          const IdentMaps* ident_maps) {
  // An @file names a file on the host that loads the rules: its names are not checked here.
  auto no_include = [](const std::string&) -> absl::StatusOr<std::string> { return ""; };
  return ParseHba(text, path, ident_maps, no_include).status();
}

absl::StatusOr<HbaFile> LoadHbaFile(const std::string& hba_path, const std::string& ident_path,
                                    const ReadFileFn& read_include) {
  IdentMaps ident_maps;
  if (!ident_path.empty()) {
    PGF_ASSIGN_OR_RETURN(std::string ident_text, ReadTextFile(ident_path));
    PGF_ASSIGN_OR_RETURN(ident_maps, ParseIdentFile(ident_text, ident_path));
  }
  PGF_ASSIGN_OR_RETURN(std::string text, ReadTextFile(hba_path));
  return ParseHbaFile(text, hba_path, ident_maps,
                      read_include ? read_include : ReadFileFn(&ReadTextFile));
}

}  // namespace pgfleet::config
