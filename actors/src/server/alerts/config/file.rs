//! The rules file as written (TOML): read into [`AlertsConfig`] over the flags and checked
//! whole, each problem reported with its line (from the TOML spans) and its key. The format is
//! in the module documentation of [`super`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::server::alerts::rules::{Kind, RuleId, Severity};

use super::settings::check_spec;
use super::targets::{check_url, valid_header};
use super::{
    AlertFlags, AlertmanagerTarget, AlertsConfig, ConfigError, DEFAULT_RESEND_EVERY, Format,
    MAX_RECENT, MIN_EVALUATE_EVERY, Override, Problem, RulePatch, Silence, Webhook,
};

/// Parses `5s`, `500ms`, `1m`, `1h30m`, `7d`; a bare number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (examples: 30s, 5m, 1h, 7d)"))
}

impl AlertsConfig {
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
}
