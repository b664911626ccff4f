//! The in-process layer: a real [`Server`] and real agent loops ([`lanmon::agent::run`]) in
//! the test's own process, on the test's actix System (`#[actix_rt::test]`), talking over real
//! TCP on 127.0.0.1. Agents read a [`FakeSource`] of exact values, so a test can check what
//! the server shows to the last bit; checks read the server's typed [`Snapshot`] through
//! [`wait_for`] (polled with a deadline, never a sleep as synchronisation).
//!
//! - [`server_config`]: `127.0.0.1:0`, no beacon, no HTTP, no store (as the process layer's
//!   `--no-beacon --no-http --no-store`), the secure default of the trust layer with its
//!   identity in a temporary directory of its own (removed by [`end`]), so that a restarted
//!   server keeps its key; [`start_server`] returns the server and its real address;
//!   [`restart_server`] starts another on the same address.
//! - [`start_agent`]: an agent of `server` (its address and join token) sampling every
//!   [`AGENT_INTERVAL`], with its key in memory; [`start_manual_agent`]: one that samples only
//!   when the test says so ([`Ticks::tick`]), for exact sequence numbers.
//! - [`InprocAgent::stop`] is SIGTERM (the agent says `bye`), [`InprocAgent::kill`] is
//!   SIGKILL (its task is dropped; the connection closes without a word).
//! - [`end`] stops the threads the servers started.
//!
//! This is the only file that names the library's start-up API (`ServerConfig`,
//! `Server::start_with_output`, `AgentConfig`, `agent::run`, `agent::run_with_ticker`): when
//! that API changes, this file is the one to adapt.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use lanmon::agent::{AgentConfig, Target, Ticker};
use lanmon::metrics::{HostInfo, MetricsSource, Reading};
use lanmon::server::{Server, ServerConfig};
use lanmon::snapshot::Snapshot;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{LOOPBACK, POLL, ToJson};

/// How often [`start_agent`]'s agents sample and send: the shortest interval the server
/// accepts (`lanmon::validate::MIN_INTERVAL_MS`).
pub const AGENT_INTERVAL: Duration = Duration::from_millis(100);

/// The interval a [`start_manual_agent`] announces: long enough that the server never sees it
/// `stale` (2¼ intervals) or times it out (3 intervals) while a test holds its ticks back.
pub const MANUAL_INTERVAL: Duration = Duration::from_secs(60);

/// The test server's configuration: `127.0.0.1:0`, one session thread, and no beacon (it
/// would broadcast on every interface), no HTTP, no store.
pub fn server_config() -> ServerConfig {
    let mut config = ServerConfig::new(SocketAddr::from((LOOPBACK, 0)));
    config.name = "inproc".into();
    config.beacon = None;
    config.http = None;
    config.store = None;
    config.session_threads = 1;
    config.trust.dir = Some(identity_dir());
    config
}

/// Identity directories made by [`server_config`] in this process, removed by [`end`].
static IDENTITY_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// One identity directory per test (the first call of the test's thread makes it), so the
/// configs of one test share a server identity (a restart keeps its key).
fn identity_dir() -> PathBuf {
    thread_local! {
        static DIR: std::cell::OnceCell<PathBuf> = const { std::cell::OnceCell::new() };
    }
    DIR.with(|d| {
        d.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!(
                "lanmon-inproc-{}-{:x}",
                std::process::id(),
                lanmon::util::random_u64()
            ));
            super::lock(&IDENTITY_DIRS).push(dir.clone());
            dir
        })
        .clone()
    })
}

/// Starts a server with `config` on the current actix System (its reports go nowhere: tests
/// read [`Server::snapshot`]); returns it with the address it really listens on.
pub async fn start_server(config: ServerConfig) -> (Server, SocketAddr) {
    let bind = config.bind;
    let server = Server::start_with_output(config, false, Box::new(std::io::sink()))
        .await
        .unwrap_or_else(|e| panic!("cannot start an in-process server on {bind}: {e:?}"));
    let addr = server.local_addr();
    assert!(
        addr.ip() == LOOPBACK && addr.port() != 0 && (bind.port() == 0 || addr == bind),
        "asked for {bind}, the server listens on {addr}"
    );
    (server, addr)
}

/// Starts a server with `config` on `addr`, the address a previous server (now shut down)
/// reported. The old listening socket closes once its actor has stopped, a moment after
/// [`Server::shutdown`] returns: while the port is still taken, this tries again, for up to
/// [`DEADLINE`](super::DEADLINE).
pub async fn restart_server(mut config: ServerConfig, addr: SocketAddr) -> (Server, SocketAddr) {
    config.bind = addr;
    let deadline = tokio::time::Instant::now() + super::DEADLINE;
    loop {
        match Server::start_with_output(config.clone(), false, Box::new(std::io::sink())).await {
            Ok(server) => {
                assert_eq!(server.local_addr(), addr, "restarted on another address");
                return (server, addr);
            }
            Err(lanmon::Error::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(POLL).await;
            }
            Err(e) => panic!("cannot restart the in-process server on {addr}: {e:?}"),
        }
    }
}

