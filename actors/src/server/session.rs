//! Session actor: one per TCP connection. Decodes, validates, admits, forwards.
//!
//! Owns its connection: the read half (a bounded codec), the queue to its writer task, the
//! agent's `hello`, the highest seq received and acknowledged, and the [`ConnGuard`] that
//! counts it against the connection limits. A protocol-2 connection arrives after the
//! Listener's Noise handshake: the codec then reads and writes through the encrypted stream
//! halves ([`crate::auth::noise`]) and the session knows the agent's authenticated key.
//!
//! Trust ([`Settings::trust`], absent with `--auth off`): on `hello`, an authenticated session
//! asks [`Trust::admit`] (enrolled → on; pending → `pending_approval`, no sample accepted; a
//! key or id bound elsewhere → `identity_mismatch`; revoked → `revoked`); a plaintext one
//! (protocol 1, `--auth optional`) may not use an enrolled id and is marked unauthenticated.
//! After `welcome`, a session shown the previous key of a rotation sends `server_key`. A
//! revocation reaches an admitted session as [`Close::Revoked`] and ends it at once.
//!
//! Lifecycle: `started()` registers the connection with the Registry ([`Connect`]) before any
//! frame is handled and arms the hello timeout; the first frame must be a valid `hello`
//! (answered with `welcome`), then `metrics` frames (each validated, answered with `ack`, and
//! forwarded: the samples read in one go as one [`Samples`]), until `bye`, end of stream, or an
//! error. Without a store the `ack` goes out at once; with one ([`Settings::durable_acks`]) it
//! goes out when the Registry says the sample is on disk ([`Durable`]), never beyond what this
//! connection received. `stopping()` reports the end and its reason ([`Disconnect`]).
//!
//! Bad input ends this connection only: an `error` frame, one log line naming the peer and the
//! reason, and the actor stops. So does a sample beyond the agent's rate
//! ([`intake::Allowances`]: per key with protocol 2, per id and address with protocol 1; a
//! burst, then a few samples per announced interval): `limit`, and
//! nothing from that sample on is acknowledged (the agent keeps it). Writes go through a
//! bounded queue to a writer task, so a peer that sends but never reads cannot grow the
//! server's memory: when the queue is full the session ends.
//!
//! Receives: frames from its socket; [`Close`] and [`Durable`] from the Registry. Sends, through
//! its [`RegistryLink`] (the Registry, or a probe in tests): [`Connect`], [`Hello`],
//! [`Samples`], [`Disconnect`]. All these messages live in [`crate::server::messages`]; this
//! module names no other actor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::task::TaskTracker;

use crate::auth::enroll::{Claim, Decision};
use crate::auth::fingerprint::Fingerprint;
use crate::auth::keys::PublicKey;
use crate::auth::noise::{self, Proof};
use crate::codec::{CodecError, FrameBudget, ServerCodec};
use crate::config::{
    IDLE_CHECK_MAX, IDLE_CHECK_MIN, Limits, MAX_IDLE_GRACE, MIN_IDLE_TIMEOUT, SESSION_QUEUE_FRAMES,
    WRITE_TIMEOUT,
};
use crate::net::set_keepalive;
use crate::protocol::{
    self, Ack, AgentFrame, Bye, ErrorCode, ErrorFrame, PROTOCOL_V1, PROTOCOL_VERSION, ServerFrame,
    Welcome,
};
use crate::server::intake;
use crate::server::limits::ConnGuard;
use crate::server::messages::{
    Close, Connect, Disconnect, Durable, Hello, RegistryLink, Samples, SessionId,
};
use crate::server::trust::Trust;
use crate::snapshot::{AgentAuth, ServerInfo};
use crate::text::for_terminal;
use crate::validate::{self, Invalid};

/// Initial size of a connection's read buffer. A `metrics` frame is ~250 bytes (8 cores), so
/// this holds a few; the buffer grows for bigger frames (up to the frame limit). tokio-util's
/// default of 8 KiB per connection was a third of the server's memory at 10,000 agents.
pub const READ_BUFFER: usize = 1024;

/// A write buffer that grew beyond this (a burst of acks, a big frame) is freed after use.
const WRITE_BUFFER_KEEP: usize = 4096;

/// A frame queued for the writer task. Acks, the frame sent per sample, travel inline; the
/// rare others are boxed, which keeps a queue slot at 16 bytes (tokio allocates a channel's
/// slots 32 at a time, so an unboxed `ServerFrame` cost 3 KiB per connection).
#[derive(Debug)]
enum Outgoing {
    Ack(u64),
    Other(Box<ServerFrame>),
}

impl From<ServerFrame> for Outgoing {
    fn from(frame: ServerFrame) -> Self {
        match frame {
            ServerFrame::Ack(Ack { seq }) => Outgoing::Ack(seq),
            other => Outgoing::Other(Box::new(other)),
        }
    }
}

impl From<Outgoing> for ServerFrame {
    fn from(out: Outgoing) -> Self {
        match out {
            Outgoing::Ack(seq) => ServerFrame::Ack(Ack { seq }),
            Outgoing::Other(frame) => *frame,
        }
    }
}

/// What every session needs to know about its server, shared.
#[derive(Debug)]
pub struct Settings {
    pub info: ServerInfo,
    pub limits: Limits,
    /// Acknowledge a sample only once the store has committed it ([`Durable`]).
    pub durable_acks: bool,
    /// Bytes of partly received frames, shared by every session's codec
    /// ([`Limits::max_buffered_bytes`]).
    pub frame_budget: FrameBudget,
    /// How fast each agent id's samples may come ([`intake::Allowances`]).
    pub allowances: intake::Allowances,
    /// The trust layer; `None` with `--auth off` (everything plaintext, nobody marked).
    pub trust: Option<Arc<Trust>>,
}

impl Settings {
    /// Settings with a frame budget of `limits.max_buffered_bytes`, sample allowances of
    /// `limits` and no trust layer (see [`Settings::with_trust`]).
    pub fn new(info: ServerInfo, limits: Limits, durable_acks: bool) -> Self {
        let frame_budget = FrameBudget::new(limits.max_buffered_bytes);
        let allowances = intake::Allowances::new(intake::RateLimit::of(&limits));
        Self {
            info,
            limits,
            durable_acks,
            frame_budget,
            allowances,
            trust: None,
        }
    }

