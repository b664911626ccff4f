//! One struct per table, mapped to and from SQL by column name, and the SQL built from them.
//!
//! Each row struct is declared once, with `table_row!`: its fields are the table's columns,
//! except that an `Option<MinMax>` field stands for the four columns `<field>_n`, `_sum`,
//! `_min` and `_max`. From that one definition come the column names (`columns()`), the
//! statements that write a row ([`insert`], built once per statement and kept in a
//! `LazyLock`), binding a row to such a statement (`bind`, `execute`: by position in that same
//! generated list, so nothing is looked up per sample), and reading a row back by column name
//! (`from_row`: a query may list the columns in any order). A unit test in [`super::schema`]
//! checks that every table the migrations build has exactly the columns of its struct, so a
//! migration and its struct cannot drift apart unnoticed.
//!
//! Adding a column: a migration, a field here, and then whatever the compiler points at (the
//! functions that build a row from a sample or an [`Agg`], and back).
//!
//! Also here: the blob formats of the `cores` columns (for the first [`MAX_HISTORY_CORES`]
//! cores of a sample) and of the `fs` columns, and the saturating conversions
//! between the wire's `u64` and SQLite's `i64`.

use std::sync::LazyLock;

use rusqlite::{Row, Statement};

use super::Rates;
use super::reader::MAX_HISTORY_CORES;
use crate::protocol::{Filesystem, Metrics};
use crate::server::series::{Agg, FsAgg, MinMax};

/// A value that fills one or more columns of a row.
pub(super) trait Columns: Sized {
    /// Suffixes of its columns' names, appended to the field's name (`""`: the field's name).
    const SUFFIXES: &'static [&'static str];
    /// Binds the value to parameters `*at`, `*at + 1`, … (1-based) and moves `at` past them.
    fn bind(&self, stmt: &mut Statement<'_>, at: &mut usize) -> rusqlite::Result<()>;
    /// Reads the value from the columns named by the next [`Self::SUFFIXES`]`.len()` names.
    fn read<'n>(row: &Row<'_>, names: &mut impl Iterator<Item = &'n str>)
    -> rusqlite::Result<Self>;
}

fn next_name<'n>(names: &mut impl Iterator<Item = &'n str>) -> rusqlite::Result<&'n str> {
    // Cannot run out: the names come from the same definition as the fields.
    names
        .next()
        .ok_or(rusqlite::Error::InvalidColumnIndex(usize::MAX))
}

/// Plain SQL values fill one column each.
macro_rules! one_column {
    ($($t:ty),* $(,)?) => {$(
        impl Columns for $t {
            const SUFFIXES: &'static [&'static str] = &[""];
            fn bind(&self, stmt: &mut Statement<'_>, at: &mut usize) -> rusqlite::Result<()> {
                stmt.raw_bind_parameter(*at, self)?;
                *at += 1;
                Ok(())
            }
            fn read<'n>(
                row: &Row<'_>,
                names: &mut impl Iterator<Item = &'n str>,
            ) -> rusqlite::Result<Self> {
                row.get(next_name(names)?)
            }
        }
    )*};
}

one_column!(
    i64,
    String,
    Option<i64>,
    Option<f64>,
    Option<String>,
    Option<Vec<u8>>
);

/// A quantity's rollup: `<field>_n` readings (0 and NULLs when there were none), their
/// `_sum`, `_min` and `_max`.
impl Columns for Option<MinMax> {
    const SUFFIXES: &'static [&'static str] = &["_n", "_sum", "_min", "_max"];

    fn bind(&self, stmt: &mut Statement<'_>, at: &mut usize) -> rusqlite::Result<()> {
        let (n, sum, min, max) = match self {
            Some(m) => (i64_of(m.n), Some(m.sum), Some(m.min), Some(m.max)),
            None => (0, None, None, None),
        };
        n.bind(stmt, at)?;
        sum.bind(stmt, at)?;
        min.bind(stmt, at)?;
        max.bind(stmt, at)
    }

    fn read<'n>(
        row: &Row<'_>,
        names: &mut impl Iterator<Item = &'n str>,
    ) -> rusqlite::Result<Self> {
        let n = i64::read(row, names)?;
        let sum = Option::<f64>::read(row, names)?;
        let min = Option::<f64>::read(row, names)?;
        let max = Option::<f64>::read(row, names)?;
        Ok(match (sum, min, max) {
            (Some(sum), Some(min), Some(max)) if n > 0 => Some(MinMax {
                n: u64_of(n),
                sum,
                min,
                max,
            }),
            _ => None,
        })
    }
}

