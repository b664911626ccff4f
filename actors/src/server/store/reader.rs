//! Read-only access for the HTTP API ([`Reader`]): a small pool of read-only connections, so
//! that requests do not wait for each other (WAL lets them read while the Store writes, and
//! they never block the Store).
//!
//! A history read is bounded in work and in memory by what it answers, not by how many rows
//! it covers: CPU, memory and the whole machine's single values (load, swap, the fullest
//! filesystem, network and disk rates) are aggregated per point by SQLite (`GROUP BY` the
//! point's start), and per-core and per-filesystem values are folded row by row straight
//! into the points, never collected. The answer itself is bounded: per-core series for at
//! most [`MAX_HISTORY_CORES`] cores, per-filesystem ones for at most
//! [`MAX_FS_HISTORY`](super::MAX_FS_HISTORY), and at most [`MAX_HISTORY_CELLS`] values
//! ([`HistoryQuery::values_per_point`]); a request for more gets a coarser step
//! ([`fit_step`]), which the answer names.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::error::{Result, StoreError};
use super::rows::{self, MINMAX_COLUMNS, MinMaxRow, MountRow, i64_of, u64_of};
use super::tier::{Retention, Tier, choose_tier};
use super::{DB_FILE, MAX_FS_HISTORY, StoreConfig};
use crate::server::series::{Agg, Bucket, FsAgg, MinMax, bucket_start};

/// Idle read connections kept open for the next requests (the HTTP side also runs at most
/// this many history requests at once; a connection beyond it is opened, used and closed).
pub const READ_CONNECTIONS: usize = 4;
/// Per-core history is answered (and, see `rows::encode_cores`, kept) for at most this many
/// cores per agent: the first ones. A 4,096-core announcement costs what 256 cores do.
pub const MAX_HISTORY_CORES: usize = 256;
/// Most values one history answer holds: points × [`HistoryQuery::values_per_point`] (1 +
/// per-core series by default). Beyond it the step is made coarser ([`fit_step`]). About 40
/// bytes of JSON each, so an answer stays under a few MB: 400 points of a 64-core machine fit
/// (25,600); 256 cores get about 190 points.
pub const MAX_HISTORY_CELLS: u64 = 50_000;

/// What one history read asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    pub from_ms: u64,
    pub to_ms: u64,
    /// The step asked for; the answer may use a coarser one ([`Series::step_ms`]).
    pub step_ms: u64,
    /// The server's clock (which tiers still hold `from_ms`).
    pub now_ms: u64,
    /// Answer per-core series (up to [`MAX_HISTORY_CORES`]).
    pub cores: bool,
    /// Answer per-filesystem series (up to [`MAX_FS_HISTORY`](super::MAX_FS_HISTORY)).
    pub fs: bool,
    /// Values a point holds besides its per-core and per-filesystem ones: 1 for CPU and
    /// memory together, and one per further single series asked for (see
    /// `selection::Selection::point_values`); at least 1. Each core counts one more value,
    /// each filesystem two (percent and bytes).
    pub point_values: u64,
}

impl HistoryQuery {
    /// Every series: CPU, memory, each core, the whole machine (load, swap, the fullest
    /// filesystem, network received and sent, disk read and written) and each filesystem.
    pub fn everything(from_ms: u64, to_ms: u64, step_ms: u64, now_ms: u64) -> Self {
        HistoryQuery {
            from_ms,
            to_ms,
            step_ms,
            now_ms,
            cores: true,
            fs: true,
            point_values: 1 + 7,
        }
    }

    /// Values per point of an agent with `cores` per-core and `fs` per-filesystem series
    /// shown.
    pub fn values_per_point(&self, cores: usize, fs: usize) -> u64 {
        let n = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        self.point_values
            .max(1)
            .saturating_add(n(cores))
            .saturating_add(n(fs).saturating_mul(2))
    }
}

