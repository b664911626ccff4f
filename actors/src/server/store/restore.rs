//! What the last server left, read back at startup: every agent's last hello, last-known
//! sample, resume point and newest samples ([`Restored`]), for the Registry to carry on with.

use rusqlite::{Connection, params};

use super::error::Result;
use super::rows::{self, AgentRow, u64_of};
use crate::protocol::{Hello, Metrics};
use crate::server::history::Point;

/// What the last server left about one agent.
#[derive(Debug, Clone)]
pub struct Restored {
    pub hello: Hello,
    pub ip: String,
    /// The last sample stored (full, as the agent sent it: the Registry rebuilds the agent's
    /// whole-machine view from it).
    pub latest: Option<Metrics>,
    /// Highest seq of `hello.run_id` on disk.
    pub last_seq: u64,
    /// The newest samples of that run, oldest first (their `run` is 0: the Registry's
    /// [`History::resume`](crate::server::history::History::resume) makes them its current
    /// run).
    pub points: Vec<Point>,
}

/// Reads every agent's last-known state, with up to `ring` of its newest samples.
pub(super) fn load(conn: &Connection, ring: usize) -> Result<Vec<Restored>> {
    let mut agents = conn.prepare(&format!(
        "SELECT {} FROM agents ORDER BY key",
        rows::list(AgentRow::columns())
    ))?;
    let mut points = conn.prepare(
        "SELECT seq, ts_ms, cpu, mem, load1_x100, fs_pct_x100 FROM raw
         WHERE run = ?1 ORDER BY seq DESC LIMIT ?2",
    )?;
    let rows = agents.query_map([], AgentRow::from_row)?;
    let mut out = Vec::new();
    for row in rows {
        let agent = row?;
        let Ok(hello) = serde_json::from_str::<Hello>(&agent.hello) else {
            tracing::warn!("store: skipping an agent whose stored hello does not parse");
            continue;
        };
        let latest = agent
            .latest
            .and_then(|l| serde_json::from_str::<Metrics>(&l).ok());
        let mut pts: Vec<Point> = points
            .query_map(
                params![agent.run_key, i64::try_from(ring).unwrap_or(i64::MAX)],
                |r| {
                    Ok(Point {
                        load1: r
                            .get::<_, Option<i64>>("load1_x100")?
                            .map(|l| l as f32 / 100.0),
                        fs_pct_x100: r
                            .get::<_, Option<i64>>("fs_pct_x100")?
                            .and_then(|p| u16::try_from(p).ok()),
                        ..Point::new(
                            u64_of(r.get("seq")?),
                            u64_of(r.get("ts_ms")?),
                            r.get::<_, Option<f64>>("cpu")?.map(|c| c as f32),
                            r.get::<_, Option<i64>>("mem")?.map(u64_of),
                        )
                    })
                },
            )?
            .collect::<rusqlite::Result<_>>()?;
        pts.reverse();
        // Raw rows are written before the agent's row catches up (at most ROLLUP_DELAY later).
        let newest = pts.last().map_or(0, |p| p.seq);
        out.push(Restored {
            hello,
            ip: agent.ip,
            latest,
            last_seq: u64_of(agent.last_seq).max(newest),
            points: pts,
        });
    }
    Ok(out)
}
