//! Alerts: built-in rules over every agent, each alert a small state machine, notifications
//! to webhooks and Alertmanager, states kept across restarts.
//!
//! ```text
//! Registry ◀─GetSnapshotParts── Engine (own thread) ──try_send──▶ Notifier: one thread per target
//!                                 │  │                              (webhook, ntfy, Slack-compatible,
//!                 AlertStore ◀────┘  └──▶ Board ──▶ /api/alerts,     Alertmanager), retries, timeouts
//!   (alert_state in lanmon.db,                      /metrics, text report, dashboard
//!    or in memory with --no-store)
//! ```
//!
//! - [`config`]: the TOML rules file, flags, overrides and silences; checked at start, reloaded
//!   on SIGHUP ([`Alerts::start`] installs the handler when there is a file).
//! - [`rules`]: the built-in rules, their defaults and inputs.
//! - [`state`]: one alert's state machine (pure, with hysteresis).
//! - [`engine`]: the Engine actor and its pure core, the `Evaluator`.
//! - [`fill`]: the bounded per-filesystem fill history behind `filesystem_fill`.
//! - [`notify`]: the notifier and the target formats.
//! - [`store`]: persistence of alert states.
//!
//! Readers (HTTP, the Reporter) never message the engine: they read the [`Board`], a copy of
//! what is active that the engine replaces after each evaluation.

pub mod config;
pub mod engine;
pub mod fill;
pub mod notify;
pub mod rules;
pub mod state;
pub mod store;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use actix::prelude::*;
use serde::Serialize;

pub use config::{AlertFlags, AlertsConfig, AlertsSettings};

use crate::server::registry;
use crate::snapshot::ServerInfo;
use notify::{NotifyStats, ServerContext, StatsView};
use rules::{RuleId, Severity};
use state::{Alert, Phase};

/// What is active now, for the readers (see the module documentation).
#[derive(Debug, Default)]
pub struct Board {
    state: Mutex<BoardState>,
    stats: Arc<NotifyStats>,
}

#[derive(Debug, Clone, Default)]
struct BoardState {
    active: Arc<Vec<Alert>>,
    recent: Arc<Vec<Alert>>,
    rules: Arc<Vec<(RuleId, Severity)>>,
    evaluated_ms: u64,
}

/// One alert in `/api/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    pub id: String,
    pub rule: &'static str,
    pub severity: &'static str,
    /// `pending`, `firing` or `resolved`.
    pub state: &'static str,
    /// The agent's id, name, host name and IP.
    pub agent: String,
    pub name: String,
    pub hostname: String,
    pub ip: String,
    /// Mount point or sensor label, for per-subject rules.
    pub subject: Option<String>,
    pub summary: String,
    pub value: Option<f64>,
    pub threshold: f64,
    pub started_ms: Option<u64>,
    pub fired_ms: Option<u64>,
    pub resolved_ms: Option<u64>,
    pub silenced: bool,
}

impl AlertView {
    fn of(a: &Alert) -> Self {
        Self {
            id: a.id.clone(),
            rule: a.rule.name(),
            severity: a.severity.as_str(),
            state: a.machine.phase.as_str(),
            agent: a.agent.clone(),
            name: a.name.clone(),
            hostname: a.hostname.clone(),
            ip: a.ip.clone(),
            subject: a.subject.clone(),
            summary: a.summary.clone(),
            value: a.value.filter(|v| v.is_finite()),
            threshold: a.threshold,
            started_ms: a.machine.started_ms,
            fired_ms: a.machine.fired_ms,
            resolved_ms: a.machine.resolved_ms,
            silenced: a.silenced,
        }
    }
}

/// The body of `GET /api/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertsView {
    /// When the rules last ran, ms since the Unix epoch.
    pub evaluated_ms: u64,
    pub firing: usize,
    pub pending: usize,
    /// Pending and firing alerts: firing first, then by severity, oldest first.
    pub active: Vec<AlertView>,
    /// Resolved alerts, newest first (at most `settings.recent`).
    pub recent: Vec<AlertView>,
    pub notifications: StatsView,
}

impl Board {
    pub fn new(stats: Arc<NotifyStats>) -> Self {
        Self {
            state: Mutex::default(),
            stats,
        }
    }

