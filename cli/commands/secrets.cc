// fleetctl secrets: credentials and TLS files. Each change makes a new config version (the
// environment's newest, with that one change), rolled out like any other. Passwords are read
// from a no-echo prompt or stdin, never from argv (which every local user can read in ps).
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/commands/commands.h"
#include "common/auth_crypto.h"

namespace pgfleet::cli {
namespace {

constexpr size_t kScramSaltBytes = 16;  // As PostgreSQL's own verifiers.

// One line from the terminal with echo off; nullopt when it cannot be read.
std::optional<std::string> PromptNoEcho(const char* prompt) {
  fprintf(stderr, "%s", prompt);
  fflush(stderr);
  termios saved;
  const bool restore = tcgetattr(STDIN_FILENO, &saved) == 0;
  if (restore) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  std::string line;
  const bool ok = static_cast<bool>(std::getline(std::cin, line));
  if (restore) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
  fprintf(stderr, "\n");
  if (!ok) return std::nullopt;
  return line;
}

// The password: prompted twice on a terminal, else stdin up to its first line break.
std::optional<std::string> ReadPassword(const std::string& user) {
  std::string password;
  if (isatty(STDIN_FILENO)) {
    std::optional<std::string> first =
        PromptNoEcho(absl::StrCat("password for ", user, ": ").c_str());
    std::optional<std::string> second = PromptNoEcho("again: ");
    if (!first.has_value() || !second.has_value()) return std::nullopt;
    if (*first != *second) {
      fprintf(stderr, "fleetctl: the passwords differ\n");
      return std::nullopt;
    }
    password = *first;
  } else {
    std::string all((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    password = all.substr(0, all.find('\n'));
    if (!password.empty() && password.back() == '\r') password.pop_back();
  }
  if (password.empty()) {
    fprintf(stderr, "fleetctl: empty password\n");
    return std::nullopt;
  }
  return password;
}

// What the controller stores: a SCRAM-SHA-256 verifier, or the password with --plaintext.
std::optional<std::string> SecretFromInput(const Context& ctx, const std::string& user) {
  std::optional<std::string> password = ReadPassword(user);
  if (!password.has_value()) return std::nullopt;
  if (ctx.flags().Has("plaintext")) return password;
  return crypto::FormatScramSecret(crypto::ScramKeysFromPassword(
      *password, crypto::RandomBytes(kScramSaltBytes), crypto::kScramDefaultIterations));
}

int PrintChange(Context& ctx, const pgfleet::v1::SecretsChange& change) {
  for (const std::string& warning : change.warnings()) {
    fprintf(stderr, "fleetctl: warning: %s\n", warning.c_str());
  }
  if (ctx.json()) {
    ctx.PrintJson(change);
    return kExitOk;
  }
  const pgfleet::v1::ConfigVersion& version = change.version();
  printf("config version v%llu of %s: %s\n", static_cast<unsigned long long>(version.version()),
         version.environment().c_str(), version.message().c_str());
  for (const auto& file : version.files()) {
    printf("  %-22s %s  %lld bytes%s\n", file.key().c_str(), file.fingerprint().c_str(),
           static_cast<long long>(file.size()),
           file.cert_subject().empty()
               ? ""
               : absl::StrCat("  ", file.cert_subject(), ", expires ",
                              FormatTime(file.cert_not_after_unix_ms()), " UTC")
                     .c_str());
  }
  for (const auto& overlap : version.credential_overlaps()) {
    printf("  rotation of %s: old secret accepted until %s UTC\n", overlap.user().c_str(),
           FormatTime(overlap.expires_unix_ms()).c_str());
  }
  printf("roll it out: fleetctl rollout start --env %s --version v%llu\n",
         version.environment().c_str(), static_cast<unsigned long long>(version.version()));
  return kExitOk;
}

int SetTls(Context& ctx) {
  pgfleet::v1::SetTlsFilesRequest request;
  request.set_environment(ctx.flags().Get("env"));
  request.set_side(ctx.flags().Has("server") ? "server" : "client");
  request.set_message(ctx.flags().Get("message"));
  for (const char* flag : {"tls-cert", "tls-key", "tls-ca-file"}) {
    if (!ctx.flags().Has(flag)) continue;
    const std::string path = ctx.flags().Get(flag);
    absl::StatusOr<std::string> read = ReadInputFile(path);
    absl::Status utf8 = read.ok() ? CheckUtf8Text(path, *read) : read.status();
    if (!utf8.ok()) {
      fprintf(stderr, "fleetctl: --%s %s\n", flag, std::string(utf8.message()).c_str());
      return kExitUsage;
    }
    const std::string& pem = *read;
    if (std::string(flag) == "tls-cert") request.set_cert_pem(pem);
    if (std::string(flag) == "tls-key") request.set_key_pem(pem);
    if (std::string(flag) == "tls-ca-file") request.set_ca_pem(pem);
  }
  pgfleet::v1::SecretsChange change;
  grpc::Status status = ctx.secrets().SetTlsFiles(ctx.NewCall().get(), request, &change);
  if (!status.ok()) return ctx.Fail(status);
  return PrintChange(ctx, change);
}

int SecretsSet(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  const bool tls =
      ctx.flags().Has("tls-cert") || ctx.flags().Has("tls-key") || ctx.flags().Has("tls-ca-file");
  if (tls == ctx.flags().Has("user")) {
    fprintf(stderr,
            "fleetctl: give either --user NAME (a password) or --tls-cert/--tls-key/--tls-ca-file "
            "(TLS files)\n");
    return kExitUsage;
  }
  if (tls) {
    if (ctx.flags().Has("plaintext")) {
      fprintf(stderr, "fleetctl: --plaintext is for passwords (--user)\n");
      return kExitUsage;
    }
    return SetTls(ctx);
  }
  if (ctx.flags().Has("server")) {
    fprintf(stderr, "fleetctl: --server is for TLS files\n");
    return kExitUsage;
  }
  if (int rc = RequireFlag(ctx, "user")) return rc;
  pgfleet::v1::SetUserSecretRequest request;
  request.set_environment(ctx.flags().Get("env"));
  request.set_user(ctx.flags().Get("user"));
  request.set_plaintext(ctx.flags().Has("plaintext"));
  request.set_message(ctx.flags().Get("message"));
  std::optional<std::string> secret = SecretFromInput(ctx, request.user());
  if (!secret.has_value()) return kExitUsage;
  request.set_secret(*secret);
  pgfleet::v1::SecretsChange change;
  grpc::Status status = ctx.secrets().SetUserSecret(ctx.NewCall().get(), request, &change);
  if (!status.ok()) return ctx.Fail(status);
  return PrintChange(ctx, change);
}

int RotateBegin(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  if (int rc = RequireFlag(ctx, "user")) return rc;
  if (int rc = RequireFlag(ctx, "overlap")) return rc;
  pgfleet::v1::BeginRotationRequest request;
  request.set_environment(ctx.flags().Get("env"));
  request.set_user(ctx.flags().Get("user"));
  request.set_plaintext(ctx.flags().Has("plaintext"));
  request.set_message(ctx.flags().Get("message"));
  int64_t overlap = 0;
  if (!ParseDurationFlag(ctx, "overlap", &overlap)) return kExitUsage;
  request.set_overlap_seconds(overlap);
  std::optional<std::string> secret = SecretFromInput(ctx, request.user());
  if (!secret.has_value()) return kExitUsage;
  request.set_new_secret(*secret);
  pgfleet::v1::SecretsChange change;
  grpc::Status status = ctx.secrets().BeginRotation(ctx.NewCall().get(), request, &change);
  if (!status.ok()) return ctx.Fail(status);
  return PrintChange(ctx, change);
}

int RotateEnd(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  if (int rc = RequireFlag(ctx, "user")) return rc;
  pgfleet::v1::EndRotationRequest request;
  request.set_environment(ctx.flags().Get("env"));
  request.set_user(ctx.flags().Get("user"));
  request.set_message(ctx.flags().Get("message"));
  pgfleet::v1::SecretsChange change;
  grpc::Status status = ctx.secrets().EndRotation(ctx.NewCall().get(), request, &change);
  if (!status.ok()) return ctx.Fail(status);
  return PrintChange(ctx, change);
}

int SecretsList(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  pgfleet::v1::ListSecretsRequest request;
  request.set_environment(ctx.flags().Get("env"));
  pgfleet::v1::ListSecretsResponse response;
  grpc::Status status = ctx.secrets().ListSecrets(ctx.NewCall().get(), request, &response);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(response);
    return kExitOk;
  }
  printf("%s v%llu\n", request.environment().c_str(),
         static_cast<unsigned long long>(response.version()));
  std::vector<std::vector<std::string>> rows;
  for (const auto& file : response.files()) {
    rows.push_back(
        {file.key(), file.fingerprint(), absl::StrCat(file.size()),
         file.cert_subject().empty() ? "-" : file.cert_subject(),
         file.cert_not_after_unix_ms() ? FormatTime(file.cert_not_after_unix_ms()) : "-"});
  }
  PrintTable({"FILE", "FINGERPRINT", "SIZE", "SUBJECT", "EXPIRES (UTC)"}, rows);
  if (response.auth_file_users_size() > 0) {
    printf("auth_file users: %s\n", absl::StrJoin(response.auth_file_users(), ", ").c_str());
  }
  for (const auto& overlap : response.credential_overlaps()) {
    printf("rotation of %s: old secret accepted until %s UTC\n", overlap.user().c_str(),
           FormatTime(overlap.expires_unix_ms()).c_str());
  }
  return kExitOk;
}

}  // namespace

std::vector<CommandSpec> SecretsCommands() {
  const FlagSpec plaintext = {
      "plaintext", "", "",
      "store the password itself, not a SCRAM-SHA-256 verifier. Needed only when the agent "
      "must log in to PostgreSQL as this user with this password: the [databases] entry has "
      "no password= and the server asks for md5 or SCRAM (a verifier cannot answer md5, and "
      "answers SCRAM only for clients that logged in with SCRAM themselves)"};
  const FlagSpec message = {"message", "m", "MESSAGE", "why, kept with the version"};
  return {
      {{"secrets", "set"},
       "",
       0,
       "a user's password (read from a no-echo prompt or stdin, never argv; sent as a "
       "SCRAM-SHA-256 verifier unless --plaintext), or TLS files "
       "(--tls-cert/--tls-key/--tls-ca-file, "
       "checked: key matches, not expired, CA verifies); makes a new version to roll out",
       {{"env", "", "ENV", "the environment", true},
        {"user", "", "NAME", "the user whose auth_file entry to set"},
        plaintext,
        {"tls-cert", "", "FILE",
         "PEM certificate (client_tls_cert_file, or server_ with --server)"},
        {"tls-key", "", "FILE", "PEM private key matching --tls-cert"},
        // Not --tls-ca: that global flag is the CA fleetctl verifies the controller with.
        {"tls-ca-file", "", "FILE", "PEM CA certificate(s) that verify --tls-cert's peers"},
        {"server", "", "", "the TLS files are for connections to PostgreSQL (server_tls_*)"},
        message},
       SecretsSet},
      {{"secrets", "rotate", "begin"},
       "",
       0,
       "a new password for a user (prompt or stdin) while the old one stays accepted for "
       "--overlap; makes a new version to roll out",
       {{"env", "", "ENV", "the environment", true},
        {"user", "", "NAME", "the user", true},
        {"overlap", "", "DURATION", "how long the old password stays accepted (30m)", true},
        plaintext,
        message},
       RotateBegin},
      {{"secrets", "rotate", "end"},
       "",
       0,
       "end a user's rotation: only the new password is accepted; makes a new version to roll "
       "out",
       {{"env", "", "ENV", "the environment", true},
        {"user", "", "NAME", "the user", true},
        message},
       RotateEnd},
      {{"secrets", "list"},
       "",
       0,
       "the newest version's credential and TLS files as fingerprints, users, rotations",
       {{"env", "", "ENV", "the environment", true}},
       SecretsList},
  };
}

}  // namespace pgfleet::cli
