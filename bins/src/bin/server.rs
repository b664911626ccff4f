//! `server`: accepts agents on TCP, keeps their state, and reports their metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, CommandFactory, Parser, Subcommand};
use lanmon::auth::enroll::Policy;
use lanmon::config::{AuthMode, ConfigError, Limits, MAX_BUFFERED_BYTES, PRESSURE_IDLE_TIMEOUT};
use lanmon::discovery::DEFAULT_DISCOVERY_PORT;
use lanmon::install::Role;
use lanmon::install::download::Offer;
use lanmon::server::alerts::config::{Format as HookFormat, RulePatch, Webhook};
use lanmon::server::alerts::rules::RuleId;
use lanmon::server::alerts::{AlertFlags, AlertsSettings};
use lanmon::server::beacon::{BeaconConfig, BeaconTargets};
use lanmon::server::http::HttpConfig;
use lanmon::server::store::{self, Retention, StoreConfig};
use lanmon::server::trust::TrustConfig;
use lanmon::server::{ReportFormat, ServerConfig, SortBy, TextOptions};
use lanmon_bins::{LogLevel, help_duration, init_logging, one_of, parse_duration};

/// lanmon server: receives the agents' samples (CPU, memory, load, swap, filesystems, disk
/// and network I/O, temperatures) over TCP and shows every agent's latest metrics.
///
/// It also announces itself on UDP (a small beacon every second, see --beacon-to) so that
/// `agent --discover` finds it without an address.
///
/// Reports go to stdout (a live table on a terminal, plain blocks when piped, or one JSON
/// snapshot per line with --report-format json); the banner and logs go to stderr.
/// Ctrl+C or SIGTERM stops it cleanly (agents are told); a second Ctrl+C exits at once.
///
/// Secure by default (protocol 2, --auth required): agents authenticate with keys over an
/// encrypted connection, and join with the token the banner prints (`agent --discover --join
/// lm2-…`); an agent without it waits for `server agents approve`. The dashboard, the API and
/// /metrics need the login token of the printed URL (or /metrics' own bearer token).
#[derive(Debug, Parser)]
#[command(
    name = "server",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<ServerCommand>,

    /// TCP address to accept agents on. `0.0.0.0:8080` listens on every interface; port 0
    /// picks a free port (the banner and the JSON snapshot say which).
    #[arg(long, env = "LANMON_BIND", default_value_t = ServerConfig::DEFAULT_BIND, value_name = "ADDR:PORT")]
    bind: SocketAddr,

    /// Name of this server, shown in reports and sent to agents (default: the host name).
    #[arg(long, env = "LANMON_SERVER_NAME")]
    name: Option<String>,

    /// How often to report every agent's latest metrics (e.g. 10s, 500ms).
    #[arg(long, env = "LANMON_REPORT_INTERVAL", value_parser = parse_duration,
          default_value = help_duration(ServerConfig::DEFAULT_REPORT_INTERVAL),
          value_name = "DURATION")]
    report_interval: Duration,

    /// Report format on stdout: `text` (a table; redrawn in place on a terminal), `json`
    /// (one snapshot object per line, for scripts and jq), or `off`.
    #[arg(long, env = "LANMON_REPORT_FORMAT", default_value_t = ReportFormat::Text,
          value_parser = one_of::<ReportFormat>(ReportFormat::ALL.map(ReportFormat::name)))]
    report_format: ReportFormat,

    /// Text report: order of the agents — `name`, `cpu` (busiest first), `mem` (most used
    /// first), `status` (offline first), `last-seen` (longest silent first).
    #[arg(long, env = "LANMON_SORT", default_value_t = SortBy::Name,
          value_parser = one_of::<SortBy>(SortBy::ALL.map(SortBy::name)))]
    sort: SortBy,

    /// Text report: show at most this many agents (0: all); a summary line covers the fleet.
    #[arg(long, env = "LANMON_TOP", default_value_t = TextOptions::DEFAULT_TOP, value_name = "N")]
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
          default_value = help_duration(BeaconConfig::DEFAULT_INTERVAL),
          value_name = "DURATION")]
    beacon_interval: Duration,

    /// Do not send discovery beacons (agents then need --host).
    #[arg(long, env = "LANMON_NO_BEACON", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    no_beacon: bool,

    /// HTTP address for the JSON API (`/api/agents`), Prometheus (`/metrics`), `/healthz` and
    /// the dashboard (`/`). Port 0 picks a free port (the JSON snapshot's `server.http` says
    /// which).
    #[arg(long, env = "LANMON_HTTP", default_value_t = HttpConfig::DEFAULT_BIND, value_name = "ADDR:PORT",
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

    /// Directory of the server's data: its identity (server.key, network.key, agents.json,
    /// http.token, metrics.token; all 0600) and the durable history (created if missing; one
    /// server per directory). Default: $XDG_DATA_HOME/lanmon, else ~/.local/share/lanmon, else
    /// ./lanmon-data. A system service would use /var/lib/lanmon.
    #[arg(long, env = "LANMON_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Keep history in memory only (the last --history samples per agent): no history is
    /// written to disk, a restart forgets it, and samples are acknowledged at once. The
    /// identity files still live in --data-dir (join tokens must survive a restart), unless
    /// --auth off.
    #[arg(long, env = "LANMON_NO_STORE", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    no_store: bool,

    /// Who may connect: `required` (protocol 2 only: agents authenticate by key over an
    /// encrypted connection; HTTP needs a login), `optional` (also old protocol-1 agents on the
    /// same port, shown as unauthenticated), or `off` (no authentication, no encryption, open
    /// HTTP: a closed lab only).
    #[arg(long, env = "LANMON_AUTH", default_value_t = AuthMode::Required,
          value_parser = one_of::<AuthMode>(AuthMode::ALL.map(AuthMode::name)))]
    auth: AuthMode,

    /// Enroll every agent key at its first connection, without a join token or an operator's
    /// approval (a lab policy: anyone who can reach the port can then send samples).
    #[arg(long, env = "LANMON_AUTO_APPROVE", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    auto_approve: bool,

    /// How long raw samples are kept on disk.
    #[arg(long, env = "LANMON_RETENTION_RAW", value_parser = parse_duration,
          default_value = help_duration(store::DEFAULT_RAW_RETENTION), value_name = "DURATION")]
    retention_raw: Duration,

    /// How long the 1-minute rollups (avg/min/max) are kept on disk.
    #[arg(long, env = "LANMON_RETENTION_1M", value_parser = parse_duration,
          default_value = help_duration(store::DEFAULT_1M_RETENTION), value_name = "DURATION")]
    retention_1m: Duration,

    /// How long the 10-minute rollups are kept on disk.
    #[arg(long, env = "LANMON_RETENTION_10M", value_parser = parse_duration,
          default_value = help_duration(store::DEFAULT_10M_RETENTION), value_name = "DURATION")]
    retention_10m: Duration,

    /// How long the 1-hour rollups are kept on disk.
    #[arg(long, env = "LANMON_RETENTION_1H", value_parser = parse_duration,
          default_value = help_duration(store::DEFAULT_1H_RETENTION), value_name = "DURATION")]
    retention_1h: Duration,

    /// Samples remembered per agent in memory (default: one hour at the agent's default 5 s
    /// interval). Each costs about 56 bytes.
    #[arg(long, env = "LANMON_HISTORY", default_value_t = ServerConfig::DEFAULT_HISTORY, value_name = "SAMPLES")]
    history: usize,

    /// Threads that run agent connections (decode, validate, acknowledge) [default: one per
    /// core]. 0 runs them on the server's main thread with the registry.
    #[arg(long, env = "LANMON_SESSION_THREADS", value_name = "N")]
    session_threads: Option<usize>,

    /// Longest frame accepted from an agent, in bytes; a longer one closes that connection.
    #[arg(long, env = "LANMON_MAX_FRAME_BYTES", default_value_t = Limits::DEFAULT_MAX_FRAME_LEN, value_name = "BYTES")]
    max_frame_bytes: usize,

    /// Most CPU cores an agent may announce (per-core entries per sample).
    #[arg(long, env = "LANMON_MAX_CORES", default_value_t = Limits::DEFAULT_MAX_CORES, value_name = "N")]
    max_cores: usize,

    /// Most simultaneous connections; more are refused with an `error` frame (code `limit`).
    #[arg(long, env = "LANMON_MAX_CONNECTIONS", default_value_t = Limits::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    max_connections: usize,

    /// Most simultaneous connections from one IP address.
    #[arg(long, env = "LANMON_MAX_CONNECTIONS_PER_IP", default_value_t = Limits::DEFAULT_MAX_CONNECTIONS_PER_IP,
          value_name = "N")]
    max_connections_per_ip: usize,

    /// Time a new connection has to send its `hello` before it is closed (slowloris guard).
    #[arg(long, env = "LANMON_HELLO_TIMEOUT", value_parser = parse_duration,
          default_value = help_duration(Limits::DEFAULT_HELLO_TIMEOUT),
          value_name = "DURATION")]
    hello_timeout: Duration,

    /// Close a connection that sent nothing for this many of its agent's intervals (the
    /// agent's samples are its heartbeat); the agent is then `offline` (timeout).
    #[arg(long, env = "LANMON_IDLE_INTERVALS", default_value_t = Limits::DEFAULT_IDLE_INTERVALS,
          value_name = "N", value_parser = clap::value_parser!(u32).range(idle_intervals_range()))]
    idle_intervals: u32,

    /// Samples one agent (its key with protocol 2; its id from one address with protocol 1)
    /// may send per interval it announced, sustained, beyond its --sample-burst: a faster sender's connection is closed (code
    /// `limit`) and nothing from that sample on is acknowledged, so it loses nothing. 0: no
    /// limit.
    #[arg(long, env = "LANMON_MAX_SAMPLES_PER_INTERVAL", default_value_t = Limits::DEFAULT_SAMPLES_PER_INTERVAL,
          value_name = "N")]
    max_samples_per_interval: u32,

    /// Samples one agent (as for --max-samples-per-interval) may send at once beyond its
    /// rate, e.g. replaying what it kept while the server was away (at least 32; reconnecting
    /// does not refill it).
    #[arg(long, env = "LANMON_SAMPLE_BURST", default_value_t = Limits::DEFAULT_SAMPLE_BURST,
          value_name = "SAMPLES")]
    sample_burst: u32,

    /// Alert rules file (TOML; see the README's "Alerts"). Checked at start: the server exits
    /// naming the line and key of each problem. SIGHUP reads it again (a file with problems
    /// is refused and the previous rules stay). It overrides the --alert-* flags.
    #[arg(
        long,
        env = "LANMON_ALERTS",
        value_name = "FILE",
        conflicts_with = "no_alerts"
    )]
    alerts: Option<PathBuf>,

    /// No alerts at all: no rules, no notifications, no /api/alerts.
    #[arg(long, env = "LANMON_NO_ALERTS", value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    no_alerts: bool,

    /// POST every alert transition (firing, resolved) as JSON in lanmon's format to this URL
    /// (repeatable; more targets and formats in the --alerts file).
    #[arg(
        long,
        env = "LANMON_ALERT_WEBHOOK",
        value_delimiter = ',',
        value_name = "URL"
    )]
    alert_webhook: Vec<String>,

    /// Publish every alert transition to this ntfy topic, e.g. https://ntfy.sh/my-topic
    /// (repeatable).
    #[arg(
        long,
        env = "LANMON_ALERT_NTFY",
        value_delimiter = ',',
        value_name = "URL"
    )]
    alert_ntfy: Vec<String>,

    /// Send every alert transition to this Slack-compatible incoming webhook (Slack,
    /// Mattermost, Rocket.Chat, Discord's `…/slack` URL; repeatable).
    #[arg(
        long,
        env = "LANMON_ALERT_SLACK",
        value_delimiter = ',',
        value_name = "URL"
    )]
    alert_slack: Vec<String>,

    /// Push alerts to this Alertmanager (API v2; e.g. http://127.0.0.1:9093; repeatable).
    /// Firing alerts are re-sent every minute, resolved ones with their end time.
    #[arg(
        long,
        env = "LANMON_ALERTMANAGER",
        value_delimiter = ',',
        value_name = "URL"
    )]
    alertmanager: Vec<String>,

    /// How often the alert rules run [default: 5s].
    #[arg(long, env = "LANMON_ALERT_INTERVAL", value_parser = parse_duration, value_name = "DURATION")]
    alert_interval: Option<Duration>,

    /// CPU alert: fire above this CPU usage, % [default: 90; resolves 10 points below].
    #[arg(long, env = "LANMON_ALERT_CPU", value_name = "PERCENT")]
    alert_cpu: Option<f64>,

    /// CPU alert: how long the CPU must stay above the threshold [default: 5m].
    #[arg(long, env = "LANMON_ALERT_CPU_FOR", value_parser = parse_duration, value_name = "DURATION")]
    alert_cpu_for: Option<Duration>,

    /// Memory alert: fire above this memory use (total - available), % [default: 90].
    #[arg(long, env = "LANMON_ALERT_MEMORY", value_name = "PERCENT")]
    alert_memory: Option<f64>,

    /// Memory alert: how long memory must stay above the threshold [default: 5m].
    #[arg(long, env = "LANMON_ALERT_MEMORY_FOR", value_parser = parse_duration, value_name = "DURATION")]
    alert_memory_for: Option<Duration>,

    /// Filesystem alert: fire above this use of a filesystem, % [default: 90].
    #[arg(long, env = "LANMON_ALERT_FILESYSTEM", value_name = "PERCENT")]
    alert_filesystem: Option<f64>,

    /// Offline alert: how long an agent may be disconnected before it fires [default: 1m].
    #[arg(long, env = "LANMON_ALERT_OFFLINE_FOR", value_parser = parse_duration, value_name = "DURATION")]
    alert_offline_for: Option<Duration>,

    /// The agent binary offered at `GET /download/agent`, which `install.sh` installs on
    /// other machines (default: `../lib/lanmon/agent` from this server's directory, where
    /// `server install` and the .deb put it, else `agent` in that directory).
    #[arg(long, env = "LANMON_AGENT_BINARY", value_name = "PATH")]
    agent_binary: Option<PathBuf>,

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

