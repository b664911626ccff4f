//! Deleting rows older than each tier's [`Retention`](super::Retention): a slice of the agents
//! per [`RETENTION_TICK`] (every agent once per [`RETENTION_EVERY`]), each in bounded DELETEs
//! on the `(agent, ts_ms)` index, so that dropping a day of data never holds the database for
//! long.
//!
//! Once an agent has no old rows left, the same pass deletes what nothing refers to any more
//! ([`Pruned`]): its runs other than the current one that have no raw rows (a client saying
//! hello with a new run id again and again leaves one per hello), and the agent itself when
//! it has no rows left in any tier and has not connected for [`AGENT_RETENTION`] (made-up
//! ids), with its runs and its filesystems (`mounts`). Agents with writes not yet committed or moved are left alone, and so is the row with
//! the highest key of each table, so that SQLite never hands a deleted key out again (rows
//! of it may still be on their way).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::error::Result;
use super::rows::i64_of;
use super::tier::{Retention, Tier};

/// An agent without rows in any tier is deleted once it has not connected for this long: as
/// long as the Registry remembers an offline agent.
pub const AGENT_RETENTION: Duration = crate::config::OFFLINE_RETENTION;
/// Most runs one pass deletes of one agent.
pub const PRUNE_RUNS_BATCH: usize = 2_000;

/// What a pass deleted besides rows, for the key cache to forget.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Pruned {
    /// Old rows remain in the slice (it comes again after [`RETENTION_BACKLOG`]).
    pub more: bool,
    /// `(agents.key, run id)` of each run deleted.
    pub runs: Vec<(i64, String)>,
    /// `(agents.key, agent id)` of each agent deleted (with all its runs).
    pub agents: Vec<(i64, String)>,
}

/// Every agent's old rows are looked at once per this period (a slice of the agents per
/// [`RETENTION_TICK`]).
pub const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// How often a slice of the agents has its old rows deleted.
pub const RETENTION_TICK: Duration = Duration::from_secs(1);
/// Most rows one DELETE removes; a pass that hits it comes back after [`RETENTION_BACKLOG`].
pub const DELETE_BATCH: usize = 2_000;
/// Pause between two bounded delete passes while old data remains.
pub const RETENTION_BACKLOG: Duration = Duration::from_millis(200);

/// Where the next slice of agents starts.
#[derive(Debug, Default)]
pub(super) struct Expiry {
    /// Index into the sorted agent keys.
    cursor: usize,
}

impl Expiry {
    /// Deletes old rows of the next slice of `agents` (enough slices per [`RETENTION_EVERY`]
    /// to visit every agent), each in bounded batches, and then what of theirs nothing refers
    /// to any more, except of the `busy` agents (writes queued or not yet moved). `more` if
    /// some of them still have old rows (then the same slice comes again, after
    /// [`RETENTION_BACKLOG`]).
    pub(super) fn pass(
        &mut self,
        conn: &Connection,
        agents: impl Iterator<Item = i64>,
        busy: &HashSet<i64>,
        retention: &Retention,
        now_ms: u64,
    ) -> Pruned {
        let mut keys: Vec<i64> = agents.collect();
        keys.sort_unstable();
        let ticks = (RETENTION_EVERY.as_millis() / RETENTION_TICK.as_millis()).max(1) as usize;
        let slice = keys.len().div_ceil(ticks).max(1);
        if self.cursor >= keys.len() {
            self.cursor = 0;
        }
        let end = (self.cursor + slice).min(keys.len());
        let mut pruned = Pruned::default();
        for &agent in &keys[self.cursor..end] {
            let mut old_rows_left = false;
            for tier in Tier::ALL {
                let horizon = i64_of(retention.horizon(tier, now_ms));
                match delete_before(conn, tier, agent, horizon) {
                    Ok(n) => old_rows_left |= n >= DELETE_BATCH,
                    Err(e) => {
                        tracing::warn!("store: cannot delete old {} rows: {e}", tier.name());
                        return pruned;
                    }
                }
            }
            pruned.more |= old_rows_left;
            if old_rows_left || busy.contains(&agent) {
                continue;
            }
            if let Err(e) = prune(conn, agent, now_ms, &mut pruned) {
                tracing::warn!("store: cannot delete unused runs and agents: {e}");
                return pruned;
            }
        }
        if !pruned.more {
            self.cursor = end;
        }
        pruned
    }
}

