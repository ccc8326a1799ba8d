-- Rollouts: an environment moving from one config version to another in waves, and where
-- each agent stands. The rollout engine resumes from these rows after a restart.

CREATE TABLE rollouts (
  id                   INTEGER PRIMARY KEY AUTOINCREMENT,
  environment          TEXT    NOT NULL REFERENCES environments (name),
  from_version         INTEGER,            -- NULL: the environment had no desired version.
  to_version           INTEGER NOT NULL REFERENCES config_versions (version),
  waves                TEXT    NOT NULL,   -- Comma-separated: 1,25%,100%
  bake_ms              INTEGER NOT NULL CHECK (bake_ms >= 0),
  max_unavailable      INTEGER NOT NULL CHECK (max_unavailable >= 0),
  max_cl_waiting       INTEGER NOT NULL,
  max_maxwait_ms       INTEGER NOT NULL,
  max_new_server_errors  INTEGER NOT NULL,
  max_new_login_failures INTEGER NOT NULL,
  state                TEXT    NOT NULL
                       CHECK (state IN ('running', 'paused', 'succeeded', 'failed', 'aborted')),
  current_wave         INTEGER NOT NULL DEFAULT 0,
  wave_started_unix_ms INTEGER NOT NULL DEFAULT 0,
  bake_started_unix_ms INTEGER NOT NULL DEFAULT 0,
  failed_agent         TEXT    NOT NULL DEFAULT '',
  reason               TEXT    NOT NULL DEFAULT '',
  created_by           TEXT    NOT NULL,
  force_reason         TEXT    NOT NULL DEFAULT '',
  created_unix_ms      INTEGER NOT NULL,
  finished_unix_ms     INTEGER NOT NULL DEFAULT 0
);

-- One active rollout per environment, enforced by the database itself.
CREATE UNIQUE INDEX rollouts_one_active ON rollouts (environment)
  WHERE state IN ('running', 'paused');
CREATE INDEX rollouts_by_environment ON rollouts (environment, id);

CREATE TABLE rollout_agents (
  rollout_id INTEGER NOT NULL REFERENCES rollouts (id),
  agent_id   TEXT    NOT NULL REFERENCES agents (agent_id),
  wave       INTEGER NOT NULL CHECK (wave >= 0),
  state      TEXT    NOT NULL,  -- waiting, applying, applied, failed, rolled_back
  error      TEXT    NOT NULL DEFAULT '',
  PRIMARY KEY (rollout_id, agent_id)
);

-- Promotion: versions must complete a rollout in the upstream environment first.
ALTER TABLE environments ADD COLUMN upstream TEXT REFERENCES environments (name);
