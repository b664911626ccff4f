//! `server`: accepts agents on TCP, keeps their state, and reports their metrics.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser};
use lanmon::config::{
    DEFAULT_BIND, DEFAULT_HISTORY, DEFAULT_REPORT_INTERVAL, HELLO_TIMEOUT, IDLE_INTERVALS, Limits,
    MAX_BUFFERED_BYTES, MAX_CONNECTIONS, MAX_CONNECTIONS_PER_IP, PRESSURE_IDLE_TIMEOUT,
};
use lanmon::discovery::{DEFAULT_BEACON_INTERVAL, DEFAULT_DISCOVERY_PORT};
use lanmon::protocol::{MAX_CORES, MAX_FRAME_LEN};
use lanmon::server::beacon::{BeaconConfig, BeaconTargets};
use lanmon::server::http::{DEFAULT_HTTP_BIND, HttpConfig};
use lanmon::server::reporter::DEFAULT_TOP;
use lanmon::server::store::{self, Retention, StoreConfig};
use lanmon::server::{ReportFormat, Server, ServerConfig, SortBy, TextOptions};
use lanmon_bins::{LogLevel, init_logging, parse_duration, shutdown_signal};

/// lanmon server: receives CPU and memory samples from agents over TCP and shows every
/// agent's latest metrics.
///
/// It also announces itself on UDP (a small beacon every second, see --beacon-to) so that
/// `agent --discover` finds it without an address.
///
/// Reports go to stdout (a live table on a terminal, plain blocks when piped, or one JSON
/// snapshot per line with --report-format json); the banner and logs go to stderr.
/// Ctrl+C or SIGTERM stops it cleanly (agents are told); a second Ctrl+C exits at once.
#[derive(Debug, Parser)]
#[command(name = "server", version, about, long_about)]
struct Cli {
    /// TCP address to accept agents on. `0.0.0.0:8080` listens on every interface; port 0
    /// picks a free port (the banner and the JSON snapshot say which).
    #[arg(long, env = "LANMON_BIND", default_value = DEFAULT_BIND, value_name = "ADDR:PORT")]
    bind: SocketAddr,

    /// Name of this server, shown in reports and sent to agents (default: the host name).
    #[arg(long, env = "LANMON_SERVER_NAME")]
    name: Option<String>,

