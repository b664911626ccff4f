//! Moving logged samples into `raw` and the rollups.
//!
//! A sample is durable once it is in `raw_log`. Each agent's logged samples wait in the
//! [`Backlog`] (as a [`Pending`]) until they are due — [`ROLLUP_DELAY`] after the first of
//! them, or once there are [`MOVE_ROWS`] — and then move in one go: into `raw` (a sample
//! already there, a replay, is skipped by its unique `(run, seq)`), into the 1 min / 10 min /
//! 1 h rollups ([`merge_rollup`]: each bucket's row absorbs the new samples' [`Agg`]), and the
//! agent's row gets its last-known sample. [`repair`] does the same at open with whatever a
//! crash left in `raw_log`.
//!
//! Which agents move in a transaction is planned by [`super::commit::Commit`]; this module
//! does the moving, and keeps the backlog in step once the transaction has committed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, Transaction, named_params, params};

use super::error::Result;
use super::rows::{self, RollupRow, SampleRow, i64_of, u64_of};
use super::tier::Tier;
use crate::protocol::Metrics;
use crate::server::series::{Agg, bucket_start};

/// How long an agent's samples stay in `raw_log` before they move into `raw` and the rollups.
/// Longer amortises more page writes per agent; it bounds how far the rollup tiers lag, the
/// memory the store keeps per agent, and what [`super::Store::open`] moves after a crash.
pub const ROLLUP_DELAY: Duration = Duration::from_secs(10);
/// An agent with this many samples logged moves them without waiting for [`ROLLUP_DELAY`]
/// (a fast sender: bounds the store's memory per agent and the size of one move).
pub const MOVE_ROWS: usize = 64;
/// Most samples moved into `raw` in one transaction (beyond what the batch itself brings),
/// so that moving never delays a commit, and so an acknowledgement, by much.
pub const MOVE_BUDGET: usize = 512;

/// The newest sample of one agent run not yet in the agent's row.
#[derive(Debug, Clone)]
pub(super) struct Latest {
    pub run: i64,
    pub seq: u64,
    pub metrics: Metrics,
}

/// One agent's samples that are in `raw_log` (durable) but not yet in `raw` and the rollups.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    /// When the first of them was logged (they move [`ROLLUP_DELAY`] later).
    pub since: Instant,
    /// Rowid in `raw_log` of the first of them.
    pub first_log: i64,
    pub rows: Vec<SampleRow>,
    pub latest: Option<Latest>,
}

impl Pending {
    pub(super) fn new(since: Instant, first_log: i64) -> Self {
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

    /// Moves these samples into `raw` (a sample already there is skipped) and adds those to
    /// the rollups; records the agent's last-known state.
    fn move_into_raw(&self, tx: &Transaction<'_>, agent: i64) -> Result<()> {
        let mut rollups: HashMap<(Tier, u64), Agg> = HashMap::new();
        {
            let mut insert = tx.prepare_cached(&RAW_INSERT)?;
            for row in &self.rows {
                let inserted = row.execute(&mut insert)? == 1;
                if inserted {
                    let agg = row.agg();
                    let ts = u64_of(row.ts_ms);
                    for tier in Tier::ROLLUPS {
                        rollups
                            .entry((tier, bucket_start(ts, tier.bucket_ms())))
                            .or_default()
                            .merge(&agg);
                    }
                }
            }
        }
        for ((tier, ts), agg) in &rollups {
            merge_rollup(tx, *tier, agent, *ts, agg)?;
        }
        if let Some(l) = &self.latest {
            let latest = serde_json::to_string(&l.metrics)?;
            tx.prepare_cached(
                "UPDATE agents SET latest = CASE WHEN :seq > last_seq THEN :latest ELSE latest END,
                                   last_seq = max(last_seq, :seq)
                 WHERE key = :agent AND run_key = :run",
            )?
            .execute(named_params! {
                ":agent": agent,
                ":run": l.run,
                ":seq": i64_of(l.seq),
                ":latest": latest,
            })?;
        }
        Ok(())
    }
}

/// Every agent's pending samples, and the order in which they became pending.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    /// Per agent key: samples logged, not yet moved into `raw` and the rollups.
    pending: HashMap<i64, Pending>,
    /// Agent keys in the order they became pending (entries may be stale).
    order: VecDeque<(Instant, i64)>,
}

