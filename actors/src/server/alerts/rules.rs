//! The built-in rules: what each one looks at, its default threshold and waits, and how an
//! agent's [`Inputs`] become one [`Observation`] per alert subject.
//!
//! | rule | fires when | default | `for` | resolves below | `resolve_for` | severity |
//! |---|---|---|---|---|---|---|
//! | `offline` | the agent is disconnected | — | 1m | (back) | 0 | critical |
//! | `stale` | connected, no sample for 2¼ intervals | — | 1m | (sampling) | 0 | warning |
//! | `cpu` | CPU usage of the whole machine, % | > 90 | 5m | 80 | 1m | warning |
//! | `memory` | memory used (total − available), % | > 90 | 5m | 85 | 1m | warning |
//! | `swap` | swap used, % | > 80 | 10m | 70 | 1m | warning |
//! | `load` | 1-minute load average per core | > 2 | 10m | 1.5 | 1m | warning |
//! | `filesystem` | a filesystem used (size − avail), % | > 90 | 1m | 85 | 1m | warning |
//! | `filesystem_fill` | a filesystem predicted full within | 24h | 10m | 48h | 10m | warning |
//! | `clock` | the agent's clock offset, seconds (absolute) | > 2 | 5m | 1 | 1m | warning |
//! | `temperature` | a sensor, °C | > 85 | 5m | 80 | 1m | warning |
//! | `pending` | the agent waits for approval | — | 0 | (approved) | 0 | info |
//! | `unauthenticated` | the agent connects without authentication | — | 0 | — | 0 | warning |
//!
//! `filesystem_fill` fits a least-squares line through the filesystem's available bytes over
//! the last `window` (default 6h), like Prometheus' `predict_linear`, and fires when the line
//! reaches zero within `within`; it needs at least a quarter of the window of data.
//!
//! Every rule reads the agent's snapshot entry ([`Inputs::from_view`]): CPU and memory from
//! its latest sample, swap, load, filesystems, temperatures and the clock offset from its
//! whole-machine view (`AgentView.host`); readings of an agent that is not live are left out.
//! A rule whose input is missing (an agent that does not send the group, a host without swap
//! or sensors) observes nothing and never fires. The fill history behind `filesystem_fill` is
//! the engine's ([`crate::server::alerts::fill`]). `pending` and `unauthenticated` read the
//! agent's `auth` (the snapshot's pending agents are evaluated as agents with `auth: pending`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::server::alerts::state::{Level, Timing};
use crate::snapshot::{AgentAuth, AgentView, Status};

/// How urgent an alert is (a label in every notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A built-in rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleId {
    Offline,
    Stale,
    Cpu,
    Memory,
    Swap,
    Load,
    Filesystem,
    FilesystemFill,
    Clock,
    Temperature,
    Pending,
    Unauthenticated,
}

/// How a rule compares its value with its thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A yes/no condition: no threshold.
    Condition,
    /// Fires above `threshold`, clears below `resolve` (`resolve <= threshold`).
    Above,
    /// A time left, in seconds: fires below `threshold`, clears above `resolve`
    /// (`resolve >= threshold`).
    Below,
}

impl RuleId {
    /// Every rule, in the order they are shown.
    pub const ALL: [RuleId; 12] = [
        RuleId::Offline,
        RuleId::Stale,
        RuleId::Cpu,
        RuleId::Memory,
        RuleId::Swap,
        RuleId::Load,
        RuleId::Filesystem,
        RuleId::FilesystemFill,
        RuleId::Clock,
        RuleId::Temperature,
        RuleId::Pending,
        RuleId::Unauthenticated,
    ];

