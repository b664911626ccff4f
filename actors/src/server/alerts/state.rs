//! One alert's life: a small pure state machine, `pending → firing → resolved`, with
//! hysteresis, driven by one [`Level`] per evaluation and a clock passed in (ms since the Unix
//! epoch, so a state saved before a restart means the same after it).
//!
//! ```text
//!            Fire                      Fire for `for`              Clear/Unknown for `resolve_for`
//! Inactive ───────▶ Pending ─────────────────────────▶ Firing ────────────────────────────────▶ Resolved
//!                     │ Hold, Clear, Unknown            │ ▲ Fire or Hold: the clear time restarts
//!                     ▼                                 └─┘
//!                  Inactive (no notification)
//! ```
//!
//! Hysteresis, so a value hovering at the threshold does not flap: a rule reports
//! [`Level::Fire`] above its fire threshold, [`Level::Clear`] below its (lower) resolve
//! threshold and [`Level::Hold`] in between. Pending needs `Fire` all along; firing needs
//! `Clear` (or no data) for `resolve_for` to resolve, and anything else starts that wait
//! again. Exactly one [`Transition`] comes out when the alert starts firing and one when it
//! resolves: those are what is notified.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::server::alerts::rules::{RuleId, Severity};

/// What a rule says about its input at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Past the fire threshold.
    Fire,
    /// Between the resolve and the fire threshold: keeps a firing alert firing, does not
    /// make a pending one fire.
    Hold,
    /// Below the resolve threshold.
    Clear,
    /// No data (the agent is not live, or does not send this metric): counts as `Clear`.
    Unknown,
}

/// Where the alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Nothing wrong (or not for long enough to be pending).
    Inactive,
    /// The condition holds, not yet for `for`.
    Pending,
    /// The condition held for `for`; notified.
    Firing,
    /// Was firing; the condition has been clear for `resolve_for`; notified.
    Resolved,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Inactive => "inactive",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
            Phase::Resolved => "resolved",
        }
    }
}

/// A change worth a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    Fired,
    Resolved,
}

impl Transition {
    /// `firing` or `resolved`, as in the notifications.
    pub fn status(self) -> &'static str {
        match self {
            Transition::Fired => "firing",
            Transition::Resolved => "resolved",
        }
    }
}

/// The two waits of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long the condition must hold before the alert fires (0: at once).
    pub for_: Duration,
    /// How long the condition must be clear before a firing alert resolves (0: at once).
    pub resolve_for: Duration,
}

/// One alert's state (see the module documentation). Times are ms since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub phase: Phase,
    /// When the condition started to hold (the start of `Pending`).
    pub started_ms: Option<u64>,
    /// When the alert started firing.
    pub fired_ms: Option<u64>,
    /// While firing: since when the condition has been clear.
    pub clear_since_ms: Option<u64>,
    /// When the alert resolved.
    pub resolved_ms: Option<u64>,
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Machine {
    pub const fn new() -> Self {
        Self {
            phase: Phase::Inactive,
            started_ms: None,
            fired_ms: None,
            clear_since_ms: None,
            resolved_ms: None,
        }
    }

    /// Pending or firing: the alert is worth keeping.
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Pending | Phase::Firing)
    }

    /// Feeds one evaluation at `now_ms`; returns the transition it caused, if any. A resolved
    /// machine that sees `Fire` starts over as a new pending alert.
    pub fn step(&mut self, now_ms: u64, level: Level, timing: Timing) -> Option<Transition> {
        match self.phase {
            Phase::Inactive | Phase::Resolved => {
                if level != Level::Fire {
                    return None;
                }
                *self = Machine {
                    phase: Phase::Pending,
                    started_ms: Some(now_ms),
                    ..Machine::new()
                };
                self.fire_if_due(now_ms, timing)
            }
            Phase::Pending => {
                if level == Level::Fire {
                    self.fire_if_due(now_ms, timing)
                } else {
                    *self = Machine::new();
                    None
                }
            }
            Phase::Firing => match level {
                Level::Fire | Level::Hold => {
                    self.clear_since_ms = None;
                    None
                }
                Level::Clear | Level::Unknown => {
                    let since = *self.clear_since_ms.get_or_insert(now_ms);
                    if now_ms.saturating_sub(since) >= millis(timing.resolve_for) {
                        self.phase = Phase::Resolved;
                        self.resolved_ms = Some(now_ms);
                        self.clear_since_ms = None;
                        Some(Transition::Resolved)
                    } else {
                        None
                    }
                }
            },
        }
    }

    fn fire_if_due(&mut self, now_ms: u64, timing: Timing) -> Option<Transition> {
        let started = self.started_ms.unwrap_or(now_ms);
        if now_ms.saturating_sub(started) >= millis(timing.for_) {
            self.phase = Phase::Firing;
            self.fired_ms = Some(now_ms);
            self.clear_since_ms = None;
            Some(Transition::Fired)
        } else {
            None
        }
    }
}

/// One alert: which agent, rule and subject, its [`Machine`], what it last saw, and whether
/// its notifications went out. This is what the alert store keeps (as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id: a hash of agent id, rule and subject.
    pub id: String,
    /// The agent's id.
    pub agent: String,
    /// The agent's name (and host name, IP) when last seen.
    pub name: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub ip: String,
    pub rule: RuleId,
    /// Mount point or sensor label, for rules with one alert per subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub severity: Severity,
    pub machine: Machine,
    /// The value the rule compared last (while active) or when it resolved.
    pub value: Option<f64>,
    /// The fire threshold in force.
    pub threshold: f64,
    /// One line for people, e.g. `CPU 93.4% (above 90% for 5m)`.
    pub summary: String,
    /// A `[[silence]]` covers it: no notifications.
    #[serde(default)]
    pub silenced: bool,
    /// Its firing was notified (queued to every target); a resolve is notified only then.
    #[serde(default)]
    pub notified: bool,
    /// Its last notification was delivered (or given up after retries, or dropped); one
    /// still undelivered is queued again after a restart.
    #[serde(default)]
    pub delivered: bool,
}

