//! `agent`: samples this machine (CPU, memory, load, swap, filesystems, disk and network I/O,
//! temperatures, optionally the top processes) and streams the samples to a lanmon server.

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand};
use lanmon::agent::{AgentConfig, DEFAULT_BUFFER, Target, default_agent_id};
use lanmon::config::{DEFAULT_INTERVAL, DEFAULT_PORT};
use lanmon::discovery::DEFAULT_DISCOVERY_PORT;
use lanmon::metrics::{CollectConfig, Groups, Select, SystemSource};
use lanmon_bins::{LogLevel, init_logging, parse_duration, shutdown_signal};
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
    /// port, protocol version) and exit: 0 if one was heard, 1 if none.
    Discover(DiscoverArgs),
}

#[derive(Debug, Args)]
struct DiscoverArgs {
    /// How long to listen.
    #[arg(long, env = "LANMON_LISTEN_FOR", value_parser = parse_duration, default_value = "3s",
          value_name = "DURATION")]
    listen_for: Duration,

    /// UDP port the servers' beacons arrive on.
    #[arg(long, env = "LANMON_DISCOVERY_PORT", default_value_t = DEFAULT_DISCOVERY_PORT,
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
    #[arg(long, env = "LANMON_DISCOVERY_PORT", default_value_t = DEFAULT_DISCOVERY_PORT,
          value_name = "PORT")]
    discovery_port: u16,

    /// The server's TCP port (with --host; a discovered server says its own).
    #[arg(long, env = "LANMON_PORT", default_value_t = DEFAULT_PORT)]
    port: u16,

    /// How often to sample and send (200ms to 1h; e.g. 5s, 1s, 500ms).
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

const MIN_INTERVAL: Duration = Duration::from_millis(200);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Discover(args)) => {
            args.log.init();
            list_servers(args.discovery_port, args.listen_for)
        }
        None if cli.run.list => {
            cli.log.init();
            list_servers(cli.run.discovery_port, Duration::from_secs(3))
        }
        None => {
            cli.log.init();
            if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&cli.run.interval) {
                eprintln!(
                    "agent: --interval must be between {MIN_INTERVAL:?} (CPU usage cannot be measured faster) and {MAX_INTERVAL:?}"
                );
                return ExitCode::from(2);
            }
            run(cli.run).map(|()| ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("agent: {e:#}");
        ExitCode::FAILURE
    })
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
        println!("{:<24} {:<22} {:<8} ID", "NAME", "ADDRESS", "PROTOCOL");
        for s in &servers {
            println!(
                "{:<24} {:<22} {:<8} {}",
                s.beacon.server_name,
                s.addr.to_string(),
                format!("v{}", s.beacon.proto),
                s.beacon.server_id
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let collect = CollectConfig::from_flags(
        args.collect,
        args.no_collect,
        args.fs_types,
        args.disk_devices,
        args.net_interfaces,
        args.processes,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let source = SystemSource::with_config(&collect)
        .map_err(|e| anyhow::anyhow!("cannot read system metrics: {e}"))?;
    let name = args.name.unwrap_or_else(lanmon::util::host_name);
    let target = match args.host {
        Some(host) => Target::Host {
            host,
            port: args.port,
        },
        None => Target::Discover {
            port: args.discovery_port,
            server_name: args.server_name,
            timeout: args.discover_timeout,
        },
    };
    let config = AgentConfig {
        target,
        id: args.id.unwrap_or_else(|| default_agent_id(&name)),
        name,
        interval: args.interval,
        buffer: args.buffer,
    };
    runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            let signal = shutdown_signal().await;
            tracing::info!("{signal} received: saying bye to the server");
            trigger.cancel();
        });
        #[cfg(target_os = "linux")]
        match timerfd::TimerFdTicker::new(config.interval) {
            Ok(ticker) => {
                return lanmon::agent::run_with_ticker(config, source, ticker, shutdown).await;
            }
            Err(e) => tracing::warn!("no timerfd ({e}): pacing samples with a tokio interval"),
        }
        lanmon::agent::run(config, source, shutdown).await
    })?;
    Ok(())
}

/// A timerfd ticker: the kernel wakes the agent once per tick, where a tokio interval of
/// seconds costs three or four wakeups (see `lanmon::agent::ticker`). At the default 5 s
/// interval this is most of the agent's idle CPU.
#[cfg(target_os = "linux")]
mod timerfd {
    use std::fs::File;
    use std::io::{self, Read};
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::time::Duration;

    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    /// Fires at once, then every period (a periodic `CLOCK_MONOTONIC` timerfd). Missed ticks
    /// collapse into one, like the interval's `Delay` behaviour. Should reading the timer
    /// ever fail, it carries on with a tokio interval.
    pub struct TimerFdTicker {
        fd: AsyncFd<File>,
        period: Duration,
        fallback: Option<tokio::time::Interval>,
    }

