//! Registry actor: the state of every agent and every open session.
//!
//! Owns: one [`AgentEntry`] per agent id (not per IP: several agents on one host are distinct),
//! with its address, latest sample, status and counters, and its whole-machine view with the
//! rates derived from its counters and its clock offset ([`HostState`]); and the list of open
//! sessions.
//! Receives from Sessions: [`Connect`], [`Hello`], [`Samples`] (or [`Sample`]), [`Disconnect`]; from the
//! Reporter and the HTTP API: [`GetSnapshotParts`], [`GetSnapshot`], [`GetHistory`]; from the server's shutdown path: [`Shutdown`];
//! from the Store: [`store::Committed`].
//! Sends to Sessions: [`session::Close`] (when a newer connection takes over an agent id, and
//! on shutdown) and, with a store, [`session::Durable`] (what may be acknowledged); to the
//! Store: [`store::Attach`] and [`store::Append`] (every sample that is not a duplicate).
//!
//! With a store, a sample is acknowledged only once it is on disk: Session → Registry
//! (deduplicates) → Store (batches, commits) → [`store::Committed`] → Registry →
//! [`session::Durable`] → Session sends `ack`. The durable seq of the agent's current run is
//! also the resume point given in `welcome`. At startup the Registry is filled from the store
//! ([`Registry::with_store`]): every agent offline ("server restarted") with its last-known
//! state and the seq of its run, so a replaying agent produces no duplicate.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::config::{MAX_AGENTS, OFFLINE_RETENTION, STALE_AFTER_INTERVALS};
use crate::protocol::{self, Cpu, Memory, Metrics};
use crate::server::history::{Bucket, History, series};
use crate::server::host::HostState;
use crate::server::session::{self, SessionId};
use crate::server::store::{self, Store};
use crate::snapshot::{AgentView, SNAPSHOT_VERSION, ServerInfo, Snapshot, Status, Summary};
use crate::util::now_ms;

/// A new connection; sent by a Session from `started()`, before it handles any frame.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub session: SessionId,
    pub peer: SocketAddr,
    pub close: Recipient<session::Close>,
    /// Where to say what is durable (used only with a store).
    pub durable: Recipient<session::Durable>,
}

/// A validated `hello`: attaches the session to an agent id. Answers the highest seq already
/// held for this agent's run (on disk, with a store; `None` for a run the registry has not
/// seen), which the Session
/// passes on in `welcome` so the agent does not resend those samples; or why the id is
/// refused (another live run holds it).
#[derive(Message)]
#[rtype(result = "Result<Option<u64>, String>")]
pub struct Hello {
    pub session: SessionId,
    pub hello: protocol::Hello,
}

/// A validated sample from an attached session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Sample {
    pub session: SessionId,
    pub metrics: Metrics,
}

/// Validated samples from an attached session, in the order received: what a Session read in
/// one go, as one message (one message per sample costs more than the sample at high rates).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Samples {
    pub session: SessionId,
    pub samples: Vec<Metrics>,
}

/// The session ended; `reason` is shown as the agent's offline reason.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub session: SessionId,
    pub reason: String,
}

/// Asks for the current view of every agent.
///
/// The Registry builds the whole [`Snapshot`] on its own thread (the one that ingests); a
/// caller that can do the work itself asks for [`GetSnapshotParts`] instead.
#[derive(Message)]
#[rtype(result = "Snapshot")]
pub struct GetSnapshot;

/// Asks for what a [`Snapshot`] is made of: a cheap copy of every agent's state (shared
/// `hello`, a few numbers). The caller turns it into a `Snapshot` on its own thread
/// ([`SnapshotParts::into_snapshot`]: copying the strings, sorting), so a large fleet's
/// report costs the ingest thread only the copy.
#[derive(Message)]
#[rtype(result = "SnapshotParts")]
pub struct GetSnapshotParts;

/// The state of every agent at one instant; see [`GetSnapshotParts`].
#[derive(Debug, Clone)]
pub struct SnapshotParts {
    ts_ms: u64,
    server: ServerInfo,
    /// A store is in use (the views carry `stored_seq`).
    stored: bool,
    /// The store's state, when there is one.
    store: Option<crate::snapshot::StoreView>,
    agents: Vec<AgentParts>,
}

