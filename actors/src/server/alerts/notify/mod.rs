//! Notifications: every alert transition to every configured target, off the ingest path.
//!
//! Owns: one thread per target (webhook or Alertmanager), each with a bounded queue
//! ([`NotifyConfig::queue`](super::config::NotifyConfig)), and the shared counters
//! ([`NotifyStats`]). Receives from the engine: [`Notifier::notify`] (one transition),
//! [`Notifier::sync_firing`] (what is firing, at start: Alertmanager keeps re-sending it).
//! Sends to the engine: [`Delivered`] once every target is done with a notification
//! (delivered, given up, or dropped), so a restart re-sends only what never went out.
//!
//! The engine only ever `try_send`s: a full queue drops the notification (counted, logged at
//! most once a minute), so a dead or slow endpoint can never slow the engine, let alone
//! ingest or the dashboard. A target's thread delivers its queue in order, one call at a time
//! with a timeout per call; a failed call is retried with exponential backoff
//! ([`backoff`]) until it succeeds or `retry_for` has passed (then counted as failed).

pub mod alertmanager;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::Serialize;

use crate::server::alerts::config::NotifyConfig;
use crate::server::alerts::state::{Alert, Transition};

/// One transition of one alert, as sent to every target.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Numbers the notifications of one run (for [`Delivered`]).
    pub job: u64,
    pub transition: Transition,
    /// The alert as it was at the transition.
    pub alert: Alert,
}

/// Every target is done with a notification: the engine marks the alert delivered.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct Delivered {
    pub alert_id: String,
    pub transition: Transition,
}

/// What notifications need to know about the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerContext {
    pub id: String,
    pub name: String,
    /// The dashboard's address for links (`--alerts` file `settings.external_url`).
    pub external_url: Option<String>,
}

impl ServerContext {
    /// A link to the agent's page on the dashboard, when the address is known.
    pub fn agent_url(&self, agent: &str) -> Option<String> {
        self.external_url
            .as_ref()
            .map(|u| format!("{u}/#/agent/{agent}"))
    }
}

/// Counters of every notification, shown by `/api/alerts` and `/metrics`.
#[derive(Debug, Default)]
pub struct NotifyStats {
    queued: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
}

/// A copy of [`NotifyStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StatsView {
    /// Waiting in the targets' queues (or being delivered).
    pub queued: u64,
    /// Delivered (per target).
    pub sent: u64,
    /// Given up after `retry_for` (per target).
    pub failed: u64,
    /// Not queued: the target's queue was full (per target).
    pub dropped: u64,
    /// Failed calls that were tried again.
    pub retries: u64,
}