    /// The rule's name in the config file, the API and the labels.
    pub fn name(self) -> &'static str {
        match self {
            RuleId::Offline => "offline",
            RuleId::Stale => "stale",
            RuleId::Cpu => "cpu",
            RuleId::Memory => "memory",
            RuleId::Swap => "swap",
            RuleId::Load => "load",
            RuleId::Filesystem => "filesystem",
            RuleId::FilesystemFill => "filesystem_fill",
            RuleId::Clock => "clock",
            RuleId::Temperature => "temperature",
            RuleId::Pending => "pending",
            RuleId::Unauthenticated => "unauthenticated",
        }
    }

    pub fn from_name(name: &str) -> Option<RuleId> {
        RuleId::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Alertmanager's `alertname` label: `Lanmon` and the rule in CamelCase.
    pub fn alertname(self) -> &'static str {
        match self {
            RuleId::Offline => "LanmonAgentOffline",
            RuleId::Stale => "LanmonAgentStale",
            RuleId::Cpu => "LanmonCpuHigh",
            RuleId::Memory => "LanmonMemoryHigh",
            RuleId::Swap => "LanmonSwapHigh",
            RuleId::Load => "LanmonLoadHigh",
            RuleId::Filesystem => "LanmonFilesystemFull",
            RuleId::FilesystemFill => "LanmonFilesystemFillingUp",
            RuleId::Clock => "LanmonClockOffset",
            RuleId::Temperature => "LanmonTemperatureHigh",
            RuleId::Pending => "LanmonAgentPending",
            RuleId::Unauthenticated => "LanmonAgentUnauthenticated",
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            RuleId::Offline | RuleId::Stale | RuleId::Pending | RuleId::Unauthenticated => {
                Kind::Condition
            }
            RuleId::FilesystemFill => Kind::Below,
            _ => Kind::Above,
        }
    }

    /// The unit of the threshold, for messages and docs.
    pub fn unit(self) -> &'static str {
        match self {
            RuleId::Cpu | RuleId::Memory | RuleId::Swap | RuleId::Filesystem => "%",
            RuleId::Load => " per core",
            RuleId::Clock => " s",
            RuleId::Temperature => " °C",
            RuleId::FilesystemFill => " s",
            _ => "",
        }
    }

    /// The range a threshold of this rule must be in.
    pub fn threshold_range(self) -> (f64, f64) {
        match self {
            RuleId::Cpu | RuleId::Memory | RuleId::Swap | RuleId::Filesystem => (0.0, 100.0),
            RuleId::Load => (0.0, 1000.0),
            RuleId::Clock => (0.0, 86_400.0),
            RuleId::Temperature => (-100.0, 300.0),
            RuleId::FilesystemFill => (1.0, 366.0 * 86_400.0),
            _ => (0.0, 0.0),
        }
    }

    /// The built-in settings (see the module table).
    pub fn default_spec(self) -> RuleSpec {
        let m = |n: u64| Duration::from_secs(60 * n);
        let (threshold, resolve, for_, resolve_for, severity) = match self {
            RuleId::Offline => (0.0, 0.0, m(1), Duration::ZERO, Severity::Critical),
            RuleId::Stale => (0.0, 0.0, m(1), Duration::ZERO, Severity::Warning),
            RuleId::Cpu => (90.0, 80.0, m(5), m(1), Severity::Warning),
            RuleId::Memory => (90.0, 85.0, m(5), m(1), Severity::Warning),
            RuleId::Swap => (80.0, 70.0, m(10), m(1), Severity::Warning),
            RuleId::Load => (2.0, 1.5, m(10), m(1), Severity::Warning),
            RuleId::Filesystem => (90.0, 85.0, m(1), m(1), Severity::Warning),
            RuleId::FilesystemFill => (
                24.0 * 3600.0,
                48.0 * 3600.0,
                m(10),
                m(10),
                Severity::Warning,
            ),
            RuleId::Clock => (2.0, 1.0, m(5), m(1), Severity::Warning),
            RuleId::Temperature => (85.0, 80.0, m(5), m(1), Severity::Warning),
            RuleId::Pending => (0.0, 0.0, Duration::ZERO, Duration::ZERO, Severity::Info),
            RuleId::Unauthenticated => {
                (0.0, 0.0, Duration::ZERO, Duration::ZERO, Severity::Warning)
            }
        };
        RuleSpec {
            enabled: true,
            threshold,
            resolve,
            for_,
            resolve_for,
            severity,
        }
    }
}

/// Default fit window of `filesystem_fill`.
pub const DEFAULT_FILL_WINDOW: Duration = Duration::from_secs(6 * 3600);