    /// These settings with the trust layer (`None`: `--auth off`).
    #[must_use]
    pub fn with_trust(mut self, trust: Option<Arc<Trust>>) -> Self {
        self.trust = trust;
        self
    }
}

/// Who is on the other end, as far as the transport knows.
#[derive(Debug, Clone, Copy)]
enum PeerAuth {
    /// Plaintext with `--auth off`: nobody is authenticated, nothing is marked.
    Open,
    /// Plaintext protocol 1 in `--auth optional`: marked `unauthenticated`.
    Unauthenticated,
    /// Noise: the agent's key as the handshake authenticated it.
    Authenticated {
        key: PublicKey,
        proof: Proof,
        /// Which server key the agent was shown (0: the current one).
        server_key_index: usize,
    },
}

/// See the module documentation.
pub struct Session {
    id: SessionId,
    peer: SocketAddr,
    /// Shared by every session of the server.
    registry: Arc<RegistryLink>,
    settings: Arc<Settings>,
    out: mpsc::Sender<Outgoing>,
    hello: Option<protocol::Hello>,
    /// The agent id's rate budget, shared with its other connections from this address
    /// (`None`: no limit).
    budget: Option<intake::Budget>,
    /// Samples read but not yet sent to the Registry (see [`Session::forward`]).
    pending: Vec<protocol::Metrics>,
    highest_seq: u64,
    /// Highest seq acknowledged on this connection (with durable acks).
    acked_seq: u64,
    end_reason: Option<String>,
    /// When the peer last sent a frame (idle timeout).
    last_frame_at: Instant,
    peer_auth: PeerAuth,
    /// Admitted by the trust layer (it must be told when the session ends).
    admitted: bool,
    /// Counts this connection against the connection limits until the session is dropped.
    slot: ConnGuard,
}

