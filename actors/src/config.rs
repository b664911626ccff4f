//! Timing constants both sides share, the server's [`Limits`], and [`ConfigError`], the one
//! error a configuration can fail with.
//!
//! A setting's default lives as an associated constant on the type it configures
//! (`Limits::DEFAULT_MAX_CONNECTIONS`, `crate::server::ServerConfig::DEFAULT_REPORT_INTERVAL`,
//! `crate::agent::AgentConfig::DEFAULT_INTERVAL`, ...), and so does its allowed range; each
//! config type's `validate` applies that policy, so a server or agent started in-process gets
//! exactly what the binaries give. The binaries expose every default as a flag (and a
//! `LANMON_*` environment variable); the library never hard-codes an address.

use std::time::Duration;

/// TCP port the server listens on and agents connect to.
pub const DEFAULT_PORT: u16 = 8080;
/// An agent with no sample for this many of its own intervals is shown as `stale`.
pub const STALE_AFTER_INTERVALS: u32 = 2;
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
/// The server drops a connection that sent nothing for this many of the agent's intervals
/// (the agent's samples are its heartbeat); the agent likewise gives up on a server that has
/// not acknowledged anything for this many intervals.
pub const IDLE_INTERVALS: u32 = 3;
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
    /// Longest frame accepted, in bytes (at least [`Limits::MIN_FRAME_LEN`]).
    pub max_frame_len: usize,
    /// Most per-core entries in `hello.cores` (and so in every sample); at least 1.
    pub max_cores: usize,
    /// Most simultaneous connections in total.
    pub max_connections: usize,
    /// Most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Time a connection has to send `hello` (slowloris guard).
    pub hello_timeout: Duration,
    /// A connection silent for this many of its agent's intervals is closed (`timeout`), but
    /// never later than one interval plus [`MAX_IDLE_GRACE`]; in [`Limits::IDLE_INTERVALS_RANGE`].
    pub idle_intervals: u32,
    /// Near the connection limit ([`PRESSURE_PERCENT`]), a connection silent this long is
    /// closed (`limit`).
    pub pressure_idle_timeout: Duration,
    /// Most bytes of partly received frames held across all connections (see
    /// [`MAX_BUFFERED_BYTES`]).
    pub max_buffered_bytes: usize,
    /// Samples one agent id may send per interval it announced, sustained; 0: no limit (see
    /// `server::intake`). Beyond it and its burst the connection is closed (`limit`).
    pub samples_per_interval: u32,
    /// Samples one agent id may send at once beyond that (its replay after a reconnect); at
    /// least [`Limits::MIN_SAMPLE_BURST`].
    pub sample_burst: u32,
}

impl Limits {
    /// Longest frame by default: the protocol's own limit.
    pub const DEFAULT_MAX_FRAME_LEN: usize = crate::protocol::MAX_FRAME_LEN;
    /// Shortest frame limit [`Limits::validate`] leaves in place: a smaller one would refuse
    /// an ordinary `hello`, so it is raised to this.
    pub const MIN_FRAME_LEN: usize = 1024;
    /// Most cores per agent by default: the protocol's own limit.
    pub const DEFAULT_MAX_CORES: usize = crate::protocol::MAX_CORES;
    /// Most simultaneous connections by default.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
    /// Most simultaneous connections from one IP address by default.
    pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1_000;
    /// Time a new connection has to send `hello` by default.
    pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
    /// Silent intervals before a connection is closed, by default ([`IDLE_INTERVALS`], which
    /// the agent uses for its side of the heartbeat).
    pub const DEFAULT_IDLE_INTERVALS: u32 = IDLE_INTERVALS;
    /// Allowed `idle_intervals`: fewer than 2 would close a connection whose agent is merely
    /// a little late; more than 100 would keep dead connections for hours.
    pub const IDLE_INTERVALS_RANGE: std::ops::RangeInclusive<u32> = 2..=100;
    /// Samples per announced interval by default: twice what an agent sends.
    pub const DEFAULT_SAMPLES_PER_INTERVAL: u32 = 2;
    /// Burst by default: twice the agent's default `--buffer` (720), so that the replay of a
    /// full buffer after a reconnect always fits.
    pub const DEFAULT_SAMPLE_BURST: u32 = 1_440;
    /// Smallest burst [`Limits::validate`] leaves in place: an agent sends up to 32 samples
    /// before it waits for an acknowledgement.
    pub const MIN_SAMPLE_BURST: u32 = 32;

