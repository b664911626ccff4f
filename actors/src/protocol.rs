//! Wire protocol: the frames that agents and the server exchange.
//!
//! Transport: one TCP connection per agent, newline-delimited JSON, one object per line,
//! tagged by `"type"`. Protocol 2 ([`PROTOCOL_VERSION`]) carries these lines inside a Noise
//! session ([`crate::auth::noise`]: handshake first, then every byte encrypted and
//! authenticated); protocol 1 ([`PROTOCOL_V1`]) is the same lines in plaintext, still spoken
//! with a server in `--auth off` or, for old agents, `--auth optional`. The frames are the
//! same in both, plus `server_key` (protocol 2 only). Frames longer than [`MAX_FRAME_LEN`] are refused by the codec on both
//! sides ([`crate::codec`]). Unknown fields are ignored on decode so that later versions can
//! add optional fields without breaking older peers; a frame of an unknown `type` is an error.
//!
//! Golden fixtures of every frame live in `actors/tests/fixtures/` and are round-tripped by
//! `actors/tests/protocol_fixtures.rs`: a change to the wire format shows up as a fixture diff.

use serde::{Deserialize, Serialize};

/// Version spoken in `hello`/`welcome` over an authenticated (Noise) connection. Bumped only
/// for a documented, breaking change: 2 is the trust layer (README, "Security and trust").
pub const PROTOCOL_VERSION: u32 = 2;

/// The plaintext protocol of version-1 agents: what a plaintext connection's `hello` says
/// (`--auth off`, or an old agent in `--auth optional`).
pub const PROTOCOL_V1: u32 = 1;

/// Largest frame (one JSON line, newline excluded) either side accepts, in bytes.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Largest number of per-core entries a `hello`/`metrics` frame may carry.
pub const MAX_CORES: usize = 4096;

/// Largest length of the free-text fields of `hello` (ids, names, OS string) and of every
/// string in `metrics` (mount points, device and interface names, sensor labels, process
/// names), in bytes.
pub const MAX_TEXT_LEN: usize = 256;

/// Most entries of `metrics.filesystems`.
pub const MAX_FILESYSTEMS: usize = 64;
/// Most entries of `metrics.disks`.
pub const MAX_DISKS: usize = 64;
/// Most entries of `metrics.net`.
pub const MAX_INTERFACES: usize = 64;
/// Most entries of `metrics.temperatures`.
pub const MAX_SENSORS: usize = 64;
/// Most entries of `metrics.processes` (the top N by CPU and the top N by memory, merged).
pub const MAX_PROCESSES: usize = 32;
/// Temperatures outside this range (°C) are sensor faults: the agent leaves them out and the
/// server refuses them.
pub const TEMP_RANGE_C: std::ops::RangeInclusive<f32> = -100.0..=500.0;
/// Largest load average accepted (a run queue of a million threads is not a real machine).
pub const MAX_LOAD: f32 = 1.0e6;

/// Frames sent by an agent to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentFrame {
    /// First frame on every connection.
    Hello(Hello),
    /// One sample.
    Metrics(Metrics),
    /// The agent is going away on purpose (Ctrl+C, SIGTERM).
    Bye(Bye),
}

/// Frames sent by the server to an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Answer to an accepted `hello`.
    Welcome(Welcome),
    /// Every sample up to and including `seq` is stored; the agent may forget them.
    Ack(Ack),
    /// The server refuses something; it closes the connection right after this frame.
    Error(ErrorFrame),
    /// The server is going away on purpose (shutdown); the agent should reconnect later.
    Bye(Bye),
    /// Protocol 2: the server's key was rotated; pin the new one (sent over the authenticated
    /// channel to an agent that connected on the previous key).
    ServerKey(ServerKey),
}

/// `hello`: who the agent is. Sent once, first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the agent speaks ([`PROTOCOL_VERSION`]).
    pub proto: u32,
    /// Stable identity of the agent (survives restarts); the server keys agents by it.
    pub agent_id: String,
    /// New at every agent start; `(agent_id, run_id, seq)` names one sample uniquely.
    pub run_id: String,
    /// Display name (default: the hostname).
    pub name: String,
    pub hostname: String,
    pub os: String,
    /// Number of logical CPUs; every `metrics.cpu.per_core` has exactly this many entries.
    pub cores: u32,
    pub agent_version: String,
    /// Sampling interval in milliseconds.
    pub interval_ms: u64,
}

