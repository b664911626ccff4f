//! The server's configuration: [`ServerConfig`], the defaults of its settings (associated
//! constants) and the policy [`ServerConfig::validate`] applies to them.
//!
//! This is what the `server` binary's flags mean: the binary only maps flags to fields. Every
//! clamp and refusal lives here, and [`Server::start`](super::Server::start) validates its
//! config too, so a server started in a test process gets the same policy as the binary.
//! The defaults of the parts live on their own types: [`Limits`], [`BeaconConfig`],
//! [`HttpConfig`](super::http::HttpConfig), [`TextOptions`](super::reporter::TextOptions), and
//! the store's retention (`store::DEFAULT_*_RETENTION`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use crate::config::{ConfigError, DEFAULT_PORT, Limits};
use crate::server::beacon::BeaconConfig;
use crate::server::trust::TrustConfig;
use crate::server::{http, reporter, store};

/// Everything the server needs to start. [`ServerConfig::new`] fills in the defaults;
/// [`ServerConfig::validate`] applies the policy.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TCP address to accept agents on.
    pub bind: SocketAddr,
    /// Name shown in reports and given to agents in `welcome`.
    pub name: String,
    /// How often the report is written (at least [`ServerConfig::MIN_REPORT_INTERVAL`]).
    pub report_interval: Duration,
    pub report_format: reporter::ReportFormat,
    /// What the text report shows (sort, top, filter).
    pub text: reporter::TextOptions,
    /// UDP announcements for `agent --discover`; `None` turns them off.
    pub beacon: Option<BeaconConfig>,
    /// The HTTP API, `/metrics` and dashboard; `None` turns HTTP off.
    pub http: Option<http::HttpConfig>,
    /// What one peer may do.
    pub limits: Limits,
    /// Samples remembered per agent in memory (at least [`ServerConfig::MIN_HISTORY`]).
    pub history: usize,
    /// Durable history (SQLite under a data directory); `None`: in memory only, as before.
    pub store: Option<store::StoreConfig>,
    /// Threads that run the Sessions (decode, validate, acknowledge); 0: the server's own
    /// thread, with the Listener and the Registry.
    pub session_threads: usize,
    /// Alert rules and notifications ([`crate::server::alerts`]); `None` turns alerts off.
    /// With a store, alert states live in its database.
    pub alerts: Option<crate::server::alerts::AlertsSettings>,
    /// Who may connect (protocol 2 required by default) and where the identity lives.
    pub trust: TrustConfig,
}

impl ServerConfig {
    /// The default listen address: every interface, so agents on the LAN reach it.
    pub const DEFAULT_BIND: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DEFAULT_PORT));
    /// How often the Reporter writes by default.
    pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(10);
    /// Shortest report interval: a shorter one is raised to this.
    pub const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(50);
    /// Samples remembered per agent by default: one hour at the agent's default 5 s interval.
    pub const DEFAULT_HISTORY: usize = 720;
    /// Fewest samples remembered per agent: a smaller history is raised to this.
    pub const MIN_HISTORY: usize = 1;

    /// The defaults, listening on `bind`: this machine's host name, the default report
    /// interval, a text report, no beacon, no HTTP, default [`Limits`], the default history,
    /// no store, one session thread per core, and the secure default of the trust layer
    /// (protocol 2 required, manual approval) with an identity made in memory for this run
    /// (the `server` binary keeps it in the data directory).
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            name: crate::util::host_name(),
            report_interval: Self::DEFAULT_REPORT_INTERVAL,
            report_format: reporter::ReportFormat::Text,
            text: reporter::TextOptions::default(),
            beacon: None,
            http: None,
            limits: Limits::default(),
            history: Self::DEFAULT_HISTORY,
            store: None,
            session_threads: default_session_threads(),
            alerts: None,
            trust: TrustConfig::new(None),
        }
    }

    /// Applies the policy: values under a minimum are raised to it (the report interval,
    /// the history, the beacon interval, the frame and core limits: see [`Limits::validate`]
    /// and [`BeaconConfig::validate`]); values no minimum can fix are refused with a
    /// [`ConfigError`]. Validating twice changes nothing.
    pub fn validate(self) -> Result<Self, ConfigError> {
        if self.trust.mode == crate::config::AuthMode::Off
            && self.trust.policy == crate::auth::enroll::Policy::AutoApprove
        {
            return Err(ConfigError::AutoApproveWithoutAuth);
        }
        Ok(Self {
            report_interval: self.report_interval.max(Self::MIN_REPORT_INTERVAL),
            history: self.history.max(Self::MIN_HISTORY),
            limits: self.limits.validate()?,
            beacon: self.beacon.map(BeaconConfig::validate),
            ..self
        })
    }
}