#[derive(Debug, Subcommand)]
enum ServerCommand {
    /// Install (or upgrade) this server as a systemd service with the given server flags
    /// (`server install --help` for its options).
    #[command(disable_help_flag = true)]
    Install(lanmon_bins::install::InstallArgs),

    /// Remove the service `server install` set up (settings and history stay unless --purge).
    Uninstall(lanmon_bins::install::UninstallArgs),

    /// The agents' keys: `list`, `approve NAME|ID|FINGERPRINT`, `revoke NAME|ID|FINGERPRINT`.
    /// Through the running server's API on loopback (a revocation closes the agent's
    /// connection at once), or on the files of a stopped server.
    Agents(AgentsArgs),

    /// Replace the server's key; the current one stays accepted for --grace, and agents that
    /// connect meanwhile are told the new one. Needs the server stopped; prints the new join
    /// token.
    RotateKey(RotateArgs),

    /// Print the join token (`agent --join TOKEN`); creates the identity if there is none yet.
    Token(DataDirArg),
}

#[derive(Debug, clap::Args)]
struct DataDirArg {
    /// The server's data directory (default: as the server's --data-dir).
    #[arg(long, env = "LANMON_DATA_DIR", value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct AgentsArgs {
    #[command(subcommand)]
    action: AgentsAction,

