//! Listener actor: accepts TCP connections and starts one [`Session`] per connection.
//!
//! Owns the listening socket (bound by [`crate::server::Server::start`] on the address it was
//! given), the session id counter, and the connection counts ([`Connections`]): a connection
//! over [`Limits::max_connections`](crate::config::Limits) in total or per IP gets an `error`
//! frame (code `limit`) and is closed at once, with one log line per [`LIMIT_LOG_EVERY`] at
//! most; an accepted one is counted by a [`ConnGuard`](crate::server::limits::ConnGuard) that
//! its Session owns. Receives accepted connections from its socket and [`Stop`] from the shutdown path
//! (stopping drops the socket: no new connections). Sends nothing; each Session it starts is
//! given the shared [`RegistryLink`] and talks to the Registry itself.
//!
//! Sessions run on the server's session threads (Arbiters), handed out in turn, so decoding
//! and acknowledging use every core; the Listener and the Registry stay on the server's own
//! thread. Without session threads, sessions run on the Listener's thread.
//!
//! With the trust layer (`--auth required|optional`) a connection is first told apart by its
//! first bytes ([`sniff`], peeked, nothing consumed): `LMN2` runs the Noise handshake
//! ([`noise::server_handshake_within`], bounded sizes, [`HANDSHAKE_TIMEOUT`] for the sniff and
//! the handshake together) on the session's thread, and only a finished handshake starts a
//! Session, over the encrypted stream; `{` (a protocol-1 agent) starts a plaintext Session in
//! `--auth optional` and is refused with `unsupported_version` in `--auth required`; anything
//! else is closed. A failed handshake ends its connection with one (rate-limited) log line
//! ([`Trust::handshake_failed`]). The connection's slot is held from accept on, so handshakes
//! count against the connection limits.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::task::TaskTracker;

use crate::auth::noise::{self, HANDSHAKE_TIMEOUT};
use crate::auth::sniff::{SNIFF_LEN, Sniffed, sniff};
use crate::codec::encode_line;
use crate::config::{ACCEPT_ERROR_PAUSE, AuthMode, LIMIT_LOG_EVERY};
use crate::protocol::{ErrorCode, ErrorFrame, ServerFrame};
use crate::server::limits::{ConnGuard, Connections};
use crate::server::messages::{RegistryLink, SessionId};
use crate::server::session::{Session, Settings};
use crate::server::trust::Trust;

/// Pause between two peeks while the first bytes of a connection do not tell yet (rare: an
/// agent sends its preamble and first handshake message in one write).
const SNIFF_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// Stop accepting connections.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// See the module documentation.
pub struct Listener {
    socket: Option<TcpListener>,
    registry: Arc<RegistryLink>,
    settings: Arc<Settings>,
    tracker: TaskTracker,
    /// Where sessions run, in turn; empty: on this actor's thread.
    workers: Vec<ArbiterHandle>,
    next_id: SessionId,
    connections: Connections,
    refused: u64,
    last_refusal_log: Option<Instant>,
}

impl Listener {
    pub fn new(
        socket: TcpListener,
        registry: Arc<RegistryLink>,
        settings: Arc<Settings>,
        tracker: TaskTracker,
        workers: Vec<ArbiterHandle>,
    ) -> Self {
        Self {
            socket: Some(socket),
            registry,
            settings,
            tracker,
            workers,
            next_id: 0,
            connections: Connections::default(),
            refused: 0,
            last_refusal_log: None,
        }
    }

    /// Tells the peer why (best effort, never blocking) and drops the connection.
    fn refuse(&mut self, stream: TcpStream, peer: std::net::SocketAddr, why: String) {
        self.refused += 1;
        let now = Instant::now();
        if self
            .last_refusal_log
            .is_none_or(|t| now.duration_since(t) >= LIMIT_LOG_EVERY)
        {
            self.last_refusal_log = Some(now);
            tracing::warn!(%peer, "refusing connection: {why} ({} refused so far)", self.refused);
        }
        let frame = ServerFrame::Error(ErrorFrame {
            code: ErrorCode::Limit,
            message: why,
        });
        if let Ok(line) = encode_line(&frame) {
            let _ = stream.try_write(&line);
        }
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(socket) = self.socket.take() {
            ctx.add_stream(TcpListenerStream::new(socket));
        }
    }
}

impl StreamHandler<io::Result<TcpStream>> for Listener {
    fn handle(&mut self, item: io::Result<TcpStream>, ctx: &mut Self::Context) {
        match item {
            Ok(stream) => {
                let Ok(peer) = stream.peer_addr() else {
                    return; // the peer is already gone
                };
                let slot = match self
                    .connections
                    .try_acquire(peer.ip(), &self.settings.limits)
                {
                    Ok(slot) => slot,
                    Err(why) => return self.refuse(stream, peer, why),
                };
                self.next_id += 1;
                let id = self.next_id;
                let start = Start {
                    peer,
                    id,
                    registry: self.registry.clone(),
                    settings: self.settings.clone(),
                    slot,
                    tracker: self.tracker.clone(),
                };
                if self.workers.is_empty() {
                    if self.settings.trust.is_none() {
                        start.plain(stream);
                    } else {
                        actix::spawn(start.authenticate(stream));
                    }
                    return;
                }
                // Move the socket to the session's thread: it must be registered with that
                // thread's event loop, or this thread would poll it for the other one.
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(e) => return tracing::warn!(%peer, "dropping connection: {e}"),
                };
                let worker = &self.workers[(id % self.workers.len() as u64) as usize];
                worker.spawn(async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) if start.settings.trust.is_none() => start.plain(stream),
                        Ok(stream) => start.authenticate(stream).await,
                        Err(e) => tracing::warn!(%peer, "dropping connection: {e}"),
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}; pausing {ACCEPT_ERROR_PAUSE:?}");
                ctx.wait(actix::clock::sleep(ACCEPT_ERROR_PAUSE).into_actor(self));
            }
        }
    }
}

