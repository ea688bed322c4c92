-- muster aggregator history, version 4: the fingerprint of each spool's held
-- row (mst_change_fingerprint() of the change at held_seq, as a signed 64-bit
-- integer), sent in the Welcome so that an agent whose spool was restored
-- from a backup and went past what is held here notices that its rows are
-- other changes. Kept here rather than read from `changes`, whose rows
-- retention deletes. 0: unknown (spools held before this version), and the
-- agent does not compare.
ALTER TABLE spools ADD COLUMN held_fp INTEGER NOT NULL DEFAULT 0;