/// Declares a row struct and its mapping (see the module documentation).
macro_rules! table_row {
    (
        $(#[$meta:meta])*
        struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        pub(super) struct $name {
            $( $(#[$fmeta])* pub(super) $field: $ty, )*
        }

        // Generated for every table; not every table is written (or read) through each.
        #[allow(dead_code)]
        impl $name {
            /// The table's columns, in the order of the fields.
            pub(super) fn columns() -> &'static [String] {
                static COLUMNS: LazyLock<Vec<String>> = LazyLock::new(|| {
                    let mut all = Vec::new();
                    $(
                        for suffix in <$ty as Columns>::SUFFIXES {
                            all.push(format!("{}{suffix}", stringify!($field)));
                        }
                    )*
                    all
                });
                &COLUMNS
            }

            /// Binds every column to `?1`, `?2`, … of a statement that lists
            /// [`Self::columns`] in order (one built by [`insert`]).
            pub(super) fn bind(&self, stmt: &mut Statement<'_>) -> rusqlite::Result<()> {
                let mut at = 1;
                $( Columns::bind(&self.$field, stmt, &mut at)?; )*
                Ok(())
            }

            /// Binds and runs such a statement; returns how many rows it changed.
            pub(super) fn execute(&self, stmt: &mut Statement<'_>) -> rusqlite::Result<usize> {
                self.bind(stmt)?;
                stmt.raw_execute()
            }

            /// The row as a query returned it, its columns found by name.
            pub(super) fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
                let mut names = Self::columns().iter().map(String::as_str);
                // Fields are evaluated in the order written, the order of the names.
                Ok(Self { $( $field: Columns::read(row, &mut names)?, )* })
            }
        }
    };
}

table_row! {
    /// One sample, in `raw` (moved) and in `raw_log` (durable, not yet moved): the same columns.
    #[derive(Debug, Clone, PartialEq)]
    struct SampleRow {
        /// `agents.key`.
        agent: i64,
        /// Agent-side timestamp, ms since the Unix epoch.
        ts_ms: i64,
        /// `runs.key`.
        run: i64,
        seq: i64,
        /// CPU usage of the whole machine, percent.
        cpu: Option<f64>,
        /// Memory used, bytes.
        mem: Option<i64>,
        /// Per-core CPU usage ([`encode_cores`]).
        cores: Option<Vec<u8>>,
        /// 1-minute load average, in hundredths (as `/proc/loadavg` has it).
        load1_x100: Option<i64>,
        /// Swap used, bytes.
        swap: Option<i64>,
        /// Use of the fullest filesystem, hundredths of a percent.
        fs_pct_x100: Option<i64>,
        /// Network bytes per second received / sent, every interface together (rounded;
        /// the Registry's rates since the agent's previous sample).
        net_rx: Option<i64>,
        net_tx: Option<i64>,
        /// Disk bytes per second read / written, every device together (rounded).
        disk_read: Option<i64>,
        disk_write: Option<i64>,
        /// Each filesystem's use ([`push_fs`]).
        fs: Option<Vec<u8>>,
    }
}

table_row! {
    /// One rollup row (`rollup_1m`, `rollup_10m`, `rollup_1h`): the [`Agg`] of one agent's
    /// samples in the bucket starting at `ts_ms`.
    #[derive(Debug, Clone, PartialEq)]
    struct RollupRow {
        agent: i64,
        ts_ms: i64,
        /// Samples in the bucket.
        n: i64,
        cpu: Option<MinMax>,
        mem: Option<MinMax>,
        /// Per-core rollups ([`encode_core_aggs`]).
        cores: Option<Vec<u8>>,
        /// The 1-minute load, in hundredths ([`to_hundredths`]: whole numbers, which SQLite stores
        /// as integers of 1 to 4 bytes instead of 8-byte REALs).
        load1_x100: Option<MinMax>,
        /// Swap used, bytes.
        swap: Option<MinMax>,
        /// The fullest filesystem, hundredths of a percent ([`to_hundredths`]).
        fs_pct_x100: Option<MinMax>,
        /// Bytes per second (whole numbers: the raw rates are rounded).
        net_rx: Option<MinMax>,
        net_tx: Option<MinMax>,
        disk_read: Option<MinMax>,
        disk_write: Option<MinMax>,
        /// Per-filesystem rollups ([`encode_fs_aggs`]).
        fs: Option<Vec<u8>>,
    }
}

table_row! {
    /// One agent (`agents`), by its stable id.
    #[derive(Debug, Clone, PartialEq)]
    // Every column is listed; not every reader needs every one.
    #[allow(dead_code)]
    struct AgentRow {
        key: i64,
        id: String,
        /// Its last hello, as JSON.
        hello: String,
        ip: String,
        /// The run of that hello, and its `runs.key`.
        run_id: String,
        run_key: i64,
        /// Highest seq of that run in the agent's row (the raw tier may be ahead).
        last_seq: i64,
        /// The sample of `last_seq`, as JSON.
        latest: Option<String>,
        /// When the agent last said hello, ms since the Unix epoch (0: before schema 3).
        seen_ms: i64,
    }
}

table_row! {
    /// One filesystem of an agent (`mounts`): the slot its readings have in the `fs` blobs.
    /// At most [`MAX_FS_HISTORY`](super::MAX_FS_HISTORY) per agent, the first ones seen.
    #[derive(Debug, Clone, PartialEq)]
    #[allow(dead_code)]
    struct MountRow {
        agent: i64,
        /// 0, 1, … in the order the agent's filesystems were first seen.
        slot: i64,
        /// The mount point.
        mount: String,
    }
}

table_row! {
    /// One run of an agent (`runs`): the short key the sample tables use for it.
    #[derive(Debug, Clone, PartialEq)]
    #[allow(dead_code)]
    struct RunRow {
        key: i64,
        agent: i64,
        run_id: String,
    }
}

table_row! {
    /// One point of a history read as SQLite aggregates it (`GROUP BY` the point's start):
    /// not a table, the columns of such a query (see `reader.rs`).
    #[derive(Debug, Clone, PartialEq)]
    struct MinMaxRow {
        /// The point's start.
        ts_ms: i64,
        /// Samples in it.
        n: i64,
        cpu: Option<MinMax>,
        mem: Option<MinMax>,
        /// The whole machine, in the units of the tables ([`RollupRow`]'s: hundredths for
        /// the load and the fullest filesystem).
        load1_x100: Option<MinMax>,
        swap: Option<MinMax>,
        fs_pct_x100: Option<MinMax>,
        net_rx: Option<MinMax>,
        net_tx: Option<MinMax>,
        disk_read: Option<MinMax>,
        disk_write: Option<MinMax>,
    }
}

/// The columns a history point aggregates in SQL ([`MinMaxRow`]'s `Option<MinMax>` fields,
/// each also a column of `raw` and a `_n/_sum/_min/_max` group of the rollups).
pub(super) const MINMAX_COLUMNS: [&str; 9] = [
    "cpu",
    "mem",
    "load1_x100",
    "swap",
    "fs_pct_x100",
    "net_rx",
    "net_tx",
    "disk_read",
    "disk_write",
];

impl MinMaxRow {
    /// The point's aggregate, without per-core and per-filesystem values (those are folded
    /// in apart). (A struct literal: a new quantity in [`Agg`] makes the compiler point here.)
    pub(super) fn agg(&self) -> Agg {
        Agg {
            n: u64_of(self.n),
            cpu: self.cpu,
            mem: self.mem,
            cores: Vec::new(),
            load1: from_hundredths(self.load1_x100),
            swap: self.swap,
            fs_pct: from_hundredths(self.fs_pct_x100),
            net_rx: self.net_rx,
            net_tx: self.net_tx,
            disk_read: self.disk_read,
            disk_write: self.disk_write,
            fs: Vec::new(),
        }
    }
}

impl SampleRow {
    /// Sample `m` of agent `agent`'s run `run`, as stored, with the `rates` the Registry
    /// derived for it and its filesystems' blob (`fs`, [`push_fs`]: it needs the slots).
    /// Per-core values of the first [`MAX_HISTORY_CORES`] cores only (so a raw row holds at
    /// most 512 bytes of them, and a rollup row 4 KiB, whatever the agent announces).
    pub(super) fn of(
        agent: i64,
        run: i64,
        m: &Metrics,
        rates: &Rates,
        fs: Option<Vec<u8>>,
    ) -> Self {
        SampleRow {
            agent,
            ts_ms: i64_of(m.ts_ms),
            run,
            seq: i64_of(m.seq),
            cpu: m.cpu.as_ref().map(|c| f64::from(c.total)),
            mem: m.memory.map(|mem| i64_of(mem.used)),
            cores: m
                .cpu
                .as_ref()
                .map(|c| encode_cores(&c.per_core[..c.per_core.len().min(MAX_HISTORY_CORES)])),
            load1_x100: m.load.map(|l| hundredths(f64::from(l.load1))),
            swap: m.swap.map(|s| i64_of(s.used_bytes)),
            fs_pct_x100: m
                .filesystems
                .as_deref()
                .and_then(fullest_pct)
                .map(hundredths),
            net_rx: rates.net_rx.map(rounded),
            net_tx: rates.net_tx.map(rounded),
            disk_read: rates.disk_read.map(rounded),
            disk_write: rates.disk_write.map(rounded),
            fs,
        }
    }

    /// The aggregate of this one sample. (A struct literal: a new quantity in [`Agg`] makes
    /// the compiler point here.)
    pub(super) fn agg(&self) -> Agg {
        Agg {
            n: 1,
            cpu: self.cpu.map(MinMax::one),
            mem: self.mem.map(|m| MinMax::one(m as f64)),
            cores: self
                .cores
                .as_deref()
                .map(|blob| decode_cores(blob).map(|v| Some(MinMax::one(v))).collect())
                .unwrap_or_default(),
            load1: self.load1_x100.map(|v| MinMax::one(v as f64 / 100.0)),
            swap: self.swap.map(|v| MinMax::one(v as f64)),
            fs_pct: self.fs_pct_x100.map(|v| MinMax::one(v as f64 / 100.0)),
            net_rx: self.net_rx.map(|v| MinMax::one(v as f64)),
            net_tx: self.net_tx.map(|v| MinMax::one(v as f64)),
            disk_read: self.disk_read.map(|v| MinMax::one(v as f64)),
            disk_write: self.disk_write.map(|v| MinMax::one(v as f64)),
            fs: self.fs.as_deref().map(decode_fs).unwrap_or_default(),
        }
    }
}

impl RollupRow {
    /// The row of `agent`'s bucket starting at `ts_ms`, holding `agg`.
    pub(super) fn of(agent: i64, ts_ms: u64, agg: &Agg) -> Self {
        RollupRow {
            agent,
            ts_ms: i64_of(ts_ms),
            n: i64_of(agg.n),
            cpu: agg.cpu,
            mem: agg.mem,
            cores: encode_core_aggs(&agg.cores),
            load1_x100: to_hundredths(agg.load1),
            swap: agg.swap,
            fs_pct_x100: to_hundredths(agg.fs_pct),
            net_rx: agg.net_rx,
            net_tx: agg.net_tx,
            disk_read: agg.disk_read,
            disk_write: agg.disk_write,
            fs: encode_fs_aggs(&agg.fs),
        }
    }

    /// The aggregate this row holds.
    pub(super) fn agg(&self) -> Agg {
        Agg {
            n: u64_of(self.n),
            cpu: self.cpu,
            mem: self.mem,
            cores: self
                .cores
                .as_deref()
                .map(decode_core_aggs)
                .unwrap_or_default(),
            load1: from_hundredths(self.load1_x100),
            swap: self.swap,
            fs_pct: from_hundredths(self.fs_pct_x100),
            net_rx: self.net_rx,
            net_tx: self.net_tx,
            disk_read: self.disk_read,
            disk_write: self.disk_write,
            fs: self.fs.as_deref().map(decode_fs_aggs).unwrap_or_default(),
        }
    }
}

/// `a, b, c`: a row type's columns, for a `SELECT`.
pub(super) fn list(columns: &[String]) -> String {
    columns.join(", ")
}

/// `{verb} INTO {table} (a, b, c) VALUES (?1, ?2, ?3)`, for a row type's `bind`. Build it
/// once (a `LazyLock`), not per row.
pub(super) fn insert(verb: &str, table: &str, columns: &[String]) -> String {
    let values: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    format!(
        "{verb} INTO {table} ({}) VALUES ({})",
        list(columns),
        values.join(", ")
    )
}

/// A seq or timestamp as SQLite stores it (saturating).
pub(super) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored seq or timestamp back (a negative one, never written, reads as 0).
pub(super) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// `raw.cores`: one little-endian `u16` per core, in hundredths of a percent.
pub(super) fn encode_cores(per_core: &[f32]) -> Vec<u8> {
    per_core
        .iter()
        .flat_map(|v| ((v.clamp(0.0, 100.0) * 100.0).round() as u16).to_le_bytes())
        .collect()
}

fn decode_cores(blob: &[u8]) -> impl Iterator<Item = f64> + '_ {
    blob.chunks_exact(2)
        .map(|b| f64::from(u16::from_le_bytes([b[0], b[1]])) / 100.0)
}