/// An agent's series from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub tier: Tier,
    /// The step of the points: the one asked for, or a coarser one when that would have held
    /// more than [`MAX_HISTORY_CELLS`] values.
    pub step_ms: u64,
    pub points: Vec<Bucket>,
    /// Cores of the agent left out of the per-core series (beyond [`MAX_HISTORY_CORES`]).
    pub cores_omitted: u32,
    /// The mount points of the agent's filesystems with a history: a point's `fs[i]` is
    /// `filesystems[i]`'s.
    pub filesystems: Vec<String>,
}

/// See the module documentation.
pub struct Reader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    retention: Retention,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("path", &self.path)
            .field("retention", &self.retention)
            .finish()
    }
}

/// A connection taken from the pool; it goes back (if the pool has room) when dropped.
struct Pooled<'a> {
    conn: Option<Connection>,
    reader: &'a Reader,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        // Set from creation until drop.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self
                .reader
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if idle.len() < READ_CONNECTIONS {
                idle.push(conn);
            }
        }
    }
}

/// CPU, memory and the whole machine's single values per point ([`MINMAX_COLUMNS`]),
/// aggregated by SQLite (`?4` is the step): the raw tier is `raw` and the last seconds still
/// in `raw_log` (skipping a repeat of a sample already in `raw`). `total()` never overflows
/// (memory in bytes).
static RAW_POINTS: LazyLock<String> = LazyLock::new(|| {
    let aggs: Vec<String> = MINMAX_COLUMNS
        .iter()
        .map(|c| {
            format!("count({c}) AS {c}_n, total({c}) AS {c}_sum, min({c}) AS {c}_min, max({c}) AS {c}_max")
        })
        .collect();
    format!(
        "SELECT (ts_ms / ?4) * ?4 AS ts_ms, count(*) AS n, {}
         FROM ({}) GROUP BY 1 ORDER BY 1",
        aggs.join(",\n           "),
        raw_range(&format!("ts_ms, {}", MINMAX_COLUMNS.join(", ")))
    )
});

/// Per-core and per-filesystem values of the raw tier, row by row.
static RAW_BLOBS: LazyLock<String> = LazyLock::new(|| raw_range("ts_ms, cores, fs"));

/// The raw tier's rows in `[?2, ?3)` of agent `?1`, with `columns`.
fn raw_range(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM raw
         WHERE agent = ?1 AND ts_ms >= ?2 AND ts_ms < ?3
         UNION ALL
         SELECT {columns} FROM raw_log AS l
         WHERE agent = ?1 AND ts_ms >= ?2 AND ts_ms < ?3
           AND NOT EXISTS (SELECT 1 FROM raw WHERE run = l.run AND seq = l.seq)"
    )
}

/// The statements of one rollup tier: its points (as [`RAW_POINTS`]) and its per-core and
/// per-filesystem rows.
struct RollupSql {
    points: String,
    blobs: String,
}

static ROLLUP_SQL: LazyLock<HashMap<Tier, RollupSql>> = LazyLock::new(|| {
    Tier::ROLLUPS
        .iter()
        .map(|&tier| {
            let table = tier.table();
            let range = "WHERE agent = ?1 AND ts_ms >= ?2 AND ts_ms < ?3";
            let aggs: Vec<String> = MINMAX_COLUMNS
                .iter()
                .map(|c| {
                    format!(
                        "sum({c}_n) AS {c}_n, total({c}_sum) AS {c}_sum, \
                         min({c}_min) AS {c}_min, max({c}_max) AS {c}_max"
                    )
                })
                .collect();
            let sql = RollupSql {
                points: format!(
                    "SELECT (ts_ms / ?4) * ?4 AS ts_ms, sum(n) AS n, {}
                     FROM {table} {range} GROUP BY 1 ORDER BY 1",
                    aggs.join(",\n                       ")
                ),
                blobs: format!("SELECT ts_ms, cores, fs FROM {table} {range}"),
            };
            (tier, sql)
        })
        .collect()
});

