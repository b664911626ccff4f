//! The database's schema: its migrations, its version, and opening the writer's connection.
//!
//! Each schema change is one file `migrations/NNN_name.sql`, embedded in the binary and
//! listed in [`MIGRATIONS`]; migration `NNN` takes a database from version `NNN - 1` to
//! `NNN`, in one transaction with the new `PRAGMA user_version`. A database of lanmon before
//! `user_version` kept its version in `meta` (`'schema'` = `'1'` or `'2'`): on its first open
//! that value becomes its `user_version`, and it is upgraded in place from there. `meta` stays
//! as that code expects it (`'2'`), so that it can still open the database.
//!
//! The tables (version 4), each mapped by a struct in [`super::rows`]:
//! ```text
//! meta(key, value)                          the version, for lanmon before user_version
//! agents(key, id, hello JSON, ip, run_id, run_key, last_seq, latest JSON, seen_ms)
//!                                           one per agent id
//! runs(key, agent, run_id)                  short keys for (agent, run) used by `raw`
//! raw(agent, ts_ms, run, seq, cpu, mem, cores, load1_x100, swap, fs_pct_x100, net_rx,
//!     net_tx, disk_read, disk_write, fs)    unique (run, seq); index (agent, ts_ms)
//! raw_log(the same columns)                 no index: samples not yet moved into raw
//! rollup_1m / rollup_10m / rollup_1h(agent, ts_ms, n, cpu_n, cpu_sum, cpu_min, cpu_max,
//!                                    mem_…, cores, load1_x100_…, swap_…, fs_pct_x100_…,
//!                                    net_rx_…, net_tx_…, disk_read_…, disk_write_…, fs)
//!                                                                    key (agent, ts_ms)
//! mounts(agent, slot, mount)                each agent's filesystems with a history (≤ 16)
//! ```
//! `cores` is per-core CPU usage as a little-endian blob: in `raw` one `u16` per core in
//! hundredths of a percent; in the rollups `u32 n, f32 sum, f32 min, f32 max` per core.
//! `fs` is per-filesystem use by slot (`mounts`): in `raw` `u8 slot, u16 used hundredths of a
//! percent, f32 used bytes` each; in the rollups `u8 slot, u32 n` and `f32 sum, min, max` of
//! both. The other raw columns are integers in fixed units (hundredths for load and the
//! fullest filesystem's percent, bytes, bytes per second): 1 to 4 bytes each on disk, where a
//! REAL takes 8. `004_host.sql` says it all.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use super::error::{Result, StoreError};

/// One schema change.
pub(super) struct Migration {
    /// Its file in `migrations/` (a test checks the list against the directory).
    #[cfg_attr(not(test), allow(dead_code))]
    pub file: &'static str,
    /// What it brings, for the log line of an upgrade.
    pub about: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($file:literal, $about:literal) => {
        Migration {
            file: $file,
            about: $about,
            sql: include_str!(concat!("migrations/", $file)),
        }
    };
}

/// Every migration, oldest first: the `i`-th (from 0) makes version `i + 1`.
pub(super) const MIGRATIONS: &[Migration] = &[
    migration!("001_initial.sql", "agents, runs, samples, rollups"),
    migration!("002_per_core.sql", "per-core history"),
    migration!("003_agent_seen.sql", "when each agent last connected"),
    migration!(
        "004_host.sql",
        "load, swap, filesystems, network and disk rates"
    ),
];

/// The version this code writes: the number of migrations.
pub(super) const VERSION: usize = MIGRATIONS.len();

/// Opens (or creates) the database at `path` for writing and brings it to [`VERSION`].
pub(super) fn open(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    // WAL: readers (the HTTP API) never block the writer, and a commit is one append to the
    // log. NORMAL: a commit survives the process dying at any point (SIGKILL, panic); only a
    // power loss or kernel crash can lose the last commits before a checkpoint.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Applies every migration the database lacks.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let stored: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let found = match stored {
        0 => legacy_version(conn, path)?,
        v => usize::try_from(v).map_err(|_| newer(path, v.to_string()))?,
    };
    if found > VERSION {
        return Err(newer(path, found.to_string()));
    }
    if stored == 0 && found > 0 {
        // First open by this code of a database of lanmon before user_version.
        set_version(conn, found)?;
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(found) {
        let tx = conn.transaction()?;
        tx.execute_batch(m.sql)?;
        set_version(&tx, i + 1)?;
        tx.commit()?;
        if found > 0 {
            tracing::info!("store: database upgraded to schema {} ({})", i + 1, m.about);
        }
    }
    Ok(())
}