/// One agent's state in [`SnapshotParts`]: everything its [`AgentView`] shows, with the
/// strings of its `hello` shared rather than copied.
#[derive(Debug, Clone)]
struct AgentParts {
    hello: Arc<protocol::Hello>,
    ip: IpAddr,
    status: Status,
    offline_reason: Option<String>,
    seq: u64,
    cpu: Option<Cpu>,
    memory: Option<Memory>,
    last_seen_ms: Option<u64>,
    last_sample_ts_ms: Option<u64>,
    received: u64,
    duplicates: u64,
    gaps: u64,
    first_seq: u64,
    durable: u64,
    host: Option<Arc<crate::snapshot::HostView>>,
}

impl AgentParts {
    fn view(self, stored: bool) -> AgentView {
        let hello = &self.hello;
        AgentView {
            id: hello.agent_id.clone(),
            name: hello.name.clone(),
            hostname: hello.hostname.clone(),
            ip: self.ip.to_string(),
            os: hello.os.clone(),
            cores: hello.cores,
            agent_version: hello.agent_version.clone(),
            interval_ms: hello.interval_ms,
            run_id: hello.run_id.clone(),
            status: self.status,
            offline_reason: self.offline_reason,
            seq: self.seq,
            cpu: self.cpu,
            memory: self.memory,
            last_seen_ms: self.last_seen_ms,
            last_sample_ts_ms: self.last_sample_ts_ms,
            received: self.received,
            duplicates: self.duplicates,
            gaps: self.gaps,
            first_seq: self.first_seq,
            stored_seq: stored.then_some(self.durable),
            host: self.host.map(|h| (*h).clone()).unwrap_or_default(),
        }
    }
}

impl SnapshotParts {
    /// Parts without agents (tests of the snapshot's consumers).
    #[cfg(test)]
    pub fn empty(ts_ms: u64, server: ServerInfo) -> Self {
        Self {
            ts_ms,
            server,
            stored: false,
            store: None,
            agents: Vec::new(),
        }
    }

    /// The snapshot: every agent's view, sorted by name then id, and the summary.
    pub fn into_snapshot(self) -> Snapshot {
        let stored = self.stored;
        let mut agents: Vec<AgentView> = self.agents.into_iter().map(|a| a.view(stored)).collect();
        agents.sort_unstable_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        let mut summary = Summary {
            agents: agents.len(),
            ..Summary::default()
        };
        for a in &agents {
            match a.status {
                Status::Live => summary.live += 1,
                Status::Stale => summary.stale += 1,
                Status::Offline => summary.offline += 1,
            }
        }
        Snapshot {
            version: SNAPSHOT_VERSION,
            ts_ms: self.ts_ms,
            server: self.server,
            summary,
            agents,
            store: self.store,
        }
    }
}

/// Asks for an agent's history in buckets of `step_ms` over `[from_ms, to_ms)`; `None` if
/// the agent is unknown.
#[derive(Message)]
#[rtype(result = "Option<Vec<Bucket>>")]
pub struct GetHistory {
    pub agent_id: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub step_ms: u64,
}

/// Closes every session (each says `bye` to its agent). Returns how many were open.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown;

/// Number of sessions still open (used by shutdown to wait for them).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct OpenSessions;

struct SessionEntry {
    peer: SocketAddr,
    close: Recipient<session::Close>,
    durable: Recipient<session::Durable>,
    agent: Option<String>,
}

/// Everything the registry knows about one agent.
struct AgentEntry {
    /// Shared with snapshots ([`AgentParts`]), which then need not copy its strings.
    hello: Arc<protocol::Hello>,
    peer: SocketAddr,
    /// The session currently attached, if connected.
    session: Option<SessionId>,
    offline_since: Option<Instant>,
    offline_reason: Option<String>,
    latest: Option<Metrics>,
    latest_at: Option<Instant>,
    /// Set when the agent attached; "stale" counts from here before the first sample.
    attached_at: Instant,
    history: History,
    /// Highest seq of the current run on disk (with a store).
    durable: u64,
    /// Whole-machine view, rates and clock offset.
    host: HostState,
}

