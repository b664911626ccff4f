-- Schema 4: the whole machine in the history (issue 13): load, swap used, the fullest
-- filesystem's use, each filesystem's use, and network and disk rates.
--
-- In `raw` and `raw_log`, as integers (an integer takes 1 to 4 bytes in a row, a REAL 8):
-- `load1_x100` the 1-minute load average in hundredths; `swap` swap used, bytes;
-- `fs_pct_x100` the fullest filesystem's use (size - available) / size in hundredths of a
-- percent; `net_rx`, `net_tx` network bytes per second received and sent, every interface
-- together; `disk_read`, `disk_write` disk bytes per second, every device together (the
-- server's rates since the agent's previous sample, rounded). `fs`: per filesystem a
-- little-endian `u8 slot, u16 used hundredths of a percent, f32 used bytes`.
-- In the rollups, each quantity as `_n, _sum, _min, _max` like `cpu`, in the units of `raw`
-- (hundredths for `load1_x100` and `fs_pct_x100`, bytes, bytes per second): whole numbers,
-- which SQLite stores in a REAL column as integers of 1 to 6 bytes instead of 8; `fs`: per
-- filesystem with readings a little-endian `u8 slot, u32 n, f32 pct sum, min, max, f32 bytes
-- sum, min, max`.

ALTER TABLE raw ADD COLUMN load1_x100 INTEGER;
ALTER TABLE raw ADD COLUMN swap INTEGER;
ALTER TABLE raw ADD COLUMN fs_pct_x100 INTEGER;
ALTER TABLE raw ADD COLUMN net_rx INTEGER;
ALTER TABLE raw ADD COLUMN net_tx INTEGER;
ALTER TABLE raw ADD COLUMN disk_read INTEGER;
ALTER TABLE raw ADD COLUMN disk_write INTEGER;
ALTER TABLE raw ADD COLUMN fs BLOB;

ALTER TABLE raw_log ADD COLUMN load1_x100 INTEGER;
ALTER TABLE raw_log ADD COLUMN swap INTEGER;
ALTER TABLE raw_log ADD COLUMN fs_pct_x100 INTEGER;
ALTER TABLE raw_log ADD COLUMN net_rx INTEGER;
ALTER TABLE raw_log ADD COLUMN net_tx INTEGER;
ALTER TABLE raw_log ADD COLUMN disk_read INTEGER;
ALTER TABLE raw_log ADD COLUMN disk_write INTEGER;
ALTER TABLE raw_log ADD COLUMN fs BLOB;

ALTER TABLE rollup_1m ADD COLUMN load1_x100_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1m ADD COLUMN load1_x100_sum REAL;
ALTER TABLE rollup_1m ADD COLUMN load1_x100_min REAL;
ALTER TABLE rollup_1m ADD COLUMN load1_x100_max REAL;
ALTER TABLE rollup_1m ADD COLUMN swap_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1m ADD COLUMN swap_sum REAL;
ALTER TABLE rollup_1m ADD COLUMN swap_min REAL;
ALTER TABLE rollup_1m ADD COLUMN swap_max REAL;
ALTER TABLE rollup_1m ADD COLUMN fs_pct_x100_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1m ADD COLUMN fs_pct_x100_sum REAL;
ALTER TABLE rollup_1m ADD COLUMN fs_pct_x100_min REAL;
ALTER TABLE rollup_1m ADD COLUMN fs_pct_x100_max REAL;
ALTER TABLE rollup_1m ADD COLUMN net_rx_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1m ADD COLUMN net_rx_sum REAL;
ALTER TABLE rollup_1m ADD COLUMN net_rx_min REAL;
ALTER TABLE rollup_1m ADD COLUMN net_rx_max REAL;
ALTER TABLE rollup_1m ADD COLUMN net_tx_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1m ADD COLUMN net_tx_sum REAL;
ALTER TABLE rollup_1m ADD COLUMN net_tx_min REAL;
ALTER TABLE rollup_1m ADD COLUMN net_tx_max REAL;
ALTER TABLE rollup_1m ADD COLUMN disk_read_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1m ADD COLUMN disk_read_sum REAL;
ALTER TABLE rollup_1m ADD COLUMN disk_read_min REAL;
ALTER TABLE rollup_1m ADD COLUMN disk_read_max REAL;
ALTER TABLE rollup_1m ADD COLUMN disk_write_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1m ADD COLUMN disk_write_sum REAL;
ALTER TABLE rollup_1m ADD COLUMN disk_write_min REAL;
ALTER TABLE rollup_1m ADD COLUMN disk_write_max REAL;
ALTER TABLE rollup_1m ADD COLUMN fs BLOB;