impl Backlog {
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// How many agents have samples waiting.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether some agent's samples are due to move.
    pub(super) fn due(&self) -> bool {
        self.order
            .front()
            .is_some_and(|(since, _)| since.elapsed() >= ROLLUP_DELAY)
    }

    /// Every agent with pending samples.
    pub(super) fn agents(&self) -> HashSet<i64> {
        self.pending.keys().copied().collect()
    }

    /// The agents whose samples have waited [`ROLLUP_DELAY`] at `now`, oldest first, as many
    /// as fit in [`MOVE_BUDGET`] samples.
    pub(super) fn due_within_budget(&self, now: Instant) -> HashSet<i64> {
        let mut budget = MOVE_BUDGET;
        self.order
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
    }

    /// The agents of `added` that it takes to [`MOVE_ROWS`] samples or more.
    pub(super) fn full<'a>(
        &'a self,
        added: &'a HashMap<i64, Pending>,
    ) -> impl Iterator<Item = i64> + 'a {
        let rows = |k: &i64| self.pending.get(k).map_or(0, |p| p.rows.len());
        added
            .iter()
            .filter(move |(k, more)| rows(k) + more.rows.len() >= MOVE_ROWS)
            .map(|(k, _)| *k)
    }

    /// Moves `agent`'s pending samples and `more` (what this transaction logged for it).
    pub(super) fn move_agent(
        &self,
        tx: &Transaction<'_>,
        agent: i64,
        more: Option<Pending>,
    ) -> Result<()> {
        match (self.pending.get(&agent), more) {
            (Some(p), Some(more)) => {
                let mut whole = p.clone();
                whole.absorb(more);
                whole.move_into_raw(tx, agent)
            }
            (Some(p), None) => p.move_into_raw(tx, agent),
            (None, Some(more)) => more.move_into_raw(tx, agent),
            (None, None) => Ok(()),
        }
    }

    /// The first `raw_log` rowid still needed once `moving` has moved: the oldest of what
    /// stays pending and of what was just logged (`added`, without the moving agents).
    /// Computed from what is pending, never remembered: rowids restart at 1 once the table is
    /// empty.
    pub(super) fn keep_from(&self, moving: &HashSet<i64>, added: &HashMap<i64, Pending>) -> i64 {
        self.pending
            .iter()
            .filter(|(k, _)| !moving.contains(k))
            .map(|(_, p)| p.first_log)
            .chain(added.values().map(|p| p.first_log))
            .min()
            .unwrap_or(i64::MAX)
    }

    /// After the commit: `moved` are no longer pending, `added` (what was logged and did not
    /// move) is.
    pub(super) fn settle(&mut self, moved: &HashSet<i64>, added: HashMap<i64, Pending>) {
        for agent in moved {
            self.pending.remove(agent);
        }
        while self
            .order
            .front()
            .is_some_and(|(since, k)| self.pending.get(k).is_none_or(|p| p.since != *since))
        {
            self.order.pop_front();
        }
        for (agent, more) in added {
            match self.pending.get_mut(&agent) {
                Some(p) => p.absorb(more),
                None => {
                    self.order.push_back((more.since, agent));
                    self.pending.insert(agent, more);
                }
            }
        }
    }
}

static RAW_INSERT: LazyLock<String> =
    LazyLock::new(|| rows::insert("INSERT OR IGNORE", "raw", SampleRow::columns()));

/// The statements of one rollup table.
struct RollupSql {
    select: String,
    upsert: String,
}

