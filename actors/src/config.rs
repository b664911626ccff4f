//! Defaults and timing constants, in one place. The binaries expose each default as a flag
//! (and a `LANMON_*` environment variable); the library never hard-codes an address.

use std::time::Duration;

/// TCP port the server listens on and agents connect to.
pub const DEFAULT_PORT: u16 = 8080;
/// The server's default listen address: every interface, so agents on the LAN reach it.
pub const DEFAULT_BIND: &str = "0.0.0.0:8080";
/// How often an agent samples and sends.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// How often the server's Reporter prints.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// An agent with no sample for this many of its own intervals is shown as `stale`.
pub const STALE_AFTER_INTERVALS: u32 = 2;
/// Time a new connection has to send `hello` before the server closes it.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the server gives sessions to say goodbye on shutdown before it stops anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);
/// Offline agents are forgotten after this long, so the registry cannot grow without bound
/// from agents that never come back.
pub const OFFLINE_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Most agents the registry remembers (live or not); beyond it the oldest offline are dropped.
pub const MAX_AGENTS: usize = 100_000;
/// An agent id's home address (the IP its samples come from, which wins a contest for the id
/// against any other address) moves to a new IP only after the id has streamed from there,
/// on one connection, for this long (see `server::registry`). As long as offline agents are
/// remembered: an impersonator must hold the id for a day while the real agent is away.
pub const HOME_MOVES_AFTER: Duration = Duration::from_secs(24 * 3600);

/// First reconnect delay of the agent; doubles per failed attempt up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest reconnect delay of the agent.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long the agent waits for a TCP connect to complete.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the agent waits for `welcome` after sending `hello`.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server waits for a peer to take a frame before it gives up on the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued for one connection before the server decides the peer is not reading.
pub const SESSION_QUEUE_FRAMES: usize = 256;
/// Samples remembered per agent by the server (one hour at the default 5 s interval).
pub const DEFAULT_HISTORY: usize = 720;
/// The server drops a connection that sent nothing for this many of the agent's intervals
/// (the agent's samples are its heartbeat); the agent likewise gives up on a server that has
/// not acknowledged anything for this many intervals.
pub const IDLE_INTERVALS: u32 = 3;
/// Most simultaneous connections the server accepts.
pub const MAX_CONNECTIONS: usize = 20_000;
/// Most simultaneous connections from one IP address.
pub const MAX_CONNECTIONS_PER_IP: usize = 1_000;
/// TCP keepalive: first probe after this much silence (both sides), as a second line of
/// defence under the application heartbeat.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// TCP keepalive: time between probes, and how many unanswered probes close the socket.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_RETRIES: u32 = 3;

/// The Registry drops offline agents past [`OFFLINE_RETENTION`] this often.
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// A session's idle timeout is never shorter than this, whatever the agent's interval.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(1);
/// A session's idle timeout is never longer than one of its agent's intervals plus this,
/// whatever the agent claims (3 intervals of an hour would be 3 h of a slot held in silence).
pub const MAX_IDLE_GRACE: Duration = Duration::from_secs(5 * 60);
/// While the server holds at least this share (in percent) of `--max-connections`, a
/// connection silent for [`PRESSURE_IDLE_TIMEOUT`] is closed (`limit`), whatever its agent's
/// interval: silent connections cannot keep new agents out.
pub const PRESSURE_PERCENT: usize = 90;
/// See [`PRESSURE_PERCENT`]. Agents at the default 5 s interval are never this silent.
pub const PRESSURE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes of partly received frames held across all connections (beyond 4 KiB each):
/// see `codec::FrameBudget`.
pub const MAX_BUFFERED_BYTES: usize = 64 * 1024 * 1024;
/// A session checks for silence once per agent interval, clamped to this range (it closes
/// within the idle timeout plus one check).
pub const IDLE_CHECK_MIN: Duration = Duration::from_millis(50);
pub const IDLE_CHECK_MAX: Duration = Duration::from_secs(5);
/// The Listener pauses this long after an accept error (e.g. out of file descriptors) so it
/// cannot spin the CPU.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one "connection refused by a limit" log line per this period.
pub const LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The server's limits on what one peer may do. Each has a flag; hitting one ends that
/// connection only (with an `error` frame where possible and one log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Longest frame accepted, in bytes.
    pub max_frame_len: usize,
    /// Most per-core entries in `hello.cores` (and so in every sample).
    pub max_cores: usize,
    /// Most simultaneous connections in total.
    pub max_connections: usize,
    /// Most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Time a connection has to send `hello` (slowloris guard).
    pub hello_timeout: Duration,
    /// A connection silent for this many of its agent's intervals is closed (`timeout`), but
    /// never later than one interval plus [`MAX_IDLE_GRACE`].
    pub idle_intervals: u32,
    /// Near the connection limit ([`PRESSURE_PERCENT`]), a connection silent this long is
    /// closed (`limit`).
    pub pressure_idle_timeout: Duration,
    /// Most bytes of partly received frames held across all connections (see
    /// [`MAX_BUFFERED_BYTES`]).
    pub max_buffered_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: crate::protocol::MAX_FRAME_LEN,
            max_cores: crate::protocol::MAX_CORES,
            max_connections: MAX_CONNECTIONS,
            max_connections_per_ip: MAX_CONNECTIONS_PER_IP,
            hello_timeout: HELLO_TIMEOUT,
            idle_intervals: IDLE_INTERVALS,
            pressure_idle_timeout: PRESSURE_IDLE_TIMEOUT,
            max_buffered_bytes: MAX_BUFFERED_BYTES,
        }
    }
}