ALTER TABLE rollup_10m ADD COLUMN load1_x100_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_10m ADD COLUMN load1_x100_sum REAL;
ALTER TABLE rollup_10m ADD COLUMN load1_x100_min REAL;
ALTER TABLE rollup_10m ADD COLUMN load1_x100_max REAL;
ALTER TABLE rollup_10m ADD COLUMN swap_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_10m ADD COLUMN swap_sum REAL;
ALTER TABLE rollup_10m ADD COLUMN swap_min REAL;
ALTER TABLE rollup_10m ADD COLUMN swap_max REAL;
ALTER TABLE rollup_10m ADD COLUMN fs_pct_x100_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_10m ADD COLUMN fs_pct_x100_sum REAL;
ALTER TABLE rollup_10m ADD COLUMN fs_pct_x100_min REAL;
ALTER TABLE rollup_10m ADD COLUMN fs_pct_x100_max REAL;
ALTER TABLE rollup_10m ADD COLUMN net_rx_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_10m ADD COLUMN net_rx_sum REAL;
ALTER TABLE rollup_10m ADD COLUMN net_rx_min REAL;
ALTER TABLE rollup_10m ADD COLUMN net_rx_max REAL;
ALTER TABLE rollup_10m ADD COLUMN net_tx_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_10m ADD COLUMN net_tx_sum REAL;
ALTER TABLE rollup_10m ADD COLUMN net_tx_min REAL;
ALTER TABLE rollup_10m ADD COLUMN net_tx_max REAL;
ALTER TABLE rollup_10m ADD COLUMN disk_read_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_10m ADD COLUMN disk_read_sum REAL;
ALTER TABLE rollup_10m ADD COLUMN disk_read_min REAL;
ALTER TABLE rollup_10m ADD COLUMN disk_read_max REAL;
ALTER TABLE rollup_10m ADD COLUMN disk_write_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_10m ADD COLUMN disk_write_sum REAL;
ALTER TABLE rollup_10m ADD COLUMN disk_write_min REAL;
ALTER TABLE rollup_10m ADD COLUMN disk_write_max REAL;
ALTER TABLE rollup_10m ADD COLUMN fs BLOB;

ALTER TABLE rollup_1h ADD COLUMN load1_x100_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1h ADD COLUMN load1_x100_sum REAL;
ALTER TABLE rollup_1h ADD COLUMN load1_x100_min REAL;
ALTER TABLE rollup_1h ADD COLUMN load1_x100_max REAL;
ALTER TABLE rollup_1h ADD COLUMN swap_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1h ADD COLUMN swap_sum REAL;
ALTER TABLE rollup_1h ADD COLUMN swap_min REAL;
ALTER TABLE rollup_1h ADD COLUMN swap_max REAL;
ALTER TABLE rollup_1h ADD COLUMN fs_pct_x100_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1h ADD COLUMN fs_pct_x100_sum REAL;
ALTER TABLE rollup_1h ADD COLUMN fs_pct_x100_min REAL;
ALTER TABLE rollup_1h ADD COLUMN fs_pct_x100_max REAL;
ALTER TABLE rollup_1h ADD COLUMN net_rx_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1h ADD COLUMN net_rx_sum REAL;
ALTER TABLE rollup_1h ADD COLUMN net_rx_min REAL;
ALTER TABLE rollup_1h ADD COLUMN net_rx_max REAL;
ALTER TABLE rollup_1h ADD COLUMN net_tx_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1h ADD COLUMN net_tx_sum REAL;
ALTER TABLE rollup_1h ADD COLUMN net_tx_min REAL;
ALTER TABLE rollup_1h ADD COLUMN net_tx_max REAL;
ALTER TABLE rollup_1h ADD COLUMN disk_read_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1h ADD COLUMN disk_read_sum REAL;
ALTER TABLE rollup_1h ADD COLUMN disk_read_min REAL;
ALTER TABLE rollup_1h ADD COLUMN disk_read_max REAL;
ALTER TABLE rollup_1h ADD COLUMN disk_write_n INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollup_1h ADD COLUMN disk_write_sum REAL;
ALTER TABLE rollup_1h ADD COLUMN disk_write_min REAL;
ALTER TABLE rollup_1h ADD COLUMN disk_write_max REAL;
ALTER TABLE rollup_1h ADD COLUMN fs BLOB;

-- The filesystems of each agent that have a history: slot 0, 1, … in the order first seen,
-- at most 16 per agent (later ones are shown live, not kept).
CREATE TABLE mounts (
    agent INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    mount TEXT NOT NULL,
    PRIMARY KEY (agent, slot),
    UNIQUE (agent, mount)
) WITHOUT ROWID;
