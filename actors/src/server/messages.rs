//! The messages a Session and the Registry exchange, both ways, in one neutral module (as
//! actix/examples' `chat-broker/src/message.rs` does), so that neither actor imports the other
//! and each can be tested against a probe standing in for the other.
//!
//! Session → Registry: [`Connect`] (from `started()`, before any frame), [`Hello`] (answered
//! with the resume point or a refusal), [`Samples`] (or [`Sample`]), [`Disconnect`] (from
//! `stopping()`). The Session reaches the Registry through a [`RegistryLink`].
//!
//! Registry → Session: [`Close`] (replaced, displaced, or shutdown; the trust layer sends
//! `Revoked`) and [`Durable`] (with a store: what may be acknowledged), through the
//! recipients the Session hands over in [`Connect`].
//!
//! Messages that anyone sends to one actor live beside that actor's handlers instead (e.g.
//! `registry::GetSnapshotParts`, `store::Append`).

use std::net::SocketAddr;

use actix::prelude::*;

use crate::protocol::{self, Metrics};
use crate::snapshot::AgentAuth;

/// Identifies one connection for the life of the server process.
pub type SessionId = u64;

// ---- Session → Registry -----------------------------------------------------------------------

/// A new connection; sent by a Session from `started()`, before it handles any frame.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub session: SessionId,
    pub peer: SocketAddr,
    pub close: Recipient<Close>,
    /// Where to say what is durable (used only with a store).
    pub durable: Recipient<Durable>,
}

/// A validated (and, with the trust layer, admitted) `hello`: attaches the session to an agent
/// id. Answers the highest seq already held for this agent's run (on disk, with a store;
/// `None` for a run the registry has not seen), which the Session passes on in `welcome` so
/// the agent does not resend those samples; or why the id is refused (another live run holds
/// it).
#[derive(Message)]
#[rtype(result = "Result<Option<u64>, String>")]
pub struct Hello {
    pub session: SessionId,
    pub hello: protocol::Hello,
    /// How the server knows the agent (`None` with `--auth off`).
    pub auth: Option<AgentAuth>,
    /// The fingerprint of its key, when authenticated.
    pub fp: Option<String>,
}

/// A validated sample from an attached session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Sample {
    pub session: SessionId,
    pub metrics: Metrics,
}

/// Validated samples from an attached session, in the order received: what a Session read in
/// one go, as one message (one message per sample costs more than the sample at high rates).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Samples {
    pub session: SessionId,
    pub samples: Vec<Metrics>,
}

/// The session ended; `reason` is shown as the agent's offline reason.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub session: SessionId,
    pub reason: String,
}

/// Where a Session sends what it learns: the Registry in the server (wired by
/// [`crate::server::Server::start`]), a probe in tests. Shared by every session
/// (`Arc<RegistryLink>`): `do_send` keeps no per-sender state.
pub struct RegistryLink {
    pub connect: Recipient<Connect>,
    pub hello: Recipient<Hello>,
    pub samples: Recipient<Samples>,
    pub disconnect: Recipient<Disconnect>,
}

impl RegistryLink {
    /// The link to an actor that handles every Session → Registry message.
    pub fn to<A>(registry: &Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>>
            + Handler<Connect>
            + Handler<Hello>
            + Handler<Samples>
            + Handler<Disconnect>,
    {
        Self {
            connect: registry.clone().recipient(),
            hello: registry.clone().recipient(),
            samples: registry.clone().recipient(),
            disconnect: registry.clone().recipient(),
        }
    }
}

// ---- Registry → Session -----------------------------------------------------------------------

/// Every sample of this session's agent run up to `seq` is on disk: acknowledge it.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct Durable {
    pub seq: u64,
}

/// Asks a session to end.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum Close {
    /// The server is shutting down: say `bye` and close.
    Shutdown,
    /// A newer connection with the same agent id took over: send `error` and close.
    Replaced,
    /// The operator revoked the agent's key: send `error` (`revoked`) and close at once.
    Revoked,
    /// The agent id's home address took it back from this connection, which comes from
    /// elsewhere: send `error` (`duplicate_id`) and close.
    Displaced,
}
