-- Config overlays: per-host edits on top of a version's base ini (controller/config/overlays.h),
-- kept with the version in the overlay file format (common/config/overlay.h). '' for none.
-- A version with overlays is addressed by the sha256 of its base and overlay text together;
-- one without keeps the sha256 of its base, so versions from before this migration are unchanged.
ALTER TABLE config_versions ADD COLUMN overlays_text TEXT NOT NULL DEFAULT '';