/// Session threads unless configured: one per core.
pub fn default_session_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Raises the open-files limit so that `max_connections` sockets (plus some slack) fit;
/// warns when the hard limit leaves clearly less room than that. Each agent is one socket.
pub(crate) fn raise_fd_limit_for(max_connections: usize) {
    const SLACK: u64 = 64;
    let want = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(SLACK);
    let Ok((soft, hard)) = crate::process::fd_limit() else {
        return;
    };
    let now = crate::process::raise_fd_limit(want).unwrap_or(soft);
    // Warn only when the limit is well short of the connection cap, not over the slack.
    if now.saturating_add(SLACK) < want.saturating_mul(9) / 10 {
        tracing::warn!(
            "open-files limit is {now} (hard limit {hard}): room for about {} connections; raise it with `ulimit -n`",
            now.saturating_sub(SLACK)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::beacon::BeaconTargets;

    fn config() -> ServerConfig {
        ServerConfig::new(([127, 0, 0, 1], 0).into())
    }

    /// The defaults are the documented constants (and what `server --help` shows), and they
    /// pass validation unchanged.
    #[test]
    fn defaults_are_the_constants_and_valid() -> Result<(), ConfigError> {
        assert_eq!(ServerConfig::DEFAULT_BIND.to_string(), "0.0.0.0:8080");
        let c = config();
        assert_eq!(c.report_interval, Duration::from_secs(10));
        assert_eq!(c.history, 720);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.report_format, reporter::ReportFormat::Text);
        assert_eq!(c.text, reporter::TextOptions::default());
        assert!(c.beacon.is_none() && c.http.is_none() && c.store.is_none());
        assert!(c.session_threads >= 1);
        let v = c.clone().validate()?;
        assert_eq!(
            (v.report_interval, v.history, v.limits),
            (c.report_interval, c.history, c.limits)
        );
        Ok(())
    }

    /// A report interval under 50 ms, a history of 0 and a beacon interval under 50 ms are
    /// raised to their minimum; the frame and core limits go through `Limits::validate`.
    #[test]
    fn values_under_a_minimum_are_raised() -> Result<(), ConfigError> {
        let mut c = config();
        c.report_interval = Duration::ZERO;
        c.history = 0;
        c.limits.max_frame_len = 0;
        c.limits.max_cores = 0;
        c.beacon = Some(BeaconConfig {
            targets: BeaconTargets::Auto { port: 9 },
            interval: Duration::from_millis(1),
        });
        let v = c.validate()?;
        assert_eq!(v.report_interval, Duration::from_millis(50));
        assert_eq!(v.history, 1);
        assert_eq!((v.limits.max_frame_len, v.limits.max_cores), (1024, 1));
        assert_eq!(
            v.beacon.map(|b| b.interval),
            Some(Duration::from_millis(50))
        );
        Ok(())
    }

    /// Values at or above a minimum are kept as given, and validating twice is validating
    /// once.
    #[test]
    fn values_above_a_minimum_are_kept() -> Result<(), ConfigError> {
        let mut c = config();
        c.report_interval = Duration::from_millis(51);
        c.history = 2;
        let once = c.validate()?;
        assert_eq!(once.report_interval, Duration::from_millis(51));
        assert_eq!(once.history, 2);
        let twice = once.clone().validate()?;
        assert_eq!(
            (twice.report_interval, twice.history, twice.limits),
            (once.report_interval, once.history, once.limits)
        );
        Ok(())
    }

    /// `Server::start` applies the same policy: a config the binary would refuse is refused
    /// in-process too, before anything is bound.
    #[test]
    fn server_start_validates() {
        let mut c = config();
        c.limits.idle_intervals = 101;
        let started = actix::System::new().block_on(super::super::Server::start(c));
        assert!(
            matches!(
                started,
                Err(crate::Error::Config(ConfigError::IdleIntervals {
                    got: 101
                }))
            ),
            "{:?}",
            started.err()
        );
    }

    /// A refused limit refuses the whole config, with the limit's own error.
    #[test]
    fn a_bad_limit_refuses_the_config() {
        let mut c = config();
        c.limits.idle_intervals = 1;
        assert_eq!(
            c.validate().err(),
            Some(ConfigError::IdleIntervals { got: 1 })
        );
    }
}
