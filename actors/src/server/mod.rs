//! The server: actix actors wired together, started and stopped as one.
//!
//! ```text
//! agent ──TCP──▶ Listener ──starts──▶ Session (one per connection) ──▶ Registry ◀── Reporter
//!   ▲                                                                  │  ▲
//!   └──UDP beacon── Beacon                                      Append ▼  │ Committed
//!                                                       Store (SQLite, own thread)
//! ```
//!
//! With a store (`--data-dir`), a Session acknowledges a sample only when the Registry tells
//! it that the Store has committed it (see [`registry`]).
//!
//! Only this module names concrete actor types: it wires them together. Each actor holds
//! recipients of what it sends ([`messages::RegistryLink`] for a Session,
//! [`registry::StoreLink`] for the Registry, a `Recipient<`[`registry::GetSnapshotParts`]`>`
//! for the Reporter and the dashboard's Broadcaster, [`http::RegistryQueries`] for HTTP), so
//! each can be tested alone against probes. The messages a Session and the Registry exchange
//! both ways live in [`messages`]; one that anyone sends to one actor lives beside its
//! handlers. No two modules here import each other.
//!
//! [`Server::start`] binds the listening socket on the configured address (port 0 allowed;
//! the real address is [`Server::local_addr`]) and starts the actors on the current actix
//! `System`. [`Server::shutdown`] stops it in this order:
//! 1. the Beacon, the Listener and HTTP stop: no more announcements, no new connections;
//! 2. the Registry tells every Session to close: each sends `bye` to its agent;
//! 3. the sessions' writers flush their last frames (bounded by
//!    [`SHUTDOWN_GRACE`](crate::config::SHUTDOWN_GRACE));
//! 4. the Store commits what is still queued;
//! 5. the Reporter prints a last report (agents now `offline`, reason "server shut down");
//! 6. the enrollment is saved a last time ([`trust::Saver`]);
//! 7. the session threads stop; the caller stops the `System`, which stops the actors.
//!
//! The trust layer ([`trust::Trust`], from [`ServerConfig::trust`]; none with `--auth off`)
//! is shared by the Listener (handshakes), the Sessions (admission), HTTP (login, approve,
//! revoke) and the Registry's snapshots (the pending list); it is a locked structure, not an
//! actor.
//!
//! Sessions run on [`ServerConfig::session_threads`] threads of their own (one per core by
//! default), the Listener and the Registry on the caller's; the Store, the Reporter and the
//! alerts' Engine have a thread each (and every notification target one more).
//! The alerts ([`alerts`]) read snapshots like the Reporter and never touch ingest.

pub mod admin;
pub mod alerts;
pub mod beacon;
pub mod config;
pub mod history;
pub mod history_gate;
pub mod host;
pub mod http;
pub mod intake;
pub mod limits;
pub mod listener;
pub mod messages;
#[cfg(test)]
mod probe;
pub mod prometheus;
pub mod rates;
pub mod registry;
pub mod reporter;
pub mod selection;
pub mod series;
pub mod session;
pub mod store;
pub mod trust;
pub mod web;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::config::SHUTDOWN_GRACE;
use crate::discovery::Beacon;
use crate::snapshot::{ServerInfo, Snapshot};
use crate::{Error, Result};

pub use config::{ServerConfig, default_session_threads};
pub use reporter::{ReportFormat, SortBy, TextOptions};

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    local_addr: SocketAddr,
    info: Arc<ServerInfo>,
    registry: Addr<Registry>,
    listener: Addr<listener::Listener>,
    reporter: Addr<reporter::Reporter>,
    beacon: Option<Addr<beacon::BeaconActor>>,
    http: Option<http::Http>,
    store: Option<Addr<store::Store>>,
    alerts: Option<alerts::Alerts>,
    writers: TaskTracker,
    /// The session threads; stopped last.
    session_threads: Vec<Arbiter>,
    /// The trust layer (`None` with `--auth off`) and the thread that saves its enrollment.
    trust: Option<Arc<trust::Trust>>,
    saver: Option<trust::Saver>,
}

use registry::Registry;

impl Server {
    /// Validates `config` ([`ServerConfig::validate`]), binds and starts every actor. Must run
    /// inside an actix `System`. Reports go to stdout.
    pub async fn start(config: ServerConfig) -> Result<Server> {
        let redraw = std::io::stdout().is_terminal();
        Self::start_with_output(config, redraw, Box::new(std::io::stdout())).await
    }

