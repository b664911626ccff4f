//! The server's view of every agent, as printed by `--report-format json` (one object per
//! line). This is a public interface used by people's scripts: fields are only ever added.
//!
//! ```json
//! {"version":1,"ts_ms":1764115200000,
//!  "server":{"id":"…","name":"lab","version":"0.1.0","listen":"0.0.0.0:8080"},
//!  "summary":{"agents":1,"live":1,"stale":0,"offline":0},
//!  "agents":[{"id":"…","name":"web-1","ip":"10.0.0.7", "status":"live","seq":42,
//!             "cpu":{"total":12.5,"per_core":[10.0,15.0]},
//!             "memory":{"total":8,"used":4,"free":2,"available":4},"last_seen_ms":812, …,
//!             "load":{"load1":0.52,…},"filesystems":[…],"net":[{"interface":"eth0",
//!             "rx_bytes":…,"rx_bytes_per_s":1520.4,…}],"clock_offset_ms":-3, …}]}
//! ```
//!
//! The whole-machine fields of an agent ([`HostView`]) sit beside `cpu` and `memory` and are
//! absent when the agent does not send them (an older agent, a group it does not collect).
//! Units are in the names: `_bytes`, `_ms`, `_s` (seconds), `_pct` (percent, 0–100),
//! `_c` (°C), `_per_s` (per second, derived by the server from two samples' counters).

use serde::{Deserialize, Serialize};

use crate::config::AuthMode;
use crate::protocol::{
    AgentCost, Cpu, CpuModes, Disk, Filesystem, Load, Memory, NetInterface, Process, Swap,
    Temperature,
};

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
    /// Agents whose keys wait for the operator's approval (protocol 2): they have sent no
    /// sample. Absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingAgent>,
}

/// How the server knows an agent (protocol 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentAuth {
    /// Authenticated by its enrolled key (Noise handshake): only it can send as this id.
    Approved,
    /// Its key waits for approval: no sample accepted (only in [`Snapshot::pending`]).
    Pending,
    /// A protocol-1 agent without authentication (`--auth optional`): anyone could send as it.
    Unauthenticated,
    /// Its key was revoked by the operator (`server agents revoke`, the dashboard): refused
    /// from then on; shown until it is approved again or forgotten. Added after protocol 2's
    /// first release (a consumer that knows only the three others should treat it as unknown).
    Revoked,
}

impl AgentAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentAuth::Approved => "approved",
            AgentAuth::Pending => "pending",
            AgentAuth::Unauthenticated => "unauthenticated",
            AgentAuth::Revoked => "revoked",
        }
    }
}

/// An agent key waiting for approval (`server agents approve`, or the dashboard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAgent {
    /// The fingerprint of its key: compare it with what the agent printed.
    pub fp: String,
    /// The id, name and host name it presented (not bound to it until approved).
    pub id: String,
    pub name: String,
    pub hostname: String,
    /// Where it last connected from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// When it first and last presented itself, ms since the Unix epoch.
    pub first_seen_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
}

impl PendingAgent {
    /// The entry as an [`AgentView`] (offline, no readings, `auth: pending`), for the consumers
    /// that look at agents one by one (the alerts' `pending` rule).
    pub fn as_view(&self) -> AgentView {
        AgentView {
            id: self.id.clone(),
            name: self.name.clone(),
            hostname: self.hostname.clone(),
            ip: self.ip.clone().unwrap_or_default(),
            os: String::new(),
            cores: 0,
            agent_version: String::new(),
            interval_ms: 0,
            run_id: String::new(),
            status: Status::Offline,
            offline_reason: Some("pending approval".into()),
            seq: 0,
            cpu: None,
            memory: None,
            last_seen_ms: None,
            last_sample_ts_ms: None,
            received: 0,
            duplicates: 0,
            gaps: 0,
            first_seq: 0,
            stored_seq: None,
            retimed: 0,
            auth: Some(AgentAuth::Pending),
            fp: Some(self.fp.clone()),
            host: HostView::default(),
        }
    }
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
    /// Who may connect (`--auth`); absent from servers before protocol 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthMode>,
    /// The fingerprint of the server's key (`SHA256:…`), which agents pin; absent with
    /// `--auth off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
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
    /// How the server knows this agent: `approved` (its enrolled key), `unauthenticated`
    /// (protocol 1 in `--auth optional`) or `revoked` (its key `fp` was revoked since it
    /// connected: the Registry looks this up in the enrollment at every snapshot); absent with
    /// `--auth off` and for agents restored from the store that have not connected since the
    /// server started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AgentAuth>,
    /// The fingerprint of the agent's key, when it is `approved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fp: Option<String>,
    /// The whole machine beyond CPU and memory (flattened: its fields are the agent's).
    #[serde(flatten)]
    pub host: HostView,
}

