//! `loadgen`: simulates many lanmon agents on loopback to load-test a server.
//!
//! Each simulated agent opens its own TCP connection, says `hello` with a unique id, waits
//! for `welcome`, then sends `metrics` frames (seq 1, 2, 3, … with a per-core array of
//! `--cores` entries) at `--rate` samples per second, or, with `--flood`, as fast as the
//! server acknowledges them (at most `--window` unacknowledged samples in flight). It reads
//! every `ack` (which carries the highest seq received) and records each sample's send → ack
//! latency. Frames are byte for byte what `lanmon::codec::encode_line` produces; only the
//! `seq` and `ts_ms` digits are written per sample, so that the load tool stays cheap next to
//! the server it measures.
//!
//! Timeline: connections start spread evenly over `--ramp`; every agent sends until
//! `ramp + duration`, then waits at most [`DRAIN_TIMEOUT`] for the last acks. Only when every
//! agent has drained (or that time is up) do they all say `bye` and close, so that the
//! disconnect storm does not land on the last samples' latency. Throughput and the main latency figures cover the steady part (samples sent after
//! the ramp); latency over the whole run is reported beside it.
//!
//! Network rule: the target must be a loopback address, and each agent's source address is
//! taken in 127.0.0.0/8 too (`--agents-per-ip` per address, like agents on distinct hosts).

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use lanmon::codec::{AgentCodec, encode_line};
use lanmon::config::{CONNECT_TIMEOUT, WELCOME_TIMEOUT, WRITE_TIMEOUT};
use lanmon::protocol::{
    AgentFrame, Bye, Cpu, Hello, MAX_CORES, Memory, Metrics, PROTOCOL_VERSION, ServerFrame,
};
use lanmon_bins::parse_duration;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

/// Longest run loadgen accepts (`--duration`, and `--ramp` on its own).
const MAX_RUN: Duration = Duration::from_secs(600);
/// After sending stops, how long each agent waits for its last acks.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer per connection: acks are ~25 bytes, so a small one saves memory at 10k agents.
const READ_BUFFER: usize = 512;
/// Latency histograms are sharded by agent so that recording rarely contends.
const SHARDS: usize = 16;
/// Highest latency the histogram tracks exactly (larger values are clamped), in µs.
const MAX_LATENCY_US: u64 = 120_000_000;
/// Distinct sample payloads (CPU and memory values) cycled through by every agent.
const PAYLOADS: usize = 64;
/// File descriptors loadgen needs besides one per agent (runtime, stdio, slack).
const SPARE_FDS: u64 = 64;
/// Exit code for a run that did not go cleanly (errors, failed connects, lost samples).
const EXIT_RUN_FAILED: u8 = 1;
/// Exit code for bad arguments (as clap uses).
const EXIT_USAGE: u8 = 2;

/// lanmon load generator: simulates N agents speaking the real protocol to a server on this
/// machine (loopback only), and reports connections, samples sent and acknowledged, errors,
/// and the send → ack latency distribution.
///
/// Exits 0 when every agent connected and every sample was acknowledged without error, 1
/// otherwise (the report says why), 2 for bad arguments. The file-descriptor limit is raised
/// to the hard limit at start; one descriptor per agent is needed.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, long_about)]
struct Cli {
    /// The server's address (IP:PORT). Must be a loopback address (127.0.0.0/8 or ::1):
    /// loadgen never sends load anywhere else.
    #[arg(long, env = "LANMON_LOADGEN_SERVER", value_name = "ADDR:PORT")]
    server: SocketAddr,

    /// Number of simulated agents, each with its own TCP connection.
    #[arg(long, env = "LANMON_LOADGEN_AGENTS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000), value_name = "N")]
    agents: u32,