impl Session {
    /// Starts a session on an accepted connection: plaintext when `noise` is `None`, else
    /// over the encrypted stream of that finished handshake. Its writer task is tracked by
    /// `tracker` so that shutdown can wait until every goodbye has been flushed.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        stream: TcpStream,
        noise: Option<noise::Accepted>,
        peer: SocketAddr,
        id: SessionId,
        registry: Arc<RegistryLink>,
        settings: Arc<Settings>,
        slot: ConnGuard,
        tracker: &TaskTracker,
    ) -> Addr<Session> {
        let _ = stream.set_nodelay(true);
        set_keepalive(&stream);
        let (read, write) = stream.into_split();
        let (out, rx) = mpsc::channel(SESSION_QUEUE_FRAMES);
        let peer_auth = match (&noise, &settings.trust) {
            (Some(a), _) => PeerAuth::Authenticated {
                key: a.session.remote_static,
                proof: a.proof,
                server_key_index: a.server_key_index,
            },
            (None, Some(_)) => PeerAuth::Unauthenticated,
            (None, None) => PeerAuth::Open,
        };
        let codec = ServerCodec::with_max_len(settings.limits.max_frame_len)
            .with_budget(settings.frame_budget.clone());
        let session = move |_: &mut Context<Session>| Session {
            id,
            peer,
            registry,
            settings,
            out,
            hello: None,
            budget: None,
            pending: Vec::new(),
            highest_seq: 0,
            acked_seq: 0,
            end_reason: None,
            last_frame_at: Instant::now(),
            peer_auth,
            admitted: false,
            slot,
        };
        match noise {
            None => {
                actix::spawn(tracker.track_future(write_frames(rx, write, peer)));
                Session::create(move |ctx| {
                    ctx.add_stream(FramedRead::with_capacity(read, codec, READ_BUFFER));
                    session(ctx)
                })
            }
            Some(accepted) => {
                let (read, write) = accepted.session.split(read, write);
                actix::spawn(tracker.track_future(write_frames(rx, write, peer)));
                Session::create(move |ctx| {
                    ctx.add_stream(FramedRead::with_capacity(read, codec, READ_BUFFER));
                    session(ctx)
                })
            }
        }
    }

    fn send(&mut self, frame: ServerFrame, ctx: &mut Context<Self>) {
        match self.out.try_send(frame.into()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(peer = %self.peer, "closing connection: peer is not reading (send queue full)");
                self.end("error: peer not reading", ctx);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.end("connection lost", ctx),
        }
    }

    fn end(&mut self, reason: impl Into<String>, ctx: &mut Context<Self>) {
        self.end_reason.get_or_insert_with(|| reason.into());
        ctx.stop();
    }

    /// Refuses the connection: one log line, an `error` frame, then close. The agent's
    /// offline reason is `error: <message>`.
    fn fail(&mut self, code: ErrorCode, message: String, ctx: &mut Context<Self>) {
        // The message may quote the peer's bytes (serde's "unknown variant `…`"): from here
        // on (log, offline reason, error frame) it is escaped for terminals.
        let message = for_terminal(&message).into_owned();
        let reason = format!("error: {message}");
        self.close_with(code, message, reason, ctx);
    }

    /// One log line naming the peer, an `error` frame, then close with `reason`.
    fn close_with(
        &mut self,
        code: ErrorCode,
        message: String,
        reason: String,
        ctx: &mut Context<Self>,
    ) {
        let who = self.hello.as_ref().map(|h| h.name.as_str()).unwrap_or("-");
        let (who, text) = (for_terminal(who), for_terminal(&message));
        tracing::warn!(peer = %self.peer, agent = %who, "closing connection: {code}: {text}");
        self.send(ServerFrame::Error(ErrorFrame { code, message }), ctx);
        self.end(reason, ctx);
    }

    fn on_hello(&mut self, hello: protocol::Hello, ctx: &mut Context<Self>) {
        if self.hello.is_some() {
            return self.fail(
                ErrorCode::BadFrame,
                "second hello on one connection".into(),
                ctx,
            );
        }
        let proto = match self.peer_auth {
            PeerAuth::Authenticated { .. } => PROTOCOL_VERSION,
            PeerAuth::Open | PeerAuth::Unauthenticated => PROTOCOL_V1,
        };
        if let Err(e) = validate::hello_for(&hello, self.settings.limits.max_cores, proto) {
            let code = match e {
                Invalid::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
                _ => ErrorCode::InvalidValue,
            };
            return self.fail(code, format!("invalid hello: {e}"), ctx);
        }
        let (auth, fp) = match self.admit(&hello, ctx) {
            Ok(tag) => tag,
            Err((code, message)) => return self.refuse(&hello, code, message, ctx),
        };
        tracing::info!(
            peer = %self.peer,
            "agent {} ({}) connected: {} cores, every {} ms, {}",
            for_terminal(&hello.name),
            for_terminal(&hello.agent_id),
            hello.cores,
            hello.interval_ms,
            for_terminal(&hello.os)
        );
        let interval = Duration::from_millis(hello.interval_ms);
        let allowances = &self.settings.allowances;
        self.budget = match self.peer_auth {
            // The key the handshake proved is the agent's identity: one bucket wherever it is.
            PeerAuth::Authenticated { key, .. } => {
                allowances.budget_for_key(key.as_bytes(), interval, Instant::now())
            }
            PeerAuth::Open | PeerAuth::Unauthenticated => {
                allowances.budget(&hello.agent_id, self.peer.ip(), interval, Instant::now())
            }
        };
        let attach = Hello {
            session: self.id,
            hello: hello.clone(),
            auth,
            fp,
        };
        self.hello = Some(hello);
        // Wait for the registry's answer before handling the next frame: `welcome` carries the
        // resume point, and samples must not overtake the hello. (A sender of its own, as an
        // `Addr` per session was: a full mailbox parks only this one, and only for this send.)
        let answer = self
            .registry
            .hello
            .clone()
            .send(attach)
            .into_actor(self)
            .map(move |answer, this, ctx| {
                let last_seq = match answer {
                    Ok(Ok(last_seq)) => last_seq,
                    Ok(Err(refused)) => return this.fail(ErrorCode::DuplicateId, refused, ctx),
                    Err(e) => {
                        let message = format!("registry unavailable: {e}");
                        return this.fail(ErrorCode::Other, message, ctx);
                    }
                };
                this.highest_seq = last_seq.unwrap_or(0);
                this.acked_seq = this.highest_seq;
                let info = &this.settings.info;
                let welcome = Welcome {
                    proto,
                    server_id: info.id.clone(),
                    server_name: info.name.clone(),
                    server_version: info.version.clone(),
                    last_seq,
                    ts_ms: Some(crate::util::now_ms()),
                };
                this.send(ServerFrame::Welcome(welcome), ctx);
                if let (PeerAuth::Authenticated {
                    server_key_index, ..
                }, Some(trust)) = (this.peer_auth, &this.settings.trust)
                    && let Some(notice) = trust.notice_for(server_key_index)
                {
                    tracing::info!(peer = %this.peer, "telling the agent the server's new key {}", notice.fp);
                    this.send(ServerFrame::ServerKey(notice), ctx);
                }
            });
        ctx.wait(answer);
        self.watch_idle(interval, ctx);
    }

    /// Asks the trust layer about this `hello`: how the agent is to be marked, or why it is
    /// refused (the error code and the sentence for the agent).
    #[allow(clippy::type_complexity)]
    fn admit(
        &mut self,
        hello: &protocol::Hello,
        ctx: &mut Context<Self>,
    ) -> Result<(Option<AgentAuth>, Option<String>), (ErrorCode, String)> {
        let Some(trust) = self.settings.trust.clone() else {
            return Ok((None, None));
        };
        let (key, proof) = match self.peer_auth {
            PeerAuth::Open => return Ok((None, None)),
            PeerAuth::Unauthenticated => {
                trust
                    .check_unauthenticated(&hello.agent_id)
                    .map_err(|why| (ErrorCode::IdentityMismatch, why))?;
                return Ok((Some(AgentAuth::Unauthenticated), None));
            }
            PeerAuth::Authenticated { key, proof, .. } => (key, proof),
        };
        let ip = self.peer.ip().to_string();
        let claim = Claim {
            key: &key,
            proof,
            agent_id: &hello.agent_id,
            name: &hello.name,
            hostname: &hello.hostname,
            ip: &ip,
        };
        let fp = Fingerprint::of(&key).to_string();
        match trust.admit(claim, self.id, ctx.address().recipient()) {
            Decision::Accept => {
                self.admitted = true;
                Ok((Some(AgentAuth::Approved), Some(fp)))
            }
            Decision::Pending => Err((
                ErrorCode::PendingApproval,
                format!(
                    "this agent's key {fp} is not approved yet: approve it on the server \
                     (`server agents approve {fp}`, or the dashboard), or start the agent with \
                     the server's join token (--join)"
                ),
            )),
            Decision::IdentityMismatch(why) => Err((ErrorCode::IdentityMismatch, why)),
            Decision::Revoked => Err((
                ErrorCode::Revoked,
                format!("this agent's key {fp} was revoked on the server"),
            )),
        }
    }

    /// Refuses a `hello` for a trust reason: one log line, an `error` frame, then close. The
    /// agent never reached the Registry, so nothing of it is shown but the log (and, while
    /// pending, the snapshot's `pending` list).
    fn refuse(
        &mut self,
        hello: &protocol::Hello,
        code: ErrorCode,
        message: String,
        ctx: &mut Context<Self>,
    ) {
        tracing::warn!(
            peer = %self.peer,
            agent = %hello.name.escape_debug(),
            id = %hello.agent_id.escape_debug(),
            "refused: {code}: {message}"
        );
        self.send(ServerFrame::Error(ErrorFrame { code, message }), ctx);
        self.end(format!("refused: {code}"), ctx);
    }

    /// Closes the connection when the agent sends nothing for `idle_intervals` of its
    /// intervals: its samples are its heartbeat, so silence means it is gone (or half-open).
    /// Checked once per interval (so it closes within `idle` plus one interval): the timer
    /// ticks of 10,000 sessions were the largest single cost of an idle-ish server.
    ///
    /// Near the connection limit ([`ConnGuard::near_limit`]) a connection silent for
    /// [`Limits::pressure_idle_timeout`] is closed too (`limit`), whatever its interval, so
    /// that connections held in silence cannot keep new agents out.
    fn watch_idle(&mut self, interval: Duration, ctx: &mut Context<Self>) {
        let idle = idle_timeout(interval, self.settings.limits.idle_intervals);
        let pressure_idle = self.settings.limits.pressure_idle_timeout;
        let check_every = interval
            .min(pressure_idle)
            .clamp(IDLE_CHECK_MIN, IDLE_CHECK_MAX);
        ctx.run_interval(check_every, move |this, ctx| {
            let silent = this.last_frame_at.elapsed();
            if this.end_reason.is_some() {
                return;
            }
            if silent > idle {
                let message = format!("nothing received for {idle:?}");
                this.close_with(
                    ErrorCode::Timeout,
                    message.clone(),
                    format!("timeout: {message}"),
                    ctx,
                );
            } else if silent > pressure_idle && this.slot.near_limit(&this.settings.limits) {
                let message = format!(
                    "the server is near its connection limit and this connection sent nothing for {pressure_idle:?}"
                );
                this.close_with(
                    ErrorCode::Limit,
                    message.clone(),
                    format!("limit: {message}"),
                    ctx,
                );
            }
        });
    }

    fn on_metrics(&mut self, metrics: protocol::Metrics, ctx: &mut Context<Self>) {
        let Some(hello) = &self.hello else {
            return self.fail(ErrorCode::BadFrame, "metrics before hello".into(), ctx);
        };
        if let Err(e) = validate::metrics(&metrics, hello) {
            return self.fail(
                ErrorCode::InvalidValue,
                format!("invalid metrics: {e}"),
                ctx,
            );
        }
        // Over its rate: refused, and with it everything after (nothing more is acknowledged
        // on this connection, so the agent keeps them and sends them again later).
        if let Some(budget) = &self.budget
            && !budget.take(Instant::now())
        {
            let limit = self.settings.allowances.limit();
            let message = format!(
                "sending faster than its interval allows: more than {} samples per interval of {} ms beyond a burst of {} (sample {} and later not accepted)",
                limit.per_interval, hello.interval_ms, limit.burst, metrics.seq
            );
            return self.fail(ErrorCode::Limit, message, ctx);
        }
        self.highest_seq = self.highest_seq.max(metrics.seq);
        if self.pending.is_empty() {
            // Runs once this wakeup's frames are handled: they travel as one message.
            ctx.spawn(fut::ready(()).map(|(), this: &mut Self, _| this.forward()));
        }
        self.pending.push(metrics);
        if !self.settings.durable_acks {
            let seq = self.highest_seq;
            self.send(ServerFrame::Ack(Ack { seq }), ctx);
        }
    }
}

