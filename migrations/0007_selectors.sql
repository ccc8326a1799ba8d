-- Label selectors: operators' labels on agents, and the selectors stored with maintenance
-- windows and rollouts.

-- An operator's label on an agent wins over the one the agent reports (--labels) and survives
-- its reconnects. value NULL: the operator removed a label the agent reports.
CREATE TABLE agent_label_overrides (
  agent_id TEXT NOT NULL REFERENCES agents (agent_id) ON DELETE CASCADE,
  key      TEXT NOT NULL,
  value    TEXT,
  PRIMARY KEY (agent_id, key)
);

-- '' : every agent of the environment (the behaviour before selectors).
ALTER TABLE maintenance_windows ADD COLUMN selector TEXT NOT NULL DEFAULT '';
ALTER TABLE rollouts ADD COLUMN selector TEXT NOT NULL DEFAULT '';
-- The pin an agent had when the rollout took it (NULL: none), restored when the rollout fails
-- or is aborted: a rollout of some agents must not undo another one's pins.
ALTER TABLE rollout_agents ADD COLUMN previous_pin INTEGER;
