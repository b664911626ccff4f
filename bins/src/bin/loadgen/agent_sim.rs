//! One simulated agent: connect (with the Noise handshake and a key of its own when given a
//! join token), `hello`, wait for `welcome`, send samples (at a rate or as a flood), read
//! every `ack` and record the send → ack latency, drain, say `bye`; with `--reconnect`, connect
//! again after a loss; and the counters all agents share.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use lanmon::auth::keys::StaticKeypair;
use lanmon::auth::noise;
use lanmon::codec::{AgentCodec, encode_line};
use lanmon::config::{CONNECT_TIMEOUT, WELCOME_TIMEOUT, WRITE_TIMEOUT};
use lanmon::protocol::{AgentFrame, Bye, ServerFrame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::plan::{Mode, Plan, XorShift, source_ip};

/// After sending stops, how long each agent waits for its last acks.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer per connection: acks are ~25 bytes, so a small one saves memory at 10k agents.
pub const READ_BUFFER: usize = 512;
/// Latency histograms are sharded by agent so that recording rarely contends.
pub const SHARDS: usize = 16;
/// Highest latency the histogram tracks exactly (larger values are clamped), in µs.
pub const MAX_LATENCY_US: u64 = 120_000_000;

/// Send → ack latencies in µs: over the whole run, and for samples sent after the ramp.
pub struct Latency {
    pub all: Histogram<u64>,
    pub steady: Histogram<u64>,
}

impl Latency {
    pub fn new() -> anyhow::Result<Self> {
        let h = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3);
        Ok(Self {
            all: h().context("histogram")?,
            steady: h().context("histogram")?,
        })
    }
}

/// Live counters shared by all agents.
pub struct Shared {
    pub connected_now: AtomicUsize,
    pub peak_connected: AtomicUsize,
    /// Milliseconds after the start when every agent was connected at once (0 = not yet).
    pub all_connected_ms: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    /// Worst latency (µs) since the last progress line.
    pub window_max_us: AtomicU64,
    /// Connected agents still sending or waiting for acks.
    pub draining: AtomicUsize,
    /// Handshakes done, and their summed wall time (µs).
    pub handshakes: AtomicU64,
    pub handshake_us: AtomicU64,
    /// Cancelled when every connected agent has drained after the stop time: only then do
    /// agents say `bye` and close, so that a storm of disconnects never delays the last acks.
    pub all_drained: CancellationToken,
    pub latency: Vec<Mutex<Latency>>,
}

