//! Session actor: one per TCP connection. Decodes, validates, forwards.
//!
//! Lifecycle: `started()` registers the connection with the Registry ([`registry::Connect`])
//! before any frame is handled and arms the hello timeout; the first frame must be a valid
//! `hello` (answered with `welcome`), then `metrics` frames (each validated, answered with
//! `ack`, and forwarded: the samples read in one go as one [`registry::Samples`]), until
//! `bye`, end of stream, or an error.
//! Without a store the `ack` goes out at once; with one ([`Settings::durable_acks`]) it goes
//! out when the Registry says the sample is on disk ([`Durable`]).
//! `stopping()` reports the end and its reason ([`registry::Disconnect`]).
//!
//! Bad input ends this connection only: an `error` frame, one log line naming the peer and the
//! reason, and the actor stops. Writes go through a bounded queue to a writer task, so a peer
//! that sends but never reads cannot grow the server's memory: when the queue is full the
//! session ends.
//!
//! Receives: frames from its socket; [`Close`] and [`Durable`] from the Registry. Sends:
//! [`registry::Connect`],
//! [`registry::Hello`], [`registry::Samples`], [`registry::Disconnect`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::codec::{Encoder, FramedRead};
use tokio_util::task::TaskTracker;

use crate::codec::{CodecError, ServerCodec};
use crate::config::{Limits, SESSION_QUEUE_FRAMES, WRITE_TIMEOUT};
use crate::net::set_keepalive;
use crate::protocol::{
    self, Ack, AgentFrame, Bye, ErrorCode, ErrorFrame, PROTOCOL_VERSION, ServerFrame, Welcome,
};
use crate::server::listener::ConnGuard;
use crate::server::registry::{self, Registry};
use crate::snapshot::ServerInfo;
use crate::validate::{self, Invalid};

/// Identifies one connection for the life of the server process.
pub type SessionId = u64;

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
}

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
}

/// See the module documentation.
pub struct Session {
    id: SessionId,
    peer: SocketAddr,
    registry: Addr<Registry>,
    settings: Arc<Settings>,
    out: mpsc::Sender<Outgoing>,
    hello: Option<protocol::Hello>,
    /// Samples read but not yet sent to the Registry (see [`Session::forward`]).
    pending: Vec<protocol::Metrics>,
    highest_seq: u64,
    /// Highest seq acknowledged on this connection (with durable acks).
    acked_seq: u64,
    end_reason: Option<String>,
    /// When the peer last sent a frame (idle timeout).
    last_frame_at: Instant,
    /// Counts this connection against the connection limits until the session is dropped.
    _slot: ConnGuard,
}

impl Session {
    /// Starts a session on an accepted connection. Its writer task is tracked by `tracker`
    /// so that shutdown can wait until every goodbye has been flushed.
    pub fn start(
        stream: TcpStream,
        peer: SocketAddr,
        id: SessionId,
        registry: Addr<Registry>,
        settings: Arc<Settings>,
        slot: ConnGuard,
        tracker: &TaskTracker,
    ) -> Addr<Session> {
        let _ = stream.set_nodelay(true);
        set_keepalive(&stream);
        let (read, write) = stream.into_split();
        let (out, rx) = mpsc::channel(SESSION_QUEUE_FRAMES);
        actix::spawn(tracker.track_future(write_frames(rx, write, peer)));
        Session::create(move |ctx| {
            let codec = ServerCodec::with_max_len(settings.limits.max_frame_len);
            ctx.add_stream(FramedRead::with_capacity(read, codec, READ_BUFFER));
            Session {
                id,
                peer,
                registry,
                settings,
                out,
                hello: None,
                pending: Vec::new(),
                highest_seq: 0,
                acked_seq: 0,
                end_reason: None,
                last_frame_at: Instant::now(),
                _slot: slot,
            }
        })
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
        tracing::warn!(peer = %self.peer, agent = who, "closing connection: {code}: {message}");
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
        if let Err(e) = validate::hello_with_limit(&hello, self.settings.limits.max_cores) {
            let code = match e {
                Invalid::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
                _ => ErrorCode::InvalidValue,
            };
            return self.fail(code, format!("invalid hello: {e}"), ctx);
        }
        tracing::info!(
            peer = %self.peer,
            "agent {} ({}) connected: {} cores, every {} ms, {}",
            hello.name, hello.agent_id, hello.cores, hello.interval_ms, hello.os
        );
        let interval = Duration::from_millis(hello.interval_ms);
        let attach = registry::Hello {
            session: self.id,
            hello: hello.clone(),
        };
        self.hello = Some(hello);
        // Wait for the registry's answer before handling the next frame: `welcome` carries the
        // resume point, and samples must not overtake the hello.
        let answer = self
            .registry
            .send(attach)
            .into_actor(self)
            .map(|answer, this, ctx| {
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
                    proto: PROTOCOL_VERSION,
                    server_id: info.id.clone(),
                    server_name: info.name.clone(),
                    server_version: info.version.clone(),
                    last_seq,
                    ts_ms: Some(crate::util::now_ms()),
                };
                this.send(ServerFrame::Welcome(welcome), ctx);
            });
        ctx.wait(answer);
        self.watch_idle(interval, ctx);
    }

    /// Closes the connection when the agent sends nothing for `idle_intervals` of its
    /// intervals: its samples are its heartbeat, so silence means it is gone (or half-open).
    /// Checked once per interval (so it closes within `idle` plus one interval): the timer
    /// ticks of 10,000 sessions were the largest single cost of an idle-ish server.
    fn watch_idle(&mut self, interval: Duration, ctx: &mut Context<Self>) {
        let idle = interval
            .saturating_mul(self.settings.limits.idle_intervals)
            .max(Duration::from_secs(1));
        let check_every = interval.clamp(Duration::from_millis(50), Duration::from_secs(5));
        ctx.run_interval(check_every, move |this, ctx| {
            if this.end_reason.is_none() && this.last_frame_at.elapsed() > idle {
                let message = format!("nothing received for {idle:?}");
                this.close_with(
                    ErrorCode::Timeout,
                    message.clone(),
                    format!("timeout: {message}"),
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
            self.registry.do_send(registry::Samples {
                session: self.id,
                samples: std::mem::take(&mut self.pending),
            });
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.registry.do_send(registry::Connect {
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
        self.forward(); // before `Disconnect`: samples already acknowledged must count
        let reason = self
            .end_reason
            .take()
            .unwrap_or_else(|| "connection closed".into());
        if let Some(h) = &self.hello {
            tracing::info!(peer = %self.peer, "agent {} ({}) disconnected: {reason}", h.name, h.agent_id);
        }
        self.registry.do_send(registry::Disconnect {
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
                    Some(r) if !r.is_empty() => format!("bye: {}", r.escape_debug()),
                    _ => "bye".to_string(),
                };
                self.end(reason, ctx);
            }
            Err(CodecError::Io(e)) => self.end(format!("connection lost: {e}"), ctx),
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

/// Writes queued frames until the session drops its sender, then closes the write side.
/// A peer that takes longer than [`WRITE_TIMEOUT`] for one frame is abandoned.
///
/// Everything already queued is encoded into one small buffer and written with one call; the
/// buffer lives only as long as needed (no per-connection 8 KiB codec buffer).
async fn write_frames(
    mut rx: mpsc::Receiver<Outgoing>,
    mut write: OwnedWriteHalf,
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
