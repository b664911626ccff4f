//! Reporter actor: shows every agent's latest metrics every report interval.
//!
//! Asks its snapshot source (a `Recipient`: the Registry in the server) for a [`Snapshot`]'s
//! parts ([`GetSnapshotParts`]) right away and then every interval, builds the snapshot
//! itself, and writes it to its output (stdout in the binary):
//! - [`ReportFormat::Text`] on a terminal: redraws in place, like `top`;
//! - [`ReportFormat::Text`] when piped: plain blocks, one per report;
//! - [`ReportFormat::Json`]: one JSON snapshot per line (see [`crate::snapshot`]).
//!
//! [`Flush`] asks for one more report at once (the server's last, at shutdown). With alerts on
//! ([`Reporter::with_alerts`]) the text report has an `ALERTS:` line under its header while
//! any alert is pending or firing, read from the alerts' board.
//!
//! The Reporter runs on its own thread (Arbiter), and builds the snapshot there from the
//! Registry's cheap copy, so sorting and rendering a large fleet never delays the actors that
//! ingest samples; that thread runs at a lower priority (Linux `nice`), so that on a busy
//! machine the report waits for CPU rather than the acks. Rendering is a pure function
//! ([`render_text_with`]) so it is tested without an actor. The text report shows a fleet summary and up to `--top` agents,
//! ordered by `--sort` and narrowed by `--filter`; the JSON snapshot always has every agent.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;

use crate::server::registry::GetSnapshotParts;
use crate::snapshot::{AgentView, Snapshot, Status, StoreStatus, StoreView};
use crate::text::for_terminal;
use crate::util::{human_age, human_bytes};

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReportFormat {
    /// A table for people.
    #[default]
    Text,
    /// One JSON snapshot per line, for scripts.
    Json,
    /// No report.
    Off,
}

impl ReportFormat {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [Self; 3] = [Self::Text, Self::Json, Self::Off];

    /// The format's name on the command line (`--report-format`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
            Self::Off => "off",
        }
    }
}

impl std::fmt::Display for ReportFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ReportFormat {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        UnknownName::find(s, &Self::ALL, |f| f.name())
    }
}

/// A name that is none of an option's values (`--report-format`, `--sort`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{got}` is not one of: {}", expected.join(", "))]
pub struct UnknownName {
    pub got: String,
    pub expected: Vec<&'static str>,
}

impl UnknownName {
    /// The value of `all` whose `name` is `s`.
    fn find<T: Copy>(s: &str, all: &[T], name: fn(T) -> &'static str) -> Result<T, Self> {
        all.iter()
            .copied()
            .find(|v| name(*v) == s)
            .ok_or_else(|| Self {
                got: s.to_string(),
                expected: all.iter().map(|v| name(*v)).collect(),
            })
    }
}

/// See the module documentation.
pub struct Reporter {
    /// Where snapshots come from: the Registry (or a probe in tests).
    source: Recipient<GetSnapshotParts>,
    interval: Duration,
    format: ReportFormat,
    /// Redraw in place (the output is a terminal).
    redraw: bool,
    text: TextOptions,
    out: Box<dyn Write + Send>,
    /// The alerts' board: a line of active alerts in the text report.
    alerts: Option<std::sync::Arc<crate::server::alerts::Board>>,
}

impl Reporter {
    pub fn new(
        source: Recipient<GetSnapshotParts>,
        interval: Duration,
        format: ReportFormat,
        redraw: bool,
        text: TextOptions,
        out: Box<dyn Write + Send>,
    ) -> Self {
        Self {
            source,
            interval,
            format,
            redraw,
            text,
            out,
            alerts: None,
        }
    }

    /// Adds the line of active alerts (from `board`) to the text report.
    pub fn with_alerts(
        mut self,
        board: Option<std::sync::Arc<crate::server::alerts::Board>>,
    ) -> Self {
        self.alerts = board;
        self
    }

