-- Schema 1, the first release: agents, their runs, every sample, and three rollup tiers.
-- `meta` is how lanmon before `PRAGMA user_version` knew the version; it is kept up to date so
-- that such a server still opens the database.
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('schema', '1');

-- One row per agent id: its last hello and run, and its last-known sample.
CREATE TABLE agents (
    key INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    hello TEXT NOT NULL,
    ip TEXT NOT NULL,
    run_id TEXT NOT NULL,
    run_key INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    latest TEXT
);

-- Short keys for (agent, run), used by the sample tables.
CREATE TABLE runs (
    key INTEGER PRIMARY KEY,
    agent INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    UNIQUE (agent, run_id)
);

-- Every sample: a (run, seq) once.
CREATE TABLE raw (
    agent INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    cpu REAL,
    mem INTEGER
);
CREATE UNIQUE INDEX raw_run_seq ON raw (run, seq);
CREATE INDEX raw_agent_ts ON raw (agent, ts_ms);

-- One row per agent and minute / 10 minutes / hour: count, and per quantity the number of
-- readings, their sum, minimum and maximum.
CREATE TABLE rollup_1m (
    agent INTEGER NOT NULL, ts_ms INTEGER NOT NULL, n INTEGER NOT NULL,
    cpu_n INTEGER NOT NULL, cpu_sum REAL, cpu_min REAL, cpu_max REAL,
    mem_n INTEGER NOT NULL, mem_sum REAL, mem_min REAL, mem_max REAL,
    PRIMARY KEY (agent, ts_ms)) WITHOUT ROWID;
CREATE TABLE rollup_10m (
    agent INTEGER NOT NULL, ts_ms INTEGER NOT NULL, n INTEGER NOT NULL,
    cpu_n INTEGER NOT NULL, cpu_sum REAL, cpu_min REAL, cpu_max REAL,
    mem_n INTEGER NOT NULL, mem_sum REAL, mem_min REAL, mem_max REAL,
    PRIMARY KEY (agent, ts_ms)) WITHOUT ROWID;
CREATE TABLE rollup_1h (
    agent INTEGER NOT NULL, ts_ms INTEGER NOT NULL, n INTEGER NOT NULL,
    cpu_n INTEGER NOT NULL, cpu_sum REAL, cpu_min REAL, cpu_max REAL,
    mem_n INTEGER NOT NULL, mem_sum REAL, mem_min REAL, mem_max REAL,
    PRIMARY KEY (agent, ts_ms)) WITHOUT ROWID;
