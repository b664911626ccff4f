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
//! [`Server::start`] binds the listening socket on the configured address (port 0 allowed;
//! the real address is [`Server::local_addr`]) and starts the actors on the current actix
//! `System`. [`Server::shutdown`] stops it in this order:
//! 1. the Beacon, the Listener and HTTP stop: no more announcements, no new connections;
//! 2. the Registry tells every Session to close: each sends `bye` to its agent;
//! 3. the sessions' writers flush their last frames (bounded by
//!    [`SHUTDOWN_GRACE`](crate::config::SHUTDOWN_GRACE));
//! 4. the Store commits what is still queued;
//! 5. the Reporter prints a last report (agents now `offline`, reason "server shut down");
//! 6. the session threads stop; the caller stops the `System`, which stops the actors.
//!
//! Sessions run on [`ServerConfig::session_threads`] threads of their own (one per core by
//! default), the Listener and the Registry on the caller's; the Store and the Reporter have a
//! thread each.

pub mod beacon;
pub mod history;
pub mod host;
pub mod http;
pub mod listener;
pub mod prometheus;
pub mod rates;
pub mod registry;
pub mod reporter;
pub mod session;
pub mod store;
pub mod web;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::config::{DEFAULT_HISTORY, DEFAULT_REPORT_INTERVAL, Limits, SHUTDOWN_GRACE};
use crate::discovery::Beacon;
use crate::snapshot::{ServerInfo, Snapshot};
use crate::{Error, Result};

pub use reporter::{ReportFormat, SortBy, TextOptions};

/// Everything the server needs to start. Defaults come from [`crate::config`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TCP address to accept agents on.
    pub bind: SocketAddr,
    /// Name shown in reports and given to agents in `welcome`.
    pub name: String,
    pub report_interval: Duration,
    pub report_format: ReportFormat,
    /// What the text report shows (sort, top, filter).
    pub text: reporter::TextOptions,
    /// UDP announcements for `agent --discover`; `None` turns them off.
    pub beacon: Option<beacon::BeaconConfig>,
    /// The HTTP API, `/metrics` and dashboard; `None` turns HTTP off.
    pub http: Option<http::HttpConfig>,
    /// What one peer may do.
    pub limits: Limits,
    /// Samples remembered per agent in memory.
    pub history: usize,
    /// Durable history (SQLite under a data directory); `None`: in memory only, as before.
    pub store: Option<store::StoreConfig>,
    /// Threads that run the Sessions (decode, validate, acknowledge); 0: the server's own
    /// thread, with the Listener and the Registry.
    pub session_threads: usize,
}

impl ServerConfig {
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            name: crate::util::host_name(),
            report_interval: DEFAULT_REPORT_INTERVAL,
            report_format: ReportFormat::Text,
            text: reporter::TextOptions::default(),
            beacon: None,
            http: None,
            limits: Limits::default(),
            history: DEFAULT_HISTORY,
            store: None,
            session_threads: default_session_threads(),
        }
    }
}

/// Session threads unless configured: one per core.
pub fn default_session_threads() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

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
    writers: TaskTracker,
    /// The session threads; stopped last.
    session_threads: Vec<Arbiter>,
}

use registry::Registry;

impl Server {
    /// Binds and starts every actor. Must run inside an actix `System`. Reports go to stdout.
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
        let info = Arc::new(ServerInfo {
            id: crate::util::random_id(),
            name: config.name.clone(),
            version: crate::VERSION.to_string(),
            listen: local_addr.to_string(),
            http: http_addr.map(|a| a.to_string()),
        });
        let (registry, store, reader) = match &config.store {
            None => (
                Registry::new((*info).clone(), config.history).start(),
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
                let registry = Registry::with_store(
                    (*info).clone(),
                    config.history,
                    store.clone(),
                    Arc::clone(&health),
                    restored,
                )
                .start();
                store.do_send(store::Subscribe {
                    committed: registry.clone().recipient(),
                });
                (registry, Some(store), Some((reader, health)))
            }
        };
        let writers = TaskTracker::new();
        let settings = Arc::new(session::Settings {
            info: (*info).clone(),
            limits: config.limits.clone(),
            durable_acks: store.is_some(),
        });
        let session_threads: Vec<Arbiter> = (0..config.session_threads)
            .map(|_| Arbiter::new())
            .collect();
        let listener = listener::Listener::new(
            socket,
            registry.clone(),
            settings,
            writers.clone(),
            session_threads.iter().map(Arbiter::handle).collect(),
        )
        .start();
        let reporter = reporter::Reporter::new(
            registry.clone(),
            config.report_interval,
            config.report_format,
            redraw,
            config.text.clone(),
            out,
        );
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
                    ..http_config.clone()
                };
                Some(http::Http::start(socket, &http_config, registry.clone())?)
            }
            _ => None,
        };
        let beacon = match config.beacon {
            Some(beacon_config) => {
                let payload = Beacon::new(&info.id, &info.name, local_addr.port());
                Some(beacon::BeaconActor::new(beacon_config, &payload)?.start())
            }
            None => None,
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
            writers,
            session_threads,
        })
    }

    /// The address agents connect to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// The current view of every agent.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let parts = self.registry.send(registry::GetSnapshotParts).await?;
        Ok(parts.into_snapshot())
    }

    /// Stops in the documented order (see the module docs); returns within about
    /// [`SHUTDOWN_GRACE`].
    pub async fn shutdown(self) {
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

/// Runs a server until `shutdown` resolves, then stops it in order. Must run inside an actix
/// `System`.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let server = Server::start(config).await?;
    shutdown.await;
    server.shutdown().await;
    Ok(())
}

/// The startup banner: the bound address and, when bound to every interface, this machine's
/// IPv4 addresses with the exact `agent` command line to run on other machines.
pub fn banner(local: SocketAddr, name: &str, interfaces: &[crate::net::Interface]) -> String {
    let mut out = format!(
        "lanmon server {} ({name}) listening on {local} (TCP)\n",
        crate::VERSION
    );
    if local.ip().is_unspecified() {
        let addrs: Vec<_> = interfaces.iter().filter(|i| !i.loopback).collect();
        if addrs.is_empty() {
            out.push_str("  no LAN address found on this machine; agents on it can use:\n");
            out.push_str(&format!(
                "    agent --host 127.0.0.1 --port {}\n",
                local.port()
            ));
        } else {
            out.push_str("  on other machines run one of:\n");
            for i in addrs {
                out.push_str(&format!(
                    "    agent --host {} --port {}    # via {}\n",
                    i.ip,
                    local.port(),
                    i.name
                ));
            }
        }
    } else {
        out.push_str(&format!(
            "  agents connect with: agent --host {} --port {}\n",
            local.ip(),
            local.port()
        ));
    }
    out
}
