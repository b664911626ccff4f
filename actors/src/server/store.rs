//! Store actor: the durable history, in one SQLite database under `--data-dir`.
//!
//! Owns: the database connection that writes (`<data-dir>/lanmon.db`, WAL mode,
//! `synchronous=NORMAL`), the lock file that keeps a second server off the same directory, and
//! the batch of writes not yet committed. It runs on its own Arbiter thread, so a slow disk
//! delays acknowledgements, never Sessions or the Registry.
//!
//! Receives from the Registry: [`Attach`] (an agent's hello, at every connect) and [`Append`]
//! (a sample the Registry accepted, i.e. not a duplicate); from the server's startup and
//! shutdown paths: [`Subscribe`] and [`Flush`]. Sends to the subscriber (the Registry):
//! [`Committed`] after every transaction, with the highest seq now durable per agent run, so
//! that a sample is acknowledged to its agent only once it is on disk.
//!
//! Writes are batched: the first write after a commit arms a [`FLUSH_DELAY`] timer; when it
//! fires, everything queued goes into one transaction. There a sample costs one append to
//! `raw_log`, a table without indexes (its last page is the only one written, however many
//! agents there are), which makes it durable: it is acknowledged after that commit.
//! [`ROLLUP_DELAY`] after an agent's first logged sample (each agent on its own schedule, so
//! the work spreads out), its logged samples move in one go into `raw` (indexed by agent and
//! by run, where one agent's rows share pages, so ten samples cost about what one did) and
//! into the 1 min / 10 min / 1 h rollups, and its row gets the last-known state; the moved
//! part of `raw_log` is deleted from its start. A sample already in `raw` (a replay) is
//! skipped by `raw`'s unique `(run, seq)` and so counted once in the rollups. After a crash,
//! [`Store::open`] moves whatever `raw_log` still holds the same way. Reads of the raw tier
//! include `raw_log`; the rollup tiers lag by up to [`ROLLUP_DELAY`]. Old rows are deleted in
//! bounded batches on an index, a slice of the agents per second ([`RETENTION_EVERY`] to
//! visit all), so dropping a day of data never holds the database for long.
//!
//! Reads for the HTTP API go through a [`Reader`], a separate read-only connection (WAL lets
//! it read while this actor writes). At startup [`Store::open`] returns what the Registry needs
//! to carry on where the last server stopped ([`Restored`]).
//!
//! Schema (version 2; a version-1 database is upgraded in place by adding columns):
//! ```text
//! meta(key, value)                          schema version
//! agents(key, id, hello JSON, ip, run_id, run_key, last_seq, latest JSON)  one per agent id
//! runs(key, agent, run_id)                  short keys for (agent, run) used by `raw`
//! raw(agent, ts_ms, run, seq, cpu, mem, cores)   unique (run, seq); index (agent, ts_ms)
//! raw_log(the same columns)                 no index: samples not yet moved into raw
//! rollup_1m / rollup_10m / rollup_1h(agent, ts_ms, n, cpu_n, cpu_sum, cpu_min, cpu_max,
//!                                    mem_n, mem_sum, mem_min, mem_max, cores)
//!                                                                    key (agent, ts_ms)
//! ```
//! `cores` is per-core CPU usage as a little-endian blob: in `raw` one `u16` per core in
//! hundredths of a percent; in the rollups `u32 n, f32 sum, f32 min, f32 max` per core.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::protocol::{Hello, Metrics};
use crate::server::history::{Bucket, Stat};
use crate::util::now_ms;

/// Time a write waits for others to join its transaction. Short, because acknowledgements
/// wait for the commit: it bounds the extra ack latency a store adds.
pub const FLUSH_DELAY: Duration = Duration::from_millis(10);
/// A batch this large is committed at once, without waiting for [`FLUSH_DELAY`].
pub const MAX_BATCH: usize = 10_000;
/// First wait before a failed commit is tried again; it doubles per failure up to
/// [`RETRY_MAX`]. Nothing is acknowledged meanwhile: the agents keep their samples.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between two attempts at a failing commit.
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// While commits keep failing, the error is logged again at most this often.
pub const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);
/// How long an agent's samples stay in `raw_log` before they move into `raw` and the rollups.
/// Longer amortises more page writes per agent; it bounds how far the rollup tiers lag, the
/// memory the store keeps per agent, and what [`Store::open`] moves after a crash.
pub const ROLLUP_DELAY: Duration = Duration::from_secs(10);
/// An agent with this many samples logged moves them without waiting for [`ROLLUP_DELAY`]
/// (a fast sender: bounds the store's memory per agent and the size of one move).
pub const MOVE_ROWS: usize = 64;
/// Most samples moved into `raw` in one transaction (beyond what the batch itself brings),
/// so that moving never delays a commit, and so an acknowledgement, by much.
pub const MOVE_BUDGET: usize = 512;
/// Every agent's old rows are looked at once per this period (a slice of the agents per
/// [`RETENTION_TICK`]).
pub const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// How often a slice of the agents has its old rows deleted.
pub const RETENTION_TICK: Duration = Duration::from_secs(1);
/// Most rows one DELETE removes; a pass that hits it comes back after [`RETENTION_BACKLOG`].
pub const DELETE_BATCH: usize = 2_000;
/// Pause between two bounded delete passes while old data remains.
pub const RETENTION_BACKLOG: Duration = Duration::from_millis(200);
/// Database file name inside the data directory.
pub const DB_FILE: &str = "lanmon.db";
/// Lock file inside the data directory: one server per directory.
pub const LOCK_FILE: &str = "lanmon.lock";
/// Offline reason of every agent reloaded at startup.
pub const RESTART_REASON: &str = "server restarted";

/// Default retention of raw samples.
pub const DEFAULT_RAW_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Default retention of the 1-minute rollups.
pub const DEFAULT_1M_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default retention of the 10-minute rollups.
pub const DEFAULT_10M_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Default retention of the 1-hour rollups.
pub const DEFAULT_1H_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The default data directory: `$XDG_DATA_HOME/lanmon`, else `$HOME/.local/share/lanmon`,
/// else `./lanmon-data`. Per user, needs no root, and does not depend on the directory the
/// server was started from (a server started elsewhere must not silently begin an empty
/// history). Services set `--data-dir /var/lib/lanmon` (e.g. systemd's `StateDirectory`).
pub fn default_data_dir() -> PathBuf {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(xdg) = non_empty("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("lanmon");
    }
    if let Some(home) = non_empty("HOME") {
        return PathBuf::from(home).join(".local/share/lanmon");
    }
    PathBuf::from("lanmon-data")
}

// ---- Tiers ------------------------------------------------------------------------------------

/// One resolution of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// Every sample as received.
    Raw,
    /// One row per agent per minute.
    Min1,
    /// One row per agent per 10 minutes.
    Min10,
    /// One row per agent per hour.
    Hour1,
}

impl Tier {
    /// Every tier, finest first.
    pub const ALL: [Tier; 4] = [Tier::Raw, Tier::Min1, Tier::Min10, Tier::Hour1];
    /// The rollup tiers.
    pub const ROLLUPS: [Tier; 3] = [Tier::Min1, Tier::Min10, Tier::Hour1];

    /// Width of one row in ms (0 for raw: one row per sample).
    pub fn bucket_ms(self) -> u64 {
        match self {
            Tier::Raw => 0,
            Tier::Min1 => 60_000,
            Tier::Min10 => 600_000,
            Tier::Hour1 => 3_600_000,
        }
    }

    /// Name in the HTTP response's `source`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Min1 => "1m",
            Tier::Min10 => "10m",
            Tier::Hour1 => "1h",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::Min1 => "rollup_1m",
            Tier::Min10 => "rollup_10m",
            Tier::Hour1 => "rollup_1h",
        }
    }
}

/// How long each tier is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw: Duration,
    pub min1: Duration,
    pub min10: Duration,
    pub hour1: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            raw: DEFAULT_RAW_RETENTION,
            min1: DEFAULT_1M_RETENTION,
            min10: DEFAULT_10M_RETENTION,
            hour1: DEFAULT_1H_RETENTION,
        }
    }
}

impl Retention {
    pub fn of(&self, tier: Tier) -> Duration {
        match tier {
            Tier::Raw => self.raw,
            Tier::Min1 => self.min1,
            Tier::Min10 => self.min10,
            Tier::Hour1 => self.hour1,
        }
    }

