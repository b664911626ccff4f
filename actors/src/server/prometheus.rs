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

use std::fmt::Write as _;

use crate::snapshot::{Snapshot, Status};

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
        f.sample(
            "lanmon_agent_info",
            &[
                ("agent", &a.id),
                ("name", &a.name),
                ("hostname", &a.hostname),
                ("ip", &a.ip),
                ("os", &a.os),
                ("version", &a.agent_version),
                ("cores", &cores),
            ],
            1.0,
        );
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

    #[test]
    fn per_core_series_can_be_turned_off() {
        let text = render(&snap(vec![view("a1", Status::Live)]), false);
        assert!(!text.contains("lanmon_cpu_core_usage_ratio"));
        assert!(text.contains("lanmon_cpu_usage_ratio{agent=\"a1\"} 0.5"));
    }
}
