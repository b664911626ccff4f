//! The short integer keys the sample tables use for agents and runs, cached by the Store.
//!
//! A sample's `(agent id, run id)` becomes `(agents.key, runs.key)` in two hash lookups by
//! `&str`, without building a key string: the agent by its id, then the run among that
//! agent's runs (a map per agent, so an id with 20,000 runs costs what one with a single run
//! does). A cache miss (a new run, or after a failed commit emptied the cache) goes to the
//! database. The retention pass prunes runs and agents that have no rows left
//! ([`Keys::forget_run`], [`Keys::forget_agent`]).

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction, named_params};

use super::MAX_FS_HISTORY;
use super::error::Result;
use super::rows::{self, MountRow, RunRow};

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Keys {
    /// agent id → agents.key
    agents: HashMap<String, i64>,
    /// agents.key → run id → runs.key, of each run seen since the server started
    runs: HashMap<i64, HashMap<String, i64>>,
    /// agents.key → its filesystems with a history, by slot (loaded on demand)
    mounts: HashMap<i64, Vec<String>>,
}

impl Keys {
    /// Every agent's key, from the database.
    pub(super) fn load(conn: &Connection) -> Result<Self> {
        let mut keys = Keys::default();
        keys.reload(conn)?;
        Ok(keys)
    }

    /// Forgets everything and reads the agents' keys again (after a rolled-back transaction,
    /// whose rows the cache may name). Runs are read again on demand.
    pub(super) fn reload(&mut self, conn: &Connection) -> Result<()> {
        self.agents.clear();
        self.runs.clear();
        self.mounts.clear();
        let mut q = conn.prepare("SELECT id, key FROM agents")?;
        for row in q.query_map([], |r| Ok((r.get::<_, String>("id")?, r.get("key")?)))? {
            let (id, key) = row?;
            self.agents.insert(id, key);
        }
        Ok(())
    }

    /// Every known agent key, in no order.
    pub(super) fn agents(&self) -> impl Iterator<Item = i64> + '_ {
        self.agents.values().copied()
    }

    /// The cached `agents.key` of agent `id`.
    pub(super) fn known(&self, id: &str) -> Option<i64> {
        self.agents.get(id).copied()
    }

    /// The `agents.key` of agent `id`, if it has a row.
    pub(super) fn agent(&mut self, tx: &Transaction<'_>, id: &str) -> Result<Option<i64>> {
        if let Some(k) = self.agents.get(id) {
            return Ok(Some(*k));
        }
        let k: Option<i64> = tx
            .prepare_cached("SELECT key FROM agents WHERE id = ?1")?
            .query_row([id], |r| r.get("key"))
            .optional()?;
        if let Some(k) = k {
            self.agents.insert(id.to_string(), k);
        }
        Ok(k)
    }

    /// The `runs.key` of `(agent, run_id)`: from the cache (no allocation per sample), else
    /// from the database, else a new row. Never "unknown": a sample is always written, so a
    /// durable seq announced after this batch never covers a sample that was skipped.
    pub(super) fn run(&mut self, tx: &Transaction<'_>, agent: i64, run_id: &str) -> Result<i64> {
        if let Some(&key) = self.runs.get(&agent).and_then(|runs| runs.get(run_id)) {
            return Ok(key);
        }
        tx.prepare_cached("INSERT OR IGNORE INTO runs (agent, run_id) VALUES (:agent, :run_id)")?
            .execute(named_params! {":agent": agent, ":run_id": run_id})?;
        let row = tx.prepare_cached(&SELECT_RUN)?.query_row(
            named_params! {":agent": agent, ":run_id": run_id},
            RunRow::from_row,
        )?;
        self.runs
            .entry(agent)
            .or_default()
            .insert(row.run_id, row.key);
        Ok(row.key)
    }

    /// The run `run_id` of `agent` was deleted.
    pub(super) fn forget_run(&mut self, agent: i64, run_id: &str) {
        if let Some(runs) = self.runs.get_mut(&agent) {
            runs.remove(run_id);
        }
    }

    /// Agent `id` (key `agent`) and its runs were deleted.
    pub(super) fn forget_agent(&mut self, agent: i64, id: &str) {
        self.agents.remove(id);
        self.runs.remove(&agent);
        self.mounts.remove(&agent);
    }
}