    /// Oldest timestamp `tier` still holds at `now_ms`.
    fn horizon(&self, tier: Tier, now_ms: u64) -> u64 {
        now_ms.saturating_sub(u64::try_from(self.of(tier).as_millis()).unwrap_or(u64::MAX))
    }
}

/// The tier that serves `[from_ms, to_ms)` in steps of `step_ms`: the coarsest tier whose rows
/// are no wider than a step (so each point is exact and few rows are read), moved to a coarser
/// one while that tier's retention no longer reaches back to `from_ms`.
pub fn choose_tier(from_ms: u64, step_ms: u64, now_ms: u64, retention: &Retention) -> Tier {
    let mut i = Tier::ALL
        .iter()
        .rposition(|t| t.bucket_ms() <= step_ms)
        .unwrap_or(0);
    while i + 1 < Tier::ALL.len() && retention.horizon(Tier::ALL[i], now_ms) > from_ms {
        i += 1;
    }
    Tier::ALL[i]
}

// ---- Rollup math -------------------------------------------------------------------------------

/// Count, sum, minimum and maximum of one quantity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinMax {
    pub n: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl MinMax {
    fn one(v: f64) -> Self {
        Self {
            n: 1,
            sum: v,
            min: v,
            max: v,
        }
    }

    fn merge(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Self {
                n: a.n + b.n,
                sum: a.sum + b.sum,
                min: a.min.min(b.min),
                max: a.max.max(b.max),
            }),
            (a, None) => a,
            (None, b) => b,
        }
    }

    fn stat(self) -> Stat {
        Stat {
            avg: self.sum / self.n.max(1) as f64,
            min: self.min,
            max: self.max,
        }
    }
}

/// The aggregate of some samples: how many, and CPU total / memory used / each core's CPU over
/// those that had the reading (a sample may lack one). Merging is associative, so a rollup row
/// can absorb samples one batch at a time, and coarse points can be built from finer rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Agg {
    pub n: u64,
    pub cpu: Option<MinMax>,
    pub mem: Option<MinMax>,
    /// Per-core CPU usage, percent, by core index.
    pub cores: Vec<Option<MinMax>>,
}

impl Agg {
    /// One sample.
    pub fn sample(cpu: Option<f64>, mem: Option<f64>) -> Self {
        Self {
            n: 1,
            cpu: cpu.map(MinMax::one),
            mem: mem.map(MinMax::one),
            cores: Vec::new(),
        }
    }

    /// The same sample with its per-core values.
    pub fn with_cores(mut self, cores: impl IntoIterator<Item = f64>) -> Self {
        self.cores = cores.into_iter().map(|v| Some(MinMax::one(v))).collect();
        self
    }

    pub fn merge(&mut self, other: &Agg) {
        self.n += other.n;
        self.cpu = MinMax::merge(self.cpu, other.cpu);
        self.mem = MinMax::merge(self.mem, other.mem);
        if self.cores.len() < other.cores.len() {
            self.cores.resize(other.cores.len(), None);
        }
        for (mine, theirs) in self.cores.iter_mut().zip(&other.cores) {
            *mine = MinMax::merge(*mine, *theirs);
        }
    }

    /// The HTTP API's point for this aggregate.
    pub fn bucket(&self, ts_ms: u64) -> Bucket {
        Bucket {
            ts_ms,
            n: self.n,
            cpu: self.cpu.map(MinMax::stat),
            mem_used: self.mem.map(MinMax::stat),
            cores: self.cores.iter().map(|c| c.map(MinMax::stat)).collect(),
        }
    }
}

/// `raw.cores`: one little-endian `u16` per core, in hundredths of a percent.
fn encode_cores(per_core: &[f32]) -> Vec<u8> {
    per_core
        .iter()
        .flat_map(|v| ((v.clamp(0.0, 100.0) * 100.0).round() as u16).to_le_bytes())
        .collect()
}

fn decode_cores(blob: &[u8]) -> impl Iterator<Item = f64> + '_ {
    blob.chunks_exact(2)
        .map(|b| f64::from(u16::from_le_bytes([b[0], b[1]])) / 100.0)
}

/// Bytes per core in a rollup's `cores` blob: `u32 n, f32 sum, f32 min, f32 max`.
const CORE_AGG_BYTES: usize = 16;

/// A rollup's `cores` blob (`None` when no sample had per-core values).
fn encode_core_aggs(cores: &[Option<MinMax>]) -> Option<Vec<u8>> {
    if cores.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(cores.len() * CORE_AGG_BYTES);
    for c in cores {
        let m = c.unwrap_or(MinMax {
            n: 0,
            sum: 0.0,
            min: 0.0,
            max: 0.0,
        });
        out.extend_from_slice(&u32::try_from(m.n).unwrap_or(u32::MAX).to_le_bytes());
        for v in [m.sum, m.min, m.max] {
            out.extend_from_slice(&(v as f32).to_le_bytes());
        }
    }
    Some(out)
}

fn decode_core_aggs(blob: &[u8]) -> Vec<Option<MinMax>> {
    let f = |b: &[u8]| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    blob.chunks_exact(CORE_AGG_BYTES)
        .map(|c| {
            let n = u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            (n > 0).then(|| MinMax {
                n,
                sum: f(&c[4..8]),
                min: f(&c[8..12]),
                max: f(&c[12..16]),
            })
        })
        .collect()
}

/// Start of the `width_ms` bucket holding `ts_ms`.
pub fn bucket_start(ts_ms: u64, width_ms: u64) -> u64 {
    let w = width_ms.max(1);
    ts_ms / w * w
}

/// Re-buckets `(ts_ms, agg)` rows into points of `step_ms` over `[from_ms, to_ms)`, oldest
/// first; empty points are left out.
pub fn rebucket(
    rows: impl IntoIterator<Item = (u64, Agg)>,
    from_ms: u64,
    to_ms: u64,
    step_ms: u64,
) -> Vec<Bucket> {
    let mut points: std::collections::BTreeMap<u64, Agg> = std::collections::BTreeMap::new();
    for (ts, agg) in rows {
        if ts >= from_ms && ts < to_ms {
            points
                .entry(bucket_start(ts, step_ms))
                .or_default()
                .merge(&agg);
        }
    }
    points.into_iter().map(|(ts, a)| a.bucket(ts)).collect()
}

// ---- Messages ---------------------------------------------------------------------------------

/// An agent said hello (at every connect): remember it, and its run.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Attach {
    pub hello: Hello,
    pub ip: String,
}

/// A new sample (not a duplicate) of the agent's current run.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct Append {
    pub agent_id: String,
    pub run_id: String,
    pub metrics: Metrics,
}

/// Where to send [`Committed`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub committed: Recipient<Committed>,
}

/// Commits whatever is queued now (shutdown). Answers whether it worked.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Flush;

/// Sent after each commit: per agent run written in it, the highest seq now on disk.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct Committed {
    pub runs: Vec<DurableSeq>,
}

/// The highest seq of `(agent_id, run_id)` on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableSeq {
    pub agent_id: String,
    pub run_id: String,
    pub seq: u64,
}

/// The store's health, shared with whoever shows it (the snapshot's `store`, `/healthz`).
/// The Store writes it after every commit attempt; readers take a copy.
#[derive(Debug, Default)]
pub struct StoreHealth {
    fault: Mutex<Option<StoreFault>>,
}

/// Why the store cannot write, since when, and what waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFault {
    /// The last error, as SQLite (or the OS) words it.
    pub error: String,
    /// When the first failed commit of this episode happened, ms since the Unix epoch.
    pub since_ms: u64,
    /// Failed commits in a row.
    pub attempts: u64,
    /// Writes waiting to be committed (samples and hellos).
    pub queued: usize,
}

impl StoreHealth {
    /// `None` while the store writes; the current fault otherwise.
    pub fn status(&self) -> Option<StoreFault> {
        self.lock().clone()
    }