/// Adds a `raw.cores` blob's first `limit` cores to `acc` (grown to fit, as [`Agg::merge`]
/// does), without building anything per row.
pub(super) fn merge_raw_cores(acc: &mut Vec<Option<MinMax>>, blob: &[u8], limit: usize) {
    let values = decode_cores(blob).take(limit);
    let n = (blob.len() / 2).min(limit);
    if acc.len() < n {
        acc.resize(n, None);
    }
    for (mine, v) in acc.iter_mut().zip(values) {
        *mine = MinMax::merge(*mine, Some(MinMax::one(v)));
    }
}

/// Adds a rollup's `cores` blob's first `limit` cores to `acc` (grown to fit).
pub(super) fn merge_core_aggs(acc: &mut Vec<Option<MinMax>>, blob: &[u8], limit: usize) {
    let n = (blob.len() / CORE_AGG_BYTES).min(limit);
    if acc.len() < n {
        acc.resize(n, None);
    }
    for (mine, c) in acc.iter_mut().zip(blob.chunks_exact(CORE_AGG_BYTES)) {
        *mine = MinMax::merge(*mine, core_agg(c));
    }
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
    blob.chunks_exact(CORE_AGG_BYTES).map(core_agg).collect()
}

/// One core's `u32 n, f32 sum, f32 min, f32 max` ([`CORE_AGG_BYTES`] bytes).
fn core_agg(c: &[u8]) -> Option<MinMax> {
    let f = |b: &[u8]| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let n = u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    (n > 0).then(|| MinMax {
        n,
        sum: f(&c[4..8]),
        min: f(&c[8..12]),
        max: f(&c[12..16]),
    })
}

