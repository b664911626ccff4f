//! loadgen's command line: the flags (`--help`) and the checks that keep a run on loopback
//! and bounded.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};
use lanmon::protocol::MAX_CORES;
use lanmon_bins::parse_duration;

/// Longest run loadgen accepts (`--duration`, and `--ramp` on its own).
pub const MAX_RUN: Duration = Duration::from_secs(600);

/// lanmon load generator: simulates N agents speaking the real protocol to a server on this
/// machine (loopback only), and reports connections, samples sent and acknowledged, errors,
/// and the send → ack latency distribution.
///
/// Exits 0 when every agent connected and every sample was acknowledged without error, 1
/// otherwise (the report says why), 2 for bad arguments. The file-descriptor limit is raised
/// to the hard limit at start; one descriptor per agent is needed.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, long_about)]
pub struct Cli {
    /// The server's address (IP:PORT). Must be a loopback address (127.0.0.0/8 or ::1):
    /// loadgen never sends load anywhere else.
    #[arg(long, env = "LANMON_LOADGEN_SERVER", value_name = "ADDR:PORT")]
    pub server: SocketAddr,

    /// Number of simulated agents, each with its own TCP connection.
    #[arg(long, env = "LANMON_LOADGEN_AGENTS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000), value_name = "N")]
    pub agents: u32,

    /// Samples per second sent by each agent (e.g. 1, 0.2, 10). Ignored with --flood.
    #[arg(
        long,
        env = "LANMON_LOADGEN_RATE",
        default_value_t = 1.0,
        value_name = "PER_SECOND"
    )]
    pub rate: f64,

    /// Connections are started evenly spread over this time (0 = all at once).
    #[arg(long, env = "LANMON_LOADGEN_RAMP", value_parser = parse_duration, default_value = "1s",
          value_name = "DURATION")]
    pub ramp: Duration,

    /// How long to send after the ramp (and --settle) (at most 10m). The run ends by itself
    /// after ramp + settle + duration + at most 5 s waiting for the last acks.
    #[arg(long, env = "LANMON_LOADGEN_DURATION", value_parser = parse_duration,
          default_value = "10s", value_name = "DURATION")]
    pub duration: Duration,

    /// Agents send during this time after the ramp, but their samples count only in the
    /// whole-run figures (`latency_all`), not in the steady ones (`latency`, samples/s): the
    /// connection rush's after-effects are left out of the steady part (at most 10m).
    #[arg(long, env = "LANMON_LOADGEN_SETTLE", value_parser = parse_duration,
          default_value = "0s", value_name = "DURATION")]
    pub settle: Duration,

    /// Length of the per-core CPU array in each sample (the simulated machine's cores).
    #[arg(
        long,
        env = "LANMON_LOADGEN_CORES",
        default_value_t = 8,
        value_name = "N"
    )]
    pub cores: u32,

    /// Peak-ingest mode: each agent sends as fast as the server acknowledges, keeping at most
    /// --window samples unacknowledged (a full window goes out in one write).
    #[arg(long, env = "LANMON_LOADGEN_FLOOD", value_parser = BoolishValueParser::new(),
          action = ArgAction::SetTrue)]
    pub flood: bool,

    /// With --flood: most unacknowledged samples per agent.
    #[arg(long, env = "LANMON_LOADGEN_WINDOW", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096), value_name = "SAMPLES")]
    pub window: u32,

    /// Agents that share one source address; agent k connects from 127.1.0.0 + k / N + 1
    /// (like agents on distinct hosts, and below per-IP connection limits). 0 = let the OS
    /// pick the source (127.0.0.1). Ignored for an IPv6 server.
    #[arg(
        long,
        env = "LANMON_LOADGEN_AGENTS_PER_IP",
        default_value_t = 100,
        value_name = "N"
    )]
    pub agents_per_ip: u32,

    /// Runtime worker threads.
    #[arg(long, env = "LANMON_LOADGEN_WORKERS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64), value_name = "N")]
    pub workers: u32,

    /// Print progress to stderr this often (0 = never): connections, samples sent and
    /// acknowledged, and the worst send → ack latency since the previous line.
    #[arg(long, env = "LANMON_LOADGEN_PROGRESS", value_parser = parse_duration,
          default_value = "5s", value_name = "DURATION")]
    pub progress: Duration,

    /// Print the final report as one JSON object on stdout instead of text.
    #[arg(long, env = "LANMON_LOADGEN_JSON", value_parser = BoolishValueParser::new(),
          action = ArgAction::SetTrue)]
    pub json: bool,

    /// Speak protocol 2 like a real agent: the Noise handshake with a key of its own per
    /// simulated agent, pinning the server key of this join token (`server token`), whose
    /// network key enrolls every agent. Without it: plaintext protocol 1 (a server with
    /// --auth off or optional).
    #[arg(long, env = "LANMON_LOADGEN_JOIN", value_name = "TOKEN",
          value_parser = |s: &str| lanmon::auth::token::JoinToken::decode(s).map_err(|e| e.to_string()))]
    pub join: Option<lanmon::auth::token::JoinToken>,

    /// When a connection is lost (e.g. the server restarts), reconnect like a real agent
    /// (backoff 0.5 s doubling to 30 s, with jitter) until the run ends, instead of counting
    /// the agent as failed. The run is ok when every agent is connected at its end.
    #[arg(long, env = "LANMON_LOADGEN_RECONNECT", value_parser = BoolishValueParser::new(),
          action = ArgAction::SetTrue)]
    pub reconnect: bool,
}

/// Refuses arguments that would break the network rule or make an unbounded run.
pub fn check(cli: &Cli) -> anyhow::Result<()> {
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
    if cli.settle > MAX_RUN {
        bail!("--settle must be at most {MAX_RUN:?}");
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

#[cfg(test)]
mod tests {
    use super::*;

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
            &["loadgen", "--server", "127.0.0.1:9", "--settle", "11m"],
            &["loadgen", "--server", "127.0.0.1:9", "--rate", "0"],
            &["loadgen", "--server", "127.0.0.1:9", "--cores", "0"],
        ] {
            let checked = parse(bad).map(|c| check(&c).is_ok());
            assert_eq!(checked, Ok(false), "{bad:?}");
        }
    }
}
