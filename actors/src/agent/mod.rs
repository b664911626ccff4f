//! The agent: samples this machine and streams the samples to the server over one TCP
//! connection, forever.
//!
//! The connection is a small state machine ([`ConnState`]):
//!
//! ```text
//!            ┌──────────── connect failed / refused ───────────┐
//!            ▼                                                  │
//!   Backoff(delay) ──delay over──▶ Connecting ──welcome──▶ Connected
//!            ▲                                                  │
//!            └──────── connection lost / server bye / error ────┘
//! ```
//!
//! The reconnect delay ([`Backoff`]) grows with every attempt that did not prove useful — a
//! failed connect, a refusal (`error` frame), a `welcome` the agent cannot accept, a
//! connection lost before anything was acknowledged — and starts over only once the server
//! has acknowledged a sample on the connection: a server that welcomes and then refuses or
//! drops the agent gets fewer and fewer attempts (at most one per [`BACKOFF_MAX`]), not a
//! tight loop.
//!
//! A `welcome` whose `last_seq` is beyond the run's highest seq (a confused server, or a
//! client that sent samples in this agent's name) never locks the agent out: it starts a new
//! run and carries its unacknowledged samples over ([`Agent::new_run`]).
//!
//! Sampling never stops, whatever the state: every interval one sample is taken and queued in
//! the bounded [`Outbox`]; while connected it is sent at once, and whatever the server has not
//! acknowledged is sent again after the next connect. Every wait has a deadline (connect,
//! welcome, each write), and the read side is watched all the time, so a server that goes away
//! is noticed at once. Shutdown (the token) sends `bye` and returns.
//!
//! Protocol 2 (the default): after TCP connect, the Noise handshake ([`crate::auth::noise`])
//! with the agent's key and its pinned server keys ([`identity`]); a server whose key is not
//! pinned gets nothing but the handshake's first message (the agent stops there, logs why and
//! backs off). Then the same frames run over the encrypted stream. Without pins the first
//! server's key is trusted and pinned (its fingerprint logged, to compare with the server's
//! banner). `pending_approval` is logged with both fingerprints and retried with the usual
//! backoff; a `server_key` notice (key rotation) updates the pins. `--auth off` speaks
//! plaintext protocol 1, as before protocol 2.

pub mod backoff;
pub mod config;
mod connect;
pub mod identity;
pub mod outbox;
pub mod ticker;
#[cfg(target_os = "linux")]
pub mod timerfd;
mod wire;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::auth::AuthError;
use crate::auth::fingerprint::Fingerprint;
use crate::auth::noise;
use crate::codec::AgentCodec;
use crate::config::{BACKOFF_MAX, BACKOFF_MIN, IDLE_INTERVALS, WELCOME_TIMEOUT, WRITE_TIMEOUT};
use crate::discovery::{self, Found, WAITING_HINT_EVERY};
use crate::metrics::{MetricsSource, SystemSource};
use crate::net::set_keepalive;
use crate::protocol::{
    self, AgentFrame, Bye, ErrorCode, ErrorFrame, Metrics, PROTOCOL_V1, PROTOCOL_VERSION,
    ServerFrame,
};
use crate::text::for_terminal;
use crate::util::{now_ms, random_id, random_u64};

pub use backoff::Backoff;
pub use config::{AgentConfig, Target, default_agent_id};
pub use connect::ConnectError;
use connect::{connect, discovery_hint, next_beacon};
pub use identity::Identity;
pub use outbox::Outbox;
pub use ticker::Ticker;
use wire::{FRAME_BUDGET, fit_frame, send, send_within};

/// The connection's state (see the module docs).
#[derive(Debug)]
enum ConnState {
    /// Looking up and connecting to the server.
    Connecting,
    /// TCP is up; `hello`, `welcome`, then streaming.
    Connected(TcpStream, SocketAddr),
    /// Waiting before the next attempt.
    Backoff(Duration),
}

/// Most samples in flight (sent, not yet acknowledged) during a replay.
pub const REPLAY_WINDOW: u64 = 32;

/// Per-connection send state: what to send next, what the server has acknowledged, and when
/// it last said anything.
#[derive(Debug)]
struct Flow {
    next: u64,
    acked: u64,
    /// Since when samples have been waiting for an ack (`None`: everything sent is acked).
    waiting_since: Option<tokio::time::Instant>,
}

