-- Credentials and TLS material carried by config versions (issue 18, part 1): the files an agent
-- writes into its state dir and points its [pgbouncer] keys at (auth_file, client_tls_*_file,
-- server_tls_*_file), and password-rotation overlaps (a user's previous secret, accepted until
-- an expiry). Contents and previous secrets are stored only encrypted (AES-256-GCM, see
-- controller/secrets/secret_box.h): `ciphertext` ends with the 16-byte tag, `nonce` is 12 random
-- bytes, `key_id` names the key (first bytes of its sha256, hex). The associated data binds each
-- ciphertext to its version and key, so rows cannot be swapped.
--
-- Rows belong to an immutable config version and never change, except that the controller
-- re-encrypts them with a new key (--secrets-previous-key-file): only ciphertext, nonce and
-- key_id may be updated.

CREATE TABLE config_files (
  version                 INTEGER NOT NULL REFERENCES config_versions (version),
  key                     TEXT    NOT NULL CHECK (key IN ('auth_file',
                                  'client_tls_key_file', 'client_tls_cert_file',
                                  'client_tls_ca_file', 'server_tls_key_file',
                                  'server_tls_cert_file', 'server_tls_ca_file')),
  sha256                  TEXT    NOT NULL CHECK (length(sha256) = 64),  -- Of the plaintext.
  size                    INTEGER NOT NULL CHECK (size >= 0),
  -- Certificates (cert and CA files): the first certificate's subject and expiry, for display.
  cert_subject            TEXT    NOT NULL DEFAULT '',
  cert_not_after_unix_ms  INTEGER,
  ciphertext              BLOB    NOT NULL,
  nonce                   BLOB    NOT NULL CHECK (length(nonce) = 12),
  key_id                  TEXT    NOT NULL CHECK (key_id <> ''),
  PRIMARY KEY (version, key)
) WITHOUT ROWID;

CREATE TABLE credential_overlaps (
  version          INTEGER NOT NULL REFERENCES config_versions (version),
  user_name        TEXT    NOT NULL CHECK (user_name <> ''),
  expires_unix_ms  INTEGER NOT NULL,
  ciphertext       BLOB    NOT NULL,   -- The previous secret, as an auth_file holds it.
  nonce            BLOB    NOT NULL CHECK (length(nonce) = 12),
  key_id           TEXT    NOT NULL CHECK (key_id <> ''),
  PRIMARY KEY (version, user_name)
) WITHOUT ROWID;

CREATE TRIGGER config_files_reencrypt_only BEFORE UPDATE ON config_files
WHEN NEW.version IS NOT OLD.version OR NEW.key IS NOT OLD.key OR NEW.sha256 IS NOT OLD.sha256
  OR NEW.size IS NOT OLD.size OR NEW.cert_subject IS NOT OLD.cert_subject
  OR NEW.cert_not_after_unix_ms IS NOT OLD.cert_not_after_unix_ms
BEGIN
  SELECT RAISE(ABORT, 'config_files rows are immutable (only re-encryption may change them)');
END;

CREATE TRIGGER config_files_immutable_delete BEFORE DELETE ON config_files
BEGIN
  SELECT RAISE(ABORT, 'config_files rows are immutable');
END;

CREATE TRIGGER credential_overlaps_reencrypt_only BEFORE UPDATE ON credential_overlaps
WHEN NEW.version IS NOT OLD.version OR NEW.user_name IS NOT OLD.user_name
  OR NEW.expires_unix_ms IS NOT OLD.expires_unix_ms
BEGIN
  SELECT RAISE(ABORT, 'credential_overlaps rows are immutable (only re-encryption may change them)');
END;

CREATE TRIGGER credential_overlaps_immutable_delete BEFORE DELETE ON credential_overlaps
BEGIN
  SELECT RAISE(ABORT, 'credential_overlaps rows are immutable');
END;
