//! The short integer keys the sample tables use for agents and runs, cached by the Store.
//!
//! A sample's `(agent id, run id)` becomes `(agents.key, runs.key)` without building a key
//! string: the agent by its id (`&str` lookup in a `HashMap<String, _>`), the run among that
//! agent's few runs by comparison. A cache miss (a new run, or after a failed commit emptied
//! the cache) goes to the database.

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
    /// agents.key → (run id, runs.key) of each run seen since the server started
    runs: HashMap<i64, Vec<(String, i64)>>,
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
        if let Some(&(_, key)) = self
            .runs
            .get(&agent)
            .and_then(|runs| runs.iter().find(|(id, _)| id == run_id))
        {
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
            .push((row.run_id, row.key));
        Ok(row.key)
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
