//! Read-only access for the HTTP API ([`Reader`]), on its own connection: WAL lets it read
//! while the Store writes, and it never blocks the Store.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::error::{Result, StoreError};
use super::rows::{self, MountRow, RollupRow, SampleRow, i64_of, u64_of};
use super::tier::{Retention, Tier, choose_tier};
use super::{DB_FILE, StoreConfig};
use crate::server::series::{Agg, Bucket, rebucket};

/// See the module documentation.
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
    /// The mount points of the agent's filesystems with a history: a point's `fs[i]` is
    /// `filesystems[i]`'s.
    pub filesystems: Vec<String>,
}

/// The raw tier over a range: `raw`, and the last seconds still in `raw_log` (skipping a
/// repeat of a sample already in `raw`).
static RAW_RANGE: LazyLock<String> = LazyLock::new(|| {
    let columns = rows::list(SampleRow::columns());
    format!(
        "SELECT {columns} FROM raw
         WHERE agent = ?1 AND ts_ms >= ?2 AND ts_ms < ?3
         UNION ALL
         SELECT {columns} FROM raw_log AS l
         WHERE agent = ?1 AND ts_ms >= ?2 AND ts_ms < ?3
           AND NOT EXISTS (SELECT 1 FROM raw WHERE run = l.run AND seq = l.seq)"
    )
});

/// A rollup tier over a range.
static ROLLUP_RANGE: LazyLock<HashMap<Tier, String>> = LazyLock::new(|| {
    Tier::ROLLUPS
        .iter()
        .map(|&tier| {
            let sql = format!(
                "SELECT {} FROM {} WHERE agent = ?1 AND ts_ms >= ?2 AND ts_ms < ?3",
                rows::list(RollupRow::columns()),
                tier.table()
            );
            (tier, sql)
        })
        .collect()
});

/// `agent`'s filesystems with a history, by slot (a slot never written reads as "").
fn mounts(conn: &Connection, agent: i64) -> Result<Vec<String>> {
    let mut q = conn.prepare_cached(&MOUNTS)?;
    let mut out: Vec<String> = Vec::new();
    for row in q.query_map([agent], MountRow::from_row)? {
        let row = row?;
        let Ok(slot) = usize::try_from(row.slot) else {
            continue;
        };
        if slot < super::MAX_FS_HISTORY {
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
    /// created it).
    pub fn open(config: &StoreConfig) -> Result<Reader> {
        let path = config.data_dir.join(DB_FILE);
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| {
            c.busy_timeout(Duration::from_secs(5))?;
            Ok(c)
        })
        .map_err(|error| StoreError::Open { path, error })?;
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
    ) -> Result<Option<Series>> {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let agent: Option<i64> = conn
            .query_row("SELECT key FROM agents WHERE id = ?1", [agent_id], |r| {
                r.get("key")
            })
            .optional()?;
        let Some(agent) = agent else {
            return Ok(None);
        };
        let tier = choose_tier(from_ms, step_ms, now_ms, &self.retention);
        let range = params![agent, i64_of(from_ms), i64_of(to_ms)];
        let rows: Vec<(u64, Agg)> = if tier == Tier::Raw {
            conn.prepare_cached(&RAW_RANGE)?
                .query_map(range, |r| {
                    let row = SampleRow::from_row(r)?;
                    Ok((u64_of(row.ts_ms), row.agg()))
                })?
                .collect::<rusqlite::Result<_>>()?
        } else {
            let sql = ROLLUP_RANGE
                .get(&tier)
                .ok_or(rusqlite::Error::InvalidQuery)?;
            conn.prepare_cached(sql)?
                .query_map(range, |r| {
                    let row = RollupRow::from_row(r)?;
                    Ok((u64_of(row.ts_ms), row.agg()))
                })?
                .collect::<rusqlite::Result<_>>()?
        };
        Ok(Some(Series {
            tier,
            points: rebucket(rows, from_ms, to_ms, step_ms),
            filesystems: mounts(&conn, agent)?,
        }))
    }
}