/// `metrics`: one sample. Every reading is optional: absent when that reading failed on the
/// agent, when its group is not collected (agent `--collect`), or when the agent is older than
/// the field (only `seq`, `ts_ms`, `cpu` and `memory` exist since the first version; a server
/// that predates a field ignores it). Counters (`disks`, `net`, `agent_cost.cpu_ms`) are
/// cumulative since the host (or agent) started, so a lost or late sample loses nothing: the
/// server derives rates from two samples.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// 1 for the first sample of a run, then +1 per sample; never reset on reconnect.
    pub seq: u64,
    /// When the sample was taken, in milliseconds since the Unix epoch (agent clock).
    pub ts_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// Where the machine's CPU time went since the previous sample, in percent.
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
    /// Mounted filesystems, at most [`MAX_FILESYSTEMS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystems: Option<Vec<Filesystem>>,
    /// Block devices (whole disks), at most [`MAX_DISKS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<Disk>>,
    /// Network interfaces, at most [`MAX_INTERFACES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<Vec<NetInterface>>,
    /// Temperature sensors, at most [`MAX_SENSORS`]; absent (not empty) on hosts without any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperatures: Option<Vec<Temperature>>,
    /// The busiest processes (agent `--processes N`), at most [`MAX_PROCESSES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Vec<Process>>,
    /// What the agent itself costs the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_cost: Option<AgentCost>,
    /// The agent's clock against the server's, measured at `welcome`; sent once per connection
    /// (with the first frame after `welcome`). Boxed: it is absent from nearly every sample,
    /// and samples are queued by the hundred (agent outbox, server history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<Box<ClockSync>>,
}

/// CPU usage in percent (0–100): the whole machine and each logical core.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    pub total: f32,
    pub per_core: Vec<f32>,
}

/// Memory in bytes. `used` is what programs hold (`total - available`); `free` is memory that
/// holds nothing at all (not even cache); `available` (optional) is what could be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    pub total: u64,
    pub used: u64,
    pub free: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<u64>,
}

/// Shares of the machine's CPU time since the previous sample, in percent (0–100; with idle
/// they add up to 100). `user_pct` includes nice and guest time, `system_pct` includes IRQ
/// and soft-IRQ time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuModes {
    pub user_pct: f32,
    pub system_pct: f32,
    pub iowait_pct: f32,
    pub steal_pct: f32,
}

/// Load averages over 1, 5 and 15 minutes (runnable and uninterruptible threads, as the kernel
/// counts them) and thread counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Load {
    pub load1: f32,
    pub load5: f32,
    pub load15: f32,
    /// Threads runnable right now (absent where the OS does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u32>,
    /// Threads in total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Processes in total (sent with the processes group, agent `--processes N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub procs: Option<u32>,
}

/// Swap space in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swap {
    pub total_bytes: u64,
    pub used_bytes: u64,
}

/// One mounted filesystem (the first mount of each device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    /// Where it is mounted (`/`, `/home`).
    pub mount: String,
    /// Filesystem type (`ext4`, `xfs`, `nfs4`).
    pub fs_type: String,
    /// What is mounted (`/dev/sda2`, `server:/export`).
    pub device: String,
    pub size_bytes: u64,
    /// Used by anyone (size minus free).
    pub used_bytes: u64,
    /// Available to unprivileged users (less than size minus used when blocks are reserved).
    pub avail_bytes: u64,
    /// Inodes in total (0 on filesystems without a fixed inode table).
    pub inodes: u64,
    pub inodes_used: u64,
}

/// Cumulative I/O counters of one block device since boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Kernel name (`sda`, `nvme0n1`).
    pub device: String,
    pub read_bytes: u64,
    pub written_bytes: u64,
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
    /// Time the device had I/O in flight, in milliseconds.
    pub io_ms: u64,
}

