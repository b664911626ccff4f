//! `agent`: samples this machine's CPU and memory and streams them to a lanmon server.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use lanmon::agent::{AgentConfig, DEFAULT_BUFFER, Target, default_agent_id};
use lanmon::config::{DEFAULT_INTERVAL, DEFAULT_PORT};
use lanmon::metrics::SysinfoSource;
use lanmon_bins::{LogLevel, init_logging, parse_duration, shutdown_signal};
use tokio_util::sync::CancellationToken;

/// lanmon agent: samples CPU (total and per core) and memory every interval and streams the
/// samples to a lanmon server over one TCP connection.
///
/// It reconnects by itself (exponential backoff with jitter, capped at 30 s) and never exits
/// because the server is away; samples taken meanwhile are kept (see --buffer) and sent after
/// the reconnect. Logs go to stdout. Ctrl+C or SIGTERM says goodbye to the server and exits 0.
#[derive(Debug, Parser)]
#[command(name = "agent", version, about, long_about)]
struct Cli {
    /// The server's IP address or host name (its startup banner lists them).
    #[arg(long, env = "LANMON_HOST", value_name = "HOST")]
    host: String,

    /// The server's TCP port.
    #[arg(long, env = "LANMON_PORT", default_value_t = DEFAULT_PORT)]
    port: u16,

    /// How often to sample and send (at least 200ms; e.g. 5s, 1s, 500ms).
    #[arg(long, env = "LANMON_INTERVAL", value_parser = parse_duration,
          default_value = humantime::format_duration(DEFAULT_INTERVAL).to_string(),
          value_name = "DURATION")]
    interval: Duration,

    /// Name shown on the server (default: this machine's host name).
    #[arg(long, env = "LANMON_NAME")]
    name: Option<String>,

    /// Stable agent id (default: derived from /etc/machine-id and the name, so it survives
    /// restarts). Two agents must not share an id.
    #[arg(long, env = "LANMON_ID")]
    id: Option<String>,

    /// Most samples kept while the server has not acknowledged them (default: one hour at
    /// the default interval); beyond it the oldest are dropped and counted.
    #[arg(long, env = "LANMON_BUFFER", default_value_t = DEFAULT_BUFFER, value_name = "SAMPLES")]
    buffer: usize,

    /// Log verbosity on stdout (RUST_LOG, if set, overrides it).
    #[arg(long, env = "LANMON_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,

    /// Only log warnings and errors: no line per sample (same as --log-level warn).
    #[arg(short, long, env = "LANMON_QUIET")]
    quiet: bool,
}

const MIN_INTERVAL: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(
        if cli.quiet {
            LogLevel::Warn
        } else {
            cli.log_level
        },
        false,
    );
    if cli.interval < MIN_INTERVAL {
        eprintln!(
            "agent: --interval must be at least {MIN_INTERVAL:?} (sysinfo cannot measure CPU usage faster)"
        );
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let source =
        SysinfoSource::new().map_err(|e| anyhow::anyhow!("cannot read system metrics: {e}"))?;
    let name = cli.name.unwrap_or_else(lanmon::util::host_name);
    let config = AgentConfig {
        target: Target::Host {
            host: cli.host,
            port: cli.port,
        },
        id: cli.id.unwrap_or_else(|| default_agent_id(&name)),
        name,
        interval: cli.interval,
        buffer: cli.buffer,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            let signal = shutdown_signal().await;
            tracing::info!("{signal} received: saying bye to the server");
            trigger.cancel();
        });
        lanmon::agent::run(config, source, shutdown).await
    })?;
    Ok(())
}
