//! Engine actor: runs the rules over every agent every `evaluate_every`.
//!
//! Owns: every active alert (pending or firing) and the recently resolved ones, each a
//! [`Machine`]; the fill history of every filesystem ([`FillRings`], for `filesystem_fill`);
//! the alert store and the [`Notifier`]. It runs on its own Arbiter thread.
//!
//! Receives: its own tick; [`Reload`] (new settings, from SIGHUP); [`notify::Delivered`] from
//! the notifier. Sends: one
//! [`registry::GetSnapshotParts`] per tick to its snapshot source (the Registry; a slow one
//! never gets two at once), builds the snapshot itself, and after each evaluation publishes
//! what is active on the [`Board`] that HTTP and the Reporter read.
//!
//! The work is in [`Evaluator`], a plain struct with a clock passed in, so it is tested
//! without an actor: per agent, its [`Inputs`] and the settings after overrides, per rule
//! one [`Observation`] per subject, fed to that alert's machine. An active alert that got no
//! observation (the agent is gone, not live, or stopped sending the metric) sees
//! [`Level::Unknown`] and resolves after `resolve_for` (at once when its agent is no longer
//! known or its rule was turned off). A transition to firing is notified unless silenced
//! (and is notified when the silence ends while it still fires); a resolve is notified when
//! its firing was. Changed alerts are saved at the end of the evaluation, in one write.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::server::alerts::Board;
use crate::server::alerts::config::AlertsConfig;
use crate::server::alerts::fill::FillRings;
use crate::server::alerts::notify::{self, Notifier, NotifyStats, ServerContext};
use crate::server::alerts::rules::{Inputs, Observation, RuleId, describe, observe};
use crate::server::alerts::state::{Alert, Level, Machine, Phase, Timing, Transition};
use crate::server::alerts::store::AlertStore;
use crate::server::registry;
use crate::snapshot::AgentView;

/// Most active alerts at once; beyond it new ones are not started (and it is logged).
pub const MAX_ACTIVE_ALERTS: usize = 100_000;

/// The rules' state and work, without the actor (see the module documentation).
pub struct Evaluator {
    config: Arc<AlertsConfig>,
    server: ServerContext,
    active: HashMap<String, Alert>,
    /// Resolved alerts, oldest first.
    recent: VecDeque<Alert>,
    fills: FillRings,
    store: Box<dyn AlertStore>,
    notifier: Option<Notifier>,
    stats: Arc<NotifyStats>,
    /// Store keys to write / delete at the end of the evaluation.
    dirty: HashSet<String>,
    deleted: Vec<String>,
    /// When "too many alerts" was last logged.
    full_logged: Option<Instant>,
}

impl Evaluator {
    /// An evaluator starting from what `store` kept.
    pub fn new(
        config: Arc<AlertsConfig>,
        server: ServerContext,
        mut store: Box<dyn AlertStore>,
        stats: Arc<NotifyStats>,
    ) -> crate::Result<Self> {
        let loaded = store
            .load()
            .map_err(|e| crate::Error::Other(e.to_string()))?;
        let mut active = HashMap::new();
        let mut recent: Vec<Alert> = Vec::new();
        for a in loaded {
            match a.machine.phase {
                Phase::Pending | Phase::Firing => {
                    active.insert(a.id.clone(), a);
                }
                Phase::Resolved => recent.push(a),
                Phase::Inactive => {}
            }
        }
        recent.sort_by_key(|a| a.machine.resolved_ms);
        Ok(Self {
            config,
            server,
            active,
            recent: recent.into(),
            fills: FillRings::default(),
            store,
            notifier: None,
            stats,
            dirty: HashSet::new(),
            deleted: Vec::new(),
            full_logged: None,
        })
    }

    /// Starts notifying through `notifier`. What the last run left undelivered is queued
    /// again, and the targets hear what is firing.
    pub fn attach(&mut self, mut notifier: Notifier) {
        let mut firing = Vec::new();
        for a in self.active.values_mut() {
            if a.machine.phase == Phase::Firing && a.notified {
                if !a.delivered {
                    a.delivered = !notifier.notify(Transition::Fired, a);
                    self.dirty.insert(a.id.clone());
                }
                firing.push(a.clone());
            }
        }
        for a in self.recent.iter_mut() {
            if a.notified && !a.delivered {
                a.delivered = !notifier.notify(Transition::Resolved, a);
                self.dirty.insert(a.store_key());
            }
        }
        notifier.sync_firing(firing);
        self.notifier = Some(notifier);
        self.save();
    }