    fn report(&mut self, snapshot: &Snapshot) {
        let written = match self.format {
            // Off from the start, or turned off after the output failed: write nothing.
            ReportFormat::Off => return,
            // Buffered: serde writes token by token, and stdout would take its lock for each
            // (and make a system call per KiB) — most of the cost of a 10,000-agent report.
            ReportFormat::Json => {
                let mut out = std::io::BufWriter::with_capacity(JSON_BUFFER, &mut self.out);
                serde_json::to_writer(&mut out, snapshot)
                    .map_err(std::io::Error::from)
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.flush())
            }
            ReportFormat::Text => {
                let mut text = String::new();
                if self.redraw {
                    // Home the cursor and clear the screen, then draw: a `top`-like view.
                    text.push_str("\x1b[H\x1b[2J");
                }
                let mut report = render_text_with(snapshot, &self.text);
                if let Some(line) = self.alerts.as_ref().and_then(|b| b.report_line()) {
                    // Under the header line, where it is seen first.
                    let at = report.find('\n').map_or(report.len(), |i| i + 1);
                    report.insert_str(at, &format!("{line}\n"));
                }
                text.push_str(&report);
                if !self.redraw {
                    text.push('\n');
                }
                self.out.write_all(text.as_bytes())
            }
        };
        if let Err(e) = written.and_then(|()| self.out.flush()) {
            // A closed stdout (e.g. `| head`) must not take the server down; stop reporting.
            tracing::warn!("report output failed ({e}); reporting stopped");
            self.format = ReportFormat::Off;
        }
    }
}

/// Write buffer of the JSON report (a 10,000-agent snapshot is ~6 MB).
const JSON_BUFFER: usize = 64 * 1024;

/// How much lower than the ingest threads the Reporter's thread runs (Linux `nice`): when the
/// machine is short of CPU, the report waits rather than the acks.
const REPORTER_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority by [`REPORTER_NICE`] (Linux: per thread).
#[cfg(target_os = "linux")]
fn lower_thread_priority() {
    // SAFETY: two system calls about the calling thread; no memory is passed.
    #[allow(unsafe_code)]
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        libc::setpriority(libc::PRIO_PROCESS as _, tid as libc::id_t, REPORTER_NICE)
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        tracing::debug!("could not lower the reporter thread's priority: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_thread_priority() {}

/// Report once more, now (used at shutdown so the last report shows agents going offline).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for Reporter {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Flush, _: &mut Self::Context) -> Self::Result {
        Box::pin(
            self.source
                .send(GetSnapshotParts)
                .into_actor(self)
                .map(|res, this, _| {
                    if let Ok(parts) = res {
                        this.report(&parts.into_snapshot());
                    }
                }),
        )
    }
}

impl Actor for Reporter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.format == ReportFormat::Off {
            return;
        }
        lower_thread_priority();
        ctx.run_interval_at(actix::clock::Instant::now(), self.interval, |this, ctx| {
            let fut = this
                .source
                .send(GetSnapshotParts)
                .into_actor(this)
                .map(|res, this, _| match res {
                    Ok(parts) => this.report(&parts.into_snapshot()),
                    Err(e) => tracing::warn!("no snapshot from the registry: {e}"),
                });
            // `wait` keeps reports in order and never overlapping.
            ctx.wait(fut);
        });
    }
}

/// Why an agent is offline, as a line suffix (empty otherwise).
fn reason_suffix(a: &AgentView) -> String {
    match (&a.status, &a.offline_reason) {
        (Status::Offline, Some(reason)) => format!("  ({})", for_terminal(reason)),
        _ => String::new(),
    }
}

/// Bytes per second in at most five characters: `512`, `1.5K`, `340K`, `12M`, `1.2G` (binary
/// multiples, like the memory column).
fn short_rate(bytes_per_s: f64) -> String {
    const UNITS: [&str; 5] = ["", "K", "M", "G", "T"];
    let mut v = bytes_per_s.max(0.0);
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0}")
    } else if v < 10.0 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{v:.0}{}", UNITS[unit])
    }
}

/// Order of the agents in the text report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    /// By name (then id).
    #[default]
    Name,
    /// Busiest CPU first.
    Cpu,
    /// Most memory used first.
    Mem,
    /// Offline first, then stale, then live; by name within.
    Status,
    /// Longest silent first.
    LastSeen,
}