/// Cumulative counters of one network interface since it appeared. The error and drop
/// counters are left out while they are 0 (they nearly always are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInterface {
    /// Interface name (`eth0`, `wlp2s0`).
    pub interface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rx_errs: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tx_errs: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rx_drops: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tx_drops: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One temperature sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Temperature {
    /// The chip and the sensor's label (`coretemp Package id 0`, `acpitz`).
    pub sensor: String,
    /// Degrees Celsius, within [`TEMP_RANGE_C`].
    pub temp_c: f32,
}

/// One busy process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    /// The kernel's short name (`comm`, at most 15 bytes on Linux).
    pub name: String,
    /// CPU time since the previous sample, in percent of one core (like `top`: up to
    /// 100 × cores).
    pub cpu_pct: f32,
    /// Resident memory.
    pub rss_bytes: u64,
}

/// The agent's own footprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCost {
    /// Resident memory.
    pub rss_bytes: u64,
    /// CPU time (user + system) since the agent started, in milliseconds.
    pub cpu_ms: u64,
}

/// The three timestamps of a clock measurement: the server's clock when it sent `welcome`
/// (echoed from [`Welcome::ts_ms`]), the agent's clock when `welcome` arrived, and the round
/// trip from `hello` to `welcome` on the agent's monotonic clock. The server estimates the
/// agent's offset as `received_ts_ms - rtt_ms / 2 - welcome_ts_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockSync {
    pub welcome_ts_ms: u64,
    pub received_ts_ms: u64,
    pub rtt_ms: u64,
}

/// `bye`, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bye {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `welcome`: the server accepted the `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub proto: u32,
    pub server_id: String,
    pub server_name: String,
    pub server_version: String,
    /// Highest `seq` of this agent's current run that the server already holds (it survived a
    /// reconnect); the agent need not send those samples again. Absent for a new run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    /// The server's clock when it sent this frame, ms since the Unix epoch. An agent that
    /// knows the field echoes it in [`Metrics::clock`]. Absent from older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts_ms: Option<u64>,
}

/// `ack`: highest `seq` of this run that the server has received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub seq: u64,
}

/// `server_key`: the server's new static key after a rotation ([`crate::auth::rotation`]).
/// The agent pins `key` first and keeps the key of this session until `previous_until_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerKey {
    /// The new current key, Crockford base32.
    pub key: String,
    /// Its fingerprint (`SHA256:…`), for the agent's log line; must match `key`.
    pub fp: String,
    /// When the server stops accepting the key this session used, ms since the Unix epoch.
    pub previous_until_ms: u64,
}

/// `error`: a machine-readable code and a sentence for people. The connection closes after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
}

/// Why the server refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// `hello.proto` is not a version this server speaks.
    UnsupportedVersion,
    /// A frame was not valid JSON, too long, of an unknown type, or out of order.
    BadFrame,
    /// A frame was well-formed but its values are impossible (NaN, > 100 %, used > total…).
    InvalidValue,
    /// No `hello` arrived in time.
    Timeout,
    /// A newer connection with the same agent id took over.
    Replaced,
    /// A server limit was hit (connections in total or per IP, idle time, ...).
    Limit,
    /// Another live agent already uses this agent id.
    DuplicateId,
    /// Protocol 2: the agent's key is not enrolled yet; an operator must approve it (or the
    /// agent must join with the server's token). The agent retries with backoff.
    PendingApproval,
    /// Protocol 2: the agent id is enrolled with another key, or the key with another id.
    IdentityMismatch,
    /// Protocol 2: the agent's key was revoked.
    Revoked,
    /// Some other server-side limit.
    #[serde(other)]
    Other,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::InvalidValue => "invalid_value",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Replaced => "replaced",
            ErrorCode::Limit => "limit",
            ErrorCode::DuplicateId => "duplicate_id",
            ErrorCode::PendingApproval => "pending_approval",
            ErrorCode::IdentityMismatch => "identity_mismatch",
            ErrorCode::Revoked => "revoked",
            ErrorCode::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