static ROLLUP_SQL: LazyLock<HashMap<Tier, RollupSql>> = LazyLock::new(|| {
    Tier::ROLLUPS
        .iter()
        .map(|&tier| {
            let table = tier.table();
            let sql = RollupSql {
                select: format!(
                    "SELECT {} FROM {table} WHERE agent = ?1 AND ts_ms = ?2",
                    rows::list(RollupRow::columns())
                ),
                upsert: rows::insert("INSERT OR REPLACE", table, RollupRow::columns()),
            };
            (tier, sql)
        })
        .collect()
});

/// Adds `agg` to the rollup row `(agent, ts)` of `tier`.
fn merge_rollup(tx: &Transaction<'_>, tier: Tier, agent: i64, ts: u64, agg: &Agg) -> Result<()> {
    let sql = ROLLUP_SQL.get(&tier).ok_or(rusqlite::Error::InvalidQuery)?;
    let old = tx
        .prepare_cached(&sql.select)?
        .query_row(params![agent, i64_of(ts)], RollupRow::from_row)
        .optional()?;
    let mut total = old.map(|r| r.agg()).unwrap_or_default();
    total.merge(agg);
    let mut upsert = tx.prepare_cached(&sql.upsert)?;
    RollupRow::of(agent, ts, &total).execute(&mut upsert)?;
    Ok(())
}