/// A rollup in hundredths, rounded to whole numbers (sums and extremes of raw values in
/// hundredths are whole numbers; the rounding only undoes float error).
fn to_hundredths(m: Option<MinMax>) -> Option<MinMax> {
    let f = |v: f64| (v * 100.0).round();
    m.map(|m| MinMax {
        n: m.n,
        sum: f(m.sum),
        min: f(m.min),
        max: f(m.max),
    })
}

/// A rollup in hundredths back in plain units.
fn from_hundredths(m: Option<MinMax>) -> Option<MinMax> {
    m.map(|m| MinMax {
        n: m.n,
        sum: m.sum / 100.0,
        min: m.min / 100.0,
        max: m.max / 100.0,
    })
}

/// A value in hundredths, as stored (load, percentages).
fn hundredths(v: f64) -> i64 {
    rounded(v * 100.0)
}

/// A rate or reading rounded to a whole number (saturating; NaN is 0).
fn rounded(v: f64) -> i64 {
    // `as` saturates and maps NaN to 0; the values are finite and far below 2^63.
    v.round() as i64
}

/// The use of the fullest filesystem among `fs`, percent (`df`'s Use%).
fn fullest_pct(fs: &[Filesystem]) -> Option<f64> {
    fs.iter()
        .filter(|f| f.size_bytes > 0)
        .map(crate::snapshot::used_pct)
        .max_by(f64::total_cmp)
}