impl AgentEntry {
    fn status(&self, now: Instant) -> Status {
        if self.session.is_none() {
            return Status::Offline;
        }
        let since = self.latest_at.unwrap_or(self.attached_at);
        let interval = Duration::from_millis(self.hello.interval_ms);
        // A quarter interval of slack so a sample that is a little late does not flap the
        // status (and `stale` still shows well before the idle timeout makes it `offline`).
        let allowed = interval * STALE_AFTER_INTERVALS + interval / 4;
        if now.duration_since(since) > allowed {
            Status::Stale
        } else {
            Status::Live
        }
    }

    /// The agent's state for a snapshot taken at `now`.
    fn parts(&self, now: Instant) -> AgentParts {
        let status = self.status(now);
        let latest = self.latest.as_ref();
        AgentParts {
            hello: Arc::clone(&self.hello),
            ip: self.peer.ip(),
            status,
            offline_reason: (status == Status::Offline)
                .then(|| self.offline_reason.clone())
                .flatten(),
            seq: self.history.highest(),
            cpu: latest.and_then(|m| m.cpu.clone()),
            memory: latest.and_then(|m| m.memory),
            last_seen_ms: self
                .latest_at
                .map(|t| u64::try_from(now.duration_since(t).as_millis()).unwrap_or(u64::MAX)),
            last_sample_ts_ms: latest.map(|m| m.ts_ms),
            received: self.history.received(),
            duplicates: self.history.duplicates(),
            gaps: self.history.gaps(),
            first_seq: self.history.first_seq(),
            durable: self.durable,
            host: self.host.view(),
        }
    }
}

/// See the module documentation.
pub struct Registry {
    server: ServerInfo,
    /// Samples remembered per agent.
    history: usize,
    agents: HashMap<String, AgentEntry>,
    sessions: HashMap<SessionId, SessionEntry>,
    /// Where accepted samples go to be made durable; `None`: in-memory only (acks at once).
    store: Option<Addr<Store>>,
    /// The store's health, shown in snapshots.
    store_health: Option<Arc<store::StoreHealth>>,
}

impl Registry {
    /// A registry that remembers `history` samples per agent.
    pub fn new(server: ServerInfo, history: usize) -> Self {
        Self {
            server,
            history,
            agents: HashMap::new(),
            sessions: HashMap::new(),
            store: None,
            store_health: None,
        }
    }

    /// A registry that persists through `store`, starting from what the last server left:
    /// every agent offline ([`store::RESTART_REASON`]) with its last-known state, its ring
    /// refilled and its run's durable seq, so that a replay after the restart is deduplicated.
    pub fn with_store(
        server: ServerInfo,
        history: usize,
        store: Addr<Store>,
        health: Arc<store::StoreHealth>,
        restored: Vec<store::Restored>,
    ) -> Self {
        let mut registry = Self::new(server, history);
        registry.store = Some(store);
        registry.store_health = Some(health);
        let now = Instant::now();
        for r in restored {
            let peer = SocketAddr::new(
                r.ip.parse()
                    .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
                0,
            );
            let mut ring = History::new(history);
            ring.resume(&r.points, r.last_seq);
            registry.agents.insert(
                r.hello.agent_id.clone(),
                AgentEntry {
                    hello: Arc::new(r.hello),
                    peer,
                    session: None,
                    offline_since: Some(now),
                    offline_reason: Some(store::RESTART_REASON.to_string()),
                    latest: r.latest,
                    latest_at: None,
                    attached_at: now,
                    history: ring,
                    durable: r.last_seq,
                    host: HostState::default(),
                },
            );
        }
        registry
    }

    /// Tells `agent`'s session (if any) what it may acknowledge.
    fn tell_durable(&self, entry: &AgentEntry) {
        if let Some(s) = entry.session.and_then(|s| self.sessions.get(&s)) {
            s.durable.do_send(session::Durable { seq: entry.durable });
        }
    }