    /// Samples per second sent by each agent (e.g. 1, 0.2, 10). Ignored with --flood.
    #[arg(
        long,
        env = "LANMON_LOADGEN_RATE",
        default_value_t = 1.0,
        value_name = "PER_SECOND"
    )]
    rate: f64,

    /// Connections are started evenly spread over this time (0 = all at once).
    #[arg(long, env = "LANMON_LOADGEN_RAMP", value_parser = parse_duration, default_value = "1s",
          value_name = "DURATION")]
    ramp: Duration,

    /// How long to send after the ramp (at most 10m). The run ends by itself after
    /// ramp + duration + at most 5 s waiting for the last acks.
    #[arg(long, env = "LANMON_LOADGEN_DURATION", value_parser = parse_duration,
          default_value = "10s", value_name = "DURATION")]
    duration: Duration,

    /// Length of the per-core CPU array in each sample (the simulated machine's cores).
    #[arg(
        long,
        env = "LANMON_LOADGEN_CORES",
        default_value_t = 8,
        value_name = "N"
    )]
    cores: u32,

    /// Peak-ingest mode: each agent sends as fast as the server acknowledges, keeping at most
    /// --window samples unacknowledged (a full window goes out in one write).
    #[arg(long, env = "LANMON_LOADGEN_FLOOD")]
    flood: bool,

    /// With --flood: most unacknowledged samples per agent.
    #[arg(long, env = "LANMON_LOADGEN_WINDOW", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096), value_name = "SAMPLES")]
    window: u32,

    /// Agents that share one source address; agent k connects from 127.1.0.0 + k / N + 1
    /// (like agents on distinct hosts, and below per-IP connection limits). 0 = let the OS
    /// pick the source (127.0.0.1). Ignored for an IPv6 server.
    #[arg(
        long,
        env = "LANMON_LOADGEN_AGENTS_PER_IP",
        default_value_t = 100,
        value_name = "N"
    )]
    agents_per_ip: u32,

    /// Runtime worker threads.
    #[arg(long, env = "LANMON_LOADGEN_WORKERS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64), value_name = "N")]
    workers: u32,

    /// Print progress to stderr this often (0 = never): connections, samples sent and
    /// acknowledged, and the worst send → ack latency since the previous line.
    #[arg(long, env = "LANMON_LOADGEN_PROGRESS", value_parser = parse_duration,
          default_value = "5s", value_name = "DURATION")]
    progress: Duration,

    /// Print the final report as one JSON object on stdout instead of text.
    #[arg(long, env = "LANMON_LOADGEN_JSON")]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = check(&cli) {
        eprintln!("loadgen: {e:#}");
        return ExitCode::from(EXIT_USAGE);
    }
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_RUN_FAILED),
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(EXIT_RUN_FAILED)
        }
    }
}

/// Refuses arguments that would break the network rule or make an unbounded run.
fn check(cli: &Cli) -> anyhow::Result<()> {
    if !cli.server.ip().is_loopback() {
        bail!(
            "--server {} is not a loopback address: loadgen only sends to this machine \
             (127.0.0.0/8 or ::1)",
            cli.server
        );
    }
    if cli.duration.is_zero() || cli.duration > MAX_RUN {
        bail!("--duration must be more than 0 and at most {MAX_RUN:?}");
    }
    if cli.ramp > MAX_RUN {
        bail!("--ramp must be at most {MAX_RUN:?}");
    }
    if cli.cores == 0 || cli.cores as usize > MAX_CORES {
        bail!("--cores must be in 1..={MAX_CORES}");
    }
    let rate_ok = cli.rate > 0.0 && cli.rate <= 1000.0;
    if !(cli.flood || rate_ok) {
        bail!("--rate must be more than 0 and at most 1000 samples/s per agent");
    }
    Ok(())
}

/// How agents pace their samples.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// One sample every `period`, starting at a random phase.
    Rate { period: Duration },
    /// As many as the window allows.
    Flood { window: usize },
}

/// What every agent needs to know; shared read-only.
struct Plan {
    server: SocketAddr,
    agents: usize,
    agents_per_ip: u32,
    cores: u32,
    mode: Mode,
    interval_ms: u64,
    /// Distinguishes this run's agent ids from another loadgen's.
    tag: String,
    start: Instant,
    ramp: Duration,
    steady_from: Instant,
    stop_at: Instant,
    payloads: Payloads,
}

impl Plan {
    fn connect_at(&self, i: usize) -> Instant {
        let offset = self.ramp.mul_f64(i as f64 / self.agents as f64);
        self.start + offset
    }

