//! Deleting rows older than each tier's [`Retention`](super::Retention): a slice of the agents
//! per [`RETENTION_TICK`] (every agent once per [`RETENTION_EVERY`]), each in bounded DELETEs
//! on the `(agent, ts_ms)` index, so that dropping a day of data never holds the database for
//! long.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::error::Result;
use super::rows::i64_of;
use super::tier::{Retention, Tier};

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
    /// to visit every agent), each in bounded batches; true if some of them still have old
    /// rows (then the same slice comes again, after [`RETENTION_BACKLOG`]).
    pub(super) fn pass(
        &mut self,
        conn: &Connection,
        agents: impl Iterator<Item = i64>,
        retention: &Retention,
        now_ms: u64,
    ) -> bool {
        let mut keys: Vec<i64> = agents.collect();
        keys.sort_unstable();
        let ticks = (RETENTION_EVERY.as_millis() / RETENTION_TICK.as_millis()).max(1) as usize;
        let slice = keys.len().div_ceil(ticks).max(1);
        if self.cursor >= keys.len() {
            self.cursor = 0;
        }
        let end = (self.cursor + slice).min(keys.len());
        let mut more = false;
        for &agent in &keys[self.cursor..end] {
            for tier in Tier::ALL {
                let horizon = i64_of(retention.horizon(tier, now_ms));
                match delete_before(conn, tier, agent, horizon) {
                    Ok(n) => more |= n >= DELETE_BATCH,
                    Err(e) => {
                        tracing::warn!("store: cannot delete old {} rows: {e}", tier.name());
                        return false;
                    }
                }
            }
        }
        if !more {
            self.cursor = end;
        }
        more
    }
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
