//! Webhook targets: one JSON POST per transition, in one of three formats.
//!
//! **`lanmon`** (the default) — documented in the README, stable (fields only added):
//! ```json
//! {"version":1,"status":"firing","ts_ms":1795651200000,
//!  "alert":{"id":"…","rule":"cpu","severity":"warning","subject":null,
//!           "summary":"CPU 93.4% (above 90% for 5m)","value":93.4,"threshold":90.0,
//!           "started_ms":…,"fired_ms":…,"resolved_ms":null,"url":"http://…/#/agent/…"},
//!  "agent":{"id":"4fb43e86c68856c7","name":"web-1","hostname":"web-1","ip":"192.168.1.21"},
//!  "server":{"id":"…","name":"lab"}}
//! ```
//! **`ntfy`** — ntfy's JSON publishing: the URL `https://ntfy.sh/TOPIC` names the server and
//! the topic; the body `{"topic","title","message","priority","tags","click"}` is POSTed to the
//! server's root. **`slack`** — `{"text": "…"}`, which Slack, Mattermost, Rocket.Chat and
//! Discord (its `…/slack` webhook URL) accept.
//!
//! Agent names are agent-controlled: in the chat formats `&`, `<`, `>` are escaped (Slack's
//! rule: no forged links or `<!channel>` mentions) and `@` is followed by a zero-width space
//! (no `@channel`/`@here` mentions in Mattermost or Discord).

use serde::Serialize;

use crate::server::alerts::config::{self, Format};
use crate::server::alerts::notify::{Deliver, Http, Notification, ServerContext};
use crate::server::alerts::rules::Severity;
use crate::server::alerts::state::Transition;
use crate::util::now_ms;

/// Version of the `lanmon` webhook format.
pub const WEBHOOK_VERSION: u32 = 1;

/// A webhook target.
pub struct Webhook {
    config: config::Webhook,
    server: ServerContext,
    http: Http,
}

impl Webhook {
    pub fn new(
        config: config::Webhook,
        server: ServerContext,
        timeout: std::time::Duration,
    ) -> Self {
        Self {
            config,
            server,
            http: Http::new(timeout),
        }
    }
}

impl Deliver for Webhook {
    fn name(&self) -> String {
        format!(
            "{} webhook {}",
            self.config.format.name(),
            redact(&self.config.url)
        )
    }

    fn deliver(&mut self, n: &Notification) -> Result<(), String> {
        let (url, body) = request(
            self.config.format,
            &self.config.url,
            n,
            &self.server,
            now_ms(),
        );
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        self.http.post_json(&url, &self.config.headers, &body)
    }
}

/// The URL without its path and query for logs (tokens often live there).
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/…")
}

/// The URL and JSON body of `n` in `format`.
pub fn request(
    format: Format,
    url: &str,
    n: &Notification,
    server: &ServerContext,
    now_ms: u64,
) -> (String, serde_json::Value) {
    match format {
        Format::Lanmon => (url.to_string(), lanmon_body(n, server, now_ms)),
        Format::Ntfy => ntfy_request(url, n, server),
        Format::Slack => (
            url.to_string(),
            serde_json::json!({ "text": chat_text(n, true) }),
        ),
    }
}

#[derive(Serialize)]
struct Body<'a> {
    version: u32,
    status: &'static str,
    ts_ms: u64,
    alert: AlertBody<'a>,
    agent: AgentBody<'a>,
    server: ServerBody<'a>,
}

#[derive(Serialize)]
struct AlertBody<'a> {
    id: &'a str,
    rule: &'static str,
    severity: &'static str,
    subject: Option<&'a str>,
    summary: &'a str,
    value: Option<f64>,
    threshold: f64,
    started_ms: Option<u64>,
    fired_ms: Option<u64>,
    resolved_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

#[derive(Serialize)]
struct AgentBody<'a> {
    id: &'a str,
    name: &'a str,
    hostname: &'a str,
    ip: &'a str,
}

#[derive(Serialize)]
struct ServerBody<'a> {
    id: &'a str,
    name: &'a str,
}

/// The `lanmon` format (see the module documentation).
pub fn lanmon_body(n: &Notification, server: &ServerContext, now_ms: u64) -> serde_json::Value {
    let a = &n.alert;
    let body = Body {
        version: WEBHOOK_VERSION,
        status: n.transition.status(),
        ts_ms: now_ms,
        alert: AlertBody {
            id: &a.id,
            rule: a.rule.name(),
            severity: a.severity.as_str(),
            subject: a.subject.as_deref(),
            summary: &a.summary,
            value: a.value.filter(|v| v.is_finite()),
            threshold: a.threshold,
            started_ms: a.machine.started_ms,
            fired_ms: a.machine.fired_ms,
            resolved_ms: a.machine.resolved_ms,
            url: server.agent_url(&a.agent),
        },
        agent: AgentBody {
            id: &a.agent,
            name: &a.name,
            hostname: &a.hostname,
            ip: &a.ip,
        },
        server: ServerBody {
            id: &server.id,
            name: &server.name,
        },
    };
    serde_json::to_value(body).unwrap_or(serde_json::Value::Null)
}