    pub fn config(&self) -> &Arc<AlertsConfig> {
        &self.config
    }

    /// New settings; the notifier is replaced by the caller when its targets changed.
    pub fn set_config(&mut self, config: Arc<AlertsConfig>) {
        self.server.external_url.clone_from(&config.external_url);
        self.config = config;
        while self.recent.len() > self.config.recent {
            if let Some(old) = self.recent.pop_front() {
                self.deleted.push(old.store_key());
            }
        }
    }

    pub fn server(&self) -> &ServerContext {
        &self.server
    }

    pub fn stats(&self) -> &Arc<NotifyStats> {
        &self.stats
    }

    /// Runs every rule over `agents` at `now_ms`; saves what changed.
    pub fn evaluate(&mut self, now_ms: u64, agents: &[AgentView]) {
        let config = Arc::clone(&self.config);
        let mut seen: HashSet<String> = HashSet::new();
        let mut observations: Vec<Observation> = Vec::new();
        for a in agents {
            let mut inputs = Inputs::from_view(a);
            let overrides = config.overrides_for(&a.id, &a.name);
            if config.spec(RuleId::FilesystemFill, &overrides).enabled {
                // The sample's arrival on the server's clock (the snapshot's age of it).
                let at_ms = now_ms.saturating_sub(a.last_seen_ms.unwrap_or(0));
                self.update_fills(&a.id, &mut inputs, at_ms, now_ms);
            }
            for rule in RuleId::ALL {
                let spec = config.spec(rule, &overrides);
                if !spec.enabled {
                    continue;
                }
                observations.clear();
                observe(rule, &spec, &inputs, &mut observations);
                for o in observations.drain(..) {
                    let id = Alert::id_for(&a.id, rule, o.subject.as_deref());
                    if !self.active.contains_key(&id) {
                        if o.level != Level::Fire {
                            continue; // nothing wrong, nothing to remember
                        }
                        if self.active.len() >= MAX_ACTIVE_ALERTS {
                            self.log_full();
                            continue;
                        }
                    }
                    seen.insert(id.clone());
                    let alert = self.active.entry(id.clone()).or_insert_with(|| Alert {
                        id: id.clone(),
                        agent: a.id.clone(),
                        name: a.name.clone(),
                        hostname: a.hostname.clone(),
                        ip: a.ip.clone(),
                        rule,
                        subject: o.subject.clone(),
                        severity: spec.severity,
                        machine: Machine::new(),
                        value: None,
                        threshold: spec.threshold,
                        summary: String::new(),
                        silenced: false,
                        notified: false,
                        delivered: false,
                    });
                    alert.name.clone_from(&a.name);
                    alert.hostname.clone_from(&a.hostname);
                    alert.ip.clone_from(&a.ip);
                    alert.severity = spec.severity;
                    alert.threshold = spec.threshold;
                    if o.value.is_some() {
                        alert.value = o.value;
                    }
                    if matches!(o.level, Level::Fire | Level::Hold) || alert.summary.is_empty() {
                        alert.summary = describe(rule, o.subject.as_deref(), o.value, &spec);
                    }
                    alert.silenced = config.silence(&a.id, &a.name, rule, now_ms).is_some();
                    let before = alert.machine.phase;
                    let t = alert.machine.step(now_ms, o.level, spec.timing());
                    let changed = before != alert.machine.phase;
                    self.after_step(&id, t, changed);
                }
            }
        }
        // Active alerts nothing spoke about: no data.
        let known: HashMap<&str, &AgentView> = agents.iter().map(|a| (a.id.as_str(), a)).collect();
        let unseen: Vec<String> = self
            .active
            .keys()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        for id in unseen {
            let Some(alert) = self.active.get_mut(&id) else {
                continue;
            };
            let timing = match known.get(alert.agent.as_str()) {
                Some(a) => {
                    let spec = config.spec(alert.rule, &config.overrides_for(&a.id, &a.name));
                    alert.silenced = config.silence(&a.id, &a.name, alert.rule, now_ms).is_some();
                    if spec.enabled {
                        spec.timing()
                    } else {
                        Timing {
                            for_: spec.for_,
                            resolve_for: Duration::ZERO,
                        }
                    }
                }
                None => Timing {
                    for_: Duration::ZERO,
                    resolve_for: Duration::ZERO,
                },
            };
            let before = alert.machine.phase;
            let t = alert.machine.step(now_ms, Level::Unknown, timing);
            let changed = before != alert.machine.phase;
            self.after_step(&id, t, changed);
        }
        self.fills
            .prune(now_ms, config.fill_window, |id| known.contains_key(id));
        self.save();
    }