    /// The store's state as the snapshot and `/healthz` show it.
    pub fn view(&self) -> crate::snapshot::StoreView {
        use crate::snapshot::{StoreStatus, StoreView};
        match self.status() {
            None => StoreView {
                status: StoreStatus::Ok,
                error: None,
                failing_since_ms: None,
                failed_attempts: 0,
                queued_writes: 0,
            },
            Some(f) => StoreView {
                status: StoreStatus::Failing,
                error: Some(f.error),
                failing_since_ms: Some(f.since_ms),
                failed_attempts: f.attempts,
                queued_writes: u64::try_from(f.queued).unwrap_or(u64::MAX),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<StoreFault>> {
        self.fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a failed commit; returns the fault as it now stands.
    fn failed(&self, error: String, queued: usize) -> StoreFault {
        let mut fault = self.lock();
        let f = fault.get_or_insert_with(|| StoreFault {
            error: String::new(),
            since_ms: now_ms(),
            attempts: 0,
            queued,
        });
        f.error = error;
        f.attempts += 1;
        f.queued = queued;
        f.clone()
    }

    /// Records a successful commit; returns the fault it ends, if any.
    fn recovered(&self) -> Option<StoreFault> {
        self.lock().take()
    }
}

// ---- Opening ----------------------------------------------------------------------------------

/// Where and how long to keep history.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub retention: Retention,
}

/// What the last server left about one agent.
#[derive(Debug, Clone)]
pub struct Restored {
    pub hello: Hello,
    pub ip: String,
    /// The last sample stored (full, with per-core values).
    pub latest: Option<Metrics>,
    /// Highest seq of `hello.run_id` on disk.
    pub last_seq: u64,
    /// The newest samples of that run, oldest first: `(seq, ts_ms, cpu, mem_used)`.
    pub points: Vec<(u64, u64, Option<f32>, Option<u64>)>,
}

const SCHEMA: &str = "
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
";

fn rollup_schema(table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            agent INTEGER NOT NULL, ts_ms INTEGER NOT NULL, n INTEGER NOT NULL,
            cpu_n INTEGER NOT NULL, cpu_sum REAL, cpu_min REAL, cpu_max REAL,
            mem_n INTEGER NOT NULL, mem_sum REAL, mem_min REAL, mem_max REAL, cores BLOB,
            PRIMARY KEY (agent, ts_ms)) WITHOUT ROWID;"
    )
}

const SCHEMA_VERSION: &str = "2";

fn open_db(path: &Path) -> rusqlite::Result<Connection> {
    let mut conn = Connection::open(path)?;
    // WAL: readers (the HTTP API) never block the writer, and a commit is one append to the
    // log. NORMAL: a commit survives the process dying at any point (SIGKILL, panic); only a
    // power loss or kernel crash can lose the last commits before a checkpoint.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    for tier in Tier::ROLLUPS {
        conn.execute_batch(&rollup_schema(tier.table()))?;
    }
    let version: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .optional()?;
    match version.as_deref() {
        None => {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                [SCHEMA_VERSION],
            )?;
        }
        Some("1") => upgrade_from_1(&mut conn)?,
        Some(_) => {}
    }
    Ok(conn)
}

/// Version 1 had no per-core columns and no `raw_log` (which [`SCHEMA`] creates).
fn upgrade_from_1(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch("ALTER TABLE raw ADD COLUMN cores BLOB;")?;
    for tier in Tier::ROLLUPS {
        tx.execute_batch(&format!(
            "ALTER TABLE {} ADD COLUMN cores BLOB;",
            tier.table()
        ))?;
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'schema'",
        [SCHEMA_VERSION],
    )?;
    tx.commit()?;
    tracing::info!("store: database upgraded to schema {SCHEMA_VERSION} (per-core history)");
    Ok(())
}

/// Moves every row a crash left in `raw_log` into `raw` and the rollups (each once: a row
/// already in `raw` is skipped); returns how many rows that was.
fn repair(conn: &mut Connection) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut left: HashMap<i64, Pending> = HashMap::new();
    {
        let mut q = tx.prepare(
            "SELECT agent, ts_ms, run, seq, cpu, mem, cores FROM raw_log ORDER BY rowid",
        )?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let row = LogRow {
                ts_ms: u64_of(r.get(1)?),
                run: r.get(2)?,
                seq: u64_of(r.get(3)?),
                cpu: r.get(4)?,
                mem: r.get(5)?,
                cores: r.get(6)?,
            };
            left.entry(r.get(0)?)
                .or_insert_with(|| Pending::new(Instant::now(), 0))
                .rows
                .push(row);
        }
    }
    let mut n = 0;
    for (agent, p) in &left {
        n += p.rows.len();
        write_pending(&tx, *agent, p)?;
    }
    tx.execute("DELETE FROM raw_log", [])?;
    tx.commit()?;
    Ok(n)
}

/// The aggregate of one stored sample: its `cpu`, `mem` and `cores` columns.
fn sample_agg(cpu: Option<f64>, mem: Option<i64>, cores: Option<&[u8]>) -> Agg {
    let agg = Agg::sample(cpu, mem.map(|m| m as f64));
    match cores {
        Some(blob) => agg.with_cores(decode_cores(blob)),
        None => agg,
    }
}

