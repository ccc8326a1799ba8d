-- Agents resumed early by `fleetctl resume -l SELECTOR` while their window goes on for the
-- others (comma-separated agent ids): left alone from then on, like skip_agents.
ALTER TABLE maintenance_windows ADD COLUMN resumed_agents TEXT NOT NULL DEFAULT '';
