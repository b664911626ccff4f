//! Prometheus text exposition (format 0.0.4) of a [`Snapshot`], served at `GET /metrics`.
//!
//! One identity label per agent (`agent`, its stable id); the human names live in
//! `lanmon_agent_info`. Gauges in base units (ratios 0–1, bytes, seconds), no explicit
//! timestamps. An offline agent keeps `lanmon_agent_up 0`, its info and its last-sample time,
//! and drops its CPU and memory series (they would be stale values). Per-core series can be
//! turned off for very large fleets.
//!
//! What one agent adds to an exposition is bounded, whatever it announces: per-core series
//! for at most [`MAX_CORE_SERIES`] cores, and label values of at most [`MAX_LABEL_CHARS`]
//! characters ([`label`]: a longer one is cut and ends in a hash of the whole, so that two
//! long agent ids still make two series). About 30 KiB per agent at most, instead of the
//! 1.2 MiB that 4,096 cores and a 256-byte id made.
//!
//! The whole-machine families follow node_exporter's names with `lanmon_` for `node_`
//! (`lanmon_load1`, `lanmon_filesystem_avail_bytes{mountpoint,fstype,device}`,
//! `lanmon_network_receive_bytes_total{device}`, `lanmon_disk_read_bytes_total{device}`,
//! `lanmon_hwmon_temp_celsius{sensor}`, …), so existing dashboards and alerts adapt by a
//! rename; the disk and network counters are exposed as counters (Prometheus takes care of
//! resets), and a family appears only once some agent sends it. Top processes are not
//! exported (their pids would make unbounded series).
//!
//! **Series per agent**: at most [`MAX_SERIES_PER_AGENT`] plus one per core with per-core
//! series on: 25 fixed series, 5 per filesystem (≤ 64), 5 per disk (≤ 64), 8 per network
//! interface (≤ 64) and 1 per sensor (≤ 64), the protocol's bounds. A typical host (two
//! filesystems, one disk, one interface, a few sensors) has about 50.

use std::fmt::Write as _;

use crate::protocol::{MAX_DISKS, MAX_FILESYSTEMS, MAX_INTERFACES, MAX_SENSORS};
use crate::snapshot::{AgentView, Snapshot, Status};

/// Most series one agent adds to the exposition, besides its per-core series.
pub const MAX_SERIES_PER_AGENT: usize =
    25 + 5 * MAX_FILESYSTEMS + 5 * MAX_DISKS + 8 * MAX_INTERFACES + MAX_SENSORS;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Per-core series exported per agent: the first this many cores (an agent may announce up
/// to `--max-cores`, 4,096 by default; each core is a line of the exposition).
pub const MAX_CORE_SERIES: usize = 256;
/// Longest label value exported, in characters; a longer one is cut to
/// [`LABEL_KEEP_CHARS`] characters, `~` and 16 hex digits of a hash of the whole value.
pub const MAX_LABEL_CHARS: usize = 64;
const LABEL_KEEP_CHARS: usize = MAX_LABEL_CHARS - 17;

/// A label value as exported: at most [`MAX_LABEL_CHARS`] characters (see there), escaped
/// (backslash, double quote and newline).
fn label(value: &str) -> String {
    let cut;
    let value = if value.chars().nth(MAX_LABEL_CHARS).is_some() {
        let keep: String = value.chars().take(LABEL_KEEP_CHARS).collect();
        cut = format!("{keep}~{}", crate::util::stable_id(&[value]));
        cut.as_str()
    } else {
        value
    };
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A float as Prometheus writes it (`NaN` and infinities spelled its way).
fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", num(value));
    }
}

