//! The agent's configuration: [`AgentConfig`] and [`Target`], the defaults of its settings
//! (associated constants) and the policy [`AgentConfig::validate`] applies to them.
//!
//! This is what the `agent` binary's flags mean: the binary only maps flags to fields.
//! [`run_system`](super::run_system), the binary's way to run, validates its config too;
//! [`run`](super::run) with an injected metrics source does not, so tests may sample faster
//! than real CPU counters allow.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::token::JoinToken;
use crate::config::{AuthMode, ConfigError};

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A host name or IP address and a TCP port.
    Host { host: String, port: u16 },
    /// Whatever server beacons on this UDP port (see [`crate::discovery`]).
    Discover {
        /// UDP port to listen on for beacons.
        port: u16,
        /// Only this server (by name); otherwise the first one heard.
        server_name: Option<String>,
        /// Give up (error) if no server is heard this long before the first connection.
        timeout: Option<Duration>,
    },
}

impl Target {
    /// The server's TCP port unless told otherwise.
    pub const DEFAULT_PORT: u16 = crate::config::DEFAULT_PORT;
    /// The UDP port beacons arrive on unless told otherwise.
    pub const DEFAULT_DISCOVERY_PORT: u16 = crate::discovery::DEFAULT_DISCOVERY_PORT;
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Host { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Host { host, port } => write!(f, "{host}:{port}"),
            Target::Discover {
                port,
                server_name: Some(name),
                ..
            } => write!(f, "`{name}` (discovered by UDP beacon on port {port})"),
            Target::Discover { port, .. } => {
                write!(f, "discovered by UDP beacon on port {port}")
            }
        }
    }
}

/// Everything the agent needs to run. [`AgentConfig::new`] fills in the defaults;
/// [`AgentConfig::validate`] applies the policy.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub target: Target,
    /// Stable identity; see [`default_agent_id`].
    pub id: String,
    /// Display name.
    pub name: String,
    /// Time between samples (in [`AgentConfig::INTERVAL_RANGE`] for real metrics).
    pub interval: Duration,
    /// Most samples kept while the server has not acknowledged them.
    pub buffer: usize,
    /// Protocol 2, authenticated and encrypted ([`AuthMode::Required`], the default), or
    /// plaintext protocol 1 ([`AuthMode::Off`], for a server run with `--auth off`).
    pub auth: AuthMode,
    /// Where the agent's key and pinned server keys live; `None`: in memory for this run.
    pub state_dir: Option<PathBuf>,
    /// The server's join token (`--join`): pins the server's key and enrolls the agent.
    pub join: Option<JoinToken>,
    /// Which metric groups [`run_system`](super::run_system) collects, and from what.
    pub collect: crate::metrics::CollectConfig,
}

impl AgentConfig {
    /// Time between samples by default.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
    /// Allowed sampling intervals with real metrics: from 200 ms (CPU usage cannot be
    /// measured faster) to one hour.
    pub const INTERVAL_RANGE: RangeInclusive<Duration> =
        Duration::from_millis(200)..=Duration::from_secs(3600);
    /// Samples kept for the server while it is away by default: one hour at the default
    /// interval.
    pub const DEFAULT_BUFFER: usize = 720;

    /// The defaults for `target`: named `name`, else this machine's host name; identified by
    /// `id`, else by [`default_agent_id`] of the name; the default interval and buffer.
    pub fn new(target: Target, name: Option<String>, id: Option<String>) -> Self {
        let name = name.unwrap_or_else(crate::util::host_name);
        Self {
            target,
            id: id.unwrap_or_else(|| default_agent_id(&name)),
            name,
            interval: Self::DEFAULT_INTERVAL,
            buffer: Self::DEFAULT_BUFFER,
            auth: AuthMode::Required,
            state_dir: None,
            join: None,
            collect: crate::metrics::CollectConfig::default(),
        }
    }

    /// Applies the policy: an interval outside [`AgentConfig::INTERVAL_RANGE`] is refused, and
    /// so are `--auth optional` (an agent speaks one protocol) and a join token with
    /// `--auth off` (plaintext has nothing to join).
    pub fn validate(self) -> Result<Self, ConfigError> {
        if !Self::INTERVAL_RANGE.contains(&self.interval) {
            return Err(ConfigError::AgentInterval { got: self.interval });
        }
        match (self.auth, &self.join) {
            (AuthMode::Optional, _) => Err(ConfigError::AgentAuth),
            (AuthMode::Off, Some(_)) => Err(ConfigError::JoinWithoutAuth),
            _ => Ok(self),
        }
    }
}

/// A stable agent id: a hash of this machine's identity (`/etc/machine-id`, else the host
/// name) and the agent's name, so it survives restarts and two agents with different names on
/// one machine are different agents.
pub fn default_agent_id(name: &str) -> String {
    let machine = std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(crate::util::host_name);
    crate::util::stable_id(&[&machine, name])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::Host {
            host: "127.0.0.1".into(),
            port: Target::DEFAULT_PORT,
        }
    }

    /// The defaults are the documented constants (and what `agent --help` shows): 5 s, 720
    /// samples, port 8080 for TCP and beacons; a name defaults to the host name and the id
    /// follows the name unless given.
    #[test]
    fn defaults_are_the_constants() {
        assert_eq!(Target::DEFAULT_PORT, 8080);
        assert_eq!(Target::DEFAULT_DISCOVERY_PORT, 8080);
        let c = AgentConfig::new(target(), None, None);
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.buffer, 720);
        assert_eq!(c.name, crate::util::host_name());
        assert_eq!(c.id, default_agent_id(&c.name));
        let named = AgentConfig::new(target(), Some("web-1".into()), None);
        assert_eq!(named.id, default_agent_id("web-1"));
        assert_ne!(named.id, c.id);
        let given = AgentConfig::new(target(), Some("web-1".into()), Some("fixed".into()));
        assert_eq!((given.name.as_str(), given.id.as_str()), ("web-1", "fixed"));
    }

    /// Intervals from 200 ms to 1 h are accepted as they are; outside that range they are
    /// refused with a message that names the flag and both bounds.
    #[test]
    fn interval_outside_the_range_is_refused() {
        let with = |interval| {
            AgentConfig {
                interval,
                ..AgentConfig::new(target(), Some("a".into()), Some("a".into()))
            }
            .validate()
            .map(|c| c.interval)
        };
        for ok in [
            Duration::from_millis(200),
            AgentConfig::DEFAULT_INTERVAL,
            Duration::from_secs(3600),
        ] {
            assert_eq!(with(ok), Ok(ok));
        }
        for bad in [
            Duration::ZERO,
            Duration::from_millis(199),
            Duration::from_secs(3600) + Duration::from_nanos(1),
        ] {
            assert_eq!(with(bad), Err(ConfigError::AgentInterval { got: bad }));
        }
        assert_eq!(
            ConfigError::AgentInterval {
                got: Duration::ZERO
            }
            .to_string(),
            "--interval must be between 200ms (CPU usage cannot be measured faster) and 3600s"
        );
    }
}
