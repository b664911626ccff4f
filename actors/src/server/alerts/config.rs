//! The alert rules file (`server --alerts FILE`, TOML) and the settings it makes.
//!
//! Settings come in layers: the built-in defaults ([`RuleId::default_spec`]), then the
//! `--alert-*` flags ([`AlertFlags`]), then the file's `[rules.*]`, then, per agent, every
//! `[[override]]` whose patterns match the agent's name or id (in file order, later wins).
//! `[[silence]]` entries stop notifications (the alert is still evaluated and shown, marked
//! silenced). The file is checked whole at start and on every reload (SIGHUP): each problem
//! is reported with its line and key, and a reload with problems keeps the old settings.
//!
//! ```toml
//! [settings]
//! evaluate_every = "5s"        # how often the rules run
//! recent = 100                 # resolved alerts kept for /api/alerts
//! external_url = "http://lanmon.example:8081"   # links in notifications (optional)
//!
//! [rules.cpu]                  # any built-in rule: offline, stale, cpu, memory, swap, load,
//! threshold = 90               # filesystem, filesystem_fill, clock, temperature, pending,
//! resolve = 80                 # unauthenticated
//! for = "5m"
//! resolve_for = "1m"
//! severity = "warning"         # info, warning, critical
//! enabled = true
//!
//! [rules.filesystem_fill]
//! within = "24h"               # fires when predicted full within this
//! resolve_within = "48h"       # resolves when predicted full later than this
//! window = "6h"                # the fit's range
//!
//! [[override]]                 # per agent: names (globs `*`, `?`) or ids
//! agents = ["build-*", "4fb43e86c68856c7"]
//! rules.cpu = { threshold = 99, for = "30m" }
//!
//! [[silence]]                  # no notifications; `agents`/`rules` default to all
//! agents = ["lab-*"]
//! rules = ["offline"]
//! until = 2027-01-31T00:00:00Z # optional
//! comment = "lab machines are switched off at night"
//!
//! [notify]
//! timeout = "10s"              # per call
//! retry_for = "1h"             # give up on a notification after this
//! queue = 1024                 # notifications waiting per target; beyond, dropped and counted
//!
//! [[notify.webhook]]
//! url = "https://ntfy.sh/my-lanmon-alerts"
//! format = "ntfy"              # lanmon (default), ntfy, slack
//! headers = { Authorization = "Bearer tk_…" }
//!
//! [[notify.alertmanager]]
//! url = "http://127.0.0.1:9093"
//! resend_every = "1m"          # keep below Alertmanager's resolve_timeout (5m)
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::server::alerts::rules::{DEFAULT_FILL_WINDOW, Kind, RuleId, RuleSpec, Severity};

/// How often the rules run unless configured.
pub const DEFAULT_EVALUATE_EVERY: Duration = Duration::from_secs(5);
/// Shortest evaluation period accepted.
pub const MIN_EVALUATE_EVERY: Duration = Duration::from_millis(100);
/// Resolved alerts kept for `/api/alerts` unless configured.
pub const DEFAULT_RECENT: usize = 100;
/// Most resolved alerts kept.
pub const MAX_RECENT: usize = 10_000;
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
    fn parse(s: &str) -> Option<Format> {
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

/// Changes to a rule's settings (from a flag, the file or an override).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RulePatch {
    pub enabled: Option<bool>,
    pub threshold: Option<f64>,
    pub resolve: Option<f64>,
    pub for_: Option<Duration>,
    pub resolve_for: Option<Duration>,
    pub severity: Option<Severity>,
}

impl RulePatch {
    /// Applies the patch. A new threshold without a resolve threshold keeps the default
    /// band: `cpu` at 95 resolves below 85, as 90 resolves below 80.
    pub fn apply(&self, rule: RuleId, spec: &mut RuleSpec) {
        let default = rule.default_spec();
        if let Some(t) = self.threshold {
            spec.threshold = t;
            if self.resolve.is_none() {
                spec.resolve = match rule.kind() {
                    Kind::Above => (t - (default.threshold - default.resolve))
                        .clamp(rule.threshold_range().0, rule.threshold_range().1),
                    Kind::Below if default.threshold > 0.0 => {
                        t * default.resolve / default.threshold
                    }
                    _ => spec.resolve,
                };
            }
        }
        if let Some(r) = self.resolve {
            spec.resolve = r;
        }
        if let Some(e) = self.enabled {
            spec.enabled = e;
        }
        if let Some(d) = self.for_ {
            spec.for_ = d;
        }
        if let Some(d) = self.resolve_for {
            spec.resolve_for = d;
        }
        if let Some(s) = self.severity {
            spec.severity = s;
        }
    }
}