/// Renders the exposition. `per_core` adds `lanmon_cpu_core_usage_ratio` series.
pub fn render(s: &Snapshot, per_core: bool) -> String {
    let mut out = String::with_capacity(256 + s.agents.len() * if per_core { 900 } else { 600 });
    let mut f = Family { out: &mut out };

    f.header(
        "lanmon_agents",
        "gauge",
        "Agents known to the server, by status.",
    );
    for (status, n) in [
        ("live", s.summary.live),
        ("stale", s.summary.stale),
        ("offline", s.summary.offline),
    ] {
        f.sample("lanmon_agents", &[("status", status)], n as f64);
    }

    f.header(
        "lanmon_agent_info",
        "gauge",
        "Agent identity and descriptive labels (always 1).",
    );
    for a in &s.agents {
        let cores = a.cores.to_string();
        let mut labels = vec![
            ("agent", a.id.as_str()),
            ("name", &a.name),
            ("hostname", &a.hostname),
            ("ip", &a.ip),
            ("os", &a.os),
            ("version", &a.agent_version),
            ("cores", &cores),
        ];
        // `approved` (its enrolled key), `unauthenticated` (protocol 1, --auth optional) or
        // `revoked` (its key revoked since).
        if let Some(auth) = a.auth {
            labels.push(("auth", auth.as_str()));
        }
        f.sample("lanmon_agent_info", &labels, 1.0);
    }

    if s.server
        .auth
        .is_some_and(|m| m != crate::config::AuthMode::Off)
    {
        f.header(
            "lanmon_agents_pending",
            "gauge",
            "Agent keys waiting for the operator's approval (they send no samples).",
        );
        f.sample("lanmon_agents_pending", &[], s.pending.len() as f64);
    }

    f.header(
        "lanmon_agent_up",
        "gauge",
        "1 if the agent is connected (live or stale), 0 if offline.",
    );
    for a in &s.agents {
        let up = if a.status == Status::Offline {
            0.0
        } else {
            1.0
        };
        f.sample("lanmon_agent_up", &[("agent", &a.id)], up);
    }

    f.header(
        "lanmon_agent_last_sample_timestamp_seconds",
        "gauge",
        "When the agent took its latest sample (agent clock), seconds since the Unix epoch.",
    );
    for a in &s.agents {
        if let Some(ts) = a.last_sample_ts_ms {
            let secs = ts as f64 / 1000.0;
            f.sample(
                "lanmon_agent_last_sample_timestamp_seconds",
                &[("agent", &a.id)],
                secs,
            );
        }
    }

    let connected: Vec<_> = s
        .agents
        .iter()
        .filter(|a| a.status != Status::Offline)
        .collect();

    f.header(
        "lanmon_cpu_usage_ratio",
        "gauge",
        "CPU usage of the whole machine, 0 to 1.",
    );
    for a in &connected {
        if let Some(cpu) = &a.cpu {
            let v = f64::from(cpu.total) / 100.0;
            f.sample("lanmon_cpu_usage_ratio", &[("agent", &a.id)], v);
        }
    }

    if per_core {
        f.header(
            "lanmon_cpu_core_usage_ratio",
            "gauge",
            "CPU usage of one logical core, 0 to 1.",
        );
        for a in &connected {
            if let Some(cpu) = &a.cpu {
                for (i, v) in cpu.per_core.iter().take(MAX_CORE_SERIES).enumerate() {
                    let core = i.to_string();
                    let v = f64::from(*v) / 100.0;
                    f.sample(
                        "lanmon_cpu_core_usage_ratio",
                        &[("agent", &a.id), ("cpu", &core)],
                        v,
                    );
                }
            }
        }
    }

    type MemPart = fn(&crate::protocol::Memory) -> Option<u64>;
    let parts: [(&str, &str, MemPart); 4] = [
        ("lanmon_memory_total_bytes", "Total memory.", |m| {
            Some(m.total)
        }),
        (
            "lanmon_memory_used_bytes",
            "Memory in use by programs (total minus available).",
            |m| Some(m.used),
        ),
        (
            "lanmon_memory_free_bytes",
            "Memory holding nothing at all (not even cache).",
            |m| Some(m.free),
        ),
        (
            "lanmon_memory_available_bytes",
            "Memory that could be handed to programs.",
            |m| m.available,
        ),
    ];
    for (name, help, part) in parts {
        f.header(name, "gauge", help);
        for a in &connected {
            if let Some(v) = a.memory.as_ref().and_then(part) {
                f.sample(name, &[("agent", &a.id)], v as f64);
            }
        }
    }

    f.header(
        "lanmon_agent_samples_received_total",
        "counter",
        "Samples accepted from the agent's current run (resets when the agent restarts).",
    );
    for a in &s.agents {
        f.sample(
            "lanmon_agent_samples_received_total",
            &[("agent", &a.id)],
            a.received as f64,
        );
    }
    whole_machine(&mut f, &connected);
    out
}