impl NotifyStats {
    pub fn view(&self) -> StatsView {
        StatsView {
            queued: self.queued.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

/// The wait before retry number `attempt` (1-based): `min`, doubling, at most `max`.
pub fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
    min.saturating_mul(factor).min(max).max(min.min(max))
}

/// A target's way of delivering: one attempt per call, errors as text for the log.
pub trait Deliver: Send {
    /// A name for logs: `webhook http://…`.
    fn name(&self) -> String;
    /// Delivers one notification (one attempt).
    fn deliver(&mut self, n: &Notification) -> Result<(), String>;
    /// What is firing now (at start, so Alertmanager keeps hearing of it).
    fn sync(&mut self, _firing: &[Alert]) {}
    /// Called when the queue is idle; returns when it wants to be called next (Alertmanager:
    /// its resend).
    fn tick(&mut self, _now: Instant) -> Option<Instant> {
        None
    }
}

enum Job {
    Notify(Arc<Notification>),
    Sync(Arc<Vec<Alert>>),
}

/// Shared between the engine's side and the targets' threads.
struct Shared {
    stats: Arc<NotifyStats>,
    /// Targets still working on each notification.
    remaining: Mutex<HashMap<u64, (usize, String, Transition)>>,
    ack: Option<Recipient<Delivered>>,
    stop: AtomicBool,
    retry_for: Duration,
    retry_min: Duration,
    retry_max: Duration,
}

impl Shared {
    /// One target is done with `job`; the last one tells the engine.
    fn finish(&self, job: u64) {
        let done = {
            let mut remaining = self
                .remaining
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match remaining.get_mut(&job) {
                Some((n, _, _)) if *n > 1 => {
                    *n -= 1;
                    None
                }
                Some(_) => remaining.remove(&job),
                None => None,
            }
        };
        if let (Some((_, alert_id, transition)), Some(ack)) = (done, &self.ack) {
            ack.do_send(Delivered {
                alert_id,
                transition,
            });
        }
    }
}

struct Target {
    name: String,
    tx: SyncSender<Job>,
}

/// The engine's handle on the targets (see the module documentation). Dropping it stops the
/// threads after their current call.
pub struct Notifier {
    targets: Vec<Target>,
    shared: Arc<Shared>,
    next_job: u64,
    /// When a drop was last logged, and drops since.
    drop_log: (Option<Instant>, u64),
}

/// A dropped notification is logged at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);
/// How often a thread waiting to retry checks whether it should stop.
const STOP_CHECK: Duration = Duration::from_millis(100);

impl Notifier {
    /// Starts one thread per target of `config`. `ack` hears of every finished notification.
    pub fn start(
        config: &NotifyConfig,
        server: &ServerContext,
        stats: Arc<NotifyStats>,
        ack: Option<Recipient<Delivered>>,
    ) -> Notifier {
        let mut delivers: Vec<Box<dyn Deliver>> = Vec::new();
        for w in &config.webhooks {
            delivers.push(Box::new(webhook::Webhook::new(
                w.clone(),
                server.clone(),
                config.timeout,
            )));
        }
        for a in &config.alertmanagers {
            delivers.push(Box::new(alertmanager::Alertmanager::new(
                a.clone(),
                server.clone(),
                config.timeout,
            )));
        }
        Self::with_targets(delivers, config, stats, ack)
    }

    /// Like [`Notifier::start`] with the given targets (tests use fakes).
    pub fn with_targets(
        delivers: Vec<Box<dyn Deliver>>,
        config: &NotifyConfig,
        stats: Arc<NotifyStats>,
        ack: Option<Recipient<Delivered>>,
    ) -> Notifier {
        let shared = Arc::new(Shared {
            stats,
            remaining: Mutex::new(HashMap::new()),
            ack,
            stop: AtomicBool::new(false),
            retry_for: config.retry_for,
            retry_min: config.retry_min,
            retry_max: config.retry_max,
        });
        let mut targets = Vec::new();
        for d in delivers {
            let name = d.name();
            let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
            let thread_shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name("lanmon-notify".into())
                .spawn(move || run_target(d, rx, &thread_shared));
            match spawned {
                Ok(_) => targets.push(Target { name, tx }),
                Err(e) => tracing::error!("alerts: cannot start the notifier for {name}: {e}"),
            }
        }
        Notifier {
            targets,
            shared,
            next_job: 0,
            drop_log: (None, 0),
        }
    }

    /// Whether any target is configured (without any, nothing is queued).
    pub fn has_targets(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Queues `transition` of `alert` to every target; never waits. Returns false when there
    /// is no target at all (nothing to wait for: the alert counts as delivered).
    pub fn notify(&mut self, transition: Transition, alert: &Alert) -> bool {
        if self.targets.is_empty() {
            return false;
        }
        self.next_job += 1;
        let job = self.next_job;
        let n = Arc::new(Notification {
            job,
            transition,
            alert: alert.clone(),
        });
        self.shared
            .remaining
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job, (self.targets.len(), alert.id.clone(), transition));
        let stats = &self.shared.stats;
        let mut dropped = Vec::new();
        for t in &self.targets {
            stats.queued.fetch_add(1, Ordering::Relaxed);
            match t.tx.try_send(Job::Notify(Arc::clone(&n))) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    stats.queued.fetch_sub(1, Ordering::Relaxed);
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                    dropped.push(t.name.clone());
                }
            }
        }
        for name in dropped {
            self.log_drop(&name, alert);
            self.shared.finish(job);
        }
        true
    }

    fn log_drop(&mut self, target: &str, alert: &Alert) {
        self.drop_log.1 += 1;
        let due = self
            .drop_log
            .0
            .is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY);
        if due {
            tracing::warn!(
                "alerts: notification queue of {target} is full: dropped {} notification(s) (latest: {} on {})",
                self.drop_log.1,
                alert.rule.name(),
                alert.name.escape_debug()
            );
            self.drop_log = (Some(Instant::now()), 0);
        }
    }

    /// Tells every target what is firing now (Alertmanager re-sends it from then on).
    pub fn sync_firing(&self, firing: Vec<Alert>) {
        let firing = Arc::new(firing);
        for t in &self.targets {
            let _ = t.tx.try_send(Job::Sync(Arc::clone(&firing)));
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// Sleeps up to `d`, in slices, returning early (false) when asked to stop.
fn pause(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(STOP_CHECK));
    }
}