/// Settings for the agents whose name or id matches one of `agents`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub agents: Vec<String>,
    pub rules: Vec<(RuleId, RulePatch)>,
}

/// No notifications for these agents and rules (empty: all) until `until_ms` (if set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub agents: Vec<String>,
    pub rules: Vec<RuleId>,
    pub until_ms: Option<u64>,
    pub comment: Option<String>,
}

/// The alert settings in force.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    pub evaluate_every: Duration,
    /// Resolved alerts kept for the API.
    pub recent: usize,
    /// The dashboard's address for people, used for links in notifications.
    pub external_url: Option<String>,
    /// Every rule's settings before overrides.
    pub rules: BTreeMap<RuleId, RuleSpec>,
    /// The range of the `filesystem_fill` fit.
    pub fill_window: Duration,
    pub overrides: Vec<Override>,
    pub silences: Vec<Silence>,
    pub notify: NotifyConfig,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            evaluate_every: DEFAULT_EVALUATE_EVERY,
            recent: DEFAULT_RECENT,
            external_url: None,
            rules: RuleId::ALL.iter().map(|&r| (r, r.default_spec())).collect(),
            fill_window: DEFAULT_FILL_WINDOW,
            overrides: Vec::new(),
            silences: Vec::new(),
            notify: NotifyConfig::default(),
        }
    }
}

/// The common settings as command-line flags (`--alert-cpu 90 --alert-cpu-for 5m` …): the
/// layer between the built-in defaults and the file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertFlags {
    pub rules: Vec<(RuleId, RulePatch)>,
    pub evaluate_every: Option<Duration>,
    pub webhooks: Vec<Webhook>,
    pub alertmanagers: Vec<String>,
}

/// What the server needs to run the alerts: the settings, and where they came from (so that
/// SIGHUP can read them again).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsSettings {
    pub config: AlertsConfig,
    pub file: Option<PathBuf>,
    pub flags: AlertFlags,
}

impl AlertsSettings {
    /// The flags, then `file` (if any) over them. The error lists every problem of the file.
    pub fn load(file: Option<PathBuf>, flags: AlertFlags) -> Result<Self, ConfigError> {
        let config = match &file {
            Some(path) => AlertsConfig::load(path, &flags)?,
            None => AlertsConfig::from_flags(&flags)?,
        };
        Ok(Self {
            config,
            file,
            flags,
        })
    }

    /// The settings read again (SIGHUP).
    pub fn reload(&self) -> Result<AlertsConfig, ConfigError> {
        match &self.file {
            Some(path) => AlertsConfig::load(path, &self.flags),
            None => AlertsConfig::from_flags(&self.flags),
        }
    }
}

/// One thing wrong with the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// The key, e.g. `rules.cpu.threshold` or `override[2].agents`.
    pub key: String,
    pub message: String,
}

/// Everything wrong with an alerts file (or with the flags).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file's path, or `flags`.
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "alerts: {}: {n} problem{}",
            self.source_name,
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  ")?;
            if let Some(line) = p.line {
                write!(f, "line {line}: ")?;
            }
            if p.key.is_empty() {
                write!(f, "{}", p.message)?;
            } else {
                write!(f, "{}: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

/// Parses `5s`, `500ms`, `1m`, `1h30m`, `7d`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (examples: 30s, 5m, 1h, 7d)"))
}

/// Whether `text` matches the shell-style `pattern`: `*` any run of characters, `?` one
/// character, anything else itself (case-sensitive).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it is trying to cover up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether an agent (by `id` and `name`) matches one of `patterns` (empty: every agent).
fn matches_agent(patterns: &[String], id: &str, name: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|p| p == id || glob_match(p, name) || glob_match(p, id))
}

