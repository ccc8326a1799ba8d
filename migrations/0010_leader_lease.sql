-- Leadership of the controllers that share one database (issue 24: several controllers, one
-- leader). One row: who leads, until when (a lease the leader renews), and a fencing token that
-- grows at every change of leader. A leader's store checks, inside each of its write
-- transactions, that the token is still its own, so a deposed leader's late write (a rollout
-- step after the new leader took over) is refused rather than applied.
-- Written in the SQL both dialects share (controller/store/migration_dialect.h).
CREATE TABLE leader_lease (
  id              INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
  holder          TEXT    NOT NULL CHECK (holder <> ''),
  fencing_token   INTEGER NOT NULL CHECK (fencing_token > 0),
  acquired_unix_ms INTEGER NOT NULL,
  expires_unix_ms INTEGER NOT NULL
);