    /// Like [`Server::start`], writing reports to `out` (redrawn in place if `redraw`).
    pub async fn start_with_output(
        config: ServerConfig,
        redraw: bool,
        out: Box<dyn Write + Send>,
    ) -> Result<Server> {
        let config = config.validate()?;
        let socket = listen(config.bind).map_err(|source| Error::Bind {
            addr: config.bind,
            source,
        })?;
        let local_addr = socket.local_addr()?;
        let http_socket = match &config.http {
            Some(http) => Some(http::Http::bind(http).map_err(|source| Error::Bind {
                addr: http.bind,
                source,
            })?),
            None => None,
        };
        let http_addr = match &http_socket {
            Some(s) => Some(s.local_addr()?),
            None => None,
        };
        let trust = trust::Trust::open(&config.trust)?.map(Arc::new);
        let info = Arc::new(ServerInfo {
            id: trust
                .as_ref()
                .map_or_else(crate::util::random_id, |t| t.server_id().to_string()),
            name: config.name.clone(),
            version: crate::VERSION.to_string(),
            listen: local_addr.to_string(),
            http: http_addr.map(|a| a.to_string()),
            auth: Some(config.trust.mode),
            fingerprint: trust.as_ref().map(|t| t.fingerprint().to_string()),
        });
        let pending = trust
            .clone()
            .map(|t| -> registry::PendingSource { Arc::new(move || t.pending()) });
        let revoked = trust
            .clone()
            .map(|t| -> registry::RevokedSource { Arc::new(move || t.revoked()) });
        let with_pending = |r: Registry| match (&pending, &revoked) {
            (Some(p), Some(v)) => r.with_pending(Arc::clone(p)).with_revoked(Arc::clone(v)),
            _ => r,
        };
        // Samples stamped further from this clock are stored when they arrive: behind as far
        // as the raw tier keeps them (or would, with --no-store).
        let clock = intake::ClockWindow::new(
            config
                .store
                .as_ref()
                .map_or(store::DEFAULT_RAW_RETENTION, |s| s.retention.raw),
        );
        let (registry, store, reader) = match &config.store {
            None => (
                with_pending(
                    Registry::new((*info).clone(), config.history).with_clock_window(clock),
                )
                .start(),
                None,
                None,
            ),
            Some(store_config) => {
                let opened = std::time::Instant::now();
                let (store, restored) = store::Store::open(store_config, config.history)?;
                let reader = Arc::new(store::Reader::open(store_config)?);
                let health = store.health();
                tracing::info!(
                    "history in {} ({} agent(s) restored in {:?})",
                    store_config.data_dir.display(),
                    restored.len(),
                    opened.elapsed()
                );
                // Its own thread: a slow disk delays acks, never Sessions or the Registry.
                let store = store::Store::start_in_arbiter(&Arbiter::new().handle(), |_| store);
                let registry = with_pending(
                    Registry::with_store(
                        (*info).clone(),
                        config.history,
                        registry::StoreLink::to(&store),
                        Arc::clone(&health),
                        restored,
                    )
                    .with_clock_window(clock),
                )
                .start();
                store.do_send(store::Subscribe {
                    committed: registry.clone().recipient(),
                });
                (registry, Some(store), Some((reader, health)))
            }
        };
        // Alerts on their own thread, reading snapshots like the Reporter; states in the
        // store's database (own connection, own table).
        let alerts = match config.alerts.clone() {
            Some(settings) => {
                let db = config
                    .store
                    .as_ref()
                    .map(|s| s.data_dir.join(store::DB_FILE));
                Some(alerts::Alerts::start(
                    settings,
                    registry.clone().recipient(),
                    db,
                    &info,
                )?)
            }
            None => None,
        };
        let board = alerts.as_ref().map(alerts::Alerts::board);
        let writers = TaskTracker::new();
        let settings = Arc::new(
            session::Settings::new((*info).clone(), config.limits.clone(), store.is_some())
                .with_trust(trust.clone()),
        );
        let session_threads: Vec<Arbiter> = (0..config.session_threads)
            .map(|_| Arbiter::new())
            .collect();
        let listener = listener::Listener::new(
            socket,
            Arc::new(messages::RegistryLink::to(&registry)),
            settings,
            writers.clone(),
            session_threads.iter().map(Arbiter::handle).collect(),
        )
        .start();
        let reporter = reporter::Reporter::new(
            registry.clone().recipient(),
            config.report_interval,
            config.report_format,
            redraw,
            config.text.clone(),
            out,
        )
        .with_alerts(board.clone());
        // Its own thread: rendering thousands of agents must not delay ingest.
        let reporter_thread = Arbiter::new();
        let reporter =
            reporter::Reporter::start_in_arbiter(&reporter_thread.handle(), |_| reporter);
        let http = match (http_socket, &config.http) {
            (Some(socket), Some(http_config)) => {
                let (reader, health) = reader.unzip();
                let http_config = http::HttpConfig {
                    store: reader,
                    store_health: health,
                    alerts: board.clone(),
                    trust: trust.clone(),
                    ..http_config.clone()
                };
                let queries = http::RegistryQueries::to(&registry);
                let auth = trust.as_ref().map(|t| t.http());
                let addr = socket.local_addr()?;
                let http = http::Http::start_with_auth(socket, &http_config, queries, auth)?;
                if let Some(t) = &trust {
                    t.publish_http(addr);
                }
                Some(http)
            }
            _ => None,
        };
        let beacon = match config.beacon {
            Some(beacon_config) => {
                let mut payload = Beacon::new(&info.id, &info.name, local_addr.port());
                // The lowest protocol this server accepts: protocol-1 agents read the beacon
                // (and ignore its new fields) only where they would be accepted.
                if config.trust.mode == crate::config::AuthMode::Required {
                    payload.proto = crate::protocol::PROTOCOL_VERSION;
                }
                let signer = trust.as_ref().map(|t| {
                    crate::auth::beacon_auth::BeaconSigner::new(t.network_key(), t.fingerprint())
                });
                Some(beacon::BeaconActor::new(beacon_config, payload, signer)?.start())
            }
            None => None,
        };
        let saver = match &trust {
            Some(t) if t.dir().is_some() => Some(trust::Saver::start(Arc::clone(t))?),
            _ => None,
        };
        Ok(Server {
            local_addr,
            info,
            registry,
            listener,
            reporter,
            beacon,
            http,
            store,
            alerts,
            writers,
            session_threads,
            trust,
            saver,
        })
    }