/// Bytes per filesystem in `raw.fs`: `u8 slot, u16 used hundredths of a percent, f32 used
/// bytes` (little-endian).
const FS_BYTES: usize = 7;

/// Appends filesystem `f`'s reading, in slot `slot`, to a `raw.fs` blob.
pub(super) fn push_fs(blob: &mut Vec<u8>, slot: u8, f: &Filesystem) {
    blob.push(slot);
    let pct = (crate::snapshot::used_pct(f).clamp(0.0, 100.0) * 100.0).round() as u16;
    blob.extend_from_slice(&pct.to_le_bytes());
    blob.extend_from_slice(&(f.used_bytes as f32).to_le_bytes());
}

/// A `raw.fs` blob's readings: `(slot, used percent, used bytes)`.
fn fs_readings(blob: &[u8]) -> impl Iterator<Item = (usize, f64, f64)> + '_ {
    blob.chunks_exact(FS_BYTES).map(|c| {
        let pct = f64::from(u16::from_le_bytes([c[1], c[2]])) / 100.0;
        let used = f64::from(f32::from_le_bytes([c[3], c[4], c[5], c[6]]));
        (usize::from(c[0]), pct, used)
    })
}

fn decode_fs(blob: &[u8]) -> Vec<Option<FsAgg>> {
    Agg::default().with_fs(fs_readings(blob)).fs
}