impl SortBy {
    /// Every order, in the order `--help` lists them.
    pub const ALL: [Self; 5] = [
        Self::Name,
        Self::Cpu,
        Self::Mem,
        Self::Status,
        Self::LastSeen,
    ];

    /// The order's name on the command line (`--sort`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Cpu => "cpu",
            Self::Mem => "mem",
            Self::Status => "status",
            Self::LastSeen => "last-seen",
        }
    }
}

impl std::fmt::Display for SortBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SortBy {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        UnknownName::find(s, &Self::ALL, |o| o.name())
    }
}

/// What the text report shows: which agents, in which order, how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextOptions {
    pub sort: SortBy,
    /// At most this many agent lines (0: all).
    pub top: usize,
    /// Only agents whose name, host name or IP contains this (case-insensitive).
    pub filter: Option<String>,
}

impl TextOptions {
    /// Agent lines in the text report unless `--top` says otherwise.
    pub const DEFAULT_TOP: usize = 50;
}

impl Default for TextOptions {
    fn default() -> Self {
        Self {
            sort: SortBy::Name,
            top: Self::DEFAULT_TOP,
            filter: None,
        }
    }
}

fn cpu_of(a: &AgentView) -> f32 {
    a.cpu.as_ref().map_or(-1.0, |c| c.total)
}

fn sort_agents(agents: &mut [&AgentView], by: SortBy) {
    let rank = |s: Status| match s {
        Status::Offline => 0,
        Status::Stale => 1,
        Status::Live => 2,
    };
    match by {
        SortBy::Name => {}
        SortBy::Cpu => agents.sort_by(|a, b| cpu_of(b).total_cmp(&cpu_of(a))),
        SortBy::Mem => agents.sort_by_key(|a| std::cmp::Reverse(a.memory.map_or(0, |m| m.used))),
        SortBy::Status => agents.sort_by_key(|a| rank(a.status)),
        SortBy::LastSeen => {
            agents.sort_by_key(|a| std::cmp::Reverse(a.last_seen_ms.unwrap_or(u64::MAX)))
        }
    }
}

/// The fleet in one line: mean CPU of live agents, memory used over total across them.
fn fleet_line(s: &Snapshot) -> String {
    let live: Vec<&AgentView> = s
        .agents
        .iter()
        .filter(|a| a.status == Status::Live)
        .collect();
    let cpus: Vec<f32> = live
        .iter()
        .filter_map(|a| a.cpu.as_ref().map(|c| c.total))
        .collect();
    let cpu = if cpus.is_empty() {
        "-".to_string()
    } else {
        format!("{:.1}%", cpus.iter().sum::<f32>() / cpus.len() as f32)
    };
    let (used, total) = live
        .iter()
        .filter_map(|a| a.memory)
        .fold((0u64, 0u64), |(u, t), m| {
            (u.saturating_add(m.used), t.saturating_add(m.total))
        });
    format!(
        "  fleet: CPU {cpu} (mean of live agents), memory {} / {}",
        human_bytes(used),
        human_bytes(total)
    )
}

/// A warning line while the durable history cannot write (nothing while it can).
fn store_line(store: &StoreView) -> Option<String> {
    if store.status != StoreStatus::Failing {
        return None;
    }
    let since = store
        .failing_since_ms
        .map(|t| human_age(crate::util::now_ms().saturating_sub(t)))
        .unwrap_or_else(|| "-".into());
    Some(format!(
        "  STORE FAILING for {since}: {} ({} write(s) queued; nothing is acknowledged, agents keep their samples)",
        for_terminal(store.error.as_deref().unwrap_or("unknown error")),
        store.queued_writes
    ))
}

/// The text report with default options: every agent (up to [`TextOptions::DEFAULT_TOP`]) by
/// name.
pub fn render_text(s: &Snapshot) -> String {
    render_text_with(s, &TextOptions::default())
}

/// The dashboard's address for people: an unspecified bind address (`0.0.0.0`) becomes
/// `localhost`, which works on the server's own machine.
fn dashboard_url(http: SocketAddr) -> String {
    if http.ip().is_unspecified() {
        format!("http://localhost:{}/", http.port())
    } else {
        format!("http://{http}/")
    }
}