/// What a Session needs, carried to the session's thread (and through the handshake).
struct Start {
    peer: std::net::SocketAddr,
    id: SessionId,
    registry: Arc<RegistryLink>,
    settings: Arc<Settings>,
    slot: ConnGuard,
    tracker: TaskTracker,
}

impl Start {
    /// A plaintext session (protocol 1).
    fn plain(self, stream: TcpStream) {
        self.session(stream, None);
    }

    fn session(self, stream: TcpStream, noise: Option<noise::Accepted>) {
        Session::start(
            stream,
            noise,
            self.peer,
            self.id,
            self.registry,
            self.settings,
            self.slot,
            &self.tracker,
        );
    }

    /// Sniffs the connection, runs the handshake (or takes a protocol-1 agent where allowed),
    /// then starts the Session; see the module docs.
    async fn authenticate(self, mut stream: TcpStream) {
        let Some(trust) = self.settings.trust.clone() else {
            return self.plain(stream);
        };
        // The first bytes come within the hello timeout (slowloris guard, as for a hello),
        // the whole handshake within HANDSHAKE_TIMEOUT.
        let opened = tokio::time::Instant::now();
        let quiet = self.settings.limits.hello_timeout.min(HANDSHAKE_TIMEOUT);
        let _ = stream.set_nodelay(true);
        let kind = match tokio::time::timeout_at(opened + quiet, first_bytes(&stream)).await {
            Ok(Ok(kind)) => kind,
            Ok(Err(e)) => return tracing::debug!(peer = %self.peer, "connection lost: {e}"),
            Err(_) => return silent_peer(stream, self.peer, quiet).await,
        };
        let deadline = opened + HANDSHAKE_TIMEOUT;
        match kind {
            Sniffed::V2 { .. } => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match noise::server_handshake_within(&mut stream, &trust.identity(), left).await {
                    Ok(accepted) => self.session(stream, Some(accepted)),
                    Err(e) => trust.handshake_failed(self.peer, &e),
                }
            }
            // `--auth optional`: whatever is not protocol 2 is protocol 1, as before it (the
            // plaintext codec answers nonsense with `bad_frame`).
            _ if trust.mode() == AuthMode::Optional => self.plain(stream),
            Sniffed::V1 => refuse_v1(stream, self.peer, &trust).await,
            Sniffed::Unknown | Sniffed::NeedMore => {
                trust.handshake_failed(self.peer, &"not a lanmon connection (first bytes)");
            }
        }
    }
}

/// Peeks until [`sniff`] can tell (the caller bounds the time).
async fn first_bytes(stream: &TcpStream) -> io::Result<Sniffed> {
    let mut buf = [0u8; 64];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before saying anything",
            ));
        }
        match sniff(&buf[..n]) {
            Sniffed::NeedMore if n < buf.len() => {
                if n == seen {
                    // Peek returns at once while the same bytes wait: do not spin.
                    tokio::time::sleep(SNIFF_PAUSE).await;
                }
                seen = n;
            }
            Sniffed::NeedMore => return Ok(Sniffed::Unknown),
            kind => return Ok(kind),
        }
        debug_assert!(SNIFF_LEN <= buf.len());
    }
}

/// A connection that sent nothing within `quiet` (the hello timeout): the `error` frame
/// `timeout` (what a silent peer always got, and a protocol-1 agent understands), one log line,
/// closed.
async fn silent_peer(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    quiet: std::time::Duration,
) {
    use tokio::io::AsyncWriteExt;
    let message = format!("no hello within {quiet:?}");
    tracing::warn!(%peer, "closing connection: timeout: {message}");
    let frame = ServerFrame::Error(ErrorFrame {
        code: ErrorCode::Timeout,
        message,
    });
    if let Ok(line) = encode_line(&frame) {
        let _ = tokio::time::timeout(crate::config::WRITE_TIMEOUT, async {
            let _ = stream.write_all(&line).await;
            let _ = stream.shutdown().await;
        })
        .await;
    }
}

/// `--auth required`: a protocol-1 agent gets the v1 `error` frame it understands, and is
/// closed.
async fn refuse_v1(mut stream: TcpStream, peer: std::net::SocketAddr, trust: &Trust) {
    use tokio::io::AsyncWriteExt;
    let message = "this server requires protocol 2 (authenticated agents): upgrade the agent \
                   and start it with the server's join token (--join), or run the server with \
                   --auth optional"
        .to_string();
    trust.handshake_failed(
        peer,
        &"a protocol-1 (plaintext) agent: refused (--auth required)",
    );
    let frame = ServerFrame::Error(ErrorFrame {
        code: ErrorCode::UnsupportedVersion,
        message,
    });
    let Ok(line) = encode_line(&frame) else {
        return;
    };
    // Read what it sent first and wait for its close after ours: closing with unread bytes
    // would reset the connection, and the agent might never read the error.
    let _ = tokio::time::timeout(crate::config::WRITE_TIMEOUT, async {
        use tokio::io::AsyncReadExt;
        let mut sink = [0u8; 1024];
        let _ = stream.read(&mut sink).await;
        let _ = stream.write_all(&line).await;
        let _ = stream.shutdown().await;
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

impl Handler<Stop> for Listener {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