    /// Notifies and files the alert `id` after its machine stepped (with transition `t`).
    fn after_step(&mut self, id: &str, t: Option<Transition>, changed: bool) {
        let Some(alert) = self.active.get_mut(id) else {
            return;
        };
        match (alert.machine.phase, t) {
            (Phase::Inactive, _) => {
                // A pending alert that did not last: forget it.
                self.active.remove(id);
                self.deleted.push(id.to_string());
                self.dirty.remove(id);
            }
            (Phase::Pending, _) => {
                // Saved when it starts, so `for` counts across a restart; not every evaluation.
                if changed {
                    self.dirty.insert(id.to_string());
                }
            }
            (Phase::Firing, t) => {
                if t == Some(Transition::Fired) {
                    alert.notified = false;
                    alert.delivered = false;
                    self.dirty.insert(id.to_string());
                    tracing::info!(
                        "alert firing: {} on {}: {}{}",
                        alert.rule.name(),
                        alert.name.escape_debug(),
                        alert.summary,
                        if alert.silenced { " (silenced)" } else { "" }
                    );
                }
                if !alert.notified && !alert.silenced {
                    alert.notified = true;
                    alert.delivered = !self
                        .notifier
                        .as_mut()
                        .is_some_and(|n| n.notify(Transition::Fired, alert));
                    self.dirty.insert(id.to_string());
                }
            }
            (Phase::Resolved, _) => {
                let Some(mut alert) = self.active.remove(id) else {
                    return;
                };
                tracing::info!(
                    "alert resolved: {} on {}",
                    alert.rule.name(),
                    alert.name.escape_debug()
                );
                alert.delivered = if alert.notified {
                    !self
                        .notifier
                        .as_mut()
                        .is_some_and(|n| n.notify(Transition::Resolved, &alert))
                } else {
                    true
                };
                self.dirty.remove(id);
                self.deleted.push(id.to_string());
                self.dirty.insert(alert.store_key());
                self.recent.push_back(alert);
                while self.recent.len() > self.config.recent {
                    if let Some(old) = self.recent.pop_front() {
                        let key = old.store_key();
                        self.dirty.remove(&key);
                        self.deleted.push(key);
                    }
                }
            }
        }
    }

    /// Every target is done with a notification: the alert is delivered.
    pub fn delivered(&mut self, d: &notify::Delivered) {
        match d.transition {
            Transition::Fired => {
                if let Some(a) = self.active.get_mut(&d.alert_id)
                    && a.machine.phase == Phase::Firing
                    && !a.delivered
                {
                    a.delivered = true;
                    self.dirty.insert(a.id.clone());
                }
            }
            Transition::Resolved => {
                if let Some(a) = self.recent.iter_mut().rev().find(|a| a.id == d.alert_id)
                    && !a.delivered
                {
                    a.delivered = true;
                    self.dirty.insert(a.store_key());
                }
            }
        }
        self.save();
    }