    fn get(&self) -> BoardState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces what is shown (the engine, after each evaluation).
    pub fn set(
        &self,
        active: Vec<Alert>,
        recent: Vec<Alert>,
        rules: Vec<(RuleId, Severity)>,
        evaluated_ms: u64,
    ) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = BoardState {
            active: Arc::new(active),
            recent: Arc::new(recent),
            rules: Arc::new(rules),
            evaluated_ms,
        };
    }

    /// The `/api/alerts` body.
    pub fn view(&self) -> AlertsView {
        let s = self.get();
        let firing = s
            .active
            .iter()
            .filter(|a| a.machine.phase == Phase::Firing)
            .count();
        AlertsView {
            evaluated_ms: s.evaluated_ms,
            firing,
            pending: s.active.len() - firing,
            active: s.active.iter().map(AlertView::of).collect(),
            recent: s.recent.iter().map(AlertView::of).collect(),
            notifications: self.stats.view(),
        }
    }

    /// Firing alerts per enabled rule (0 included) and severity: `lanmon_alerts`.
    pub fn firing_counts(&self) -> Vec<(&'static str, &'static str, usize)> {
        let s = self.get();
        let mut counts: Vec<(&'static str, &'static str, usize)> = s
            .rules
            .iter()
            .map(|(r, sev)| (r.name(), sev.as_str(), 0))
            .collect();
        for a in s.active.iter().filter(|a| a.machine.phase == Phase::Firing) {
            let key = (a.rule.name(), a.severity.as_str());
            match counts.iter_mut().find(|(r, sev, _)| (*r, *sev) == key) {
                Some(c) => c.2 += 1,
                None => counts.push((key.0, key.1, 1)),
            }
        }
        counts
    }

    /// `/metrics` lines for the alerts (see [`crate::server::prometheus::render_alerts`]).
    pub fn prometheus(&self) -> String {
        crate::server::prometheus::render_alerts(&self.firing_counts(), &self.stats.view())
    }

    /// The text report's line: firing and pending alerts, with the first few named; `None`
    /// when nothing is active.
    pub fn report_line(&self) -> Option<String> {
        const NAMED: usize = 5;
        let s = self.get();
        if s.active.is_empty() {
            return None;
        }
        let firing: Vec<&Alert> = s
            .active
            .iter()
            .filter(|a| a.machine.phase == Phase::Firing)
            .collect();
        let pending = s.active.len() - firing.len();
        let mut line = format!("  ALERTS: {} firing", firing.len());
        if pending > 0 {
            let _ = write!(line, ", {pending} pending");
        }
        for (i, a) in firing.iter().take(NAMED).enumerate() {
            line.push_str(if i == 0 { ": " } else { "; " });
            let name: String = a
                .name
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .take(32)
                .collect();
            let _ = write!(line, "{} {name} ({})", a.rule.name(), a.summary);
        }
        if firing.len() > NAMED {
            let _ = write!(line, "; … {} more (GET /api/alerts)", firing.len() - NAMED);
        }
        Some(line)
    }
}

/// The running alerts: the engine's thread and the board.
pub struct Alerts {
    engine: Addr<engine::Engine>,
    board: Arc<Board>,
    thread: Arbiter,
}

impl Alerts {
    /// Starts the engine on its own thread, asking `source` for snapshots; alert states are
    /// kept in the SQLite database `db` (`None`: in memory). With a rules file, SIGHUP reads
    /// it again (Unix). Must run inside an actix `System`.
    pub fn start(
        settings: AlertsSettings,
        source: Recipient<registry::GetSnapshotParts>,
        db: Option<PathBuf>,
        info: &ServerInfo,
    ) -> crate::Result<Alerts> {
        let store: Box<dyn store::AlertStore> = match &db {
            Some(path) => Box::new(
                store::SqliteAlertStore::open(path)
                    .map_err(|e| crate::Error::Other(format!("{e} (in {})", path.display())))?,
            ),
            None => Box::new(store::MemoryAlertStore::default()),
        };
        let stats = Arc::new(NotifyStats::default());
        let server = ServerContext {
            id: info.id.clone(),
            name: info.name.clone(),
            external_url: settings.config.external_url.clone(),
        };
        let config = Arc::new(settings.config.clone());
        let evaluator =
            engine::Evaluator::new(Arc::clone(&config), server, store, Arc::clone(&stats))?;
        let board = Arc::new(Board::new(stats));
        let thread = Arbiter::new();
        let engine_board = Arc::clone(&board);
        let engine = engine::Engine::start_in_arbiter(&thread.handle(), move |_| {
            engine::Engine::new(source, evaluator, engine_board)
        });
        let targets = config.notify.webhooks.len() + config.notify.alertmanagers.len();
        tracing::info!(
            "alerts: {} rule(s) on, every {:?}, {targets} notification target(s){}",
            config.enabled_rules().len(),
            config.evaluate_every,
            settings
                .file
                .as_ref()
                .map(|f| format!(", rules file {} (SIGHUP reloads it)", f.display()))
                .unwrap_or_default()
        );
        if settings.file.is_some() {
            reload_on_sighup(settings, engine.clone());
        }
        Ok(Alerts {
            engine,
            board,
            thread,
        })
    }

    pub fn board(&self) -> Arc<Board> {
        Arc::clone(&self.board)
    }