/// One rule's settings for one agent (the defaults, then flags, the file, overrides).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleSpec {
    pub enabled: bool,
    /// Fire threshold, in the rule's unit (ignored by condition rules).
    pub threshold: f64,
    /// Resolve threshold: the other side of the hysteresis band.
    pub resolve: f64,
    pub for_: Duration,
    pub resolve_for: Duration,
    pub severity: Severity,
}

impl RuleSpec {
    pub fn timing(&self) -> Timing {
        Timing {
            for_: self.for_,
            resolve_for: self.resolve_for,
        }
    }
}

/// An agent as the rules see it: every input optional. Filled from the snapshot by
/// [`Inputs::from_view`]; tests build it directly.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inputs {
    pub status: Option<Status>,
    pub cores: u32,
    /// CPU usage of the whole machine, % (live agents only).
    pub cpu_percent: Option<f64>,
    /// Memory used (total − available), % (live agents only).
    pub memory_used_percent: Option<f64>,
    /// Swap used, % of swap total (`None` also when there is no swap).
    pub swap_used_percent: Option<f64>,
    /// 1-minute load average (the rule divides it by `cores`).
    pub load1: Option<f64>,
    /// Mounted filesystems.
    pub filesystems: Vec<FsInput>,
    /// Temperature sensors.
    pub temperatures: Vec<TempInput>,
    /// The agent's clock minus the server's, seconds.
    pub clock_offset_s: Option<f64>,
    /// How the server knows the agent (`None` with `--auth off`, or not connected since the
    /// server started).
    pub auth: Option<AuthState>,
}

/// A mounted filesystem.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FsInput {
    pub mountpoint: String,
    pub size_bytes: u64,
    /// Available to unprivileged users (what `df` shows as Avail).
    pub avail_bytes: u64,
    /// Seconds until the fitted line of `avail_bytes` reaches zero: filled by the engine from
    /// its fill history ([`crate::server::alerts::fill`]) (`None`: not enough history; `Some(INFINITY)`: not filling).
    pub seconds_to_full: Option<f64>,
}

/// A temperature sensor.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TempInput {
    pub label: String,
    pub celsius: f64,
}

/// Whether the server trusts the agent (the snapshot's `auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthState {
    Authenticated,
    Pending,
    Unauthenticated,
    /// Its key was revoked (no rule fires on this alone: the agent is offline, refused).
    Revoked,
}

impl Inputs {
    /// The rules' inputs from an agent's snapshot entry. Readings of an agent that is not
    /// live are left out: they are old, and an alert on them resolves.
    pub fn from_view(a: &AgentView) -> Inputs {
        let auth = a.auth.map(|x| match x {
            AgentAuth::Approved => AuthState::Authenticated,
            AgentAuth::Pending => AuthState::Pending,
            AgentAuth::Unauthenticated => AuthState::Unauthenticated,
            AgentAuth::Revoked => AuthState::Revoked,
        });
        if auth == Some(AuthState::Pending) {
            // A key waiting for approval: no connection, no readings; only `pending` applies.
            return Inputs {
                auth,
                ..Inputs::default()
            };
        }
        let live = a.status == Status::Live;
        let cpu_percent = a.cpu.as_ref().filter(|_| live).map(|c| f64::from(c.total));
        let memory_used_percent = a
            .memory
            .filter(|m| live && m.total > 0)
            .map(|m| m.used as f64 * 100.0 / m.total as f64);
        let host = &a.host;
        let swap_used_percent = host
            .swap
            .filter(|s| live && s.total_bytes > 0)
            .map(|s| s.used_bytes.min(s.total_bytes) as f64 * 100.0 / s.total_bytes as f64);
        let load1 = host
            .load
            .as_ref()
            .filter(|_| live)
            .map(|l| f64::from(l.load1));
        let filesystems = host
            .filesystems
            .iter()
            .flatten()
            .filter(|_| live)
            .map(|f| FsInput {
                mountpoint: f.mount.clone(),
                size_bytes: f.size_bytes,
                avail_bytes: f.avail_bytes,
                seconds_to_full: None,
            })
            .collect();
        let temperatures = host
            .temperatures
            .iter()
            .flatten()
            .filter(|_| live)
            .map(|t| TempInput {
                label: t.sensor.clone(),
                celsius: f64::from(t.temp_c),
            })
            .collect();
        let clock_offset_s = host
            .clock_offset_ms
            .filter(|_| live)
            .map(|ms| ms as f64 / 1000.0);
        Inputs {
            status: Some(a.status),
            cores: a.cores,
            cpu_percent,
            memory_used_percent,
            swap_used_percent,
            load1,
            filesystems,
            temperatures,
            clock_offset_s,
            auth,
        }
    }
}

