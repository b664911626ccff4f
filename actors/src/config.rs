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