impl Shared {
    pub fn on_connect(&self, plan: &Plan) {
        let now = self.connected_now.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_connected.fetch_max(now, Ordering::Relaxed);
        if now == plan.agents {
            let ms = plan.start.elapsed().as_millis().max(1);
            let _ = self.all_connected_ms.compare_exchange(
                0,
                u64::try_from(ms).unwrap_or(u64::MAX),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

/// What one agent did.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub connected: bool,
    /// Why the connection failed, or why it ended early (`None`: a clean run).
    pub failure: Option<String>,
    pub error_frame: bool,
    pub sent: u64,
    pub acked: u64,
    pub steady_acked: u64,
    pub unacked: u64,
    pub bytes: u64,
    pub max_lag: Duration,
    /// Connections made again after a loss (`--reconnect`).
    pub reconnects: u64,
    /// Connected when sending stopped (`--reconnect`'s criterion).
    pub connected_at_stop: bool,
}

/// The read side: plaintext, or the decrypting half of a Noise session.
pub type Reader = FramedRead<Box<dyn AsyncRead + Send + Unpin>, AgentCodec>;
/// The write side, likewise.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// First and longest pause between two reconnect attempts (as the real agent).
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

pub async fn agent(i: usize, plan: Arc<Plan>, shared: Arc<Shared>) -> AgentStats {
    let mut stats = AgentStats::default();
    // One key per simulated agent for the whole run: its id is bound to it once enrolled.
    let keypair = match plan.join.as_ref().map(|_| StaticKeypair::generate()) {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            stats.failure = Some(format!("key: {e}"));
            return stats;
        }
        None => None,
    };
    sleep_until(plan.connect_at(i)).await;
    let mut backoff = lanmon::agent::Backoff::new(BACKOFF.0, BACKOFF.1);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
    let (frames, mut write) = loop {
        match connect(i, &plan, keypair.as_ref(), &shared).await {
            Ok(conn) => break conn,
            Err(reason) if plan.reconnect && Instant::now() < plan.stop_at => {
                tokio::time::sleep(backoff.next_delay(rng.next())).await;
                let _ = reason;
            }
            Err(reason) => {
                stats.failure = Some(reason);
                return stats;
            }
        }
    };
    stats.connected = true;
    shared.on_connect(&plan);
    shared.draining.fetch_add(1, Ordering::AcqRel);
    let mut frames = frames;
    let result = loop {
        let result = stream_samples(i, &plan, &shared, frames, &mut write, &mut stats).await;
        let Err(reason) = &result else { break result };
        if !plan.reconnect || Instant::now() >= plan.stop_at {
            break result;
        }
        // Lost (e.g. the server restarted): reconnect as a real agent would.
        shared.connected_now.fetch_sub(1, Ordering::Relaxed);
        let _ = reason;
        let conn = loop {
            tokio::time::sleep(backoff.next_delay(rng.next())).await;
            if Instant::now() >= plan.stop_at {
                break None;
            }
            if let Ok(conn) = connect(i, &plan, keypair.as_ref(), &shared).await {
                break Some(conn);
            }
        };
        let Some((f, w)) = conn else {
            shared.connected_now.fetch_add(1, Ordering::Relaxed);
            break Err("not reconnected before the end".into());
        };
        backoff.reset();
        stats.reconnects += 1;
        shared.on_connect(&plan);
        frames = f;
        write = w;
    };
    stats.connected_at_stop = result.is_ok();
    if result.is_ok() {
        // Its last sample may be scheduled before the stop time; it is done only after it.
        sleep_until(plan.stop_at).await;
    }
    if shared.draining.fetch_sub(1, Ordering::AcqRel) == 1 && Instant::now() >= plan.stop_at {
        shared.all_drained.cancel();
    }
    match result {
        Ok(()) => {
            // Wait (bounded) until every agent has its acks, then say goodbye like a real agent.
            let give_up_at = plan.stop_at + DRAIN_TIMEOUT;
            let _ = timeout_at(give_up_at, shared.all_drained.cancelled()).await;
            if let Ok(line) = encode_line(&AgentFrame::Bye(Bye {
                reason: Some("loadgen done".into()),
            })) {
                let _ = timeout(Duration::from_secs(1), write.write_all(&line)).await;
            }
            let _ = timeout(Duration::from_secs(1), write.shutdown()).await;
        }
        Err(reason) => stats.failure = Some(reason),
    }
    shared.connected_now.fetch_sub(1, Ordering::Relaxed);
    stats
}

/// Connects (and runs the handshake with `keypair` when the plan has a join token), says hello
/// and waits for welcome. The error is a short reason for the report.
pub async fn connect(
    i: usize,
    plan: &Plan,
    keypair: Option<&StaticKeypair>,
    shared: &Shared,
) -> Result<(Reader, Writer), String> {
    let socket = match plan.server {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    if let Some(ip) = source_ip(&plan.server, i, plan.agents_per_ip) {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    let stream = timeout(CONNECT_TIMEOUT, socket.connect(plan.server))
        .await
        .map_err(|_| "connect: timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut stream = stream;
    let (read, mut write): (Box<dyn AsyncRead + Send + Unpin>, Writer) = match (&plan.join, keypair)
    {
        (Some(token), Some(keypair)) => {
            let config = noise::ClientConfig {
                keypair: keypair.clone(),
                pins: vec![token.server_key],
                network_key: Some(token.network_key.clone()),
            };
            let started = std::time::Instant::now();
            let session = noise::client_handshake(&mut stream, &config)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            shared.handshakes.fetch_add(1, Ordering::Relaxed);
            shared.handshake_us.fetch_add(
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            let (read, write) = stream.into_split();
            let (read, write) = session.split(read, write);
            (Box::new(read), Box::new(write))
        }
        _ => {
            let (read, write) = stream.into_split();
            (Box::new(read), Box::new(write))
        }
    };
    let hello = encode_line(&AgentFrame::Hello(plan.hello(i))).map_err(|e| e.to_string())?;
    timeout(WRITE_TIMEOUT, async {
        write.write_all(&hello).await?;
        write.flush().await
    })
    .await
    .map_err(|_| "hello: write timed out".to_string())?
    .map_err(|e| format!("hello: {e}"))?;
    let mut frames = FramedRead::with_capacity(read, AgentCodec::new(), READ_BUFFER);
    match timeout(WELCOME_TIMEOUT, frames.next()).await {
        Err(_) => Err("welcome: timed out".into()),
        Ok(None) => Err("welcome: connection closed by the server".into()),
        Ok(Some(Err(e))) => Err(format!("welcome: {e}")),
        Ok(Some(Ok(ServerFrame::Welcome(_)))) => Ok((frames, write)),
        Ok(Some(Ok(ServerFrame::Error(e)))) => Err(format!("refused: {}: {}", e.code, e.message)),
        Ok(Some(Ok(ServerFrame::Bye(_)))) => Err("welcome: server said bye".into()),
        Ok(Some(Ok(ServerFrame::Ack(_)))) => Err("welcome: got an ack first".into()),
        Ok(Some(Ok(ServerFrame::ServerKey(_)))) => Err("welcome: got server_key first".into()),
    }
}

/// Sends samples until the plan's stop time and collects the acks; `Err` is why the
/// connection ended early.
pub async fn stream_samples(
    i: usize,
    plan: &Plan,
    shared: &Shared,
    mut frames: Reader,
    write: &mut Writer,
    stats: &mut AgentStats,
) -> Result<(), String> {
    let capacity = match plan.mode {
        Mode::Rate { .. } => 4,
        Mode::Flood { window } => window,
    };
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::with_capacity(capacity);
    let mut buf = Vec::new();
    let mut seq = 0u64;
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9));
    let mut next_send = match plan.mode {
        // A random phase, as real agents started at different times have.
        Mode::Rate { period } => Instant::now() + period.mul_f64(rng.unit()),
        Mode::Flood { .. } => Instant::now(),
    };
    let mut sending = next_send < plan.stop_at;
    let give_up_at = plan.stop_at + DRAIN_TIMEOUT;
    let shard = &shared.latency[i % SHARDS];

    let result = loop {
        if !sending && pending.is_empty() {
            break Ok(());
        }
        let wait = match plan.mode {
            Mode::Rate { .. } if sending => Some(Some(next_send)),
            Mode::Flood { window } if sending && pending.len() < window => Some(None),
            _ => None,
        };
        let send_ready = async {
            if let Some(Some(at)) = wait {
                sleep_until(at).await;
            }
        };
        tokio::select! {
            biased;
            frame = frames.next() => match frame {
                Some(Ok(ServerFrame::Ack(ack))) => {
                    let now = Instant::now();
                    let mut acked = 0u64;
                    let mut worst = 0u64;
                    let mut latency = shard.lock().unwrap_or_else(|p| p.into_inner());
                    while let Some(&(s, sent_at)) = pending.front() {
                        if s > ack.seq {
                            break;
                        }
                        pending.pop_front();
                        let us = u64::try_from(now.duration_since(sent_at).as_micros())
                            .unwrap_or(u64::MAX)
                            .clamp(1, MAX_LATENCY_US);
                        latency.all.saturating_record(us);
                        worst = worst.max(us);
                        if sent_at >= plan.steady_from {
                            latency.steady.saturating_record(us);
                            stats.steady_acked += 1;
                        }
                        acked += 1;
                    }
                    drop(latency);
                    stats.acked += acked;
                    shared.acked.fetch_add(acked, Ordering::Relaxed);
                    shared.window_max_us.fetch_max(worst, Ordering::Relaxed);
                }
                Some(Ok(ServerFrame::Error(e))) => {
                    stats.error_frame = true;
                    break Err(format!("error frame: {}: {}", e.code, e.message));
                }
                Some(Ok(ServerFrame::Bye(_))) => break Err("server said bye".into()),
                Some(Ok(ServerFrame::Welcome(_))) => break Err("unexpected second welcome".into()),
                Some(Ok(ServerFrame::ServerKey(_))) => {}
                Some(Err(e)) => break Err(format!("read: {e}")),
                None => break Err("connection closed by the server".into()),
            },
            () = send_ready, if wait.is_some() => {
                let now = Instant::now();
                if now >= plan.stop_at {
                    sending = false;
                    continue;
                }
                let count = match plan.mode {
                    Mode::Rate { period } => {
                        stats.max_lag = stats.max_lag.max(now.duration_since(next_send));
                        next_send += period;
                        sending = next_send < plan.stop_at;
                        1
                    }
                    Mode::Flood { window } => window - pending.len(),
                };
                let ts_ms = lanmon::util::now_ms();
                buf.clear();
                for _ in 0..count {
                    seq += 1;
                    plan.payloads.write(&mut buf, seq, ts_ms, i + seq as usize);
                    pending.push_back((seq, now));
                }
                let written = async {
                    write.write_all(&buf).await?;
                    write.flush().await
                };
                match timeout(WRITE_TIMEOUT, written).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(format!("write: {e}")),
                    Err(_) => break Err("write: timed out".into()),
                }
                stats.sent += count as u64;
                stats.bytes += buf.len() as u64;
                shared.sent.fetch_add(count as u64, Ordering::Relaxed);
            }
            () = sleep_until(give_up_at) => break Ok(()),
        }
    };
    stats.unacked = pending.len() as u64;
    result
}