/// The step for `[from_ms, to_ms)` that keeps an answer of `per_point` values per point
/// within [`MAX_HISTORY_CELLS`]: `step_ms` if it fits, else the smallest step that does
/// (whole seconds from a second up). Counts the partial points at both ends.
pub fn fit_step(from_ms: u64, to_ms: u64, step_ms: u64, per_point: u64) -> u64 {
    let per_point = per_point.max(1);
    let span = to_ms.saturating_sub(from_ms);
    let step = step_ms.max(1);
    let points = |step: u64| span / step + 2;
    if points(step).saturating_mul(per_point) <= MAX_HISTORY_CELLS {
        return step;
    }
    let max_points = (MAX_HISTORY_CELLS / per_point).saturating_sub(2).max(1);
    let mut fitted = span.div_ceil(max_points).max(step);
    if fitted >= 1000 {
        fitted = fitted.div_ceil(1000) * 1000;
    }
    fitted
}

/// `agent`'s filesystems with a history, by slot (a slot never written reads as "").
fn mounts(conn: &Connection, agent: i64) -> Result<Vec<String>> {
    let mut q = conn.prepare_cached(&MOUNTS)?;
    let mut out: Vec<String> = Vec::new();
    for row in q.query_map([agent], MountRow::from_row)? {
        let row = row?;
        let Ok(slot) = usize::try_from(row.slot) else {
            continue;
        };
        if slot < MAX_FS_HISTORY {
            if out.len() <= slot {
                out.resize(slot + 1, String::new());
            }
            out[slot] = row.mount;
        }
    }
    Ok(out)
}

/// An agent's filesystems with a history.
static MOUNTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM mounts WHERE agent = ?1 ORDER BY slot",
        rows::list(MountRow::columns())
    )
});

impl Reader {
    /// Opens the database in `config.data_dir` read-only (after [`super::Store::open`]
    /// created it); one connection now, so that a problem shows at startup.
    pub fn open(config: &StoreConfig) -> Result<Reader> {
        let reader = Reader {
            path: config.data_dir.join(DB_FILE),
            idle: Mutex::new(Vec::new()),
            retention: config.retention,
        };
        let first = reader.connect()?;
        reader
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(first);
        Ok(reader)
    }