/// A target's thread: its queue in order, each notification retried until delivered or
/// given up; idle ticks in between (see [`Deliver::tick`]).
fn run_target(mut d: Box<dyn Deliver>, rx: mpsc::Receiver<Job>, shared: &Shared) {
    let name = d.name();
    let mut next_tick = d.tick(Instant::now());
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let job = match next_tick {
            Some(at) => {
                let wait = at
                    .saturating_duration_since(Instant::now())
                    .min(STOP_CHECK * 10);
                match rx.recv_timeout(wait) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        if Instant::now() >= at {
                            next_tick = d.tick(Instant::now());
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            None => match rx.recv_timeout(STOP_CHECK * 10) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            },
        };
        match job {
            Job::Sync(firing) => d.sync(&firing),
            Job::Notify(n) => {
                deliver_with_retries(&mut *d, &name, &n, shared);
                shared.stats.queued.fetch_sub(1, Ordering::Relaxed);
                shared.finish(n.job);
            }
        }
        next_tick = d.tick(Instant::now());
    }
}

fn deliver_with_retries(d: &mut dyn Deliver, name: &str, n: &Notification, shared: &Shared) {
    let stats = &shared.stats;
    let started = Instant::now();
    let what = || {
        format!(
            "{} {} on {}",
            n.alert.rule.name(),
            n.transition.status(),
            n.alert.name.escape_debug()
        )
    };
    let mut attempt = 0u32;
    loop {
        match d.deliver(n) {
            Ok(()) => {
                stats.sent.fetch_add(1, Ordering::Relaxed);
                if attempt > 0 {
                    tracing::info!(
                        "alerts: {name}: delivered {} after {attempt} retries",
                        what()
                    );
                }
                return;
            }
            Err(e) => {
                if started.elapsed() >= shared.retry_for {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        "alerts: {name}: giving up on {} after {attempt} retries over {:?}: {e}",
                        what(),
                        started.elapsed()
                    );
                    return;
                }
                attempt += 1;
                stats.retries.fetch_add(1, Ordering::Relaxed);
                let wait = backoff(attempt, shared.retry_min, shared.retry_max);
                if attempt == 1 {
                    tracing::warn!(
                        "alerts: {name}: cannot deliver {}: {e}; retrying (backoff from {wait:?})",
                        what()
                    );
                } else {
                    tracing::debug!("alerts: {name}: retry {attempt} of {} failed: {e}", what());
                }
                if !pause(wait, &shared.stop) {
                    return;
                }
            }
        }
    }
}

/// The HTTP client every target uses: one `ureq` agent, a timeout per call, no redirects.
pub struct Http {
    agent: ureq::Agent,
}

impl Http {
    pub fn new(timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(format!("lanmon/{}", crate::VERSION))
            .build();
        Self {
            agent: config.into(),
        }
    }