impl AlertsConfig {
    /// The defaults with `flags` applied.
    pub fn from_flags(flags: &AlertFlags) -> Result<Self, ConfigError> {
        let mut config = AlertsConfig::default();
        let mut problems = Vec::new();
        config.apply_flags(flags, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                source_name: "flags".into(),
                problems,
            })
        }
    }

    fn apply_flags(&mut self, flags: &AlertFlags, problems: &mut Vec<Problem>) {
        for (rule, patch) in &flags.rules {
            let key = format!("--alert-{}", rule.name().replace('_', "-"));
            if let Some(spec) = self.rules.get_mut(rule) {
                patch.apply(*rule, spec);
                check_spec(*rule, spec, None, &key, problems);
            }
        }
        if let Some(every) = flags.evaluate_every {
            self.evaluate_every = every.max(MIN_EVALUATE_EVERY);
        }
        self.notify.webhooks.extend(flags.webhooks.iter().cloned());
        for w in &flags.webhooks {
            check_url(&w.url, w.format, None, "--alert-webhook", problems);
        }
        for url in &flags.alertmanagers {
            check_url(url, Format::Lanmon, None, "--alertmanager", problems);
            self.notify.alertmanagers.push(AlertmanagerTarget {
                url: url.trim_end_matches('/').to_string(),
                resend_every: DEFAULT_RESEND_EVERY,
            });
        }
    }

    /// Reads and checks `path`, over `flags`.
    pub fn load(path: &Path, flags: &AlertFlags) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: name.clone(),
            problems: vec![Problem {
                line: None,
                key: String::new(),
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Self::parse(&src, &name, flags)
    }

    /// Checks the TOML text `src` (named `name` in errors), over `flags`.
    pub fn parse(src: &str, name: &str, flags: &AlertFlags) -> Result<Self, ConfigError> {
        let error = |problems| ConfigError {
            source_name: name.to_string(),
            problems,
        };
        let raw: RawFile = toml::from_str(src).map_err(|e| {
            error(vec![Problem {
                line: e.span().map(|s| line_of(src, s.start)),
                key: String::new(),
                message: e.message().trim().to_string(),
            }])
        })?;
        let mut config = AlertsConfig::default();
        let mut problems = Vec::new();
        config.apply_flags(flags, &mut problems);
        let mut p = Problems {
            src,
            list: &mut problems,
        };
        config.apply_file(raw, &mut p);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(error(problems))
        }
    }

    fn apply_file(&mut self, raw: RawFile, p: &mut Problems<'_>) {
        let s = raw.settings;
        if let Some(every) = s.evaluate_every
            && let Some(d) = p.duration(&every, "settings.evaluate_every")
        {
            if d < MIN_EVALUATE_EVERY {
                p.at(&every, "settings.evaluate_every", "must be at least 100ms");
            } else {
                self.evaluate_every = d;
            }
        }
        if let Some(recent) = s.recent {
            match usize::try_from(*recent.get_ref()) {
                Ok(n) if n <= MAX_RECENT => self.recent = n,
                _ => p.at(
                    &recent,
                    "settings.recent",
                    &format!("must be 0 to {MAX_RECENT}"),
                ),
            }
        }
        if let Some(url) = s.external_url {
            if url.get_ref().starts_with("http://") || url.get_ref().starts_with("https://") {
                self.external_url = Some(url.get_ref().trim_end_matches('/').to_string());
            } else {
                p.at(
                    &url,
                    "settings.external_url",
                    "must start with http:// or https://",
                );
            }
        }

        for (name, rule) in raw.rules {
            let Some(id) = p.rule_id(&name, "rules") else {
                continue;
            };
            let key = format!("rules.{}", id.name());
            if let Some(window) = &rule.window {
                if id == RuleId::FilesystemFill {
                    if let Some(d) = p.duration(window, &format!("{key}.window")) {
                        if d < Duration::from_secs(1) {
                            p.at(window, &format!("{key}.window"), "must be at least 1s");
                        } else {
                            self.fill_window = d;
                        }
                    }
                } else {
                    p.at(
                        window,
                        &format!("{key}.window"),
                        "only `rules.filesystem_fill` has a window",
                    );
                }
            }
            let (patch, line) = p.patch(id, &rule, &key);
            if let Some(spec) = self.rules.get_mut(&id) {
                patch.apply(id, spec);
                check_spec(id, spec, line, &key, p.list);
            }
        }

        for (i, o) in raw.overrides.into_iter().enumerate() {
            let key = format!("override[{i}]");
            let agents = p.patterns(&o.agents, &format!("{key}.agents"));
            if agents.is_empty() {
                p.at(
                    &o.agents,
                    &format!("{key}.agents"),
                    "names no agent (give names, globs or ids)",
                );
            }
            let mut rules = Vec::new();
            for (name, rule) in o.rules {
                let Some(id) = p.rule_id(&name, &format!("{key}.rules")) else {
                    continue;
                };
                let rkey = format!("{key}.rules.{}", id.name());
                if let Some(window) = &rule.window {
                    p.at(
                        window,
                        &format!("{rkey}.window"),
                        "the fit window is set once, in [rules.filesystem_fill]",
                    );
                }
                let (patch, line) = p.patch(id, &rule, &rkey);
                let mut spec = self.rules.get(&id).copied().unwrap_or(id.default_spec());
                patch.apply(id, &mut spec);
                check_spec(
                    id,
                    &spec,
                    line.or(Some(line_of(p.src, name.span().start))),
                    &rkey,
                    p.list,
                );
                rules.push((id, patch));
            }
            self.overrides.push(Override { agents, rules });
        }

        for (i, s) in raw.silences.into_iter().enumerate() {
            let key = format!("silence[{i}]");
            let agents = p.patterns(&s.agents, &format!("{key}.agents"));
            let rules = s
                .rules
                .iter()
                .filter_map(|r| p.rule_id(r, &format!("{key}.rules")))
                .collect();
            let until_ms = s.until.as_ref().and_then(|u| {
                let text = match u.get_ref() {
                    When::Datetime(d) => d.to_string(),
                    When::Text(t) => t.clone(),
                };
                match humantime::parse_rfc3339_weak(&text) {
                    Ok(t) => Some(
                        t.duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    ),
                    Err(e) => {
                        p.at(
                            u,
                            &format!("{key}.until"),
                            &format!("`{text}`: {e} (write e.g. 2027-01-31T00:00:00Z)"),
                        );
                        None
                    }
                }
            });
            self.silences.push(Silence {
                agents,
                rules,
                until_ms,
                comment: s.comment,
            });
        }

        let n = raw.notify;
        if let Some(q) = n.queue {
            match usize::try_from(*q.get_ref()) {
                Ok(v) if (1..=1_000_000).contains(&v) => self.notify.queue = v,
                _ => p.at(&q, "notify.queue", "must be 1 to 1000000"),
            }
        }
        for (value, key, slot) in [
            (&n.timeout, "notify.timeout", &mut self.notify.timeout),
            (&n.retry_for, "notify.retry_for", &mut self.notify.retry_for),
            (&n.retry_min, "notify.retry_min", &mut self.notify.retry_min),
            (&n.retry_max, "notify.retry_max", &mut self.notify.retry_max),
        ] {
            let Some(v) = value else { continue };
            if let Some(d) = p.duration(v, key) {
                if d < Duration::from_millis(10) {
                    p.at(v, key, "must be at least 10ms");
                } else {
                    *slot = d;
                }
            }
        }
        if self.notify.retry_min > self.notify.retry_max {
            p.list.push(Problem {
                line: None,
                key: "notify.retry_min".into(),
                message: "must not be above notify.retry_max".into(),
            });
        }
        for (i, w) in n.webhook.into_iter().enumerate() {
            let key = format!("notify.webhook[{i}]");
            let format = match &w.format {
                None => Format::Lanmon,
                Some(f) => Format::parse(f.get_ref()).unwrap_or_else(|| {
                    p.at(
                        f,
                        &format!("{key}.format"),
                        &format!("unknown format `{}` (lanmon, ntfy, slack)", f.get_ref()),
                    );
                    Format::Lanmon
                }),
            };
            let line = line_of(p.src, w.url.span().start);
            check_url(
                w.url.get_ref(),
                format,
                Some(line),
                &format!("{key}.url"),
                p.list,
            );
            let mut headers = Vec::new();
            for (k, v) in w.headers {
                if !valid_header(&k, &v) {
                    p.list.push(Problem {
                        line: Some(line),
                        key: format!("{key}.headers.{k}"),
                        message: "not a valid HTTP header (visible ASCII only, no line breaks)"
                            .into(),
                    });
                } else {
                    headers.push((k, v));
                }
            }
            self.notify.webhooks.push(Webhook {
                url: w.url.into_inner(),
                format,
                headers,
            });
        }
        for (i, a) in n.alertmanager.into_iter().enumerate() {
            let key = format!("notify.alertmanager[{i}]");
            let line = line_of(p.src, a.url.span().start);
            check_url(
                a.url.get_ref(),
                Format::Lanmon,
                Some(line),
                &format!("{key}.url"),
                p.list,
            );
            let resend_every = match &a.resend_every {
                Some(r) => p
                    .duration(r, &format!("{key}.resend_every"))
                    .filter(|d| {
                        let ok = *d >= Duration::from_millis(100);
                        if !ok {
                            p.at(r, &format!("{key}.resend_every"), "must be at least 100ms");
                        }
                        ok
                    })
                    .unwrap_or(DEFAULT_RESEND_EVERY),
                None => DEFAULT_RESEND_EVERY,
            };
            self.notify.alertmanagers.push(AlertmanagerTarget {
                url: a.url.get_ref().trim_end_matches('/').to_string(),
                resend_every,
            });
        }
    }

    /// Indexes of the overrides that apply to the agent `id` named `name`.
    pub fn overrides_for(&self, id: &str, name: &str) -> Vec<usize> {
        self.overrides
            .iter()
            .enumerate()
            .filter(|(_, o)| matches_agent(&o.agents, id, name))
            .map(|(i, _)| i)
            .collect()
    }

    /// `rule`'s settings for an agent matched by `overrides` (from [`Self::overrides_for`]).
    pub fn spec(&self, rule: RuleId, overrides: &[usize]) -> RuleSpec {
        let mut spec = self
            .rules
            .get(&rule)
            .copied()
            .unwrap_or(rule.default_spec());
        for &i in overrides {
            if let Some(o) = self.overrides.get(i) {
                for (r, patch) in &o.rules {
                    if *r == rule {
                        patch.apply(rule, &mut spec);
                    }
                }
            }
        }
        spec
    }

    /// The silence covering `rule` for this agent at `now_ms`, if any.
    pub fn silence(&self, id: &str, name: &str, rule: RuleId, now_ms: u64) -> Option<&Silence> {
        self.silences.iter().find(|s| {
            s.until_ms.is_none_or(|u| now_ms < u)
                && (s.rules.is_empty() || s.rules.contains(&rule))
                && matches_agent(&s.agents, id, name)
        })
    }

    /// The rules enabled before overrides, with their severity (the `lanmon_alerts` series).
    pub fn enabled_rules(&self) -> Vec<(RuleId, Severity)> {
        self.rules
            .iter()
            .filter(|(_, s)| s.enabled)
            .map(|(r, s)| (*r, s.severity))
            .collect()
    }
}

