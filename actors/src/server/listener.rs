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

use std::io;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::task::TaskTracker;

use crate::codec::encode_line;
use crate::config::{ACCEPT_ERROR_PAUSE, LIMIT_LOG_EVERY};
use crate::protocol::{ErrorCode, ErrorFrame, ServerFrame};
use crate::server::limits::Connections;
use crate::server::messages::{RegistryLink, SessionId};
use crate::server::session::{Session, Settings};

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
                let registry = self.registry.clone();
                let settings = self.settings.clone();
                if self.workers.is_empty() {
                    Session::start(stream, peer, id, registry, settings, slot, &self.tracker);
                    return;
                }
                // Move the socket to the session's thread: it must be registered with that
                // thread's event loop, or this thread would poll it for the other one.
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(e) => return tracing::warn!(%peer, "dropping connection: {e}"),
                };
                let worker = &self.workers[(id % self.workers.len() as u64) as usize];
                let tracker = self.tracker.clone();
                worker.spawn(async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => {
                            Session::start(stream, peer, id, registry, settings, slot, &tracker);
                        }
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

impl Handler<Stop> for Listener {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