    /// Writes what changed (one transaction).
    fn save(&mut self) {
        if self.dirty.is_empty() && self.deleted.is_empty() {
            return;
        }
        let mut upsert: Vec<&Alert> = Vec::new();
        for key in &self.dirty {
            if let Some(a) = self.active.get(key) {
                upsert.push(a);
            } else if let Some(a) = self.recent.iter().find(|a| &a.store_key() == key) {
                upsert.push(a);
            }
        }
        // A key both deleted and written (resolved, then active again) is written.
        let deleted: Vec<String> = self
            .deleted
            .iter()
            .filter(|k| !self.dirty.contains(*k))
            .cloned()
            .collect();
        match self.store.save(&upsert, &deleted) {
            Ok(()) => {
                self.dirty.clear();
                self.deleted.clear();
            }
            // Kept dirty: tried again after the next evaluation.
            Err(e) => tracing::warn!("alerts: cannot save alert states: {e}"),
        }
    }

    /// Adds each filesystem's available bytes (received at `at_ms`) to its fill series and
    /// sets its predicted time to full.
    fn update_fills(&mut self, agent: &str, inputs: &mut Inputs, at_ms: u64, now_ms: u64) {
        let window = self.config.fill_window;
        for fs in &mut inputs.filesystems {
            fs.seconds_to_full =
                self.fills
                    .feed(agent, &fs.mountpoint, at_ms, fs.avail_bytes, now_ms, window);
        }
    }

    fn log_full(&mut self) {
        if self
            .full_logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            tracing::warn!("alerts: {MAX_ACTIVE_ALERTS} alerts active; new ones are not tracked");
            self.full_logged = Some(Instant::now());
        }
    }

    /// Active alerts (pending and firing), most severe and oldest first.
    pub fn active(&self) -> Vec<Alert> {
        let mut v: Vec<Alert> = self.active.values().cloned().collect();
        v.sort_by(|a, b| {
            (b.machine.phase == Phase::Firing)
                .cmp(&(a.machine.phase == Phase::Firing))
                .then(b.severity.cmp(&a.severity))
                .then(a.machine.started_ms.cmp(&b.machine.started_ms))
                .then(a.id.cmp(&b.id))
        });
        v
    }

    /// Resolved alerts, newest first.
    pub fn recent(&self) -> Vec<Alert> {
        self.recent.iter().rev().cloned().collect()
    }
}

/// New settings (from SIGHUP).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload {
    pub config: AlertsConfig,
}

/// See the module documentation.
pub struct Engine {
    source: Recipient<registry::GetSnapshotParts>,
    evaluator: Evaluator,
    board: Arc<Board>,
    in_flight: bool,
    timer: Option<SpawnHandle>,
}

impl Engine {
    pub fn new(
        source: Recipient<registry::GetSnapshotParts>,
        evaluator: Evaluator,
        board: Arc<Board>,
    ) -> Self {
        Self {
            source,
            evaluator,
            board,
            in_flight: false,
            timer: None,
        }
    }

    fn publish(&self, now_ms: u64) {
        self.board.set(
            self.evaluator.active(),
            self.evaluator.recent(),
            self.evaluator.config.enabled_rules(),
            now_ms,
        );
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight {
            return;
        }
        self.in_flight = true;
        let fut = self
            .source
            .send(registry::GetSnapshotParts)
            .into_actor(self)
            .map(|result, this, _| {
                this.in_flight = false;
                match result {
                    Ok(parts) => {
                        let mut snapshot = parts.into_snapshot();
                        // Keys waiting for approval are looked at like agents (`pending`).
                        let pending = std::mem::take(&mut snapshot.pending);
                        snapshot
                            .agents
                            .extend(pending.iter().map(crate::snapshot::PendingAgent::as_view));
                        this.evaluator.evaluate(snapshot.ts_ms, &snapshot.agents);
                        this.publish(snapshot.ts_ms);
                    }
                    Err(e) => tracing::warn!("alerts: no snapshot: {e}"),
                }
            });
        ctx.wait(fut);
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        let every = self.evaluator.config.evaluate_every;
        self.timer = Some(ctx.run_interval(every, |this, ctx| this.tick(ctx)));
    }

    fn start_notifier(&mut self, ctx: &mut Context<Self>) {
        let notifier = Notifier::start(
            &self.evaluator.config.notify,
            self.evaluator.server(),
            Arc::clone(self.evaluator.stats()),
            Some(ctx.address().recipient()),
        );
        self.evaluator.attach(notifier);
    }
}