/// Checks a rule's final settings: threshold in range, the band the right way round, no
/// threshold on condition rules (flags and patches can only set it where it means something).
fn check_spec(
    rule: RuleId,
    spec: &RuleSpec,
    line: Option<usize>,
    key: &str,
    problems: &mut Vec<Problem>,
) {
    let mut problem = |message: String| {
        problems.push(Problem {
            line,
            key: key.to_string(),
            message,
        })
    };
    let (lo, hi) = rule.threshold_range();
    let unit = rule.unit();
    match rule.kind() {
        Kind::Condition => {}
        Kind::Above => {
            for (what, v) in [("threshold", spec.threshold), ("resolve", spec.resolve)] {
                if !(lo..=hi).contains(&v) {
                    problem(format!(
                        "{what} must be between {lo} and {hi}{unit}, got {v}"
                    ));
                }
            }
            if spec.resolve > spec.threshold {
                problem(format!(
                    "resolve ({}) must not be above threshold ({}): the alert would never stay resolved",
                    spec.resolve, spec.threshold
                ));
            }
        }
        Kind::Below => {
            if !(lo..=hi).contains(&spec.threshold) {
                problem(format!(
                    "within must be between 1s and 366d, got {}s",
                    spec.threshold
                ));
            }
            if spec.resolve < spec.threshold {
                problem("resolve_within must not be shorter than within".into());
            }
        }
    }
}

