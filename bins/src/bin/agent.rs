//! `agent`: samples this machine (CPU, memory, load, swap, filesystems, disk and network I/O,
//! temperatures, optionally the top processes) and streams the samples to a lanmon server.

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, ArgGroup, Args, CommandFactory, Parser, Subcommand};
use lanmon::agent::{AgentConfig, Target};
use lanmon::auth::token::JoinToken;
use lanmon::config::AuthMode;
use lanmon::discovery::DEFAULT_SURVEY;
use lanmon::install::Role;
use lanmon::metrics::{CollectConfig, Groups, Select};
use lanmon_bins::{LogLevel, help_duration, init_logging, parse_duration};
use tokio_util::sync::CancellationToken;

/// lanmon agent: samples this machine every interval (CPU total, per core and by mode,
/// memory, load, swap, filesystems, disk and network I/O counters, temperatures and its own
/// cost; the top processes on request) and streams the samples to a lanmon server over one
/// TCP connection.
///
/// Find the server with --host IP, or with --discover (listens for the server's UDP beacon:
/// no address needed). It reconnects by itself (exponential backoff with jitter, capped at
/// 30 s) and never exits because the server is away; samples taken meanwhile are kept (see
/// --buffer) and sent after the reconnect. With --discover it listens again after a lost
/// connection, so a server that moved to another IP is found again. Logs go to stdout.
/// Ctrl+C or SIGTERM says goodbye to the server and exits 0.
///
/// Protocol 2: the agent has a key of its own (in --state-dir) and talks to the server over an
/// encrypted connection after a handshake in which the server proves its key. Start it once
/// with the server's join token (--join lm2-…, printed in the server's banner): that pins the
/// server's key and enrolls the agent. Without a token it trusts the first server it finds,
/// prints that server's fingerprint, and waits until the operator approves it.
#[derive(Debug, Parser)]
#[command(
    name = "agent",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    group(ArgGroup::new("target").required(true).args(["host", "discover"]))
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    run: RunArgs,

    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Listen for server beacons for a few seconds, print every server heard (name, IP,
    /// port, protocol version, key fingerprint) and exit: 0 if one was heard, 1 if none.
    Discover(DiscoverArgs),

    /// Install (or upgrade) this agent as a systemd service with the given agent flags, e.g.
    /// `agent install --discover` (`agent install --help` for its options).
    #[command(disable_help_flag = true)]
    Install(lanmon_bins::install::InstallArgs),

    /// Remove the service `agent install` set up (settings and state stay unless --purge).
    Uninstall(lanmon_bins::install::UninstallArgs),
}