    /// How often to report every agent's latest metrics (e.g. 10s, 500ms).
    #[arg(long, env = "LANMON_REPORT_INTERVAL", value_parser = parse_duration,
          default_value = humantime::format_duration(DEFAULT_REPORT_INTERVAL).to_string(),
          value_name = "DURATION")]
    report_interval: Duration,

    /// Report format on stdout: `text` (a table; redrawn in place on a terminal), `json`
    /// (one snapshot object per line, for scripts and jq), or `off`.
    #[arg(long, env = "LANMON_REPORT_FORMAT", value_enum, default_value_t = Format::Text)]
    report_format: Format,

    /// Text report: order of the agents — `name`, `cpu` (busiest first), `mem` (most used
    /// first), `status` (offline first), `last-seen` (longest silent first).
    #[arg(long, env = "LANMON_SORT", value_enum, default_value_t = Sort::Name)]
    sort: Sort,

    /// Text report: show at most this many agents (0: all); a summary line covers the fleet.
    #[arg(long, env = "LANMON_TOP", default_value_t = DEFAULT_TOP, value_name = "N")]
    top: usize,

    /// Text report: only agents whose name, host name or IP contains this text.
    #[arg(long, env = "LANMON_FILTER", value_name = "TEXT")]
    filter: Option<String>,

    /// UDP port the discovery beacon is sent to (agents with --discover listen on it).
    #[arg(long, env = "LANMON_DISCOVERY_PORT", default_value_t = DEFAULT_DISCOVERY_PORT, value_name = "PORT")]
    discovery_port: u16,

    /// Send the beacon to this address instead of the automatic targets (repeatable; an IP
    /// uses --discovery-port, or give IP:PORT). Example for one machine: 127.255.255.255.
    /// Automatic targets: 127.255.255.255 plus the broadcast address of every up IPv4
    /// interface, re-read every 10 s.
    #[arg(
        long,
        env = "LANMON_BEACON_TO",
        value_delimiter = ',',
        value_name = "ADDR",
        conflicts_with = "no_beacon"
    )]
    beacon_to: Vec<String>,

    /// How often to send the discovery beacon (the first goes out at once).
    #[arg(long, env = "LANMON_BEACON_INTERVAL", value_parser = parse_duration,
          default_value = humantime::format_duration(DEFAULT_BEACON_INTERVAL).to_string(),
          value_name = "DURATION")]
    beacon_interval: Duration,

    /// Do not send discovery beacons (agents then need --host).
    #[arg(long, env = "LANMON_NO_BEACON", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    no_beacon: bool,

    /// HTTP address for the JSON API (`/api/agents`), Prometheus (`/metrics`), `/healthz` and
    /// the dashboard (`/`). Port 0 picks a free port (the JSON snapshot's `server.http` says
    /// which).
    #[arg(long, env = "LANMON_HTTP", default_value = DEFAULT_HTTP_BIND, value_name = "ADDR:PORT",
          conflicts_with = "no_http")]
    http: SocketAddr,

    /// A host name the HTTP side answers for (repeatable), besides IP addresses, `localhost`
    /// and this machine's host name: e.g. the DNS name browsers and Prometheus use for this
    /// server. Requests naming any other host get 421 (a guard against DNS rebinding).
    #[arg(
        long = "http-host",
        env = "LANMON_HTTP_HOST",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    http_hosts: Vec<String>,

    /// Do not serve HTTP (no API, no /metrics, no dashboard).
    #[arg(long, env = "LANMON_NO_HTTP", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    no_http: bool,

    /// Leave out the per-core series (`lanmon_cpu_core_usage_ratio`) from /metrics, for very
    /// large fleets.
    #[arg(long, env = "LANMON_NO_PER_CORE_METRICS", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    no_per_core_metrics: bool,

    /// Directory of the durable history (created if missing; one server per directory).
    /// Default: $XDG_DATA_HOME/lanmon, else ~/.local/share/lanmon, else ./lanmon-data. A
    /// system service would use /var/lib/lanmon.
    #[arg(
        long,
        env = "LANMON_DATA_DIR",
        value_name = "DIR",
        conflicts_with = "no_store"
    )]
    data_dir: Option<PathBuf>,

    /// Keep history in memory only (the last --history samples per agent); nothing is
    /// written to disk, a restart forgets everything, and samples are acknowledged at once.
    #[arg(long, env = "LANMON_NO_STORE", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    no_store: bool,

    /// How long raw samples are kept on disk.
    #[arg(long, env = "LANMON_RETENTION_RAW", value_parser = parse_duration,
          default_value = "24h", value_name = "DURATION")]
    retention_raw: Duration,

    /// How long the 1-minute rollups (avg/min/max) are kept on disk.
    #[arg(long, env = "LANMON_RETENTION_1M", value_parser = parse_duration,
          default_value = "7d", value_name = "DURATION")]
    retention_1m: Duration,

    /// How long the 10-minute rollups are kept on disk.
    #[arg(long, env = "LANMON_RETENTION_10M", value_parser = parse_duration,
          default_value = "90d", value_name = "DURATION")]
    retention_10m: Duration,

    /// How long the 1-hour rollups are kept on disk.
    #[arg(long, env = "LANMON_RETENTION_1H", value_parser = parse_duration,
          default_value = "365d", value_name = "DURATION")]
    retention_1h: Duration,

    /// Samples remembered per agent in memory (default: one hour at the agent's default 5 s
    /// interval). Each costs about 40 bytes.
    #[arg(long, env = "LANMON_HISTORY", default_value_t = DEFAULT_HISTORY, value_name = "SAMPLES")]
    history: usize,

    /// Threads that run agent connections (decode, validate, acknowledge) [default: one per
    /// core]. 0 runs them on the server's main thread with the registry.
    #[arg(long, env = "LANMON_SESSION_THREADS", value_name = "N")]
    session_threads: Option<usize>,

    /// Longest frame accepted from an agent, in bytes; a longer one closes that connection.
    #[arg(long, env = "LANMON_MAX_FRAME_BYTES", default_value_t = MAX_FRAME_LEN, value_name = "BYTES")]
    max_frame_bytes: usize,

    /// Most CPU cores an agent may announce (per-core entries per sample).
    #[arg(long, env = "LANMON_MAX_CORES", default_value_t = MAX_CORES, value_name = "N")]
    max_cores: usize,

    /// Most simultaneous connections; more are refused with an `error` frame (code `limit`).
    #[arg(long, env = "LANMON_MAX_CONNECTIONS", default_value_t = MAX_CONNECTIONS, value_name = "N")]
    max_connections: usize,

    /// Most simultaneous connections from one IP address.
    #[arg(long, env = "LANMON_MAX_CONNECTIONS_PER_IP", default_value_t = MAX_CONNECTIONS_PER_IP,
          value_name = "N")]
    max_connections_per_ip: usize,

    /// Time a new connection has to send its `hello` before it is closed (slowloris guard).
    #[arg(long, env = "LANMON_HELLO_TIMEOUT", value_parser = parse_duration,
          default_value = humantime::format_duration(HELLO_TIMEOUT).to_string(),
          value_name = "DURATION")]
    hello_timeout: Duration,

    /// Close a connection that sent nothing for this many of its agent's intervals (the
    /// agent's samples are its heartbeat); the agent is then `offline` (timeout).
    #[arg(long, env = "LANMON_IDLE_INTERVALS", default_value_t = IDLE_INTERVALS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(2..=100))]
    idle_intervals: u32,

    /// While at least 90 % of --max-connections are in use, close connections that sent
    /// nothing for this long (code `limit`), whatever their agent's interval, to make room.
    #[arg(long, env = "LANMON_PRESSURE_IDLE_TIMEOUT", value_parser = parse_duration,
          default_value = humantime::format_duration(PRESSURE_IDLE_TIMEOUT).to_string(),
          value_name = "DURATION")]
    pressure_idle_timeout: Duration,

    /// Most bytes of partly received frames held across all connections (beyond 4 KiB per
    /// connection); a connection that would go over it is closed (code `limit`).
    #[arg(long, env = "LANMON_MAX_BUFFERED_BYTES", default_value_t = MAX_BUFFERED_BYTES,
          value_name = "BYTES")]
    max_buffered_bytes: usize,

    /// Log verbosity on stderr (RUST_LOG, if set, overrides it).
    #[arg(long, env = "LANMON_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,

    /// Only log warnings and errors (same as --log-level warn).
    #[arg(short, long, env = "LANMON_QUIET", value_parser = BoolishValueParser::new(),
          action = ArgAction::SetTrue)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Sort {
    Name,
    Cpu,
    Mem,
    Status,
    LastSeen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
    Off,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(
        if cli.quiet {
            LogLevel::Warn
        } else {
            cli.log_level
        },
        true,
    );
    let mut config = ServerConfig::new(cli.bind);
    if let Some(name) = &cli.name {
        config.name = name.clone();
    }
    config.report_interval = cli.report_interval.max(Duration::from_millis(50));
    config.history = cli.history.max(1);
    if let Some(n) = cli.session_threads {
        config.session_threads = n;
    }
    config.http = (!cli.no_http).then_some(HttpConfig {
        bind: cli.http,
        hosts: cli.http_hosts.clone(),
        per_core_metrics: !cli.no_per_core_metrics,
        store: None,
        store_health: None,
    });
    config.store = (!cli.no_store).then(|| StoreConfig {
        data_dir: cli.data_dir.clone().unwrap_or_else(store::default_data_dir),
        retention: Retention {
            raw: cli.retention_raw,
            min1: cli.retention_1m,
            min10: cli.retention_10m,
            hour1: cli.retention_1h,
        },
    });
    config.text = TextOptions {
        sort: match cli.sort {
            Sort::Name => SortBy::Name,
            Sort::Cpu => SortBy::Cpu,
            Sort::Mem => SortBy::Mem,
            Sort::Status => SortBy::Status,
            Sort::LastSeen => SortBy::LastSeen,
        },
        top: cli.top,
        filter: cli.filter.clone(),
    };
    config.limits = Limits {
        max_frame_len: cli.max_frame_bytes.max(1024),
        max_cores: cli.max_cores.max(1),
        max_connections: cli.max_connections,
        max_connections_per_ip: cli.max_connections_per_ip,
        hello_timeout: cli.hello_timeout,
        idle_intervals: cli.idle_intervals,
        pressure_idle_timeout: cli.pressure_idle_timeout,
        max_buffered_bytes: cli.max_buffered_bytes,
    };
    config.report_format = match cli.report_format {
        Format::Text => ReportFormat::Text,
        Format::Json => ReportFormat::Json,
        Format::Off => ReportFormat::Off,
    };
    config.beacon = match beacon_config(&cli) {
        Ok(beacon) => beacon,
        Err(e) => {
            eprintln!("server: {e}");
            return ExitCode::from(2);
        }
    };
    lanmon_bins::raise_fd_limit(cli.max_connections);
    let system = actix::System::new();
    let result = system.block_on(async move {
        let server = Server::start(config).await?;
        let interfaces = lanmon::net::ipv4_interfaces();
        eprint!(
            "{}",
            lanmon::server::banner(server.local_addr(), &server.info().name, &interfaces)
        );
        let signal = shutdown_signal().await;
        tracing::info!("{signal} received: stopping (press Ctrl+C again to exit at once)");
        server.shutdown().await;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The beacon's settings from the flags; `None` with --no-beacon.
fn beacon_config(cli: &Cli) -> Result<Option<BeaconConfig>, String> {
    if cli.no_beacon {
        return Ok(None);
    }
    let targets = if cli.beacon_to.is_empty() {
        BeaconTargets::Auto {
            port: cli.discovery_port,
        }
    } else {
        let parse = |s: &String| -> Result<SocketAddr, String> {
            let s = s.trim();
            s.parse::<SocketAddr>()
                .or_else(|_| {
                    s.parse::<IpAddr>()
                        .map(|ip| SocketAddr::new(ip, cli.discovery_port))
                })
                .map_err(|_| format!("--beacon-to `{s}`: expected an IP address or IP:PORT"))
        };
        BeaconTargets::Explicit(cli.beacon_to.iter().map(parse).collect::<Result<_, _>>()?)
    };
    Ok(Some(BeaconConfig {
        targets,
        interval: cli.beacon_interval.max(Duration::from_millis(50)),
    }))
}