impl Session {
    /// Sends the samples read so far to the Registry, in order, as one message.
    fn forward(&mut self) {
        if !self.pending.is_empty() {
            self.registry.samples.do_send(Samples {
                session: self.id,
                samples: std::mem::take(&mut self.pending),
            });
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.registry.connect.do_send(Connect {
            session: self.id,
            peer: self.peer,
            close: ctx.address().recipient(),
            durable: ctx.address().recipient(),
        });
        let hello_timeout = self.settings.limits.hello_timeout;
        ctx.run_later(hello_timeout, move |this, ctx| {
            if this.hello.is_none() {
                let limit = format!("no hello within {hello_timeout:?}");
                this.fail(ErrorCode::Timeout, limit, ctx);
            }
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if self.admitted
            && let (PeerAuth::Authenticated { key, .. }, Some(trust)) =
                (self.peer_auth, &self.settings.trust)
        {
            trust.leave(&key, self.id);
        }
        self.forward(); // before `Disconnect`: samples already acknowledged must count
        let reason = self
            .end_reason
            .take()
            .unwrap_or_else(|| "connection closed".into());
        if let Some(h) = &self.hello {
            tracing::info!(
                peer = %self.peer,
                "agent {} ({}) disconnected: {}",
                for_terminal(&h.name),
                for_terminal(&h.agent_id),
                for_terminal(&reason)
            );
        }
        self.registry.disconnect.do_send(Disconnect {
            session: self.id,
            reason,
        });
        Running::Stop
    }
}

impl StreamHandler<Result<AgentFrame, CodecError>> for Session {
    fn handle(&mut self, item: Result<AgentFrame, CodecError>, ctx: &mut Self::Context) {
        if self.end_reason.is_some() {
            return; // already closing: ignore what is still in flight
        }
        self.last_frame_at = Instant::now();
        match item {
            Ok(AgentFrame::Hello(h)) => self.on_hello(h, ctx),
            Ok(AgentFrame::Metrics(m)) => self.on_metrics(m, ctx),
            Ok(AgentFrame::Bye(Bye { reason })) => {
                let reason = match reason {
                    Some(r) if !r.is_empty() => format!("bye: {}", for_terminal(&r)),
                    _ => "bye".to_string(),
                };
                self.end(reason, ctx);
            }
            Err(CodecError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                // The encrypted stream failed: a tampered, replayed or reordered frame.
                let who = self.hello.as_ref().map(|h| h.name.as_str()).unwrap_or("-");
                tracing::warn!(peer = %self.peer, agent = who, "closing connection: {e}");
                self.end(format!("error: {e}"), ctx);
            }
            Err(CodecError::Io(e)) => self.end(format!("connection lost: {e}"), ctx),
            Err(e @ CodecError::OverBudget { .. }) => {
                self.fail(ErrorCode::Limit, e.to_string(), ctx)
            }
            Err(e) => self.fail(ErrorCode::BadFrame, e.to_string(), ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        self.end("connection closed", ctx);
    }
}

impl Handler<Close> for Session {
    type Result = ();

    fn handle(&mut self, msg: Close, ctx: &mut Self::Context) {
        match msg {
            Close::Shutdown => {
                self.send(
                    ServerFrame::Bye(Bye {
                        reason: Some("server shutting down".into()),
                    }),
                    ctx,
                );
                self.end("server shut down", ctx);
            }
            Close::Replaced => self.fail(
                ErrorCode::Replaced,
                "a newer connection with the same agent id took over".into(),
                ctx,
            ),
            Close::Revoked => self.fail(
                ErrorCode::Revoked,
                "this agent's key was revoked on the server".into(),
                ctx,
            ),
            Close::Displaced => self.fail(
                ErrorCode::DuplicateId,
                "this agent id belongs to an agent at another address, which took it back; give each agent its own --name or --id".into(),
                ctx,
            ),
        }
    }
}

impl Handler<Durable> for Session {
    type Result = ();

    fn handle(&mut self, msg: Durable, ctx: &mut Self::Context) {
        // Never beyond what this connection received: the agent refuses an ack for a sample
        // it did not send on it.
        let seq = msg.seq.min(self.highest_seq);
        if self.end_reason.is_none() && seq > self.acked_seq {
            self.acked_seq = seq;
            self.send(ServerFrame::Ack(Ack { seq }), ctx);
        }
    }
}

/// How long a connection of an agent sampling every `interval` may stay silent:
/// `idle_intervals` intervals, but at least [`MIN_IDLE_TIMEOUT`] and at most one interval
/// plus [`MAX_IDLE_GRACE`] (an agent claiming a 1 h interval holds its slot in silence for
/// 65 min, not 3 h).
pub fn idle_timeout(interval: Duration, idle_intervals: u32) -> Duration {
    interval
        .saturating_mul(idle_intervals)
        .min(interval.saturating_add(MAX_IDLE_GRACE))
        .max(MIN_IDLE_TIMEOUT)
}

/// Writes queued frames until the session drops its sender, then closes the write side.
/// A peer that takes longer than [`WRITE_TIMEOUT`] for one frame is abandoned.
///
/// Everything already queued is encoded into one small buffer and written with one call; the
/// buffer lives only as long as needed (no per-connection 8 KiB codec buffer).
async fn write_frames<W: AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<Outgoing>,
    mut write: W,
    peer: SocketAddr,
) {
    let mut codec = ServerCodec::new();
    let mut buf = BytesMut::new();
    while let Some(frame) = rx.recv().await {
        let mut next = Some(frame);
        while let Some(frame) = next {
            if let Err(e) = codec.encode(ServerFrame::from(frame), &mut buf) {
                tracing::warn!(%peer, "could not encode a frame: {e}");
            }
            next = rx.try_recv().ok();
        }
        let written = tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&buf)).await;
        buf.clear();
        if buf.capacity() > WRITE_BUFFER_KEEP {
            buf = BytesMut::new();
        }
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, "write failed: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "peer took more than {WRITE_TIMEOUT:?} to accept data; dropping the connection");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write.shutdown()).await;
}

#[cfg(test)]
mod tests {
    //! One Session on a real loopback connection, with a fake standing in for the Registry.

    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio_util::codec::Framed;

    use super::*;
    use crate::codec::AgentCodec;
    use crate::protocol::{Cpu, Metrics};
    use crate::server::limits::Connections;
    use crate::server::probe::{self, DEADLINE, Received};

    /// What the Registry would receive from the Session.
    #[derive(Debug, PartialEq, Eq)]
    enum ToRegistry {
        Connect,
        Hello(String),
        Samples(Vec<u64>),
        Disconnect(String),
    }

    /// Stands in for the Registry: passes on what it receives, answers every hello `answer`.
    struct FakeRegistry {
        tx: mpsc::UnboundedSender<ToRegistry>,
        answer: Result<Option<u64>, String>,
    }

    impl Actor for FakeRegistry {
        type Context = Context<Self>;
    }

    impl Handler<Connect> for FakeRegistry {
        type Result = ();

        fn handle(&mut self, _: Connect, _: &mut Self::Context) {
            let _ = self.tx.send(ToRegistry::Connect);
        }
    }

    impl Handler<Hello> for FakeRegistry {
        type Result = Result<Option<u64>, String>;

        fn handle(&mut self, msg: Hello, _: &mut Self::Context) -> Self::Result {
            let _ = self.tx.send(ToRegistry::Hello(msg.hello.agent_id));
            self.answer.clone()
        }
    }

    impl Handler<Samples> for FakeRegistry {
        type Result = ();

        fn handle(&mut self, msg: Samples, _: &mut Self::Context) {
            let seqs = msg.samples.iter().map(|m| m.seq).collect();
            let _ = self.tx.send(ToRegistry::Samples(seqs));
        }
    }

    impl Handler<Disconnect> for FakeRegistry {
        type Result = ();

        fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
            let _ = self.tx.send(ToRegistry::Disconnect(msg.reason));
        }
    }

    /// How the session under test is set up.
    struct Setup {
        limits: Limits,
        durable_acks: bool,
        /// The fake Registry's answer to `hello`.
        answer: Result<Option<u64>, String>,
        /// Frames the agent sends before the Session starts.
        early: Vec<AgentFrame>,
        /// Connection slots held by others while the session runs (near the limit or not).
        other_slots: usize,
    }

    impl Default for Setup {
        fn default() -> Self {
            Self {
                limits: Limits::default(),
                durable_acks: false,
                answer: Ok(None),
                early: Vec::new(),
                other_slots: 0,
            }
        }
    }

    /// The agent's end of the connection, what the fake Registry received, and the Session.
    struct Conn {
        agent: Framed<TcpStream, AgentCodec>,
        registry: Received<ToRegistry>,
        session: Addr<Session>,
        /// The other connections' slots ([`Setup::other_slots`]).
        _others: Vec<ConnGuard>,
    }

    impl Setup {
        async fn start(self) -> Conn {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let client = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (stream, peer) = listener.accept().await.unwrap();
            let mut agent = Framed::new(client, AgentCodec::new());
            for frame in self.early {
                agent.send(frame).await.unwrap();
            }
            let (tx, registry) = probe::channel();
            let fake = FakeRegistry {
                tx,
                answer: self.answer,
            };
            let link = Arc::new(RegistryLink::to(&fake.start()));
            let conns = Connections::default();
            let others = (0..self.other_slots)
                .map(|_| {
                    conns
                        .try_acquire([10, 0, 0, 9].into(), &self.limits)
                        .unwrap()
                })
                .collect();
            let slot = conns.try_acquire(peer.ip(), &self.limits).unwrap();
            let settings = Arc::new(Settings::new(server(), self.limits, self.durable_acks));
            let tracker = TaskTracker::new();
            let session = Session::start(stream, None, peer, 1, link, settings, slot, &tracker);
            Conn {
                agent,
                registry,
                session,
                _others: others,
            }
        }
    }

    impl Conn {
        async fn send(&mut self, frame: AgentFrame) {
            self.agent.send(frame).await.unwrap();
        }

        /// The next frame from the server; panics if none comes within [`DEADLINE`].
        async fn recv(&mut self, what: &str) -> ServerFrame {
            match tokio::time::timeout(DEADLINE, self.agent.next()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(other) => panic!("waiting for {what}: {other:?}"),
                Err(_) => panic!("waiting for {what}: nothing within {DEADLINE:?}"),
            }
        }

        /// The next frame, which must be an `error`.
        async fn error(&mut self) -> ErrorFrame {
            match self.recv("an error frame").await {
                ServerFrame::Error(e) => e,
                other => panic!("expected an error frame, got {other:?}"),
            }
        }

        /// The server closes the connection (after what was already read).
        async fn closed(&mut self) {
            match tokio::time::timeout(DEADLINE, self.agent.next()).await {
                Ok(None) => {}
                other => panic!("expected the connection to close, got {other:?}"),
            }
        }

        /// Says hello; see [`Conn::welcomed`].
        async fn hello(&mut self) -> Welcome {
            self.send(AgentFrame::Hello(hello())).await;
            self.welcomed().await
        }

        /// The session registered first, then attached the hello, and answered `welcome`.
        async fn welcomed(&mut self) -> Welcome {
            assert_eq!(self.registry.next("connect").await, ToRegistry::Connect);
            let attached = ToRegistry::Hello("a".into());
            assert_eq!(self.registry.next("hello").await, attached);
            match self.recv("welcome").await {
                ServerFrame::Welcome(w) => w,
                other => panic!("expected welcome, got {other:?}"),
            }
        }

        /// Waits until the Registry was given every seq in `seqs` (in one message or more).
        async fn forwarded(&mut self, seqs: &[u64]) {
            let mut got = Vec::new();
            while got.len() < seqs.len() {
                match self.registry.next("samples").await {
                    ToRegistry::Samples(s) => got.extend(s),
                    other => panic!("expected samples, got {other:?}"),
                }
            }
            assert_eq!(got, seqs);
        }

        /// The reason the session gave the Registry when it ended (skipping samples).
        async fn end_reason(&mut self) -> String {
            loop {
                match self.registry.next("disconnect").await {
                    ToRegistry::Disconnect(reason) => return reason,
                    ToRegistry::Samples(_) => {}
                    other => panic!("expected disconnect, got {other:?}"),
                }
            }
        }
    }

    fn server() -> ServerInfo {
        ServerInfo {
            id: "s".into(),
            name: "test".into(),
            version: "0".into(),
            listen: "127.0.0.1:1".into(),
            http: None,
            auth: None,
            fingerprint: None,
        }
    }

    fn hello() -> protocol::Hello {
        protocol::Hello {
            proto: PROTOCOL_V1,
            agent_id: "a".into(),
            run_id: "r1".into(),
            name: "a".into(),
            hostname: "host".into(),
            os: "test".into(),
            cores: 1,
            agent_version: "0".into(),
            interval_ms: 100,
        }
    }

    fn metrics(seq: u64, cpu: f32) -> AgentFrame {
        AgentFrame::Metrics(Metrics {
            seq,
            ts_ms: 1_000 * seq,
            cpu: Some(Cpu {
                total: cpu,
                per_core: vec![cpu],
            }),
            memory: None,
            ..Metrics::default()
        })
    }

    fn ack(seq: u64) -> ServerFrame {
        ServerFrame::Ack(Ack { seq })
    }

    /// Proves that the session registers (`Connect`) before it handles a frame, even one that
    /// was already waiting, and passes the Registry's resume point on in `welcome`.
    #[actix_rt::test]
    async fn registers_before_handling_frames_and_welcomes_with_the_resume_point() {
        let mut conn = Setup {
            answer: Ok(Some(7)),
            early: vec![AgentFrame::Hello(hello())],
            ..Setup::default()
        }
        .start()
        .await;
        let welcome = conn.welcomed().await;
        assert_eq!((welcome.proto, welcome.last_seq), (PROTOCOL_V1, Some(7)));
        assert_eq!(welcome.server_name, "test");
    }

    /// Proves that `metrics` before `hello` is refused as `bad_frame` and ends the session
    /// with that reason.
    #[actix_rt::test]
    async fn metrics_before_hello_is_a_bad_frame() {
        let mut conn = Setup::default().start().await;
        conn.send(metrics(1, 5.0)).await;
        let e = conn.error().await;
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::BadFrame, "metrics before hello")
        );
        assert_eq!(conn.registry.next("connect").await, ToRegistry::Connect);
        assert_eq!(conn.end_reason().await, "error: metrics before hello");
        conn.closed().await;
    }