fn set_version(conn: &Connection, version: usize) -> Result<()> {
    conn.pragma_update(
        None,
        "user_version",
        i64::try_from(version).unwrap_or(i64::MAX),
    )?;
    Ok(())
}

fn newer(path: &Path, found: String) -> StoreError {
    StoreError::NewerSchema {
        path: path.to_path_buf(),
        found,
        known: i64::try_from(VERSION).unwrap_or(i64::MAX),
    }
}

/// The version of a database whose `user_version` is 0: 0 if it is new (no `meta`), else what
/// lanmon before user_version wrote in `meta`.
fn legacy_version(conn: &Connection, path: &Path) -> Result<usize> {
    let has_meta: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(0);
    }
    let value: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match value.as_deref() {
        Some("1") => Ok(1),
        // No row: that code created every table of version 2 before it wrote the row, and
        // wrote the row before any data; it then wrote '2' itself.
        Some("2") | None => Ok(2),
        // That code wrote no other value.
        Some(other) => Err(newer(path, other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::rows::{AgentRow, MountRow, RollupRow, RunRow, SampleRow};
    use super::super::testkit::*;
    use super::super::{DB_FILE, Reader, Retention, Store, Tier};
    use super::*;
    use crate::server::series::Stat;

    const H: u64 = 3_600_000;
    /// The `user_version` of a database this code has opened.
    const CURRENT: i64 = VERSION as i64;

    /// A database of the first release (schema 1: no per-core columns) is upgraded in place
    /// and keeps its history.
    #[test]
    fn schema_1_is_upgraded() {
        let (dir, config) = temp_config("schema1", Retention::default());
        let now = 10 * H;
        {
            let conn = Connection::open(dir.join(DB_FILE)).unwrap_or_else(|e| panic!("{e}"));
            let rollup = |t: &str| {
                format!(
                    "CREATE TABLE {t} (agent INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
                     n INTEGER NOT NULL, cpu_n INTEGER NOT NULL, cpu_sum REAL, cpu_min REAL,
                     cpu_max REAL, mem_n INTEGER NOT NULL, mem_sum REAL, mem_min REAL,
                     mem_max REAL, PRIMARY KEY (agent, ts_ms)) WITHOUT ROWID;"
                )
            };
            let hello = serde_json::to_string(&hello("r1")).unwrap_or_default();
            conn.execute_batch(&format!(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('schema', '1');
                 CREATE TABLE agents (key INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
                   hello TEXT NOT NULL, ip TEXT NOT NULL, run_id TEXT NOT NULL,
                   run_key INTEGER NOT NULL DEFAULT 0, last_seq INTEGER NOT NULL DEFAULT 0,
                   latest TEXT);
                 CREATE TABLE runs (key INTEGER PRIMARY KEY, agent INTEGER NOT NULL,
                   run_id TEXT NOT NULL, UNIQUE (agent, run_id));
                 CREATE TABLE raw (agent INTEGER NOT NULL, ts_ms INTEGER NOT NULL,
                   run INTEGER NOT NULL, seq INTEGER NOT NULL, cpu REAL, mem INTEGER);
                 CREATE UNIQUE INDEX raw_run_seq ON raw (run, seq);
                 CREATE INDEX raw_agent_ts ON raw (agent, ts_ms);
                 {} {} {}
                 INSERT INTO agents VALUES (1, 'a1', '{hello}', '127.0.0.1', 'r1', 1, 1, NULL);
                 INSERT INTO runs VALUES (1, 1, 'r1');
                 INSERT INTO raw VALUES (1, {t}, 1, 1, 40.0, NULL);
                 INSERT INTO rollup_1m VALUES (1, {t}, 1, 1, 40.0, 40.0, 40.0, 0, NULL, NULL, NULL);",
                rollup("rollup_1m"),
                rollup("rollup_10m"),
                rollup("rollup_1h"),
                t = now + 1000,
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        }
        let (mut store, restored) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(restored[0].last_seq, 1);
        attach_a1(&mut store, "r1");
        append(&mut store, "r1", 2..=2, now);
        commit_all(&mut store);
        let reader = Reader::open(&config).unwrap_or_else(|e| panic!("{e}"));
        let m = minute_of(&reader, now);
        assert_eq!((m.n, m.cpu.map(|c| c.max)), (2, Some(40.0)));
        assert_eq!(m.cores.len(), 2, "the new sample's cores");
        assert_eq!(versions(&store.conn), (CURRENT, Some("2".into())));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Writes a database as the release of schema `version` left it: its migrations, its
    /// `user_version`, and `rows` (SQL), in one transaction.
    fn database_at(dir: &std::path::Path, version: usize, rows: &str) {
        let mut conn = Connection::open(dir.join(DB_FILE)).unwrap_or_else(|e| panic!("{e}"));
        let tx = conn.transaction().unwrap_or_else(|e| panic!("{e}"));
        for m in &MIGRATIONS[..version] {
            tx.execute_batch(m.sql).unwrap_or_else(|e| panic!("{e}"));
        }
        set_version(&tx, version).unwrap_or_else(|e| panic!("{e}"));
        tx.execute_batch(rows).unwrap_or_else(|e| panic!("{e}"));
        tx.commit().unwrap_or_else(|e| panic!("{e}"));
    }

    /// A database of schema 2 (CPU, memory, cores; before `seen_ms` and the whole machine)
    /// is upgraded in place: its samples and rollups are kept and read back without the new
    /// quantities, and a new sample adds its load, filesystems and rates to the same rollup
    /// row, counted only over the samples that had them.
    #[test]
    fn schema_2_is_upgraded_and_keeps_its_history() {
        let (dir, config) = temp_config("schema2-to-4", Retention::default());
        let now = 10 * H;
        let t = now + 1000;
        let hello = serde_json::to_string(&hello("r1")).unwrap_or_default();
        database_at(
            &dir,
            2,
            &format!(
                "INSERT INTO agents VALUES (1, 'a1', '{hello}', '127.0.0.1', 'r1', 1, 1, NULL);
                 INSERT INTO runs VALUES (1, 1, 'r1');
                 INSERT INTO raw VALUES (1, {t}, 1, 1, 40.0, 1000, x'a00f');
                 INSERT INTO rollup_1m VALUES (1, {now}, 1, 1, 40.0, 40.0, 40.0,
                                               1, 1000.0, 1000.0, 1000.0, NULL);",
            ),
        );
        let (mut store, restored) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(versions(&store.conn), (CURRENT, Some("2".into())));
        assert_eq!(restored[0].last_seq, 1);
        assert_eq!(restored[0].points[0].cpu_total, Some(40.0));
        attach_a1(&mut store, "r1");
        append_host(&mut store, "r1", 2, now + 2000, 300);
        commit_all(&mut store);
        let reader = Reader::open(&config).unwrap_or_else(|e| panic!("{e}"));
        let m = minute_of(&reader, now);
        assert_eq!(m.n, 2);
        assert_eq!(m.cpu.map(|c| (c.avg, c.max)), Some((20.5, 40.0)));
        assert_eq!(
            m.mem_used.map(|c| c.avg),
            Some(1000.0),
            "the old sample's memory"
        );
        let only_new = Some(Stat {
            avg: 30.0,
            min: 30.0,
            max: 30.0,
        });
        assert_eq!(m.load1, only_new, "load counted over the new sample only");
        assert_eq!(m.net_rx_bytes_per_s.map(|r| r.avg), Some(30_000.0));
        assert_eq!(m.fs.len(), 2);
        let raw = reader
            .history("a1", now, now + 60_000, 1000, now + 60_000)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("agent missing"));
        assert_eq!(raw.points.len(), 2);
        let old = &raw.points[0];
        assert_eq!(old.cpu.map(|c| c.avg), Some(40.0));
        assert_eq!(old.cores.len(), 1, "the old row's cores");
        assert_eq!((old.load1, old.swap_used, old.fs.len()), (None, None, 0));
        assert_eq!(raw.points[1].swap_used.map(|s| s.avg), Some(300.0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A database of schema 3 (the hardening release: `agents.seen_ms`, no whole machine)
    /// is upgraded to 4 in place: the agent keeps when it was last seen, its samples are
    /// read back without the new quantities, and a new sample adds them.
    #[test]
    fn schema_3_is_upgraded_to_the_whole_machine() {
        let (dir, config) = temp_config("schema3-to-4", Retention::default());
        let now = 10 * H;
        let t = now + 1000;
        assert_eq!(MIGRATIONS[2].file, "003_agent_seen.sql");
        let hello = serde_json::to_string(&hello("r1")).unwrap_or_default();
        database_at(
            &dir,
            3,
            &format!(
                "INSERT INTO agents VALUES (1, 'a1', '{hello}', '127.0.0.1', 'r1', 1, 1, NULL,
                                            {t});
                 INSERT INTO runs VALUES (1, 1, 'r1');
                 INSERT INTO raw VALUES (1, {t}, 1, 1, 40.0, 1000, x'a00f');
                 INSERT INTO rollup_1m VALUES (1, {now}, 1, 1, 40.0, 40.0, 40.0,
                                               1, 1000.0, 1000.0, 1000.0, NULL);",
            ),
        );
        let (mut store, restored) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(CURRENT, 4);
        assert_eq!(versions(&store.conn), (4, Some("2".into())));
        assert_eq!(restored[0].last_seq, 1);
        let seen: i64 = store
            .conn
            .query_row("SELECT seen_ms FROM agents WHERE id = 'a1'", [], |r| {
                r.get(0)
            })
            .unwrap_or(-1);
        assert_eq!(seen, t as i64, "seen_ms kept");
        attach_a1(&mut store, "r1");
        append_host(&mut store, "r1", 2, now + 2000, 300);
        commit_all(&mut store);
        let reader = Reader::open(&config).unwrap_or_else(|e| panic!("{e}"));
        let m = minute_of(&reader, now);
        assert_eq!(m.n, 2);
        assert_eq!(m.load1.map(|l| (l.avg, l.max)), Some((30.0, 30.0)));
        assert_eq!(m.fs.len(), 2);
        let raw = reader
            .history("a1", now, now + 60_000, 1000, now + 60_000)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("agent missing"));
        assert_eq!(raw.filesystems, ["/", "/data"]);
        assert_eq!((raw.points[0].load1, raw.points[0].fs.len()), (None, 0));
        assert_eq!(raw.points[1].swap_used.map(|s| s.avg), Some(300.0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The exact schema the code before migrations created (its `SCHEMA` and
    /// `rollup_schema`, copied verbatim), as it created it.
    const SCHEMA_BEFORE_MIGRATIONS: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agents (
    key INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    hello TEXT NOT NULL,
    ip TEXT NOT NULL,
    run_id TEXT NOT NULL,
    run_key INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    latest TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    key INTEGER PRIMARY KEY,
    agent INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    UNIQUE (agent, run_id)
);
CREATE TABLE IF NOT EXISTS raw (
    agent INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    cpu REAL,
    mem INTEGER,
    cores BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS raw_run_seq ON raw (run, seq);
CREATE INDEX IF NOT EXISTS raw_agent_ts ON raw (agent, ts_ms);
CREATE TABLE IF NOT EXISTS raw_log (
    agent INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    cpu REAL,
    mem INTEGER,
    cores BLOB
);
CREATE TABLE IF NOT EXISTS rollup_1m (
            agent INTEGER NOT NULL, ts_ms INTEGER NOT NULL, n INTEGER NOT NULL,
            cpu_n INTEGER NOT NULL, cpu_sum REAL, cpu_min REAL, cpu_max REAL,
            mem_n INTEGER NOT NULL, mem_sum REAL, mem_min REAL, mem_max REAL, cores BLOB,
            PRIMARY KEY (agent, ts_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_10m (
            agent INTEGER NOT NULL, ts_ms INTEGER NOT NULL, n INTEGER NOT NULL,
            cpu_n INTEGER NOT NULL, cpu_sum REAL, cpu_min REAL, cpu_max REAL,
            mem_n INTEGER NOT NULL, mem_sum REAL, mem_min REAL, mem_max REAL, cores BLOB,
            PRIMARY KEY (agent, ts_ms)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_1h (
            agent INTEGER NOT NULL, ts_ms INTEGER NOT NULL, n INTEGER NOT NULL,
            cpu_n INTEGER NOT NULL, cpu_sum REAL, cpu_min REAL, cpu_max REAL,
            mem_n INTEGER NOT NULL, mem_sum REAL, mem_min REAL, mem_max REAL, cores BLOB,
            PRIMARY KEY (agent, ts_ms)) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('schema', '2');
";

    /// A database written by the code before migrations (schema "2" in `meta`, no
    /// `user_version`), left by a crash with a sample still in `raw_log`, opens and upgrades
    /// in place: its history, per-core rollups and resume point are kept, the logged sample
    /// is moved once, and new samples continue the same rows.
    #[test]
    fn a_database_of_the_code_before_migrations_opens_and_continues() {
        let (dir, config) = temp_config("schema2", Retention::default());
        let now = 10 * H;
        let t = now + 1000;
        {
            let conn = Connection::open(dir.join(DB_FILE)).unwrap_or_else(|e| panic!("{e}"));
            conn.pragma_update(None, "journal_mode", "WAL")
                .unwrap_or_else(|e| panic!("{e}"));
            let hello = serde_json::to_string(&hello("r1")).unwrap_or_default();
            let latest = serde_json::to_string(&metrics(2, t + 1000, 20.0)).unwrap_or_default();
            // Samples 1 and 2 (cpu 10 and 20, cores [10, 90] and [20, 80]) moved and rolled
            // up; sample 3 (cpu 30, cores [30, 70]) only logged when the server died.
            // Core blobs: u16 hundredths per core; rollups: u32 n, f32 sum, min, max.
            let core_aggs = "X'020000000000F041000020410000A041\
                               0200000000002A430000A0420000B442'";
            let mut sql = SCHEMA_BEFORE_MIGRATIONS.to_string();
            sql += &format!(
                "INSERT INTO agents VALUES (1, 'a1', '{hello}', '127.0.0.1', 'r1', 1, 2, '{latest}');
                 INSERT INTO runs VALUES (1, 1, 'r1');
                 INSERT INTO raw VALUES (1, {t}, 1, 1, 10.0, 1000, X'E8032823');
                 INSERT INTO raw VALUES (1, {t2}, 1, 2, 20.0, 3000, X'D007401F');
                 INSERT INTO raw_log VALUES (1, {t3}, 1, 3, 30.0, 2000, X'B80B581B');"
                ,
                t2 = t + 1000,
                t3 = t + 2000,
            );
            for (table, ts) in [("rollup_1m", now), ("rollup_10m", now), ("rollup_1h", now)] {
                sql += &format!(
                    "INSERT INTO {table} VALUES (1, {ts}, 2, 2, 30.0, 10.0, 20.0,
                     2, 4000.0, 1000.0, 3000.0, {core_aggs});"
                );
            }
            conn.execute_batch(&sql).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(versions(&conn), (0, Some("2".into())));
        }

        let (mut store, restored) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            versions(&store.conn),
            (CURRENT, Some("2".into())),
            "mapped, then only later migrations"
        );
        assert_eq!(restored.len(), 1);
        let a = &restored[0];
        assert_eq!((a.hello.agent_id.as_str(), a.last_seq), ("a1", 3));
        assert_eq!(a.latest.as_ref().map(|m| m.seq), Some(2));
        assert_eq!(
            a.points
                .iter()
                .map(|p| (p.seq, p.ts_ms, p.cpu_total, p.mem_used))
                .collect::<Vec<_>>(),
            [
                (1, t, Some(10.0), Some(1000)),
                (2, t + 1000, Some(20.0), Some(3000)),
                (3, t + 2000, Some(30.0), Some(2000)),
            ]
        );
        let reader = Reader::open(&config).unwrap_or_else(|e| panic!("{e}"));
        let m = minute_of(&reader, now);
        assert_eq!(m.n, 3, "the logged sample moved into the rollups once");
        assert_eq!(
            m.cpu,
            Some(Stat {
                avg: 20.0,
                min: 10.0,
                max: 30.0
            })
        );
        assert_eq!(m.mem_used.map(|s| (s.min, s.max)), Some((1000.0, 3000.0)));
        assert_eq!(
            m.cores,
            [
                Some(Stat {
                    avg: 20.0,
                    min: 10.0,
                    max: 30.0
                }),
                Some(Stat {
                    avg: 80.0,
                    min: 70.0,
                    max: 90.0
                })
            ]
        );

        // The agent reconnects with the same run and goes on where it was.
        attach_a1(&mut store, "r1");
        append(&mut store, "r1", 4..=4, now);
        commit_all(&mut store);
        let raw = reader
            .history("a1", now, now + 60_000, 1000, now + 60_000)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("agent missing"));
        assert_eq!(raw.tier, Tier::Raw);
        assert_eq!(raw.points.len(), 4);
        assert_eq!(
            raw.points[0].cores.len(),
            2,
            "old raw rows keep their cores"
        );
        let m = minute_of(&reader, now);
        assert_eq!((m.n, m.cpu.map(|c| c.max)), (4, Some(30.0)));
        for tier in [Tier::Min10, Tier::Hour1] {
            let w = tier.bucket_ms();
            let s = reader
                .history("a1", now, now + w, w, now + w)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("agent missing"));
            assert_eq!((s.tier, s.points.len(), s.points[0].n), (tier, 1, 4));
        }
        drop(store);
        let (_store, restored) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(restored[0].last_seq, 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A new database, one of schema 1 and one of the code before migrations all end with the
    /// same tables, and each table has exactly the columns of its row struct.
    #[test]
    fn every_table_has_the_columns_of_its_row_struct() {
        let meta = ["key".to_string(), "value".to_string()];
        let expected: [(&str, &[String]); 9] = [
            ("agents", AgentRow::columns()),
            ("mounts", MountRow::columns()),
            ("runs", RunRow::columns()),
            ("raw", SampleRow::columns()),
            ("raw_log", SampleRow::columns()),
            ("rollup_1m", RollupRow::columns()),
            ("rollup_10m", RollupRow::columns()),
            ("rollup_1h", RollupRow::columns()),
            ("meta", &meta),
        ];
        let dir = temp_dir("columns");
        let fresh = dir.join("fresh.db");
        let v1 = dir.join("v1.db");
        let v2 = dir.join("v2.db");
        Connection::open(&v1)
            .and_then(|c| c.execute_batch(MIGRATIONS[0].sql))
            .unwrap_or_else(|e| panic!("{e}"));
        Connection::open(&v2)
            .and_then(|c| c.execute_batch(SCHEMA_BEFORE_MIGRATIONS))
            .unwrap_or_else(|e| panic!("{e}"));
        for path in [fresh, v1, v2] {
            let conn = open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let tables: Vec<String> = conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .and_then(|mut q| q.query_map([], |r| r.get(0))?.collect())
                .unwrap_or_else(|e| panic!("{e}"));
            let mut names: Vec<&str> = expected.iter().map(|(t, _)| *t).collect();
            names.sort_unstable();
            assert_eq!(tables, names, "{}", path.display());
            for (table, columns) in expected {
                let got: Vec<String> = conn
                    .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
                    .and_then(|mut q| q.query_map([], |r| r.get(0))?.collect())
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(got, columns, "{table} in {}", path.display());
            }
            assert_eq!(versions(&conn), (CURRENT, Some("2".into())));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A database of a newer lanmon is refused with a message that says so, and left as it is.
    #[test]
    fn a_newer_schema_is_refused() {
        let (dir, config) = temp_config("newer", Retention::default());
        Connection::open(dir.join(DB_FILE))
            .and_then(|c| c.pragma_update(None, "user_version", 99))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = Store::open(&config, 10).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("schema version 99 is newer")),
            "{err:?}"
        );
        let conn = Connection::open(dir.join(DB_FILE)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(versions(&conn).0, 99);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every file in `migrations/` is listed in [`MIGRATIONS`], in order, numbered from 001.
    #[test]
    fn every_migration_file_is_listed_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server/store/migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| f.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.file).collect();
        assert_eq!(files, listed);
        for (i, f) in listed.iter().enumerate() {
            assert!(f.starts_with(&format!("{:03}_", i + 1)), "{f}");
        }
    }

    /// `(user_version, meta's 'schema')`.
    fn versions(conn: &Connection) -> (i64, Option<String>) {
        let user: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap_or(-1);
        let meta = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .ok();
        (user, meta)
    }
}