fn check_url(
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

fn valid_header(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// 1-based line of byte `offset` in `src`.
fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Collects problems with lines from spans.
struct Problems<'a> {
    src: &'a str,
    list: &'a mut Vec<Problem>,
}

impl Problems<'_> {
    fn at<T>(&mut self, at: &Spanned<T>, key: &str, message: &str) {
        self.list.push(Problem {
            line: Some(line_of(self.src, at.span().start)),
            key: key.to_string(),
            message: message.to_string(),
        });
    }

    fn duration(&mut self, v: &Spanned<String>, key: &str) -> Option<Duration> {
        match parse_duration(v.get_ref()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.at(v, key, &e);
                None
            }
        }
    }

    fn rule_id(&mut self, name: &Spanned<String>, key: &str) -> Option<RuleId> {
        let id = RuleId::from_name(name.get_ref());
        if id.is_none() {
            let known: Vec<&str> = RuleId::ALL.iter().map(|r| r.name()).collect();
            self.at(
                name,
                &format!("{key}.{}", name.get_ref()),
                &format!("unknown rule (known: {})", known.join(", ")),
            );
        }
        id
    }

    fn patterns(&mut self, list: &Spanned<Vec<Spanned<String>>>, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for p in list.get_ref() {
            if p.get_ref().is_empty() {
                self.at(p, key, "an empty pattern matches nothing");
            } else {
                out.push(p.get_ref().clone());
            }
        }
        out
    }

    /// The patch a `[rules.X]` table makes, and the line of its threshold (or of the first
    /// key set).
    fn patch(&mut self, id: RuleId, r: &RawRule, key: &str) -> (RulePatch, Option<usize>) {
        let mut patch = RulePatch {
            enabled: r.enabled,
            severity: r.severity,
            ..RulePatch::default()
        };
        let mut first: Option<usize> = None;
        let mut seen = |s: std::ops::Range<usize>, src: &str| {
            // Thresholds are looked at first: a problem with the band points at them.
            first.get_or_insert(line_of(src, s.start));
        };
        let kind = id.kind();
        for (name, v) in [("threshold", &r.threshold), ("resolve", &r.resolve)] {
            let Some(v) = v else { continue };
            seen(v.span(), self.src);
            let k = format!("{key}.{name}");
            match kind {
                Kind::Condition => self.at(
                    v,
                    &k,
                    &format!(
                        "rule `{}` has no threshold (only for, resolve_for, severity, enabled)",
                        id.name()
                    ),
                ),
                Kind::Below => self.at(
                    v,
                    &k,
                    "use `within` / `resolve_within` (durations) for filesystem_fill",
                ),
                Kind::Above if !v.get_ref().is_finite() => self.at(v, &k, "must be a number"),
                Kind::Above if name == "threshold" => patch.threshold = Some(*v.get_ref()),
                Kind::Above => patch.resolve = Some(*v.get_ref()),
            }
        }
        for (name, v) in [("within", &r.within), ("resolve_within", &r.resolve_within)] {
            let Some(v) = v else { continue };
            seen(v.span(), self.src);
            let k = format!("{key}.{name}");
            if kind != Kind::Below {
                self.at(
                    v,
                    &k,
                    "only `filesystem_fill` has `within`; use threshold / resolve",
                );
                continue;
            }
            if let Some(d) = self.duration(v, &k) {
                let secs = d.as_secs_f64();
                if name == "within" {
                    patch.threshold = Some(secs);
                } else {
                    patch.resolve = Some(secs);
                }
            }
        }
        for (name, v, slot) in [
            ("for", &r.for_, &mut patch.for_),
            ("resolve_for", &r.resolve_for, &mut patch.resolve_for),
        ] {
            if let Some(v) = v {
                seen(v.span(), self.src);
                *slot = self.duration(v, &format!("{key}.{name}"));
            }
        }
        (patch, first)
    }
}

