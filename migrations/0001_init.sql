-- pgfleet-controller's initial schema.
--
-- Conventions for every migrations/NNNN_name.sql file:
--  * The files are embedded into pgfleet-controller at build time and applied in version order
--    at start-up, each in its own BEGIN IMMEDIATE transaction together with its
--    schema_migrations row (that table belongs to the migration runner, not to these files).
--    So: no BEGIN/COMMIT here, and never edit a file that has been released; add a new one.
--  * PRAGMA foreign_keys is ON and cannot change inside a transaction: a migration that
--    rebuilds a table must keep every foreign key satisfied at each statement's end.
--  * Timestamps are Unix milliseconds in INTEGER columns; "no value" is NULL.
--  * The embedding raw string ends at a closing parenthesis followed by the word pgfleet_sql
--    and a double quote: that sequence must not appear here (the build refuses it).

CREATE TABLE environments (
  name            TEXT    NOT NULL PRIMARY KEY CHECK (name <> ''),
  desired_version INTEGER,                   -- NULL: no desired config yet.
  created_unix_ms INTEGER NOT NULL,
  -- The desired version must be one of this environment's own versions.
  FOREIGN KEY (name, desired_version) REFERENCES config_versions (environment, version)
);

-- Immutable (see the triggers below). `version` is global and increasing, never reused
-- (AUTOINCREMENT); `sha256` (lowercase hex of ini_text) addresses content within an environment.
CREATE TABLE config_versions (
  version         INTEGER PRIMARY KEY AUTOINCREMENT,
  environment     TEXT    NOT NULL REFERENCES environments (name),
  sha256          TEXT    NOT NULL CHECK (length(sha256) = 64),
  ini_text        TEXT    NOT NULL,
  author          TEXT    NOT NULL,
  message         TEXT    NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  parent_version  INTEGER,                   -- NULL: the environment's first version.
  UNIQUE (environment, sha256),
  -- Target of the composite foreign keys; also the index for "newest of an environment".
  UNIQUE (environment, version),
  FOREIGN KEY (environment, parent_version) REFERENCES config_versions (environment, version)
);

CREATE TRIGGER config_versions_immutable_update BEFORE UPDATE ON config_versions
BEGIN
  SELECT RAISE(ABORT, 'config_versions rows are immutable');
END;

CREATE TRIGGER config_versions_immutable_delete BEFORE DELETE ON config_versions
BEGIN
  SELECT RAISE(ABORT, 'config_versions rows are immutable');
END;

CREATE TABLE agents (
  agent_id           TEXT    NOT NULL PRIMARY KEY CHECK (agent_id <> ''),
  environment        TEXT    NOT NULL REFERENCES environments (name),
  agent_version      TEXT    NOT NULL,
  hostname           TEXT    NOT NULL,
  connected          INTEGER NOT NULL CHECK (connected IN (0, 1)),
  first_seen_unix_ms INTEGER NOT NULL,
  last_seen_unix_ms  INTEGER NOT NULL,
  -- As reported by the agent (0: running its local pgbouncer.ini). Deliberately no foreign
  -- key: an agent may report a version this database does not know.
  applied_version    INTEGER NOT NULL DEFAULT 0,
  applied_sha256     TEXT    NOT NULL DEFAULT '',
  last_error         TEXT    NOT NULL DEFAULT '',  -- Last NACK reason; cleared by an ACK.
  pinned_version     INTEGER,                      -- NULL: follows the environment.
  -- A pin names one of the agent's own environment's versions.
  FOREIGN KEY (environment, pinned_version) REFERENCES config_versions (environment, version)
);

CREATE INDEX agents_by_environment ON agents (environment, agent_id);

CREATE TABLE agent_labels (
  agent_id TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
  key      TEXT NOT NULL,
  value    TEXT NOT NULL,
  PRIMARY KEY (agent_id, key)
) WITHOUT ROWID;

-- For label selectors (key=value).
CREATE INDEX agent_labels_by_key ON agent_labels (key, value);

CREATE TABLE commands (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,
  agent_id         TEXT    NOT NULL REFERENCES agents (agent_id),
  kind             TEXT    NOT NULL CHECK (kind <> ''),  -- "pause", "resume", "reload".
  args             TEXT    NOT NULL,
  actor            TEXT    NOT NULL,
  created_unix_ms  INTEGER NOT NULL,
  ok               INTEGER CHECK (ok IN (0, 1)),         -- NULL while no result came back.
  error            TEXT    NOT NULL DEFAULT '',
  finished_unix_ms INTEGER                               -- NULL while no result came back.
);

CREATE INDEX commands_by_agent ON commands (agent_id, id);

-- Append-only record of every mutating call. `actor` is free text (a token name, "system").
CREATE TABLE audit_log (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  unix_ms INTEGER NOT NULL,
  actor   TEXT    NOT NULL,
  action  TEXT    NOT NULL,
  target  TEXT    NOT NULL,
  details TEXT    NOT NULL
);

CREATE INDEX audit_log_by_time ON audit_log (unix_ms);

CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
BEGIN
  SELECT RAISE(ABORT, 'audit_log rows are append-only');
END;

-- One sample per agent per minute: the newest report of the minute wins.
CREATE TABLE metrics (
  agent_id       TEXT    NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
  bucket_unix_ms INTEGER NOT NULL,  -- Start of the minute the sample stands for.
  sample_unix_ms INTEGER NOT NULL,  -- When the kept report arrived (decides "newest").
  report         BLOB    NOT NULL,  -- A serialized pgfleet.v1.MetricsReport.
  PRIMARY KEY (agent_id, bucket_unix_ms)
);

-- For pruning by age.
CREATE INDEX metrics_by_bucket ON metrics (bucket_unix_ms);

-- API tokens, by the lowercase sha256 hex of the token (never the token itself).
CREATE TABLE tokens (
  token_sha256    TEXT    NOT NULL PRIMARY KEY CHECK (length(token_sha256) = 64),
  name            TEXT    NOT NULL CHECK (name <> ''),
  role            TEXT    NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
  created_unix_ms INTEGER NOT NULL
);