#[derive(Debug, Args)]
struct DiscoverArgs {
    /// How long to listen.
    #[arg(long, env = "LANMON_LISTEN_FOR", value_parser = parse_duration,
          default_value = help_duration(DEFAULT_SURVEY), value_name = "DURATION")]
    listen_for: Duration,

    /// UDP port the servers' beacons arrive on.
    #[arg(long, env = "LANMON_DISCOVERY_PORT", default_value_t = Target::DEFAULT_DISCOVERY_PORT,
          value_name = "PORT")]
    discovery_port: u16,

    #[command(flatten)]
    log: LogArgs,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The server's IP address or host name (its startup banner lists them).
    #[arg(long, env = "LANMON_HOST", value_name = "HOST")]
    host: Option<String>,

    /// Find the server by its UDP beacon instead of --host (it must be on the same LAN).
    #[arg(long, env = "LANMON_DISCOVER", value_parser = BoolishValueParser::new(),
          action = ArgAction::SetTrue)]
    discover: bool,

    /// With --discover: list the servers heard (like `agent discover`) and exit.
    #[arg(long, env = "LANMON_LIST", requires = "discover",
          value_parser = BoolishValueParser::new(), action = ArgAction::SetTrue)]
    list: bool,

    /// With --discover: only connect to the server with this name (when several beacon).
    #[arg(
        long,
        env = "LANMON_DISCOVER_NAME",
        requires = "discover",
        value_name = "NAME"
    )]
    server_name: Option<String>,

    /// With --discover: give up with exit code 1 if no server is heard this long before the
    /// first connection (default: wait forever).
    #[arg(long, env = "LANMON_DISCOVER_TIMEOUT", requires = "discover",
          value_parser = parse_duration, value_name = "DURATION")]
    discover_timeout: Option<Duration>,

    /// UDP port to listen on for beacons (with --discover).
    #[arg(long, env = "LANMON_DISCOVERY_PORT", default_value_t = Target::DEFAULT_DISCOVERY_PORT,
          value_name = "PORT")]
    discovery_port: u16,

    /// The server's TCP port (with --host; a discovered server says its own).
    #[arg(long, env = "LANMON_PORT", default_value_t = Target::DEFAULT_PORT)]
    port: u16,

    /// How often to sample and send (200ms to 1h; e.g. 5s, 1s, 500ms).
    #[arg(long, env = "LANMON_INTERVAL", value_parser = parse_duration,
          default_value = help_duration(AgentConfig::DEFAULT_INTERVAL),
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
    #[arg(long, env = "LANMON_BUFFER", default_value_t = AgentConfig::DEFAULT_BUFFER, value_name = "SAMPLES")]
    buffer: usize,

    /// The server's join token (`lm2-…`, from its banner or `server token`): pins the server's
    /// key and enrolls this agent without an operator. Needed once: the state directory
    /// remembers it. A secret: whoever has it can enroll agents.
    #[arg(long, env = "LANMON_JOIN", value_name = "TOKEN", value_parser = parse_join)]
    join: Option<JoinToken>,

    /// Where the agent keeps its key and the server keys it pinned (created 0700; files 0600).
    /// Default: $XDG_STATE_HOME/lanmon, else ~/.local/state/lanmon, else /var/lib/lanmon-agent.
    #[arg(long, env = "LANMON_STATE_DIR", value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,

    /// `required` (protocol 2: authenticated and encrypted, the default) or `off` (plaintext
    /// protocol 1, only for a server run with --auth off or optional).
    #[arg(long, env = "LANMON_AUTH", default_value = "required",
          value_parser = lanmon_bins::one_of::<AuthMode>(["required", "off"]))]
    auth: AuthMode,

    /// Metric groups to collect, comma-separated: cpu, memory, load, swap, fs, disk, net,
    /// temp, self (the agent's own cost), or `all` (the default).
    #[arg(long, env = "LANMON_COLLECT", value_parser = parse_groups, value_name = "GROUPS")]
    collect: Option<Groups>,

    /// Metric groups not to collect (taken out of --collect), e.g. `temp,self`.
    #[arg(long, env = "LANMON_NO_COLLECT", value_parser = parse_groups, value_name = "GROUPS")]
    no_collect: Option<Groups>,

    /// Filesystem types to report: `default` (real filesystems: no tmpfs, overlay, proc,
    /// squashfs, …, and no network filesystems, whose statvfs can hang), `all`, or patterns
    /// (`ext4,xfs,nfs*`).
    #[arg(long, env = "LANMON_FS_TYPES", value_parser = parse_select, default_value = "default",
          value_name = "TYPES")]
    fs_types: Select,

    /// Block devices to report disk I/O for: `default` (whole disks; no partitions, loop,
    /// ram, zram or dm-* devices), `all`, or patterns (`sd?,nvme0n1`).
    #[arg(long, env = "LANMON_DISK_DEVICES", value_parser = parse_select,
          default_value = "default", value_name = "DEVICES")]
    disk_devices: Select,

    /// Network interfaces to report: `default` (all but lo and virtual ones: veth, docker,
    /// bridges, taps, …), `all`, or patterns (`eth*,wlan0`).
    #[arg(long, env = "LANMON_NET_INTERFACES", value_parser = parse_select,
          default_value = "default", value_name = "INTERFACES")]
    net_interfaces: Select,

    /// Also send the N processes using the most CPU and the N using the most memory (name,
    /// pid, CPU %, RSS); 0 (the default) sends none. At most 16. Costs about one file read
    /// per process per sample.
    #[arg(long, env = "LANMON_PROCESSES", default_value_t = CollectConfig::DEFAULT_PROCESSES,
          value_name = "N")]
    processes: usize,
}

fn parse_groups(s: &str) -> Result<Groups, String> {
    s.parse()
}

fn parse_select(s: &str) -> Result<Select, String> {
    s.parse()
}

/// `--join`: the token's own error says what is wrong (typo, truncated, other version).
fn parse_join(text: &str) -> Result<JoinToken, String> {
    JoinToken::decode(text).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
struct LogArgs {
    /// Log verbosity on stdout (RUST_LOG, if set, overrides it).
    #[arg(long, env = "LANMON_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,

    /// Only log warnings and errors: no line per sample (same as --log-level warn).
    #[arg(short, long, env = "LANMON_QUIET", value_parser = BoolishValueParser::new(),
          action = ArgAction::SetTrue)]
    quiet: bool,
}

