-- muster aggregator history, version 1.
-- Applied at start inside one transaction; PRAGMA user_version records it.
-- Every row written carries the leader epoch that wrote it.

CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

-- The node registry.
CREATE TABLE nodes (
  node_id       TEXT PRIMARY KEY,
  role          TEXT NOT NULL,
  hostname      TEXT NOT NULL DEFAULT '',
  first_seen_ms INTEGER NOT NULL,
  last_seen_ms  INTEGER NOT NULL
) WITHOUT ROWID;

-- What the aggregator holds for each (node, spool id): the highest sequence
-- number below which every change is committed. Idempotent ingest and the
-- Welcome's held_seq come from here, so no per-row (node, seq) index is
-- needed on the hot insert path.
CREATE TABLE spools (
  node_id  TEXT NOT NULL,
  spool_id TEXT NOT NULL,
  held_seq INTEGER NOT NULL,
  epoch    INTEGER NOT NULL,
  PRIMARY KEY (node_id, spool_id)
) WITHOUT ROWID;

CREATE TABLE boots (
  node_id       TEXT NOT NULL,
  boot_id       TEXT NOT NULL,
  boot_time_ms  INTEGER NOT NULL,
  first_seen_ms INTEGER NOT NULL,
  PRIMARY KEY (node_id, boot_id)
) WITHOUT ROWID;

-- Every state change of every component.
CREATE TABLE changes (
  id          INTEGER PRIMARY KEY,
  node_id     TEXT NOT NULL,
  spool_id    TEXT NOT NULL,
  seq         INTEGER NOT NULL,
  component   TEXT NOT NULL,
  check_kind  TEXT NOT NULL,
  from_state  TEXT NOT NULL,
  to_state    TEXT NOT NULL,
  at_ms       INTEGER NOT NULL,
  output      TEXT NOT NULL,
  boot_id     TEXT NOT NULL,
  health      INTEGER NOT NULL,
  rise        INTEGER NOT NULL,
  fall        INTEGER NOT NULL,
  epoch       INTEGER NOT NULL,
  received_ms INTEGER NOT NULL
);
CREATE INDEX changes_at ON changes (at_ms);

-- Cluster verdict changes.
CREATE TABLE cluster_verdicts (
  id      INTEGER PRIMARY KEY,
  verdict TEXT NOT NULL,
  at_ms   INTEGER NOT NULL,
  reasons TEXT NOT NULL,
  epoch   INTEGER NOT NULL
);
