//! The final report: [`Report`] (printed as one JSON object with `--json`, which
//! bins/bench/run.sh and render.jq read: its fields and their order are an interface) and its
//! text form for people.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
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
pub struct Report {
    pub ok: bool,
    pub mode: &'static str,
    pub server: String,
    pub agents: usize,
    pub connected: usize,
    pub failed_connects: usize,
    pub peak_concurrent: usize,
    /// Seconds from the start until every agent was connected at the same time.
    pub all_connected_after_s: Option<f64>,
    pub rate_per_agent: Option<f64>,
    pub window: Option<usize>,
    pub cores: u32,
    pub ramp_s: f64,
    /// Seconds after the ramp left out of the steady figures (`--settle`).
    pub settle_s: f64,
    pub duration_s: f64,
    pub elapsed_s: f64,
    pub samples_sent: u64,
    pub samples_acked: u64,
    /// Sent but never acknowledged (connection lost, or still unacked after the drain).
    pub samples_unacked: u64,
    pub bytes_sent: u64,
    pub bytes_per_sample: f64,
    /// Connections that ended early after welcome (error frames, disconnects).
    pub errors: usize,
    pub error_frames: usize,
    /// Failure reasons (failed connects and early ends) with their counts.
    pub error_reasons: BTreeMap<String, u64>,
    /// Acknowledged samples sent after the ramp, per second of `duration`.
    pub samples_per_s: f64,
    /// Send → ack latency of samples sent after the ramp.
    pub latency: LatencySummary,
    /// Send → ack latency of every sample, ramp included.
    pub latency_all: LatencySummary,
    /// Worst delay of a scheduled send (rate mode): how far loadgen itself fell behind.
    pub max_send_lag_ms: f64,
    /// CPU time loadgen used (user + system), when /proc tells.
    pub loadgen_cpu_s: Option<f64>,
    pub fd_limit: u64,
    /// 2: Noise handshake (`--join`); 1: plaintext.
    pub protocol: u32,
    /// Connections made again after a loss (`--reconnect`).
    pub reconnects: u64,
    /// Agents connected when sending stopped.
    pub connected_at_stop: usize,
    /// Mean wall time of the agent side of a handshake (µs; the server's share is similar).
    pub handshake_wall_us: f64,
}

/// The report for people.
pub fn render(r: &Report) -> String {
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
            "loadgen → {}: {} agents ({pace}, {} cores), ramp {:.1}s, settle {:.1}s, steady {:.1}s, elapsed {:.1}s",
            r.server, r.agents, r.cores, r.ramp_s, r.settle_s, r.duration_s, r.elapsed_s
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

/// CPU time (user + system) of this process's live threads, from /proc (Linux), in seconds.
pub fn own_cpu_seconds() -> Option<f64> {
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
    use crate::agent_sim::MAX_LATENCY_US;

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