/// The aggregate of one raw row, whose `cpu, mem, cores` columns start at `at`.
fn raw_agg(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Agg> {
    Ok(sample_agg(
        r.get(at)?,
        r.get(at + 1)?,
        r.get_ref(at + 2)?.as_blob_or_null()?,
    ))
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Reads every agent's last-known state, with up to `ring` of its newest samples.
fn load(conn: &Connection, ring: usize) -> rusqlite::Result<Vec<Restored>> {
    let mut agents =
        conn.prepare("SELECT hello, ip, run_key, last_seq, latest FROM agents ORDER BY key")?;
    let mut points = conn.prepare(
        "SELECT seq, ts_ms, cpu, mem FROM raw WHERE run = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = agents.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (hello, ip, run_key, last_seq, latest) = row?;
        let Ok(hello) = serde_json::from_str::<Hello>(&hello) else {
            tracing::warn!("store: skipping an agent whose stored hello does not parse");
            continue;
        };
        let latest = latest.and_then(|l| serde_json::from_str::<Metrics>(&l).ok());
        let mut pts: Vec<(u64, u64, Option<f32>, Option<u64>)> = points
            .query_map(
                params![run_key, i64::try_from(ring).unwrap_or(i64::MAX)],
                |r| {
                    Ok((
                        u64_of(r.get(0)?),
                        u64_of(r.get(1)?),
                        r.get::<_, Option<f64>>(2)?.map(|c| c as f32),
                        r.get::<_, Option<i64>>(3)?.map(u64_of),
                    ))
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        pts.reverse();
        // Raw rows are written before the agent's row catches up (at most ROLLUP_DELAY later).
        let newest = pts.last().map_or(0, |p| p.0);
        out.push(Restored {
            hello,
            ip,
            latest,
            last_seq: u64_of(last_seq).max(newest),
            points: pts,
        });
    }
    Ok(out)
}

// ---- The actor --------------------------------------------------------------------------------

/// One queued write.
enum Op {
    Attach(Attach),
    Append(Append),
}

/// The newest sample of one agent run not yet in the agent's row.
#[derive(Clone)]
struct Latest {
    run: i64,
    seq: u64,
    metrics: Metrics,
}

/// One sample as stored (`raw` and `raw_log` columns).
#[derive(Clone)]
struct LogRow {
    ts_ms: u64,
    run: i64,
    seq: u64,
    cpu: Option<f64>,
    mem: Option<i64>,
    cores: Option<Vec<u8>>,
}

impl LogRow {
    fn agg(&self) -> Agg {
        sample_agg(self.cpu, self.mem, self.cores.as_deref())
    }

    /// The values of `(agent, ts_ms, run, seq, cpu, mem, cores)`, in that order.
    fn params(&self, agent: i64) -> impl rusqlite::Params + '_ {
        (
            agent,
            i64_of(self.ts_ms),
            self.run,
            i64_of(self.seq),
            self.cpu,
            self.mem,
            self.cores.as_deref(),
        )
    }
}

/// One agent's samples that are in `raw_log` (durable) but not yet in `raw` and the rollups.
#[derive(Clone)]
struct Pending {
    /// When the first of them was logged (they move [`ROLLUP_DELAY`] later).
    since: Instant,
    /// Rowid in `raw_log` of the first of them.
    first_log: i64,
    rows: Vec<LogRow>,
    latest: Option<Latest>,
}

impl Pending {
    fn new(since: Instant, first_log: i64) -> Self {
        Self {
            since,
            first_log,
            rows: Vec::new(),
            latest: None,
        }
    }

    /// Adds what a later batch brought.
    fn absorb(&mut self, later: Pending) {
        self.first_log = self.first_log.min(later.first_log);
        self.rows.extend(later.rows);
        if later.latest.is_some() {
            self.latest = later.latest;
        }
    }
}

/// See the module documentation.
pub struct Store {
    conn: Connection,
    /// The database file (for messages).
    path: PathBuf,
    retention: Retention,
    /// Held (with an exclusive lock) for the actor's life.
    _lock: File,
    batch: Vec<Op>,
    flush_armed: bool,
    subscriber: Option<Recipient<Committed>>,
    /// agent id → agents.key
    agent_keys: HashMap<String, i64>,
    /// agents.key → (run id, runs.key) of each run seen since the server started
    run_keys: HashMap<i64, Vec<(String, i64)>>,
    /// Per agent key: samples logged, not yet moved into `raw` and the rollups.
    pending: HashMap<i64, Pending>,
    /// Agent keys in the order they became pending (entries may be stale).
    pending_order: VecDeque<(Instant, i64)>,
    /// Where the next retention slice starts, in the sorted agent keys.
    expire_cursor: usize,
    /// Shared with the snapshot and `/healthz`: set while commits fail.
    health: Arc<StoreHealth>,
    /// While commits fail: the wait before the next attempt, and when the error was last
    /// logged. `None` while the store writes.
    retry: Option<(Duration, Instant)>,
    /// Per agent id: the run and batch index of its last `Attach` in the batch (an agent
    /// reconnecting while commits fail replaces that `Attach` instead of adding one).
    attaches: HashMap<String, (String, usize)>,
}

impl Store {
    /// Creates the data directory if missing, takes its lock, opens (or creates) the database,
    /// moves what a crash left in `raw_log` to its place, and reads what the last server left:
    /// every agent with up to `ring` recent samples.
    pub fn open(config: &StoreConfig, ring: usize) -> crate::Result<(Store, Vec<Restored>)> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| {
            crate::Error::Other(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let lock = File::create(dir.join(LOCK_FILE)).map_err(|e| {
            crate::Error::Other(format!(
                "cannot write in data directory {}: {e}",
                dir.display()
            ))
        })?;
        if lock.try_lock().is_err() {
            return Err(crate::Error::Other(format!(
                "data directory {} is in use by another server (give each its own --data-dir)",
                dir.display()
            )));
        }
        let path = dir.join(DB_FILE);
        let db_err =
            |e: rusqlite::Error| crate::Error::Other(format!("database {}: {e}", path.display()));
        let mut conn = open_db(&path).map_err(db_err)?;
        let repaired = repair(&mut conn).map_err(db_err)?;
        if repaired > 0 {
            tracing::info!(
                "store: moved {repaired} logged sample(s) into the history after a crash"
            );
        }
        let restored = load(&conn, ring).map_err(db_err)?;
        let mut store = Store {
            conn,
            path: path.clone(),
            retention: config.retention,
            _lock: lock,
            batch: Vec::new(),
            flush_armed: false,
            subscriber: None,
            agent_keys: HashMap::new(),
            run_keys: HashMap::new(),
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            expire_cursor: 0,
            health: Arc::new(StoreHealth::default()),
            retry: None,
            attaches: HashMap::new(),
        };
        store.load_keys().map_err(db_err)?;
        Ok((store, restored))
    }

    /// The store's health, to be shown by others (snapshot, `/healthz`).
    pub fn health(&self) -> Arc<StoreHealth> {
        Arc::clone(&self.health)
    }

    fn load_keys(&mut self) -> rusqlite::Result<()> {
        let mut q = self.conn.prepare("SELECT id, key FROM agents")?;
        for row in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (id, key) = row?;
            self.agent_keys.insert(id, key);
        }
        Ok(())
    }

    /// Commits the batch in one transaction, with the move of every agent whose pending
    /// samples are due (all of them with `everything`); returns the durable seqs to announce.
    fn commit_with(&mut self, everything: bool) -> rusqlite::Result<Vec<DurableSeq>> {
        let batch = std::mem::take(&mut self.batch);
        let now = Instant::now();
        let due: Vec<i64> = if everything {
            self.pending.keys().copied().collect()
        } else {
            let mut budget = MOVE_BUDGET;
            self.pending_order
                .iter()
                .take_while(|(since, _)| now.duration_since(*since) >= ROLLUP_DELAY)
                .filter_map(|(_, k)| self.pending.get(k).map(|p| (*k, p.rows.len())))
                .take_while(|(_, rows)| {
                    let fits = *rows <= budget;
                    budget = budget.saturating_sub(*rows);
                    fits
                })
                .map(|(k, _)| k)
                .collect()
        };
        let result = write_batch(self, &batch, &due, everything, now);
        if result.is_err() {
            // Nothing of it was committed: keep it whole (in order, ahead of newer writes)
            // and retry. The agents get no ack meanwhile and keep the samples themselves.
            let newer = std::mem::replace(&mut self.batch, batch);
            self.batch.extend(newer);
            // The key caches may name rows of the rolled-back transaction; both are filled
            // again from the database on demand ([`agent_key`], [`run_key`]).
            self.agent_keys.clear();
            self.run_keys.clear();
            let _ = self.load_keys();
        } else {
            self.attaches.clear();
        }
        result
    }

    fn flush_with(&mut self, everything: bool) -> bool {
        self.flush_armed = false;
        let nothing_due = if everything {
            self.pending.is_empty()
        } else {
            !self.due()
        };
        if self.batch.is_empty() && nothing_due {
            return true;
        }
        let started = Instant::now();
        let n = self.batch.len();
        match self.commit_with(everything) {
            Ok(durable) => {
                self.retry = None;
                if let Some(fault) = self.health.recovered() {
                    tracing::info!(
                        "store: writing again after {} failed attempt(s) over {}; {n} queued write(s) committed",
                        fault.attempts,
                        crate::util::human_age(now_ms().saturating_sub(fault.since_ms)),
                    );
                }
                tracing::trace!("store: committed {n} write(s) in {:?}", started.elapsed());
                if let Some(s) = &self.subscriber
                    && !durable.is_empty()
                {
                    s.do_send(Committed { runs: durable });
                }
                true
            }
            Err(e) => {
                let fault = self.health.failed(e.to_string(), self.batch.len());
                let wait = match self.retry {
                    None => RETRY_MIN,
                    Some((wait, _)) => (wait * 2).min(RETRY_MAX),
                };
                let logged = match self.retry {
                    Some((_, logged)) if logged.elapsed() < FAILURE_LOG_EVERY => logged,
                    _ => {
                        tracing::error!(
                            "store: cannot commit {n} write(s) to {}: {e}; nothing is acknowledged until it works (agents keep their samples), retrying every {wait:?} or less (failed {} time(s) so far)",
                            self.path.display(),
                            fault.attempts
                        );
                        Instant::now()
                    }
                };
                self.retry = Some((wait, logged));
                false
            }
        }
    }

    fn flush(&mut self) -> bool {
        self.flush_with(false)
    }

    /// Whether some agent's pending rollups are due.
    fn due(&self) -> bool {
        self.pending_order
            .front()
            .is_some_and(|(since, _)| since.elapsed() >= ROLLUP_DELAY)
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        // While failing, only the retry timer commits (a full batch must not retry per write).
        if self.batch.len() >= MAX_BATCH && self.retry.is_none() {
            self.flush();
        }
        if !self.flush_armed && !self.batch.is_empty() {
            self.flush_armed = true;
            let delay = self.retry.map_or(FLUSH_DELAY, |(wait, _)| wait);
            ctx.run_later(delay, |this, ctx| {
                this.flush();
                this.arm(ctx);
            });
        }
    }

    /// Deletes old rows of the next slice of agents (enough slices per [`RETENTION_EVERY`] to
    /// visit every agent), each in bounded batches; true if some of them still have old rows.
    fn expire(&mut self, now_ms: u64) -> bool {
        let mut keys: Vec<i64> = self.agent_keys.values().copied().collect();
        keys.sort_unstable();
        let ticks = (RETENTION_EVERY.as_millis() / RETENTION_TICK.as_millis()).max(1) as usize;
        let slice = keys.len().div_ceil(ticks).max(1);
        if self.expire_cursor >= keys.len() {
            self.expire_cursor = 0;
        }
        let end = (self.expire_cursor + slice).min(keys.len());
        let mut more = false;
        for &agent in &keys[self.expire_cursor..end] {
            for tier in Tier::ALL {
                let horizon = i64_of(self.retention.horizon(tier, now_ms));
                match delete_before(&self.conn, tier, agent, horizon) {
                    Ok(n) => more |= n >= DELETE_BATCH,
                    Err(e) => {
                        tracing::warn!("store: cannot delete old {} rows: {e}", tier.name());
                        return false;
                    }
                }
            }
        }
        // With a backlog, the same slice comes again after RETENTION_BACKLOG.
        if !more {
            self.expire_cursor = end;
        }
        more
    }

    fn schedule_expiry(&self, after: Duration, ctx: &mut Context<Self>) {
        ctx.run_later(after, |this, ctx| {
            let next = if this.expire(now_ms()) {
                RETENTION_BACKLOG
            } else {
                RETENTION_TICK
            };
            this.schedule_expiry(next, ctx);
        });
    }
}

/// Deletes at most [`DELETE_BATCH`] rows of `agent` older than `horizon` from `tier`, on the
/// `(agent, ts_ms)` index; returns how many.
fn delete_before(
    conn: &Connection,
    tier: Tier,
    agent: i64,
    horizon: i64,
) -> rusqlite::Result<usize> {
    let table = tier.table();
    // The timestamp of the DELETE_BATCH-th oldest row bounds this pass (rows sharing it go
    // too; without one, fewer than DELETE_BATCH rows are old).
    let bound: Option<i64> = conn
        .prepare_cached(&format!(
            "SELECT ts_ms FROM {table} WHERE agent = ?1 AND ts_ms < ?2 \
             ORDER BY ts_ms LIMIT 1 OFFSET ?3"
        ))?
        .query_row(
            params![agent, horizon, i64_of(DELETE_BATCH as u64 - 1)],
            |r| r.get(0),
        )
        .optional()?;
    match bound {
        Some(upto) => conn
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE agent = ?1 AND ts_ms <= ?2"
            ))?
            .execute(params![agent, upto]),
        None => conn
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE agent = ?1 AND ts_ms < ?2"
            ))?
            .execute(params![agent, horizon]),
    }
}

