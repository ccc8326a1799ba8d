#include "controller/secrets/keyring_setup.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace pgfleet::controller::secrets {

absl::Status InstallKeyring(Store& store, const std::string& key_file,
                            const std::string& previous_key_file) {
  PGF_ASSIGN_OR_RETURN(std::shared_ptr<const Keyring> keyring,
                       LoadKeyring(key_file, previous_key_file));
  store.SetSecretsKeyring(keyring);
  if (!keyring->can_seal()) {
    PGF_INFO("secrets",
             "no --secrets-key-file: credentials and TLS files cannot be pushed (versions "
             "without them work as before)");
    return absl::OkStatus();
  }
  PGF_INFO("secrets", "secret material is encrypted with key %s", keyring->current()->id());
  if (!keyring->previous().has_value()) return absl::OkStatus();
  PGF_ASSIGN_OR_RETURN(ReencryptResult result, store.ReencryptSecrets());
  PGF_INFO("secrets", "key rotation: re-encrypted %d value(s) from key %s to key %s",
           result.reencrypted, keyring->previous()->id(), keyring->current()->id());
  if (result.unreadable > 0) {
    PGF_WARN("secrets",
             "%d value(s) are sealed by a key this controller has neither as "
             "--secrets-key-file nor as --secrets-previous-key-file; versions holding them "
             "cannot be sent to agents",
             result.unreadable);
  }
  return absl::OkStatus();
}

}  // namespace pgfleet::controller::secrets
