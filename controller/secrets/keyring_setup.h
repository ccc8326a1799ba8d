// Start-up wiring of the secrets key into the store: load --secrets-key-file (and the previous
// key while rotating), hand the keyring to the store, re-encrypt what the previous key sealed.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "controller/store/store.h"

namespace pgfleet::controller::secrets {

// Logs what it did (counts and key ids, never values). Errors: an unreadable or unsafe key
// file, or values that neither key can open while rotating.
absl::Status InstallKeyring(Store& store, const std::string& key_file,
                            const std::string& previous_key_file);

}  // namespace pgfleet::controller::secrets