    fn hello(&self, i: usize) -> Hello {
        Hello {
            proto: PROTOCOL_VERSION,
            agent_id: format!("loadgen-{}-{i:06}", self.tag),
            run_id: format!("{}-{i:06}", self.tag),
            name: format!("loadgen-{i:06}"),
            hostname: format!("loadgen-{i:06}"),
            os: "Linux (loadgen)".into(),
            cores: self.cores,
            agent_version: format!("loadgen {}", env!("CARGO_PKG_VERSION")),
            interval_ms: self.interval_ms,
        }
    }
}

/// Source address of agent `i`: 127.1.0.1 for the first `per_ip` agents, then 127.1.0.2, …
/// `None` when the OS should choose (`per_ip` = 0, or an IPv6 server).
fn source_ip(server: &SocketAddr, i: usize, per_ip: u32) -> Option<IpAddr> {
    if per_ip == 0 || !server.is_ipv4() {
        return None;
    }
    let base = u32::from(Ipv4Addr::new(127, 1, 0, 0));
    let k = u32::try_from(i).unwrap_or(u32::MAX) / per_ip;
    Some(IpAddr::V4(Ipv4Addr::from(base.saturating_add(k + 1))))
}

/// Pre-encoded `metrics` frames without their `seq` and `ts_ms` values.
///
/// `encode_line` writes `{"type":"metrics","seq":S,"ts_ms":T,"cpu":…,"memory":…}\n`; each
/// payload here is everything after `T`, so a sample is the prefix, two numbers and a payload.
struct Payloads {
    tails: Vec<Vec<u8>>,
}

const SEQ_PREFIX: &[u8] = b"{\"type\":\"metrics\",\"seq\":";
const TS_PREFIX: &[u8] = b",\"ts_ms\":";

impl Payloads {
    /// `count` different realistic samples of `cores` cores, from a fixed seed.
    fn new(cores: u32, count: usize) -> anyhow::Result<Self> {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let template = [SEQ_PREFIX, b"0", TS_PREFIX, b"0"].concat();
        let mut tails = Vec::with_capacity(count);
        for _ in 0..count {
            let frame = AgentFrame::Metrics(sample_values(&mut rng, cores, 0, 0));
            let line = encode_line(&frame).context("cannot encode a metrics frame")?;
            let tail = line.strip_prefix(template.as_slice()).with_context(|| {
                format!(
                    "metrics frames no longer start with `{}`: update loadgen's encoder",
                    String::from_utf8_lossy(&template)
                )
            })?;
            tails.push(tail.to_vec());
        }
        Ok(Self { tails })
    }

    /// Appends one complete frame line (newline included) to `buf`.
    fn write(&self, buf: &mut Vec<u8>, seq: u64, ts_ms: u64, which: usize) {
        buf.extend_from_slice(SEQ_PREFIX);
        // Writing to a Vec cannot fail.
        let _ = write!(buf, "{seq}");
        buf.extend_from_slice(TS_PREFIX);
        let _ = write!(buf, "{ts_ms}");
        buf.extend_from_slice(&self.tails[which % self.tails.len()]);
    }
}

/// A tiny deterministic generator for plausible sample values (not for anything secret).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One plausible sample: mostly idle cores with a few busy ones, 16 GiB of memory.
fn sample_values(rng: &mut XorShift, cores: u32, seq: u64, ts_ms: u64) -> Metrics {
    let per_core: Vec<f32> = (0..cores)
        .map(|_| {
            let u = rng.unit();
            (u * u * 100.0) as f32
        })
        .collect();
    let total = per_core.iter().sum::<f32>() / per_core.len().max(1) as f32;
    let mem_total: u64 = 16 << 30;
    let used = (mem_total as f64 * (0.2 + 0.6 * rng.unit())) as u64;
    let available = mem_total - used;
    Metrics {
        seq,
        ts_ms,
        cpu: Some(Cpu {
            total: total.clamp(0.0, 100.0),
            per_core,
        }),
        memory: Some(Memory {
            total: mem_total,
            used,
            free: available / 3,
            available: Some(available),
        }),
        ..Metrics::default()
    }
}

/// Send → ack latencies in µs: over the whole run, and for samples sent after the ramp.
struct Latency {
    all: Histogram<u64>,
    steady: Histogram<u64>,
}

impl Latency {
    fn new() -> anyhow::Result<Self> {
        let h = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3);
        Ok(Self {
            all: h().context("histogram")?,
            steady: h().context("histogram")?,
        })
    }
}