/// What one rule says about one subject of one agent at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The filesystem's mount point or the sensor's label; `None` for whole-agent rules.
    pub subject: Option<String>,
    pub level: Level,
    /// The value compared (in the rule's unit), when there is one.
    pub value: Option<f64>,
}

fn above(value: f64, spec: &RuleSpec) -> Level {
    if value > spec.threshold {
        Level::Fire
    } else if value < spec.resolve {
        Level::Clear
    } else {
        Level::Hold
    }
}

fn below(value: f64, spec: &RuleSpec) -> Level {
    if value < spec.threshold {
        Level::Fire
    } else if value > spec.resolve {
        Level::Clear
    } else {
        Level::Hold
    }
}

fn condition(yes: bool) -> Level {
    if yes { Level::Fire } else { Level::Clear }
}

/// Appends `rule`'s observations of `inputs` to `out`: none when the input is missing (the
/// rule then cannot fire; an alert it had resolves).
pub fn observe(rule: RuleId, spec: &RuleSpec, inputs: &Inputs, out: &mut Vec<Observation>) {
    let whole = |level: Level, value: Option<f64>| Observation {
        subject: None,
        level,
        value,
    };
    let value = |v: Option<f64>, out: &mut Vec<Observation>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            out.push(whole(above(v, spec), Some(v)));
        }
    };
    match rule {
        RuleId::Offline => {
            if let Some(s) = inputs.status {
                out.push(whole(condition(s == Status::Offline), None));
            }
        }
        RuleId::Stale => {
            if let Some(s) = inputs.status {
                out.push(whole(condition(s == Status::Stale), None));
            }
        }
        RuleId::Cpu => value(inputs.cpu_percent, out),
        RuleId::Memory => value(inputs.memory_used_percent, out),
        RuleId::Swap => value(inputs.swap_used_percent, out),
        RuleId::Load => value(
            inputs
                .load1
                .filter(|_| inputs.cores > 0)
                .map(|l| l / f64::from(inputs.cores)),
            out,
        ),
        RuleId::Clock => value(inputs.clock_offset_s.map(f64::abs), out),
        RuleId::Filesystem => {
            for fs in inputs.filesystems.iter().filter(|f| f.size_bytes > 0) {
                let used = fs.size_bytes.saturating_sub(fs.avail_bytes) as f64 * 100.0
                    / fs.size_bytes as f64;
                out.push(Observation {
                    subject: Some(fs.mountpoint.clone()),
                    level: above(used, spec),
                    value: Some(used),
                });
            }
        }
        RuleId::FilesystemFill => {
            for fs in &inputs.filesystems {
                if let Some(left) = fs.seconds_to_full.filter(|s| !s.is_nan()) {
                    out.push(Observation {
                        subject: Some(fs.mountpoint.clone()),
                        level: below(left, spec),
                        value: left.is_finite().then_some(left),
                    });
                }
            }
        }
        RuleId::Temperature => {
            for t in inputs.temperatures.iter().filter(|t| t.celsius.is_finite()) {
                out.push(Observation {
                    subject: Some(t.label.clone()),
                    level: above(t.celsius, spec),
                    value: Some(t.celsius),
                });
            }
        }
        RuleId::Pending => {
            if let Some(a) = inputs.auth {
                out.push(whole(condition(a == AuthState::Pending), None));
            }
        }
        RuleId::Unauthenticated => {
            if let Some(a) = inputs.auth {
                out.push(whole(condition(a == AuthState::Unauthenticated), None));
            }
        }
    }
}

