//! The queued writes of one batch, written: hellos into `agents` and `runs`, samples appended
//! to `raw_log`, and the trimming of `raw_log` once its rows have moved.
//!
//! This is the hot path: per sample, one cached INSERT into `raw_log` (a table without
//! indexes, so only its last page is written) with the row bound by position, the run's key
//! looked up without building a string ([`super::keys`]), and its filesystems' slots the same
//! way.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Instant;

use rusqlite::{Transaction, named_params};

use super::error::Result;
use super::keys::Keys;
use super::rollup::{Latest, Pending};
use super::rows::{self, SampleRow};
use super::{Append, Attach, DurableSeq};
use crate::protocol::Metrics;

/// One queued write.
#[derive(Debug)]
// Nearly every queued write is an Append: boxing it would add an allocation per sample and
// save nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Op {
    Attach(Attach),
    Append(Append),
}

/// What one batch logged.
#[derive(Debug, Default)]
pub(super) struct Logged {
    /// Per agent key: the samples it logged, with the newest of them as `latest`.
    pub added: HashMap<i64, Pending>,
    /// Per agent run in the batch: the highest seq it logged.
    pub durable: Vec<DurableSeq>,
}

static LOG_INSERT: LazyLock<String> =
    LazyLock::new(|| rows::insert("INSERT", "raw_log", SampleRow::columns()));

/// Writes `ops` in order: each hello, and each sample appended to `raw_log` (noted as logged
/// at `now`).
pub(super) fn write(
    tx: &Transaction<'_>,
    keys: &mut Keys,
    ops: &[Op],
    now: Instant,
) -> Result<Logged> {
    // Per (agent key, run key): the highest seq in the batch.
    let mut highest: HashMap<(i64, i64), DurableSeq> = HashMap::new();
    let mut added: HashMap<i64, Pending> = HashMap::new();
    // Per agent key: its newest sample (cloned once, below).
    let mut newest: HashMap<i64, (i64, &Metrics)> = HashMap::new();
    {
        let mut log = tx.prepare_cached(&LOG_INSERT)?;
        for op in ops {
            match op {
                Op::Attach(a) => attach(tx, keys, a)?,
                Op::Append(s) => {
                    // An Append always follows its Attach (same sender, same mailbox).
                    let Some(agent) = keys.agent(tx, &s.agent_id)? else {
                        continue;
                    };
                    let run = keys.run(tx, agent, &s.run_id)?;
                    let m = &s.metrics;
                    let fs = match m.filesystems.as_deref() {
                        Some(list) => {
                            let mut blob = Vec::with_capacity(list.len() * 7);
                            for f in list {
                                if let Some(slot) = keys.mount_slot(tx, agent, &f.mount)? {
                                    rows::push_fs(&mut blob, slot, f);
                                }
                            }
                            Some(blob)
                        }
                        None => None,
                    };
                    let row = SampleRow::of(agent, run, m, &s.rates, fs);
                    match row.execute(&mut log)? {
                        1 => {}
                        n => return Err(rusqlite::Error::StatementChangedRows(n).into()),
                    }
                    let rowid = tx.last_insert_rowid();
                    added
                        .entry(agent)
                        .or_insert_with(|| Pending::new(now, rowid))
                        .rows
                        .push(row);
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
    Ok(Logged {
        added,
        durable: highest.into_values().collect(),
    })
}

/// Records an agent's hello and makes its run current.
fn attach(tx: &Transaction<'_>, keys: &mut Keys, a: &Attach) -> Result<()> {
    let hello = serde_json::to_string(&a.hello)?;
    tx.prepare_cached(
        "INSERT INTO agents (id, hello, ip, run_id, seen_ms)
         VALUES (:id, :hello, :ip, :run_id, :seen_ms)
         ON CONFLICT (id) DO UPDATE SET hello = excluded.hello, ip = excluded.ip,
           last_seq = CASE WHEN run_id = excluded.run_id THEN last_seq ELSE 0 END,
           latest = CASE WHEN run_id = excluded.run_id THEN latest ELSE NULL END,
           run_id = excluded.run_id, seen_ms = excluded.seen_ms",
    )?
    .execute(named_params! {
        ":id": a.hello.agent_id,
        ":hello": hello,
        ":ip": a.ip,
        ":run_id": a.hello.run_id,
        ":seen_ms": rows::i64_of(crate::util::now_ms()),
    })?;
    let Some(agent) = keys.agent(tx, &a.hello.agent_id)? else {
        return Ok(());
    };
    let run = keys.run(tx, agent, &a.hello.run_id)?;
    tx.prepare_cached("UPDATE agents SET run_key = :run WHERE key = :agent")?
        .execute(named_params! {":run": run, ":agent": agent})?;
    Ok(())
}

/// Deletes every `raw_log` row below `keep_from` (they have moved): a range at the start of
/// the table; a seek and nothing else when there is none.
pub(super) fn trim(tx: &Transaction<'_>, keep_from: i64) -> Result<()> {
    tx.prepare_cached("DELETE FROM raw_log WHERE rowid < ?1")?
        .execute([keep_from])?;
    Ok(())
}