/// Adds a `raw.fs` blob's readings of the slots below `limit` to `acc` (grown to fit, as
/// [`Agg::merge`] does), without building anything per row.
pub(super) fn merge_raw_fs(acc: &mut Vec<Option<FsAgg>>, blob: &[u8], limit: usize) {
    for (slot, pct, bytes) in fs_readings(blob) {
        merge_fs_slot(acc, slot, limit, Some(FsAgg::one(pct, bytes)));
    }
}

/// Adds a rollup's `fs` blob's slots below `limit` to `acc` (grown to fit).
pub(super) fn merge_fs_aggs(acc: &mut Vec<Option<FsAgg>>, blob: &[u8], limit: usize) {
    for (slot, f) in fs_aggs(blob) {
        merge_fs_slot(acc, slot, limit, Some(f));
    }
}

fn merge_fs_slot(acc: &mut Vec<Option<FsAgg>>, slot: usize, limit: usize, f: Option<FsAgg>) {
    if slot >= limit {
        return;
    }
    if acc.len() <= slot {
        acc.resize(slot + 1, None);
    }
    acc[slot] = FsAgg::merge(acc[slot], f);
}

/// Bytes per filesystem in a rollup's `fs` blob: `u8 slot, u32 n`, then `f32 sum, min, max`
/// of the used percent and of the used bytes. Slots without readings are left out.
const FS_AGG_BYTES: usize = 29;