    impl TimerFdTicker {
        /// Arms the timer; needs to run inside the tokio runtime (it registers the fd).
        pub fn new(period: Duration) -> io::Result<Self> {
            // SAFETY: timerfd_create takes no pointers; on success it returns a new descriptor
            // that nothing else owns, which OwnedFd then closes exactly once.
            #[allow(unsafe_code)]
            let raw = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a valid descriptor we just created and own (see above).
            #[allow(unsafe_code)]
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let every = timespec(period);
            // The first expiry 1 ns from now (zero would disarm it): the first tick is at once.
            let spec = libc::itimerspec {
                it_interval: every,
                it_value: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 1,
                },
            };
            // SAFETY: `spec` lives for the call and the old value pointer may be null.
            #[allow(unsafe_code)]
            let rc = unsafe {
                libc::timerfd_settime(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    0,
                    &spec,
                    std::ptr::null_mut(),
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: the File owns the descriptor, which stays open and the same for as long
            // as the AsyncFd holds the File.
            #[allow(unsafe_code)]
            let fd = unsafe { AsyncFd::register_with_interest(File::from(fd), Interest::READABLE) }
                .map_err(io::Error::from)?;
            Ok(Self {
                fd,
                period,
                fallback: None,
            })
        }

        async fn next(&mut self) -> io::Result<()> {
            let mut expirations = [0u8; 8];
            loop {
                let mut ready = self.fd.readable_mut().await?;
                // Reading the 8-byte expiration count re-arms readiness; WouldBlock (a
                // spurious wakeup) clears it and waits again.
                match ready.try_io(|fd| fd.get_mut().read(&mut expirations)) {
                    Ok(result) => {
                        // One read takes every expiry, so the timer is not readable until the
                        // next one: saying so spares the next call a read that would block.
                        ready.clear_ready();
                        return result.map(drop);
                    }
                    Err(_would_block) => continue,
                }
            }
        }
    }

    impl lanmon::agent::Ticker for TimerFdTicker {
        async fn tick(&mut self) {
            if let Some(interval) = self.fallback.as_mut() {
                interval.tick().await;
            } else if let Err(e) = self.next().await {
                // Not expected from a valid timerfd: never spin on it.
                tracing::warn!("timerfd read failed ({e}): pacing samples with a tokio interval");
                self.fallback = Some(lanmon::agent::ticker::interval(self.period));
            }
        }
    }

    fn timespec(d: Duration) -> libc::timespec {
        libc::timespec {
            tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
            // c_long is 32 bits on some targets; nanoseconds always fit.
            #[allow(clippy::unnecessary_fallible_conversions)]
            tv_nsec: libc::c_long::try_from(d.subsec_nanos()).unwrap_or(0),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::{Duration, Instant};

    use lanmon::agent::Ticker;

    use super::timerfd::TimerFdTicker;

    /// The timerfd ticker fires at once, then once per period and never sooner: four ticks
    /// of a 100 ms timer take at least 300 ms (the kernel never fires a timer early).
    #[test]
    fn timerfd_ticks_at_once_then_every_period() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let period = Duration::from_millis(100);
            let mut ticker = TimerFdTicker::new(period).unwrap();
            let start = Instant::now();
            let deadline = Duration::from_secs(5);
            tokio::time::timeout(deadline, ticker.tick()).await.unwrap();
            assert!(
                start.elapsed() < period / 2,
                "first tick took {:?}",
                start.elapsed()
            );
            for _ in 0..3 {
                tokio::time::timeout(deadline, ticker.tick()).await.unwrap();
            }
            let took = start.elapsed();
            assert!(
                took >= period * 3 - Duration::from_millis(5),
                "4 ticks in {took:?}"
            );
        });
    }

    /// A tick whose future is dropped before it completes (it lost a `select!`) is not lost:
    /// the next call still completes by the next expiry.
    #[test]
    fn timerfd_tick_survives_cancellation() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let period = Duration::from_millis(50);
            let mut ticker = TimerFdTicker::new(period).unwrap();
            ticker.tick().await; // the immediate one
            // Normally dropped unfinished (the next expiry is 50 ms away); on a machine too
            // busy to run us for 50 ms it may complete instead, which is fine too.
            let _ = tokio::time::timeout(Duration::from_millis(1), ticker.tick()).await;
            tokio::time::timeout(Duration::from_secs(5), ticker.tick())
                .await
                .unwrap();
        });
    }
}
