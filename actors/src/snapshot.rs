//! The server's view of every agent, as printed by `--report-format json` (one object per
//! line). This is a public interface used by people's scripts: fields are only ever added.
//!
//! ```json
//! {"version":1,"ts_ms":1764115200000,
//!  "server":{"id":"…","name":"lab","version":"0.1.0","listen":"0.0.0.0:8080"},
//!  "summary":{"agents":1,"live":1,"stale":0,"offline":0},
//!  "agents":[{"id":"…","name":"web-1","ip":"10.0.0.7", "status":"live","seq":42,
//!             "cpu":{"total":12.5,"per_core":[10.0,15.0]},
//!             "memory":{"total":8,"used":4,"free":2,"available":4},"last_seen_ms":812, …}]}
//! ```

use serde::{Deserialize, Serialize};

use crate::protocol::{Cpu, Memory};

/// Version of the snapshot format; bumped only for a documented breaking change.
pub const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    /// When the snapshot was taken, milliseconds since the Unix epoch (server clock).
    pub ts_ms: u64,
    pub server: ServerInfo,
    pub summary: Summary,
    /// Every known agent, sorted by name then id.
    pub agents: Vec<AgentView>,
    /// The durable history's state; absent with `--no-store`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreView>,
}

/// Whether the durable history writes (`ok`) or not (`failing`: nothing is acknowledged
/// until it works again; agents keep their samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreStatus {
    Ok,
    Failing,
}

/// The durable history's state in a snapshot and in `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreView {
    pub status: StoreStatus,
    /// While failing: the last error (e.g. `database or disk is full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// While failing: when the first failed commit happened, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<u64>,
    /// While failing: failed commits in a row.
    #[serde(default)]
    pub failed_attempts: u64,
    /// While failing: writes (samples, hellos) waiting to be committed.
    #[serde(default)]
    pub queued_writes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub id: String,
    pub name: String,
    pub version: String,
    /// The TCP address the server accepts agents on (the real port when bound to port 0).
    pub listen: String,
    /// The HTTP address (API, `/metrics`, dashboard), when HTTP is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    pub agents: usize,
    pub live: usize,
    pub stale: usize,
    pub offline: usize,
}

/// `live`: connected and sampling on time; `stale`: connected but no sample for
/// [`STALE_AFTER_INTERVALS`](crate::config::STALE_AFTER_INTERVALS) of its intervals;
/// `offline`: not connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Live,
    Stale,
    Offline,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Live => "live",
            Status::Stale => "stale",
            Status::Offline => "offline",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    /// The agent's stable id (from `hello`).
    pub id: String,
    pub name: String,
    pub hostname: String,
    /// Source IP of the agent's connection, as the server sees it.
    pub ip: String,
    pub os: String,
    pub cores: u32,
    pub agent_version: String,
    pub interval_ms: u64,
    /// The agent's current (or last) run.
    pub run_id: String,
    pub status: Status,
    /// Why the agent is offline (`bye`, `connection closed`, `error: …`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_reason: Option<String>,
    /// Highest sample sequence number received in the current run (0 before the first).
    pub seq: u64,
    /// Latest CPU reading, `null` before the first sample or when the agent could not read it.
    pub cpu: Option<Cpu>,
    /// Latest memory reading in bytes, `null` like `cpu`.
    pub memory: Option<Memory>,
    /// Milliseconds since the latest sample arrived (`null` before the first).
    pub last_seen_ms: Option<u64>,
    /// Agent-side timestamp of the latest sample, ms since the Unix epoch.
    pub last_sample_ts_ms: Option<u64>,
    /// Samples accepted in the current run.
    pub received: u64,
    /// Samples received again (already seen) and dropped, in the current run.
    pub duplicates: u64,
    /// Samples of the current run whose timestamp was too far from the server's clock (more
    /// than 5 min ahead, or older than the raw tier keeps) and that were stored at the time
    /// they arrived instead (see `server::intake`).
    #[serde(default)]
    pub retimed: u64,
    /// Sequence numbers never received between `first_seq` and `seq`, i.e. within the
    /// server's history window (`--history` samples) of the current run.
    pub gaps: u64,
    /// Lowest sequence number of the current run still in the history window (0 before the
    /// first sample); it moves up as the window slides.
    pub first_seq: u64,
    /// With a store (`--data-dir`): the highest seq of the current run on disk, i.e. what the
    /// server has acknowledged (or will with its next ack). Absent with `--no-store`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_seq: Option<u64>,
}

/// Snapshot builders for unit tests (the Reporter's and `/metrics`' renderings).
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// An agent named `name` (id `id-<name>`) on 127.0.0.1 with 2 cores at 12.34 % CPU and
    /// 3 GiB of 8 GiB used; offline ones went with `bye`.
    pub fn agent(name: &str, status: Status) -> AgentView {
        AgentView {
            id: format!("id-{name}"),
            name: name.into(),
            hostname: name.into(),
            ip: "127.0.0.1".into(),
            os: "Linux".into(),
            cores: 2,
            agent_version: "0.1.0".into(),
            interval_ms: 5000,
            run_id: "r".into(),
            status,
            offline_reason: (status == Status::Offline).then(|| "bye".into()),
            seq: 3,
            cpu: Some(Cpu {
                total: 12.34,
                per_core: vec![10.0, 14.6],
            }),
            memory: Some(Memory {
                total: 8 << 30,
                used: 3 << 30,
                free: 1 << 30,
                available: Some(5 << 30),
            }),
            last_seen_ms: Some(1500),
            last_sample_ts_ms: Some(0),
            received: 3,
            duplicates: 0,
            retimed: 0,
            gaps: 0,
            first_seq: 1,
            stored_seq: None,
        }
    }

    /// A snapshot of server `lab` on 127.0.0.1:8080 with these agents (summary counted).
    pub fn snapshot(agents: Vec<AgentView>) -> Snapshot {
        let count = |s: Status| agents.iter().filter(|a| a.status == s).count();
        Snapshot {
            version: 1,
            ts_ms: 0,
            server: ServerInfo {
                id: "s".into(),
                name: "lab".into(),
                version: "0.1.0".into(),
                listen: "127.0.0.1:8080".into(),
                http: None,
            },
            summary: Summary {
                agents: agents.len(),
                live: count(Status::Live),
                stale: count(Status::Stale),
                offline: count(Status::Offline),
            },
            agents,
            store: None,
        }
    }
}
