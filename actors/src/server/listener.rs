//! Listener actor: accepts TCP connections and starts one [`Session`] per connection.
//!
//! Owns the listening socket (bound by [`crate::server::Server::start`] on the address it was
//! given), the session id counter, and the connection counts: a connection over
//! [`Limits::max_connections`](crate::config::Limits) in total or per IP gets an `error` frame
//! (code `limit`) and is closed at once, with one log line per 10 s at most. Receives accepted connections from its socket and
//! [`Stop`] from the shutdown path (stopping drops the socket: no new connections). Sends
//! nothing; each Session it starts talks to the Registry itself.
//!
//! Sessions run on the server's session threads (Arbiters), handed out in turn, so decoding
//! and acknowledging use every core; the Listener and the Registry stay on the server's own
//! thread. Without session threads, sessions run on the Listener's thread.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::task::TaskTracker;

use crate::codec::encode_line;
use crate::config::Limits;
use crate::protocol::{ErrorCode, ErrorFrame, ServerFrame};
use crate::server::registry::Registry;
use crate::server::session::{Session, SessionId, Settings};

/// Pause after an accept error (e.g. out of file descriptors) so it cannot spin the CPU.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// At most one "connection refused by a limit" log line per this period.
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Open connections, in total and per IP. Cheap to clone (shared; a connection is counted on
/// the Listener's thread and freed on its session's).
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<Mutex<Counts>>);

impl Connections {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: every update is one step.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a new connection from `ip`, or says which limit it would break.
    pub fn try_acquire(&self, ip: IpAddr, limits: &Limits) -> Result<ConnGuard, String> {
        let mut counts = self.counts();
        if counts.total >= limits.max_connections {
            return Err(format!(
                "too many connections ({} in total)",
                limits.max_connections
            ));
        }
        let from_ip = counts.per_ip.entry(ip).or_insert(0);
        if *from_ip >= limits.max_connections_per_ip {
            return Err(format!(
                "too many connections from {ip} ({})",
                limits.max_connections_per_ip
            ));
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(ConnGuard {
            conns: self.clone(),
            ip,
        })
    }

    /// Open connections in total.
    pub fn total(&self) -> usize {
        self.counts().total
    }
}

/// One counted connection; dropping it (with its Session) frees the slot.
#[derive(Debug)]
pub struct ConnGuard {
    conns: Connections,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut counts = self.conns.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Stop accepting connections.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// See the module documentation.
pub struct Listener {
    socket: Option<TcpListener>,
    registry: Addr<Registry>,
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
        registry: Addr<Registry>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limits_in_total_and_per_ip() {
        let limits = Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        };
        let conns = Connections::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = conns.try_acquire(a, &limits);
        let a2 = conns.try_acquire(a, &limits);
        assert!(a1.is_ok() && a2.is_ok());
        assert!(conns.try_acquire(a, &limits).is_err(), "third from one IP");
        let b1 = conns.try_acquire(b, &limits);
        assert!(b1.is_ok());
        assert!(conns.try_acquire(b, &limits).is_err(), "fourth in total");
        drop(a1);
        assert_eq!(conns.total(), 2);
        assert!(
            conns.try_acquire(b, &limits).is_ok(),
            "a freed slot is reusable"
        );
    }
}