impl LogArgs {
    fn init(&self) {
        init_logging(
            if self.quiet {
                LogLevel::Warn
            } else {
                self.log_level
            },
            false,
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Install(args)) => {
            return lanmon_bins::install::install(Role::Agent, Cli::command(), args);
        }
        Some(Command::Uninstall(args)) => {
            return lanmon_bins::install::uninstall(Role::Agent, args);
        }
        Some(Command::Discover(args)) => {
            args.log.init();
            list_servers(args.discovery_port, args.listen_for)
        }
        None if cli.run.list => {
            cli.log.init();
            list_servers(cli.run.discovery_port, DEFAULT_SURVEY)
        }
        None => {
            cli.log.init();
            match cli.run.into_config() {
                Ok(config) => run(config).map(|()| ExitCode::SUCCESS),
                Err(e) => {
                    eprintln!("agent: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("agent: {e:#}");
        ExitCode::FAILURE
    })
}

impl RunArgs {
    /// The library's config from the flags, validated (the policy is `AgentConfig`'s).
    fn into_config(self) -> Result<AgentConfig, lanmon::config::ConfigError> {
        let target = match self.host {
            Some(host) => Target::Host {
                host,
                port: self.port,
            },
            None => Target::Discover {
                port: self.discovery_port,
                server_name: self.server_name,
                timeout: self.discover_timeout,
            },
        };
        let collect = CollectConfig::from_flags(
            self.collect,
            self.no_collect,
            self.fs_types,
            self.disk_devices,
            self.net_interfaces,
            self.processes,
        )
        .map_err(lanmon::config::ConfigError::Collect)?;
        AgentConfig {
            interval: self.interval,
            buffer: self.buffer,
            auth: self.auth,
            state_dir: Some(
                self.state_dir
                    .unwrap_or_else(lanmon::auth::keys::default_state_dir),
            ),
            join: self.join,
            collect,
            ..AgentConfig::new(target, self.name, self.id)
        }
        .validate()
    }
}

/// Samples this machine until SIGINT or SIGTERM, then says bye to the server.
fn run(config: AgentConfig) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            let signal = lanmon::process::shutdown_signal().await;
            tracing::info!("{signal} received: saying bye to the server");
            trigger.cancel();
        });
        lanmon::agent::run_system(config, shutdown).await
    })?;
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `agent discover`: the diagnostic to run first when discovery finds nothing.
fn list_servers(port: u16, listen_for: Duration) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let mut listener = lanmon::discovery::BeaconListener::bind(port, None)
            .map_err(|e| anyhow::anyhow!("cannot listen on UDP port {port}: {e}"))?;
        println!("listening for lanmon servers on UDP port {port} for {listen_for:?}…");
        let servers = listener.survey(listen_for).await;
        if servers.is_empty() {
            println!(
                "no server heard. Is the server running (without --no-beacon)? Is UDP port {port} \
                 blocked by a firewall on either machine? Is the server on another subnet? \
                 Then use `agent --host <server IP>`."
            );
            return Ok(ExitCode::FAILURE);
        }
        println!(
            "{:<24} {:<22} {:<8} {:<18} FINGERPRINT (claimed by the beacon: compare with the server's banner)",
            "NAME", "ADDRESS", "PROTOCOL", "ID"
        );
        for s in &servers {
            println!(
                "{:<24} {:<22} {:<8} {:<18} {}",
                s.beacon.server_name,
                s.addr.to_string(),
                format!("v{}+", s.beacon.proto),
                s.beacon.server_id,
                s.fp.map_or_else(|| "- (unsigned: a protocol-1 server)".into(), |f| f.to_string())
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every flag, of the agent and of `agent discover`, has help text (its doc comment) and
    /// an environment variable.
    #[test]
    fn every_flag_has_help_and_env() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        // `install` / `uninstall` take the agent's own flags through (or their own
        // one-shot options, which have no environment variable on purpose).
        let discover = cmd
            .get_subcommands()
            .filter(|sub| sub.get_name() == "discover")
            .flat_map(|sub| sub.get_arguments().cloned().collect::<Vec<_>>());
        for arg in cmd.get_arguments().cloned().chain(discover) {
            let id = arg.get_id().as_str();
            assert!(arg.get_help().is_some(), "--{id} has no help");
            assert!(
                arg.get_env().is_some(),
                "--{id} has no environment variable"
            );
        }
    }

    /// The flags reach the library's policy: an interval under 200 ms is refused by
    /// `AgentConfig::validate`, and one in range comes through with the other flags.
    #[test]
    fn flags_become_a_validated_config() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from([&["agent", "--host", "10.0.0.1"], args].concat())
                .map(|cli| cli.run.into_config())
                .map_err(|e| e.to_string())
        };
        assert!(matches!(
            parse(&["--interval", "100ms"]),
            Ok(Err(lanmon::config::ConfigError::AgentInterval { .. }))
        ));
        let config = parse(&["--interval", "1s", "--name", "a", "--port", "9"]);
        let Ok(Ok(config)) = config else {
            panic!("{config:?}");
        };
        assert_eq!(config.interval, Duration::from_secs(1));
        assert_eq!(config.name, "a");
        assert_eq!(config.id, lanmon::agent::default_agent_id("a"));
        assert_eq!(
            config.target,
            Target::Host {
                host: "10.0.0.1".into(),
                port: 9
            }
        );
    }
}