/// One line about an alert for people: `CPU 93.4% (above 90% for 5m)`.
pub fn describe(
    rule: RuleId,
    subject: Option<&str>,
    value: Option<f64>,
    spec: &RuleSpec,
) -> String {
    let for_ = humantime::format_duration(spec.for_).to_string();
    let on = subject.map(|s| format!(" {s}")).unwrap_or_default();
    let v = |digits: usize| {
        value
            .map(|v| format!("{v:.digits$}"))
            .unwrap_or_else(|| "?".into())
    };
    match rule {
        RuleId::Offline => format!("agent offline for more than {for_}"),
        RuleId::Stale => format!("no sample for more than {for_}"),
        RuleId::Pending => "agent waits for approval".into(),
        RuleId::Unauthenticated => "agent connects without authentication".into(),
        RuleId::Cpu => format!("CPU {}% (above {}% for {for_})", v(1), spec.threshold),
        RuleId::Memory => format!(
            "memory used {}% (above {}% for {for_})",
            v(1),
            spec.threshold
        ),
        RuleId::Swap => format!("swap used {}% (above {}% for {for_})", v(1), spec.threshold),
        RuleId::Load => format!(
            "load {} per core (above {} for {for_})",
            v(2),
            spec.threshold
        ),
        RuleId::Clock => format!(
            "clock off by {} s (more than {} s for {for_})",
            v(1),
            spec.threshold
        ),
        RuleId::Temperature => format!(
            "temperature{on} {} °C (above {} °C for {for_})",
            v(1),
            spec.threshold
        ),
        RuleId::Filesystem => format!("filesystem{on} {}% used (above {}%)", v(1), spec.threshold),
        RuleId::FilesystemFill => {
            let left = value
                .map(|s| {
                    humantime::format_duration(Duration::from_secs(s.max(0.0) as u64)).to_string()
                })
                .unwrap_or_else(|| "?".into());
            let within = humantime::format_duration(Duration::from_secs(spec.threshold as u64));
            format!("filesystem{on} predicted full in {left} (within {within})")
        }
    }
}

// ---- predict_linear ---------------------------------------------------------------------------

/// The least-squares line through `points` (`(ts_ms, value)`), evaluated at `at_ms`: what
/// Prometheus' `predict_linear(v[range], t)` computes. `None` for fewer than two points or
/// when all points share one time.
pub fn predict_linear(points: &[(u64, f64)], at_ms: u64) -> Option<f64> {
    let (slope, intercept, origin) = fit(points)?;
    Some(intercept + slope * (at_ms as f64 - origin) / 1000.0)
}

/// Seconds from `now_ms` until the least-squares line through `points` reaches zero:
/// `Some(INFINITY)` when the line does not go down, `Some(0.0)` when it is already at or
/// below zero, `None` when there is no line (see [`predict_linear`]).
pub fn seconds_until_zero(points: &[(u64, f64)], now_ms: u64) -> Option<f64> {
    let (slope, intercept, origin) = fit(points)?;
    let now = (now_ms as f64 - origin) / 1000.0;
    let value_now = intercept + slope * now;
    if value_now <= 0.0 {
        return Some(0.0);
    }
    if slope >= 0.0 {
        return Some(f64::INFINITY);
    }
    Some(-value_now / slope)
}