impl Alert {
    /// The id of the alert of `rule` on `agent` (and `subject`).
    pub fn id_for(agent: &str, rule: RuleId, subject: Option<&str>) -> String {
        crate::util::stable_id(&[agent, rule.name(), subject.unwrap_or("")])
    }

    /// Its key in the alert store: the id while active; a resolved alert is kept under the
    /// id and the time it resolved, so the same alert firing again is a new row.
    pub fn store_key(&self) -> String {
        match (self.machine.phase, self.machine.resolved_ms) {
            (Phase::Resolved, Some(at)) => format!("{}@{at}", self.id),
            _ => self.id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        for_: Duration::from_secs(60),
        resolve_for: Duration::from_secs(30),
    };

    /// Feeds `levels` one per 10 s from t = 0; returns the (time, transition) pairs.
    fn run(m: &mut Machine, levels: &[Level]) -> Vec<(u64, Transition)> {
        levels
            .iter()
            .enumerate()
            .filter_map(|(i, &l)| {
                let now = i as u64 * 10_000;
                m.step(now, l, T).map(|t| (now, t))
            })
            .collect()
    }

    use Level::{Clear, Fire, Hold, Unknown};

    /// Proves: an alert fires only once the condition held for `for`, once, and resolves only
    /// once it was clear for `resolve_for`, once.
    #[test]
    fn fires_after_for_and_resolves_after_resolve_for() {
        let mut m = Machine::new();
        let mut levels = vec![Fire; 8]; // 0 .. 70 s
        levels.extend([Clear; 5]); // 80 .. 120 s
        let got = run(&mut m, &levels);
        assert_eq!(
            got,
            vec![(60_000, Transition::Fired), (110_000, Transition::Resolved)]
        );
        assert_eq!(m.phase, Phase::Resolved);
        assert_eq!(
            (m.started_ms, m.fired_ms, m.resolved_ms),
            (Some(0), Some(60_000), Some(110_000))
        );
    }

    /// Proves: a pending alert that sees anything but `Fire` (even the hysteresis band) goes
    /// back to inactive, and notifies nothing.
    #[test]
    fn pending_is_reset_by_a_dip() {
        let mut m = Machine::new();
        let got = run(&mut m, &[Fire, Fire, Fire, Fire, Fire, Hold, Fire, Fire]);
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(m.phase, Phase::Pending);
        assert_eq!(m.started_ms, Some(60_000));
    }

    /// Proves: a value flapping around the fire threshold (above, then in the band below it
    /// for longer than `resolve_for`) once firing yields exactly one firing and no resolve:
    /// the band holds it.
    #[test]
    fn flapping_value_fires_once() {
        let mut m = Machine::new();
        let mut levels = vec![Fire; 7];
        for _ in 0..20 {
            // Longer in the band than `resolve_for`: without hysteresis this would resolve.
            levels.extend([Hold, Hold, Hold, Hold, Fire]);
        }
        let got = run(&mut m, &levels);
        assert_eq!(got, vec![(60_000, Transition::Fired)]);
        assert_eq!(m.phase, Phase::Firing);
    }

    /// Proves: a short clear spell (shorter than `resolve_for`) does not resolve, and the wait
    /// starts again after it; missing data counts as clear.
    #[test]
    fn short_clear_spells_do_not_resolve() {
        let mut m = Machine::new();
        let mut levels = vec![Fire; 7];
        levels.extend([
            Clear, Clear, Fire, Unknown, Unknown, Hold, Clear, Unknown, Unknown, Clear,
        ]);
        let got = run(&mut m, &levels);
        // Clear from 130 s (after the Hold at 120 s): resolves at 160 s.
        assert_eq!(
            got,
            vec![(60_000, Transition::Fired), (160_000, Transition::Resolved)]
        );
    }

    /// Proves: `for = 0` fires on the first `Fire`; a resolved alert that fires again is a new
    /// alert (new start time, new firing transition).
    #[test]
    fn zero_for_fires_at_once_and_refires_after_resolve() {
        let t = Timing {
            for_: Duration::ZERO,
            resolve_for: Duration::ZERO,
        };
        let mut m = Machine::new();
        assert_eq!(m.step(5, Fire, t), Some(Transition::Fired));
        assert_eq!(m.step(6, Fire, t), None);
        assert_eq!(m.step(7, Clear, t), Some(Transition::Resolved));
        assert_eq!(m.step(8, Clear, t), None);
        assert_eq!(m.step(9, Fire, t), Some(Transition::Fired));
        assert_eq!(
            (m.started_ms, m.fired_ms, m.resolved_ms),
            (Some(9), Some(9), None)
        );
    }

    /// Proves: a machine survives a round trip through JSON (what the store keeps) and goes on
    /// as if nothing happened: no second firing.
    #[test]
    fn saved_machine_continues() {
        let mut m = Machine::new();
        run(&mut m, &[Fire; 8]);
        let Ok(json) = serde_json::to_string(&m) else {
            panic!("serialize");
        };
        let Ok(mut back) = serde_json::from_str::<Machine>(&json) else {
            panic!("deserialize {json}");
        };
        assert_eq!(back, m);
        assert_eq!(back.step(200_000, Fire, T), None);
        assert_eq!(back.phase, Phase::Firing);
    }
}