impl Flow {
    /// Records an ack; an ack for a sample never sent is a protocol error.
    fn ack(&mut self, seq: u64) -> Result<(), String> {
        if seq >= self.next {
            return Err(format!(
                "server acknowledged seq {seq}, but only up to {} was sent",
                self.next.saturating_sub(1)
            ));
        }
        if seq > self.acked {
            self.acked = seq;
            self.waiting_since = (self.next > self.acked + 1).then(tokio::time::Instant::now);
        }
        Ok(())
    }

    /// Records that `seq` went out.
    fn sent(&mut self, seq: u64) {
        self.next = seq + 1;
        self.waiting_since
            .get_or_insert_with(tokio::time::Instant::now);
    }
}

/// How a connection ended.
#[derive(Debug)]
enum Ended {
    /// Shutdown was requested; `bye` was sent.
    Shutdown,
    /// The connection broke or the server left; reconnect after a backoff.
    Lost(String),
    /// The server refused us with an `error` frame.
    Refused(ErrorFrame),
    /// The server could not prove a pinned key (or the handshake failed): nothing was sent.
    Untrusted(String),
    /// The server's `welcome` claimed more of this run than it has: a new run was started
    /// (already logged); reconnect with it after a backoff.
    NewRun,
}

/// Runs the agent until `shutdown` is cancelled, sampling on a tokio interval of
/// `config.interval`. Never returns because the server is away.
pub async fn run<S: MetricsSource>(
    config: AgentConfig,
    source: S,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    let ticker = ticker::interval(config.interval);
    run_with_ticker(config, source, ticker, shutdown).await
}

/// Runs the agent the way the `agent` binary does, until `shutdown` is cancelled: validates
/// `config` ([`AgentConfig::validate`]), samples this machine ([`SystemSource`]) and paces the
/// samples with a [`timerfd::TimerFdTicker`] on Linux (one wakeup per tick), a tokio interval
/// elsewhere or when no timerfd can be made.
pub async fn run_system(config: AgentConfig, shutdown: CancellationToken) -> crate::Result<()> {
    let config = config.validate()?;
    let source = SystemSource::with_config(&config.collect)
        .map_err(|e| crate::Error::Other(format!("cannot read system metrics: {e}")))?;
    #[cfg(target_os = "linux")]
    match timerfd::TimerFdTicker::new(config.interval) {
        Ok(ticker) => return run_with_ticker(config, source, ticker, shutdown).await,
        Err(e) => tracing::warn!("no timerfd ({e}): pacing samples with a tokio interval"),
    }
    run(config, source, shutdown).await
}

/// [`run`], sampling on each tick of `ticker` instead (which should tick every
/// `config.interval`: the `hello` announces that interval, and the ack deadline counts in it).
pub async fn run_with_ticker<S: MetricsSource, T: Ticker>(
    config: AgentConfig,
    source: S,
    ticker: T,
    shutdown: CancellationToken,
) -> crate::Result<()> {
    Agent::new(config, source, ticker, shutdown)?.run().await
}

struct Agent<S, T> {
    source: S,
    target: Target,
    interval: Duration,
    hello: protocol::Hello,
    seq: u64,
    outbox: Outbox,
    ticker: T,
    shutdown: CancellationToken,
    backoff: Backoff,
    /// The beacon listener, in discover mode.
    discovery: Option<discovery::BeaconListener>,
    /// The server this agent was last connected to (discover mode), by server id.
    server_id: Option<String>,
    connected_once: bool,
    /// The trust layer's state (`None` with `--auth off`: plaintext protocol 1).
    identity: Option<Identity>,
    /// The clock measurement of the current connection, sent with its first frame.
    clock: Option<Box<protocol::ClockSync>>,
    /// A sample had to leave lists out to fit in a frame (warned once).
    warned_oversize: bool,
}

