-- Maintenance windows: a database (or all) paused across an environment for a bounded time.
CREATE TABLE maintenance_windows (
  id                 INTEGER PRIMARY KEY AUTOINCREMENT,
  environment        TEXT    NOT NULL REFERENCES environments (name),
  database_name      TEXT    NOT NULL DEFAULT '',   -- '': all databases.
  starts_unix_ms     INTEGER NOT NULL,
  ends_unix_ms       INTEGER NOT NULL CHECK (ends_unix_ms > starts_unix_ms),
  drain_timeout_ms   INTEGER NOT NULL CHECK (drain_timeout_ms > 0),
  reason             TEXT    NOT NULL DEFAULT '',
  state              TEXT    NOT NULL CHECK (state IN
                       ('scheduled', 'pausing', 'paused', 'completed', 'cancelled', 'failed')),
  skip_agents        TEXT    NOT NULL DEFAULT '',   -- Comma-separated agent ids.
  created_by         TEXT    NOT NULL,
  created_unix_ms    INTEGER NOT NULL,
  pause_sent_unix_ms INTEGER NOT NULL DEFAULT 0,
  failure            TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX maintenance_windows_by_environment ON maintenance_windows (environment, starts_unix_ms);