// ---- The file as written ----------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    settings: RawSettings,
    #[serde(default)]
    rules: BTreeMap<Spanned<String>, RawRule>,
    #[serde(default, rename = "override")]
    overrides: Vec<RawOverride>,
    #[serde(default, rename = "silence")]
    silences: Vec<RawSilence>,
    #[serde(default)]
    notify: RawNotify,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    evaluate_every: Option<Spanned<String>>,
    recent: Option<Spanned<i64>>,
    external_url: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    enabled: Option<bool>,
    threshold: Option<Spanned<f64>>,
    resolve: Option<Spanned<f64>>,
    #[serde(rename = "for")]
    for_: Option<Spanned<String>>,
    resolve_for: Option<Spanned<String>>,
    severity: Option<Severity>,
    within: Option<Spanned<String>>,
    resolve_within: Option<Spanned<String>>,
    window: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    agents: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    rules: BTreeMap<Spanned<String>, RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSilence {
    #[serde(default = "no_patterns")]
    agents: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    rules: Vec<Spanned<String>>,
    until: Option<Spanned<When>>,
    comment: Option<String>,
}

fn no_patterns() -> Spanned<Vec<Spanned<String>>> {
    Spanned::new(0..0, Vec::new())
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum When {
    Datetime(toml::value::Datetime),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    queue: Option<Spanned<i64>>,
    timeout: Option<Spanned<String>>,
    retry_for: Option<Spanned<String>>,
    retry_min: Option<Spanned<String>>,
    retry_max: Option<Spanned<String>>,
    #[serde(default)]
    webhook: Vec<RawWebhook>,
    #[serde(default)]
    alertmanager: Vec<RawAlertmanager>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: Spanned<String>,
    format: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    url: Spanned<String>,
    resend_every: Option<Spanned<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<AlertsConfig, ConfigError> {
        AlertsConfig::parse(src, "alerts.toml", &AlertFlags::default())
    }

    #[track_caller]
    fn problems(src: &str) -> Vec<Problem> {
        match parse(src) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.problems,
        }
    }

    /// The example in the module documentation, as shipped in the README.
    const EXAMPLE: &str = r#"
[settings]
evaluate_every = "5s"
recent = 50
external_url = "http://lanmon.example:8081/"

[rules.cpu]
threshold = 95
for = "10m"
severity = "critical"

[rules.filesystem_fill]
within = "12h"
window = "3h"

[rules.stale]
enabled = false

[[override]]
agents = ["build-*", "4fb43e86c68856c7"]
rules.cpu = { threshold = 99, for = "30m" }

[[silence]]
agents = ["lab-*"]
rules = ["offline"]
until = 2027-01-31T00:00:00Z
comment = "lab machines are switched off at night"

[notify]
timeout = "5s"
queue = 10

[[notify.webhook]]
url = "https://ntfy.sh/my-lanmon-alerts"
format = "ntfy"
headers = { Authorization = "Bearer tk_x" }

[[notify.webhook]]
url = "http://127.0.0.1:9000/hook"

[[notify.alertmanager]]
url = "http://127.0.0.1:9093/"
resend_every = "30s"
"#;

    /// Proves: a full file is read into the settings it describes: base rules with the
    /// default band kept, overrides by glob and id, silences with an end, every target.
    #[test]
    fn example_file_is_read() {
        let c = match parse(EXAMPLE) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.recent, 50);
        assert_eq!(
            c.external_url.as_deref(),
            Some("http://lanmon.example:8081")
        );
        let cpu = c.spec(RuleId::Cpu, &[]);
        assert_eq!((cpu.threshold, cpu.resolve), (95.0, 85.0));
        assert_eq!(cpu.for_, Duration::from_secs(600));
        assert_eq!(cpu.severity, Severity::Critical);
        assert!(!c.spec(RuleId::Stale, &[]).enabled);
        let fill = c.spec(RuleId::FilesystemFill, &[]);
        assert_eq!((fill.threshold, fill.resolve), (43_200.0, 86_400.0));
        assert_eq!(c.fill_window, Duration::from_secs(3 * 3600));

        let build = c.overrides_for("x", "build-7");
        assert_eq!(build, vec![0]);
        let by_id = c.overrides_for("4fb43e86c68856c7", "web");
        assert_eq!(by_id, vec![0]);
        assert!(c.overrides_for("y", "web-1").is_empty());
        let b = c.spec(RuleId::Cpu, &build);
        assert_eq!(
            (b.threshold, b.resolve, b.for_),
            (99.0, 89.0, Duration::from_secs(1800))
        );
        assert_eq!(
            b.severity,
            Severity::Critical,
            "the base file setting stays"
        );

        let before = 1_800_000_000_000; // 2027-01-15
        assert!(c.silence("i", "lab-3", RuleId::Offline, before).is_some());
        assert!(c.silence("i", "lab-3", RuleId::Cpu, before).is_none());
        assert!(c.silence("i", "web-1", RuleId::Offline, before).is_none());
        assert!(
            c.silence("i", "lab-3", RuleId::Offline, 1_900_000_000_000)
                .is_none()
        );

        assert_eq!(c.notify.queue, 10);
        assert_eq!(c.notify.timeout, Duration::from_secs(5));
        assert_eq!(c.notify.webhooks.len(), 2);
        assert_eq!(c.notify.webhooks[0].format, Format::Ntfy);
        assert_eq!(
            c.notify.webhooks[0].headers,
            vec![("Authorization".into(), "Bearer tk_x".into())]
        );
        assert_eq!(c.notify.webhooks[1].format, Format::Lanmon);
        assert_eq!(
            c.notify.alertmanagers,
            vec![AlertmanagerTarget {
                url: "http://127.0.0.1:9093".into(),
                resend_every: Duration::from_secs(30)
            }]
        );
    }

    /// Proves: every semantic problem of a file is reported, each with its line and key.
    #[test]
    fn every_problem_named_with_line_and_key() {
        let src = r#"
[rules.cpu]
threshold = 120

[rules.memory]
threshold = 50
resolve = 60

[rules.offline]
threshold = 3

[rules.cpux]
for = "1m"

[rules.load]
for = "soon"

[[override]]
agents = []

[[notify.webhook]]
url = "ftp://example"
"#;
        let got = problems(src);
        let lines: Vec<(Option<usize>, &str)> =
            got.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert!(lines.contains(&(Some(3), "rules.cpu")), "{got:#?}");
        assert!(lines.contains(&(Some(6), "rules.memory")), "{got:#?}");
        assert!(
            lines.contains(&(Some(10), "rules.offline.threshold")),
            "{got:#?}"
        );
        assert!(lines.contains(&(Some(12), "rules.cpux")), "{got:#?}");
        assert!(lines.contains(&(Some(16), "rules.load.for")), "{got:#?}");
        assert!(
            lines.contains(&(Some(19), "override[0].agents")),
            "{got:#?}"
        );
        assert!(
            lines.contains(&(Some(22), "notify.webhook[0].url")),
            "{got:#?}"
        );
        let text = ConfigError {
            source_name: "alerts.toml".into(),
            problems: got,
        }
        .to_string();
        assert!(text.starts_with("alerts: alerts.toml: 7 problems\n  line 3: rules.cpu: threshold must be between 0 and 100%, got 120"), "{text}");
    }

    /// Proves: a syntax error or an unknown key stops the parse with its line and a message
    /// that names the key.
    #[test]
    fn syntax_and_unknown_keys() {
        let p = problems("[rules.cpu]\nthreshold = 90\nthresold = 80\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, Some(3), "{p:?}");
        assert!(p[0].message.contains("thresold"), "{p:?}");
        let p = problems("[settings]\nevaluate_every = 5s\n");
        assert_eq!(p[0].line, Some(2), "{p:?}");
        let p = problems("[rules.cpu]\nseverity = \"loud\"\n");
        assert_eq!(p[0].line, Some(2), "{p:?}");
        assert!(p[0].message.contains("loud"), "{p:?}");
    }

    /// Proves: flags are the layer under the file: the file wins where both speak, flags
    /// stay where it is silent, targets from both add up; bad flag values are refused.
    #[test]
    fn flags_under_the_file() {
        let flags = AlertFlags {
            rules: vec![
                (
                    RuleId::Cpu,
                    RulePatch {
                        threshold: Some(70.0),
                        for_: Some(Duration::from_secs(1)),
                        ..RulePatch::default()
                    },
                ),
                (
                    RuleId::Memory,
                    RulePatch {
                        threshold: Some(60.0),
                        ..RulePatch::default()
                    },
                ),
            ],
            alertmanagers: vec!["http://127.0.0.1:9093".into()],
            ..AlertFlags::default()
        };
        let Ok(c) = AlertsConfig::parse("[rules.cpu]\nthreshold = 75\n", "f", &flags) else {
            panic!("refused");
        };
        let cpu = c.spec(RuleId::Cpu, &[]);
        assert_eq!(
            (cpu.threshold, cpu.resolve, cpu.for_),
            (75.0, 65.0, Duration::from_secs(1))
        );
        assert_eq!(c.spec(RuleId::Memory, &[]).threshold, 60.0);
        assert_eq!(c.notify.alertmanagers.len(), 1);
        let bad = AlertFlags {
            rules: vec![(
                RuleId::Cpu,
                RulePatch {
                    threshold: Some(150.0),
                    ..RulePatch::default()
                },
            )],
            ..AlertFlags::default()
        };
        let Err(e) = AlertsConfig::from_flags(&bad) else {
            panic!("accepted a CPU threshold of 150");
        };
        assert_eq!(e.problems[0].key, "--alert-cpu");
    }

    /// Proves: the glob matcher's `*` and `?`, anchored at both ends.
    #[test]
    fn globs() {
        assert!(glob_match("web-*", "web-1"));
        assert!(glob_match("web-*", "web-"));
        assert!(!glob_match("web-*", "db-web-1"));
        assert!(glob_match("*-1", "db-web-1"));
        assert!(glob_match("w?b*1", "web-12341"));
        assert!(!glob_match("w?b", "wb"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exact2"));
    }
}