/// Polls `server`'s snapshot until `pred` holds and returns that snapshot; panics after
/// `within` with the last snapshot.
pub async fn wait_for(
    server: &Server,
    within: Duration,
    mut pred: impl FnMut(&Snapshot) -> bool,
) -> Snapshot {
    let deadline = tokio::time::Instant::now() + within;
    let mut looks = 0;
    loop {
        let snapshot = server
            .snapshot()
            .await
            .unwrap_or_else(|e| panic!("the in-process server gave no snapshot: {e:?}"));
        looks += 1;
        if pred(&snapshot) {
            return snapshot;
        }
        if tokio::time::Instant::now() >= deadline {
            let pretty =
                serde_json::to_string_pretty(&snapshot).unwrap_or_else(|_| snapshot.to_json());
            panic!(
                "no snapshot matched within {within:?} ({looks} looked at)\nlast snapshot: {pretty}"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Stops the current actix System and with it every thread the servers started (the Store's,
/// the Reporter's, session threads): the last line of an in-process test.
pub fn end() {
    actix_rt::System::current().stop();
    for dir in super::lock(&IDENTITY_DIRS).drain(..) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

// ---- Agents ---------------------------------------------------------------------------------

/// A metrics source that reads the same exact values every time.
#[derive(Debug, Clone)]
pub struct FakeSource {
    pub host: HostInfo,
    pub reading: Reading,
}

impl FakeSource {
    /// Host `hostname` running `FakeOS 1`, with as many cores as `reading` has per-core values.
    pub fn new(hostname: &str, reading: Reading) -> FakeSource {
        let cores = reading.cpu.as_ref().map_or(0, |c| c.per_core.len());
        FakeSource {
            host: HostInfo {
                hostname: hostname.into(),
                os: "FakeOS 1".into(),
                cores: u32::try_from(cores).unwrap_or(u32::MAX),
            },
            reading,
        }
    }
}

impl MetricsSource for FakeSource {
    fn host(&self) -> HostInfo {
        self.host.clone()
    }

    fn read(&mut self) -> Reading {
        self.reading.clone()
    }
}

/// The id an in-process agent named `name` announces.
pub fn agent_id(name: &str) -> String {
    format!("inproc-{name}")
}

/// An agent running on the test's System.
pub struct InprocAgent {
    shutdown: CancellationToken,
    task: JoinHandle<lanmon::Result<()>>,
}

impl InprocAgent {
    /// Shuts the agent down as SIGTERM does (it says `bye`) and waits until it has returned;
    /// returns what `agent::run` returned.
    pub async fn stop(self) -> lanmon::Result<()> {
        self.shutdown.cancel();
        let within = super::DEADLINE;
        match tokio::time::timeout(within, self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => panic!("the agent's task failed: {e}"),
            Err(_) => panic!("the agent did not stop within {within:?} of its shutdown"),
        }
    }

    /// Drops the agent where it stands, as SIGKILL does: its connection closes without `bye`.
    pub async fn kill(self) {
        self.task.abort();
        // Resolves once the task's future (and with it the socket) has been dropped.
        let _ = self.task.await;
    }
}

/// A ticker the test drives: the agent samples once per tick it is given, never by itself.
pub struct ManualTicker {
    ticks: mpsc::UnboundedReceiver<()>,
}

impl Ticker for ManualTicker {
    async fn tick(&mut self) {
        // Cancel-safe: a tick is taken out of the channel only when it completes. Without a
        // sender there are no more ticks, ever.
        if self.ticks.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// The test's end of a [`ManualTicker`].
pub struct Ticks {
    ticks: mpsc::UnboundedSender<()>,
}

impl Ticks {
    /// Lets the agent take `n` more samples (at once, or as soon as it can).
    #[track_caller]
    pub fn tick(&self, n: usize) {
        for _ in 0..n {
            self.ticks
                .send(())
                .unwrap_or_else(|_| panic!("the agent is gone: nobody takes its ticks"));
        }
    }
}

/// The configuration of an agent named `name` sending to `server` every `interval`, joining
/// with its token (its key in memory).
fn agent_config(server: &Server, name: &str, interval: Duration) -> AgentConfig {
    let addr = server.local_addr();
    let join = server.trust().map(|t| {
        lanmon::auth::token::JoinToken::decode(&t.join_token())
            .unwrap_or_else(|e| panic!("the server's own token does not decode: {e}"))
    });
    AgentConfig {
        target: Target::Host {
            host: addr.ip().to_string(),
            port: addr.port(),
        },
        id: agent_id(name),
        name: name.into(),
        interval,
        buffer: AgentConfig::DEFAULT_BUFFER,
        auth: if join.is_some() {
            lanmon::config::AuthMode::Required
        } else {
            lanmon::config::AuthMode::Off
        },
        state_dir: None,
        join,
        collect: Default::default(),
    }
}

/// Starts an agent named `name` (id [`agent_id`]) reading `source` every [`AGENT_INTERVAL`]
/// and sending to `server`.
pub fn start_agent(server: &Server, name: &str, source: FakeSource) -> InprocAgent {
    let shutdown = CancellationToken::new();
    let run = lanmon::agent::run(
        agent_config(server, name, AGENT_INTERVAL),
        source,
        shutdown.clone(),
    );
    InprocAgent {
        shutdown,
        task: actix_rt::spawn(run),
    }
}

/// Starts an agent like [`start_agent`] that announces [`MANUAL_INTERVAL`] and samples only on
/// the ticks the test gives it.
pub fn start_manual_agent(server: &Server, name: &str, source: FakeSource) -> (InprocAgent, Ticks) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shutdown = CancellationToken::new();
    let run = lanmon::agent::run_with_ticker(
        agent_config(server, name, MANUAL_INTERVAL),
        source,
        ManualTicker { ticks: rx },
        shutdown.clone(),
    );
    let agent = InprocAgent {
        shutdown,
        task: actix_rt::spawn(run),
    };
    (agent, Ticks { ticks: tx })
}
