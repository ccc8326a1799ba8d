// Credentials the agent derives and keeps: SCRAM keys of plain passwords, and the previous
// secrets accepted during a credential overlap (rotation).

#include "agent/agent.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace pgfleet::agent {

const crypto::ScramKeys& Agent::ScramKeysForPlainPassword(const std::string& user,
                                                          const std::string& password) {
  auto it = scram_cache_.find(user);
  // scram_iterations may have changed since (SET, RELOAD): the verifier follows it.
  if (it == scram_cache_.end() || it->second.password != password ||
      it->second.keys.iterations != config_->scram_iterations) {
    CachedScram entry{password, crypto::ScramKeysFromPassword(
                                    password, crypto::ScramMockSalt(mock_auth_secret_, user),
                                    config_->scram_iterations)};
    it = scram_cache_.insert_or_assign(user, std::move(entry)).first;
  }
  return it->second.keys;
}

absl::Status Agent::SetCredentialOverlaps(const std::vector<CredentialOverlap>& overlaps) {
  const absl::Time now = absl::Now();
  absl::flat_hash_map<std::string, OpenOverlap> open;
  for (const CredentialOverlap& overlap : overlaps) {
    if (overlap.expires <= now) continue;
    PGF_ASSIGN_OR_RETURN(config::UserSecret previous,
                         config::MakeUserSecret(overlap.user, overlap.previous_secret));
    open.insert_or_assign(overlap.user, OpenOverlap{std::move(previous), overlap.expires});
  }
  for (const auto& [user, overlap] : open) {
    if (!overlaps_.contains(user) || overlaps_.at(user).expires != overlap.expires ||
        !crypto::SecretEquals(overlaps_.at(user).previous.secret, overlap.previous.secret)) {
      // The user and the expiry, never the secret.
      PGF_INFO("agent",
               "password rotation overlap for user '%s' open until %s: its previous secret is "
               "accepted too",
               user, absl::FormatTime(absl::RFC3339_sec, overlap.expires, absl::UTCTimeZone()));
    }
  }
  for (const auto& [user, overlap] : overlaps_) {
    if (!open.contains(user)) {
      PGF_INFO("agent", "password rotation overlap for user '%s' closed", user);
    }
  }
  overlaps_ = std::move(open);
  previous_scram_cache_.clear();
  return absl::OkStatus();
}

const config::UserSecret* Agent::PreviousSecret(const std::string& user) {
  auto it = overlaps_.find(user);
  if (it == overlaps_.end()) return nullptr;
  if (absl::Now() >= it->second.expires) {
    PGF_INFO("agent",
             "password rotation overlap for user '%s' expired: only the current "
             "secret is accepted now",
             user);
    overlaps_.erase(it);
    previous_scram_cache_.erase(user);
    return nullptr;
  }
  return &it->second.previous;
}

std::map<std::string, absl::Time> Agent::OverlapExpiries() const {
  std::map<std::string, absl::Time> expiries;
  const absl::Time now = absl::Now();
  for (const auto& [user, overlap] : overlaps_) {
    if (overlap.expires > now) expiries[user] = overlap.expires;
  }
  return expiries;
}

const crypto::ScramKeys& Agent::ScramKeysWithSalt(const std::string& user,
                                                  const std::string& password,
                                                  const crypto::ScramKeys& shown) {
  auto it = previous_scram_cache_.find(user);
  if (it == previous_scram_cache_.end() || it->second.password != password ||
      it->second.keys.salt != shown.salt || it->second.keys.iterations != shown.iterations) {
    CachedScram entry{password,
                      crypto::ScramKeysFromPassword(password, shown.salt, shown.iterations)};
    it = previous_scram_cache_.insert_or_assign(user, std::move(entry)).first;
  }
  return it->second.keys;
}

}  // namespace pgfleet::agent
