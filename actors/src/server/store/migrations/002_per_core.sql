-- Schema 2: per-core history, and `raw_log`, where a sample is durable before it moves into
-- `raw` and the rollups.
-- `raw.cores`: one little-endian u16 per core, hundredths of a percent. A rollup's `cores`:
-- per core a little-endian `u32 n, f32 sum, f32 min, f32 max`.
ALTER TABLE raw ADD COLUMN cores BLOB;
ALTER TABLE rollup_1m ADD COLUMN cores BLOB;
ALTER TABLE rollup_10m ADD COLUMN cores BLOB;
ALTER TABLE rollup_1h ADD COLUMN cores BLOB;

-- The columns of `raw`, without an index: an append writes only the last page. (IF NOT
-- EXISTS: lanmon before `user_version` created it before it upgraded a schema-1 database.)
CREATE TABLE IF NOT EXISTS raw_log (
    agent INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    cpu REAL,
    mem INTEGER,
    cores BLOB
);

UPDATE meta SET value = '2' WHERE key = 'schema';