/// Live counters shared by all agents.
struct Shared {
    connected_now: AtomicUsize,
    peak_connected: AtomicUsize,
    /// Milliseconds after the start when every agent was connected at once (0 = not yet).
    all_connected_ms: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    /// Worst latency (µs) since the last progress line.
    window_max_us: AtomicU64,
    /// Connected agents still sending or waiting for acks.
    draining: AtomicUsize,
    /// Cancelled when every connected agent has drained after the stop time: only then do
    /// agents say `bye` and close, so that a storm of disconnects never delays the last acks.
    all_drained: CancellationToken,
    latency: Vec<Mutex<Latency>>,
}

impl Shared {
    fn on_connect(&self, plan: &Plan) {
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
struct AgentStats {
    connected: bool,
    /// Why the connection failed, or why it ended early (`None`: a clean run).
    failure: Option<String>,
    error_frame: bool,
    sent: u64,
    acked: u64,
    steady_acked: u64,
    unacked: u64,
    bytes: u64,
    max_lag: Duration,
}

type Reader = FramedRead<OwnedReadHalf, AgentCodec>;

async fn agent(i: usize, plan: Arc<Plan>, shared: Arc<Shared>) -> AgentStats {
    let mut stats = AgentStats::default();
    sleep_until(plan.connect_at(i)).await;
    let (frames, mut write) = match connect(i, &plan).await {
        Ok(conn) => conn,
        Err(reason) => {
            stats.failure = Some(reason);
            return stats;
        }
    };
    stats.connected = true;
    shared.on_connect(&plan);
    shared.draining.fetch_add(1, Ordering::AcqRel);
    let result = stream_samples(i, &plan, &shared, frames, &mut write, &mut stats).await;
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

/// Connects, says hello and waits for welcome. The error is a short reason for the report.
async fn connect(i: usize, plan: &Plan) -> Result<(Reader, OwnedWriteHalf), String> {
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
    let (read, mut write) = stream.into_split();
    let hello = encode_line(&AgentFrame::Hello(plan.hello(i))).map_err(|e| e.to_string())?;
    timeout(WRITE_TIMEOUT, write.write_all(&hello))
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
    }
}

/// Sends samples until the plan's stop time and collects the acks; `Err` is why the
/// connection ended early.
async fn stream_samples(
    i: usize,
    plan: &Plan,
    shared: &Shared,
    mut frames: Reader,
    write: &mut OwnedWriteHalf,
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
                match timeout(WRITE_TIMEOUT, write.write_all(&buf)).await {
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

#[derive(Debug, Serialize)]
struct LatencySummary {
    count: u64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

impl LatencySummary {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |quantile: f64| {
            if h.is_empty() {
                0.0
            } else {
                ms(h.value_at_quantile(quantile))
            }
        };
        Self {
            count: h.len(),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: if h.is_empty() { 0.0 } else { ms(h.max()) },
        }
    }
}

/// The final report (`--json` prints it as is).
#[derive(Debug, Serialize)]
struct Report {
    ok: bool,
    mode: &'static str,
    server: String,
    agents: usize,
    connected: usize,
    failed_connects: usize,
    peak_concurrent: usize,
    /// Seconds from the start until every agent was connected at the same time.
    all_connected_after_s: Option<f64>,
    rate_per_agent: Option<f64>,
    window: Option<usize>,
    cores: u32,
    ramp_s: f64,
    duration_s: f64,
    elapsed_s: f64,
    samples_sent: u64,
    samples_acked: u64,
    /// Sent but never acknowledged (connection lost, or still unacked after the drain).
    samples_unacked: u64,
    bytes_sent: u64,
    bytes_per_sample: f64,
    /// Connections that ended early after welcome (error frames, disconnects).
    errors: usize,
    error_frames: usize,
    /// Failure reasons (failed connects and early ends) with their counts.
    error_reasons: BTreeMap<String, u64>,
    /// Acknowledged samples sent after the ramp, per second of `duration`.
    samples_per_s: f64,
    /// Send → ack latency of samples sent after the ramp.
    latency: LatencySummary,
    /// Send → ack latency of every sample, ramp included.
    latency_all: LatencySummary,
    /// Worst delay of a scheduled send (rate mode): how far loadgen itself fell behind.
    max_send_lag_ms: f64,
    /// CPU time loadgen used (user + system), when /proc tells.
    loadgen_cpu_s: Option<f64>,
    fd_limit: u64,
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let fd_limit = raise_fd_limit().context("cannot raise the file-descriptor limit")?;
    let needed = u64::from(cli.agents) + SPARE_FDS;
    if fd_limit < needed {
        bail!(
            "{} agents need about {needed} file descriptors but the limit is {fd_limit} even \
             after raising it to the hard limit; raise the hard limit (as root: `ulimit -Hn \
             {needed}` in the calling shell, or `prlimit --nofile={needed}`) or use fewer agents",
            cli.agents
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.workers as usize)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = runtime.block_on(simulate(&cli, fd_limit))?;
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(report.ok)
}

async fn simulate(cli: &Cli, fd_limit: u64) -> anyhow::Result<Report> {
    let agents = cli.agents as usize;
    let mode = if cli.flood {
        Mode::Flood {
            window: cli.window as usize,
        }
    } else {
        Mode::Rate {
            period: Duration::from_secs_f64(1.0 / cli.rate),
        }
    };
    let interval_ms = match mode {
        Mode::Rate { period } => u64::try_from(period.as_millis())
            .unwrap_or(u64::MAX)
            .max(100),
        Mode::Flood { .. } => 1000,
    };
    let start = Instant::now() + Duration::from_millis(50);
    let plan = Arc::new(Plan {
        server: cli.server,
        agents,
        agents_per_ip: cli.agents_per_ip,
        cores: cli.cores,
        mode,
        interval_ms,
        tag: format!("{:08x}", lanmon::util::random_u64() as u32),
        start,
        ramp: cli.ramp,
        steady_from: start + cli.ramp,
        stop_at: start + cli.ramp + cli.duration,
        payloads: Payloads::new(cli.cores, PAYLOADS)?,
    });
    let shared = Arc::new(Shared {
        connected_now: AtomicUsize::new(0),
        peak_connected: AtomicUsize::new(0),
        all_connected_ms: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        window_max_us: AtomicU64::new(0),
        draining: AtomicUsize::new(0),
        all_drained: CancellationToken::new(),
        latency: (0..SHARDS)
            .map(|_| Latency::new().map(Mutex::new))
            .collect::<anyhow::Result<_>>()?,
    });

    let progress = (!cli.progress.is_zero()).then(|| {
        let (shared, plan, every) = (shared.clone(), plan.clone(), cli.progress);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(plan.start + every, every);
            loop {
                tick.tick().await;
                let worst = shared.window_max_us.swap(0, Ordering::Relaxed);
                eprintln!(
                    "loadgen: {:>6.1}s  connected {}/{}  sent {}  acked {}  worst latency {:.1} ms",
                    plan.start.elapsed().as_secs_f64(),
                    shared.connected_now.load(Ordering::Relaxed),
                    plan.agents,
                    shared.sent.load(Ordering::Relaxed),
                    shared.acked.load(Ordering::Relaxed),
                    worst as f64 / 1000.0,
                );
            }
        })
    });

    let handles: Vec<_> = (0..agents)
        .map(|i| tokio::spawn(agent(i, plan.clone(), shared.clone())))
        .collect();
    let mut all = Vec::with_capacity(agents);
    for handle in handles {
        all.push(handle.await.context("an agent task panicked")?);
    }
    if let Some(p) = progress {
        p.abort();
    }
    let elapsed = plan.start.elapsed();

    let mut merged = Latency::new()?;
    for shard in &shared.latency {
        let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        merged.all.add(&shard.all).context("histogram")?;
        merged.steady.add(&shard.steady).context("histogram")?;
    }
    let mut reasons = BTreeMap::new();
    for s in &all {
        if let Some(r) = &s.failure {
            *reasons.entry(r.clone()).or_insert(0) += 1;
        }
    }
    let connected = all.iter().filter(|s| s.connected).count();
    let errors = all
        .iter()
        .filter(|s| s.connected && s.failure.is_some())
        .count();
    let sum = |f: fn(&AgentStats) -> u64| all.iter().map(f).sum::<u64>();
    let (sent, bytes) = (sum(|s| s.sent), sum(|s| s.bytes));
    let unacked = sum(|s| s.unacked);
    let all_ms = shared.all_connected_ms.load(Ordering::Relaxed);
    Ok(Report {
        ok: connected == agents && errors == 0 && unacked == 0,
        mode: if cli.flood { "flood" } else { "rate" },
        server: cli.server.to_string(),
        agents,
        connected,
        failed_connects: agents - connected,
        peak_concurrent: shared.peak_connected.load(Ordering::Relaxed),
        // The counter is stamped relative to `start`, which the connect ramp is relative to.
        all_connected_after_s: (all_ms > 0).then(|| all_ms as f64 / 1000.0),
        rate_per_agent: (!cli.flood).then_some(cli.rate),
        window: cli.flood.then_some(cli.window as usize),
        cores: cli.cores,
        ramp_s: cli.ramp.as_secs_f64(),
        duration_s: cli.duration.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        samples_sent: sent,
        samples_acked: sum(|s| s.acked),
        samples_unacked: unacked,
        bytes_sent: bytes,
        bytes_per_sample: if sent > 0 {
            bytes as f64 / sent as f64
        } else {
            0.0
        },
        errors,
        error_frames: all.iter().filter(|s| s.error_frame).count(),
        error_reasons: reasons,
        samples_per_s: sum(|s| s.steady_acked) as f64 / cli.duration.as_secs_f64(),
        latency: LatencySummary::of(&merged.steady),
        latency_all: LatencySummary::of(&merged.all),
        max_send_lag_ms: all
            .iter()
            .map(|s| s.max_lag)
            .max()
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0,
        loadgen_cpu_s: own_cpu_seconds(),
        fd_limit,
    })
}

/// The report for people.
fn render(r: &Report) -> String {
    let mut out = String::new();
    let pace = match (r.rate_per_agent, r.window) {
        (Some(rate), _) => format!("{rate} samples/s each"),
        (None, Some(window)) => format!("flood, window {window}"),
        _ => String::new(),
    };
    let _ = (|| -> std::fmt::Result {
        use std::fmt::Write as _;
        writeln!(
            out,
            "loadgen → {}: {} agents ({pace}, {} cores), ramp {:.1}s, steady {:.1}s, elapsed {:.1}s",
            r.server, r.agents, r.cores, r.ramp_s, r.duration_s, r.elapsed_s
        )?;
        let all_after = r
            .all_connected_after_s
            .map_or("never".to_string(), |s| format!("after {s:.2}s"));
        writeln!(
            out,
            "  connected      {}/{} (peak {} at once, all at once: {all_after}), failed connects {}",
            r.connected, r.agents, r.peak_concurrent, r.failed_connects
        )?;
        writeln!(
            out,
            "  samples        sent {}, acked {}, unacked {}; {:.0} bytes/sample",
            r.samples_sent, r.samples_acked, r.samples_unacked, r.bytes_per_sample
        )?;
        writeln!(
            out,
            "  throughput     {:.0} samples/s acknowledged (steady)",
            r.samples_per_s
        )?;
        for (name, l) in [("steady", &r.latency), ("whole run", &r.latency_all)] {
            writeln!(
                out,
                "  latency        {name}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} samples)",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
            )?;
        }
        writeln!(
            out,
            "  errors         {} (error frames {}); max send lag {:.1} ms; loadgen CPU {}",
            r.errors,
            r.error_frames,
            r.max_send_lag_ms,
            r.loadgen_cpu_s
                .map_or("n/a".to_string(), |s| format!("{s:.2}s"))
        )?;
        for (reason, n) in &r.error_reasons {
            writeln!(out, "    {n} × {reason}")?;
        }
        writeln!(
            out,
            "  result         {}",
            if r.ok { "OK" } else { "FAILED" }
        )
    })();
    out
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the limit now in force.
#[cfg(unix)]
#[allow(unsafe_code)]
fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into `limit`, a valid, exclusively borrowed rlimit;
    // setrlimit only reads it. Neither keeps the pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit = raised;
        }
    }
    // rlim_t is u64 on Linux but not on every Unix.
    #[allow(clippy::unnecessary_cast)]
    Ok(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
fn raise_fd_limit() -> std::io::Result<u64> {
    Ok(u64::MAX)
}

/// CPU time (user + system) of this process's live threads, from /proc (Linux), in seconds.
fn own_cpu_seconds() -> Option<f64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let mut ns = 0u64;
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use lanmon::codec::ServerCodec;
    use tokio_util::codec::Decoder;

    /// The fast path writes exactly what the library's encoder writes, and the server's codec
    /// decodes it to the sample with the right seq and timestamp.
    #[test]
    fn payload_frames_are_the_real_encoding() -> anyhow::Result<()> {
        for cores in [1, 8, 64] {
            let payloads = Payloads::new(cores, 4)?;
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
            for which in 0..4 {
                let expected = sample_values(&mut rng, cores, 123_456, 1_764_115_200_123);
                let mut line = Vec::new();
                payloads.write(&mut line, 123_456, 1_764_115_200_123, which);
                let reference = encode_line(&AgentFrame::Metrics(expected.clone()))?;
                assert_eq!(
                    String::from_utf8_lossy(&line),
                    String::from_utf8_lossy(&reference)
                );
                let mut buf = BytesMut::from(&line[..]);
                let decoded = ServerCodec::new().decode(&mut buf)?;
                assert_eq!(decoded, Some(AgentFrame::Metrics(expected)));
            }
        }
        Ok(())
    }

    /// Generated samples pass the server's validation (percentages, memory sums, core count).
    #[test]
    fn samples_are_valid() {
        let mut rng = XorShift(42);
        let plan_hello = Hello {
            proto: PROTOCOL_VERSION,
            agent_id: "a".into(),
            run_id: "r".into(),
            name: "n".into(),
            hostname: String::new(),
            os: String::new(),
            cores: 8,
            agent_version: String::new(),
            interval_ms: 1000,
        };
        assert_eq!(lanmon::validate::hello(&plan_hello), Ok(()));
        for seq in 1..200 {
            let m = sample_values(&mut rng, 8, seq, 1);
            assert_eq!(lanmon::validate::metrics(&m, &plan_hello), Ok(()));
        }
    }

    /// Agents are spread over distinct loopback source addresses, never outside 127/8.
    #[test]
    fn source_addresses_stay_in_loopback() {
        let v4: SocketAddr = ([127, 0, 0, 1], 9).into();
        let v6: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, 9).into();
        let ip = |i, per| source_ip(&v4, i, per).map(|ip| ip.to_string());
        assert_eq!(ip(0, 100).as_deref(), Some("127.1.0.1"));
        assert_eq!(ip(99, 100).as_deref(), Some("127.1.0.1"));
        assert_eq!(ip(100, 100).as_deref(), Some("127.1.0.2"));
        assert_eq!(ip(99_999, 1).as_deref(), Some("127.2.134.160"));
        assert_eq!(ip(5, 0), None);
        assert_eq!(source_ip(&v6, 5, 100), None);
        assert!(source_ip(&v4, 100_000, 1).is_some_and(|ip| ip.is_loopback()));
    }

    /// Only loopback targets and bounded runs are accepted.
    #[test]
    fn arguments_are_checked() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map_err(|e| e.to_string());
        let ok = parse(&["loadgen", "--server", "127.0.0.1:9"]).map(|c| check(&c).is_ok());
        assert_eq!(ok, Ok(true));
        for bad in [
            &["loadgen", "--server", "10.0.0.1:9"][..],
            &["loadgen", "--server", "0.0.0.0:9"],
            &["loadgen", "--server", "127.0.0.1:9", "--duration", "11m"],
            &["loadgen", "--server", "127.0.0.1:9", "--rate", "0"],
            &["loadgen", "--server", "127.0.0.1:9", "--cores", "0"],
        ] {
            let checked = parse(bad).map(|c| check(&c).is_ok());
            assert_eq!(checked, Ok(false), "{bad:?}");
        }
    }

    #[test]
    fn latency_summary_of_known_values() -> anyhow::Result<()> {
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
        for us in 1..=1000 {
            h.record(us)?;
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 0.5).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 0.99).abs() < 0.01, "{s:?}");
        assert!((s.max_ms - 1.0).abs() < 0.01, "{s:?}");
        Ok(())
    }
}