    /// POSTs `body` as JSON; any 2xx is success.
    pub fn post_json(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(), String> {
        let mut req = self
            .agent
            .post(url)
            .header("Content-Type", "application/json");
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.send(body) {
            Ok(mut resp) => {
                let status = resp.status();
                if status.is_success() {
                    Ok(())
                } else {
                    let text = resp
                        .body_mut()
                        .with_config()
                        .limit(512)
                        .read_to_string()
                        .unwrap_or_default();
                    Err(format!("HTTP {status}: {}", text.trim().escape_debug()))
                }
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::alerts::rules::{RuleId, Severity};
    use crate::server::alerts::state::Machine;

    /// Proves: the backoff doubles from `min`, stays at `max`, and never overflows.
    #[test]
    fn backoff_doubles_up_to_max() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(10));
        let got: Vec<u64> = (1..=7)
            .map(|a| backoff(a, min, max).as_millis() as u64)
            .collect();
        assert_eq!(got, vec![500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(backoff(u32::MAX, min, max), max);
        assert_eq!(backoff(0, min, max), min);
    }

    pub(crate) fn alert(id: &str) -> Alert {
        Alert {
            id: id.into(),
            agent: "a1".into(),
            name: "web-1".into(),
            hostname: "web-1".into(),
            ip: "127.0.0.1".into(),
            rule: RuleId::Cpu,
            subject: None,
            severity: Severity::Warning,
            machine: Machine::new(),
            value: Some(95.0),
            threshold: 90.0,
            summary: "CPU 95.0% (above 90% for 5m)".into(),
            silenced: false,
            notified: true,
            delivered: false,
        }
    }

    /// A target that fails while `down` is set, and records what it delivered.
    struct Fake {
        down: Arc<AtomicBool>,
        slow: Duration,
        got: Arc<Mutex<Vec<(String, Transition)>>>,
        calls: Arc<AtomicU64>,
    }

    impl Deliver for Fake {
        fn name(&self) -> String {
            "fake".into()
        }
        fn deliver(&mut self, n: &Notification) -> Result<(), String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.slow);
            if self.down.load(Ordering::SeqCst) {
                return Err("connection refused".into());
            }
            self.got
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((n.alert.id.clone(), n.transition));
            Ok(())
        }
    }

    fn quick_config(queue: usize) -> NotifyConfig {
        NotifyConfig {
            queue,
            retry_min: Duration::from_millis(5),
            retry_max: Duration::from_millis(20),
            ..NotifyConfig::default()
        }
    }

    fn wait(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Proves: a target that is down gets the notification retried until it is back, then
    /// delivered once, in order with the next one; the retries are counted.
    #[test]
    fn retried_until_the_target_is_back() {
        let down = Arc::new(AtomicBool::new(true));
        let got = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(NotifyStats::default());
        let fake = Fake {
            down: down.clone(),
            slow: Duration::ZERO,
            got: got.clone(),
            calls: calls.clone(),
        };
        let mut n =
            Notifier::with_targets(vec![Box::new(fake)], &quick_config(8), stats.clone(), None);
        assert!(n.notify(Transition::Fired, &alert("x")));
        assert!(n.notify(Transition::Resolved, &alert("x")));
        wait("retries", || calls.load(Ordering::SeqCst) >= 5);
        assert!(
            got.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        );
        down.store(false, Ordering::SeqCst);
        wait("delivery", || stats.view().sent == 2);
        assert_eq!(
            *got.lock().unwrap_or_else(PoisonError::into_inner),
            vec![
                ("x".into(), Transition::Fired),
                ("x".into(), Transition::Resolved)
            ]
        );
        let v = stats.view();
        assert!(
            v.retries >= 4 && v.failed == 0 && v.dropped == 0 && v.queued == 0,
            "{v:?}"
        );
    }

    /// Proves: `notify` never waits on a slow target: with the queue full, further
    /// notifications are dropped at once and counted; the queued ones are still delivered.
    #[test]
    fn full_queue_drops_without_waiting() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(NotifyStats::default());
        let fake = Fake {
            down: Arc::new(AtomicBool::new(false)),
            slow: Duration::from_millis(200),
            got: got.clone(),
            calls: Arc::new(AtomicU64::new(0)),
        };
        let mut n =
            Notifier::with_targets(vec![Box::new(fake)], &quick_config(2), stats.clone(), None);
        let started = Instant::now();
        for i in 0..20 {
            n.notify(Transition::Fired, &alert(&format!("a{i}")));
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "notify waited {:?}",
            started.elapsed()
        );
        let dropped = stats.view().dropped;
        assert!((17..=18).contains(&dropped), "dropped {dropped}");
        wait("the queued ones", || stats.view().sent + dropped == 20);
    }

    /// Proves: a notification that cannot be delivered within `retry_for` is given up and
    /// counted as failed (and the queue moves on).
    #[test]
    fn gives_up_after_retry_for() {
        let stats = Arc::new(NotifyStats::default());
        let fake = Fake {
            down: Arc::new(AtomicBool::new(true)),
            slow: Duration::ZERO,
            got: Arc::new(Mutex::new(Vec::new())),
            calls: Arc::new(AtomicU64::new(0)),
        };
        let config = NotifyConfig {
            retry_for: Duration::from_millis(50),
            ..quick_config(4)
        };
        let mut n = Notifier::with_targets(vec![Box::new(fake)], &config, stats.clone(), None);
        n.notify(Transition::Fired, &alert("a"));
        n.notify(Transition::Fired, &alert("b"));
        wait("give up", || stats.view().failed == 2);
        assert_eq!(stats.view().queued, 0);
    }
}