    /// Drops offline agents past their retention, and the oldest offline ones beyond
    /// [`MAX_AGENTS`], so that agents that never return cannot grow memory without bound.
    fn prune(&mut self, now: Instant) {
        self.agents.retain(|_, a| {
            a.offline_since
                .is_none_or(|t| now.duration_since(t) < OFFLINE_RETENTION)
        });
        if self.agents.len() > MAX_AGENTS {
            let mut offline: Vec<(Instant, String)> = self
                .agents
                .iter()
                .filter_map(|(id, a)| a.offline_since.map(|t| (t, id.clone())))
                .collect();
            offline.sort();
            let excess = self.agents.len() - MAX_AGENTS;
            for (_, id) in offline.into_iter().take(excess) {
                self.agents.remove(&id);
            }
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_secs(60), |this, _| {
            this.prune(Instant::now())
        });
    }
}

impl Handler<Connect> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) {
        self.sessions.insert(
            msg.session,
            SessionEntry {
                peer: msg.peer,
                close: msg.close,
                durable: msg.durable,
                agent: None,
            },
        );
    }
}

impl Handler<Hello> for Registry {
    type Result = Result<Option<u64>, String>;

    fn handle(&mut self, msg: Hello, _: &mut Self::Context) -> Self::Result {
        let Some(peer) = self.sessions.get(&msg.session).map(|s| s.peer) else {
            return Ok(None); // the session ended before its hello was processed
        };
        let id = msg.hello.agent_id.clone();
        let now = Instant::now();
        if let Some(entry) = self.agents.get(&id) {
            let same_run = entry.hello.run_id == msg.hello.run_id;
            // Another run of the same id that is still streaming: two agents share an id
            // (e.g. same host, same name). Refuse the newcomer instead of letting them take
            // the id from each other forever. A half-open old connection goes stale within
            // two intervals, and then the newcomer's retry wins.
            if !same_run
                && entry.session.is_some_and(|s| s != msg.session)
                && entry.status(now) == Status::Live
            {
                return Err(format!(
                    "agent id {id} is in use by a live agent ({} from {}); give each agent its own --name or --id",
                    entry.hello.name,
                    entry.peer.ip()
                ));
            }
        }
        if let Some(session) = self.sessions.get_mut(&msg.session) {
            session.agent = Some(id.clone());
        }
        if let Some(store) = &self.store {
            store.do_send(store::Attach {
                hello: msg.hello.clone(),
                ip: peer.ip().to_string(),
            });
        }
        let durable = self.store.is_some();
        match self.agents.get_mut(&id) {
            Some(entry) => {
                // A newer connection of the same run wins: the old one is half-open. Tell the
                // old session to go.
                if let Some(old) = entry.session.replace(msg.session)
                    && old != msg.session
                    && let Some(old_entry) = self.sessions.get_mut(&old)
                {
                    old_entry.agent = None;
                    old_entry.close.do_send(session::Close::Replaced);
                }
                let same_run = entry.hello.run_id == msg.hello.run_id;
                if !same_run {
                    entry.history.new_run();
                    entry.latest = None;
                    entry.latest_at = None;
                    entry.durable = 0;
                }
                entry.hello = Arc::new(msg.hello);
                entry.peer = peer;
                entry.offline_since = None;
                entry.offline_reason = None;
                entry.attached_at = now;
                // With a store, only what is on disk: the agent forgets what `welcome` names.
                let held = if durable {
                    entry.durable
                } else {
                    entry.history.highest()
                };
                Ok((same_run && held > 0).then_some(held))
            }
            None => {
                self.agents.insert(
                    id,
                    AgentEntry {
                        hello: Arc::new(msg.hello),
                        peer,
                        session: Some(msg.session),
                        offline_since: None,
                        offline_reason: None,
                        latest: None,
                        latest_at: None,
                        attached_at: now,
                        history: History::new(self.history),
                        durable: 0,
                        host: HostState::default(),
                    },
                );
                if self.agents.len() > MAX_AGENTS {
                    self.prune(now);
                }
                Ok(None)
            }
        }
    }
}

impl Handler<Sample> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Sample, _: &mut Self::Context) {
        self.record(msg.session, msg.metrics);
    }
}

