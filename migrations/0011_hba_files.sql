-- auth_type = hba's files travel with a config version like the auth_file (issue 22): the
-- config_files key may also be auth_hba_file or auth_ident_file. SQLite cannot change a CHECK,
-- so the table is rebuilt with the rows as they are (still encrypted: the associated data names
-- version and key, both kept) and its immutability triggers made again. They get new names:
-- PostgreSQL keeps 0005's trigger functions (dropped with nothing) under the old ones.
-- Written in the SQL both dialects share (controller/store/migration_dialect.h).
CREATE TABLE config_files_0011 (
  version                 INTEGER NOT NULL REFERENCES config_versions (version),
  key                     TEXT    NOT NULL CHECK (key IN ('auth_file',
                                  'auth_hba_file', 'auth_ident_file',
                                  'client_tls_key_file', 'client_tls_cert_file',
                                  'client_tls_ca_file', 'server_tls_key_file',
                                  'server_tls_cert_file', 'server_tls_ca_file')),
  sha256                  TEXT    NOT NULL CHECK (length(sha256) = 64),  -- Of the plaintext.
  size                    INTEGER NOT NULL CHECK (size >= 0),
  cert_subject            TEXT    NOT NULL DEFAULT '',
  cert_not_after_unix_ms  INTEGER,
  ciphertext              BLOB    NOT NULL,
  nonce                   BLOB    NOT NULL CHECK (length(nonce) = 12),
  key_id                  TEXT    NOT NULL CHECK (key_id <> ''),
  PRIMARY KEY (version, key)
) WITHOUT ROWID;

INSERT INTO config_files_0011 (version, key, sha256, size, cert_subject, cert_not_after_unix_ms,
                               ciphertext, nonce, key_id)
  SELECT version, key, sha256, size, cert_subject, cert_not_after_unix_ms, ciphertext, nonce,
         key_id
  FROM config_files;

DROP TABLE config_files;

ALTER TABLE config_files_0011 RENAME TO config_files;

CREATE TRIGGER config_files_rows_reencrypt_only BEFORE UPDATE ON config_files
WHEN NEW.version IS NOT OLD.version OR NEW.key IS NOT OLD.key OR NEW.sha256 IS NOT OLD.sha256
  OR NEW.size IS NOT OLD.size OR NEW.cert_subject IS NOT OLD.cert_subject
  OR NEW.cert_not_after_unix_ms IS NOT OLD.cert_not_after_unix_ms
BEGIN
  SELECT RAISE(ABORT, 'config_files rows are immutable (only re-encryption may change them)');
END;

CREATE TRIGGER config_files_rows_immutable_delete BEFORE DELETE ON config_files
BEGIN
  SELECT RAISE(ABORT, 'config_files rows are immutable');
END;