    #[command(flatten)]
    dir: DataDirArg,
}

#[derive(Debug, Subcommand)]
enum AgentsAction {
    /// Every agent key: pending first (fingerprint, name, host, status, since).
    List,
    /// Enroll an agent that waits for approval (by name, id or key fingerprint).
    Approve {
        /// The agent's name, id, or key fingerprint (`SHA256:…`, as the agent printed it).
        agent: String,
    },
    /// Refuse an agent from now on (its connection is closed at once); its id stays bound
    /// to the revoked key.
    Revoke {
        /// The agent's name, id, or key fingerprint.
        agent: String,
    },
}

#[derive(Debug, clap::Args)]
struct RotateArgs {
    /// How long the current key stays accepted (agents that connect meanwhile learn the new
    /// one; those that do not must join again with the new token).
    #[arg(long, env = "LANMON_ROTATE_GRACE", value_parser = parse_duration, default_value = "7d",
          value_name = "DURATION")]
    grace: Duration,

    #[command(flatten)]
    dir: DataDirArg,
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    match cli.command.take() {
        Some(ServerCommand::Install(args)) => {
            return lanmon_bins::install::install(Role::Server, Cli::command(), args);
        }
        Some(ServerCommand::Uninstall(args)) => {
            return lanmon_bins::install::uninstall(Role::Server, args);
        }
        Some(ServerCommand::Agents(args)) => return agents(args),
        Some(ServerCommand::RotateKey(args)) => return rotate_key(args),
        Some(ServerCommand::Token(dir)) => {
            return match lanmon::server::admin::join_token(&dir.path()) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            };
        }
        None => {}
    }
    let level = if cli.quiet {
        LogLevel::Warn
    } else {
        cli.log_level
    };
    init_logging(level, true);
    let alerts = match alerts_settings(&cli) {
        Ok(alerts) => alerts,
        Err(e) => {
            eprintln!("server: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match cli.into_config() {
        Ok(config) => ServerConfig { alerts, ..config },
        Err(e) => {
            eprintln!("server: {e}");
            return ExitCode::from(2);
        }
    };
    let shutdown = async {
        let signal = lanmon::process::shutdown_signal().await;
        tracing::info!("{signal} received: stopping (press Ctrl+C again to exit at once)");
    };
    let system = actix::System::new();
    match system.block_on(lanmon::server::run(config, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

impl DataDirArg {
    fn path(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(store::default_data_dir)
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("server: {e}");
    ExitCode::FAILURE
}

/// `server agents …`.
fn agents(args: AgentsArgs) -> ExitCode {
    let admin = match lanmon::server::admin::Admin::open(&args.dir.path()) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let how = if admin.is_live() {
        "the running server"
    } else {
        "the stopped server's files"
    };
    let result = match &args.action {
        AgentsAction::List => admin.list().map(|entries| {
            println!(
                "{:<8} {:<20} {:<20} {:<46} {:<10} SINCE",
                "STATUS", "NAME", "HOST", "KEY FINGERPRINT", "BY"
            );
            for e in entries {
                let since = match e.status {
                    lanmon::auth::enroll::Status::Pending => Some(e.first_seen_ms),
                    lanmon::auth::enroll::Status::Approved => e.approved_at_ms,
                    lanmon::auth::enroll::Status::Revoked => e.revoked_at_ms,
                };
                let ago = since
                    .map(|t| lanmon::util::human_age(lanmon::util::now_ms().saturating_sub(t)))
                    .unwrap_or_default();
                let by = e
                    .approved_by
                    .map(|b| format!("{b:?}").to_lowercase())
                    .unwrap_or_default();
                println!(
                    "{:<8} {:<20} {:<20} {:<46} {:<10} {ago} ago  (id {})",
                    format!("{:?}", e.status).to_lowercase(),
                    e.name,
                    e.hostname,
                    e.fp,
                    by,
                    e.agent_id
                );
            }
        }),
        AgentsAction::Approve { agent } => admin.approve(agent).map(|e| {
            println!(
                "approved {} ({}, key {}) on {how}",
                e.name, e.agent_id, e.fp
            );
        }),
        AgentsAction::Revoke { agent } => admin.revoke(agent).map(|e| {
            println!("revoked {} ({}, key {}) on {how}", e.name, e.agent_id, e.fp);
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// `server rotate-key`.
fn rotate_key(args: RotateArgs) -> ExitCode {
    match lanmon::server::admin::rotate_key(&args.dir.path(), args.grace) {
        Ok((fp, token)) => {
            println!(
                "new server key {fp}; the previous key is accepted for {:?}",
                args.grace
            );
            println!(
                "new join token (agents that joined before learn the new key by themselves when they connect during the grace period):"
            );
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// The alerts' settings from the flags and the --alerts file; `None` with --no-alerts.
fn alerts_settings(cli: &Cli) -> Result<Option<AlertsSettings>, String> {
    if cli.no_alerts {
        return Ok(None);
    }
    let patch = |threshold: Option<f64>, for_: Option<Duration>| RulePatch {
        threshold,
        for_,
        ..RulePatch::default()
    };
    let mut flags = AlertFlags {
        evaluate_every: cli.alert_interval,
        alertmanagers: cli.alertmanager.clone(),
        ..AlertFlags::default()
    };
    for (rule, p) in [
        (RuleId::Cpu, patch(cli.alert_cpu, cli.alert_cpu_for)),
        (
            RuleId::Memory,
            patch(cli.alert_memory, cli.alert_memory_for),
        ),
        (RuleId::Filesystem, patch(cli.alert_filesystem, None)),
        (RuleId::Offline, patch(None, cli.alert_offline_for)),
    ] {
        if p != RulePatch::default() {
            flags.rules.push((rule, p));
        }
    }
    for (urls, format) in [
        (&cli.alert_webhook, HookFormat::Lanmon),
        (&cli.alert_ntfy, HookFormat::Ntfy),
        (&cli.alert_slack, HookFormat::Slack),
    ] {
        flags.webhooks.extend(urls.iter().map(|url| Webhook {
            url: url.trim().to_string(),
            format,
            headers: Vec::new(),
        }));
    }
    AlertsSettings::load(cli.alerts.clone(), flags)
        .map(Some)
        .map_err(|e| e.to_string())
}

impl Cli {
    /// The library's config from the flags, validated (the policy is `ServerConfig`'s).
    fn into_config(self) -> Result<ServerConfig, ConfigError> {
        let mut config = ServerConfig::new(self.bind);
        if let Some(name) = self.name {
            config.name = name;
        }
        config.report_interval = self.report_interval;
        config.report_format = self.report_format;
        config.text = TextOptions {
            sort: self.sort,
            top: self.top,
            filter: self.filter,
        };
        config.history = self.history;
        if let Some(n) = self.session_threads {
            config.session_threads = n;
        }
        // The agent that install.sh installs, hashed now: the banner prints its SHA-256.
        let agent_binary = self.agent_binary;
        config.http = (!self.no_http).then(|| HttpConfig {
            per_core_metrics: !self.no_per_core_metrics,
            agent: Some(Offer::locate(agent_binary.as_deref())),
            hosts: self.http_hosts,
            ..HttpConfig::new(self.http)
        });
        let data_dir = self.data_dir.unwrap_or_else(store::default_data_dir);
        config.trust = TrustConfig {
            mode: self.auth,
            dir: Some(data_dir.clone()),
            policy: if self.auto_approve {
                Policy::AutoApprove
            } else {
                Policy::Manual
            },
        };
        config.store = (!self.no_store).then_some(StoreConfig {
            data_dir,
            retention: Retention {
                raw: self.retention_raw,
                min1: self.retention_1m,
                min10: self.retention_10m,
                hour1: self.retention_1h,
            },
        });
        config.limits = Limits {
            max_frame_len: self.max_frame_bytes,
            max_cores: self.max_cores,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            hello_timeout: self.hello_timeout,
            idle_intervals: self.idle_intervals,
            pressure_idle_timeout: self.pressure_idle_timeout,
            max_buffered_bytes: self.max_buffered_bytes,
            samples_per_interval: self.max_samples_per_interval,
            sample_burst: self.sample_burst,
        };
        config.beacon = if self.no_beacon {
            None
        } else {
            Some(BeaconConfig {
                targets: BeaconTargets::parse(&self.beacon_to, self.discovery_port)?,
                interval: self.beacon_interval,
            })
        };
        config.validate()
    }
}

/// `--idle-intervals`' range as clap takes it: the library's `Limits::IDLE_INTERVALS_RANGE`.
fn idle_intervals_range() -> std::ops::RangeInclusive<i64> {
    let range = Limits::IDLE_INTERVALS_RANGE;
    i64::from(*range.start())..=i64::from(*range.end())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every flag has help text (its doc comment) and an environment variable.
    #[test]
    fn every_flag_has_help_and_env() {
        Cli::command().debug_assert();
        for arg in Cli::command().get_arguments() {
            let id = arg.get_id().as_str();
            assert!(arg.get_help().is_some(), "--{id} has no help");
            assert!(
                arg.get_env().is_some(),
                "--{id} has no environment variable"
            );
        }
    }

    /// The flags reach the library's policy: a report interval of 1 ms and a history of 0
    /// come out as the library's minimums, `--beacon-to` is parsed by the library, and
    /// `--no-beacon`/`--no-http`/`--no-store` turn those parts off.
    #[test]
    fn flags_become_a_validated_config() -> anyhow::Result<()> {
        let cli = |args: &[&str]| Cli::try_parse_from([&["server"], args].concat());
        let config = cli(&[
            "--report-interval",
            "1ms",
            "--history",
            "0",
            "--beacon-to",
            "127.0.0.1",
        ])?
        .into_config()?;
        assert_eq!(config.report_interval, ServerConfig::MIN_REPORT_INTERVAL);
        assert_eq!(config.history, ServerConfig::MIN_HISTORY);
        assert_eq!(
            config.beacon.map(|b| b.targets),
            Some(BeaconTargets::Explicit(vec![
                ([127, 0, 0, 1], DEFAULT_DISCOVERY_PORT).into()
            ]))
        );
        let off = cli(&["--no-beacon", "--no-http", "--no-store"])?.into_config()?;
        assert!(off.beacon.is_none() && off.http.is_none() && off.store.is_none());
        // Secure by default; the identity stays in the data directory with --no-store.
        assert_eq!(off.trust.mode, AuthMode::Required);
        let dir =
            cli(&["--no-store", "--data-dir", "/tmp/x", "--auth", "optional"])?.into_config()?;
        assert_eq!(
            dir.trust.dir.as_deref(),
            Some(std::path::Path::new("/tmp/x"))
        );
        assert_eq!(dir.trust.mode, AuthMode::Optional);
        let bad = cli(&["--auth", "off", "--auto-approve"]).map(Cli::into_config);
        assert!(matches!(bad, Ok(Err(ConfigError::AutoApproveWithoutAuth))));
        let bad = cli(&["--beacon-to", "nope"]).map(Cli::into_config);
        assert!(matches!(bad, Ok(Err(ConfigError::BeaconTarget(_)))));
        Ok(())
    }
}