/// `FIRING` / `RESOLVED`, the agent, the summary: one line for chat.
fn headline(n: &Notification, escape: bool) -> String {
    let a = &n.alert;
    let name = if escape {
        chat_escape(&a.name)
    } else {
        plain(&a.name)
    };
    let summary = if escape {
        chat_escape(&a.summary)
    } else {
        plain(&a.summary)
    };
    match n.transition {
        Transition::Fired => format!("[FIRING {}] {name}: {summary}", a.severity.as_str()),
        Transition::Resolved => format!("[RESOLVED] {name}: {summary}"),
    }
}

fn chat_text(n: &Notification, escape: bool) -> String {
    let a = &n.alert;
    let host = if escape {
        chat_escape(&a.hostname)
    } else {
        plain(&a.hostname)
    };
    format!(
        "{} (host {host}, {}, rule {})",
        headline(n, escape),
        a.ip,
        a.rule.name()
    )
}

/// Slack's escaping of `&<>`, and `@` defused (see the module documentation).
pub fn chat_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in plain(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' => out.push_str("@\u{200B}"),
            c => out.push(c),
        }
    }
    out
}

/// Control characters (line breaks included) replaced by spaces.
fn plain(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn ntfy_request(
    url: &str,
    n: &Notification,
    server: &ServerContext,
) -> (String, serde_json::Value) {
    let trimmed = url.trim_end_matches('/');
    let (root, topic) = trimmed.rsplit_once('/').unwrap_or((trimmed, ""));
    let a = &n.alert;
    let (priority, tag) = match (n.transition, a.severity) {
        (Transition::Resolved, _) => (2, "white_check_mark"),
        (_, Severity::Critical) => (5, "rotating_light"),
        (_, Severity::Warning) => (4, "warning"),
        (_, Severity::Info) => (3, "information_source"),
    };
    let mut body = serde_json::json!({
        "topic": topic,
        "title": headline(n, false),
        "message": chat_text(n, false),
        "priority": priority,
        "tags": [tag, a.rule.name()],
    });
    if let Some(link) = server.agent_url(&a.agent) {
        body["click"] = serde_json::Value::String(link);
    }
    (format!("{root}/"), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::alerts::notify::tests::alert;

    fn note(transition: Transition) -> Notification {
        let mut a = alert("id1");
        a.name = "<!channel> @here & co\nx".into();
        a.machine.started_ms = Some(1);
        a.machine.fired_ms = Some(2);
        Notification {
            job: 1,
            transition,
            alert: a,
        }
    }

    fn server() -> ServerContext {
        ServerContext {
            id: "s1".into(),
            name: "lab".into(),
            external_url: Some("http://lanmon:8081".into()),
        }
    }

    /// Proves: the lanmon format carries status, rule, agent and server as documented.
    #[test]
    fn lanmon_format() {
        let (url, body) = request(
            Format::Lanmon,
            "http://h/hook",
            &note(Transition::Fired),
            &server(),
            7,
        );
        assert_eq!(url, "http://h/hook");
        assert_eq!(body["version"], 1);
        assert_eq!(body["status"], "firing");
        assert_eq!(body["ts_ms"], 7);
        assert_eq!(body["alert"]["rule"], "cpu");
        assert_eq!(body["alert"]["severity"], "warning");
        assert_eq!(body["alert"]["value"], 95.0);
        assert_eq!(body["alert"]["fired_ms"], 2);
        assert_eq!(body["alert"]["url"], "http://lanmon:8081/#/agent/a1");
        assert_eq!(body["agent"]["name"], "<!channel> @here & co\nx");
        assert_eq!(body["server"]["name"], "lab");
        let (_, resolved) = request(
            Format::Lanmon,
            "http://h/hook",
            &note(Transition::Resolved),
            &server(),
            7,
        );
        assert_eq!(resolved["status"], "resolved");
    }

    /// Proves: the Slack-compatible text escapes what the agent controls: no mention, no
    /// link markup, no line break survives.
    #[test]
    fn slack_format_defuses_agent_strings() {
        let (_, body) = request(
            Format::Slack,
            "https://hooks.slack.com/services/x",
            &note(Transition::Fired),
            &server(),
            0,
        );
        let text = body["text"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(
                "[FIRING warning] &lt;!channel&gt; @\u{200B}here &amp; co x: CPU 95.0%"
            ),
            "{text}"
        );
        assert!(
            !text.contains("<!") && !text.contains("@here") && !text.contains('\n'),
            "{text}"
        );
    }

    /// Proves: ntfy gets its JSON publishing form: the root URL, the topic from the path,
    /// priority by severity, a click link.
    #[test]
    fn ntfy_format() {
        let (url, body) = request(
            Format::Ntfy,
            "https://ntfy.sh/my-alerts",
            &note(Transition::Fired),
            &server(),
            0,
        );
        assert_eq!(url, "https://ntfy.sh/");
        assert_eq!(body["topic"], "my-alerts");
        assert_eq!(body["priority"], 4);
        assert_eq!(body["click"], "http://lanmon:8081/#/agent/a1");
        assert!(
            body["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("[FIRING warning]"))
        );
        let (_, body) = request(
            Format::Ntfy,
            "https://ntfy.sh/my-alerts",
            &note(Transition::Resolved),
            &server(),
            0,
        );
        assert_eq!(body["priority"], 2);
    }

    /// Proves: logs never show a webhook's path or credentials.
    #[test]
    fn urls_are_redacted_in_logs() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T/B/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact("http://user:pw@127.0.0.1:9/x?token=1"),
            "http://127.0.0.1:9/…"
        );
    }
}