impl Keys {
    /// The slot of `agent`'s filesystem mounted at `mount`: known, or a new one while the
    /// agent has fewer than [`MAX_FS_HISTORY`]; `None` beyond that (not kept).
    pub(super) fn mount_slot(
        &mut self,
        tx: &Transaction<'_>,
        agent: i64,
        mount: &str,
    ) -> Result<Option<u8>> {
        let mounts = match self.mounts.entry(agent) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut q = tx.prepare_cached(&SELECT_MOUNTS)?;
                let rows = q.query_map([agent], MountRow::from_row)?;
                let mut known = Vec::new();
                for row in rows {
                    let row = row?;
                    let slot = usize::try_from(row.slot).unwrap_or(usize::MAX);
                    if slot < MAX_FS_HISTORY {
                        if known.len() <= slot {
                            known.resize(slot + 1, String::new());
                        }
                        known[slot] = row.mount;
                    }
                }
                e.insert(known)
            }
        };
        if let Some(slot) = mounts.iter().position(|m| m == mount) {
            return Ok(u8::try_from(slot).ok());
        }
        if mounts.len() >= MAX_FS_HISTORY {
            return Ok(None);
        }
        let row = MountRow {
            agent,
            slot: i64::try_from(mounts.len()).unwrap_or(i64::MAX),
            mount: mount.to_string(),
        };
        row.execute(&mut *tx.prepare_cached(&INSERT_MOUNT)?)?;
        mounts.push(row.mount);
        Ok(u8::try_from(mounts.len() - 1).ok())
    }
}

static SELECT_MOUNTS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM mounts WHERE agent = ?1 ORDER BY slot",
        rows::list(MountRow::columns())
    )
});

static INSERT_MOUNT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| rows::insert("INSERT", "mounts", MountRow::columns()));

static SELECT_RUN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM runs WHERE agent = :agent AND run_id = :run_id",
        rows::list(RunRow::columns())
    )
});

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{Append, Moves, Op, Rates, Retention, Store};
    use std::time::Instant;

    const H: u64 = 3_600_000;

    /// Seconds to log `n` samples of `agent`'s run `run` (commits of 500, as a busy server).
    fn log_samples(store: &mut Store, agent: &str, run: &str, n: u64) -> f64 {
        let started = Instant::now();
        for seq in 1..=n {
            store.batch.push(Op::Append(Append {
                agent_id: agent.into(),
                run_id: run.into(),
                metrics: metrics(seq, 10 * H + seq, 1.0),
                rates: Rates::default(),
            }));
            if seq.is_multiple_of(500) {
                store.commit(Moves::Due).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        store.commit(Moves::Due).unwrap_or_else(|e| panic!("{e}"));
        started.elapsed().as_secs_f64()
    }

    /// Measures the store's cost per sample of an agent whose id has 20,000 runs (a client
    /// that says hello with a new run id again and again), against an agent with one run.
    /// Run by hand: `cargo test -p lanmon --release --lib -- --ignored --nocapture many_runs`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn per_sample_cost_with_many_runs() {
        let (dir, config) = temp_config("many-runs", Retention::default());
        let (mut store, _) = Store::open(&config, 10).unwrap_or_else(|e| panic!("{e}"));
        let runs = 20_000u32;
        for r in 0..runs {
            attach(&mut store, "crowded", &format!("run-{r}"));
            if (r + 1).is_multiple_of(1000) {
                store.commit(Moves::Due).unwrap_or_else(|e| panic!("{e}"));
            }
        }
        attach(&mut store, "plain", "only");
        store.commit(Moves::Due).unwrap_or_else(|e| panic!("{e}"));
        let n = 50_000;
        let last = format!("run-{}", runs - 1);
        // Warm up both (page cache, statements), then measure each twice, alternating.
        log_samples(&mut store, "plain", "only", 1000);
        let mut crowded = 0.0;
        let mut plain = 0.0;
        for round in 0..2u64 {
            let _ = round;
            crowded += log_samples(&mut store, "crowded", &last, n);
            plain += log_samples(&mut store, "plain", "only", n);
        }
        let per = |s: f64| s / (2 * n) as f64 * 1e6;
        println!(
            "per sample: {:.2} µs for an agent with {runs} runs, {:.2} µs with one run ({:.2}x)",
            per(crowded),
            per(plain),
            crowded / plain
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
