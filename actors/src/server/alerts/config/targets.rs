//! Where notifications go and how hard to try: webhooks (with their body [`Format`]),
//! Alertmanagers, the queue, timeouts and retries; the checks of a target's URL and headers.

use std::time::Duration;

use super::Problem;

/// Notifications waiting per target unless configured.
pub const DEFAULT_QUEUE: usize = 1024;
/// Time one notification call may take unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// A notification that could not be delivered for this long is given up (counted as failed).
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(3600);
/// First wait after a failed call; doubles per failure up to [`DEFAULT_RETRY_MAX`].
pub const DEFAULT_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);
/// How often firing alerts are pushed to Alertmanager again unless configured (its default
/// `resolve_timeout` is 5m: well below it).
pub const DEFAULT_RESEND_EVERY: Duration = Duration::from_secs(60);

/// The format of a webhook's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// lanmon's own JSON (documented in the README).
    Lanmon,
    /// ntfy's JSON publishing (the URL names the topic: `https://ntfy.sh/TOPIC`).
    Ntfy,
    /// Slack-compatible incoming webhook (`{"text": …}`): Slack, Mattermost, Rocket.Chat,
    /// Discord (its `/slack` URL).
    Slack,
}

impl Format {
    pub(super) fn parse(s: &str) -> Option<Format> {
        match s {
            "lanmon" | "json" => Some(Format::Lanmon),
            "ntfy" => Some(Format::Ntfy),
            "slack" | "mattermost" | "rocketchat" | "discord" => Some(Format::Slack),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Lanmon => "lanmon",
            Format::Ntfy => "ntfy",
            Format::Slack => "slack",
        }
    }
}

/// A webhook to notify of every transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub format: Format,
    /// Extra request headers (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
}

/// An Alertmanager to push alerts to (API v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertmanagerTarget {
    /// Its base URL (`http://host:9093`); alerts go to `URL/api/v2/alerts`.
    pub url: String,
    pub resend_every: Duration,
}

/// Where notifications go and how hard to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    pub webhooks: Vec<Webhook>,
    pub alertmanagers: Vec<AlertmanagerTarget>,
    /// Notifications waiting per target; beyond, new ones are dropped and counted.
    pub queue: usize,
    pub timeout: Duration,
    pub retry_for: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            webhooks: Vec::new(),
            alertmanagers: Vec::new(),
            queue: DEFAULT_QUEUE,
            timeout: DEFAULT_TIMEOUT,
            retry_for: DEFAULT_RETRY_FOR,
            retry_min: DEFAULT_RETRY_MIN,
            retry_max: DEFAULT_RETRY_MAX,
        }
    }
}

/// Checks a target's URL: http(s), a host, an ntfy topic, no spaces or control characters.
pub(super) fn check_url(
    url: &str,
    format: Format,
    line: Option<usize>,
    key: &str,
    problems: &mut Vec<Problem>,
) {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let message = match rest {
        None => Some(format!("`{url}` must start with http:// or https://")),
        Some(r) if r.is_empty() || r.starts_with('/') => Some(format!("`{url}` has no host")),
        Some(r) if format == Format::Ntfy && !r.trim_end_matches('/').contains('/') => Some(
            format!("`{url}`: an ntfy URL names the topic, e.g. https://ntfy.sh/my-topic"),
        ),
        Some(_) if url.chars().any(|c| c.is_whitespace() || c.is_control()) => Some(format!(
            "`{}` contains spaces or control characters",
            url.escape_debug()
        )),
        Some(_) => None,
    };
    if let Some(message) = message {
        problems.push(Problem {
            line,
            key: key.to_string(),
            message,
        });
    }
}

/// Whether a header name is an HTTP token and its value visible ASCII (no line breaks).
pub(super) fn valid_header(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}
