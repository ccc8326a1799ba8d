// Passwords written in a pushed pgbouncer.ini itself (`[databases] app = host=db
// password=s3cret`, PgBouncer's forced-user form) are secret material like the auth_file, but
// they sit in ordinary ini text that every viewer can read. The controller keeps them (agents
// need them) and redacts them from everything it shows: config show, diff, renders, the JSON
// API, the dashboard. A pushed ini may carry the redacted form back (`config show` > edit >
// `config push`): the value is then the one the environment's newest version already has for
// that database, so a round trip through the API loses nothing.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config/overlay.h"

namespace pgfleet::controller {

// What a redacted password reads as. A connection-string value without spaces, so the text
// stays a valid pgbouncer.ini.
inline constexpr char kRedactedPassword[] = "<redacted>";

// `ini_text` with the value of every `password=` in [databases] entries replaced by
// kRedactedPassword. A [databases] line the connection-string syntax cannot read has its whole
// value replaced (it may hold a password the parser could not find). Nothing else changes.
std::string RedactIniPasswords(const std::string& ini_text);

// The overlays with the same redaction on the values they set in [databases].
std::vector<config::ConfigOverlay> RedactOverlayPasswords(
    std::vector<config::ConfigOverlay> overlays);

// `pushed` with each `password=<redacted>` of a [databases] entry replaced by the password
// `previous` (the environment's newest version) has for the database of that name.
// InvalidArgument naming the database when `previous` has none to keep.
absl::StatusOr<std::string> RestoreIniPasswords(const std::string& pushed,
                                                const std::string& previous);

// The same for overlays: a redacted value is restored from the previous overlay with the same
// target that sets the same database, else from the previous base ini.
absl::StatusOr<std::vector<config::ConfigOverlay>> RestoreOverlayPasswords(
    std::vector<config::ConfigOverlay> pushed,
    const std::vector<config::ConfigOverlay>& previous_overlays, const std::string& previous_ini);

}  // namespace pgfleet::controller
