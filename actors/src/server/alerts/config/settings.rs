//! The layers under the file: the built-in defaults, then the `--alert-*` flags
//! ([`AlertFlags`]), each a [`RulePatch`]; what the server keeps to read the settings again
//! on SIGHUP ([`AlertsSettings`]); the check of a rule's final settings (`check_spec`).

use std::path::PathBuf;
use std::time::Duration;

use crate::server::alerts::rules::{Kind, RuleId, RuleSpec, Severity};

use super::targets::check_url;
use super::{
    AlertmanagerTarget, AlertsConfig, ConfigError, DEFAULT_RESEND_EVERY, Format,
    MIN_EVALUATE_EVERY, Problem, Webhook,
};

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

    /// Applies `flags` over the settings, adding what is wrong with them to `problems`.
    pub(super) fn apply_flags(&mut self, flags: &AlertFlags, problems: &mut Vec<Problem>) {
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
}

/// Checks a rule's final settings: threshold in range, the band the right way round, no
/// threshold on condition rules (flags and patches can only set it where it means something).
pub(super) fn check_spec(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
