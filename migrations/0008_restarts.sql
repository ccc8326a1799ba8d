-- Restart rollouts (fleetctl agents restart): the same waves, bake and health gates as a config
-- rollout, but each wave's agents hand over to a new process of the binary on disk. to_version
-- and from_version hold the config the agents run (unchanged by a restart).
ALTER TABLE rollouts ADD COLUMN kind TEXT NOT NULL DEFAULT 'config'
  CHECK (kind IN ('config', 'restart'));
-- Which agents a restart rollout took: only those whose binary on disk differs from the running
-- one, and/or only those whose binary on disk is this version ('' : any).
ALTER TABLE rollouts ADD COLUMN only_outdated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN binary_version TEXT NOT NULL DEFAULT '';

-- Per agent of a restart rollout: the RestartCommand sent to it (NULL: not yet), the pid it ran
-- then, and the pid of the process that took over (NULL: not yet). A controller restart
-- resumes from these: the new process's hello names the command it completes.
ALTER TABLE rollout_agents ADD COLUMN command_id INTEGER;
ALTER TABLE rollout_agents ADD COLUMN old_pid INTEGER;
ALTER TABLE rollout_agents ADD COLUMN new_pid INTEGER;
