-- muster aggregator history, version 5: every change of a node's
-- reachability, whatever the cluster verdict is at the time.
--   connected     an agent's Hello was welcomed (peer: its address:port)
--   disconnected  its stream closed (detail: why, as known: the agent closed
--                 it, silent for N ms, refused, replaced by a new stream...)
--   unreachable   stale_timeout passed since its last frame (or since this
--                 aggregator began to lead, when that is later)
--   reachable     a frame came back after it was unreachable
-- Written by the leader, stamped with its epoch; pruned by retention like
-- the changes; read by GET /v1/history/nodes.

CREATE TABLE node_events (
  id      INTEGER PRIMARY KEY,
  node_id TEXT NOT NULL,
  event   TEXT NOT NULL,
  at_ms   INTEGER NOT NULL,
  peer    TEXT NOT NULL DEFAULT '',
  boot_id TEXT NOT NULL DEFAULT '',
  detail  TEXT NOT NULL DEFAULT '',
  epoch   INTEGER NOT NULL
);
CREATE INDEX node_events_at ON node_events (at_ms);
CREATE INDEX node_events_node ON node_events (node_id, id);