    /// Proves that a second `hello` on one connection is refused as `bad_frame`.
    #[actix_rt::test]
    async fn a_second_hello_is_a_bad_frame() {
        let mut conn = Setup::default().start().await;
        conn.hello().await;
        conn.send(AgentFrame::Hello(hello())).await;
        let e = conn.error().await;
        assert_eq!(e.code, ErrorCode::BadFrame);
        assert_eq!(
            conn.end_reason().await,
            "error: second hello on one connection"
        );
        conn.closed().await;
    }

    /// Proves that an impossible value is refused as `invalid_value`, is not forwarded, and
    /// ends the session with the reason.
    #[actix_rt::test]
    async fn an_invalid_value_ends_the_session_with_the_reason() {
        let mut conn = Setup::default().start().await;
        conn.hello().await;
        conn.send(metrics(1, 150.0)).await;
        let e = conn.error().await;
        assert_eq!(e.code, ErrorCode::InvalidValue);
        assert!(e.message.starts_with("invalid metrics"), "{}", e.message);
        // The next thing the Registry hears is the end: the sample was not forwarded.
        match conn.registry.next("disconnect").await {
            ToRegistry::Disconnect(reason) => {
                assert!(reason.starts_with("error: invalid metrics"), "{reason}");
            }
            other => panic!("expected disconnect, got {other:?}"),
        }
        conn.closed().await;
    }

