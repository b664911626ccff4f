//! The alert rules file (`server --alerts FILE`, TOML) and the settings it makes, one role
//! per file:
//!
//! - `mod.rs`: [`AlertsConfig`], the settings in force, and the evaluation defaults;
//! - `settings.rs`: the layers under the file ([`AlertFlags`], [`RulePatch`]), what the
//!   server keeps to reload ([`AlertsSettings`]), the check of a rule's final settings;
//! - `file.rs`: the TOML as written, read and checked whole with a line per problem;
//! - `select.rs`: which `[[override]]` and `[[silence]]` apply to an agent (globs);
//! - `targets.rs`: where notifications go ([`NotifyConfig`], webhooks, Alertmanagers);
//! - `error.rs`: [`Problem`] and [`ConfigError`].
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

mod error;
mod file;
mod select;
mod settings;
mod targets;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::server::alerts::rules::{DEFAULT_FILL_WINDOW, RuleId, RuleSpec, Severity};

pub use error::{ConfigError, Problem};
pub use file::parse_duration;
pub use select::{Override, Silence, glob_match};
pub use settings::{AlertFlags, AlertsSettings, RulePatch};
pub use targets::{
    AlertmanagerTarget, DEFAULT_QUEUE, DEFAULT_RESEND_EVERY, DEFAULT_RETRY_FOR, DEFAULT_RETRY_MAX,
    DEFAULT_RETRY_MIN, DEFAULT_TIMEOUT, Format, NotifyConfig, Webhook,
};

/// How often the rules run unless configured.
pub const DEFAULT_EVALUATE_EVERY: Duration = Duration::from_secs(5);
/// Shortest evaluation period accepted.
pub const MIN_EVALUATE_EVERY: Duration = Duration::from_millis(100);
/// Resolved alerts kept for `/api/alerts` unless configured.
pub const DEFAULT_RECENT: usize = 100;
/// Most resolved alerts kept.
pub const MAX_RECENT: usize = 10_000;

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

impl AlertsConfig {
    /// The rules enabled before overrides, with their severity (the `lanmon_alerts` series).
    pub fn enabled_rules(&self) -> Vec<(RuleId, Severity)> {
        self.rules
            .iter()
            .filter(|(_, s)| s.enabled)
            .map(|(r, s)| (*r, s.severity))
            .collect()
    }
}
