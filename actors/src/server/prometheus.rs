//! Prometheus text exposition (format 0.0.4) of a [`Snapshot`], served at `GET /metrics`.
//!
//! One identity label per agent (`agent`, its stable id); the human names live in
//! `lanmon_agent_info`. Gauges in base units (ratios 0–1, bytes, seconds), no explicit
//! timestamps. An offline agent keeps `lanmon_agent_up 0`, its info and its last-sample time,
//! and drops its CPU and memory series (they would be stale values). Per-core series can be
//! turned off for very large fleets.

use std::fmt::Write as _;

use crate::snapshot::{Snapshot, Status};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value: backslash, double quote and newline.
fn label(value: &str) -> String {
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
        // `approved` (its enrolled key) or `unauthenticated` (protocol 1, --auth optional).
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
                for (i, v) in cpu.per_core.iter().enumerate() {
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
