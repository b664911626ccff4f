//! Alertmanager target: alerts pushed to `POST <url>/api/v2/alerts`, as Prometheus does.
//!
//! Each alert has the labels `alertname` (e.g. `LanmonCpuHigh`), `agent` (id), `name`,
//! `rule`, `severity` (and `subject` for a filesystem or sensor), the annotations `summary`
//! and `description`, `startsAt` (when it fired) and `endsAt`. Alertmanager forgets an alert
//! whose `endsAt` has passed, so while it fires lanmon sends it again every `resend_every`
//! (default 1m) with `endsAt` four resend periods ahead (if lanmon dies, Alertmanager
//! resolves it by itself a few minutes later); on resolve it is sent once more with `endsAt`
//! = the time it resolved. After a restart the engine tells this target what is still
//! firing ([`Deliver::sync`]), so the re-sending goes on.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::server::alerts::config::AlertmanagerTarget;
use crate::server::alerts::notify::{Deliver, Http, Notification, ServerContext};
use crate::server::alerts::state::{Alert, Transition};
use crate::util::now_ms;

/// Most alerts in one POST.
const BATCH: usize = 500;
/// `endsAt` of a firing alert is this many resend periods ahead.
const ENDS_AFTER_RESENDS: u32 = 4;

/// See the module documentation.
pub struct Alertmanager {
    target: AlertmanagerTarget,
    server: ServerContext,
    http: Http,
    /// What is firing, by alert id: re-sent every `resend_every`.
    firing: BTreeMap<String, Alert>,
    next_resend: Option<Instant>,
}

impl Alertmanager {
    pub fn new(target: AlertmanagerTarget, server: ServerContext, timeout: Duration) -> Self {
        Self {
            target,
            server,
            http: Http::new(timeout),
            firing: BTreeMap::new(),
            next_resend: None,
        }
    }

    fn push(&self, alerts: &[PostableAlert]) -> Result<(), String> {
        let url = format!("{}/api/v2/alerts", self.target.url);
        for chunk in alerts.chunks(BATCH) {
            let body = serde_json::to_vec(chunk).map_err(|e| e.to_string())?;
            self.http.post_json(&url, &[], &body)?;
        }
        Ok(())
    }

    fn firing_now(&self, now_ms: u64) -> Vec<PostableAlert> {
        let ends = now_ms.saturating_add(
            u64::try_from((self.target.resend_every * ENDS_AFTER_RESENDS).as_millis())
                .unwrap_or(u64::MAX),
        );
        self.firing
            .values()
            .map(|a| postable(a, &self.server, ends))
            .collect()
    }
}

impl Deliver for Alertmanager {
    fn name(&self) -> String {
        format!("alertmanager {}", self.target.url)
    }

    fn deliver(&mut self, n: &Notification) -> Result<(), String> {
        let now = now_ms();
        match n.transition {
            Transition::Fired => {
                self.firing.insert(n.alert.id.clone(), n.alert.clone());
                let ends = now.saturating_add(
                    u64::try_from((self.target.resend_every * ENDS_AFTER_RESENDS).as_millis())
                        .unwrap_or(u64::MAX),
                );
                self.push(&[postable(&n.alert, &self.server, ends)])
            }
            Transition::Resolved => {
                self.firing.remove(&n.alert.id);
                let ends = n.alert.machine.resolved_ms.unwrap_or(now);
                self.push(&[postable(&n.alert, &self.server, ends)])
            }
        }
    }

    fn sync(&mut self, firing: &[Alert]) {
        self.firing = firing.iter().map(|a| (a.id.clone(), a.clone())).collect();
        // Send them at the next tick, right away.
        self.next_resend = Some(Instant::now());
    }

    fn tick(&mut self, now: Instant) -> Option<Instant> {
        let due = *self
            .next_resend
            .get_or_insert(now + self.target.resend_every);
        if now >= due {
            if !self.firing.is_empty()
                && let Err(e) = self.push(&self.firing_now(now_ms()))
            {
                tracing::warn!(
                    "alerts: {}: re-sending {} firing alert(s) failed: {e}",
                    self.name(),
                    self.firing.len()
                );
            }
            self.next_resend = Some(now + self.target.resend_every);
        }
        self.next_resend
    }
}

/// Alertmanager's `postableAlert`.
#[derive(Debug, Serialize, PartialEq)]
pub struct PostableAlert {
    pub labels: BTreeMap<&'static str, String>,
    pub annotations: BTreeMap<&'static str, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `a` as Alertmanager takes it, ending at `ends_ms`.
pub fn postable(a: &Alert, server: &ServerContext, ends_ms: u64) -> PostableAlert {
    let mut labels = BTreeMap::new();
    labels.insert("alertname", a.rule.alertname().to_string());
    labels.insert("agent", a.agent.clone());
    labels.insert("name", a.name.clone());
    labels.insert("rule", a.rule.name().to_string());
    labels.insert("severity", a.severity.as_str().to_string());
    if let Some(s) = &a.subject {
        labels.insert("subject", s.clone());
    }
    let mut annotations = BTreeMap::new();
    annotations.insert("summary", format!("{}: {}", a.name, a.summary));
    annotations.insert(
        "description",
        format!(
            "{} (host {}, {}) on lanmon server {}: {}",
            a.name, a.hostname, a.ip, server.name, a.summary
        ),
    );
    if let Some(v) = a.value.filter(|v| v.is_finite()) {
        annotations.insert("value", format!("{v}"));
    }
    let starts = a
        .machine
        .fired_ms
        .or(a.machine.started_ms)
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
        });
    PostableAlert {
        labels,
        annotations,
        starts_at: rfc3339(starts),
        ends_at: rfc3339(ends_ms.max(starts)),
        generator_url: server.agent_url(&a.agent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::alerts::notify::tests::alert;

    /// Proves: the labels the README promises, startsAt at the firing time, endsAt as given
    /// (never before startsAt), RFC 3339 in UTC.
    #[test]
    fn postable_alert_has_the_documented_labels() {
        let mut a = alert("x");
        a.machine.fired_ms = Some(1_795_651_200_000);
        a.subject = Some("/var".into());
        let p = postable(&a, &ServerContext::default(), 1_795_651_260_000);
        let labels: Vec<(&str, &str)> = p.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            labels,
            vec![
                ("agent", "a1"),
                ("alertname", "LanmonCpuHigh"),
                ("name", "web-1"),
                ("rule", "cpu"),
                ("severity", "warning"),
                ("subject", "/var"),
            ]
        );
        assert_eq!(p.starts_at, "2026-11-26T00:00:00.000Z");
        assert_eq!(p.ends_at, "2026-11-26T00:01:00.000Z");
        assert!(p.annotations["summary"].starts_with("web-1: CPU 95.0%"));
        let early = postable(&a, &ServerContext::default(), 0);
        assert_eq!(early.ends_at, early.starts_at);
    }
}