    /// Proves that a frame over the frame limit is refused as `bad_frame`.
    #[actix_rt::test]
    async fn an_oversize_frame_is_refused() {
        let limits = Limits {
            max_frame_len: 1024,
            ..Limits::default()
        };
        let mut conn = Setup {
            limits,
            ..Setup::default()
        }
        .start()
        .await;
        let line = format!("{{\"type\":\"bye\",\"reason\":\"{}\"}}\n", "x".repeat(2000));
        conn.agent
            .get_mut()
            .write_all(line.as_bytes())
            .await
            .unwrap();
        let e = conn.error().await;
        assert_eq!(e.code, ErrorCode::BadFrame);
        assert!(e.message.contains("longer than 1024"), "{}", e.message);
        conn.closed().await;
    }

    /// Proves that a frame quoting terminal escapes (serde's "unknown variant" error repeats
    /// the peer's text) leaves them escaped in the offline reason and the error frame.
    #[actix_rt::test]
    async fn escapes_in_a_bad_frame_do_not_reach_the_reason() {
        let mut conn = Setup::default().start().await;
        conn.hello().await;
        let line = r#"{"type":"\u001b]0;pwned\u0007\r\u001b[2J"}"#.to_string() + "\n";
        conn.agent
            .get_mut()
            .write_all(line.as_bytes())
            .await
            .unwrap();
        let e = conn.error().await;
        assert_eq!(e.code, ErrorCode::BadFrame);
        let reason = conn.end_reason().await;
        for text in [&e.message, &reason] {
            assert!(text.contains("\\u{1b}]0;pwned"), "{text:?}");
            assert!(!text.chars().any(crate::text::is_unsafe), "{text:?}");
        }
    }

