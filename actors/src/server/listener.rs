//! Listener actor: accepts TCP connections and starts one [`Session`] per connection.
//!
//! Owns the listening socket (bound by [`crate::server::Server::start`] on the address it was
//! given) and the session id counter. Receives accepted connections from its socket and
//! [`Stop`] from the shutdown path (stopping drops the socket: no new connections). Sends
//! nothing; each Session it starts talks to the Registry itself.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::task::TaskTracker;

use crate::server::registry::Registry;
use crate::server::session::{Session, SessionId};
use crate::snapshot::ServerInfo;

/// Pause after an accept error (e.g. out of file descriptors) so it cannot spin the CPU.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Stop accepting connections.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// See the module documentation.
pub struct Listener {
    socket: Option<TcpListener>,
    registry: Addr<Registry>,
    server: Arc<ServerInfo>,
    tracker: TaskTracker,
    next_id: SessionId,
}

impl Listener {
    pub fn new(
        socket: TcpListener,
        registry: Addr<Registry>,
        server: Arc<ServerInfo>,
        tracker: TaskTracker,
    ) -> Self {
        Self {
            socket: Some(socket),
            registry,
            server,
            tracker,
            next_id: 0,
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
                self.next_id += 1;
                Session::start(
                    stream,
                    peer,
                    self.next_id,
                    self.registry.clone(),
                    self.server.clone(),
                    &self.tracker,
                );
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