/// Moves every row a crash left in `raw_log` into `raw` and the rollups (each once: a row
/// already in `raw` is skipped); returns how many rows that was.
pub(super) fn repair(conn: &mut Connection) -> Result<usize> {
    let tx = conn.transaction()?;
    let mut left: HashMap<i64, Pending> = HashMap::new();
    {
        let mut q = tx.prepare(&format!(
            "SELECT {} FROM raw_log ORDER BY rowid",
            rows::list(SampleRow::columns())
        ))?;
        let mut rows = q.query([])?;
        while let Some(r) = rows.next()? {
            let row = SampleRow::from_row(r)?;
            left.entry(row.agent)
                .or_insert_with(|| Pending::new(Instant::now(), 0))
                .rows
                .push(row);
        }
    }
    let mut n = 0;
    for (agent, p) in &left {
        n += p.rows.len();
        p.move_into_raw(&tx, *agent)?;
    }
    tx.execute("DELETE FROM raw_log", [])?;
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{Moves, Reader, Retention, Store, Tier};
    use crate::server::series::Stat;

    const H: u64 = 3_600_000;

    /// A crash (the store dropped with samples only in raw_log) loses nothing: the next open
    /// moves them into raw and the rollups, each once.
    #[test]
    fn rollups_survive_a_crash_exactly_once() {
        let (dir, config) = temp_config("crash", Retention::default());
        let now = 10 * H;
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        attach_a1(&mut store, "r1");
        append(&mut store, "r1", 1..=3, now);
        commit_all(&mut store);
        // 3 again (a replay) and 4..=6: logged, not yet moved into raw and the rollups.
        append(&mut store, "r1", 3..=6, now);
        store.commit(Moves::Due).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.backlog.len(), 1, "3..=6 wait in raw_log");
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
        store.commit(Moves::Due).unwrap_or_else(|e| panic!("{e}"));
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

    /// The whole machine's quantities roll up like CPU: avg, min and max over the samples of
    /// each bucket, in every tier, also when a bucket's row absorbs a later batch; each
    /// filesystem keeps its own series by slot, named by the reader.
    #[test]
    fn rollups_of_the_whole_machine_keep_avg_min_max() {
        let (dir, config) = temp_config("host-rollups", Retention::default());
        let now = 10 * H;
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        attach_a1(&mut store, "r1");
        append_host(&mut store, "r1", 1, now + 1000, 100);
        append_host(&mut store, "r1", 2, now + 2000, 300);
        commit_all(&mut store);
        append_host(&mut store, "r1", 3, now + 3000, 200);
        commit_all(&mut store);
        let reader = Reader::open(&config).unwrap_or_else(|e| panic!("{e}"));
        let stat = |avg, min, max| Some(Stat { avg, min, max });
        for tier in [Tier::Min1, Tier::Min10, Tier::Hour1] {
            let w = tier.bucket_ms();
            let s = reader
                .history("a1", now, now + w, w, now + w)
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("agent missing"));
            assert_eq!((s.tier, s.points.len()), (tier, 1), "{s:?}");
            let p = &s.points[0];
            assert_eq!(p.n, 3);
            assert_eq!(p.load1, stat(20.0, 10.0, 30.0), "{tier:?}");
            assert_eq!(p.swap_used, stat(200.0, 100.0, 300.0), "{tier:?}");
            // The fullest of `/` (v) and `/data` (1000 - v): 90, 70, 80 percent.
            assert_eq!(p.fs_used_pct, stat(80.0, 70.0, 90.0), "{tier:?}");
            for rate in [
                p.net_rx_bytes_per_s,
                p.net_tx_bytes_per_s,
                p.disk_read_bytes_per_s,
                p.disk_written_bytes_per_s,
            ] {
                assert_eq!(rate, stat(20_000.0, 10_000.0, 30_000.0), "{tier:?}");
            }
            assert_eq!(s.filesystems, ["/", "/data"]);
            let fs: Vec<_> =
                p.fs.iter()
                    .map(|f| f.map(|f| (f.used_pct, f.used_bytes)))
                    .collect();
            assert_eq!(
                fs,
                [
                    stat(20.0, 10.0, 30.0).zip(stat(200.0, 100.0, 300.0)),
                    stat(80.0, 70.0, 90.0).zip(stat(800.0, 700.0, 900.0)),
                ],
                "{tier:?}"
            );
        }
        let raw = reader
            .history("a1", now, now + 60_000, 1000, now + 60_000)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("agent missing"));
        assert_eq!(raw.tier, Tier::Raw);
        let loads: Vec<_> = raw.points.iter().map(|p| p.load1.map(|l| l.avg)).collect();
        assert_eq!(loads, [Some(10.0), Some(30.0), Some(20.0)]);
        assert_eq!(raw.points[1].fs[1].map(|f| f.used_bytes.avg), Some(700.0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An agent's filesystems get history slots in the order first seen, at most
    /// MAX_FS_HISTORY of them: later ones are not stored, and a known one keeps its slot.
    #[test]
    fn at_most_max_fs_history_filesystems_per_agent_are_kept() {
        use super::super::{Append, MAX_FS_HISTORY, Op, Rates};
        let (dir, config) = temp_config("fs-bound", Retention::default());
        let now = 10 * H;
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        attach_a1(&mut store, "r1");
        let mounts: Vec<String> = (0..MAX_FS_HISTORY + 4)
            .map(|i| format!("/m{i:02}"))
            .collect();
        // The first sample has the last four first: they take slots 0..4.
        for (seq, order) in [(1u64, true), (2, false)] {
            let mut list: Vec<&String> = mounts.iter().collect();
            if order {
                list.rotate_right(4);
            }
            let mut m = metrics(seq, now + seq * 1000, 1.0);
            m.filesystems = Some(list.iter().map(|n| filesystem(n, seq * 100)).collect());
            store.batch.push(Op::Append(Append {
                agent_id: "a1".into(),
                run_id: "r1".into(),
                metrics: m,
                rates: Rates::default(),
            }));
        }
        commit_all(&mut store);
        let reader = Reader::open(&config).unwrap_or_else(|e| panic!("{e}"));
        let raw = reader
            .history("a1", now, now + 60_000, 1000, now + 60_000)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("agent missing"));
        let mut expected: Vec<String> = mounts[MAX_FS_HISTORY..].to_vec();
        expected.extend_from_slice(&mounts[..MAX_FS_HISTORY - 4]);
        assert_eq!(raw.filesystems, expected);
        for p in &raw.points {
            assert_eq!(p.fs.len(), MAX_FS_HISTORY, "{p:?}");
            assert!(p.fs.iter().all(Option::is_some), "{p:?}");
        }
        assert_eq!(raw.points[1].fs[0].map(|f| f.used_bytes.avg), Some(200.0));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
