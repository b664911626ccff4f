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
//! `ramp + settle + duration`, then waits at most [`DRAIN_TIMEOUT`](agent_sim::DRAIN_TIMEOUT)
//! for the last acks. Only when every agent has drained (or that time is up) do they all say
//! `bye` and close, so that the disconnect storm does not land on the last samples' latency.
//! Throughput and the main latency figures cover the steady part (samples sent after the ramp
//! and `--settle`, 0 by default); latency over the whole run is reported beside it.
//!
//! Network rule: the target must be a loopback address, and each agent's source address is
//! taken in 127.0.0.0/8 too (`--agents-per-ip` per address, like agents on distinct hosts).
//!
//! Files: `main.rs` runs the whole (fd limit, runtime, agents, merged figures); `cli.rs` the
//! flags and their checks; `plan.rs` the timeline, hellos and pre-encoded payloads;
//! `agent_sim.rs` one simulated agent and the shared counters; `report.rs` the report (JSON
//! and text).

mod agent_sim;
mod cli;
mod plan;
mod report;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use agent_sim::{AgentStats, Latency, SHARDS, Shared, agent};
use cli::{Cli, check};
use plan::{Mode, Payloads, Plan};
use report::{LatencySummary, Report, own_cpu_seconds, render};

/// Distinct sample payloads (CPU and memory values) cycled through by every agent.
const PAYLOADS: usize = 64;
/// File descriptors loadgen needs besides one per agent (runtime, stdio, slack).
const SPARE_FDS: u64 = 64;
/// Exit code for a run that did not go cleanly (errors, failed connects, lost samples).
const EXIT_RUN_FAILED: u8 = 1;
/// Exit code for bad arguments (as clap uses).
const EXIT_USAGE: u8 = 2;

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

fn run(cli: Cli) -> anyhow::Result<bool> {
    // As high as the hard limit allows: one descriptor per agent.
    let fd_limit = lanmon::process::raise_fd_limit(u64::MAX)
        .context("cannot raise the file-descriptor limit")?;
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
        steady_from: start + cli.ramp + cli.settle,
        stop_at: start + cli.ramp + cli.settle + cli.duration,
        payloads: Payloads::new(cli.cores, PAYLOADS)?,
        join: cli.join.clone(),
        reconnect: cli.reconnect,
    });
    let shared = Arc::new(Shared {
        connected_now: AtomicUsize::new(0),
        peak_connected: AtomicUsize::new(0),
        all_connected_ms: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        window_max_us: AtomicU64::new(0),
        draining: AtomicUsize::new(0),
        handshakes: AtomicU64::new(0),
        handshake_us: AtomicU64::new(0),
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
    let reconnects = sum(|s| s.reconnects);
    Ok(Report {
        ok: if cli.reconnect {
            connected == agents && all.iter().all(|s| s.connected_at_stop)
        } else {
            connected == agents && errors == 0 && unacked == 0
        },
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
        settle_s: cli.settle.as_secs_f64(),
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
        protocol: if cli.join.is_some() { 2 } else { 1 },
        reconnects,
        connected_at_stop: all.iter().filter(|s| s.connected_at_stop).count(),
        handshake_wall_us: shared.handshake_us.load(Ordering::Relaxed) as f64
            / (shared.handshakes.load(Ordering::Relaxed).max(1)) as f64,
    })
}