    fn connect(&self) -> Result<Connection> {
        Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| {
            c.busy_timeout(Duration::from_secs(5))?;
            Ok(c)
        })
        .map_err(|error| StoreError::Open {
            path: self.path.clone(),
            error,
        })
    }

    /// A connection of the pool, or a new one when every pooled one is in use.
    fn get(&self) -> Result<Pooled<'_>> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(c) => c,
            None => self.connect()?,
        };
        Ok(Pooled {
            conn: Some(conn),
            reader: self,
        })
    }

    /// `agent_id`'s series over `[from_ms, to_ms)` in steps of (at least) `step_ms`, with
    /// every series ([`HistoryQuery::everything`]); `None` if the store has never seen the
    /// agent. See [`Reader::read`].
    pub fn history(
        &self,
        agent_id: &str,
        from_ms: u64,
        to_ms: u64,
        step_ms: u64,
        now_ms: u64,
    ) -> Result<Option<Series>> {
        self.read(
            agent_id,
            &HistoryQuery::everything(from_ms, to_ms, step_ms, now_ms),
        )
    }

    /// `agent_id`'s series for `q`, from the tier [`choose_tier`] picks for the step
    /// [`fit_step`] allows; `None` if the store has never seen the agent.
    pub fn read(&self, agent_id: &str, q: &HistoryQuery) -> Result<Option<Series>> {
        let conn = self.get()?;
        let agent: Option<(i64, Option<i64>)> = conn
            .query_row(
                "SELECT key, json_extract(hello, '$.cores') AS cores FROM agents WHERE id = ?1",
                [agent_id],
                |r| Ok((r.get("key")?, r.get("cores").ok().flatten())),
            )
            .optional()?;
        let Some((agent, cores)) = agent else {
            return Ok(None);
        };
        let cores = usize::try_from(cores.unwrap_or(0)).unwrap_or(0);
        let shown = if q.cores {
            cores.min(MAX_HISTORY_CORES)
        } else {
            0
        };
        let cores_omitted = if q.cores {
            u32::try_from(cores - shown).unwrap_or(u32::MAX)
        } else {
            0
        };
        let filesystems = mounts(&conn, agent)?;
        let fs_shown = if q.fs { filesystems.len() } else { 0 };
        let per_point = q.values_per_point(shown, fs_shown);
        let step = fit_step(q.from_ms, q.to_ms, q.step_ms, per_point);
        let tier = choose_tier(q.from_ms, step, q.now_ms, &self.retention);
        type Fold = fn(&mut Vec<Option<MinMax>>, &[u8], usize);
        type FoldFs = fn(&mut Vec<Option<FsAgg>>, &[u8], usize);
        let (points_sql, blobs_sql, fold, fold_fs): (&str, &str, Fold, FoldFs) =
            if tier == Tier::Raw {
                (
                    &RAW_POINTS,
                    &RAW_BLOBS,
                    rows::merge_raw_cores,
                    rows::merge_raw_fs,
                )
            } else {
                let sql = ROLLUP_SQL.get(&tier).ok_or(rusqlite::Error::InvalidQuery)?;
                (
                    &sql.points,
                    &sql.blobs,
                    rows::merge_core_aggs,
                    rows::merge_fs_aggs,
                )
            };
        let (from, to) = (i64_of(q.from_ms), i64_of(q.to_ms));
        let mut aggs: Vec<(u64, Agg)> = conn
            .prepare_cached(points_sql)?
            .query_map(params![agent, from, to, i64_of(step)], |r| {
                let row = MinMaxRow::from_row(r)?;
                Ok((u64_of(row.ts_ms), row.agg()))
            })?
            .collect::<rusqlite::Result<_>>()?;
        if (shown > 0 || fs_shown > 0) && !aggs.is_empty() {
            // Each row's blobs go straight into its point: nothing per row is kept.
            let at: HashMap<u64, usize> = aggs
                .iter()
                .enumerate()
                .map(|(i, (ts, _))| (*ts, i))
                .collect();
            let mut stmt = conn.prepare_cached(blobs_sql)?;
            let mut rows = stmt.query(params![agent, from, to])?;
            while let Some(r) = rows.next()? {
                let ts = u64_of(r.get("ts_ms")?);
                let Some(&i) = at.get(&bucket_start(ts, step)) else {
                    continue;
                };
                if shown > 0
                    && let ValueRef::Blob(blob) = r.get_ref("cores")?
                {
                    fold(&mut aggs[i].1.cores, blob, shown);
                }
                if fs_shown > 0
                    && let ValueRef::Blob(blob) = r.get_ref("fs")?
                {
                    fold_fs(&mut aggs[i].1.fs, blob, fs_shown);
                }
            }
        }
        Ok(Some(Series {
            tier,
            step_ms: step,
            points: aggs.into_iter().map(|(ts, a)| a.bucket(ts)).collect(),
            cores_omitted,
            filesystems,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Rates;
    use super::super::testkit::*;
    use super::super::{Append, Attach, Moves, Op, Store};
    use super::*;
    use crate::protocol::{Cpu, Load, Memory, Metrics, Swap};
    use crate::server::series::rebucket;

    const H: u64 = 3_600_000;

    /// A step is kept while the answer fits in MAX_HISTORY_CELLS values, else made just
    /// coarse enough (whole seconds from a second up), counting partial points at the ends.
    #[test]
    fn fit_step_keeps_answers_within_the_cell_cap() {
        assert_eq!(fit_step(0, H, 12_000, 1), 12_000, "300 points, no cores");
        assert_eq!(
            fit_step(0, H, 9_000, 65),
            9_000,
            "400 points of 64 cores fit"
        );
        let wide = fit_step(0, 5_000, 1, 257);
        assert!(wide > 1);
        assert!((5_000 / wide + 2) * 257 <= MAX_HISTORY_CELLS, "{wide}");
        let day = fit_step(0, 24 * H, 1_000, 257);
        assert_eq!(day % 1000, 0, "whole seconds: {day}");
        assert!((24 * H / day + 2) * 257 <= MAX_HISTORY_CELLS, "{day}");
        assert_eq!(fit_step(10, 10, 0, 9), 1, "an empty range and a zero step");
    }

    /// An agent announcing 4,096 cores: a read at one point per sample answers per-core
    /// series for MAX_HISTORY_CORES cores only, at a coarser step, within MAX_HISTORY_CELLS
    /// values, and says how many cores it left out.
    #[test]
    fn a_wide_agent_is_answered_within_the_caps() {
        let (dir, config) = temp_config("wide", Retention::default());
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        let cores = 4096;
        let mut h = hello("r1");
        h.cores = cores;
        store.batch.push(Op::Attach(Attach {
            hello: h,
            ip: "127.0.0.1".into(),
        }));
        let now = 10 * H;
        for seq in 1..=300u64 {
            store.batch.push(Op::Append(Append {
                agent_id: "a1".into(),
                run_id: "r1".into(),
                metrics: Metrics {
                    seq,
                    ts_ms: now + seq,
                    cpu: Some(Cpu {
                        total: 50.0,
                        per_core: vec![25.0; cores as usize],
                    }),
                    memory: None,
                    ..Metrics::default()
                },
                rates: Rates::default(),
            }));
        }
        store.commit(Moves::All).unwrap_or_else(|e| panic!("{e}"));
        let reader = Reader::open(&config).unwrap_or_else(|e| panic!("{e}"));
        let s = reader
            .history("a1", now, now + 301, 1, now + 1000)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("agent missing"));
        assert!(s.step_ms > 1, "coarser than asked: {}", s.step_ms);
        assert_eq!(s.cores_omitted, cores - MAX_HISTORY_CORES as u32);
        let cells: usize = s.points.iter().map(|p| 1 + p.cores.len()).sum();
        assert!(cells as u64 <= MAX_HISTORY_CELLS, "{cells} values");
        assert!(s.points.iter().all(|p| p.cores.len() == MAX_HISTORY_CORES));
        assert_eq!(s.points.iter().map(|p| p.n).sum::<u64>(), 300);
        assert_eq!(s.points[0].cores[0].map(|c| c.avg), Some(25.0));
        let none = reader
            .read(
                "a1",
                &HistoryQuery {
                    from_ms: now,
                    to_ms: now + 301,
                    step_ms: 1,
                    now_ms: now + 1000,
                    cores: false,
                    fs: false,
                    point_values: 1,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("agent missing"));
        assert_eq!(
            (none.step_ms, none.points.len()),
            (1, 300),
            "no cores: as asked"
        );
        assert!(none.points.iter().all(|p| p.cores.is_empty()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The value cap counts every series asked for: 5,000 samples of the whole machine (2
    /// cores, 2 filesystems) at one point per sample fit as CPU, memory and cores (3 values
    /// a point), but not with every series (8 + 2 + 2 x 2 = 14 a point): that answer gets a
    /// coarser step, within MAX_HISTORY_CELLS values; the filesystems alone tip it over.
    #[test]
    fn the_value_cap_counts_every_series_asked_for() {
        let (dir, config) = temp_config("cap-series", Retention::default());
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        attach_a1(&mut store, "r1");
        let now = 10 * H;
        for seq in 1..=5_000u64 {
            append_host(&mut store, "r1", seq, now + seq, seq % 1000);
        }
        store.commit(Moves::All).unwrap_or_else(|e| panic!("{e}"));
        let reader = Reader::open(&config).unwrap_or_else(|e| panic!("{e}"));
        let (from, to) = (now, now + 5_001);
        let q = |cores, fs, point_values| HistoryQuery {
            from_ms: from,
            to_ms: to,
            step_ms: 1,
            now_ms: now + 10_000,
            cores,
            fs,
            point_values,
        };
        let read = |q: &HistoryQuery| {
            reader
                .read("a1", q)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("agent missing"))
        };
        let default = read(&q(true, false, 1));
        assert_eq!((default.step_ms, default.points.len()), (1, 5_000));
        assert!(default.points.iter().all(|p| p.fs.is_empty()));
        let all = HistoryQuery::everything(from, to, 1, now + 10_000);
        assert_eq!(all.values_per_point(2, 2), 14);
        let every = read(&all);
        assert!(every.step_ms > 1, "coarser than asked: {}", every.step_ms);
        let values: usize = every
            .points
            .iter()
            .map(|p| 8 + p.cores.len() + 2 * p.fs.len())
            .sum();
        assert!(values as u64 <= MAX_HISTORY_CELLS, "{values} values");
        assert!(
            every
                .points
                .iter()
                .all(|p| p.fs.len() == 2 && p.load1.is_some())
        );
        assert_eq!(every.points.iter().map(|p| p.n).sum::<u64>(), 5_000);
        // Without cores: every single series fits (8 a point), not with the filesystems (12).
        assert_eq!(read(&q(false, false, 8)).step_ms, 1);
        assert!(read(&q(false, true, 8)).step_ms > 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The points SQLite aggregates (raw, the part still in raw_log, and each rollup tier)
    /// are those the Rust aggregation gives for the same rows: counts, avg/min/max of CPU and
    /// memory (a sample may lack either), and per core.
    #[test]
    fn sql_points_equal_the_rust_aggregation() {
        let (dir, config) = temp_config("sql-points", Retention::default());
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        attach_a1(&mut store, "r1");
        let start = 10 * H;
        let sample = |seq: u64| Metrics {
            seq,
            ts_ms: start + seq * 7_000,
            cpu: (!seq.is_multiple_of(5)).then(|| Cpu {
                total: (seq % 100) as f32,
                per_core: vec![(seq % 10) as f32, 50.0 + (seq % 3) as f32],
            }),
            memory: (!seq.is_multiple_of(7)).then_some(Memory {
                total: 1 << 40,
                used: (1 << 33) + seq * 1024,
                free: 0,
                available: None,
            }),
            // The whole machine in most samples, in values exact in hundredths and in f32
            // (so sums in SQL and in Rust agree to the bit).
            load: (!seq.is_multiple_of(4)).then_some(Load {
                load1: (seq % 40) as f32 / 4.0,
                load5: 0.0,
                load15: 0.0,
                running: None,
                threads: None,
                procs: None,
            }),
            swap: (!seq.is_multiple_of(6)).then_some(Swap {
                total_bytes: 1 << 30,
                used_bytes: seq * 4096,
            }),
            filesystems: (!seq.is_multiple_of(9)).then(|| {
                vec![
                    filesystem("/", seq % 40 * 25),
                    filesystem("/data", 1000 - seq % 8 * 125),
                ]
            }),
            ..Metrics::default()
        };
        let rates = |seq: u64| {
            let r = (!seq.is_multiple_of(3)).then_some((seq * 1000) as f64);
            Rates {
                net_rx: r,
                net_tx: r.map(|v| v / 2.0),
                disk_read: r.map(|v| v * 3.0),
                disk_write: (!seq.is_multiple_of(11)).then_some(seq as f64),
            }
        };
        let samples: Vec<Metrics> = (1..=600).map(sample).collect();
        let queue = |store: &mut Store, ms: &[Metrics]| {
            for m in ms {
                store.batch.push(Op::Append(Append {
                    agent_id: "a1".into(),
                    run_id: "r1".into(),
                    metrics: m.clone(),
                    rates: rates(m.seq),
                }));
            }
        };
        queue(&mut store, &samples[..550]);
        store.commit(Moves::All).unwrap_or_else(|e| panic!("{e}"));
        // The last 50 stay in raw_log (logged, not moved).
        queue(&mut store, &samples[550..]);
        store.commit(Moves::Due).unwrap_or_else(|e| panic!("{e}"));
        // Each sample as its raw row holds it (`/` in slot 0, `/data` in slot 1: first seen).
        let rows: Vec<(u64, Agg)> = samples
            .iter()
            .map(|m| {
                let fs = m.filesystems.as_ref().map(|list| {
                    let mut blob = Vec::new();
                    for (slot, f) in list.iter().enumerate() {
                        rows::push_fs(&mut blob, slot as u8, f);
                    }
                    blob
                });
                let row = rows::SampleRow::of(1, 1, m, &rates(m.seq), fs);
                (m.ts_ms, row.agg())
            })
            .collect();

        let reader = Reader::open(&config).unwrap_or_else(|e| panic!("{e}"));
        let (from, to) = (start, start + 600 * 7_000 + 1);
        let raw = reader
            .history("a1", from, to, 30_000, from + H)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("agent missing"));
        assert_eq!(raw.tier, Tier::Raw);
        assert_eq!(raw.points, rebucket(rows.clone(), from, to, 30_000));
        assert_eq!(raw.filesystems, ["/", "/data"]);
        let whole = raw
            .points
            .iter()
            .filter(|p| p.load1.is_some() && p.net_rx_bytes_per_s.is_some() && p.fs.len() == 2)
            .count();
        assert!(whole > 100, "{whole} of {} points", raw.points.len());
        // Coarser steps come from the rollup tiers (moved rows only: the first 550).
        let moved = || rows[..550].iter().cloned();
        for (step, tier) in [(600_000, Tier::Min10), (3_600_000, Tier::Hour1)] {
            let s = reader
                .history("a1", from, to, step, from + H)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("agent missing"));
            assert_eq!(s.tier, tier);
            // Rollup rows start at their bucket: compare against the same bucketing.
            let expected = rebucket(
                moved().map(|(ts, a)| (ts / 60_000 * 60_000, a)),
                from,
                to,
                step,
            );
            assert_eq!(s.points.len(), expected.len());
            for (got, want) in s.points.iter().zip(&expected) {
                assert_eq!((got.ts_ms, got.n), (want.ts_ms, want.n));
                assert_eq!(got.cpu, want.cpu);
                assert_eq!(got.mem_used, want.mem_used);
                assert_eq!(got.cores, want.cores, "per core (values fit in f32)");
                assert_eq!(got, want, "the whole machine too");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Reads do not wait for each other: with a connection in use (a request in progress), a
    /// read still completes on another; the pool keeps at most READ_CONNECTIONS idle.
    #[test]
    fn reads_use_a_pool_of_connections() {
        let (dir, config) = temp_config("pool", Retention::default());
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        attach_a1(&mut store, "r1");
        append(&mut store, "r1", 1..=3, 10 * H);
        store.commit(Moves::All).unwrap_or_else(|e| panic!("{e}"));
        let reader = Reader::open(&config).unwrap_or_else(|e| panic!("{e}"));
        let busy: Vec<_> = (0..READ_CONNECTIONS + 2)
            .map(|_| reader.get().unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let s = reader
            .history("a1", 10 * H, 11 * H, 1000, 11 * H)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("agent missing"));
        assert_eq!(s.points.len(), 3);
        drop(busy);
        let idle = reader.idle.lock().map(|i| i.len()).unwrap_or(0);
        assert_eq!(idle, READ_CONNECTIONS);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