/// `(slope per second, value at origin, origin ms)`, times taken relative to the first point
/// so that epoch milliseconds lose no precision.
fn fit(points: &[(u64, f64)]) -> Option<(f64, f64, f64)> {
    if points.len() < 2 {
        return None;
    }
    let origin = points[0].0 as f64;
    let n = points.len() as f64;
    let xs = points.iter().map(|&(t, _)| (t as f64 - origin) / 1000.0);
    let mean_x = xs.clone().sum::<f64>() / n;
    let mean_y = points.iter().map(|&(_, v)| v).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, &(_, y)) in xs.zip(points) {
        sxy += (x - mean_x) * (y - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((slope, mean_y - slope * mean_x, origin))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::fixtures::agent;

    fn observed(rule: RuleId, inputs: &Inputs) -> Vec<Observation> {
        let mut out = Vec::new();
        observe(rule, &rule.default_spec(), inputs, &mut out);
        out
    }

    /// Proves: the defaults are what the README's table says, and each Above rule's resolve
    /// threshold is below its fire threshold (Below: above).
    #[test]
    fn defaults_are_consistent() {
        let cpu = RuleId::Cpu.default_spec();
        assert_eq!((cpu.threshold, cpu.resolve), (90.0, 80.0));
        assert_eq!(cpu.for_, Duration::from_secs(300));
        assert_eq!(RuleId::Offline.default_spec().severity, Severity::Critical);
        for r in RuleId::ALL {
            let s = r.default_spec();
            match r.kind() {
                Kind::Above => assert!(s.resolve <= s.threshold, "{r:?}"),
                Kind::Below => assert!(s.resolve >= s.threshold, "{r:?}"),
                Kind::Condition => {}
            }
            assert_eq!(RuleId::from_name(r.name()), Some(r));
        }
    }

    /// Proves: CPU and memory come from a live agent's snapshot entry with the hysteresis
    /// levels; a stale or offline agent gives no CPU/memory input, only its status.
    #[test]
    fn inputs_from_the_snapshot() {
        let mut a = agent("web-1", Status::Live);
        a.cpu = Some(crate::protocol::Cpu {
            total: 95.0,
            per_core: vec![95.0, 95.0],
        });
        let inputs = Inputs::from_view(&a);
        assert_eq!(inputs.cpu_percent, Some(95.0));
        assert_eq!(inputs.memory_used_percent, Some(37.5));
        assert_eq!(observed(RuleId::Cpu, &inputs)[0].level, Level::Fire);
        assert_eq!(observed(RuleId::Memory, &inputs)[0].level, Level::Clear);
        assert_eq!(observed(RuleId::Offline, &inputs)[0].level, Level::Clear);
        let stale = Inputs::from_view(&agent("x", Status::Stale));
        assert_eq!(stale.cpu_percent, None);
        assert!(observed(RuleId::Cpu, &stale).is_empty());
        assert_eq!(observed(RuleId::Stale, &stale)[0].level, Level::Fire);
        let off = Inputs::from_view(&agent("y", Status::Offline));
        assert_eq!(observed(RuleId::Offline, &off)[0].level, Level::Fire);
        assert_eq!(observed(RuleId::Stale, &off)[0].level, Level::Clear);
    }

    /// Proves: swap, load, filesystems, temperatures and the clock offset come from a live
    /// agent's whole-machine view (load per core, swap and filesystems in %, the offset in
    /// seconds and absolute) and fire past their defaults; a stale agent's are left out.
    #[test]
    fn whole_machine_inputs_from_the_snapshot() {
        use crate::protocol::{Filesystem, Load, Swap, Temperature};
        let mut a = agent("db-1", Status::Live);
        a.host.swap = Some(Swap {
            total_bytes: 1000,
            used_bytes: 900,
        });
        a.host.load = Some(Load {
            load1: 5.0,
            load5: 1.0,
            load15: 1.0,
            running: None,
            threads: None,
            procs: None,
        });
        a.host.filesystems = Some(vec![Filesystem {
            mount: "/var".into(),
            fs_type: "ext4".into(),
            device: "/dev/sda2".into(),
            size_bytes: 1000,
            used_bytes: 940,
            avail_bytes: 20,
            inodes: 0,
            inodes_used: 0,
        }]);
        a.host.temperatures = Some(vec![Temperature {
            sensor: "coretemp Package id 0".into(),
            temp_c: 91.5,
        }]);
        a.host.clock_offset_ms = Some(-3_500);
        let inputs = Inputs::from_view(&a);
        assert_eq!(inputs.swap_used_percent, Some(90.0));
        assert_eq!(inputs.clock_offset_s, Some(-3.5));
        let fired = |rule: RuleId| {
            let o = observed(rule, &inputs);
            assert_eq!(o.len(), 1, "{rule:?}: {o:?}");
            assert_eq!(o[0].level, Level::Fire, "{rule:?}: {o:?}");
            (o[0].subject.clone(), o[0].value)
        };
        assert_eq!(fired(RuleId::Swap), (None, Some(90.0)));
        assert_eq!(fired(RuleId::Load), (None, Some(2.5)), "5 over 2 cores");
        assert_eq!(fired(RuleId::Clock), (None, Some(3.5)));
        assert_eq!(fired(RuleId::Filesystem), (Some("/var".into()), Some(98.0)));
        assert_eq!(
            fired(RuleId::Temperature),
            (Some("coretemp Package id 0".into()), Some(91.5))
        );
        // The fill prediction is the engine's: none from the snapshot alone.
        assert!(observed(RuleId::FilesystemFill, &inputs).is_empty());

        a.status = Status::Stale;
        let stale = Inputs::from_view(&a);
        for r in [
            RuleId::Swap,
            RuleId::Load,
            RuleId::Filesystem,
            RuleId::Clock,
            RuleId::Temperature,
        ] {
            assert!(observed(r, &stale).is_empty(), "{r:?}");
        }
        // No swap at all: no input (not 0 %).
        a.status = Status::Live;
        a.host.swap = Some(Swap {
            total_bytes: 0,
            used_bytes: 0,
        });
        assert_eq!(Inputs::from_view(&a).swap_used_percent, None);
    }

    /// Proves: the fire / hold / clear bands of an Above rule.
    #[test]
    fn hysteresis_band() {
        let spec = RuleId::Cpu.default_spec();
        assert_eq!(above(90.1, &spec), Level::Fire);
        assert_eq!(above(90.0, &spec), Level::Hold);
        assert_eq!(above(80.0, &spec), Level::Hold);
        assert_eq!(above(79.9, &spec), Level::Clear);
    }

    /// Proves: rules whose inputs an agent does not send (or the snapshot does not carry yet:
    /// trust) observe nothing (cannot fire), and work once the inputs are there: one
    /// observation per filesystem and sensor, load divided by the cores.
    #[test]
    fn future_inputs_start_working_when_present() {
        let none = Inputs::from_view(&agent("a", Status::Live));
        for r in [
            RuleId::Swap,
            RuleId::Load,
            RuleId::Filesystem,
            RuleId::FilesystemFill,
            RuleId::Clock,
            RuleId::Temperature,
            RuleId::Pending,
            RuleId::Unauthenticated,
        ] {
            assert!(observed(r, &none).is_empty(), "{r:?}");
        }
        let full = Inputs {
            cores: 4,
            load1: Some(10.0),
            swap_used_percent: Some(10.0),
            clock_offset_s: Some(-5.0),
            filesystems: vec![
                FsInput {
                    mountpoint: "/".into(),
                    size_bytes: 100,
                    avail_bytes: 5,
                    seconds_to_full: Some(3600.0),
                },
                FsInput {
                    mountpoint: "/home".into(),
                    size_bytes: 100,
                    avail_bytes: 50,
                    seconds_to_full: Some(f64::INFINITY),
                },
            ],
            temperatures: vec![TempInput {
                label: "cpu".into(),
                celsius: 90.0,
            }],
            auth: Some(AuthState::Pending),
            ..Inputs::default()
        };
        let load = observed(RuleId::Load, &full);
        assert_eq!((load[0].value, load[0].level), (Some(2.5), Level::Fire));
        assert_eq!(observed(RuleId::Swap, &full)[0].level, Level::Clear);
        assert_eq!(observed(RuleId::Clock, &full)[0].level, Level::Fire);
        let fs = observed(RuleId::Filesystem, &full);
        assert_eq!(fs.len(), 2);
        assert_eq!(
            (fs[0].subject.as_deref(), fs[0].level),
            (Some("/"), Level::Fire)
        );
        assert_eq!(fs[1].level, Level::Clear);
        let fill = observed(RuleId::FilesystemFill, &full);
        assert_eq!(fill[0].level, Level::Fire);
        assert_eq!((fill[1].level, fill[1].value), (Level::Clear, None));
        assert_eq!(observed(RuleId::Temperature, &full)[0].level, Level::Fire);
        assert_eq!(observed(RuleId::Pending, &full)[0].level, Level::Fire);
        assert_eq!(
            observed(RuleId::Unauthenticated, &full)[0].level,
            Level::Clear
        );
    }

    /// Proves: the trust rules read the snapshot's `auth`: an unauthenticated agent fires
    /// `unauthenticated`, an approved one does not; a pending key fires `pending` and nothing
    /// else (it has never connected, so `offline` does not observe it).
    #[test]
    fn trust_rules_read_the_snapshot() {
        let mut v1 = agent("old", Status::Live);
        v1.auth = Some(AgentAuth::Unauthenticated);
        let v1 = Inputs::from_view(&v1);
        assert_eq!(observed(RuleId::Unauthenticated, &v1)[0].level, Level::Fire);
        let mut ok = agent("new", Status::Live);
        ok.auth = Some(AgentAuth::Approved);
        let ok = Inputs::from_view(&ok);
        assert_eq!(
            observed(RuleId::Unauthenticated, &ok)[0].level,
            Level::Clear
        );
        assert_eq!(observed(RuleId::Pending, &ok)[0].level, Level::Clear);
        let pending = crate::snapshot::PendingAgent {
            fp: "SHA256:X".into(),
            id: "p".into(),
            name: "p".into(),
            hostname: "h".into(),
            ip: None,
            first_seen_ms: 1,
            last_seen_ms: None,
        };
        let p = Inputs::from_view(&pending.as_view());
        assert_eq!(observed(RuleId::Pending, &p)[0].level, Level::Fire);
        assert!(observed(RuleId::Offline, &p).is_empty());
        assert!(observed(RuleId::Stale, &p).is_empty());
    }

    /// Proves: the least-squares prediction on a synthetic series: a steady fill is
    /// extrapolated exactly (like predict_linear), noise around the line does not move it
    /// much, a flat or growing series never predicts full, degenerate series predict nothing.
    #[test]
    fn predict_linear_on_synthetic_series() {
        // 1000 bytes free at t = 0, losing 1 byte per second, a point every 10 s for 5 min.
        let steady: Vec<(u64, f64)> = (0..=30)
            .map(|i| (1_700_000_000_000 + i * 10_000, 1000.0 - i as f64 * 10.0))
            .collect();
        let now = steady[30].0;
        assert_eq!(predict_linear(&steady, now), Some(700.0));
        let left = seconds_until_zero(&steady, now).unwrap_or_default();
        assert!((left - 700.0).abs() < 1e-6, "{left}");
        // The same with ±20 bytes of alternating noise.
        let noisy: Vec<(u64, f64)> = steady
            .iter()
            .enumerate()
            .map(|(i, &(t, v))| (t, v + if i % 2 == 0 { 20.0 } else { -20.0 }))
            .collect();
        let left = seconds_until_zero(&noisy, now).unwrap_or_default();
        assert!((left - 700.0).abs() < 60.0, "{left}");
        let flat: Vec<(u64, f64)> = steady.iter().map(|&(t, _)| (t, 500.0)).collect();
        assert_eq!(seconds_until_zero(&flat, now), Some(f64::INFINITY));
        let empty: Vec<(u64, f64)> = steady.iter().map(|&(t, _)| (t, 0.0)).collect();
        assert_eq!(seconds_until_zero(&empty, now), Some(0.0));
        assert_eq!(seconds_until_zero(&steady[..1], now), None);
        assert_eq!(seconds_until_zero(&[(5, 1.0), (5, 2.0)], now), None);
    }

    /// Proves: the description names the value, the threshold and the wait.
    #[test]
    fn descriptions() {
        let spec = RuleId::Cpu.default_spec();
        assert_eq!(
            describe(RuleId::Cpu, None, Some(93.44), &spec),
            "CPU 93.4% (above 90% for 5m)"
        );
        let fill = RuleId::FilesystemFill.default_spec();
        assert_eq!(
            describe(RuleId::FilesystemFill, Some("/var"), Some(7200.0), &fill),
            "filesystem /var predicted full in 2h (within 1day)"
        );
    }
}
