-- muster aggregator history, version 2: stage completions.
-- One row per (node, boot, stage): when the stage was first reached in that
-- boot and how long it took from the moment it could start. The stage engine
-- learns each role's typical (p50) and late (p95) stage durations from these
-- rows at start, so estimates survive restarts of the aggregator. Written by
-- the leader only, like every other row, and stamped with its epoch.

CREATE TABLE stage_completions (
  node_id     TEXT NOT NULL,
  boot_id     TEXT NOT NULL,
  stage       TEXT NOT NULL,
  role        TEXT NOT NULL,
  reached_ms  INTEGER NOT NULL,
  duration_ms INTEGER NOT NULL,
  epoch       INTEGER NOT NULL,
  PRIMARY KEY (node_id, boot_id, stage)
) WITHOUT ROWID;
CREATE INDEX stage_completions_reached ON stage_completions (reached_ms);
