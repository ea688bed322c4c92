-- A cluster verdict change is identified by the epoch that recorded it, its
-- time and its verdict, so that followers can copy the leader's verdict
-- history more than once without storing it twice.
CREATE UNIQUE INDEX cluster_verdicts_key ON cluster_verdicts (epoch, at_ms, verdict);