/// The alerts' series (server without `--no-alerts`), appended to the exposition:
/// `lanmon_alerts{rule,severity}` (firing alerts, 0 for every enabled rule that has none) and
/// the notifications' counters.
pub fn render_alerts(
    firing: &[(&str, &str, usize)],
    stats: &crate::server::alerts::notify::StatsView,
) -> String {
    let mut out = String::with_capacity(256 + firing.len() * 64);
    let mut f = Family { out: &mut out };
    f.header(
        "lanmon_alerts",
        "gauge",
        "Firing alerts, by rule and severity.",
    );
    for (rule, severity, n) in firing {
        f.sample(
            "lanmon_alerts",
            &[("rule", rule), ("severity", severity)],
            *n as f64,
        );
    }
    f.header(
        "lanmon_alert_notifications_total",
        "counter",
        "Alert notifications per target: sent, failed (given up after retries), dropped (queue full).",
    );
    for (result, n) in [
        ("sent", stats.sent),
        ("failed", stats.failed),
        ("dropped", stats.dropped),
    ] {
        f.sample(
            "lanmon_alert_notifications_total",
            &[("result", result)],
            n as f64,
        );
    }
    f.header(
        "lanmon_alert_notifications_queued",
        "gauge",
        "Alert notifications waiting to be delivered.",
    );
    f.sample(
        "lanmon_alert_notifications_queued",
        &[],
        stats.queued as f64,
    );
    out
}

/// One series of a family: its labels (after `agent`) and value.
type Series<'a> = Vec<(Vec<(&'static str, &'a str)>, f64)>;

impl Family<'_> {
    /// A family over `agents`: `each` gives an agent's series; the header only if any.
    fn family<'a>(
        &mut self,
        agents: &[&'a AgentView],
        name: &str,
        kind: &str,
        help: &str,
        each: impl Fn(&'a AgentView) -> Series<'a>,
    ) {
        let mut header = false;
        for a in agents {
            for (labels, value) in each(a) {
                if !header {
                    self.header(name, kind, help);
                    header = true;
                }
                let mut all = vec![("agent", a.id.as_str())];
                all.extend(labels);
                self.sample(name, &all, value);
            }
        }
    }

    /// A family of one series per agent.
    fn scalar<'a>(
        &mut self,
        agents: &[&'a AgentView],
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&'a AgentView) -> Option<f64>,
    ) {
        self.family(agents, name, kind, help, |a| {
            value(a).map(|v| (Vec::new(), v)).into_iter().collect()
        });
    }
}