    /// Applies the policy: a frame limit below [`Limits::MIN_FRAME_LEN`] is raised to it, a
    /// core limit of 0 to 1 and a sample burst to [`Limits::MIN_SAMPLE_BURST`] (silently, as
    /// the flags always did); `idle_intervals` outside [`Limits::IDLE_INTERVALS_RANGE`] is an
    /// error.
    pub fn validate(self) -> Result<Self, ConfigError> {
        if !Self::IDLE_INTERVALS_RANGE.contains(&self.idle_intervals) {
            return Err(ConfigError::IdleIntervals {
                got: self.idle_intervals,
            });
        }
        Ok(Self {
            max_frame_len: self.max_frame_len.max(Self::MIN_FRAME_LEN),
            max_cores: self.max_cores.max(1),
            sample_burst: self.sample_burst.max(Self::MIN_SAMPLE_BURST),
            ..self
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: Self::DEFAULT_MAX_FRAME_LEN,
            max_cores: Self::DEFAULT_MAX_CORES,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: Self::DEFAULT_MAX_CONNECTIONS_PER_IP,
            hello_timeout: Self::DEFAULT_HELLO_TIMEOUT,
            idle_intervals: Self::DEFAULT_IDLE_INTERVALS,
            pressure_idle_timeout: PRESSURE_IDLE_TIMEOUT,
            max_buffered_bytes: MAX_BUFFERED_BYTES,
            samples_per_interval: Self::DEFAULT_SAMPLES_PER_INTERVAL,
            sample_burst: Self::DEFAULT_SAMPLE_BURST,
        }
    }
}

/// Why a configuration was refused. Each message names the setting by its command-line flag
/// (the config field of the same name), since that is where people meet it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A beacon target that is neither an IP address nor IP:PORT.
    #[error("--beacon-to `{0}`: expected an IP address or IP:PORT")]
    BeaconTarget(String),
    /// `idle_intervals` outside [`Limits::IDLE_INTERVALS_RANGE`].
    #[error(
        "--idle-intervals must be in {}..={}, not {got}",
        Limits::IDLE_INTERVALS_RANGE.start(),
        Limits::IDLE_INTERVALS_RANGE.end()
    )]
    IdleIntervals { got: u32 },
    /// An agent interval outside
    /// [`AgentConfig::INTERVAL_RANGE`](crate::agent::AgentConfig::INTERVAL_RANGE).
    #[error(
        "--interval must be between {:?} (CPU usage cannot be measured faster) and {:?}",
        crate::agent::AgentConfig::INTERVAL_RANGE.start(),
        crate::agent::AgentConfig::INTERVAL_RANGE.end()
    )]
    AgentInterval { got: Duration },
    /// The agent's metric groups or selections (`--collect`, `--processes`, …).
    #[error("{0}")]
    Collect(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every default is the documented constant, and the defaults pass validation unchanged.
    #[test]
    fn defaults_are_the_constants_and_valid() {
        let limits = Limits::default();
        assert_eq!(limits.max_frame_len, 64 * 1024);
        assert_eq!(limits.max_cores, 4096);
        assert_eq!(limits.max_connections, 20_000);
        assert_eq!(limits.max_connections_per_ip, 1_000);
        assert_eq!(limits.hello_timeout, Duration::from_secs(10));
        assert_eq!(limits.idle_intervals, 3);
        assert_eq!(
            (limits.samples_per_interval, limits.sample_burst),
            (2, 1440)
        );
        assert_eq!(limits.clone().validate(), Ok(limits));
    }

    /// A frame limit under 1 KiB is raised to 1 KiB and a core limit of 0 to 1; values at or
    /// above the floor stay as given.
    #[test]
    fn small_frame_and_core_limits_are_raised() -> Result<(), ConfigError> {
        let tiny = Limits {
            max_frame_len: 10,
            max_cores: 0,
            ..Limits::default()
        }
        .validate()?;
        assert_eq!((tiny.max_frame_len, tiny.max_cores), (1024, 1));
        let no_burst = Limits {
            sample_burst: 0,
            ..Limits::default()
        }
        .validate()?;
        assert_eq!(no_burst.sample_burst, 32);
        let exact = Limits {
            max_frame_len: 1024,
            max_cores: 1,
            ..Limits::default()
        }
        .validate()?;
        assert_eq!((exact.max_frame_len, exact.max_cores), (1024, 1));
        let big = Limits {
            max_frame_len: 1025,
            max_cores: 2,
            ..Limits::default()
        }
        .validate()?;
        assert_eq!((big.max_frame_len, big.max_cores), (1025, 2));
        Ok(())
    }

    /// `idle_intervals` is accepted from 2 to 100 and refused outside with a message that
    /// names the flag and the range.
    #[test]
    fn idle_intervals_outside_the_range_are_refused() {
        let with = |n| {
            Limits {
                idle_intervals: n,
                ..Limits::default()
            }
            .validate()
        };
        assert!(with(2).is_ok());
        assert!(with(100).is_ok());
        for bad in [0, 1, 101] {
            assert_eq!(with(bad), Err(ConfigError::IdleIntervals { got: bad }));
        }
        assert_eq!(
            ConfigError::IdleIntervals { got: 1 }.to_string(),
            "--idle-intervals must be in 2..=100, not 1"
        );
    }
}