    /// The trust layer (`None` with `--auth off`): the join token, approvals, revocations.
    pub fn trust(&self) -> Option<&Arc<trust::Trust>> {
        self.trust.as_ref()
    }

    /// The address agents connect to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// The alerts' board (what is active), when alerts are on.
    pub fn alerts(&self) -> Option<Arc<alerts::Board>> {
        self.alerts.as_ref().map(alerts::Alerts::board)
    }

    /// The current view of every agent.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let parts = self.registry.send(registry::GetSnapshotParts).await?;
        Ok(parts.into_snapshot())
    }

    /// Stops in the documented order (see the module docs); returns within about
    /// [`SHUTDOWN_GRACE`].
    pub async fn shutdown(mut self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        if let Some(beacon) = &self.beacon {
            let _ = beacon.send(beacon::Stop).await;
        }
        let _ = self.listener.send(listener::Stop).await;
        if let Some(http) = &self.http {
            let _ = tokio::time::timeout_at(deadline, http.stop()).await;
        }
        let open = self.registry.send(registry::Shutdown).await.unwrap_or(0);
        tracing::info!("shutting down: closing {open} connection(s)");
        // Sessions stop as they process `Close`; wait until the registry has seen them go.
        while tokio::time::Instant::now() < deadline {
            match self.registry.send(registry::OpenSessions).await {
                Ok(0) | Err(_) => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        self.writers.close();
        if tokio::time::timeout_at(deadline, self.writers.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not flush before the shutdown deadline");
        }
        if let Some(store) = &self.store
            && !matches!(store.send(store::Flush).await, Ok(true))
        {
            tracing::warn!("the store could not commit its last writes (agents resend them)");
        }
        // The last report is written whole: a line cut off by the process exiting would break
        // the scripts that read it (at 10,000 agents it takes a while to write).
        let last_report =
            tokio::time::timeout(LAST_REPORT_LIMIT, self.reporter.send(reporter::Flush));
        if last_report.await.is_err() {
            tracing::warn!("the last report took longer than {LAST_REPORT_LIMIT:?}; skipped");
        }
        if let Some(alerts) = &self.alerts {
            alerts.stop();
        }
        if let Some(mut saver) = self.saver.take() {
            saver.stop(); // a last save of the enrollment
        }
        if let Some(t) = &self.trust {
            t.release();
        }
        for thread in &self.session_threads {
            thread.stop();
        }
    }
}

/// Longest the last report at shutdown may take.
const LAST_REPORT_LIMIT: Duration = Duration::from_millis(500);

/// Pending connections the kernel queues for accept (the usual 128 drops connection attempts
/// when hundreds of agents reconnect at once; the kernel caps it at `net.core.somaxconn`).
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds the agents' TCP socket with SO_REUSEADDR (a restarted server can bind at once) and a
/// deep accept queue.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs a server the way the `server` binary does until `shutdown` resolves: raises the
/// open-files limit to fit `config.limits.max_connections`, starts ([`Server::start`], which
/// validates `config`), prints the [`banner`] on stderr, waits for `shutdown`, then stops in
/// order ([`Server::shutdown`]). Must run inside an actix `System`.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    config::raise_fd_limit_for(config.limits.max_connections);
    let discovery_port = config.beacon.as_ref().and_then(|b| match &b.targets {
        beacon::BeaconTargets::Auto { port } => Some(*port),
        beacon::BeaconTargets::Explicit(list) => list.first().map(SocketAddr::port),
    });
    let offer = config.http.as_ref().and_then(|h| h.agent.clone());
    let auto_approve = config.trust.policy == crate::auth::enroll::Policy::AutoApprove;
    let server = Server::start(config).await?;
    let interfaces = crate::net::ipv4_interfaces();
    let token = server.trust().map(|t| t.join_token());
    let trust = server.trust().map(|t| TrustBanner {
        mode: t.mode(),
        token: token.as_deref().unwrap_or_default(),
        fingerprint: t.fingerprint().to_string(),
        login: t.http().login().to_string(),
        metrics_token: t.metrics_token_path(),
        in_memory: t.dir().is_none(),
        created: t.created(),
        auto_approve,
        previous_until_ms: t.previous_until_ms(),
    });
    if trust.is_none() {
        tracing::warn!("{AUTH_OFF_WARNING}");
    }
    eprint!(
        "{}",
        banner(&BannerInput {
            local: server.local_addr(),
            name: &server.info().name,
            interfaces: &interfaces,
            discovery_port,
            http: server.info().http.as_deref().and_then(|h| h.parse().ok()),
            trust,
        })
    );
    let flags: Vec<String> = token
        .into_iter()
        .flat_map(|t| ["--join".to_string(), t])
        .collect();
    install_banner(
        &server,
        offer.as_ref(),
        discovery_port.is_some(),
        &interfaces,
        &flags,
    );
    shutdown.await;
    server.shutdown().await;
    Ok(())
}