impl<S: MetricsSource, T: Ticker> Agent<S, T> {
    fn new(
        config: AgentConfig,
        source: S,
        ticker: T,
        shutdown: CancellationToken,
    ) -> crate::Result<Self> {
        let identity = match config.auth {
            crate::config::AuthMode::Off => None,
            _ => Some(Identity::load(
                config.state_dir.as_deref(),
                config.join.as_ref(),
            )?),
        };
        let host = source.host();
        let hello = protocol::Hello {
            proto: if identity.is_some() {
                PROTOCOL_VERSION
            } else {
                PROTOCOL_V1
            },
            agent_id: config.id,
            run_id: random_id(),
            name: config.name,
            hostname: host.hostname,
            os: host.os,
            cores: host.cores,
            agent_version: crate::VERSION.to_string(),
            interval_ms: u64::try_from(config.interval.as_millis()).unwrap_or(u64::MAX),
        };
        Ok(Self {
            source,
            target: config.target,
            interval: config.interval,
            hello,
            seq: 0,
            outbox: Outbox::new(config.buffer),
            ticker,
            shutdown,
            backoff: Backoff::new(BACKOFF_MIN, BACKOFF_MAX),
            discovery: None,
            server_id: None,
            connected_once: false,
            identity,
            clock: None,
            warned_oversize: false,
        })
    }

    async fn run(mut self) -> crate::Result<()> {
        tracing::info!(
            "agent {} (id {}, run {}) sampling every {:?}, server {}",
            self.hello.name,
            self.hello.agent_id,
            self.hello.run_id,
            Duration::from_millis(self.hello.interval_ms),
            self.target
        );
        match &self.identity {
            Some(id) => {
                let pinned: Vec<String> = id
                    .pinned()
                    .iter()
                    .map(|k| Fingerprint::of(k).to_string())
                    .collect();
                tracing::info!(
                    "protocol 2: this agent's key {}; server key {}",
                    id.fingerprint(),
                    if pinned.is_empty() {
                        "not pinned yet (trusted at the first connection; --join pins it)".into()
                    } else {
                        format!("pinned: {}", pinned.join(", "))
                    }
                );
            }
            None => tracing::warn!(
                "--auth off: plaintext protocol 1, nothing authenticated (the server must run \
                 with --auth off or optional)"
            ),
        }
        if let Target::Discover {
            port, server_name, ..
        } = &self.target
        {
            let mut listener = discovery::BeaconListener::bind(*port, server_name.clone()).map_err(|e| {
                crate::Error::Other(format!(
                    "cannot listen for beacons on UDP port {port}: {e} (another program holds the port without SO_REUSEPORT?)"
                ))
            })?;
            if let Some(id) = &self.identity {
                listener.set_gate(id.gate());
            }
            self.discovery = Some(listener);
        }
        let mut last_cause: Option<String> = None;
        let mut state = ConnState::Connecting;
        loop {
            state = match state {
                ConnState::Backoff(delay) => {
                    if self
                        .while_sampling(tokio::time::sleep(delay))
                        .await
                        .is_none()
                    {
                        return Ok(());
                    }
                    ConnState::Connecting
                }
                ConnState::Connecting => {
                    let target = self.target.clone();
                    let result = match &target {
                        Target::Host { host, port } => {
                            self.while_sampling(connect(host.clone(), *port)).await
                        }
                        Target::Discover { timeout, .. } => match self.discover(*timeout).await? {
                            Some(found) => {
                                let addr = found.addr;
                                self.server_id = Some(found.beacon.server_id);
                                self.while_sampling(connect(addr.ip().to_string(), addr.port()))
                                    .await
                            }
                            None => None,
                        },
                    };
                    let Some(result) = result else {
                        return Ok(());
                    };
                    match result {
                        Ok((stream, addr)) => {
                            last_cause = None;
                            ConnState::Connected(stream, addr)
                        }
                        Err(e) => {
                            let delay = self.backoff.next_delay(random_u64());
                            let cause = e.to_string();
                            if last_cause.as_deref() == Some(cause.as_str()) {
                                tracing::warn!(
                                    "still cannot connect to {target} ({}); retrying in {delay:.1?}",
                                    e.short()
                                );
                            } else {
                                tracing::warn!(
                                    "cannot connect to {target}: {cause}; retrying in {delay:.1?}"
                                );
                                last_cause = Some(cause);
                            }
                            ConnState::Backoff(delay)
                        }
                    }
                }
                ConnState::Connected(stream, addr) => {
                    match self.connected(stream, addr).await {
                        Ended::Shutdown => return Ok(()),
                        Ended::Lost(reason) => {
                            tracing::warn!(
                                "connection to {addr} lost: {}; reconnecting",
                                for_terminal(&reason)
                            );
                        }
                        Ended::Refused(e) => {
                            let delay = self.backoff.next_delay(random_u64());
                            self.log_refusal(addr, &e, delay);
                            state = ConnState::Backoff(delay);
                            continue;
                        }
                        Ended::Untrusted(why) => {
                            tracing::error!(
                                "server {addr} not trusted, nothing sent but the handshake: {}",
                                for_terminal(&why)
                            );
                        }
                        Ended::NewRun => {}
                    }
                    ConnState::Backoff(self.backoff.next_delay(random_u64()))
                }
            };
        }
    }

