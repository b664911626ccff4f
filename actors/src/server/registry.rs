//! Registry actor: the state of every agent and every open session.
//!
//! Owns: one [`AgentEntry`] per agent id (not per IP: several agents on one host are distinct),
//! with its address, latest sample, status and counters, and its whole-machine view with the
//! rates derived from its counters and its clock offset ([`HostState`]); and the list of open
//! sessions.
//! Receives from Sessions: [`Connect`], [`Hello`], [`Samples`] (or [`Sample`]),
//! [`Disconnect`]; from the Reporter, the HTTP API and the dashboard's Broadcaster:
//! [`GetSnapshotParts`], [`GetSnapshot`], [`GetHistory`]; from the server's shutdown path:
//! [`Shutdown`], [`OpenSessions`]; from the Store: [`store::Committed`].
//! Sends to Sessions: [`Close`] (when a newer connection takes over an agent id, and on
//! shutdown) and, with a store, [`Durable`] (what may be acknowledged), through the recipients
//! each Session gave in [`Connect`]; to the Store, through a [`StoreLink`]: [`store::Attach`]
//! and [`store::Append`] (every sample that is not a duplicate, with the rates its view gave).
//!
//! The messages it exchanges with Sessions both ways live in [`crate::server::messages`]; the
//! ones anyone sends to it alone live here. It names no other actor: Sessions are recipients,
//! the Store is a [`StoreLink`], so tests drive it with probes.
//!
//! Who may use an agent id. An enrolled agent's id belongs to its key (the Session admits a
//! hello only if the key is the one enrolled for the id): an approved hello takes the id from
//! an unauthenticated holder, is never displaced by one, and between two connections of the
//! key the rules of one machine below apply wherever they come from. Without authentication
//! (`--auth off`, protocol 1 agents in `--auth optional`) the rules go by address: an
//! id has a *home address*, the IP its samples came from. A hello from the home address
//! always gets the id, even from a connection of another address holding it (which is closed
//! with `duplicate_id`); a hello from any other address gets the id only while nobody holds
//! it. Between connections of one address the rules are those of one machine: a newer
//! connection of the same run replaces a half-open one, another run is refused while the
//! holder is live. The home address moves to a new IP only once the id has streamed from
//! there for [`HOME_MOVES_AFTER`] on one connection. So a client elsewhere on the LAN cannot
//! take the id of a running agent, nor keep it off once it comes back; see the README
//! ("What remains possible without authentication").
//!
//! With a store, a sample is acknowledged only once it is on disk: Session → Registry
//! (deduplicates) → Store (batches, commits) → [`store::Committed`] → Registry →
//! [`Durable`] → Session sends `ack`. The durable seq of the agent's current run is
//! also the resume point given in `welcome`. At startup the Registry is filled from the store
//! ([`Registry::with_store`]): every agent offline ("server restarted") with its last-known
//! state (its whole-machine view rebuilt from the last sample stored) and the seq of its run,
//! so a replaying agent produces no duplicate.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::config::{
    HOME_MOVES_AFTER, MAX_AGENTS, OFFLINE_RETENTION, PRUNE_EVERY, STALE_AFTER_INTERVALS,
};
use crate::protocol::{self, Cpu, Memory, Metrics};
use crate::server::history::{Bucket, History, Point, series};
use crate::server::host::HostState;
use crate::server::intake::ClockWindow;
use crate::server::messages::{
    Close, Connect, Disconnect, Durable, Hello, Sample, Samples, SessionId,
};
use crate::server::store;
use crate::snapshot::{
    AgentAuth, AgentView, PendingAgent, SNAPSHOT_VERSION, ServerInfo, Snapshot, Status, Summary,
};
use crate::util::now_ms;

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
    pending: Vec<PendingAgent>,
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
    retimed: u64,
    gaps: u64,
    first_seq: u64,
    durable: u64,
    auth: Option<AgentAuth>,
    fp: Option<Arc<str>>,
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
            retimed: self.retimed,
            gaps: self.gaps,
            first_seq: self.first_seq,
            stored_seq: stored.then_some(self.durable),
            auth: self.auth,
            fp: self.fp.map(|f| f.to_string()),
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
            pending: Vec::new(),
        }
    }

    /// Parts holding these agents (tests of the snapshot's consumers, e.g. alerts).
    #[cfg(test)]
    pub fn from_views(ts_ms: u64, server: ServerInfo, views: Vec<AgentView>) -> Self {
        let agents = views
            .into_iter()
            .map(|v| AgentParts {
                hello: Arc::new(protocol::Hello {
                    proto: protocol::PROTOCOL_VERSION,
                    agent_id: v.id,
                    run_id: v.run_id,
                    name: v.name,
                    hostname: v.hostname,
                    os: v.os,
                    cores: v.cores,
                    agent_version: v.agent_version,
                    interval_ms: v.interval_ms,
                }),
                ip: v
                    .ip
                    .parse()
                    .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
                status: v.status,
                offline_reason: v.offline_reason,
                seq: v.seq,
                cpu: v.cpu,
                memory: v.memory,
                last_seen_ms: v.last_seen_ms,
                last_sample_ts_ms: v.last_sample_ts_ms,
                received: v.received,
                duplicates: v.duplicates,
                retimed: v.retimed,
                gaps: v.gaps,
                first_seq: v.first_seq,
                durable: v.stored_seq.unwrap_or(0),
                auth: v.auth,
                fp: v.fp.map(Arc::from),
                host: Some(Arc::new(v.host)),
            })
            .collect();
        Self {
            ts_ms,
            server,
            stored: false,
            store: None,
            agents,
            pending: Vec::new(),
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
            pending: self.pending,
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

/// Where the Registry sends what is to be made durable: the Store in the server (wired by
/// [`crate::server::Server::start`]), a probe in tests.
pub struct StoreLink {
    pub attach: Recipient<store::Attach>,
    pub append: Recipient<store::Append>,
}

impl StoreLink {
    /// The link to an actor that handles [`store::Attach`] and [`store::Append`].
    pub fn to<A>(store: &Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<store::Attach> + Handler<store::Append>,
    {
        Self {
            attach: store.clone().recipient(),
            append: store.clone().recipient(),
        }
    }
}

struct SessionEntry {
    peer: SocketAddr,
    close: Recipient<Close>,
    durable: Recipient<Durable>,
    agent: Option<String>,
}

/// Everything the registry knows about one agent.
struct AgentEntry {
    /// Shared with snapshots ([`AgentParts`]), which then need not copy its strings.
    hello: Arc<protocol::Hello>,
    peer: SocketAddr,
    /// The address this id's samples come from (see the module docs); `None` before the
    /// first sample.
    home: Option<IpAddr>,
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
    /// How the server knows the agent's current connection (trust layer).
    auth: Option<AgentAuth>,
    fp: Option<Arc<str>>,
    /// Whole-machine view, rates and clock offset.
    host: HostState,
    /// Samples of the current run stored at their arrival time ([`ClockWindow`]).
    retimed: u64,
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
            retimed: self.retimed,
            gaps: self.history.gaps(),
            first_seq: self.history.first_seq(),
            durable: self.durable,
            auth: self.auth,
            fp: self.fp.clone(),
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
    /// Every offline agent by the time it went offline, oldest first: the retention and the
    /// cap drop from its front in O(log n) each, never by scanning every agent.
    offline: BTreeSet<(Instant, String)>,
    sessions: HashMap<SessionId, SessionEntry>,
    /// Where accepted samples go to be made durable; `None`: in-memory only (acks at once).
    store: Option<StoreLink>,
    /// The store's health, shown in snapshots.
    store_health: Option<Arc<store::StoreHealth>>,
    /// Offline agents are forgotten after this long ([`OFFLINE_RETENTION`]).
    offline_retention: Duration,
    /// Most agents remembered ([`MAX_AGENTS`]).
    max_agents: usize,
    /// The keys waiting for approval, for snapshots (the trust layer; `None`: none).
    pending: Option<PendingSource>,
    /// The revoked keys' fingerprints, for snapshots (the trust layer; `None`: none).
    revoked: Option<RevokedSource>,
    /// How long an id must stream from a new address for that to become its home
    /// ([`HOME_MOVES_AFTER`]).
    home_moves_after: Duration,
    /// Where sample timestamps may lie; others are stored at their arrival time.
    clock: ClockWindow,
}

/// What becomes of a hello for an id that another session holds.
enum Contest {
    /// The newcomer gets the id; the holder is closed with this.
    TakeOver(Close),
    /// The newcomer is refused, for this reason.
    Refuse(String),
}

/// Where the Registry reads the agents waiting for approval when it builds a snapshot (the
/// trust layer's enrollment, wired by [`crate::server::Server::start`]).
pub type PendingSource = Arc<dyn Fn() -> Vec<PendingAgent> + Send + Sync>;

/// Where the Registry reads the fingerprints of the revoked keys when it builds a snapshot:
/// an agent whose last connection was authenticated by one of them shows `auth: revoked`
/// (its entry keeps the value of that connection, which a revocation does not reach).
pub type RevokedSource = Arc<dyn Fn() -> HashSet<String> + Send + Sync>;

impl Registry {
    /// A registry that remembers `history` samples per agent.
    pub fn new(server: ServerInfo, history: usize) -> Self {
        Self {
            server,
            history,
            agents: HashMap::new(),
            offline: BTreeSet::new(),
            sessions: HashMap::new(),
            store: None,
            store_health: None,
            offline_retention: OFFLINE_RETENTION,
            max_agents: MAX_AGENTS,
            pending: None,
            revoked: None,
            home_moves_after: HOME_MOVES_AFTER,
            clock: ClockWindow::new(store::DEFAULT_RAW_RETENTION),
        }
    }

    /// The same registry, listing `source`'s pending agents in its snapshots.
    pub fn with_pending(mut self, source: PendingSource) -> Self {
        self.pending = Some(source);
        self
    }

    /// The same registry, marking the agents of `source`'s revoked keys `auth: revoked` in
    /// its snapshots.
    pub fn with_revoked(mut self, source: RevokedSource) -> Self {
        self.revoked = Some(source);
        self
    }

    /// The same registry with another time for a home address to move (tests).
    #[cfg(test)]
    fn with_home_moves_after(mut self, after: Duration) -> Self {
        self.home_moves_after = after;
        self
    }

    /// The same registry with another window for sample timestamps (the server's: behind as
    /// far as its raw retention).
    pub fn with_clock_window(mut self, clock: ClockWindow) -> Self {
        self.clock = clock;
        self
    }

    /// The same registry with other limits on remembered agents (tests: the defaults are a
    /// day and 100,000 agents).
    #[cfg(test)]
    fn with_agent_limits(mut self, offline_retention: Duration, max_agents: usize) -> Self {
        self.offline_retention = offline_retention;
        self.max_agents = max_agents;
        self
    }

    /// A registry that persists through `store`, starting from what the last server left:
    /// every agent offline ([`store::RESTART_REASON`]) with its last-known state, its ring
    /// refilled and its run's durable seq, so that a replay after the restart is deduplicated.
    pub fn with_store(
        server: ServerInfo,
        history: usize,
        store: StoreLink,
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
            // The whole-machine view of the last sample stored, so that the agent shows its
            // load, disks and network before it reconnects (rates come with its next sample).
            let mut latest = r.latest;
            let mut host = HostState::default();
            if let Some(m) = latest.as_mut() {
                host.update(&r.hello, m);
            }
            registry.offline.insert((now, r.hello.agent_id.clone()));
            registry.agents.insert(
                r.hello.agent_id.clone(),
                AgentEntry {
                    hello: Arc::new(r.hello),
                    peer,
                    home: Some(peer.ip()).filter(|ip| !ip.is_unspecified()),
                    session: None,
                    offline_since: Some(now),
                    offline_reason: Some(store::RESTART_REASON.to_string()),
                    latest,
                    latest_at: None,
                    attached_at: now,
                    history: ring,
                    durable: r.last_seq,
                    auth: None,
                    fp: None,
                    host,
                    retimed: 0,
                },
            );
        }
        registry
    }

    /// Tells `agent`'s session (if any) what it may acknowledge.
    fn tell_durable(&self, entry: &AgentEntry) {
        if let Some(s) = entry.session.and_then(|s| self.sessions.get(&s)) {
            s.durable.do_send(Durable { seq: entry.durable });
        }
    }

    /// Drops offline agents past their retention ([`OFFLINE_RETENTION`]), and the oldest
    /// offline ones beyond the cap ([`MAX_AGENTS`]), so that agents that never return cannot
    /// grow memory without bound. Live agents are never dropped. Each agent dropped costs
    /// O(log n) (the front of the offline index): a stream of new ids above the cap, each
    /// evicting one old agent, stays as cheap as a hello.
    fn prune(&mut self, now: Instant) {
        let retention = self.offline_retention;
        while let Some((since, _)) = self.offline.first()
            && now.saturating_duration_since(*since) >= retention
        {
            self.drop_oldest_offline();
        }
        while self.agents.len() > self.max_agents && !self.offline.is_empty() {
            self.drop_oldest_offline();
        }
    }

    /// Forgets the agent that has been offline longest.
    fn drop_oldest_offline(&mut self) {
        if let Some((_, id)) = self.offline.pop_first() {
            self.agents.remove(&id);
        }
    }

    /// `id` goes offline now: indexed, and with a store its in-memory points are dropped (the
    /// store serves its history; the run's accounting stays), so that an offline agent costs
    /// little however full its ring was.
    fn went_offline(&mut self, id: &str, now: Instant, reason: String) {
        let Some(entry) = self.agents.get_mut(id) else {
            return;
        };
        if let Some(since) = entry.offline_since.take() {
            self.offline.remove(&(since, id.to_string()));
        }
        entry.session = None;
        entry.offline_since = Some(now);
        entry.offline_reason = Some(reason);
        if self.store.is_some() {
            entry.history.forget_points();
        }
        self.offline.insert((now, id.to_string()));
    }
}

/// Whether a hello from `ip` (authenticated as `auth`) for the id `entry` describes may take
/// it from the session that holds it (see the module docs).
fn contest(
    entry: &AgentEntry,
    hello: &protocol::Hello,
    auth: Option<AgentAuth>,
    ip: IpAddr,
    now: Instant,
) -> Contest {
    let holder = entry.peer.ip();
    let home = entry.home.unwrap_or(holder);
    let id = &entry.hello.agent_id;
    let approved = |a: Option<AgentAuth>| a == Some(AgentAuth::Approved);
    if approved(auth) && !approved(entry.auth) {
        // The key's owner takes its id back from an unauthenticated holder (protocol 1 in
        // `--auth optional`), wherever either is: only the key's owner may send as that id.
        return Contest::TakeOver(Close::Replaced);
    }
    if approved(entry.auth) && !approved(auth) {
        // The Session refuses protocol 1 for an enrolled id already; this is the backstop.
        return Contest::Refuse(format!(
            "agent id {id} belongs to an enrolled agent; only its key may send as it"
        ));
    }
    // Both approved: the same key (the Session checked it against the id), so the address
    // proves nothing more and the key stands for it; a second live run of one key (a copied
    // state directory) waits until the holder goes quiet, as two agents on one host do.
    if ip == holder || approved(auth) {
        // One address: a newer connection of the same run replaces a half-open one; another
        // run waits until the holder goes quiet (two agents on one host share an id).
        let same_run = entry.hello.run_id == hello.run_id;
        if same_run || entry.status(now) != Status::Live {
            return Contest::TakeOver(Close::Replaced);
        }
        return Contest::Refuse(format!(
            "agent id {id} is in use by a live agent ({} from {holder}); give each agent its own --name or --id",
            entry.hello.name
        ));
    }
    if ip == home {
        // The id's own address takes it back from a connection elsewhere.
        return Contest::TakeOver(Close::Displaced);
    }
    Contest::Refuse(format!(
        "agent id {id} is in use by the agent at {holder} ({}), and this connection comes from {ip}; give each agent its own --name or --id",
        entry.hello.name
    ))
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(PRUNE_EVERY, |this, _| this.prune(Instant::now()));
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
        let mut close_holder = Close::Replaced;
        if let Some(entry) = self.agents.get(&id)
            && entry.session.is_some_and(|s| s != msg.session)
        {
            match contest(entry, &msg.hello, msg.auth, peer.ip(), now) {
                Contest::TakeOver(close) => close_holder = close,
                // The Session logs the refusal, naming the peer.
                Contest::Refuse(why) => return Err(why),
            }
        }
        if let Some(session) = self.sessions.get_mut(&msg.session) {
            session.agent = Some(id.clone());
        }
        if let Some(store) = &self.store {
            store.attach.do_send(store::Attach {
                hello: msg.hello.clone(),
                ip: peer.ip().to_string(),
            });
        }
        let durable = self.store.is_some();
        match self.agents.get_mut(&id) {
            Some(entry) => {
                // The holder lost the contest (a half-open connection of the same run, or a
                // connection from elsewhere while the home address is back): tell it to go.
                if let Some(old) = entry.session.replace(msg.session)
                    && old != msg.session
                    && let Some(old_entry) = self.sessions.get_mut(&old)
                {
                    old_entry.agent = None;
                    old_entry.close.do_send(close_holder);
                }
                let same_run = entry.hello.run_id == msg.hello.run_id;
                if !same_run {
                    entry.history.new_run();
                    entry.latest = None;
                    entry.latest_at = None;
                    entry.durable = 0;
                    entry.retimed = 0;
                }
                entry.hello = Arc::new(msg.hello);
                entry.auth = msg.auth;
                entry.fp = msg.fp.map(Arc::from);
                entry.peer = peer;
                if let Some(since) = entry.offline_since.take() {
                    self.offline.remove(&(since, id.clone()));
                }
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
                        home: None,
                        session: Some(msg.session),
                        offline_since: None,
                        offline_reason: None,
                        latest: None,
                        latest_at: None,
                        attached_at: now,
                        history: History::new(self.history),
                        durable: 0,
                        auth: msg.auth,
                        fp: msg.fp.map(Arc::from),
                        host: HostState::default(),
                        retimed: 0,
                    },
                );
                if self.agents.len() > self.max_agents {
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
    /// Records one sample of `session`'s agent (see [`Sample`]). A sample stamped too far
    /// from the server's clock ([`ClockWindow`]) is recorded at its arrival time, and counted.
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
        let now = now_ms();
        let (ts_ms, retimed) = self.clock.admit(metrics.ts_ms, now);
        if retimed {
            if entry.retimed == 0 {
                let off = i128::from(metrics.ts_ms) - i128::from(now);
                tracing::warn!(
                    "agent {} ({}): sample {} is stamped {off} ms from the server's clock; it and any other more than {:?} ahead or {:?} behind are stored at the time they arrive (counted as `retimed`; said once per run)",
                    entry.hello.name.escape_debug(),
                    id.escape_debug(),
                    metrics.seq,
                    self.clock.ahead,
                    self.clock.behind,
                );
            }
            entry.retimed += 1;
            metrics.ts_ms = ts_ms;
        }
        let m = &metrics;
        if entry.history.record_point(Point::of(m)) {
            let now = Instant::now();
            entry.latest_at = Some(now);
            let ip = entry.peer.ip();
            match entry.home {
                None => entry.home = Some(ip),
                Some(home)
                    if home != ip
                        && now.duration_since(entry.attached_at) >= self.home_moves_after =>
                {
                    tracing::info!(
                        "agent {} ({}): home address moves from {home} to {ip}",
                        crate::text::for_terminal(&entry.hello.name),
                        crate::text::for_terminal(id)
                    );
                    entry.home = Some(ip);
                }
                Some(_) => {}
            }
            // The store gets the whole sample, with the rates of the view made from it.
            let whole = self.store.as_ref().map(|_| metrics.clone());
            // A replayed older sample fills the history but is not the latest reading (and
            // has no rates: the view is of the newest sample).
            let newest = metrics.seq == entry.history.highest();
            let mut rates = store::Rates::default();
            if newest {
                entry.host.update(&entry.hello, &mut metrics);
                if let Some(view) = entry.host.view() {
                    rates = store::Rates::of(&view);
                }
                entry.latest = Some(metrics);
            }
            if let (Some(store), Some(metrics)) = (&self.store, whole) {
                store.append.do_send(store::Append {
                    agent_id: id.clone(),
                    run_id: entry.hello.run_id.clone(),
                    metrics,
                    rates,
                });
            }
        } else if self.store.is_some() && metrics.seq <= entry.durable {
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
        let Some(id) = session.agent else {
            return;
        };
        if self
            .agents
            .get(&id)
            .is_some_and(|e| e.session == Some(msg.session))
        {
            self.went_offline(&id, Instant::now(), msg.reason);
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
        let revoked = self.revoked.as_ref().map(|r| r()).unwrap_or_default();
        let mut agents: Vec<AgentParts> = self.agents.values().map(|a| a.parts(now)).collect();
        if !revoked.is_empty() {
            for a in &mut agents {
                if a.fp.as_deref().is_some_and(|fp| revoked.contains(fp)) {
                    a.auth = Some(AgentAuth::Revoked);
                }
            }
        }
        SnapshotParts {
            ts_ms: now_ms(),
            server: self.server.clone(),
            stored: self.store.is_some(),
            store: self.store_health.as_ref().map(|h| h.view()),
            agents,
            pending: self.pending.as_ref().map(|p| p()).unwrap_or_default(),
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
            s.close.do_send(Close::Shutdown);
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

#[cfg(test)]
mod tests {
    //! The Registry alone: probes stand in for its Sessions and its Store.

    use super::*;
    use crate::server::probe::{self, Received};

    /// What a probe standing in for a Session receives.
    #[derive(Debug, PartialEq, Eq)]
    enum ToSession {
        Close(Close),
        Durable(u64),
    }

    impl From<Close> for ToSession {
        fn from(close: Close) -> Self {
            ToSession::Close(close)
        }
    }

    impl From<Durable> for ToSession {
        fn from(durable: Durable) -> Self {
            ToSession::Durable(durable.seq)
        }
    }

    /// What a probe standing in for the Store receives: `(agent, run)` attached, or
    /// `(agent, run, seq)` appended.
    #[derive(Debug, PartialEq, Eq)]
    enum ToStore {
        Attach(String, String),
        Append(String, String, u64),
    }

    impl From<store::Attach> for ToStore {
        fn from(a: store::Attach) -> Self {
            ToStore::Attach(a.hello.agent_id, a.hello.run_id)
        }
    }

    impl From<store::Append> for ToStore {
        fn from(a: store::Append) -> Self {
            ToStore::Append(a.agent_id, a.run_id, a.metrics.seq)
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

    fn hello(agent: &str, run: &str) -> protocol::Hello {
        protocol::Hello {
            proto: protocol::PROTOCOL_VERSION,
            agent_id: agent.into(),
            run_id: run.into(),
            name: agent.into(),
            hostname: "host".into(),
            os: "test".into(),
            cores: 1,
            agent_version: "0".into(),
            interval_ms: 1000,
        }
    }

    fn sample(seq: u64) -> Metrics {
        Metrics {
            seq,
            ts_ms: seq.saturating_mul(1_000),
            cpu: Some(Cpu {
                total: 10.0,
                per_core: vec![10.0],
            }),
            memory: None,
            ..Metrics::default()
        }
    }

    /// A registry with a probe for its Store, filled from `restored`.
    fn with_store(restored: Vec<store::Restored>) -> (Addr<Registry>, Received<ToStore>) {
        let (store, received) = probe::start::<ToStore>();
        let health = Arc::new(store::StoreHealth::default());
        let registry =
            Registry::with_store(server(), 100, StoreLink::to(&store), health, restored).start();
        (registry, received)
    }

    /// Connects session `id` (a probe) and sends its hello of `agent`'s `run`; returns what
    /// the probe receives and the Registry's answer to the hello.
    async fn session(
        registry: &Addr<Registry>,
        id: SessionId,
        agent: &str,
        run: &str,
    ) -> (Received<ToSession>, Result<Option<u64>, String>) {
        session_from(registry, id, [127, 0, 0, 1], agent, run).await
    }

    /// Like [`session`], from the address `ip`.
    async fn session_from(
        registry: &Addr<Registry>,
        id: SessionId,
        ip: [u8; 4],
        agent: &str,
        run: &str,
    ) -> (Received<ToSession>, Result<Option<u64>, String>) {
        let (probe, received) = probe::start::<ToSession>();
        let peer = SocketAddr::from((ip, 40_000 + id as u16));
        let connect = Connect {
            session: id,
            peer,
            close: probe.clone().recipient(),
            durable: probe.recipient(),
        };
        registry.send(connect).await.unwrap();
        let hello = Hello {
            session: id,
            hello: hello(agent, run),
            auth: None,
            fp: None,
        };
        let answer = registry.send(hello).await.unwrap();
        (received, answer)
    }

    async fn samples(registry: &Addr<Registry>, session: SessionId, seqs: &[u64]) {
        let samples = seqs.iter().map(|&seq| sample(seq)).collect();
        registry.send(Samples { session, samples }).await.unwrap();
    }

    async fn disconnect(registry: &Addr<Registry>, session: SessionId, reason: &str) {
        let reason = reason.into();
        registry.send(Disconnect { session, reason }).await.unwrap();
    }

    fn committed(agent: &str, run: &str, seq: u64) -> store::DurableSeq {
        store::DurableSeq {
            agent_id: agent.into(),
            run_id: run.into(),
            seq,
        }
    }

    async fn commit(registry: &Addr<Registry>, runs: Vec<store::DurableSeq>) {
        registry.send(store::Committed { runs }).await.unwrap();
    }

    /// The agent's view in a snapshot; `None` if the Registry does not know it.
    async fn view(registry: &Addr<Registry>, agent: &str) -> Option<AgentView> {
        let snapshot = registry.send(GetSnapshot).await.unwrap();
        snapshot.agents.into_iter().find(|a| a.id == agent)
    }

    async fn known(registry: &Addr<Registry>) -> Vec<String> {
        let snapshot = registry.send(GetSnapshot).await.unwrap();
        snapshot.agents.into_iter().map(|a| a.id).collect()
    }

    /// Proves that a sample stamped far from the server's clock (ten years ahead, 2^64-1) is
    /// recorded, and sent to the Store, at its arrival time and counted in `retimed`; one
    /// within the window keeps its own time; a new run counts afresh.
    #[actix_rt::test]
    async fn samples_far_from_the_servers_clock_are_retimed_and_counted() {
        let (registry, mut store) = with_store(Vec::new());
        let (_s1, _) = session(&registry, 1, "a", "r1").await;
        let before = now_ms();
        let stamped = |seq, ts_ms| Metrics {
            ts_ms,
            ..sample(seq)
        };
        let ten_years = 10 * 365 * 24 * 3_600_000;
        let batch = vec![
            stamped(1, before + ten_years),
            stamped(2, u64::MAX),
            stamped(3, before - 1000),
        ];
        registry
            .send(Samples {
                session: 1,
                samples: batch,
            })
            .await
            .unwrap();
        let a = view(&registry, "a").await.unwrap();
        assert_eq!((a.received, a.retimed), (3, 2));
        assert_eq!(
            a.last_sample_ts_ms,
            Some(before - 1000),
            "kept its own time"
        );
        let _ = store.next("attach").await;
        for seq in 1..=3 {
            assert_eq!(
                store.next("append").await,
                ToStore::Append("a".into(), "r1".into(), seq)
            );
        }
        let points = registry
            .send(GetHistory {
                agent_id: "a".into(),
                from_ms: before - 60_000,
                to_ms: now_ms() + 1,
                step_ms: 1,
            })
            .await
            .unwrap()
            .unwrap_or_default();
        assert_eq!(
            points.iter().map(|p| p.n).sum::<u64>(),
            3,
            "all three near now"
        );
        disconnect(&registry, 1, "bye").await;
        let (_s2, _) = session(&registry, 2, "a", "r2").await;
        assert_eq!(view(&registry, "a").await.unwrap().retimed, 0);
    }

    /// Proves exactly-once: a repeated seq is counted as a duplicate, not received again, and
    /// only first sightings go to the Store, in order.
    #[actix_rt::test]
    async fn duplicate_seqs_are_dropped_counted_and_stored_once() {
        let (registry, mut store) = with_store(Vec::new());
        let (_s1, answer) = session(&registry, 1, "a", "r1").await;
        assert_eq!(answer, Ok(None));
        samples(&registry, 1, &[1, 2, 2, 3, 1]).await;
        samples(&registry, 1, &[3, 4]).await;

        let a = view(&registry, "a").await.unwrap();
        assert_eq!((a.received, a.duplicates, a.seq), (4, 3, 4));
        let attach = ToStore::Attach("a".into(), "r1".into());
        assert_eq!(store.next("attach").await, attach);
        for seq in 1..=4 {
            let append = ToStore::Append("a".into(), "r1".into(), seq);
            assert_eq!(store.next("append").await, append);
        }
        // Nothing was appended between 4 and the next new sample.
        samples(&registry, 1, &[5]).await;
        let append = ToStore::Append("a".into(), "r1".into(), 5);
        assert_eq!(store.next("append of 5").await, append);
    }

    /// Proves that an agent id held by a live agent of another run is refused, and that the
    /// holder keeps it (gets no `Close`, keeps streaming).
    #[actix_rt::test]
    async fn a_live_agent_keeps_its_id_against_another_run() {
        let registry = Registry::new(server(), 100).start();
        let (mut holder, answer) = session(&registry, 1, "a", "r1").await;
        assert_eq!(answer, Ok(None));
        let (_newcomer, answer) = session(&registry, 2, "a", "r2").await;
        let refused = answer.unwrap_err();
        assert!(refused.contains("in use by a live agent"), "{refused}");

        samples(&registry, 1, &[1]).await;
        let a = view(&registry, "a").await.unwrap();
        assert_eq!((a.run_id.as_str(), a.received), ("r1", 1));
        registry.send(Shutdown).await.unwrap();
        assert_eq!(
            holder.next("close").await,
            ToSession::Close(Close::Shutdown)
        );
    }

    /// Proves that a newer connection of the same run takes the agent over: the half-open old
    /// session gets `Close::Replaced`, the newcomer resumes after the last seq, and the old
    /// session's end does not mark the agent offline.
    #[actix_rt::test]
    async fn a_newer_connection_of_the_same_run_replaces_the_old_one() {
        let registry = Registry::new(server(), 100).start();
        let (mut old, _) = session(&registry, 1, "a", "r1").await;
        samples(&registry, 1, &[1, 2]).await;

        let (_new, answer) = session(&registry, 2, "a", "r1").await;
        assert_eq!(answer, Ok(Some(2)), "resume point");
        assert_eq!(old.next("close").await, ToSession::Close(Close::Replaced));

        disconnect(&registry, 1, "replaced").await;
        let a = view(&registry, "a").await.unwrap();
        assert_eq!(a.status, Status::Live);
        disconnect(&registry, 2, "bye").await;
        let a = view(&registry, "a").await.unwrap();
        assert_eq!(
            (a.status, a.offline_reason),
            (Status::Offline, Some("bye".into()))
        );
    }

    /// The real agent's address and a squatter's, in the tests of who may use an id.
    const HOME: [u8; 4] = [10, 0, 0, 1];
    const ELSEWHERE: [u8; 4] = [10, 0, 0, 66];

    /// Proves that a connection from another address cannot take a streaming agent's id,
    /// neither with the agent's own run id (which took it over, `replaced`, before) nor with
    /// another run; the agent keeps streaming.
    #[actix_rt::test]
    async fn another_address_cannot_take_a_streaming_agents_id() {
        let registry = Registry::new(server(), 100).start();
        let (mut agent, _) = session_from(&registry, 1, HOME, "a", "r1").await;
        samples(&registry, 1, &[1, 2]).await;

        let (_squatter, answer) = session_from(&registry, 2, ELSEWHERE, "a", "r1").await;
        let refused = answer.unwrap_err();
        assert!(
            refused.contains("10.0.0.1") && refused.contains("10.0.0.66"),
            "{refused}"
        );
        let (_squatter, answer) = session_from(&registry, 3, ELSEWHERE, "a", "r2").await;
        assert!(answer.is_err(), "another run from elsewhere: {answer:?}");

        samples(&registry, 1, &[3]).await;
        let a = view(&registry, "a").await.unwrap();
        assert_eq!(
            (a.run_id.as_str(), a.seq, a.ip.as_str()),
            ("r1", 3, "10.0.0.1")
        );
        registry.send(Shutdown).await.unwrap();
        // The first message the agent's session gets is the shutdown: it was never closed.
        assert_eq!(agent.next("close").await, ToSession::Close(Close::Shutdown));
    }

    /// Proves that an id taken from elsewhere while its agent was away is given back when the
    /// agent returns from its home address (the squatter gets `Close::Displaced`), and that
    /// the squatter cannot take it again.
    #[actix_rt::test]
    async fn the_home_address_takes_its_id_back() {
        let registry = Registry::new(server(), 100).start();
        let _ = session_from(&registry, 1, HOME, "a", "r1").await;
        samples(&registry, 1, &[1]).await;
        disconnect(&registry, 1, "connection closed").await;

        let (mut squatter, answer) = session_from(&registry, 2, ELSEWHERE, "a", "evil").await;
        assert_eq!(
            answer,
            Ok(None),
            "nobody holds the id: the newcomer gets it"
        );
        samples(&registry, 2, &[1, u64::MAX]).await;

        let (_agent, answer) = session_from(&registry, 3, HOME, "a", "r1").await;
        assert_eq!(answer, Ok(None), "the squatter's run is not the agent's");
        assert_eq!(
            squatter.next("close").await,
            ToSession::Close(Close::Displaced)
        );
        disconnect(&registry, 2, "displaced").await;
        let (_again, answer) = session_from(&registry, 4, ELSEWHERE, "a", "evil").await;
        assert!(answer.is_err(), "the squatter came back: {answer:?}");
        let a = view(&registry, "a").await.unwrap();
        assert_eq!((a.status, a.ip.as_str()), (Status::Live, "10.0.0.1"));
    }

    /// Proves that the home address moves to a new IP once the id has streamed from there for
    /// the configured time (zero here), after which the old address is the stranger.
    #[actix_rt::test]
    async fn the_home_address_moves_after_streaming_from_a_new_one() {
        let registry = Registry::new(server(), 100)
            .with_home_moves_after(Duration::ZERO)
            .start();
        let _ = session_from(&registry, 1, HOME, "a", "r1").await;
        samples(&registry, 1, &[1]).await;
        disconnect(&registry, 1, "connection closed").await;
        let (_moved, answer) = session_from(&registry, 2, ELSEWHERE, "a", "r1").await;
        assert_eq!(answer, Ok(Some(1)), "same run, new address: resumes");
        samples(&registry, 2, &[2]).await;

        let (_old, answer) = session_from(&registry, 3, HOME, "a", "r1").await;
        assert!(
            answer.is_err(),
            "the old address is no longer home: {answer:?}"
        );
    }

    /// Proves that a commit becomes `Durable` for the session of that agent's current run
    /// only: not for an older run, not for a seq already durable, not for another agent.
    #[actix_rt::test]
    async fn commits_become_durable_for_the_current_run_only() {
        let (registry, _store) = with_store(Vec::new());
        let (mut a, _) = session(&registry, 1, "a", "r2").await;
        let (mut b, _) = session(&registry, 2, "b", "r1").await;
        samples(&registry, 1, &[1, 2, 3]).await;

        let runs = vec![
            committed("a", "r1", 9), // an older run of `a`
            committed("a", "r2", 2),
            committed("unknown", "r1", 5),
        ];
        commit(&registry, runs).await;
        assert_eq!(a.next("durable").await, ToSession::Durable(2));
        commit(&registry, vec![committed("a", "r2", 2)]).await; // nothing new
        commit(&registry, vec![committed("a", "r2", 3)]).await;
        assert_eq!(a.next("durable").await, ToSession::Durable(3));

        // `b` got none of it; the durable seq is also the resume point in `welcome`.
        registry.send(Shutdown).await.unwrap();
        assert_eq!(b.next("close").await, ToSession::Close(Close::Shutdown));
        let (_a2, answer) = session(&registry, 3, "a", "r2").await;
        assert_eq!(answer, Ok(Some(3)));
    }

    /// Proves that a repeat of a sample already on disk is acknowledged at once (the agent
    /// missed the ack), while a repeat of one still waiting for its commit waits for it.
    #[actix_rt::test]
    async fn a_repeat_already_on_disk_is_acknowledged_at_once() {
        let (registry, _store) = with_store(Vec::new());
        let (mut s, _) = session(&registry, 1, "a", "r1").await;
        samples(&registry, 1, &[1, 2]).await;
        commit(&registry, vec![committed("a", "r1", 2)]).await;
        assert_eq!(s.next("durable").await, ToSession::Durable(2));

        samples(&registry, 1, &[1]).await;
        assert_eq!(s.next("durable of the repeat").await, ToSession::Durable(2));

        samples(&registry, 1, &[3, 3]).await; // 3 is not on disk yet
        commit(&registry, vec![committed("a", "r1", 3)]).await;
        assert_eq!(s.next("durable after commit").await, ToSession::Durable(3));
    }

    /// Proves that offline agents past the retention are forgotten once the registry prunes.
    #[actix_rt::test]
    async fn offline_agents_past_retention_are_forgotten() {
        let registry = Registry::new(server(), 100)
            .with_agent_limits(Duration::ZERO, 2)
            .start();
        for (id, agent) in [(1, "a"), (2, "b")] {
            let _ = session(&registry, id, agent, "r1").await;
            disconnect(&registry, id, "gone").await;
        }
        // A third agent goes over the cap, which prunes: both offline agents are past a
        // retention of zero (the cap alone would have dropped one).
        let _ = session(&registry, 3, "c", "r1").await;
        assert_eq!(known(&registry).await, ["c"]);
    }

    /// Proves that beyond the cap the oldest offline agents go first and live agents stay,
    /// even over the cap.
    #[actix_rt::test]
    async fn beyond_the_cap_the_oldest_offline_agents_go_first() {
        let registry = Registry::new(server(), 100)
            .with_agent_limits(OFFLINE_RETENTION, 2)
            .start();
        for (id, agent) in [(1, "a"), (2, "b")] {
            let _ = session(&registry, id, agent, "r1").await;
            disconnect(&registry, id, "gone").await;
        }
        let _ = session(&registry, 3, "c", "r1").await;
        assert_eq!(known(&registry).await, ["b", "c"]);

        let _ = session(&registry, 4, "d", "r1").await;
        let _ = session(&registry, 5, "e", "r1").await;
        assert_eq!(known(&registry).await, ["c", "d", "e"], "live agents stay");
    }

    /// Proves that with a store an agent gone offline keeps no points in memory (the store
    /// serves its history) but keeps its accounting, and that a replay of what it had sent
    /// is still a duplicate after it comes back, not stored twice.
    #[actix_rt::test]
    async fn offline_agents_keep_their_accounting_but_not_their_points() {
        let (registry, mut store) = with_store(Vec::new());
        let _ = session(&registry, 1, "a", "r1").await;
        samples(&registry, 1, &[1, 2, 3, 5]).await;
        disconnect(&registry, 1, "connection closed").await;

        let points = |registry: Addr<Registry>| async move {
            let asked = GetHistory {
                agent_id: "a".into(),
                from_ms: 0,
                to_ms: u64::MAX,
                step_ms: 1_000,
            };
            let buckets = registry.send(asked).await.unwrap().unwrap_or_default();
            buckets.iter().map(|b| b.n).sum::<u64>()
        };
        assert_eq!(
            points(registry.clone()).await,
            0,
            "points kept while offline"
        );
        let a = view(&registry, "a").await.unwrap();
        assert_eq!((a.received, a.seq, a.first_seq, a.gaps), (4, 5, 1, 1));

        let (_s, answer) = session(&registry, 2, "a", "r1").await;
        assert_eq!(answer, Ok(None), "nothing durable yet");
        samples(&registry, 2, &[3, 6]).await;
        assert_eq!(
            store.next("attach").await,
            ToStore::Attach("a".into(), "r1".into())
        );
        for seq in [1, 2, 3, 5] {
            let append = ToStore::Append("a".into(), "r1".into(), seq);
            assert_eq!(store.next("append").await, append);
        }
        assert_eq!(
            store.next("attach again").await,
            ToStore::Attach("a".into(), "r1".into())
        );
        let append = ToStore::Append("a".into(), "r1".into(), 6);
        assert_eq!(
            store.next("append").await,
            append,
            "the replayed 3 is not stored again"
        );
    }

    /// Proves that a stream of new agent ids above the cap stays cheap: with 20,000 offline
    /// agents remembered (the cap), 2,000 new ids, each evicting the oldest offline one, take
    /// well under 3 s (a prune that cloned and sorted every entry per hello took 78 s here,
    /// in a debug build), and the oldest went first.
    #[actix_rt::test]
    async fn new_ids_above_the_cap_evict_cheaply() {
        const CAP: usize = 20_000;
        const NEW: usize = 2_000;
        let registry = Registry::new(server(), 100)
            .with_agent_limits(OFFLINE_RETENTION, CAP)
            .start();
        let (probe, _received) = probe::start::<ToSession>();
        let peer = SocketAddr::from(([10, 1, 0, 1], 40_000));
        let mut session_id = 0;
        let mut churn = |registry: &Addr<Registry>, agent: String, offline: bool| {
            session_id += 1;
            registry.do_send(Connect {
                session: session_id,
                peer,
                close: probe.clone().recipient(),
                durable: probe.clone().recipient(),
            });
            registry.do_send(Hello {
                session: session_id,
                hello: hello(&agent, "r1"),
                auth: None,
                fp: None,
            });
            if offline {
                registry.do_send(Disconnect {
                    session: session_id,
                    reason: "gone".into(),
                });
            }
        };
        for n in 0..CAP {
            churn(&registry, format!("old-{n:05}"), true);
        }
        registry.send(OpenSessions).await.unwrap(); // everything before is handled
        let started = Instant::now();
        for n in 0..NEW {
            churn(&registry, format!("new-{n:05}"), true);
        }
        registry.send(OpenSessions).await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "{NEW} new ids took {took:?}");

        let ids = known(&registry).await;
        assert_eq!(ids.len(), CAP);
        assert!(
            !ids.contains(&format!("old-{:05}", NEW - 1)),
            "the oldest go first"
        );
        assert!(ids.contains(&format!("old-{NEW:05}")));
    }

    /// Proves that agents restored from the store start offline ("server restarted") with
    /// their run's durable seq, so a replay after the restart is a duplicate that is
    /// acknowledged, not stored again.
    #[actix_rt::test]
    async fn restored_agents_start_offline_and_resume_their_run() {
        let restored = store::Restored {
            hello: hello("a", "r1"),
            ip: "10.0.0.7".into(),
            latest: Some(sample(5)),
            last_seq: 5,
            points: Vec::new(),
        };
        let (registry, mut store) = with_store(vec![restored]);
        let a = view(&registry, "a").await.unwrap();
        assert_eq!(a.status, Status::Offline);
        assert_eq!(a.offline_reason.as_deref(), Some(store::RESTART_REASON));
        assert_eq!(
            (a.seq, a.stored_seq, a.ip.as_str()),
            (5, Some(5), "10.0.0.7")
        );

        let (mut s, answer) = session(&registry, 1, "a", "r1").await;
        assert_eq!(answer, Ok(Some(5)));
        samples(&registry, 1, &[4, 6]).await;
        assert_eq!(s.next("durable of the replay").await, ToSession::Durable(5));
        let attach = ToStore::Attach("a".into(), "r1".into());
        assert_eq!(store.next("attach").await, attach);
        let append = ToStore::Append("a".into(), "r1".into(), 6);
        assert_eq!(
            store.next("append").await,
            append,
            "the replayed 4 is not stored"
        );
    }

    /// A sample `seq` seconds after a minute ago with the whole machine: load 0.5, `/` half full, and network
    /// and disk counters at `counter` bytes.
    fn host_sample(seq: u64, counter: u64) -> Metrics {
        // Stamped near the server's clock (one a second from a minute ago), so that the
        // clock window keeps the agent's times, from which the rates are derived.
        static BASE: std::sync::LazyLock<u64> =
            std::sync::LazyLock::new(|| now_ms().saturating_sub(60_000));
        Metrics {
            ts_ms: *BASE + seq * 1000,
            load: Some(protocol::Load {
                load1: 0.5,
                load5: 0.5,
                load15: 0.5,
                running: None,
                threads: None,
                procs: None,
            }),
            filesystems: Some(vec![protocol::Filesystem {
                mount: "/".into(),
                fs_type: "ext4".into(),
                device: "/dev/sda1".into(),
                size_bytes: 1000,
                used_bytes: 500,
                avail_bytes: 500,
                inodes: 0,
                inodes_used: 0,
            }]),
            net: Some(vec![protocol::NetInterface {
                interface: "eth0".into(),
                rx_bytes: counter,
                tx_bytes: counter / 2,
                rx_packets: 0,
                tx_packets: 0,
                rx_errs: 0,
                tx_errs: 0,
                rx_drops: 0,
                tx_drops: 0,
            }]),
            disks: Some(vec![protocol::Disk {
                device: "sda".into(),
                read_bytes: counter,
                written_bytes: 0,
                reads: 0,
                writes: 0,
                io_ms: 0,
            }]),
            ..sample(seq)
        }
    }

    /// What a Store probe records of each Append: its seq, its rates, and whether the whole
    /// sample (not only CPU and memory) came with it.
    #[derive(Debug, PartialEq)]
    enum Stored {
        Attach,
        Append(u64, store::Rates, bool),
    }

    impl From<store::Attach> for Stored {
        fn from(_: store::Attach) -> Self {
            Stored::Attach
        }
    }

    impl From<store::Append> for Stored {
        fn from(a: store::Append) -> Self {
            let whole = a.metrics.net.is_some() && a.metrics.filesystems.is_some();
            Stored::Append(a.metrics.seq, a.rates, whole)
        }
    }

    /// Proves that each Append carries the whole sample and the rates of the view made from
    /// it (since the agent's previous sample: none for the first), and that a replayed older
    /// sample, which makes no view, carries none.
    #[actix_rt::test]
    async fn appends_carry_the_whole_sample_and_its_rates() {
        let (store, mut stored) = probe::start::<Stored>();
        let health = Arc::new(store::StoreHealth::default());
        let registry =
            Registry::with_store(server(), 100, StoreLink::to(&store), health, Vec::new()).start();
        let (_s, _) = session(&registry, 1, "a", "r1").await;
        let send = |seqs: &[(u64, u64)]| {
            let samples = seqs.iter().map(|&(seq, c)| host_sample(seq, c)).collect();
            registry.send(Samples {
                session: 1,
                samples,
            })
        };
        // 1 s apart: 1000 bytes per second; seq 3 is lost, then arrives late.
        send(&[(1, 10_000), (2, 11_000), (4, 14_000)])
            .await
            .unwrap();
        send(&[(3, 12_000)]).await.unwrap();
        assert_eq!(stored.next("attach").await, Stored::Attach);
        let none = store::Rates::default();
        assert_eq!(stored.next("1").await, Stored::Append(1, none, true));
        let rates = |v: f64| store::Rates {
            net_rx: Some(v),
            net_tx: Some(v / 2.0),
            disk_read: Some(v),
            disk_write: Some(0.0),
        };
        assert_eq!(
            stored.next("2").await,
            Stored::Append(2, rates(1000.0), true)
        );
        assert_eq!(
            stored.next("4").await,
            Stored::Append(4, rates(1500.0), true),
            "over the two seconds since seq 2"
        );
        assert_eq!(
            stored.next("3").await,
            Stored::Append(3, none, true),
            "a late sample has no rates"
        );
    }

    /// Proves that a restored agent shows its whole machine (load, filesystems, counters) from
    /// the last sample stored, before it reconnects, and that its next sample of the same run
    /// gets rates against those counters.
    #[actix_rt::test]
    async fn restored_agents_show_their_whole_machine() {
        let restored = store::Restored {
            hello: hello("a", "r1"),
            ip: "10.0.0.7".into(),
            latest: Some(host_sample(5, 50_000)),
            last_seq: 5,
            points: Vec::new(),
        };
        let (registry, _store) = with_store(vec![restored]);
        let a = view(&registry, "a").await.unwrap();
        assert_eq!(a.status, Status::Offline);
        assert_eq!(a.host.load.map(|l| l.load1), Some(0.5));
        assert_eq!(a.host.fullest_filesystem(), Some(("/", 50.0)));
        let net = a.host.net.as_deref().unwrap_or_default();
        assert_eq!(net.len(), 1);
        assert_eq!(
            (net[0].counters.rx_bytes, net[0].rx_bytes_per_s),
            (50_000, None)
        );
        assert!(
            a.cpu.is_some(),
            "the latest CPU and memory stay in the sample"
        );

        let (_s, _) = session(&registry, 1, "a", "r1").await;
        registry
            .send(Samples {
                session: 1,
                samples: vec![host_sample(6, 52_000)],
            })
            .await
            .unwrap();
        let a = view(&registry, "a").await.unwrap();
        assert_eq!(a.host.net_rates(), Some((2_000.0, 1_000.0)));
    }

    /// Proves that an agent whose key is revoked after it connected shows `auth: revoked` in
    /// the snapshot (its entry still holds the connection's `approved`), that others keep
    /// theirs, and that approving the key again shows `approved` again.
    #[actix_rt::test]
    async fn a_revoked_key_shows_as_revoked() {
        let revoked = Arc::new(std::sync::Mutex::new(HashSet::new()));
        let source = Arc::clone(&revoked);
        let registry = Registry::new(server(), 100)
            .with_revoked(Arc::new(move || {
                source.lock().map(|s| s.clone()).unwrap_or_default()
            }))
            .start();
        for (id, agent) in [(1, "doomed"), (2, "spared")] {
            let (probe, _received) = probe::start::<ToSession>();
            let connect = Connect {
                session: id,
                peer: SocketAddr::from(([127, 0, 0, 1], 40_000 + id as u16)),
                close: probe.clone().recipient(),
                durable: probe.recipient(),
            };
            registry.send(connect).await.unwrap();
            let hello = Hello {
                session: id,
                hello: hello(agent, "r1"),
                auth: Some(AgentAuth::Approved),
                fp: Some(format!("SHA256:{agent}")),
            };
            registry.send(hello).await.unwrap().unwrap();
        }
        let auth = |registry: Addr<Registry>, agent: &'static str| async move {
            view(&registry, agent).await.and_then(|a| a.auth)
        };
        assert_eq!(
            auth(registry.clone(), "doomed").await,
            Some(AgentAuth::Approved)
        );
        revoked.lock().unwrap().insert("SHA256:doomed".to_string());
        disconnect(&registry, 1, "revoked").await;
        assert_eq!(
            auth(registry.clone(), "doomed").await,
            Some(AgentAuth::Revoked)
        );
        assert_eq!(
            auth(registry.clone(), "spared").await,
            Some(AgentAuth::Approved)
        );
        let parts = registry
            .send(GetSnapshotParts)
            .await
            .unwrap()
            .into_snapshot();
        let doomed = parts.agents.iter().find(|a| a.id == "doomed").unwrap();
        assert_eq!(
            doomed.auth,
            Some(AgentAuth::Revoked),
            "the parts say it too"
        );
        revoked.lock().unwrap().clear();
        assert_eq!(
            auth(registry.clone(), "doomed").await,
            Some(AgentAuth::Approved)
        );
    }
}