/// The one loud line of `--auth off`.
pub const AUTH_OFF_WARNING: &str = "WARNING: --auth off: no authentication and no encryption: \
     anyone on this network can read every machine's data, pose as this server or as any \
     agent, and use the dashboard and the API. For a closed lab only.";

/// The banner's install lines (with HTTP on): one `install.sh` command per address, and a log
/// line saying which agent binary `GET /download/agent` offers (or why none).
fn install_banner(
    server: &Server,
    offer: Option<&crate::install::download::Offer>,
    beacon: bool,
    interfaces: &[crate::net::Interface],
    agent_flags: &[String],
) {
    use crate::install::download::Offer;
    let Some(offer) = offer else { return };
    match offer {
        Offer::Ready(file) => tracing::info!(
            "offering {} ({} bytes, SHA-256 {}) at GET /download/agent",
            file.path().display(),
            file.len(),
            file.sha256()
        ),
        Offer::Missing(why) => tracing::warn!("GET /download/agent: {why}"),
    }
    let Some(http) = server.info().http.as_deref().and_then(|h| h.parse().ok()) else {
        return;
    };
    eprint!(
        "{}",
        crate::install::script::banner(&crate::install::script::BannerInput {
            http,
            listen: server.local_addr(),
            server_name: &server.info().name,
            beacon,
            offer,
            interfaces,
            agent_flags,
        })
    );
}

/// What the trust layer adds to the banner.
#[derive(Debug, Clone)]
pub struct TrustBanner<'a> {
    pub mode: crate::config::AuthMode,
    /// The join token (`lm2-…`).
    pub token: &'a str,
    pub fingerprint: String,
    /// The dashboard's login token.
    pub login: String,
    /// Where `/metrics`' bearer token is (for Prometheus' `credentials_file`).
    pub metrics_token: Option<std::path::PathBuf>,
    /// The identity lives in memory only (in-process use).
    pub in_memory: bool,
    /// This start created the identity.
    pub created: bool,
    pub auto_approve: bool,
    /// A rotation's previous key is accepted until then.
    pub previous_until_ms: Option<u64>,
}

