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

/// Largest length of the free-text fields of `hello` (ids, names, OS string), in bytes.
pub const MAX_TEXT_LEN: usize = 256;

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

/// `metrics`: one sample. `cpu` or `memory` is absent when that reading failed on the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// 1 for the first sample of a run, then +1 per sample; never reset on reconnect.
    pub seq: u64,
    /// When the sample was taken, in milliseconds since the Unix epoch (agent clock).
    pub ts_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
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