fn agent_key(
    tx: &rusqlite::Transaction<'_>,
    keys: &mut HashMap<String, i64>,
    id: &str,
) -> rusqlite::Result<Option<i64>> {
    if let Some(k) = keys.get(id) {
        return Ok(Some(*k));
    }
    let k: Option<i64> = tx
        .prepare_cached("SELECT key FROM agents WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    if let Some(k) = k {
        keys.insert(id.to_string(), k);
    }
    Ok(k)
}

/// The `runs.key` of `(agent, run_id)`: from the cache (looked up without building a key: no
/// allocation per sample), else from the database (after a failed commit emptied the cache),
/// else a new row. Never "unknown": a sample is always written, so a durable seq announced
/// after this batch never covers a sample that was skipped.
fn run_key(
    tx: &rusqlite::Transaction<'_>,
    run_keys: &mut HashMap<i64, Vec<(String, i64)>>,
    agent: i64,
    run_id: &str,
) -> rusqlite::Result<i64> {
    if let Some(&(_, key)) = run_keys
        .get(&agent)
        .and_then(|runs| runs.iter().find(|(id, _)| id == run_id))
    {
        return Ok(key);
    }
    tx.prepare_cached("INSERT OR IGNORE INTO runs (agent, run_id) VALUES (?1, ?2)")?
        .execute(params![agent, run_id])?;
    let key: i64 = tx
        .prepare_cached("SELECT key FROM runs WHERE agent = ?1 AND run_id = ?2")?
        .query_row(params![agent, run_id], |r| r.get(0))?;
    run_keys
        .entry(agent)
        .or_default()
        .push((run_id.to_string(), key));
    Ok(key)
}

/// Records an agent's hello and makes its run current.
fn attach(
    tx: &rusqlite::Transaction<'_>,
    a: &Attach,
    agent_keys: &mut HashMap<String, i64>,
    run_keys: &mut HashMap<i64, Vec<(String, i64)>>,
) -> rusqlite::Result<()> {
    let hello = serde_json::to_string(&a.hello)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.prepare_cached(
        "INSERT INTO agents (id, hello, ip, run_id) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET hello = excluded.hello, ip = excluded.ip,
           last_seq = CASE WHEN run_id = excluded.run_id THEN last_seq ELSE 0 END,
           latest = CASE WHEN run_id = excluded.run_id THEN latest ELSE NULL END,
           run_id = excluded.run_id",
    )?
    .execute(params![a.hello.agent_id, hello, a.ip, a.hello.run_id])?;
    let Some(agent) = agent_key(tx, agent_keys, &a.hello.agent_id)? else {
        return Ok(());
    };
    let run = run_key(tx, run_keys, agent, &a.hello.run_id)?;
    tx.prepare_cached("UPDATE agents SET run_key = ?1 WHERE key = ?2")?
        .execute(params![run, agent])?;
    Ok(())
}

/// Moves one agent's pending samples into `raw` (a sample already there is skipped) and adds
/// those to the rollups; records its last-known state.
fn write_pending(tx: &rusqlite::Transaction<'_>, agent: i64, p: &Pending) -> rusqlite::Result<()> {
    let mut rollups: HashMap<(Tier, u64), Agg> = HashMap::new();
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO raw (agent, ts_ms, run, seq, cpu, mem, cores)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for row in &p.rows {
            let inserted = insert.execute(row.params(agent))? == 1;
            if inserted {
                let agg = row.agg();
                for tier in Tier::ROLLUPS {
                    rollups
                        .entry((tier, bucket_start(row.ts_ms, tier.bucket_ms())))
                        .or_default()
                        .merge(&agg);
                }
            }
        }
    }
    for ((tier, ts), agg) in &rollups {
        merge_rollup(tx, *tier, agent, *ts, agg)?;
    }
    if let Some(l) = &p.latest {
        let latest = serde_json::to_string(&l.metrics)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        tx.prepare_cached(
            "UPDATE agents SET latest = CASE WHEN ?3 > last_seq THEN ?4 ELSE latest END,
                               last_seq = max(last_seq, ?3)
             WHERE key = ?1 AND run_key = ?2",
        )?
        .execute(params![agent, l.run, i64_of(l.seq), latest])?;
    }
    Ok(())
}

/// Writes one batch into `raw_log`, moves the `due` agents' samples (all, with `everything`)
/// into `raw` and the rollups, and deletes the part of `raw_log` that has moved, in one
/// transaction. The store's pending state changes only once it has committed.
fn write_batch(
    store: &mut Store,
    batch: &[Op],
    due: &[i64],
    everything: bool,
    now: Instant,
) -> rusqlite::Result<Vec<DurableSeq>> {
    let Store {
        conn,
        agent_keys,
        run_keys,
        pending,
        pending_order,
        ..
    } = store;
    let tx = conn.transaction()?;
    // Per (agent key, run key): the highest seq in the batch.
    let mut highest: HashMap<(i64, i64), DurableSeq> = HashMap::new();
    // Per agent key: what this batch logged, and its newest sample (cloned once, below).
    let mut added: HashMap<i64, Pending> = HashMap::new();
    let mut newest: HashMap<i64, (i64, &Metrics)> = HashMap::new();
    {
        let mut log = tx.prepare_cached(
            "INSERT INTO raw_log (agent, ts_ms, run, seq, cpu, mem, cores)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for op in batch {
            match op {
                Op::Attach(a) => attach(&tx, a, agent_keys, run_keys)?,
                Op::Append(s) => {
                    // An Append always follows its Attach (same sender, same mailbox).
                    let Some(agent) = agent_key(&tx, agent_keys, &s.agent_id)? else {
                        continue;
                    };
                    let run = run_key(&tx, run_keys, agent, &s.run_id)?;
                    let m = &s.metrics;
                    let row = LogRow {
                        ts_ms: m.ts_ms,
                        run,
                        seq: m.seq,
                        cpu: m.cpu.as_ref().map(|c| f64::from(c.total)),
                        mem: m.memory.map(|mem| i64_of(mem.used)),
                        cores: m.cpu.as_ref().map(|c| encode_cores(&c.per_core)),
                    };
                    let rowid = log.insert(row.params(agent))?;
                    let p = added
                        .entry(agent)
                        .or_insert_with(|| Pending::new(now, rowid));
                    p.rows.push(row);
                    let n = newest.entry(agent).or_insert((run, m));
                    if n.0 != run || m.seq > n.1.seq {
                        *n = (run, m);
                    }
                    let e = highest.entry((agent, run)).or_insert_with(|| DurableSeq {
                        agent_id: s.agent_id.clone(),
                        run_id: s.run_id.clone(),
                        seq: 0,
                    });
                    e.seq = e.seq.max(m.seq);
                }
            }
        }
    }
    for (agent, (run, m)) in newest {
        if let Some(p) = added.get_mut(&agent) {
            p.latest = Some(Latest {
                run,
                seq: m.seq,
                metrics: m.clone(),
            });
        }
    }
    let mut due: HashSet<i64> = due.iter().copied().collect();
    if everything {
        due.extend(added.keys().copied());
    } else {
        let rows = |k: &i64| pending.get(k).map_or(0, |p| p.rows.len());
        due.extend(
            added
                .iter()
                .filter(|(k, more)| rows(k) + more.rows.len() >= MOVE_ROWS)
                .map(|(k, _)| *k),
        );
    }
    for &agent in &due {
        match (pending.get(&agent), added.remove(&agent)) {
            (Some(p), Some(more)) => {
                let mut whole = p.clone();
                whole.absorb(more);
                write_pending(&tx, agent, &whole)?;
            }
            (Some(p), None) => write_pending(&tx, agent, p)?,
            (None, Some(more)) => write_pending(&tx, agent, &more)?,
            (None, None) => {}
        }
    }
    // Every log row below the oldest one still pending has moved: delete them (a range at
    // the start of the table; a seek and nothing else when there is none). Computed from
    // what is pending now, never remembered: rowids restart at 1 once the table is empty.
    let keep_from = pending
        .iter()
        .filter(|(k, _)| !due.contains(k))
        .map(|(_, p)| p.first_log)
        .chain(added.values().map(|p| p.first_log))
        .min()
        .unwrap_or(i64::MAX);
    tx.prepare_cached("DELETE FROM raw_log WHERE rowid < ?1")?
        .execute([keep_from])?;
    tx.commit()?;
    for agent in &due {
        pending.remove(agent);
    }
    while pending_order
        .front()
        .is_some_and(|(since, k)| pending.get(k).is_none_or(|p| p.since != *since))
    {
        pending_order.pop_front();
    }
    for (agent, more) in added {
        match pending.get_mut(&agent) {
            Some(p) => p.absorb(more),
            None => {
                pending_order.push_back((more.since, agent));
                pending.insert(agent, more);
            }
        }
    }
    Ok(highest.into_values().collect())
}