/// What the startup banner shows.
#[derive(Debug, Clone)]
pub struct BannerInput<'a> {
    /// The agents' TCP address.
    pub local: SocketAddr,
    pub name: &'a str,
    pub interfaces: &'a [crate::net::Interface],
    /// The UDP port beacons go to, when the beacon is on (agents then `--discover`).
    pub discovery_port: Option<u16>,
    /// The HTTP address, when HTTP is on.
    pub http: Option<SocketAddr>,
    /// `None` with `--auth off`.
    pub trust: Option<TrustBanner<'a>>,
}

/// The startup banner: the bound address and the exact `agent` command lines to run on other
/// machines (with the join token when agents authenticate: one per address, and one for
/// `--discover`), the server's fingerprint, the dashboard's login URL and where `/metrics`'
/// bearer token is.
pub fn banner(b: &BannerInput<'_>) -> String {
    let local = b.local;
    let mut out = format!(
        "lanmon server {} ({}) listening on {local} (TCP), --auth {}\n",
        crate::VERSION,
        b.name,
        b.trust
            .as_ref()
            .map_or(crate::config::AuthMode::Off, |t| t.mode)
    );
    let join = b
        .trust
        .as_ref()
        .map(|t| format!(" --join {}", t.token))
        .unwrap_or_default();
    if let Some(t) = &b.trust {
        out.push_str(&format!("  server key fingerprint: {}", t.fingerprint));
        if t.created {
            out.push_str("  (new identity, created now)");
        }
        out.push('\n');
        if t.in_memory {
            out.push_str(
                "  (identity in memory only: the join token stops working when this server stops)\n",
            );
        }
        if let Some(until) = t.previous_until_ms {
            out.push_str(&format!(
                "  key rotation: the previous key is accepted for {} more\n",
                crate::util::human_age(until.saturating_sub(crate::util::now_ms()))
            ));
        }
        out.push_str(
            "  join agents with this token (a secret: whoever has it can enroll agents):\n",
        );
    }
    let discovery = b.discovery_port.map(|p| {
        if p == crate::discovery::DEFAULT_DISCOVERY_PORT {
            String::new()
        } else {
            format!(" --discovery-port {p}")
        }
    });
    if let Some(port_flag) = &discovery {
        out.push_str(&format!("    agent --discover{port_flag}{join}\n"));
    }
    if local.ip().is_unspecified() {
        let addrs: Vec<_> = b.interfaces.iter().filter(|i| !i.loopback).collect();
        if addrs.is_empty() {
            out.push_str("  no LAN address found on this machine; agents on it can use:\n");
            out.push_str(&format!(
                "    agent --host 127.0.0.1 --port {}{join}\n",
                local.port()
            ));
        } else {
            if b.trust.is_none() {
                out.push_str("  on other machines run one of:\n");
            }
            for i in addrs {
                out.push_str(&format!(
                    "    agent --host {} --port {}{join}    # via {}\n",
                    i.ip,
                    local.port(),
                    i.name
                ));
            }
        }
    } else {
        if b.trust.is_none() {
            out.push_str("  agents connect with:\n");
        }
        out.push_str(&format!(
            "    agent --host {} --port {}{join}\n",
            local.ip(),
            local.port()
        ));
    }
    let Some(t) = &b.trust else {
        return out;
    };
    if t.auto_approve {
        out.push_str(
            "  --auto-approve: every agent key is enrolled at its first connection (lab policy)\n",
        );
    } else {
        out.push_str(
            "  an agent started without --join waits for approval: `server agents list`, then \
             `server agents approve NAME` (or the dashboard)\n",
        );
    }
    if t.mode == crate::config::AuthMode::Optional {
        out.push_str(
            "  --auth optional: protocol-1 agents are accepted without authentication and shown as unauthenticated\n",
        );
    }
    if let Some(http) = b.http {
        let host: std::net::IpAddr = if http.ip().is_unspecified() {
            b.interfaces
                .iter()
                .find(|i| !i.loopback)
                .map_or(std::net::Ipv4Addr::LOCALHOST, |i| i.ip)
                .into()
        } else {
            http.ip()
        };
        let url = format!(
            "http://{}/?token={}",
            SocketAddr::new(host, http.port()),
            t.login
        );
        out.push_str(&format!(
            "  dashboard: {url}    (sets a session cookie; API clients send Authorization: Bearer <the same token>)\n"
        ));
        match &t.metrics_token {
            Some(path) => out.push_str(&format!(
                "  /metrics: Authorization: Bearer <the token in {}> (Prometheus: authorization: {{credentials_file: <a copy of it>}})\n",
                path.display()
            )),
            None => out.push_str("  /metrics: needs the login token (identity in memory)\n"),
        }
    }
    out
}