    /// Proves that a connection without `hello` within the hello timeout is closed with
    /// `timeout`.
    #[actix_rt::test]
    async fn no_hello_in_time_is_a_timeout() {
        let limits = Limits {
            hello_timeout: Duration::from_millis(100),
            ..Limits::default()
        };
        let mut conn = Setup {
            limits,
            ..Setup::default()
        }
        .start()
        .await;
        let e = conn.error().await;
        assert_eq!(e.code, ErrorCode::Timeout);
        assert_eq!(conn.registry.next("connect").await, ToRegistry::Connect);
        assert_eq!(conn.end_reason().await, "error: no hello within 100ms");
        conn.closed().await;
    }

    /// Proves that an agent silent for its idle time (here the floor, [`MIN_IDLE_TIMEOUT`]) is
    /// closed with `timeout`, and not before.
    #[actix_rt::test]
    async fn a_silent_agent_is_closed_after_its_idle_time() {
        let limits = Limits {
            idle_intervals: 1,
            ..Limits::default()
        };
        let mut conn = Setup {
            limits,
            ..Setup::default()
        }
        .start()
        .await;
        conn.hello().await;
        let silent_since = Instant::now();
        let e = conn.error().await;
        assert!(silent_since.elapsed() >= MIN_IDLE_TIMEOUT);
        assert_eq!(e.code, ErrorCode::Timeout);
        assert_eq!(conn.end_reason().await, "timeout: nothing received for 1s");
        conn.closed().await;
    }

    /// Proves that the idle timeout follows the agent's interval but is capped: at least
    /// [`MIN_IDLE_TIMEOUT`], at most one interval plus [`MAX_IDLE_GRACE`] (3 h before, for an
    /// agent claiming a 1 h interval).
    #[test]
    fn the_idle_timeout_is_capped_whatever_the_agent_claims() {
        let secs = Duration::from_secs;
        assert_eq!(idle_timeout(secs(5), 3), secs(15));
        assert_eq!(
            idle_timeout(Duration::from_millis(100), 3),
            MIN_IDLE_TIMEOUT
        );
        assert_eq!(idle_timeout(secs(3600), 3), secs(3600) + MAX_IDLE_GRACE);
        assert_eq!(idle_timeout(secs(3600), 100), secs(3600) + MAX_IDLE_GRACE);
    }

