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
//! fires, everything queued goes into one transaction (a `Commit`, commit.rs). There a sample
//! costs one append to `raw_log` (log.rs), which makes it durable: it is acknowledged after
//! that commit. [`ROLLUP_DELAY`] after an agent's first logged sample (each agent on its own
//! schedule, so the work spreads out), its logged samples move in one go into `raw` and the
//! rollups (rollup.rs); after a crash, [`Store::open`] moves whatever `raw_log` still holds
//! the same way. Reads of the raw tier include `raw_log`; the rollup tiers lag by up to
//! [`ROLLUP_DELAY`]. Old rows are deleted in bounded batches, and then runs and agents that
//! nothing refers to any more (retention.rs). A commit that
//! fails (a full disk) acknowledges nothing and is retried whole, [`RETRY_MIN`] doubling to
//! [`RETRY_MAX`]; [`StoreHealth`] shows the fault meanwhile.
//!
//! Reads for the HTTP API go through a [`Reader`], a separate read-only connection. At startup
//! [`Store::open`] returns what the Registry needs to carry on where the last server stopped
//! ([`Restored`]).
//!
//! One role per file: schema.rs (migrations, `user_version`), rows.rs (one struct per table,
//! by column name), tier.rs, keys.rs, log.rs, commit.rs, rollup.rs, retention.rs, restore.rs,
//! reader.rs, health.rs, error.rs. The aggregation itself is [`crate::server::series`],
//! shared with the in-memory history. Adding a metric column: a file in `migrations/` and its
//! line in `schema::MIGRATIONS`, a field in the row structs (`SampleRow`, `RollupRow`) and in
//! `Agg`; the compiler points at every conversion, and a test at any mismatch between the
//! migrations and the structs.
//!
//! What a sample keeps besides CPU and memory (schema 4): load, swap used, the fullest
//! filesystem's use, each filesystem's use (for at most [`MAX_FS_HISTORY`] filesystems per
//! agent, by slot: `mounts`), and network and disk rates. The rates come with the sample in
//! [`Append`] ([`Rates`], from the Registry's [`HostState`](crate::server::host::HostState)):
//! the Registry already holds the previous counters, so the store computes nothing per sample
//! and keeps no per-agent state for it.

mod commit;
mod error;
mod health;
mod keys;
mod log;
mod reader;
mod restore;
mod retention;
mod rollup;
mod rows;
mod schema;
#[cfg(test)]
mod testkit;
mod tier;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use rusqlite::Connection;

pub use self::error::StoreError;
pub use self::health::{StoreFault, StoreHealth};
pub use self::reader::{
    HistoryQuery, MAX_HISTORY_CELLS, MAX_HISTORY_CORES, READ_CONNECTIONS, Reader, Series, fit_step,
};
pub use self::restore::Restored;
pub use self::retention::{
    AGENT_RETENTION, DELETE_BATCH, PRUNE_RUNS_BATCH, RETENTION_BACKLOG, RETENTION_EVERY,
    RETENTION_TICK,
};
pub use self::rollup::{MOVE_BUDGET, MOVE_ROWS, ROLLUP_DELAY};
pub use self::tier::{
    DEFAULT_1H_RETENTION, DEFAULT_1M_RETENTION, DEFAULT_10M_RETENTION, DEFAULT_RAW_RETENTION,
    Retention, Tier, choose_tier,
};
pub use crate::server::series::{Agg, MinMax, bucket_start, rebucket};

use self::commit::{Commit, Moves};
use self::keys::Keys;
use self::log::Op;
use self::retention::Expiry;
use self::rollup::Backlog;
use crate::protocol::{Hello, Metrics};
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
/// Database file name inside the data directory.
pub const DB_FILE: &str = "lanmon.db";
/// Lock file inside the data directory: one server per directory.
pub const LOCK_FILE: &str = "lanmon.lock";
/// Offline reason of every agent reloaded at startup.
pub const RESTART_REASON: &str = "server restarted";
/// Most filesystems per agent with a history (`mounts`): the first ones the agent reports, in
/// its order. Later ones are shown live but not kept (bounds every `fs` blob and the table).
pub const MAX_FS_HISTORY: usize = 16;

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

/// Where and how long to keep history.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub retention: Retention,
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
    /// The sample as the agent sent it (every group).
    pub metrics: Metrics,
    /// The rates the Registry derived from its counters, kept beside it in the history.
    pub rates: Rates,
}