/// An agent's latest whole-machine reading, with the rates the server derived from its
/// counters and the clock offset it measured. Every field is absent when unknown.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HostView {
    /// Where the CPU time went, in percent (see [`CpuModes`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_modes: Option<CpuModes>,
    /// Load averages and thread counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<Load>,
    /// Seconds since the host booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<Swap>,
    /// Mounted filesystems (sizes in bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystems: Option<Vec<Filesystem>>,
    /// Block devices: the agent's counters and the rates over the last interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<DiskView>>,
    /// Network interfaces: the agent's counters and the rates over the last interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Vec<NetView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperatures: Option<Vec<Temperature>>,
    /// The busiest processes (agents started with `--processes N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<Process>>,
    /// What the agent costs its host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_cost: Option<AgentCostView>,
    /// How far the agent's clock is ahead of the server's (negative: behind), in ms,
    /// measured at the agent's latest `welcome` and corrected for half the round trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// The round trip of that measurement (`hello` to `welcome`), in ms: the offset is
    /// known to within about half of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_rtt_ms: Option<u64>,
}

impl HostView {
    /// The fullest filesystem: (mount point, percent of its size in use), used counted as
    /// `size - available` (what `df` shows as Use%: reserved blocks are not available).
    pub fn fullest_filesystem(&self) -> Option<(&str, f64)> {
        self.filesystems
            .as_deref()?
            .iter()
            .filter(|f| f.size_bytes > 0)
            .map(|f| (f.mount.as_str(), used_pct(f)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Network bytes per second over every interface (received, sent); `None` until the
    /// server has two samples.
    pub fn net_rates(&self) -> Option<(f64, f64)> {
        let rates: Vec<(f64, f64)> = self
            .net
            .as_deref()?
            .iter()
            .filter_map(|n| Some((n.rx_bytes_per_s?, n.tx_bytes_per_s?)))
            .collect();
        (!rates.is_empty()).then(|| {
            rates
                .iter()
                .fold((0.0, 0.0), |(r, t), (dr, dt)| (r + dr, t + dt))
        })
    }
}

impl HostView {
    /// Disk bytes per second over every device (read, written); `None` until the server has
    /// two samples.
    pub fn disk_rates(&self) -> Option<(f64, f64)> {
        let rates: Vec<(f64, f64)> = self
            .disks
            .as_deref()?
            .iter()
            .filter_map(|d| Some((d.read_bytes_per_s?, d.written_bytes_per_s?)))
            .collect();
        (!rates.is_empty()).then(|| {
            rates
                .iter()
                .fold((0.0, 0.0), |(r, w), (dr, dw)| (r + dr, w + dw))
        })
    }
}

/// A filesystem's use in percent, as `df` computes Use%: `(size - avail) / size`.
#[allow(clippy::cast_precision_loss)] // byte counts: a ratio to display
pub fn used_pct(f: &Filesystem) -> f64 {
    if f.size_bytes == 0 {
        return 0.0;
    }
    f.size_bytes.saturating_sub(f.avail_bytes) as f64 * 100.0 / f.size_bytes as f64
}

/// One block device: the counters the agent sent and the rates derived from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskView {
    #[serde(flatten)]
    pub counters: Disk,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bytes_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_bytes_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes_per_s: Option<f64>,
    /// Share of the interval the device had I/O in flight, in percent (0–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_pct: Option<f64>,
}

/// One network interface: the counters the agent sent and the rates derived from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetView {
    #[serde(flatten)]
    pub counters: NetInterface,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bytes_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bytes_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_packets_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_packets_per_s: Option<f64>,
    /// Receive and send errors together, per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errs_per_s: Option<f64>,
    /// Received and sent packets dropped, per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drops_per_s: Option<f64>,
}

/// The agent's own cost: what it sent, and its CPU use over the last interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCostView {
    #[serde(flatten)]
    pub counters: AgentCost,
    /// CPU time over the last interval, in percent of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_pct: Option<f64>,
    /// CPU time per sample over the last interval, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms_per_sample: Option<f64>,
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
            auth: None,
            fp: None,
            host: HostView::default(),
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
                auth: None,
                fingerprint: None,
            },
            summary: Summary {
                agents: agents.len(),
                live: count(Status::Live),
                stale: count(Status::Stale),
                offline: count(Status::Offline),
            },
            agents,
            store: None,
            pending: Vec::new(),
        }
    }
}