/// Deletes `agent`'s runs that nothing refers to, and the agent itself when nothing of it is
/// left and it has been away for [`AGENT_RETENTION`] (see the module documentation).
fn prune(conn: &Connection, agent: i64, now_ms: u64, pruned: &mut Pruned) -> Result<()> {
    let away_since =
        now_ms.saturating_sub(u64::try_from(AGENT_RETENTION.as_millis()).unwrap_or(u64::MAX));
    let gone: Option<String> = conn
        .prepare_cached(
            "DELETE FROM agents WHERE key = ?1 AND seen_ms < ?2
               AND key < (SELECT max(key) FROM agents)
               AND NOT EXISTS (SELECT 1 FROM raw WHERE agent = ?1)
               AND NOT EXISTS (SELECT 1 FROM rollup_1m WHERE agent = ?1)
               AND NOT EXISTS (SELECT 1 FROM rollup_10m WHERE agent = ?1)
               AND NOT EXISTS (SELECT 1 FROM rollup_1h WHERE agent = ?1)
             RETURNING id",
        )?
        .query_row(params![agent, i64_of(away_since)], |r| r.get("id"))
        .optional()?;
    if let Some(id) = gone {
        conn.prepare_cached("DELETE FROM runs WHERE agent = ?1")?
            .execute([agent])?;
        conn.prepare_cached("DELETE FROM mounts WHERE agent = ?1")?
            .execute([agent])?;
        pruned.agents.push((agent, id));
        return Ok(());
    }
    let mut runs = conn.prepare_cached(
        "DELETE FROM runs WHERE key IN (
           SELECT r.key FROM runs AS r
           WHERE r.agent = ?1
             AND r.key IS NOT (SELECT run_key FROM agents WHERE key = ?1)
             AND r.key < (SELECT max(key) FROM runs)
             AND NOT EXISTS (SELECT 1 FROM raw WHERE run = r.key)
           LIMIT ?2)
         RETURNING run_id",
    )?;
    let batch = i64_of(PRUNE_RUNS_BATCH as u64);
    let before = pruned.runs.len();
    for run in runs.query_map(params![agent, batch], |r| r.get::<_, String>("run_id"))? {
        pruned.runs.push((agent, run?));
    }
    pruned.more |= pruned.runs.len() - before >= PRUNE_RUNS_BATCH;
    Ok(())
}

/// The statements of one table: the bound of a pass, and the two DELETEs.
struct DeleteSql {
    bound: String,
    upto: String,
    before: String,
}

static DELETE_SQL: LazyLock<HashMap<Tier, DeleteSql>> = LazyLock::new(|| {
    Tier::ALL
        .iter()
        .map(|&tier| {
            let table = tier.table();
            let sql = DeleteSql {
                bound: format!(
                    "SELECT ts_ms FROM {table} WHERE agent = ?1 AND ts_ms < ?2 \
                     ORDER BY ts_ms LIMIT 1 OFFSET ?3"
                ),
                upto: format!("DELETE FROM {table} WHERE agent = ?1 AND ts_ms <= ?2"),
                before: format!("DELETE FROM {table} WHERE agent = ?1 AND ts_ms < ?2"),
            };
            (tier, sql)
        })
        .collect()
});

/// Deletes at most [`DELETE_BATCH`] rows of `agent` older than `horizon` from `tier`, on the
/// `(agent, ts_ms)` index; returns how many.
fn delete_before(conn: &Connection, tier: Tier, agent: i64, horizon: i64) -> Result<usize> {
    let sql = DELETE_SQL.get(&tier).ok_or(rusqlite::Error::InvalidQuery)?;
    // The timestamp of the DELETE_BATCH-th oldest row bounds this pass (rows sharing it go
    // too; without one, fewer than DELETE_BATCH rows are old).
    let bound: Option<i64> = conn
        .prepare_cached(&sql.bound)?
        .query_row(
            params![agent, horizon, i64_of(DELETE_BATCH as u64 - 1)],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match bound {
        Some(upto) => conn
            .prepare_cached(&sql.upto)?
            .execute(params![agent, upto])?,
        None => conn
            .prepare_cached(&sql.before)?
            .execute(params![agent, horizon])?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{Append, Op, Rates, Retention, Store};
    use super::*;

    const H: u64 = 3_600_000;

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
                rates: Rates::default(),
            }));
        }
        commit_all(&mut store);
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
}

#[cfg(test)]
mod prune_tests {
    use super::super::testkit::*;
    use super::super::{Append, Op, Rates, Retention, Store};