/// What the Registry derived from a sample's counters against the agent's previous sample
/// ([`crate::server::host::HostState`]), for the history: the store keeps no counters of its
/// own. All `None` for a sample that came out of order (a replay filling a gap), for the first
/// sample of a run, and after a counter reset.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates {
    /// Network bytes per second received and sent, every interface together.
    pub net_rx: Option<f64>,
    pub net_tx: Option<f64>,
    /// Disk bytes per second read and written, every device together.
    pub disk_read: Option<f64>,
    pub disk_write: Option<f64>,
}

impl Rates {
    /// The rates in an agent's whole-machine view (the one made from the same sample).
    pub fn of(view: &crate::snapshot::HostView) -> Self {
        let (net_rx, net_tx) = view.net_rates().unzip();
        let (disk_read, disk_write) = view.disk_rates().unzip();
        Self {
            net_rx,
            net_tx,
            disk_read,
            disk_write,
        }
    }
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

// ---- The actor --------------------------------------------------------------------------------

/// While commits fail: the wait before the next attempt, and when the error was last logged.
#[derive(Debug, Clone, Copy)]
struct Retry {
    wait: Duration,
    logged: Instant,
}

/// The wait before retrying a failed commit, given the wait before the previous attempt
/// (`None` at the first failure): [`RETRY_MIN`], doubling up to [`RETRY_MAX`].
fn next_wait(previous: Option<Duration>) -> Duration {
    match previous {
        None => RETRY_MIN,
        Some(wait) => (wait * 2).min(RETRY_MAX),
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
    /// Writes not yet committed, in order.
    batch: Vec<Op>,
    /// Per agent id: the run and batch index of its last `Attach` in the batch (an agent
    /// reconnecting while commits fail replaces that `Attach` instead of adding one).
    attaches: HashMap<String, (String, usize)>,
    flush_armed: bool,
    subscriber: Option<Recipient<Committed>>,
    keys: Keys,
    /// Samples logged, not yet moved into `raw` and the rollups.
    backlog: Backlog,
    expiry: Expiry,
    /// Shared with the snapshot and `/healthz`: set while commits fail.
    health: Arc<StoreHealth>,
    /// `None` while the store writes.
    retry: Option<Retry>,
}

impl Store {
    /// Creates the data directory if missing, takes its lock, opens (or creates, or upgrades)
    /// the database, moves what a crash left in `raw_log` to its place, and reads what the
    /// last server left: every agent with up to `ring` recent samples.
    pub fn open(config: &StoreConfig, ring: usize) -> crate::Result<(Store, Vec<Restored>)> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|error| StoreError::CreateDir {
            dir: dir.clone(),
            error,
        })?;
        let lock = File::create(dir.join(LOCK_FILE)).map_err(|error| StoreError::LockFile {
            dir: dir.clone(),
            error,
        })?;
        if lock.try_lock().is_err() {
            return Err(StoreError::InUse { dir: dir.clone() }.into());
        }
        let path = dir.join(DB_FILE);
        let at = |e: StoreError| e.at(&path);
        let mut conn = schema::open(&path).map_err(at)?;
        let repaired = rollup::repair(&mut conn).map_err(at)?;
        if repaired > 0 {
            tracing::info!(
                "store: moved {repaired} logged sample(s) into the history after a crash"
            );
        }
        let restored = restore::load(&conn, ring).map_err(at)?;
        let keys = Keys::load(&conn).map_err(at)?;
        let store = Store {
            conn,
            path: path.clone(),
            retention: config.retention,
            _lock: lock,
            batch: Vec::new(),
            attaches: HashMap::new(),
            flush_armed: false,
            subscriber: None,
            keys,
            backlog: Backlog::default(),
            expiry: Expiry::default(),
            health: Arc::new(StoreHealth::default()),
            retry: None,
        };
        Ok((store, restored))
    }

    /// The store's health, to be shown by others (snapshot, `/healthz`).
    pub fn health(&self) -> Arc<StoreHealth> {
        Arc::clone(&self.health)
    }