impl Handler<Samples> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Samples, _: &mut Self::Context) {
        for metrics in msg.samples {
            self.record(msg.session, metrics);
        }
    }
}

impl Registry {
    /// Records one sample of `session`'s agent (see [`Sample`]).
    fn record(&mut self, session: SessionId, mut metrics: Metrics) {
        let Some(id) = self.sessions.get(&session).and_then(|s| s.agent.as_ref()) else {
            return;
        };
        let Some(entry) = self.agents.get_mut(id) else {
            return;
        };
        if let Some(clock) = &metrics.clock {
            entry.host.clock(&entry.hello, clock);
        }
        let m = &metrics;
        let mem_used = m.memory.map(|mem| mem.used);
        let cpu_total = m.cpu.as_ref().map(|c| c.total);
        if entry.history.record(m.seq, m.ts_ms, cpu_total, mem_used) {
            entry.latest_at = Some(Instant::now());
            if let Some(store) = &self.store {
                store.do_send(store::Append {
                    agent_id: id.clone(),
                    run_id: entry.hello.run_id.clone(),
                    metrics: metrics.clone(),
                });
            }
            // A replayed older sample fills the history but is not the latest reading.
            if m.seq == entry.history.highest() {
                entry.host.update(&entry.hello, &mut metrics);
                entry.latest = Some(metrics);
            }
        } else if self.store.is_some() && m.seq <= entry.durable {
            // A repeat of a sample already on disk: acknowledge it now (one still waiting for
            // its commit is acknowledged by that commit).
            let entry = &self.agents[id];
            self.tell_durable(entry);
        }
    }
}

impl Handler<Disconnect> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, _: &mut Self::Context) {
        let Some(session) = self.sessions.remove(&msg.session) else {
            return;
        };
        let Some(entry) = session.agent.and_then(|id| self.agents.get_mut(&id)) else {
            return;
        };
        if entry.session == Some(msg.session) {
            entry.session = None;
            entry.offline_since = Some(Instant::now());
            entry.offline_reason = Some(msg.reason);
        }
    }
}

impl Handler<store::Committed> for Registry {
    type Result = ();

    fn handle(&mut self, msg: store::Committed, _: &mut Self::Context) {
        for run in msg.runs {
            let Some(entry) = self.agents.get_mut(&run.agent_id) else {
                continue;
            };
            if entry.hello.run_id != run.run_id || run.seq <= entry.durable {
                continue; // an older run's commit, or nothing new
            }
            entry.durable = run.seq;
            let entry = &self.agents[&run.agent_id];
            self.tell_durable(entry);
        }
    }
}

impl Registry {
    fn snapshot_parts(&self) -> SnapshotParts {
        let now = Instant::now();
        SnapshotParts {
            ts_ms: now_ms(),
            server: self.server.clone(),
            stored: self.store.is_some(),
            store: self.store_health.as_ref().map(|h| h.view()),
            agents: self.agents.values().map(|a| a.parts(now)).collect(),
        }
    }
}

impl Handler<GetSnapshot> for Registry {
    type Result = MessageResult<GetSnapshot>;

    fn handle(&mut self, _: GetSnapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.snapshot_parts().into_snapshot())
    }
}

impl Handler<GetSnapshotParts> for Registry {
    type Result = MessageResult<GetSnapshotParts>;

    fn handle(&mut self, _: GetSnapshotParts, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.snapshot_parts())
    }
}

impl Handler<GetHistory> for Registry {
    type Result = MessageResult<GetHistory>;

    fn handle(&mut self, q: GetHistory, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.agents
                .get(&q.agent_id)
                .map(|a| series(a.history.points(), q.from_ms, q.to_ms, q.step_ms)),
        )
    }
}

impl Handler<Shutdown> for Registry {
    type Result = usize;

    fn handle(&mut self, _: Shutdown, _: &mut Self::Context) -> usize {
        for s in self.sessions.values() {
            s.close.do_send(session::Close::Shutdown);
        }
        self.sessions.len()
    }
}

impl Handler<OpenSessions> for Registry {
    type Result = usize;

    fn handle(&mut self, _: OpenSessions, _: &mut Self::Context) -> usize {
        self.sessions.len()
    }
}