    /// Takes one sample into the outbox; returns its seq.
    fn sample(&mut self) -> u64 {
        self.seq += 1;
        let r = self.source.read();
        let mut metrics = Metrics {
            seq: self.seq,
            ts_ms: now_ms(),
            cpu: r.cpu,
            memory: r.memory,
            cpu_modes: r.cpu_modes,
            load: r.load,
            uptime_s: r.uptime_s,
            swap: r.swap,
            filesystems: r.filesystems,
            disks: r.disks,
            net: r.net,
            temperatures: r.temperatures,
            processes: r.processes,
            agent_cost: r.agent_cost,
            clock: None,
        };
        if let Some(left_out) = fit_frame(&mut metrics, FRAME_BUDGET)
            && !self.warned_oversize
        {
            self.warned_oversize = true;
            tracing::warn!(
                "a sample did not fit in one frame ({} bytes at most): left out {left_out}",
                FRAME_BUDGET
            );
        }
        let dropped = self.outbox.push(metrics);
        if dropped && self.outbox.dropped().is_power_of_two() {
            tracing::warn!(
                "sample buffer full ({} samples): dropped {} oldest sample(s) so far",
                self.outbox.len(),
                self.outbox.dropped()
            );
        }
        self.seq
    }

    /// Drives `fut` to completion while sampling on every tick. `None` if shutdown came first.
    async fn while_sampling<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return None,
                out = &mut fut => return Some(out),
                _ = self.ticker.tick() => { self.sample(); }
            }
        }
    }

    /// Listens for a beacon (discover mode), saying every [`WAITING_HINT_EVERY`] what it is
    /// waiting for. `Ok(None)` on shutdown; an error if `timeout` passes before the first
    /// connection.
    async fn discover(&mut self, timeout: Option<Duration>) -> crate::Result<Option<Found>> {
        let Some(mut listener) = self.discovery.take() else {
            return Err(crate::Error::Other("discovery listener missing".into()));
        };
        listener.drain();
        let port = listener.port();
        let started = tokio::time::Instant::now();
        let deadline = timeout
            .filter(|_| !self.connected_once)
            .map(|t| started + t);
        let result = self
            .while_sampling(async {
                loop {
                    let wait = match deadline {
                        Some(d) => WAITING_HINT_EVERY.min(d.saturating_duration_since(tokio::time::Instant::now())),
                        None => WAITING_HINT_EVERY,
                    };
                    match tokio::time::timeout(wait, listener.wanted()).await {
                        Ok(found) => return found.map_err(crate::Error::from),
                        Err(_) if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) => {
                            return Err(crate::Error::Other(format!(
                                "no lanmon server heard on UDP port {port} within {:?} (--discover-timeout); {}",
                                started.elapsed(),
                                discovery_hint(port)
                            )));
                        }
                        Err(_) => tracing::warn!(
                            "still waiting for a server beacon on UDP port {port} ({}s so far); {}",
                            started.elapsed().as_secs(),
                            discovery_hint(port)
                        ),
                    }
                }
            })
            .await;
        let found = match result {
            None => None,
            Some(Err(e)) => {
                self.discovery = Some(listener);
                return Err(e);
            }
            Some(Ok(found)) => {
                let others: Vec<String> = listener
                    .heard()
                    .filter(|f| f.beacon.server_id != found.beacon.server_id)
                    .map(|f| format!("{} at {}", for_terminal(&f.beacon.server_name), f.addr))
                    .collect();
                tracing::info!(
                    "Discovered server {} at {}",
                    for_terminal(&found.beacon.server_name),
                    found.addr
                );
                if !others.is_empty() {
                    tracing::warn!(
                        "took the first server heard; also heard: {} (choose one with --server-name)",
                        others.join(", ")
                    );
                }
                Some(found)
            }
        };
        self.discovery = Some(listener);
        Ok(found)
    }

    /// Logs why the server refused this agent; waiting for approval is not an error.
    fn log_refusal(&self, addr: SocketAddr, e: &ErrorFrame, delay: Duration) {
        match e.code {
            ErrorCode::PendingApproval => {
                let me = self
                    .identity
                    .as_ref()
                    .map(|i| i.fingerprint().to_string())
                    .unwrap_or_default();
                let server = self
                    .identity
                    .as_ref()
                    .and_then(|i| i.pinned().first().map(|k| Fingerprint::of(k).to_string()))
                    .unwrap_or_default();
                tracing::warn!(
                    "waiting for approval by the server at {addr} (server fingerprint {server}: \
                     compare it with the server's banner); this agent's key is {me}: on the \
                     server run `server agents approve {me}`, or start this agent with the \
                     server's --join token; retrying in {delay:.1?}"
                );
            }
            _ => tracing::error!(
                "server {addr} refused this agent: {}: {}; retrying in {delay:.1?}",
                e.code,
                for_terminal(&e.message)
            ),
        }
    }

    /// The handshake (protocol 2), while sampling; the encrypted halves and the server's key.
    async fn handshake(
        &mut self,
        mut stream: TcpStream,
    ) -> Option<Result<(noise::Session, TcpStream), AuthError>> {
        let Some(identity) = &self.identity else {
            return Some(Err(AuthError::Other("no identity".into())));
        };
        let config = identity.client_config();
        let _ = stream.set_nodelay(true);
        set_keepalive(&stream);
        let result = self
            .while_sampling(async move {
                noise::client_handshake(&mut stream, &config)
                    .await
                    .map(|session| (session, stream))
            })
            .await?;
        if let (Ok((session, _)), Some(identity)) = (&result, &mut self.identity)
            && identity.trust_on_first_use(&session.remote_static)
        {
            tracing::warn!(
                "server fingerprint {} (first connection: trusted on first use and pinned; \
                 compare it with the server's banner)",
                Fingerprint::of(&session.remote_static)
            );
            if let Some(l) = &mut self.discovery {
                l.set_gate(identity.gate());
            }
        }
        Some(result)
    }

    async fn connected(&mut self, stream: TcpStream, addr: SocketAddr) -> Ended {
        let ended = if self.identity.is_some() {
            match self.handshake(stream).await {
                None => return Ended::Shutdown,
                // The connection broke, or nothing came in time: not a question of trust.
                Some(Err(
                    e @ (AuthError::Closed | AuthError::Io { .. } | AuthError::HandshakeTimeout(_)),
                )) => Ended::Lost(format!("during the handshake: {e}")),
                Some(Err(e)) => Ended::Untrusted(e.to_string()),
                Some(Ok((session, stream))) => {
                    let server_key = session.remote_static;
                    let (read, write) = stream.into_split();
                    let (read, write) = session.split(read, write);
                    let mut listener = self.discovery.take();
                    let ended = self
                        .stream_to(read, write, addr, Some(server_key), listener.as_mut())
                        .await;
                    self.discovery = listener;
                    ended
                }
            }
        } else {
            let _ = stream.set_nodelay(true);
            set_keepalive(&stream);
            let (read, write) = stream.into_split();
            let mut listener = self.discovery.take();
            let ended = self
                .stream_to(read, write, addr, None, listener.as_mut())
                .await;
            self.discovery = listener;
            ended
        };
        let mut listener = self.discovery.take();
        // The server we lost is not a candidate any more until it beacons again.
        if let (Some(l), Some(id)) = (listener.as_mut(), self.server_id.take()) {
            l.forget(&id);
        }
        self.discovery = listener;
        ended
    }

    /// Says hello, replays the outbox, then streams until the connection ends. In discover
    /// mode it keeps reading beacons meanwhile, to name other servers on the LAN.
    /// `server_key` is the key the handshake authenticated (protocol 2).
    async fn stream_to<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &mut self,
        read: R,
        mut write: W,
        addr: SocketAddr,
        server_key: Option<crate::auth::keys::PublicKey>,
        mut beacons: Option<&mut discovery::BeaconListener>,
    ) -> Ended {
        let mut frames = FramedRead::new(read, AgentCodec::new());
        self.clock = None;
        let hello_sent = tokio::time::Instant::now();
        if let Err(e) = send(&mut write, &AgentFrame::Hello(self.hello.clone())).await {
            return Ended::Lost(format!("could not send hello: {e}"));
        }
        let welcome = tokio::time::timeout(WELCOME_TIMEOUT, frames.next());
        match self.while_sampling(welcome).await {
            None => return self.say_bye(&mut write).await,
            Some(Ok(Some(Ok(ServerFrame::Welcome(w))))) => {
                // An older server sends no time: then there is nothing to measure.
                self.clock = w.ts_ms.map(|welcome_ts_ms| {
                    Box::new(protocol::ClockSync {
                        welcome_ts_ms,
                        received_ts_ms: now_ms(),
                        rtt_ms: u64::try_from(hello_sent.elapsed().as_millis()).unwrap_or(u64::MAX),
                    })
                });
                // Not yet a success for the backoff: only an ack proves the server takes
                // this agent's samples (see the module docs).
                self.connected_once = true;
                tracing::info!(
                    "Connected to {addr} (server {}, lanmon {})",
                    for_terminal(&w.server_name),
                    for_terminal(&w.server_version)
                );
                // The server already holds these from before the reconnect: do not resend.
                if let Some(held) = w.last_seq {
                    if held > self.seq {
                        // A claim this run cannot back (a confused server, or someone who
                        // sent samples in this agent's name): never stay locked out by it.
                        return self.new_run(addr, held);
                    }
                    self.outbox.ack(held);
                }
            }
            Some(Ok(Some(Ok(ServerFrame::Error(e))))) => return Ended::Refused(e),
            Some(Ok(Some(Ok(other)))) => {
                return Ended::Lost(format!("expected welcome, got {other:?}"));
            }
            Some(Ok(Some(Err(e)))) => return Ended::Lost(format!("bad frame from server: {e}")),
            Some(Ok(None)) => return Ended::Lost("server closed the connection".into()),
            Some(Err(_)) => {
                return Ended::Lost(format!("no welcome within {WELCOME_TIMEOUT:?}"));
            }
        }
        let first_pending = self.outbox.pending().next().map_or(self.seq + 1, |m| m.seq);
        let mut flow = Flow {
            next: first_pending,
            acked: first_pending - 1,
            waiting_since: None,
        };
        let backlog = self.seq.saturating_sub(flow.acked);
        if backlog > 1 {
            tracing::info!("sending {backlog} buffered sample(s), {REPLAY_WINDOW} at a time");
        }
        let idle = self.interval.saturating_mul(IDLE_INTERVALS);
        loop {
            if let Err(e) = self.pump(&mut write, &mut flow).await {
                return Ended::Lost(e.to_string());
            }
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return self.say_bye(&mut write).await,
                frame = frames.next() => {
                    match frame {
                        Some(Ok(ServerFrame::Ack(ack))) => {
                            if let Err(e) = flow.ack(ack.seq) {
                                return Ended::Lost(e);
                            }
                            self.outbox.ack(ack.seq);
                            // The connection works: the next reconnect starts from the
                            // shortest delay again.
                            self.backoff.reset();
                        }
                        Some(Ok(ServerFrame::Error(e))) => return Ended::Refused(e),
                        Some(Ok(ServerFrame::Bye(Bye { reason }))) => {
                            return Ended::Lost(format!("server said bye ({})", reason.unwrap_or_default()));
                        }
                        Some(Ok(ServerFrame::Welcome(_))) => {}
                        Some(Ok(ServerFrame::ServerKey(update))) => {
                            self.on_server_key(&update, server_key.as_ref(), beacons.as_deref_mut());
                        }
                        Some(Err(e)) => return Ended::Lost(format!("bad frame from server: {e}")),
                        None => return Ended::Lost("server closed the connection".into()),
                    }
                },
                heard = next_beacon(beacons.as_deref_mut()) => {
                    let chose_by_name =
                        matches!(&self.target, Target::Discover { server_name: Some(_), .. });
                    if let Ok((found, true)) = heard
                        && !chose_by_name
                        && self.server_id.as_ref() != Some(&found.beacon.server_id)
                    {
                        tracing::warn!(
                            "also hearing server {} at {}; staying with {addr} (choose one with --server-name)",
                            for_terminal(&found.beacon.server_name),
                            found.addr
                        );
                    }
                },
                // Samples are the agent's heartbeat and acks the server's: a server that
                // acknowledged nothing for several intervals is gone (or the path is
                // half-open), whatever TCP says.
                () = ack_deadline(flow.waiting_since, idle) => {
                    return Ended::Lost(format!(
                        "no acknowledgement from the server for {idle:?} (half-open connection?)"
                    ));
                }
                _ = self.ticker.tick() => { self.sample(); }
            }
        }
    }

    /// A key rotation notice: only over an authenticated session, whose key it replaces.
    fn on_server_key(
        &mut self,
        update: &protocol::ServerKey,
        session_key: Option<&crate::auth::keys::PublicKey>,
        beacons: Option<&mut discovery::BeaconListener>,
    ) {
        let (Some(identity), Some(session_key)) = (&mut self.identity, session_key) else {
            return;
        };
        if identity.apply_rotation(update, session_key) {
            tracing::warn!(
                "the server's key was rotated: now pinning {} (the current key {} is accepted \
                 for {} more)",
                update.fp,
                Fingerprint::of(session_key),
                crate::util::human_age(update.previous_until_ms.saturating_sub(now_ms()))
            );
            if let Some(l) = beacons {
                l.set_gate(identity.gate());
            }
        }
    }

    /// Starts a new run because the server at `addr` claims to hold seq `held` of the
    /// current one, beyond anything it has: a new `run_id`, seqs from 1 again. The samples
    /// still waiting for an ack carry over, renumbered 1, 2, 3… with their own timestamps:
    /// nothing is lost, and the server files them under a run it has no claim about (if it
    /// did hold some of them under the old run, they show twice, once per run, rather than
    /// not at all). Logged once, as a warning; the caller reconnects after the backoff.
    fn new_run(&mut self, addr: SocketAddr, held: u64) -> Ended {
        let old_run = std::mem::replace(&mut self.hello.run_id, random_id());
        let had = self.seq;
        self.seq = self.outbox.renumber();
        tracing::warn!(
            "server {addr} claims to hold seq {held} of run {old_run}, which has only {had}: starting a new run {} (its {} unacknowledged sample(s) carried over as seq 1..={})",
            self.hello.run_id,
            self.seq,
            self.seq
        );
        Ended::NewRun
    }

    /// Sends every sample not yet sent, while no more than [`REPLAY_WINDOW`] are
    /// unacknowledged: a backlog after a reconnect goes out at the pace the server
    /// acknowledges it, so many agents replaying at once cannot flood the server.
    async fn pump<W: AsyncWrite + Unpin>(
        &mut self,
        write: &mut W,
        flow: &mut Flow,
    ) -> io::Result<()> {
        while flow.next <= self.seq && flow.next <= flow.acked + REPLAY_WINDOW {
            // Samples dropped from a full outbox are gone for good: skip them.
            let oldest = self.outbox.pending().next().map_or(self.seq + 1, |m| m.seq);
            flow.next = flow.next.max(oldest);
            let Some(mut m) = self.outbox.get(flow.next).cloned() else {
                return Ok(());
            };
            // The clock measurement rides on this connection's first frame only.
            m.clock = self.clock.take();
            let live = m.seq == self.seq;
            let seq = m.seq;
            let n = send_within(write, &AgentFrame::Metrics(m), self.write_deadline()).await?;
            if live {
                tracing::info!("Sent {n} bytes (seq {seq})");
            } else {
                tracing::debug!("Sent {n} bytes (seq {seq}, buffered)");
            }
            flow.sent(seq);
        }
        Ok(())
    }

    /// How long one sample may take to write: no longer than an interval (at least a second),
    /// so a server that stopped reading cannot hold up sampling for long.
    fn write_deadline(&self) -> Duration {
        self.interval.clamp(Duration::from_secs(1), WRITE_TIMEOUT)
    }

    async fn say_bye<W: AsyncWrite + Unpin>(&mut self, write: &mut W) -> Ended {
        let bye = AgentFrame::Bye(Bye {
            reason: Some("agent shutting down".into()),
        });
        let _ = send(write, &bye).await;
        let _ = tokio::time::timeout(WRITE_TIMEOUT, write.shutdown()).await;
        Ended::Shutdown
    }
}

/// Resolves `idle` after `since`; never while nothing is waiting for an ack.
async fn ack_deadline(since: Option<tokio::time::Instant>, idle: Duration) {
    match since {
        Some(since) => tokio::time::sleep_until(since + idle).await,
        None => std::future::pending().await,
    }
}