/// The text report: a header line, a fleet summary, then one line per selected agent.
pub fn render_text_with(s: &Snapshot, opts: &TextOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lanmon {} on {} ({}): {} agents, {} live, {} stale, {} offline",
        for_terminal(&s.server.version),
        for_terminal(&s.server.listen),
        for_terminal(&s.server.name),
        s.summary.agents,
        s.summary.live,
        s.summary.stale,
        s.summary.offline,
    );
    if let Some(http) = s
        .server
        .http
        .as_deref()
        .and_then(|a| a.parse::<SocketAddr>().ok())
    {
        let _ = writeln!(out, "  dashboard: {}", dashboard_url(http));
    }
    if let Some(line) = s.store.as_ref().and_then(store_line) {
        let _ = writeln!(out, "{line}");
    }
    if s.agents.is_empty() {
        let _ = writeln!(
            out,
            "  no agents yet: run the `agent … --join …` line of the banner (or `agent --host <this machine's IP>`) on each machine"
        );
        return out;
    }
    let _ = writeln!(out, "{}", fleet_line(s));
    let needle = opts.filter.as_ref().map(|f| f.to_lowercase());
    let mut agents: Vec<&AgentView> = s
        .agents
        .iter()
        .filter(|a| {
            needle.as_ref().is_none_or(|n| {
                [&a.name, &a.hostname, &a.ip]
                    .iter()
                    .any(|f| f.to_lowercase().contains(n))
            })
        })
        .collect();
    let matched = agents.len();
    sort_agents(&mut agents, opts.sort);
    if opts.top > 0 {
        agents.truncate(opts.top);
    }
    if agents.is_empty() {
        let _ = writeln!(out, "  no agent matches the filter");
        return out;
    }
    // Every string an agent controls goes through `for_terminal` before it is printed.
    let names: Vec<String> = agents
        .iter()
        .map(|a| for_terminal(&a.name).into_owned())
        .collect();
    let ips: Vec<String> = agents
        .iter()
        .map(|a| for_terminal(&a.ip).into_owned())
        .collect();
    let name_w = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 24);
    let ip_w = ips.iter().map(|ip| ip.len()).max().unwrap_or(2).max(2);
    let _ = writeln!(
        out,
        "  {:<name_w$}  {:<ip_w$}  {:<7}  {:>6}  {:>5}  {:<38}  {:>4}  {:>11}  {:<10}  CORES %",
        "NAME",
        "IP",
        "STATUS",
        "CPU",
        "LOAD",
        "MEMORY USED / TOTAL (FREE)",
        "DISK",
        "NET RX/TX",
        "LAST"
    );
    for ((a, name), ip) in agents.iter().zip(&names).zip(&ips) {
        let name: String = name.chars().take(name_w).collect();
        let cpu = a
            .cpu
            .as_ref()
            .map(|c| format!("{:.1}%", c.total))
            .unwrap_or_else(|| "-".into());
        let mem = a
            .memory
            .map(|m| {
                format!(
                    "{} / {} ({} free)",
                    human_bytes(m.used),
                    human_bytes(m.total),
                    human_bytes(m.free)
                )
            })
            .unwrap_or_else(|| "-".into());
        let cores = a
            .cpu
            .as_ref()
            .map(|c| {
                c.per_core
                    .iter()
                    .map(|v| format!("{v:.0}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|| "-".into());
        let age = a
            .last_seen_ms
            .map(|ms| format!("{} ago", human_age(ms)))
            .unwrap_or_else(|| "never".into());
        let load = a
            .host
            .load
            .map(|l| format!("{:.2}", l.load1))
            .unwrap_or_else(|| "-".into());
        let disk = a
            .host
            .fullest_filesystem()
            .map(|(_, pct)| format!("{pct:.0}%"))
            .unwrap_or_else(|| "-".into());
        let net = a
            .host
            .net_rates()
            .map(|(rx, tx)| format!("{}/{}", short_rate(rx), short_rate(tx)))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "  {name:<name_w$}  {ip:<ip_w$}  {:<7}  {cpu:>6}  {load:>5}  {mem:<38}  {disk:>4}  {net:>11}  {age:<10}  [{cores}]{}",
            a.status.as_str(),
            reason_suffix(a),
        );
    }
    if matched > agents.len() {
        let _ = writeln!(
            out,
            "  … and {} more (see --top, --sort, --filter)",
            matched - agents.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Cpu;
    use crate::snapshot::fixtures::{agent, snapshot};

    /// Every report format and sort order parses from the name it prints (the names
    /// `--report-format` and `--sort` accept), and an unknown name is refused with the list of
    /// known ones.
    #[test]
    fn option_names_round_trip() {
        let formats: Vec<&str> = ReportFormat::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(formats, ["text", "json", "off"]);
        for f in ReportFormat::ALL {
            assert_eq!(f.to_string().parse::<ReportFormat>(), Ok(f));
        }
        let sorts: Vec<&str> = SortBy::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(sorts, ["name", "cpu", "mem", "status", "last-seen"]);
        for o in SortBy::ALL {
            assert_eq!(o.to_string().parse::<SortBy>(), Ok(o));
        }
        let err = "Name".parse::<SortBy>().map_err(|e| e.to_string());
        assert_eq!(
            err,
            Err("`Name` is not one of: name, cpu, mem, status, last-seen".into())
        );
        assert!("".parse::<ReportFormat>().is_err());
        assert_eq!(TextOptions::default().top, 50);
    }

    /// Proves: with HTTP on, the text report says where the dashboard is (0.0.0.0 shown as
    /// localhost); without HTTP it says nothing about it.
    #[test]
    fn text_report_names_the_dashboard() {
        let mut s = snapshot(vec![]);
        assert!(!render_text_with(&s, &TextOptions::default()).contains("dashboard"));
        s.server.http = Some("127.0.0.1:9001".into());
        assert!(
            render_text_with(&s, &TextOptions::default())
                .contains("\n  dashboard: http://127.0.0.1:9001/\n")
        );
        s.server.http = Some("0.0.0.0:8081".into());
        assert!(
            render_text_with(&s, &TextOptions::default())
                .contains("dashboard: http://localhost:8081/")
        );
    }

    #[test]
    fn text_report_shows_every_agent_with_units() {
        let text = render_text(&snapshot(vec![
            agent("web-1", Status::Live),
            agent("db-1", Status::Offline),
        ]));
        assert!(text.starts_with("lanmon 0.1.0 on 127.0.0.1:8080 (lab): 2 agents, 1 live"));
        let web = text
            .lines()
            .find(|l| l.contains("web-1"))
            .unwrap_or_default();
        assert!(web.contains("live") && web.contains("12.3%"), "{web}");
        assert!(web.contains("3.0 GiB / 8.0 GiB (1.0 GiB free)"), "{web}");
        assert!(web.contains("[10 15]") && web.contains("1.5s ago"), "{web}");
        let db = text
            .lines()
            .find(|l| l.contains("db-1"))
            .unwrap_or_default();
        assert!(db.contains(" offline ") && db.ends_with("  (bye)"), "{db}");
    }

    #[test]
    fn top_sort_and_filter_select_agents() {
        let mut busy = agent("busy", Status::Live);
        busy.cpu = Some(Cpu {
            total: 90.0,
            per_core: vec![90.0, 90.0],
        });
        busy.ip = "10.0.0.9".into();
        let snap = snapshot(vec![
            agent("idle-a", Status::Live),
            busy,
            agent("idle-b", Status::Live),
        ]);
        let opts = TextOptions {
            sort: SortBy::Cpu,
            top: 1,
            filter: None,
        };
        let text = render_text_with(&snap, &opts);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("  fleet: CPU 38.2%"), "{text}");
        assert!(lines[3].contains("busy"), "{text}");
        assert!(
            !text.contains("idle-a") && text.contains("… and 2 more"),
            "{text}"
        );
        let opts = TextOptions {
            filter: Some("10.0.0".into()),
            ..TextOptions::default()
        };
        let text = render_text_with(&snap, &opts);
        assert!(text.contains("busy") && !text.contains("idle"), "{text}");
        let opts = TextOptions {
            filter: Some("nothing-like-this".into()),
            ..TextOptions::default()
        };
        assert!(render_text_with(&snap, &opts).contains("no agent matches"));
    }

    /// Proves: no string an agent controls reaches the terminal with a control or a hidden
    /// format character in it (ESC/OSC sequences, CR, bidi overrides are shown escaped).
    #[test]
    fn text_report_escapes_agent_controlled_text() {
        let mut evil = agent("evil\u{202e}lave", Status::Offline);
        evil.offline_reason =
            Some("error: bad frame: unknown variant `\x1b]0;pwned\x07\r\x1b[2J`".into());
        evil.ip = "10.0.0.1\r".into();
        let text = render_text(&snapshot(vec![evil]));
        assert!(
            !text.chars().any(|c| c != '\n' && crate::text::is_unsafe(c)),
            "{text:?}"
        );
        assert!(text.contains("evil\\u{202e}lave"), "{text}");
        assert!(
            text.contains("`\\u{1b}]0;pwned\\u{7}\\r\\u{1b}[2J`"),
            "{text}"
        );
    }

    /// Proves: the load, the fullest filesystem's use (as `df` counts it) and the network
    /// rates over every interface appear in their columns; an agent that sends none of them
    /// shows dashes.
    #[test]
    fn whole_machine_columns() {
        use crate::protocol::{Filesystem, Load, NetInterface};
        use crate::snapshot::NetView;
        let fs = |mount: &str, size: u64, avail: u64| Filesystem {
            mount: mount.into(),
            fs_type: "ext4".into(),
            device: "/dev/sda1".into(),
            size_bytes: size,
            used_bytes: size - avail,
            avail_bytes: avail,
            inodes: 0,
            inodes_used: 0,
        };
        let nic = |name: &str, rx: f64, tx: f64| NetView {
            counters: NetInterface {
                interface: name.into(),
                rx_bytes: 0,
                tx_bytes: 0,
                rx_packets: 0,
                tx_packets: 0,
                rx_errs: 0,
                tx_errs: 0,
                rx_drops: 0,
                tx_drops: 0,
            },
            rx_bytes_per_s: Some(rx),
            tx_bytes_per_s: Some(tx),
            rx_packets_per_s: None,
            tx_packets_per_s: None,
            errs_per_s: None,
            drops_per_s: None,
        };
        let mut busy = agent("busy", Status::Live);
        busy.host.load = Some(Load {
            load1: 3.5,
            load5: 1.0,
            load15: 0.5,
            running: None,
            threads: None,
            procs: None,
        });
        busy.host.filesystems = Some(vec![fs("/", 1000, 450), fs("/home", 1000, 80)]);
        busy.host.net = Some(vec![
            nic("eth0", 1_200_000.0, 300.0),
            nic("wlan0", 48_576.0, 0.0),
        ]);
        let text = render_text(&snapshot(vec![busy, agent("plain", Status::Live)]));
        let header = text
            .lines()
            .find(|l| l.contains("NAME"))
            .unwrap_or_default();
        assert!(header.contains("LOAD") && header.contains("DISK") && header.contains("NET RX/TX"));
        let line = text
            .lines()
            .find(|l| l.contains("busy"))
            .unwrap_or_default();
        assert!(line.contains(" 3.50 "), "{line}");
        assert!(line.contains(" 92% "), "the fullest is /home: {line}");
        assert!(line.contains(" 1.2M/300 "), "{line}");
        let plain = text
            .lines()
            .find(|l| l.contains("plain"))
            .unwrap_or_default();
        let dashes = plain.split_whitespace().filter(|w| *w == "-").count();
        assert_eq!(dashes, 3, "load, disk and net unknown: {plain}");
        assert_eq!(short_rate(999.0), "999");
        assert_eq!(short_rate(1536.0), "1.5K");
        assert_eq!(short_rate(340.0 * 1024.0), "340K");
        assert_eq!(short_rate(12.0 * 1024.0 * 1024.0), "12M");
    }

    #[test]
    fn empty_report_says_what_to_do() {
        let text = render_text(&snapshot(vec![]));
        assert!(text.contains("no agents yet"));
    }
}