    /// Puts new settings in force (what SIGHUP does with the re-read file).
    pub fn reload(&self, config: AlertsConfig) {
        self.engine.do_send(engine::Reload { config });
    }

    /// Stops the engine's thread (server shutdown). Notifications still queued are sent
    /// again by the next start (their alerts are not marked delivered).
    pub fn stop(&self) {
        self.thread.stop();
    }
}

#[cfg(unix)]
fn reload_on_sighup(settings: AlertsSettings, engine: Addr<engine::Engine>) {
    use tokio::signal::unix::{SignalKind, signal};
    actix::spawn(async move {
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!(
                "alerts: cannot listen for SIGHUP; the rules file is read at start only"
            );
            return;
        };
        while hup.recv().await.is_some() {
            match settings.reload() {
                Ok(config) => {
                    tracing::info!(
                        "alerts: SIGHUP: rules reloaded from {}",
                        settings
                            .file
                            .as_ref()
                            .map(|f| f.display().to_string())
                            .unwrap_or_default()
                    );
                    engine.do_send(engine::Reload { config });
                }
                Err(e) => tracing::error!("{e}\nalerts: SIGHUP: keeping the previous rules"),
            }
        }
    });
}

#[cfg(not(unix))]
fn reload_on_sighup(_: AlertsSettings, _: Addr<engine::Engine>) {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::protocol::Cpu;
    use crate::server::alerts::config::RulePatch;
    use crate::snapshot::Status;
    use crate::snapshot::fixtures::agent;

    /// Stands in for the Registry: one agent whose CPU the test sets, counting requests.
    struct FakeRegistry {
        cpu: Arc<AtomicU64>,
        asked: Arc<AtomicU64>,
    }

    impl Actor for FakeRegistry {
        type Context = Context<Self>;
    }

    impl Handler<registry::GetSnapshotParts> for FakeRegistry {
        type Result = MessageResult<registry::GetSnapshotParts>;

        fn handle(&mut self, _: registry::GetSnapshotParts, _: &mut Self::Context) -> Self::Result {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let mut a = agent("web-1", Status::Live);
            let cpu = self.cpu.load(Ordering::SeqCst) as f32;
            a.cpu = Some(Cpu {
                total: cpu,
                per_core: vec![cpu, cpu],
            });
            MessageResult(registry::SnapshotParts::from_views(
                crate::util::now_ms(),
                server(),
                vec![a],
            ))
        }
    }

    fn server() -> ServerInfo {
        ServerInfo {
            id: "s".into(),
            name: "test".into(),
            version: "0".into(),
            listen: "127.0.0.1:1".into(),
            http: None,
            auth: None,
            fingerprint: None,
        }
    }

    /// Proves: the engine asks its snapshot source on its own, and what it finds reaches the
    /// board: an alert firing (API view, `lanmon_alerts`, report line) and then resolved.
    #[actix_rt::test]
    async fn engine_publishes_on_the_board() {
        let cpu = Arc::new(AtomicU64::new(99));
        let asked = Arc::new(AtomicU64::new(0));
        let fake = FakeRegistry {
            cpu: cpu.clone(),
            asked: asked.clone(),
        }
        .start();
        let zero = RulePatch {
            for_: Some(Duration::ZERO),
            resolve_for: Some(Duration::ZERO),
            ..RulePatch::default()
        };
        let flags = AlertFlags {
            rules: vec![(RuleId::Cpu, zero)],
            evaluate_every: Some(Duration::from_millis(100)),
            ..AlertFlags::default()
        };
        let Ok(settings) = AlertsSettings::load(None, flags) else {
            panic!("settings");
        };
        let alerts = match Alerts::start(settings, fake.recipient(), None, &server()) {
            Ok(a) => a,
            Err(e) => panic!("start: {e}"),
        };
        let board = alerts.board();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while board.view().firing == 0 {
            assert!(std::time::Instant::now() < deadline, "never fired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let view = board.view();
        assert_eq!(view.active[0].rule, "cpu");
        assert_eq!(view.active[0].state, "firing");
        assert!(
            board
                .prometheus()
                .contains("lanmon_alerts{rule=\"cpu\",severity=\"warning\"} 1\n")
        );
        assert!(
            board
                .prometheus()
                .contains("lanmon_alerts{rule=\"memory\",severity=\"warning\"} 0\n")
        );
        let line = board.report_line().unwrap_or_default();
        assert!(
            line.starts_with("  ALERTS: 1 firing: cpu web-1 (CPU 99.0%"),
            "{line}"
        );
        cpu.store(1, Ordering::SeqCst);
        while board.view().recent.is_empty() {
            assert!(std::time::Instant::now() < deadline, "never resolved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(board.report_line().is_none());
        assert!(asked.load(Ordering::SeqCst) >= 2);
        alerts.stop();
    }
}