/// A rollup's `fs` blob (`None` when no sample had filesystems).
fn encode_fs_aggs(fs: &[Option<FsAgg>]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for (slot, f) in fs.iter().enumerate() {
        let (Some(f), Ok(slot)) = (f, u8::try_from(slot)) else {
            continue;
        };
        out.push(slot);
        out.extend_from_slice(
            &u32::try_from(f.used_pct.n)
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        for m in [f.used_pct, f.used_bytes] {
            for v in [m.sum, m.min, m.max] {
                out.extend_from_slice(&(v as f32).to_le_bytes());
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A rollup's `fs` blob's filesystems with readings: `(slot, aggregate)`.
fn fs_aggs(blob: &[u8]) -> impl Iterator<Item = (usize, FsAgg)> + '_ {
    let f = |b: &[u8]| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    blob.chunks_exact(FS_AGG_BYTES).filter_map(move |c| {
        let slot = usize::from(c[0]);
        let n = u64::from(u32::from_le_bytes([c[1], c[2], c[3], c[4]]));
        if n == 0 {
            return None;
        }
        let m = |at: usize| MinMax {
            n,
            sum: f(&c[at..at + 4]),
            min: f(&c[at + 4..at + 8]),
            max: f(&c[at + 8..at + 12]),
        };
        Some((
            slot,
            FsAgg {
                used_pct: m(5),
                used_bytes: m(17),
            },
        ))
    })
}

fn decode_fs_aggs(blob: &[u8]) -> Vec<Option<FsAgg>> {
    let mut out: Vec<Option<FsAgg>> = Vec::new();
    for (slot, f) in fs_aggs(blob) {
        if out.len() <= slot {
            out.resize(slot + 1, None);
        }
        out[slot] = Some(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    table_row! {
        /// A table of every kind of column.
        #[derive(Debug, Clone, PartialEq)]
        struct Probe {
            a: i64,
            q: Option<MinMax>,
            b: Option<f64>,
        }
    }

    /// The column list comes from the fields, in their order, a `MinMax` as four columns,
    /// and the generated INSERT has one placeholder per column.
    #[test]
    fn columns_and_statements_follow_the_struct() {
        assert_eq!(
            Probe::columns(),
            ["a", "q_n", "q_sum", "q_min", "q_max", "b"]
        );
        assert_eq!(
            insert("INSERT OR IGNORE", "t", Probe::columns()),
            "INSERT OR IGNORE INTO t (a, q_n, q_sum, q_min, q_max, b) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
        );
    }

    /// A rollup row written with the generated INSERT reads back equal from a table whose
    /// columns are in the reverse order (read by name); an absent quantity stays absent.
    #[test]
    fn rows_round_trip_by_column_name() {
        let conn = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        let reversed: Vec<&str> = RollupRow::columns()
            .iter()
            .rev()
            .map(String::as_str)
            .collect();
        conn.execute_batch(&format!("CREATE TABLE r ({});", reversed.join(", ")))
            .unwrap_or_else(|e| panic!("{e}"));
        let host = crate::server::series::HostValues {
            load1: Some(1.25),
            swap: Some(4096.0),
            fs_pct: Some(50.5),
            net_rx: Some(1000.0),
            ..Default::default()
        };
        let mut agg = Agg::sample(Some(12.5), None)
            .with_cores([1.0, 99.0])
            .with_host(host)
            .with_fs([(0, 10.5, 1024.0), (2, 99.0, 2048.0)]);
        agg.merge(
            &Agg::sample(Some(50.0), None)
                .with_cores([3.0])
                .with_fs([(2, 97.0, 512.0)]),
        );
        let row = RollupRow::of(7, 60_000, &agg);
        let mut stmt = conn
            .prepare(&insert("INSERT", "r", RollupRow::columns()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(row.execute(&mut stmt).ok(), Some(1));
        let back = conn
            .query_row("SELECT * FROM r", [], RollupRow::from_row)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, row);
        assert_eq!(
            back.agg(),
            agg,
            "cores and filesystems survive their blobs (values fit in f32)"
        );
        assert_eq!(back.mem, None);
        assert_eq!(back.disk_read, None);
        let fs = back.agg().fs;
        assert_eq!(fs.len(), 3);
        assert_eq!(fs[1], None, "a slot without readings stays empty");
        assert_eq!(
            fs[2].map(|f| (f.used_pct.n, f.used_pct.min, f.used_bytes.max)),
            Some((2, 97.0, 2048.0))
        );
    }

    /// A sample of an agent announcing 4,096 cores keeps per-core history for the first 256:
    /// 512 bytes in its raw row, and 4 KiB in a rollup row (not 8 and 64 KiB).
    #[test]
    fn per_core_history_is_kept_for_the_first_cores_only() {
        let m = Metrics {
            seq: 1,
            ts_ms: 1000,
            cpu: Some(crate::protocol::Cpu {
                total: 50.0,
                per_core: (0..4096).map(|i| (i % 100) as f32).collect(),
            }),
            memory: None,
            ..Metrics::default()
        };
        let row = SampleRow::of(1, 2, &m, &Rates::default(), None);
        assert_eq!(
            row.cores.as_ref().map(Vec::len),
            Some(2 * MAX_HISTORY_CORES)
        );
        let rollup = RollupRow::of(1, 0, &row.agg());
        assert_eq!(
            rollup.cores.as_ref().map(Vec::len),
            Some(CORE_AGG_BYTES * MAX_HISTORY_CORES)
        );
        assert_eq!(row.agg().cores[255].map(|c| c.sum), Some(55.0));
    }

    fn filesystem(mount: &str, size: u64, used: u64, avail: u64) -> Filesystem {
        Filesystem {
            mount: mount.into(),
            fs_type: "ext4".into(),
            device: "/dev/sda1".into(),
            size_bytes: size,
            used_bytes: used,
            avail_bytes: avail,
            inodes: 0,
            inodes_used: 0,
        }
    }

    /// A sample's row keeps its readings, per-core values to a hundredth of a percent, the
    /// load and the fullest filesystem in hundredths, swap in bytes, the Registry's rates
    /// rounded, and each filesystem's use by slot.
    #[test]
    fn a_sample_row_keeps_the_sample() {
        let m = Metrics {
            seq: 3,
            ts_ms: 1000,
            cpu: Some(crate::protocol::Cpu {
                total: 25.0,
                per_core: vec![12.344, 100.5],
            }),
            memory: None,
            load: Some(crate::protocol::Load {
                load1: 1.57,
                load5: 0.0,
                load15: 0.0,
                running: None,
                threads: None,
                procs: None,
            }),
            swap: Some(crate::protocol::Swap {
                total_bytes: 1 << 30,
                used_bytes: 12_345,
            }),
            // df's Use%: (size - avail) / size, so reserved blocks count as used.
            filesystems: Some(vec![
                filesystem("/", 1000, 400, 500),
                filesystem("/data", 2000, 1900, 50),
                filesystem("/empty", 0, 0, 0),
            ]),
            ..Metrics::default()
        };
        let rates = Rates {
            net_rx: Some(1234.6),
            net_tx: Some(0.4),
            disk_read: None,
            disk_write: Some(4096.0),
        };
        let mut blob = Vec::new();
        push_fs(&mut blob, 0, &m.filesystems.as_ref().unwrap()[0]);
        push_fs(&mut blob, 3, &m.filesystems.as_ref().unwrap()[1]);
        let row = SampleRow::of(1, 2, &m, &rates, Some(blob));
        assert_eq!(
            (row.load1_x100, row.swap, row.fs_pct_x100),
            (Some(157), Some(12_345), Some(9750))
        );
        assert_eq!(
            (row.net_rx, row.net_tx, row.disk_read, row.disk_write),
            (Some(1235), Some(0), None, Some(4096))
        );
        let agg = row.agg();
        assert_eq!(agg.load1.map(|l| l.max), Some(1.57));
        assert_eq!(agg.fs_pct.map(|l| l.min), Some(97.5));
        assert_eq!(
            agg.fs
                .iter()
                .map(|f| f.map(|f| (f.used_pct.sum, f.used_bytes.sum)))
                .collect::<Vec<_>>(),
            [Some((50.0, 400.0)), None, None, Some((97.5, 1900.0))]
        );
        let bare = SampleRow::of(1, 2, &Metrics::default(), &Rates::default(), None);
        assert_eq!(
            (bare.load1_x100, bare.fs_pct_x100, bare.fs),
            (None, None, None)
        );
        assert_eq!((row.agent, row.run, row.seq, row.ts_ms), (1, 2, 3, 1000));
        let agg = row.agg();
        assert_eq!(agg.cpu.map(|c| c.sum), Some(25.0));
        assert_eq!(
            agg.cores
                .iter()
                .map(|c| c.map(|c| c.sum))
                .collect::<Vec<_>>(),
            [Some(12.34), Some(100.0)]
        );
        assert_eq!(i64_of(u64::MAX), i64::MAX);
        assert_eq!(u64_of(-1), 0);
    }
}