/// Adds `agg` to the rollup row `(agent, ts)` of `tier`.
fn merge_rollup(
    tx: &rusqlite::Transaction<'_>,
    tier: Tier,
    agent: i64,
    ts: u64,
    agg: &Agg,
) -> rusqlite::Result<()> {
    let table = tier.table();
    let old = tx
        .prepare_cached(&format!(
            "SELECT n, cpu_n, cpu_sum, cpu_min, cpu_max, mem_n, mem_sum, mem_min, mem_max, cores
             FROM {table} WHERE agent = ?1 AND ts_ms = ?2"
        ))?
        .query_row(params![agent, i64_of(ts)], |r| row_agg_at(r, 0))
        .optional()?;
    let mut total = old.unwrap_or_default();
    total.merge(agg);
    let part = |m: Option<MinMax>| match m {
        Some(m) => (i64_of(m.n), Some(m.sum), Some(m.min), Some(m.max)),
        None => (0, None, None, None),
    };
    let (cn, cs, cmin, cmax) = part(total.cpu);
    let (mn, ms, mmin, mmax) = part(total.mem);
    tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO {table}
         (agent, ts_ms, n, cpu_n, cpu_sum, cpu_min, cpu_max, mem_n, mem_sum, mem_min, mem_max, cores)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))?
    .execute(params![
        agent,
        i64_of(ts),
        i64_of(total.n),
        cn,
        cs,
        cmin,
        cmax,
        mn,
        ms,
        mmin,
        mmax,
        encode_core_aggs(&total.cores)
    ])?;
    Ok(())
}

impl Actor for Store {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Soon after start (a server that was down for a while has old rows), then regularly.
        self.schedule_expiry(Duration::from_secs(1), ctx);
        // Rollups come due while no sample arrives too.
        ctx.run_interval(Duration::from_secs(1), |this, _| {
            if this.due() && !this.flush_armed {
                this.flush();
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if !self.batch.is_empty() || !self.pending.is_empty() {
            self.flush_with(true);
        }
    }
}

impl Handler<Attach> for Store {
    type Result = ();

    fn handle(&mut self, msg: Attach, ctx: &mut Self::Context) {
        // The agent's last queued Attach is of the same run (it reconnected while commits
        // fail): the newer hello replaces it in place. Nothing queued after it attaches
        // another run of this agent, so the result is the same as appending.
        let id = &msg.hello.agent_id;
        if let Some((run, i)) = self.attaches.get(id)
            && *run == msg.hello.run_id
            && let Some(Op::Attach(queued)) = self.batch.get_mut(*i)
        {
            *queued = msg;
        } else {
            let entry = (msg.hello.run_id.clone(), self.batch.len());
            self.attaches.insert(id.clone(), entry);
            self.batch.push(Op::Attach(msg));
        }
        self.arm(ctx);
    }
}

impl Handler<Append> for Store {
    type Result = ();

    fn handle(&mut self, msg: Append, ctx: &mut Self::Context) {
        self.batch.push(Op::Append(msg));
        self.arm(ctx);
    }
}

impl Handler<Subscribe> for Store {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) {
        self.subscriber = Some(msg.committed);
    }
}

impl Handler<Flush> for Store {
    type Result = bool;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> bool {
        self.flush_with(true)
    }
}

// ---- Reading ----------------------------------------------------------------------------------

/// Read-only access for the HTTP API, on its own connection (WAL: it never blocks the Store).
pub struct Reader {
    conn: Mutex<Connection>,
    retention: Retention,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("retention", &self.retention)
            .finish()
    }
}

/// An agent's series from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub tier: Tier,
    pub points: Vec<Bucket>,
}