/// The whole-machine families (see the module docs) of the connected agents.
#[allow(clippy::cast_precision_loss)] // byte and operation counts exposed as floats
fn whole_machine(f: &mut Family<'_>, agents: &[&AgentView]) {
    for (name, help, pick) in [
        ("lanmon_load1", "1-minute load average.", 1),
        ("lanmon_load5", "5-minute load average.", 5),
        ("lanmon_load15", "15-minute load average.", 15),
    ] {
        f.scalar(agents, name, "gauge", help, |a| {
            let l = a.host.load?;
            Some(f64::from(match pick {
                1 => l.load1,
                5 => l.load5,
                _ => l.load15,
            }))
        });
    }
    f.scalar(
        agents,
        "lanmon_procs_running",
        "gauge",
        "Threads runnable.",
        |a| a.host.load?.running.map(f64::from),
    );
    f.scalar(
        agents,
        "lanmon_threads",
        "gauge",
        "Threads in total.",
        |a| a.host.load?.threads.map(f64::from),
    );
    f.scalar(
        agents,
        "lanmon_processes",
        "gauge",
        "Processes in total.",
        |a| a.host.load?.procs.map(f64::from),
    );
    f.scalar(
        agents,
        "lanmon_uptime_seconds",
        "gauge",
        "Seconds since the host booted.",
        |a| a.host.uptime_s.map(|s| s as f64),
    );
    f.family(
        agents,
        "lanmon_cpu_mode_ratio",
        "gauge",
        "Share of the machine's CPU time in a mode over the last interval, 0 to 1.",
        |a| {
            let Some(m) = a.host.cpu_modes else {
                return Vec::new();
            };
            [
                ("user", m.user_pct),
                ("system", m.system_pct),
                ("iowait", m.iowait_pct),
                ("steal", m.steal_pct),
            ]
            .into_iter()
            .map(|(mode, pct)| (vec![("mode", mode)], f64::from(pct) / 100.0))
            .collect()
        },
    );
    f.scalar(
        agents,
        "lanmon_memory_swap_total_bytes",
        "gauge",
        "Swap space.",
        |a| a.host.swap.map(|s| s.total_bytes as f64),
    );
    f.scalar(
        agents,
        "lanmon_memory_swap_used_bytes",
        "gauge",
        "Swap space in use.",
        |a| a.host.swap.map(|s| s.used_bytes as f64),
    );

    type FsPart = fn(&crate::protocol::Filesystem) -> u64;
    let fs_parts: [(&str, &str, FsPart); 5] = [
        ("lanmon_filesystem_size_bytes", "Filesystem size.", |f| {
            f.size_bytes
        }),
        (
            "lanmon_filesystem_free_bytes",
            "Filesystem free space (size minus used, reserved blocks included).",
            |f| f.size_bytes - f.used_bytes.min(f.size_bytes),
        ),
        (
            "lanmon_filesystem_avail_bytes",
            "Filesystem space available to unprivileged users.",
            |f| f.avail_bytes,
        ),
        ("lanmon_filesystem_files", "Filesystem inodes.", |f| {
            f.inodes
        }),
        (
            "lanmon_filesystem_files_free",
            "Filesystem inodes free.",
            |f| f.inodes - f.inodes_used.min(f.inodes),
        ),
    ];
    for (name, help, part) in fs_parts {
        f.family(agents, name, "gauge", help, |a| {
            a.host
                .filesystems
                .iter()
                .flatten()
                .map(|fs| {
                    let labels = vec![
                        ("device", fs.device.as_str()),
                        ("fstype", fs.fs_type.as_str()),
                        ("mountpoint", fs.mount.as_str()),
                    ];
                    (labels, part(fs) as f64)
                })
                .collect()
        });
    }

    type DiskPart = fn(&crate::protocol::Disk) -> f64;
    let disk_parts: [(&str, &str, DiskPart); 5] = [
        (
            "lanmon_disk_read_bytes_total",
            "Bytes read from the device.",
            |d| d.read_bytes as f64,
        ),
        (
            "lanmon_disk_written_bytes_total",
            "Bytes written to the device.",
            |d| d.written_bytes as f64,
        ),
        (
            "lanmon_disk_reads_completed_total",
            "Reads completed.",
            |d| d.reads as f64,
        ),
        (
            "lanmon_disk_writes_completed_total",
            "Writes completed.",
            |d| d.writes as f64,
        ),
        (
            "lanmon_disk_io_time_seconds_total",
            "Seconds the device had I/O in flight.",
            |d| d.io_ms as f64 / 1000.0,
        ),
    ];
    for (name, help, part) in disk_parts {
        f.family(agents, name, "counter", help, |a| {
            a.host
                .disks
                .iter()
                .flatten()
                .map(|d| {
                    let labels = vec![("device", d.counters.device.as_str())];
                    (labels, part(&d.counters))
                })
                .collect()
        });
    }

    type NetPart = fn(&crate::protocol::NetInterface) -> u64;
    let net_parts: [(&str, &str, NetPart); 8] = [
        (
            "lanmon_network_receive_bytes_total",
            "Bytes received.",
            |n| n.rx_bytes,
        ),
        ("lanmon_network_transmit_bytes_total", "Bytes sent.", |n| {
            n.tx_bytes
        }),
        (
            "lanmon_network_receive_packets_total",
            "Packets received.",
            |n| n.rx_packets,
        ),
        (
            "lanmon_network_transmit_packets_total",
            "Packets sent.",
            |n| n.tx_packets,
        ),
        (
            "lanmon_network_receive_errs_total",
            "Receive errors.",
            |n| n.rx_errs,
        ),
        ("lanmon_network_transmit_errs_total", "Send errors.", |n| {
            n.tx_errs
        }),
        (
            "lanmon_network_receive_drop_total",
            "Received packets dropped.",
            |n| n.rx_drops,
        ),
        (
            "lanmon_network_transmit_drop_total",
            "Packets to send dropped.",
            |n| n.tx_drops,
        ),
    ];
    for (name, help, part) in net_parts {
        f.family(agents, name, "counter", help, |a| {
            a.host
                .net
                .iter()
                .flatten()
                .map(|n| {
                    let labels = vec![("device", n.counters.interface.as_str())];
                    (labels, part(&n.counters) as f64)
                })
                .collect()
        });
    }

    f.family(
        agents,
        "lanmon_hwmon_temp_celsius",
        "gauge",
        "Temperature of a sensor (chip and label).",
        |a| {
            a.host
                .temperatures
                .iter()
                .flatten()
                .map(|t| (vec![("sensor", t.sensor.as_str())], f64::from(t.temp_c)))
                .collect()
        },
    );
    f.scalar(
        agents,
        "lanmon_agent_cpu_seconds_total",
        "counter",
        "CPU time (user + system) the agent has used since it started.",
        |a| {
            a.host
                .agent_cost
                .as_ref()
                .map(|c| c.counters.cpu_ms as f64 / 1000.0)
        },
    );
    f.scalar(
        agents,
        "lanmon_agent_resident_memory_bytes",
        "gauge",
        "The agent's resident memory.",
        |a| {
            a.host
                .agent_cost
                .as_ref()
                .map(|c| c.counters.rss_bytes as f64)
        },
    );
    f.scalar(
        agents,
        "lanmon_agent_clock_offset_seconds",
        "gauge",
        "How far the agent's clock is ahead of the server's (negative: behind).",
        |a| a.host.clock_offset_ms.map(|ms| ms as f64 / 1000.0),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Cpu, Memory};
    use crate::snapshot::AgentView;
    use crate::snapshot::fixtures::{agent, snapshot as snap};

    /// The shared test agent with round numbers and a name that needs escaping.
    fn view(id: &str, status: Status) -> AgentView {
        AgentView {
            id: id.into(),
            name: format!("na\"me\\{id}\n"),
            ip: "10.0.0.1".into(),
            offline_reason: None,
            cpu: Some(Cpu {
                total: 50.0,
                per_core: vec![25.0, 75.0],
            }),
            memory: Some(Memory {
                total: 1000,
                used: 250,
                free: 100,
                available: Some(750),
            }),
            last_sample_ts_ms: Some(1_500),
            ..agent(id, status)
        }
    }

    #[test]
    fn live_agent_has_every_series_in_base_units() {
        let text = render(
            &snap(vec![view("a1", Status::Live), view("a2", Status::Offline)]),
            true,
        );
        for line in [
            "lanmon_agent_up{agent=\"a1\"} 1",
            "lanmon_cpu_usage_ratio{agent=\"a1\"} 0.5",
            "lanmon_cpu_core_usage_ratio{agent=\"a1\",cpu=\"1\"} 0.75",
            "lanmon_memory_used_bytes{agent=\"a1\"} 250",
            "lanmon_memory_total_bytes{agent=\"a1\"} 1000",
            "lanmon_agent_last_sample_timestamp_seconds{agent=\"a1\"} 1.5",
            "lanmon_agents{status=\"offline\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(
            text.contains(r#"name="na\"me\\a1\n""#),
            "label values are escaped\n{text}"
        );
    }

    #[test]
    fn offline_agent_keeps_up_0_and_drops_cpu_and_memory() {
        let text = render(&snap(vec![view("gone", Status::Offline)]), true);
        assert!(text.contains("lanmon_agent_up{agent=\"gone\"} 0"));
        assert!(text.contains("lanmon_agent_info{agent=\"gone\""));
        assert!(!text.contains("lanmon_cpu_usage_ratio{"), "{text}");
        assert!(!text.contains("lanmon_memory_used_bytes{"), "{text}");
    }

    /// Proves: an agent announcing 4,096 cores with a 256-byte id adds per-core series for
    /// [`MAX_CORE_SERIES`] cores only, no label value longer than [`MAX_LABEL_CHARS`], and two
    /// long ids that share their first characters still make distinct series.
    #[test]
    fn one_agent_adds_a_bounded_amount_to_the_exposition() {
        let big = |tail: char| AgentView {
            cores: 4096,
            cpu: Some(Cpu {
                total: 50.0,
                per_core: vec![50.0; 4096],
            }),
            name: "n".repeat(256),
            ..view(&format!("{}{tail}", "i".repeat(255)), Status::Live)
        };
        let text = render(&snap(vec![big('a'), big('b')]), true);
        let core_lines = text
            .lines()
            .filter(|l| l.starts_with("lanmon_cpu_core_usage_ratio{"))
            .count();
        assert_eq!(core_lines, 2 * MAX_CORE_SERIES);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            for value in line.split('"').skip(1).step_by(2) {
                assert!(value.chars().count() <= MAX_LABEL_CHARS, "{value}");
            }
        }
        let ups: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("lanmon_agent_up{"))
            .collect();
        assert_eq!(ups.len(), 2);
        assert_ne!(ups[0], ups[1], "two long ids, two series");
        assert!(text.len() < 2 * 40 * 1024, "{} bytes", text.len());
    }

    /// A host with every whole-machine group: node_exporter-style names with their labels,
    /// counters as `_total`, base units (seconds, bytes, ratios, °C); an offline agent keeps
    /// none of them, and no header appears for a family nobody sends.
    #[test]
    fn whole_machine_families_follow_node_exporter() {
        use crate::protocol::{AgentCost, Disk, Filesystem, Load, NetInterface, Swap, Temperature};
        use crate::snapshot::{AgentCostView, DiskView, NetView};
        let mut a = view("a1", Status::Live);
        a.host.load = Some(Load {
            load1: 0.5,
            load5: 0.25,
            load15: 2.0,
            running: Some(3),
            threads: Some(300),
            procs: Some(120),
        });
        a.host.swap = Some(Swap {
            total_bytes: 1000,
            used_bytes: 10,
        });
        a.host.filesystems = Some(vec![Filesystem {
            mount: "/".into(),
            fs_type: "ext4".into(),
            device: "/dev/sda1".into(),
            size_bytes: 1000,
            used_bytes: 400,
            avail_bytes: 550,
            inodes: 100,
            inodes_used: 30,
        }]);
        a.host.disks = Some(vec![DiskView {
            counters: Disk {
                device: "sda".into(),
                read_bytes: 4096,
                written_bytes: 8192,
                reads: 1,
                writes: 2,
                io_ms: 1500,
            },
            read_bytes_per_s: None,
            written_bytes_per_s: None,
            reads_per_s: None,
            writes_per_s: None,
            busy_pct: None,
        }]);
        a.host.net = Some(vec![NetView {
            counters: NetInterface {
                interface: "eth0".into(),
                rx_bytes: 123,
                tx_bytes: 45,
                rx_packets: 6,
                tx_packets: 7,
                rx_errs: 0,
                tx_errs: 0,
                rx_drops: 1,
                tx_drops: 0,
            },
            rx_bytes_per_s: Some(1.0),
            tx_bytes_per_s: Some(1.0),
            rx_packets_per_s: None,
            tx_packets_per_s: None,
            errs_per_s: None,
            drops_per_s: None,
        }]);
        a.host.temperatures = Some(vec![Temperature {
            sensor: "coretemp Core 0".into(),
            temp_c: 45.5,
        }]);
        a.host.agent_cost = Some(AgentCostView {
            counters: AgentCost {
                rss_bytes: 3_000_000,
                cpu_ms: 2_500,
            },
            cpu_pct: None,
            cpu_ms_per_sample: None,
        });
        a.host.clock_offset_ms = Some(-1500);
        let mut gone = a.clone();
        gone.id = "gone".into();
        gone.status = Status::Offline;
        let text = render(&snap(vec![a, gone]), false);
        for line in [
            "lanmon_load1{agent=\"a1\"} 0.5",
            "lanmon_load15{agent=\"a1\"} 2",
            "lanmon_procs_running{agent=\"a1\"} 3",
            "lanmon_memory_swap_used_bytes{agent=\"a1\"} 10",
            "lanmon_filesystem_avail_bytes{agent=\"a1\",device=\"/dev/sda1\",fstype=\"ext4\",mountpoint=\"/\"} 550",
            "lanmon_filesystem_size_bytes{agent=\"a1\",device=\"/dev/sda1\",fstype=\"ext4\",mountpoint=\"/\"} 1000",
            "lanmon_filesystem_free_bytes{agent=\"a1\",device=\"/dev/sda1\",fstype=\"ext4\",mountpoint=\"/\"} 600",
            "lanmon_filesystem_files_free{agent=\"a1\",device=\"/dev/sda1\",fstype=\"ext4\",mountpoint=\"/\"} 70",
            "# TYPE lanmon_disk_read_bytes_total counter",
            "lanmon_disk_read_bytes_total{agent=\"a1\",device=\"sda\"} 4096",
            "lanmon_disk_io_time_seconds_total{agent=\"a1\",device=\"sda\"} 1.5",
            "# TYPE lanmon_network_receive_bytes_total counter",
            "lanmon_network_receive_bytes_total{agent=\"a1\",device=\"eth0\"} 123",
            "lanmon_network_receive_drop_total{agent=\"a1\",device=\"eth0\"} 1",
            "lanmon_hwmon_temp_celsius{agent=\"a1\",sensor=\"coretemp Core 0\"} 45.5",
            "lanmon_agent_cpu_seconds_total{agent=\"a1\"} 2.5",
            "lanmon_agent_resident_memory_bytes{agent=\"a1\"} 3000000",
            "lanmon_agent_clock_offset_seconds{agent=\"a1\"} -1.5",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        assert!(!text.contains("agent=\"gone\",device"), "{text}");
        assert!(!text.contains("lanmon_load1{agent=\"gone\"}"), "{text}");
        assert!(
            !text.contains("lanmon_cpu_mode_ratio"),
            "nobody sent cpu modes"
        );
        // Without whole-machine fields the exposition is what it was.
        let plain = render(&snap(vec![view("a1", Status::Live)]), false);
        assert!(!plain.contains("lanmon_load1") && !plain.contains("lanmon_filesystem"));
    }

    /// The documented bound holds for an agent at every protocol limit.
    #[test]
    fn series_per_agent_are_bounded() {
        use crate::protocol::{Disk, Filesystem, NetInterface, Temperature};
        use crate::snapshot::{DiskView, NetView};
        let mut a = view("a1", Status::Live);
        a.cpu = None;
        a.host.filesystems = Some(
            (0..MAX_FILESYSTEMS)
                .map(|i| Filesystem {
                    mount: format!("/m{i}"),
                    fs_type: "ext4".into(),
                    device: format!("/dev/d{i}"),
                    size_bytes: 1,
                    used_bytes: 0,
                    avail_bytes: 1,
                    inodes: 1,
                    inodes_used: 0,
                })
                .collect(),
        );
        let disk = |i: usize| DiskView {
            counters: Disk {
                device: format!("d{i}"),
                read_bytes: 0,
                written_bytes: 0,
                reads: 0,
                writes: 0,
                io_ms: 0,
            },
            read_bytes_per_s: None,
            written_bytes_per_s: None,
            reads_per_s: None,
            writes_per_s: None,
            busy_pct: None,
        };
        a.host.disks = Some((0..MAX_DISKS).map(disk).collect());
        let nic = |i: usize| NetView {
            counters: NetInterface {
                interface: format!("n{i}"),
                rx_bytes: 0,
                tx_bytes: 0,
                rx_packets: 0,
                tx_packets: 0,
                rx_errs: 0,
                tx_errs: 0,
                rx_drops: 0,
                tx_drops: 0,
            },
            rx_bytes_per_s: None,
            tx_bytes_per_s: None,
            rx_packets_per_s: None,
            tx_packets_per_s: None,
            errs_per_s: None,
            drops_per_s: None,
        };
        a.host.net = Some((0..MAX_INTERFACES).map(nic).collect());
        a.host.temperatures = Some(
            (0..MAX_SENSORS)
                .map(|i| Temperature {
                    sensor: format!("s{i}"),
                    temp_c: 1.0,
                })
                .collect(),
        );
        let text = render(&snap(vec![a]), false);
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("agent=\"a1\""))
            .count();
        assert!(
            series <= MAX_SERIES_PER_AGENT,
            "{series} > {MAX_SERIES_PER_AGENT}"
        );
        assert!(
            series > MAX_SERIES_PER_AGENT - 30,
            "the bound is tight: {series}"
        );
    }

    #[test]
    fn per_core_series_can_be_turned_off() {
        let text = render(&snap(vec![view("a1", Status::Live)]), false);
        assert!(!text.contains("lanmon_cpu_core_usage_ratio"));
        assert!(text.contains("lanmon_cpu_usage_ratio{agent=\"a1\"} 0.5"));
    }

    /// Proves: with the trust layer, `lanmon_agent_info` carries the agent's `auth` label
    /// (`unauthenticated` for a protocol-1 agent) and the pending keys are counted; without
    /// it (`--auth off`) neither appears.
    #[test]
    fn auth_label_and_pending_count() {
        let mut old = view("v1", Status::Live);
        old.auth = Some(crate::snapshot::AgentAuth::Unauthenticated);
        let mut s = snap(vec![old, view("v2", Status::Live)]);
        s.server.auth = Some(crate::config::AuthMode::Optional);
        s.pending.push(crate::snapshot::PendingAgent {
            fp: "SHA256:X".into(),
            id: "p".into(),
            name: "p".into(),
            hostname: "h".into(),
            ip: None,
            first_seen_ms: 0,
            last_seen_ms: None,
        });
        let text = render(&s, false);
        assert!(text.contains(",auth=\"unauthenticated\"} 1"), "{text}");
        assert!(
            text.lines().any(|l| l == "lanmon_agents_pending 1"),
            "{text}"
        );
        let off = render(&snap(vec![view("a", Status::Live)]), false);
        assert!(!off.contains("auth=") && !off.contains("lanmon_agents_pending"));
    }
}