    /// Commits the batch in one transaction, with the moves `moves` says; returns the
    /// durable seqs to announce. On failure the batch stays queued, whole and in order.
    fn commit(&mut self, moves: Moves) -> error::Result<Vec<DurableSeq>> {
        let batch = std::mem::take(&mut self.batch);
        let plan = Commit::plan(&batch, &self.backlog, moves, Instant::now());
        let result = plan.run(&mut self.conn, &mut self.keys, &mut self.backlog);
        if result.is_err() {
            // Nothing of it was committed: keep it whole (in order, ahead of newer writes)
            // and retry. The agents get no ack meanwhile and keep the samples themselves.
            let newer = std::mem::replace(&mut self.batch, batch);
            self.batch.extend(newer);
            // The key caches may name rows of the rolled-back transaction.
            let _ = self.keys.reload(&self.conn);
        } else {
            self.attaches.clear();
        }
        result
    }

    /// Commits if there is anything to do; announces what became durable, or records and
    /// logs the failure. Returns whether the store is now written up to date.
    fn flush(&mut self, moves: Moves) -> bool {
        self.flush_armed = false;
        let nothing_due = match moves {
            Moves::All => self.backlog.is_empty(),
            Moves::Due => !self.backlog.due(),
        };
        if self.batch.is_empty() && nothing_due {
            return true;
        }
        let started = Instant::now();
        let n = self.batch.len();
        match self.commit(moves) {
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
                let wait = next_wait(self.retry.map(|r| r.wait));
                let logged = match self.retry {
                    Some(r) if r.logged.elapsed() < FAILURE_LOG_EVERY => r.logged,
                    _ => {
                        tracing::error!(
                            "store: cannot commit {n} write(s) to {}: {e}; nothing is acknowledged until it works (agents keep their samples), retrying every {wait:?} or less (failed {} time(s) so far)",
                            self.path.display(),
                            fault.attempts
                        );
                        Instant::now()
                    }
                };
                self.retry = Some(Retry { wait, logged });
                false
            }
        }
    }

    fn arm(&mut self, ctx: &mut Context<Self>) {
        // While failing, only the retry timer commits (a full batch must not retry per write).
        if self.batch.len() >= MAX_BATCH && self.retry.is_none() {
            self.flush(Moves::Due);
        }
        if !self.flush_armed && !self.batch.is_empty() {
            self.flush_armed = true;
            let delay = self.retry.map_or(FLUSH_DELAY, |r| r.wait);
            ctx.run_later(delay, |this, ctx| {
                this.flush(Moves::Due);
                this.arm(ctx);
            });
        }
    }

    /// One retention pass at `now_ms`; true while old rows remain (see [`retention`]). Runs
    /// and agents it deletes leave the key cache; agents with writes queued (in the batch) or
    /// logged and not yet moved (in the backlog) are not pruned.
    fn expire(&mut self, now_ms: u64) -> bool {
        let mut busy: HashSet<i64> = self.backlog.agents();
        if !self.batch.is_empty() {
            let queued: HashSet<&str> = self
                .batch
                .iter()
                .map(|op| match op {
                    Op::Attach(a) => a.hello.agent_id.as_str(),
                    Op::Append(s) => s.agent_id.as_str(),
                })
                .collect();
            busy.extend(queued.into_iter().filter_map(|id| self.keys.known(id)));
        }
        let pruned = self.expiry.pass(
            &self.conn,
            self.keys.agents(),
            &busy,
            &self.retention,
            now_ms,
        );
        for (agent, run) in &pruned.runs {
            self.keys.forget_run(*agent, run);
        }
        for (agent, id) in &pruned.agents {
            self.keys.forget_agent(*agent, id);
        }
        if !pruned.runs.is_empty() || !pruned.agents.is_empty() {
            tracing::debug!(
                "store: deleted {} run(s) and {} agent(s) without rows",
                pruned.runs.len(),
                pruned.agents.len()
            );
        }
        pruned.more
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

impl Actor for Store {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Soon after start (a server that was down for a while has old rows), then regularly.
        self.schedule_expiry(Duration::from_secs(1), ctx);
        // Rollups come due while no sample arrives too.
        ctx.run_interval(Duration::from_secs(1), |this, _| {
            if this.backlog.due() && !this.flush_armed {
                this.flush(Moves::Due);
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if !self.batch.is_empty() || !self.backlog.is_empty() {
            self.flush(Moves::All);
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
        self.flush(Moves::All)
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use super::*;
    use crate::server::series::Stat;

    const H: u64 = 3_600_000;

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
                rates: Rates::default(),
            }));
        }
        // seq 3 again (e.g. after a crash between commit and ack): ignored, rollups unchanged.
        store.batch.push(Op::Append(Append {
            agent_id: "a1".into(),
            run_id: "r1".into(),
            metrics: metrics(3, now + 3000, 99.0),
            rates: Rates::default(),
        }));
        let durable = store.commit(Moves::All).unwrap_or_else(|e| panic!("{e}"));
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
        assert_eq!(
            a.points.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
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
            .map(|s| rows::u64_of(s.unwrap_or_else(|e| panic!("{e}"))))
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
        let durable = store.commit(Moves::Due).unwrap_or_else(|e| panic!("{e}"));
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
            store.commit(Moves::Due).is_err(),
            "the commit must fail on a full database"
        );
        assert!(
            store.flush(Moves::Due).eq(&false),
            "still full: nothing durable"
        );
        assert!(store.health.status().is_some(), "the failure is visible");
        // Room again: the retry writes everything that was queued.
        store
            .conn
            .pragma_update(None, "max_page_count", 1_073_741_823)
            .unwrap_or_else(|e| panic!("{e}"));
        let durable = store.commit(Moves::Due).unwrap_or_else(|e| panic!("{e}"));
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

    /// A failing commit is retried after RETRY_MIN, then twice as long each time, never longer
    /// than RETRY_MAX.
    #[test]
    fn retry_waits_double_up_to_the_maximum() {
        let mut waits = vec![next_wait(None)];
        for _ in 0..8 {
            waits.push(next_wait(waits.last().copied()));
        }
        assert_eq!(waits[0], RETRY_MIN);
        assert_eq!(waits[1], RETRY_MIN * 2);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
        assert_eq!(waits.last().copied(), Some(RETRY_MAX));
    }

    /// Measures the disk use of one agent-day at the default 5 s interval (17,280 samples,
    /// committed in batches as a live server would), with CPU and memory only and with a
    /// typical whole machine (load, swap, two filesystems, network and disk rates). Run by
    /// hand: `cargo test -p lanmon --release --lib -- --ignored --nocapture disk_use`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn disk_use_per_agent_day() {
        for whole_machine in [false, true] {
            let bytes = agent_days(whole_machine);
            println!(
                "10 agents x 1 day at 5 s, {}: {bytes} bytes, {:.2} MiB per agent per day",
                if whole_machine {
                    "whole machine"
                } else {
                    "CPU and memory only"
                },
                bytes as f64 / 10.0 / (1024.0 * 1024.0)
            );
        }
    }

    /// The database size after a day of 10 agents (see [`disk_use_per_agent_day`]).
    fn agent_days(whole_machine: bool) -> u64 {
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
                let mut rates = Rates::default();
                if whole_machine {
                    // Values that move like a real host's: load 0.00–2.99, a few MiB of
                    // swap, two filesystems filling slowly, some KiB/s of traffic.
                    m.load = Some(crate::protocol::Load {
                        load1: (seq % 300) as f32 / 100.0,
                        load5: 0.5,
                        load15: 0.4,
                        running: Some(1),
                        threads: Some(300),
                        procs: None,
                    });
                    m.swap = Some(crate::protocol::Swap {
                        total_bytes: 2 << 30,
                        used_bytes: (3 << 20) + (seq % 50) * 4096,
                    });
                    let fs = |mount: &str, size: u64, used: u64| crate::protocol::Filesystem {
                        mount: mount.into(),
                        fs_type: "ext4".into(),
                        device: "/dev/sda1".into(),
                        size_bytes: size,
                        used_bytes: used,
                        avail_bytes: size - used,
                        inodes: 1 << 20,
                        inodes_used: 1 << 16,
                    };
                    m.filesystems = Some(vec![
                        fs("/", 100 << 30, (40 << 30) + seq * 8192),
                        fs("/home", 400 << 30, (100 << 30) + seq * 65536),
                    ]);
                    let wave = (seq % 97) as f64;
                    rates = Rates {
                        net_rx: Some(2_000.0 + wave * 300.0),
                        net_tx: Some(900.0 + wave * 40.0),
                        disk_read: Some(wave * 4096.0),
                        disk_write: Some(20_000.0 + wave * 1024.0),
                    };
                }
                store.batch.push(Op::Append(Append {
                    agent_id: format!("agent-{a:02}"),
                    run_id: "r1".into(),
                    metrics: m,
                    rates,
                }));
            }
            if seq % 60 == 0 {
                let moves = if seq % 600 == 0 {
                    Moves::All
                } else {
                    Moves::Due
                };
                store.commit(moves).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        commit_all(&mut store);
        let _ = store.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        let bytes = std::fs::metadata(dir.join(DB_FILE)).map_or(0, |m| m.len());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    }
}