impl Actor for Engine {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_notifier(ctx);
        self.publish(crate::util::now_ms());
        self.schedule(ctx);
    }
}

impl Handler<notify::Delivered> for Engine {
    type Result = ();

    fn handle(&mut self, msg: notify::Delivered, _: &mut Self::Context) {
        self.evaluator.delivered(&msg);
    }
}

impl Handler<Reload> for Engine {
    type Result = ();

    fn handle(&mut self, msg: Reload, ctx: &mut Self::Context) {
        let old = Arc::clone(&self.evaluator.config);
        self.evaluator.set_config(Arc::new(msg.config));
        let new = Arc::clone(&self.evaluator.config);
        if new.notify != old.notify {
            self.start_notifier(ctx);
        }
        if new.evaluate_every != old.evaluate_every {
            self.schedule(ctx);
        }
        self.publish(crate::util::now_ms());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::protocol::Cpu;
    use crate::server::alerts::config::RulePatch;
    use crate::server::alerts::notify::Deliver;
    use crate::server::alerts::rules::RuleSpec;
    use crate::server::alerts::store::MemoryAlertStore;
    use crate::snapshot::Status;
    use crate::snapshot::fixtures::agent;

    /// A target that records what it got.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<(String, String, Transition)>>>);

    impl Sink {
        fn got(&self) -> Vec<(String, String, Transition)> {
            self.0.lock().map(|v| v.clone()).unwrap_or_default()
        }
        fn wait_for(&self, n: usize) -> Vec<(String, String, Transition)> {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.got().len() < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            self.got()
        }
    }

    impl Deliver for Sink {
        fn name(&self) -> String {
            "sink".into()
        }
        fn deliver(&mut self, n: &notify::Notification) -> Result<(), String> {
            if let Ok(mut v) = self.0.lock() {
                v.push((
                    n.alert.name.clone(),
                    n.alert.rule.name().to_string(),
                    n.transition,
                ));
            }
            Ok(())
        }
    }

    fn config(patches: &[(RuleId, RulePatch)]) -> Arc<AlertsConfig> {
        let mut c = AlertsConfig::default();
        for (rule, patch) in patches {
            if let Some(spec) = c.rules.get_mut(rule) {
                patch.apply(*rule, spec);
            }
        }
        Arc::new(c)
    }

    fn fast(threshold: Option<f64>) -> RulePatch {
        RulePatch {
            threshold,
            for_: Some(Duration::from_secs(10)),
            resolve_for: Some(Duration::from_secs(10)),
            ..RulePatch::default()
        }
    }

    fn evaluator(config: Arc<AlertsConfig>, store: Box<dyn AlertStore>, sink: &Sink) -> Evaluator {
        let Ok(mut e) = Evaluator::new(config, ServerContext::default(), store, Arc::default())
        else {
            panic!("evaluator");
        };
        let notifier = Notifier::with_targets(
            vec![Box::new(sink.clone())],
            &e.config.notify,
            Arc::default(),
            None,
        );
        e.attach(notifier);
        e
    }

    fn busy(name: &str, cpu: f32) -> AgentView {
        let mut a = agent(name, Status::Live);
        a.cpu = Some(Cpu {
            total: cpu,
            per_core: vec![cpu, cpu],
        });
        a
    }

    fn phase(e: &Evaluator, rule: RuleId) -> Option<Phase> {
        e.active()
            .iter()
            .find(|a| a.rule == rule)
            .map(|a| a.machine.phase)
    }

    /// Proves: a CPU alert goes pending, fires after `for` (one notification), stays firing
    /// through values in the band, resolves after `resolve_for` below it (one notification),
    /// and lands in the recent list; other agents and rules stay quiet.
    #[test]
    fn cpu_alert_lifecycle() {
        let sink = Sink::default();
        let mut e = evaluator(
            config(&[(RuleId::Cpu, fast(None))]),
            Box::new(MemoryAlertStore::default()),
            &sink,
        );
        let calm = busy("calm", 5.0);
        let mut t = 1_000_000;
        for cpu in [95.0, 95.0] {
            e.evaluate(t, &[busy("hot", cpu), calm.clone()]);
            t += 5_000;
        }
        assert_eq!(phase(&e, RuleId::Cpu), Some(Phase::Pending));
        for cpu in [95.0, 85.0, 95.0, 82.0, 85.0] {
            e.evaluate(t, &[busy("hot", cpu), calm.clone()]);
            t += 5_000;
        }
        assert_eq!(phase(&e, RuleId::Cpu), Some(Phase::Firing));
        for _ in 0..4 {
            e.evaluate(t, &[busy("hot", 10.0), calm.clone()]);
            t += 5_000;
        }
        assert_eq!(phase(&e, RuleId::Cpu), None);
        let got = sink.wait_for(2);
        assert_eq!(
            got,
            vec![
                ("hot".into(), "cpu".into(), Transition::Fired),
                ("hot".into(), "cpu".into(), Transition::Resolved)
            ]
        );
        assert_eq!(e.recent().len(), 1);
        assert!(e.recent()[0].delivered || e.recent()[0].notified);
    }

    /// Proves: a flapping CPU value (above the threshold, then just below it, again and
    /// again) yields exactly one firing notification and no resolve.
    #[test]
    fn flapping_fires_once() {
        let sink = Sink::default();
        let mut e = evaluator(
            config(&[(RuleId::Cpu, fast(None))]),
            Box::new(MemoryAlertStore::default()),
            &sink,
        );
        let mut t = 0;
        for i in 0..200 {
            // Above for 15 s, then 20 s just below (in the band) for every 5 s above.
            let cpu = if i < 4 || i % 5 == 0 { 91.0 } else { 89.0 };
            e.evaluate(t, &[busy("flappy", cpu)]);
            t += 5_000;
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            sink.wait_for(1),
            vec![("flappy".into(), "cpu".into(), Transition::Fired)]
        );
    }

    /// Proves: a firing alert saved in the store is firing after a "restart" (a new evaluator
    /// on the same store) without a second notification, and its resolve is notified then.
    #[test]
    fn restart_keeps_firing_without_resending() {
        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<MemoryAlertStore>>);
        impl AlertStore for Shared {
            fn load(&mut self) -> Result<Vec<Alert>, crate::server::alerts::store::StoreError> {
                self.0.lock().map_or(Ok(Vec::new()), |mut s| s.load())
            }
            fn save(
                &mut self,
                u: &[&Alert],
                d: &[String],
            ) -> Result<(), crate::server::alerts::store::StoreError> {
                self.0.lock().map_or(Ok(()), |mut s| s.save(u, d))
            }
        }
        let store = Shared::default();
        let patches = [(RuleId::Offline, fast(None))];
        let sink = Sink::default();
        let mut first = evaluator(config(&patches), Box::new(store.clone()), &sink);
        let down = agent("db", Status::Offline);
        for t in [0, 5_000, 10_000, 15_000] {
            first.evaluate(t, std::slice::from_ref(&down));
        }
        assert_eq!(sink.wait_for(1).len(), 1);
        // The delivery ack (the actor would send it) marks it delivered.
        first.delivered(&notify::Delivered {
            alert_id: first.active()[0].id.clone(),
            transition: Transition::Fired,
        });
        drop(first);

        let sink2 = Sink::default();
        let mut second = evaluator(config(&patches), Box::new(store.clone()), &sink2);
        assert_eq!(phase(&second, RuleId::Offline), Some(Phase::Firing));
        for t in [20_000, 25_000] {
            second.evaluate(t, std::slice::from_ref(&down));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(sink2.got().is_empty(), "re-sent: {:?}", sink2.got());
        let up = agent("db", Status::Live);
        for t in [30_000, 35_000, 40_000, 45_000] {
            second.evaluate(t, std::slice::from_ref(&up));
        }
        assert_eq!(
            sink2.wait_for(1),
            vec![("db".into(), "offline".into(), Transition::Resolved)]
        );
    }

    /// Proves: a firing notification that was never delivered (the server stopped first) is
    /// sent again by the next run.
    #[test]
    fn undelivered_is_sent_after_restart() {
        let mut store = MemoryAlertStore::default();
        let mut a = Alert {
            id: "x".into(),
            agent: "a".into(),
            name: "db".into(),
            hostname: String::new(),
            ip: String::new(),
            rule: RuleId::Offline,
            subject: None,
            severity: RuleId::Offline.default_spec().severity,
            machine: Machine::new(),
            value: None,
            threshold: 0.0,
            summary: "agent offline".into(),
            silenced: false,
            notified: true,
            delivered: false,
        };
        a.machine.phase = Phase::Firing;
        let _ = store.save(&[&a], &[]);
        let sink = Sink::default();
        let _e = evaluator(config(&[]), Box::new(store), &sink);
        assert_eq!(
            sink.wait_for(1),
            vec![("db".into(), "offline".into(), Transition::Fired)]
        );
    }

    /// Proves: a silenced alert fires (shown, marked silenced) without a notification, and is
    /// notified when the silence no longer covers it while it still fires.
    #[test]
    fn silence_holds_notifications_back() {
        let sink = Sink::default();
        let mut c = (*config(&[(RuleId::Cpu, fast(None))])).clone();
        c.silences.push(crate::server::alerts::config::Silence {
            agents: vec!["hot*".into()],
            rules: vec![RuleId::Cpu],
            until_ms: Some(60_000),
            comment: None,
        });
        let mut e = evaluator(Arc::new(c), Box::new(MemoryAlertStore::default()), &sink);
        for t in (0..60_000).step_by(5_000) {
            e.evaluate(t, &[busy("hot-1", 99.0)]);
        }
        assert_eq!(phase(&e, RuleId::Cpu), Some(Phase::Firing));
        assert!(e.active()[0].silenced);
        std::thread::sleep(Duration::from_millis(50));
        assert!(sink.got().is_empty());
        e.evaluate(60_000, &[busy("hot-1", 99.0)]);
        assert_eq!(sink.wait_for(1).len(), 1);
    }

    /// Proves: an agent the server forgot has its alerts resolved at once; a per-agent
    /// override applies to that agent only.
    #[test]
    fn forgotten_agents_resolve_and_overrides_apply() {
        let sink = Sink::default();
        let mut c = (*config(&[(RuleId::Cpu, fast(Some(50.0)))])).clone();
        c.overrides.push(crate::server::alerts::config::Override {
            agents: vec!["quiet".into()],
            rules: vec![(
                RuleId::Cpu,
                RulePatch {
                    enabled: Some(false),
                    ..RulePatch::default()
                },
            )],
        });
        let mut e = evaluator(Arc::new(c), Box::new(MemoryAlertStore::default()), &sink);
        for t in (0..=20_000).step_by(5_000) {
            e.evaluate(t, &[busy("loud", 70.0), busy("quiet", 70.0)]);
        }
        let active = e.active();
        assert_eq!(active.len(), 1, "{active:?}");
        assert_eq!(active[0].name, "loud");
        e.evaluate(25_000, &[]);
        assert!(e.active().is_empty());
        assert_eq!(sink.wait_for(2).len(), 2);
    }

    /// Proves: `evaluate` feeds the fill rings from the snapshot's filesystems: a filesystem
    /// losing 1% of its size per 10 s fires `filesystem_fill` (subject: its mount point)
    /// while still more than half free, and resolves once it is emptied and stays flat; an
    /// agent whose `filesystem_fill` is off gets no series.
    #[test]
    fn filesystem_fill_from_the_snapshot_fires_and_resolves() {
        use crate::protocol::Filesystem;
        let sink = Sink::default();
        let mut c = (*config(&[])).clone();
        c.fill_window = Duration::from_secs(300);
        if let Some(spec) = c.rules.get_mut(&RuleId::FilesystemFill) {
            *spec = RuleSpec {
                threshold: 3600.0,
                resolve: 7200.0,
                for_: Duration::ZERO,
                resolve_for: Duration::from_secs(30),
                ..*spec
            };
        }
        c.overrides.push(crate::server::alerts::config::Override {
            agents: vec!["off-*".into()],
            rules: vec![(
                RuleId::FilesystemFill,
                RulePatch {
                    enabled: Some(false),
                    ..RulePatch::default()
                },
            )],
        });
        let mut e = evaluator(Arc::new(c), Box::new(MemoryAlertStore::default()), &sink);
        let view = |name: &str, avail: u64| {
            let mut a = agent(name, Status::Live);
            a.last_seen_ms = Some(700);
            a.host.filesystems = Some(vec![Filesystem {
                mount: "/data".into(),
                fs_type: "ext4".into(),
                device: "/dev/sdb1".into(),
                size_bytes: 100_000,
                used_bytes: 100_000 - avail,
                avail_bytes: avail,
                inodes: 0,
                inodes_used: 0,
            }]);
            a
        };
        let fill = |e: &Evaluator| {
            e.active()
                .into_iter()
                .find(|a| a.rule == RuleId::FilesystemFill)
        };
        let mut t = 1_700_000_000_000;
        let mut fired_at = None;
        for i in 0..100u64 {
            let avail = 100_000 - i * 1_000;
            e.evaluate(t, &[view("db", avail), view("off-1", avail)]);
            t += 10_000;
            if fill(&e).is_some_and(|a| a.machine.phase == Phase::Firing) {
                fired_at = Some(avail);
                break;
            }
        }
        let Some(avail) = fired_at else {
            panic!("never fired: {:?}", e.active());
        };
        // 1 000 bytes per 10 s: an hour left at 360 000 bytes, i.e. fires at the first
        // prediction (a quarter of the window: 75 s in) with 92 000 bytes free.
        assert!(avail > 50_000, "fired with {avail} bytes free");
        let alert = fill(&e).unwrap_or_else(|| panic!("no alert"));
        assert_eq!(
            (alert.name.as_str(), alert.subject.as_deref()),
            ("db", Some("/data"))
        );
        assert_eq!(e.fills.points("id-off-1", "/data"), 0);
        assert!(e.fills.points("id-db", "/data") > 0);
        for _ in 0..60 {
            e.evaluate(t, &[view("db", 100_000)]);
            t += 10_000;
        }
        assert!(fill(&e).is_none(), "{:?}", e.active());
        let got = sink.wait_for(2);
        assert_eq!(
            got,
            vec![
                ("db".into(), "filesystem_fill".into(), Transition::Fired),
                ("db".into(), "filesystem_fill".into(), Transition::Resolved)
            ]
        );
    }

    /// Proves: a steadily filling filesystem fed straight to the fill series fires
    /// `filesystem_fill` when an hour is left, to within the fit's step.
    #[test]
    fn fill_rate_fires_before_full() {
        let sink = Sink::default();
        let mut c = (*config(&[])).clone();
        c.fill_window = Duration::from_secs(600);
        if let Some(spec) = c.rules.get_mut(&RuleId::FilesystemFill) {
            *spec = RuleSpec {
                threshold: 3600.0,
                resolve: 7200.0,
                for_: Duration::ZERO,
                ..*spec
            };
        }
        let mut e = evaluator(Arc::new(c), Box::new(MemoryAlertStore::default()), &sink);
        // 10 GB free, losing 1 MB/s: full in about 2.8 h at first, then closer.
        let mut fired_with_left = None;
        for i in 0..1000u64 {
            let now = i * 10_000;
            let mut inputs = Inputs {
                filesystems: vec![crate::server::alerts::rules::FsInput {
                    mountpoint: "/data".into(),
                    size_bytes: 20_000_000_000,
                    avail_bytes: 10_000_000_000 - i * 10_000_000,
                    seconds_to_full: None,
                }],
                ..Inputs::default()
            };
            e.update_fills("a", &mut inputs, now, now);
            let left = inputs.filesystems[0].seconds_to_full;
            let spec = e.config.spec(RuleId::FilesystemFill, &[]);
            let mut obs = Vec::new();
            observe(RuleId::FilesystemFill, &spec, &inputs, &mut obs);
            if obs.first().is_some_and(|o| o.level == Level::Fire) {
                fired_with_left = left;
                break;
            }
        }
        let Some(left) = fired_with_left else {
            panic!("never predicted full");
        };
        assert!((3500.0..3600.0).contains(&left), "{left}");
    }
}