    /// Proves that near the connection limit a silent connection is closed (`limit`) after
    /// the pressure timeout, long before its own idle timeout (30 s here).
    #[actix_rt::test]
    async fn near_the_connection_limit_silent_connections_make_room() {
        let limits = Limits {
            max_connections: 10,
            pressure_idle_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let mut conn = Setup {
            limits,
            other_slots: 8, // 9 of 10 with this one: 90 %
            ..Setup::default()
        }
        .start()
        .await;
        let slow = protocol::Hello {
            interval_ms: 10_000,
            ..hello()
        };
        conn.send(AgentFrame::Hello(slow)).await;
        conn.welcomed().await;
        let e = conn.error().await;
        assert_eq!(e.code, ErrorCode::Limit, "{}", e.message);
        assert!(
            conn.end_reason()
                .await
                .starts_with("limit: the server is near")
        );
        conn.closed().await;
    }

    /// Proves that a connection whose partly received frame would go over the shared budget
    /// is closed with `limit`.
    #[actix_rt::test]
    async fn a_partial_frame_beyond_the_shared_budget_is_refused() {
        let limits = Limits {
            max_buffered_bytes: 1024,
            ..Limits::default()
        };
        let mut conn = Setup {
            limits,
            ..Setup::default()
        }
        .start()
        .await;
        conn.hello().await;
        let partial = format!("{{\"type\":\"bye\",\"reason\":\"{}", "x".repeat(8 * 1024));
        conn.agent
            .get_mut()
            .write_all(partial.as_bytes())
            .await
            .unwrap();
        let e = conn.error().await;
        assert_eq!(e.code, ErrorCode::Limit, "{}", e.message);
        assert!(
            e.message.contains("partly received frames"),
            "{}",
            e.message
        );
        conn.closed().await;
    }

    /// Proves that without a store every sample is acknowledged on receipt and forwarded in
    /// order.
    #[actix_rt::test]
    async fn without_a_store_samples_are_acknowledged_at_once() {
        let mut conn = Setup::default().start().await;
        conn.hello().await;
        conn.send(metrics(1, 5.0)).await;
        conn.send(metrics(2, 6.0)).await;
        assert_eq!(conn.recv("ack").await, ack(1));
        assert_eq!(conn.recv("ack").await, ack(2));
        conn.forwarded(&[1, 2]).await;
    }

    /// Proves that a sender beyond its burst (32 here, at 1 sample per 10 s interval) is
    /// refused with `limit`: the samples before are acknowledged and forwarded, the refused
    /// one and those after it neither.
    #[actix_rt::test]
    async fn a_sender_beyond_its_burst_is_refused_and_nothing_after_is_acknowledged() {
        let mut conn = Setup {
            limits: Limits {
                samples_per_interval: 1,
                sample_burst: 32,
                ..Limits::default()
            },
            ..Setup::default()
        }
        .start()
        .await;
        let slow = protocol::Hello {
            interval_ms: 10_000,
            ..hello()
        };
        conn.send(AgentFrame::Hello(slow)).await;
        conn.welcomed().await;
        for seq in 1..=40 {
            conn.send(metrics(seq, 5.0)).await;
        }
        for seq in 1..=32 {
            assert_eq!(conn.recv("ack").await, ack(seq));
        }
        let e = conn.error().await;
        assert_eq!(e.code, ErrorCode::Limit, "{}", e.message);
        assert!(e.message.contains("sample 33 and later"), "{}", e.message);
        let forwarded: Vec<u64> = (1..=32).collect();
        conn.forwarded(&forwarded).await;
        assert!(conn.end_reason().await.starts_with("error: sending faster"));
        conn.closed().await;
    }

    /// Proves that with a store a sample is acknowledged only on `Durable`, never beyond what
    /// this connection received, and never twice.
    #[actix_rt::test]
    async fn with_a_store_acks_wait_for_durable_and_stay_within_what_was_received() {
        let mut conn = Setup {
            durable_acks: true,
            ..Setup::default()
        }
        .start()
        .await;
        conn.hello().await;
        conn.send(metrics(1, 5.0)).await;
        conn.send(metrics(2, 6.0)).await;
        conn.forwarded(&[1, 2]).await;
        // Both were handled, and no ack went out: the first frame now is the durable one.
        conn.session.send(Durable { seq: 5 }).await.unwrap();
        assert_eq!(conn.recv("durable ack").await, ack(2), "capped at seq 2");

        conn.session.send(Durable { seq: 1 }).await.unwrap();
        conn.session.send(Durable { seq: 2 }).await.unwrap();
        conn.send(metrics(3, 7.0)).await;
        conn.forwarded(&[3]).await;
        conn.session.send(Durable { seq: 3 }).await.unwrap();
        assert_eq!(
            conn.recv("durable ack").await,
            ack(3),
            "no ack for 1 or 2 again"
        );
    }

    /// Proves that `bye` ends the session with the agent's reason and closes the connection.
    #[actix_rt::test]
    async fn bye_ends_the_session_with_its_reason() {
        let mut conn = Setup::default().start().await;
        conn.hello().await;
        let bye = Bye {
            reason: Some("upgrade".into()),
        };
        conn.send(AgentFrame::Bye(bye)).await;
        assert_eq!(conn.end_reason().await, "bye: upgrade");
        conn.closed().await;
    }

    /// Proves that `Close::Shutdown` says `bye` to the agent before closing.
    #[actix_rt::test]
    async fn shutdown_says_bye() {
        let mut conn = Setup::default().start().await;
        conn.hello().await;
        conn.session.send(Close::Shutdown).await.unwrap();
        let bye = ServerFrame::Bye(Bye {
            reason: Some("server shutting down".into()),
        });
        assert_eq!(conn.recv("bye").await, bye);
        assert_eq!(conn.end_reason().await, "server shut down");
        conn.closed().await;
    }

    /// Proves that `Close::Replaced` tells the agent with a `replaced` error.
    #[actix_rt::test]
    async fn replaced_sends_an_error() {
        let mut conn = Setup::default().start().await;
        conn.hello().await;
        conn.session.send(Close::Replaced).await.unwrap();
        assert_eq!(conn.error().await.code, ErrorCode::Replaced);
        conn.closed().await;
    }

    /// Proves that `Close::Displaced` (the id's home address took it back) tells the agent
    /// with a `duplicate_id` error.
    #[actix_rt::test]
    async fn displaced_sends_a_duplicate_id_error() {
        let mut conn = Setup::default().start().await;
        conn.hello().await;
        conn.session.send(Close::Displaced).await.unwrap();
        assert_eq!(conn.error().await.code, ErrorCode::DuplicateId);
        conn.closed().await;
    }

    /// Proves that a hello the Registry refuses is answered with `duplicate_id` and the
    /// Registry's reason.
    #[actix_rt::test]
    async fn a_refused_hello_is_a_duplicate_id_error() {
        let mut conn = Setup {
            answer: Err("agent id a is in use".into()),
            ..Setup::default()
        }
        .start()
        .await;
        conn.send(AgentFrame::Hello(hello())).await;
        let e = conn.error().await;
        assert_eq!(
            (e.code, e.message.as_str()),
            (ErrorCode::DuplicateId, "agent id a is in use")
        );
        conn.closed().await;
    }
}
