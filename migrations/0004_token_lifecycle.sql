-- Tokens get an id (what `fleetctl token revoke` names), an optional expiry, a last-use time,
-- revocation, a creator, and an environment scope; and a fourth role, `agent`: a join token an
-- agent presents on its stream, valid for exactly one environment. The secret itself is still
-- never stored, only its sha256.
--
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt (nothing refers to
-- it by foreign key).

CREATE TABLE tokens_v2 (
  id                INTEGER PRIMARY KEY AUTOINCREMENT,
  token_sha256      TEXT    NOT NULL UNIQUE CHECK (length(token_sha256) = 64),
  name              TEXT    NOT NULL CHECK (name <> ''),
  role              TEXT    NOT NULL CHECK (role IN ('agent', 'viewer', 'operator', 'admin')),
  -- The one environment an agent token may join; operators' tokens have no scope ('').
  environment       TEXT    NOT NULL DEFAULT '',
  created_unix_ms   INTEGER NOT NULL,
  created_by        TEXT    NOT NULL DEFAULT '',
  expires_unix_ms   INTEGER,                -- NULL: never.
  last_used_unix_ms INTEGER,                -- NULL: never (updated at most once a minute).
  revoked_unix_ms   INTEGER,                -- NULL: not revoked. Revoked rows are kept, so a
                                            -- revoked bootstrap token is never registered again.
  -- Registered from PGFLEET_BOOTSTRAP_TOKEN: revoked when the first other admin token is made.
  bootstrap         INTEGER NOT NULL DEFAULT 0 CHECK (bootstrap IN (0, 1)),
  CHECK ((role = 'agent') = (environment <> '')),
  CHECK (bootstrap = 0 OR role = 'admin')
);

-- The controller registered PGFLEET_BOOTSTRAP_TOKEN as an admin token named 'bootstrap'.
INSERT INTO tokens_v2 (token_sha256, name, role, created_unix_ms, created_by, bootstrap)
  SELECT token_sha256, name, role, created_unix_ms, '',
         CASE WHEN name = 'bootstrap' AND role = 'admin' THEN 1 ELSE 0 END
  FROM tokens ORDER BY created_unix_ms, name;

DROP TABLE tokens;
ALTER TABLE tokens_v2 RENAME TO tokens;

-- An existing database that already has a real admin token: the bootstrap token stops now.
UPDATE tokens SET revoked_unix_ms = CAST(strftime('%s', 'now') AS INTEGER) * 1000
  WHERE bootstrap = 1
    AND EXISTS (SELECT 1 FROM tokens AS admin WHERE admin.role = 'admin' AND admin.bootstrap = 0);