impl Reader {
    /// Opens the database in `config.data_dir` read-only (after [`Store::open`] created it).
    pub fn open(config: &StoreConfig) -> crate::Result<Reader> {
        let path = config.data_dir.join(DB_FILE);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| {
            c.busy_timeout(Duration::from_secs(5))?;
            Ok(c)
        })
        .map_err(|e| crate::Error::Other(format!("database {}: {e}", path.display())))?;
        Ok(Reader {
            conn: Mutex::new(conn),
            retention: config.retention,
        })
    }

    /// `agent_id`'s series over `[from_ms, to_ms)` in steps of `step_ms`, from the tier
    /// [`choose_tier`] picks; `None` if the store has never seen the agent.
    pub fn history(
        &self,
        agent_id: &str,
        from_ms: u64,
        to_ms: u64,
        step_ms: u64,
        now_ms: u64,
    ) -> rusqlite::Result<Option<Series>> {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let agent: Option<i64> = conn
            .query_row("SELECT key FROM agents WHERE id = ?1", [agent_id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(agent) = agent else {
            return Ok(None);
        };
        let tier = choose_tier(from_ms, step_ms, now_ms, &self.retention);
        let range = params![agent, i64_of(from_ms), i64_of(to_ms)];
        let rows: Vec<(u64, Agg)> = if tier == Tier::Raw {
            // The last seconds are still in raw_log (skipping a repeat of a sample in raw).
            conn.prepare_cached(
                "SELECT ts_ms, cpu, mem, cores FROM raw
                 WHERE agent = ?1 AND ts_ms >= ?2 AND ts_ms < ?3
                 UNION ALL
                 SELECT ts_ms, cpu, mem, cores FROM raw_log AS l
                 WHERE agent = ?1 AND ts_ms >= ?2 AND ts_ms < ?3
                   AND NOT EXISTS (SELECT 1 FROM raw WHERE run = l.run AND seq = l.seq)",
            )?
            .query_map(range, |r| Ok((u64_of(r.get(0)?), raw_agg(r, 1)?)))?
            .collect::<rusqlite::Result<_>>()?
        } else {
            conn.prepare_cached(&format!(
                "SELECT ts_ms, n, cpu_n, cpu_sum, cpu_min, cpu_max, mem_n, mem_sum, mem_min, mem_max,
                 cores FROM {} WHERE agent = ?1 AND ts_ms >= ?2 AND ts_ms < ?3",
                tier.table()
            ))?
            .query_map(range, |r| {
                let ts = u64_of(r.get(0)?);
                let agg = row_agg_at(r, 1)?;
                Ok((ts, agg))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        Ok(Some(Series {
            tier,
            points: rebucket(rows, from_ms, to_ms, step_ms),
        }))
    }
}

/// A rollup row's aggregate: columns n, cpu_n, cpu_sum, cpu_min, cpu_max, mem_n, mem_sum,
/// mem_min, mem_max, cores from column `at` on.
fn row_agg_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Agg> {
    let part = |i: usize| -> rusqlite::Result<Option<MinMax>> {
        let n: i64 = r.get(i)?;
        Ok(
            match (
                r.get::<_, Option<f64>>(i + 1)?,
                r.get(i + 2)?,
                r.get(i + 3)?,
            ) {
                (Some(sum), Some(min), Some(max)) if n > 0 => Some(MinMax {
                    n: u64_of(n),
                    sum,
                    min,
                    max,
                }),
                _ => None,
            },
        )
    };
    Ok(Agg {
        n: u64_of(r.get(at)?),
        cpu: part(at + 1)?,
        mem: part(at + 5)?,
        cores: r
            .get_ref(at + 9)?
            .as_blob_or_null()?
            .map(decode_core_aggs)
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    #[test]
    fn rollup_keeps_avg_min_max_and_counts_missing_readings() {
        let mut a = Agg::default();
        for (cpu, mem) in [
            (Some(10.0), Some(100.0)),
            (Some(90.0), None),
            (Some(20.0), Some(300.0)),
        ] {
            a.merge(&Agg::sample(cpu, mem));
        }
        a.merge(&Agg::sample(None, Some(200.0)));
        let b = a.bucket(0);
        assert_eq!(b.n, 4);
        assert_eq!(
            b.cpu,
            Some(Stat {
                avg: 40.0,
                min: 10.0,
                max: 90.0
            })
        );
        assert_eq!(
            b.mem_used,
            Some(Stat {
                avg: 200.0,
                min: 100.0,
                max: 300.0
            })
        );
        assert_eq!(Agg::sample(None, None).bucket(0).cpu, None);
    }

    #[test]
    fn merging_partial_rollups_equals_rolling_up_everything() {
        let samples: Vec<Agg> = (0..50u32)
            .map(|i| Agg::sample(Some(f64::from(i * 7 % 100)), Some(f64::from(i))))
            .collect();
        let mut whole = Agg::default();
        samples.iter().for_each(|s| whole.merge(s));
        let (mut left, mut right) = (Agg::default(), Agg::default());
        samples[..17].iter().for_each(|s| left.merge(s));
        samples[17..].iter().for_each(|s| right.merge(s));
        left.merge(&right);
        assert_eq!(left, whole);
    }

    #[test]
    fn rebucket_aligns_to_the_step_and_keeps_spikes() {
        let rows = [
            (60_000, Agg::sample(Some(5.0), None)),
            (120_000, Agg::sample(Some(99.0), None)),
            (179_999, Agg::sample(Some(1.0), None)),
            (400_000, Agg::sample(Some(50.0), None)),
        ];
        let got = rebucket(rows, 60_000, 400_000, 120_000);
        assert_eq!(
            got.iter().map(|b| b.ts_ms).collect::<Vec<_>>(),
            [0, 120_000]
        );
        assert_eq!(got[1].cpu.map(|c| (c.min, c.max)), Some((1.0, 99.0)));
        assert_eq!(got[1].n, 2);
    }

    #[test]
    fn tier_choice_follows_step_and_retention() {
        let r = Retention::default();
        let now = 400 * 24 * H;
        // The dashboard's ranges with about 300 points each.
        assert_eq!(choose_tier(now - H, 12_000, now, &r), Tier::Raw);
        assert_eq!(choose_tier(now - 24 * H, 288_000, now, &r), Tier::Min1);
        assert_eq!(
            choose_tier(now - 7 * 24 * H, 2_016_000, now, &r),
            Tier::Min10
        );
        assert_eq!(
            choose_tier(now - 30 * 24 * H, 8_640_000, now, &r),
            Tier::Hour1
        );
        // A fine step over a range older than the raw tier keeps: the finest tier that has it.
        assert_eq!(choose_tier(now - 48 * H, 20_000, now, &r), Tier::Min1);
        assert_eq!(choose_tier(now - 30 * 24 * H, 60_000, now, &r), Tier::Min10);
        // Beyond every retention: the coarsest tier (it may be empty).
        assert_eq!(choose_tier(0, 1_000, now, &r), Tier::Hour1);
        assert_eq!(bucket_start(3_599_999, H), 0);
        assert_eq!(bucket_start(3_600_000, H), H);
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "lanmon-store-{name}-{}-{}",
            std::process::id(),
            crate::util::random_id()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("temp dir: {e}"));
        dir
    }

    fn temp_config(name: &str, retention: Retention) -> (PathBuf, StoreConfig) {
        let dir = temp_dir(name);
        let config = StoreConfig {
            data_dir: dir.clone(),
            retention,
        };
        (dir, config)
    }

    fn attach_a1(store: &mut Store, run: &str) {
        store.batch.push(Op::Attach(Attach {
            hello: hello(run),
            ip: "127.0.0.1".into(),
        }));
    }

    fn hello(run: &str) -> Hello {
        Hello {
            proto: crate::protocol::PROTOCOL_VERSION,
            agent_id: "a1".into(),
            run_id: run.into(),
            name: "one".into(),
            hostname: "one".into(),
            os: "test".into(),
            cores: 1,
            agent_version: "0".into(),
            interval_ms: 1000,
        }
    }

    fn metrics(seq: u64, ts_ms: u64, cpu: f32) -> Metrics {
        Metrics {
            seq,
            ts_ms,
            cpu: Some(crate::protocol::Cpu {
                total: cpu,
                per_core: vec![cpu, 100.0 - cpu],
            }),
            ..Metrics::default()
        }
    }

    fn minute_of(reader: &Reader, from: u64) -> Bucket {
        let series = reader
            .history("a1", from, from + 60_000, 60_000, from + 60_000)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("agent missing"));
        assert_eq!(series.tier, Tier::Min1);
        assert_eq!(series.points.len(), 1, "{series:?}");
        series.points[0].clone()
    }

    fn append(store: &mut Store, run: &str, seqs: std::ops::RangeInclusive<u64>, at: u64) {
        for seq in seqs {
            store.batch.push(Op::Append(Append {
                agent_id: "a1".into(),
                run_id: run.into(),
                metrics: metrics(seq, at + seq * 1000, seq as f32),
            }));
        }
    }

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
        store.commit_with(true).unwrap_or_else(|e| panic!("{e}"));
        let reader = Reader::open(&config).unwrap_or_else(|e| panic!("{e}"));
        let m = minute_of(&reader, now);
        assert_eq!((m.n, m.cpu.map(|c| c.max)), (2, Some(40.0)));
        assert_eq!(m.cores.len(), 2, "the new sample's cores");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A crash (the store dropped with samples only in raw_log) loses nothing: the next open
    /// moves them into raw and the rollups, each once.
    #[test]
    fn rollups_survive_a_crash_exactly_once() {
        let (dir, config) = temp_config("crash", Retention::default());
        let now = 10 * H;
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        attach_a1(&mut store, "r1");
        append(&mut store, "r1", 1..=3, now);
        store.commit_with(true).unwrap_or_else(|e| panic!("{e}"));
        // 3 again (a replay) and 4..=6: logged, not yet moved into raw and the rollups.
        append(&mut store, "r1", 3..=6, now);
        store.commit_with(false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.pending.len(), 1, "3..=6 wait in raw_log");
        let reader = Reader::open(&config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            minute_of(&reader, now).n,
            3,
            "the rollups have the moved part"
        );
        let raw = reader
            .history("a1", now, now + 60_000, 1000, now + 60_000)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("agent missing"));
        assert_eq!(
            raw.points.len(),
            6,
            "raw reads include raw_log, once: {raw:?}"
        );
        drop(store); // the crash: of the pending state only raw_log survives

        let (mut store, restored) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            restored[0].last_seq, 6,
            "raw rows count, not only the agent row"
        );
        let m = minute_of(&reader, now);
        assert_eq!(m.n, 6);
        assert_eq!(
            m.cpu,
            Some(Stat {
                avg: 3.5,
                min: 1.0,
                max: 6.0
            })
        );
        // New rows after the repair take fresh rowids and are counted once more each.
        attach_a1(&mut store, "r1");
        append(&mut store, "r1", 7..=8, now);
        store.commit_with(false).unwrap_or_else(|e| panic!("{e}"));
        drop(store);
        let (store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        let m = minute_of(&reader, now);
        assert_eq!(m.n, 8);
        assert_eq!(m.cores.len(), 2);
        let logged: i64 = store
            .conn
            .query_row("SELECT count(*) FROM raw_log", [], |r| r.get(0))
            .unwrap_or(-1);
        assert_eq!(logged, 0, "everything moved at open");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn batches_are_durable_deduplicated_rolled_up_and_reloaded() {
        let (dir, mut config) = temp_config("roundtrip", Retention::default());
        config.data_dir = dir.join("nested");
        let (mut store, restored) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        assert!(restored.is_empty());
        assert!(
            Store::open(&config, 10).is_err(),
            "a second server on the same directory is refused"
        );
        attach_a1(&mut store, "r1");
        let now = 10 * H;
        for seq in 1..=5u64 {
            store.batch.push(Op::Append(Append {
                agent_id: "a1".into(),
                run_id: "r1".into(),
                metrics: metrics(seq, now + seq * 1000, seq as f32 * 10.0),
            }));
        }
        // seq 3 again (e.g. after a crash between commit and ack): ignored, rollups unchanged.
        store.batch.push(Op::Append(Append {
            agent_id: "a1".into(),
            run_id: "r1".into(),
            metrics: metrics(3, now + 3000, 99.0),
        }));
        let durable = store.commit_with(true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            durable,
            [DurableSeq {
                agent_id: "a1".into(),
                run_id: "r1".into(),
                seq: 5
            }]
        );
        let reader = Reader::open(&config).unwrap_or_else(|e| panic!("{e}"));
        let raw = reader
            .history("a1", now, now + 60_000, 1000, now + 60_000)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("agent missing"));
        assert_eq!(raw.tier, Tier::Raw);
        assert_eq!(raw.points.len(), 5);
        let minute = reader
            .history("a1", now, now + 60_000, 60_000, now + 60_000)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("agent missing"));
        assert_eq!(minute.tier, Tier::Min1);
        assert_eq!(minute.points.len(), 1);
        assert_eq!(minute.points[0].n, 5);
        assert_eq!(
            minute.points[0].cpu,
            Some(Stat {
                avg: 30.0,
                min: 10.0,
                max: 50.0
            })
        );
        assert_eq!(
            minute.points[0].cores,
            [
                Some(Stat {
                    avg: 30.0,
                    min: 10.0,
                    max: 50.0
                }),
                Some(Stat {
                    avg: 70.0,
                    min: 50.0,
                    max: 90.0
                })
            ]
        );
        assert_eq!(
            raw.points[1].cores.len(),
            2,
            "raw rows keep per-core values"
        );
        assert_eq!(reader.history("nobody", 0, 1, 1, 1).ok(), Some(None));
        drop(store);

        let (_store, restored) = Store::open(&config, 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(restored.len(), 1);
        let a = &restored[0];
        assert_eq!((a.hello.run_id.as_str(), a.last_seq), ("r1", 5));
        assert_eq!(a.latest.as_ref().map(|m| m.seq), Some(5));
        assert_eq!(a.points.iter().map(|p| p.0).collect::<Vec<_>>(), [3, 4, 5]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retention_deletes_in_bounded_batches() {
        let (dir, config) = temp_config(
            "retention",
            Retention {
                raw: Duration::from_secs(60),
                ..Retention::default()
            },
        );
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        attach_a1(&mut store, "r1");
        let old = DELETE_BATCH as u64 + 500;
        for seq in 1..=old + 10 {
            store.batch.push(Op::Append(Append {
                agent_id: "a1".into(),
                run_id: "r1".into(),
                // `old` samples an hour back, then 10 recent ones.
                metrics: metrics(seq, if seq <= old { seq } else { 2 * H + seq }, 1.0),
            }));
        }
        store.commit_with(true).unwrap_or_else(|e| panic!("{e}"));
        let count = |s: &Store| -> i64 {
            s.conn
                .query_row("SELECT count(*) FROM raw", [], |r| r.get(0))
                .unwrap_or(-1)
        };
        let now = 2 * H + old + 20;
        assert!(store.expire(now), "the first pass stops at the batch limit");
        assert_eq!(count(&store), 510);
        assert!(!store.expire(now));
        assert_eq!(count(&store), 10);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every seq of run `run` of agent a1 on disk (moved into `raw` or still in `raw_log`).
    fn seqs_on_disk(store: &Store, run: &str) -> Vec<u64> {
        let mut q = store
            .conn
            .prepare(
                "SELECT DISTINCT s.seq FROM (SELECT run, seq FROM raw UNION ALL
                 SELECT run, seq FROM raw_log) AS s JOIN runs ON s.run = runs.key
                 WHERE runs.run_id = ?1 ORDER BY s.seq",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        q.query_map([run], |r| r.get::<_, i64>(0))
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|s| u64_of(s.unwrap_or_else(|e| panic!("{e}"))))
            .collect()
    }

    /// A full disk (SQLite's `max_page_count`: the same SQLITE_FULL) makes a commit fail; the
    /// retry once there is room writes every queued sample, so the durable seq it announces
    /// never covers a sample that is not on disk. (The retry used to skip every sample whose
    /// run had been attached in an earlier, successful batch.)
    #[test]
    fn a_failed_commit_is_retried_whole_and_never_acknowledges_a_hole() {
        let (dir, config) = temp_config("disk-full", Retention::default());
        let now = 10 * H;
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        attach_a1(&mut store, "r1");
        append(&mut store, "r1", 1..=3, now);
        let durable = store.commit_with(false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(durable.iter().map(|d| d.seq).max(), Some(3));
        // The disk is full: no page may be added.
        let pages: i64 = store
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        store
            .conn
            .pragma_update(None, "max_page_count", pages)
            .unwrap_or_else(|e| panic!("{e}"));
        append(&mut store, "r1", 4..=400, now);
        assert!(
            store.commit_with(false).is_err(),
            "the commit must fail on a full database"
        );
        assert!(
            store.flush_with(false).eq(&false),
            "still full: nothing durable"
        );
        assert!(store.health.status().is_some(), "the failure is visible");
        // Room again: the retry writes everything that was queued.
        store
            .conn
            .pragma_update(None, "max_page_count", 1_073_741_823)
            .unwrap_or_else(|e| panic!("{e}"));
        let durable = store.commit_with(false).unwrap_or_else(|e| panic!("{e}"));
        let acked = durable.iter().map(|d| d.seq).max().unwrap_or(0);
        assert_eq!(
            acked, 400,
            "the retry commits the queued samples: {durable:?}"
        );
        let on_disk = seqs_on_disk(&store, "r1");
        assert_eq!(
            on_disk,
            (1..=acked).collect::<Vec<_>>(),
            "every acknowledged seq is on disk"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Measures the disk use of one agent-day at the default 5 s interval (17,280 samples,
    /// committed in batches as a live server would). Run by hand:
    /// `cargo test -p lanmon --release --lib -- --ignored --nocapture disk_use`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn disk_use_per_agent_day() {
        let (dir, config) = temp_config("disk-use", Retention::default());
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        let agents = 10u64;
        let day = 17_280u64;
        for a in 0..agents {
            let mut h = hello("r1");
            h.agent_id = format!("agent-{a:02}");
            store.batch.push(Op::Attach(Attach {
                hello: h,
                ip: "10.0.0.1".into(),
            }));
        }
        let start = 1_800_000_000_000u64;
        for seq in 1..=day {
            for a in 0..agents {
                let mut m = metrics(seq, start + seq * 5000, (seq % 100) as f32);
                m.memory = Some(crate::protocol::Memory {
                    total: 8 << 30,
                    used: (2 << 30) + seq * 4096,
                    free: 1 << 30,
                    available: Some(5 << 30),
                });
                store.batch.push(Op::Append(Append {
                    agent_id: format!("agent-{a:02}"),
                    run_id: "r1".into(),
                    metrics: m,
                }));
            }
            if seq % 60 == 0 {
                store
                    .commit_with(seq % 600 == 0)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
        store.commit_with(true).unwrap_or_else(|e| panic!("{e}"));
        let _ = store.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        let bytes = std::fs::metadata(dir.join(DB_FILE)).map_or(0, |m| m.len());
        println!(
            "{agents} agents x 1 day at 5 s: {bytes} bytes, {:.2} MiB per agent per day",
            bytes as f64 / agents as f64 / (1024.0 * 1024.0)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