    const H: u64 = 3_600_000;

    fn strings(store: &Store, sql: &str) -> Vec<String> {
        let mut q = store.conn.prepare(sql).unwrap_or_else(|e| panic!("{e}"));
        q.query_map([], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    /// Enough passes to visit every agent a few times (each pass takes a slice of them).
    fn expire_all(store: &mut Store, now: u64) {
        for _ in 0..100 {
            store.expire(now);
        }
    }

    /// Runs that are not their agent's current one and have no raw rows left (expired, or
    /// never any: a client saying hello with new run ids) are deleted; the current run stays,
    /// and a run that comes back afterwards is written under a key that exists.
    #[test]
    fn runs_without_rows_are_deleted_but_not_the_current_one() {
        let (dir, config) = temp_config(
            "prune-runs",
            Retention {
                raw: std::time::Duration::from_secs(60),
                ..Retention::default()
            },
        );
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        let now = 100 * H;
        attach(&mut store, "a1", "old");
        append(&mut store, "old", 1..=5, now - 2 * H);
        for r in 0..50 {
            attach(&mut store, "a1", &format!("hello-only-{r}"));
        }
        attach(&mut store, "a1", "current");
        append(&mut store, "current", 1..=3, now - 2 * H);
        attach(&mut store, "zz", "last"); // the highest keys: never deleted
        commit_all(&mut store);
        expire_all(&mut store, now);
        let runs = strings(
            &store,
            "SELECT run_id FROM runs WHERE agent = (SELECT key FROM agents WHERE id = 'a1')",
        );
        assert_eq!(runs, ["current"], "only the current run is left");
        assert_eq!(
            strings(&store, "SELECT run_id FROM runs WHERE run_id = 'last'").len(),
            1
        );
        // The old run again (a replaying agent): a fresh row, and its samples refer to it.
        attach(&mut store, "a1", "old");
        append(&mut store, "old", 6..=6, now);
        commit_all(&mut store);
        let orphans: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM raw WHERE run NOT IN (SELECT key FROM runs)",
                [],
                |r| r.get(0),
            )
            .unwrap_or(-1);
        assert_eq!(orphans, 0, "every raw row names a run that exists");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An agent with no rows left in any tier that has not connected for a day is deleted
    /// with its runs and filesystems; one with rollups left, one with writes still queued, and the one with
    /// the highest key are not. A deleted agent that comes back starts afresh.
    #[test]
    fn agents_without_rows_away_for_a_day_are_deleted() {
        let (dir, config) = temp_config("prune-agents", Retention::default());
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        let now = crate::util::now_ms();
        for ghost in 0..20 {
            attach(&mut store, &format!("ghost-{ghost}"), "r");
        }
        attach(&mut store, "queued", "r");
        attach_a1(&mut store, "r1");
        append(&mut store, "r1", 1..=3, now);
        attach(&mut store, "zz", "last");
        commit_all(&mut store);
        // A filesystem of a ghost (as if its history had expired since).
        store
            .conn
            .execute(
                "INSERT INTO mounts VALUES ((SELECT key FROM agents WHERE id = 'ghost-1'), 0, '/')",
                [],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        attach(&mut store, "queued", "r"); // reconnecting while the commit waits
        let later = now + 25 * H;
        expire_all(&mut store, later);
        let mut agents = strings(&store, "SELECT id FROM agents ORDER BY id");
        agents.sort();
        assert_eq!(agents, ["a1", "queued", "zz"], "a1 still has rollups");
        let runs: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM runs WHERE agent NOT IN (SELECT key FROM agents)",
                [],
                |r| r.get(0),
            )
            .unwrap_or(-1);
        assert_eq!(runs, 0, "the runs went with their agents");
        let mounts: i64 = store
            .conn
            .query_row("SELECT count(*) FROM mounts", [], |r| r.get(0))
            .unwrap_or(-1);
        assert_eq!(mounts, 0, "and their filesystems");
        attach(&mut store, "ghost-3", "r");
        store.batch.push(Op::Append(Append {
            agent_id: "ghost-3".into(),
            run_id: "r".into(),
            metrics: metrics(1, now, 5.0),
            rates: Rates::default(),
        }));
        commit_all(&mut store);
        drop(store);
        let (_store, restored) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        let back = restored
            .iter()
            .find(|r| r.hello.agent_id == "ghost-3")
            .unwrap_or_else(|| panic!("ghost-3 is back"));
        assert_eq!(back.last_seq, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
