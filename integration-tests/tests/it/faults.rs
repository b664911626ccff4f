//! Faults: the issue "Never lose a sample". Network cuts (through a TCP proxy written here),
//! a server killed with SIGKILL and restarted on the same port, and an agent frozen with
//! SIGSTOP; after each, every sample of every agent is on the server exactly once.
//!
//! The guarantee rests on three mechanisms (see `actors/src/agent/mod.rs` and
//! `actors/src/server/history.rs`): the agent keeps every sample until an `ack` covers it, the
//! server tells a reconnecting agent the highest seq it holds (`welcome.last_seq`) so only
//! the rest is replayed, and the server's history deduplicates by seq and counts `gaps`.
//! (SIGKILL on an agent is in `core.rs`.)

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lanmon::snapshot::{Snapshot, Status};
use lanmon::util::now_ms;

use crate::support::{Agent, DEADLINE, LOOPBACK, Server, SnapshotExt, ToJson, lock, poll};

/// The test agents' sampling interval (`support::Agent` starts them with `--interval 200ms`).
const INTERVAL: Duration = Duration::from_millis(200);

/// Longer than the agent's longest reconnect delay (30 s, `BACKOFF_MAX`) plus a connect: an
/// agent whose backoff has grown to the cap still gets back within it.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(45);

/// How many times the network is cut and restored.
const CUTS: usize = 4;

// ---- Reading snapshots ----------------------------------------------------------------------

/// Asserts that the server holds every sample of `name`'s run from `first_seq` to `seq`
/// exactly once: no gap, no duplicate, and `received` counts each seq once.
#[track_caller]
fn assert_exactly_once(snapshot: &Snapshot, name: &str, context: &str) {
    let entry = snapshot.agent(name);
    let (first, last) = (entry.first_seq, entry.seq);
    let a = entry.to_json();
    assert!(first >= 1 && last >= first, "{context}: {name}: {a}");
    assert_eq!(entry.gaps, 0, "{context}: {name} lost samples: {a}");
    assert_eq!(
        entry.duplicates, 0,
        "{context}: {name} sent samples the server already held: {a}"
    );
    assert_eq!(
        entry.received,
        last - first + 1,
        "{context}: {name}: every seq from first_seq to seq exactly once: {a}"
    );
}

/// The state letter of process `pid` in /proc/PID/stat (`T`: stopped by a signal).
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) S ...`: the state follows the last `)` (comm may contain anything).
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

// ---- A TCP proxy that can cut the network ---------------------------------------------------

/// What the proxy's threads share.
struct ProxyState {
    upstream: u16,
    /// The live connections (agent side, server side); guarded with the `cut` decision, so a
    /// connection accepted during `cut()` is either cut with the others or refused.
    links: Mutex<Links>,
    /// Connections accepted and closed at once while cut.
    refused: AtomicU64,
    /// Server → agent bytes are thrown away instead of forwarded (the acks are lost).
    drop_replies: Arc<AtomicBool>,
    stop: AtomicBool,
}

#[derive(Default)]
struct Links {
    cut: bool,
    live: Vec<(TcpStream, TcpStream)>,
    pumps: Vec<JoinHandle<()>>,
}

/// A TCP proxy on 127.0.0.1:0 that forwards every accepted connection to
/// `127.0.0.1:upstream`, with std threads. [`Proxy::cut`] breaks every live connection (both
/// sides see end of stream) and refuses new ones (accepted, then closed at once) until
/// [`Proxy::restore`]; [`Proxy::drop_replies`] loses everything the server sends (its acks)
/// until then. Dropping it stops and joins every thread.
struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    #[track_caller]
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind((LOOPBACK, 0))
            .unwrap_or_else(|e| panic!("proxy cannot bind {LOOPBACK}:0: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy has no local address: {e}"))
            .port();
        let state = Arc::new(ProxyState {
            upstream,
            links: Mutex::new(Links::default()),
            refused: AtomicU64::new(0),
            drop_replies: Arc::new(AtomicBool::new(false)),
            stop: AtomicBool::new(false),
        });
        let shared = state.clone();
        let acceptor = std::thread::Builder::new()
            .name("proxy accept".into())
            .spawn(move || accept_loop(&listener, &shared))
            .unwrap_or_else(|e| panic!("cannot spawn the proxy thread: {e}"));
        Proxy {
            port,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// The port agents connect to.
    fn port(&self) -> u16 {
        self.port
    }

    /// Breaks every live connection and refuses new ones until [`Proxy::restore`].
    fn cut(&self) {
        let mut links = lock(&self.state.links);
        links.cut = true;
        for (a, b) in links.live.drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    /// Throws away whatever the server sends (acks, welcomes) until [`Proxy::restore`], while
    /// the agents' samples still reach it: the server then holds samples that the agents
    /// never saw acknowledged.
    fn drop_replies(&self) {
        self.state.drop_replies.store(true, Ordering::SeqCst);
    }

    /// Forwards new connections, in both directions, again.
    fn restore(&self) {
        let mut links = lock(&self.state.links);
        self.state.drop_replies.store(false, Ordering::SeqCst);
        links.cut = false;
    }

    /// Connections refused so far (while cut).
    fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); it sees `stop` and returns.
        let _ = TcpStream::connect((LOOPBACK, self.port));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let pumps = {
            let mut links = lock(&self.state.links);
            for (a, b) in links.live.drain(..) {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut links.pumps)
        };
        for pump in pumps {
            let _ = pump.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<ProxyState>) {
    for client in listener.incoming() {
        if state.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if lock(&state.links).cut {
            state.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            continue; // dropped: closed
        }
        let Ok(server) = TcpStream::connect((LOOPBACK, state.upstream)) else {
            continue; // the server is away: close the client too
        };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let mut links = lock(&state.links);
        if links.cut {
            // cut() ran while we connected upstream: this connection is cut too.
            state.refused.fetch_add(1, Ordering::SeqCst);
            let _ = (
                client.shutdown(Shutdown::Both),
                server.shutdown(Shutdown::Both),
            );
            continue;
        }
        let clones = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = clones else {
            continue;
        };
        links.live.push((c1, s1));
        let never = Arc::new(AtomicBool::new(false));
        let directions = [
            (client, s2, never, "up"),
            (server, c2, state.drop_replies.clone(), "down"),
        ];
        for (from, to, discard, what) in directions {
            let spawned = std::thread::Builder::new()
                .name(format!("proxy {what}"))
                .spawn(move || pump(from, to, &discard));
            match spawned {
                Ok(handle) => links.pumps.push(handle),
                Err(e) => panic!("cannot spawn a proxy pump thread: {e}"),
            }
        }
    }
}

/// Copies `from` to `to` (or throws the bytes away while `discard` is set) until either side
/// ends, then breaks both sockets of the pair, so a close on one side is a close on the other.
fn pump(mut from: TcpStream, mut to: TcpStream, discard: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !discard.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

// ---- The tests ------------------------------------------------------------------------------

/// Three agents streaming through a proxy whose connections are cut and restored four times
/// (twice after the server's acks were lost) end up with every sample on the server exactly
/// once: no gap, no duplicate.
#[test]
fn network_cuts_lose_nothing() {
    let server = Server::start();
    let proxy = Proxy::start(server.port());
    let agents: Vec<Agent> = ["cut-1", "cut-2", "cut-3"]
        .iter()
        .map(|n| Agent::start(&server.join().via(proxy.port()), n))
        .collect();
    let names: Vec<&str> = agents.iter().map(Agent::name).collect();
    let mut snap = server.wait_for(DEADLINE, |s| s.all_live(&names));

    for round in 1..=CUTS {
        if round % 2 == 0 {
            // The acks of the last samples before this cut are lost: the server holds samples
            // the agents still have to send. Only `welcome.last_seq` keeps them from being
            // sent twice.
            // (A snapshot is at most ~100 ms old, less than one interval: advancing by 2 from
            // one read after the drop means at least one sample arrived after it.)
            proxy.drop_replies();
            let before = server.wait_for(DEADLINE, |_| true).seqs(&names);
            server.wait_for(DEADLINE, |s| s.all_live_and_advanced_by(&before, 2));
        }
        let logged: Vec<usize> = agents.iter().map(|a| a.stdout().len()).collect();
        proxy.cut();
        // The server sees every connection end, and every agent notices and then fails to come
        // back through the cut network at least once, sampling into its buffer meanwhile.
        let cut = server.wait_for(DEADLINE, |s| s.all_offline(&names));
        for (a, &from) in agents.iter().zip(&logged) {
            let first = a.wait_for_output(DEADLINE, from, " lost: ");
            a.wait_for_output(DEADLINE, first + 1, " lost: ");
        }

        proxy.restore();
        let at_cut = cut.seqs(&names);
        snap = server.wait_for(DEADLINE, |s| s.all_live_and_advanced_by(&at_cut, 3));
        for name in &names {
            assert_exactly_once(&snap, name, &format!("after restore {round}"));
        }
    }
    assert!(
        proxy.refused() >= CUTS as u64,
        "the cuts refused no connection"
    );

    // Well past the last restore: whatever was buffered has been replayed by now.
    let at_last_restore = snap.seqs(&names);
    let last = server.wait_for(DEADLINE, |s| {
        s.all_live_and_advanced_by(&at_last_restore, 5)
    });
    for name in &names {
        assert_exactly_once(&last, name, &format!("after {CUTS} cuts"));
    }
    // Proof that the buffers were used: every reconnection after a cut replayed a backlog.
    for a in &agents {
        let replays = a.stdout().matches(" buffered sample(s)").count();
        assert!(
            replays >= CUTS,
            "agent {} replayed a backlog {replays} times after {CUTS} cuts\n{}",
            a.name(),
            a.diagnostics()
        );
    }
}

/// After the server dies by SIGKILL and a new one starts on the same port, every agent comes
/// back and the new server's history is contiguous and starts no later than where the dead
/// server stopped: the samples taken meanwhile were buffered and sent.
#[test]
fn server_sigkill_and_restart_loses_nothing() {
    let mut server = Server::start();
    let port = server.port();
    let agents: Vec<Agent> = ["phoenix-1", "phoenix-2", "phoenix-3"]
        .iter()
        .map(|n| Agent::start(&server.join(), n))
        .collect();
    let names: Vec<&str> = agents.iter().map(Agent::name).collect();
    let before = server.wait_for(DEADLINE, |s| {
        names.iter().all(|n| s.is_live(n) && s.seq(n) >= 3)
    });
    let seen = before.seqs(&names);
    let logged: Vec<usize> = agents.iter().map(|a| a.stdout().len()).collect();

    server.kill();
    let killed_at_ms = now_ms();
    // Each agent notices, and fails to reconnect at least once (so it has buffered a few
    // samples by the time the new server is up).
    for (a, &from) in agents.iter().zip(&logged) {
        let lost = a.wait_for_output(DEADLINE, from, " lost: ");
        a.wait_for_output(DEADLINE, lost, "cannot connect");
    }

    // The same identity (data directory): the agents have pinned its key.
    let reborn = Server::start_in(&server.home(), port, &[]);
    let after = reborn.wait_for(RECONNECT_DEADLINE, |s| s.all_live_and_advanced_by(&seen, 4));

    // The dead server may have received (and acknowledged, so the agent forgot them) samples
    // after the snapshot we read: at most one per interval between that snapshot and the
    // kill, plus one for the sample in flight at the kill.
    let since_snapshot = killed_at_ms.saturating_sub(before.ts_ms);
    let slack = since_snapshot / u64::try_from(INTERVAL.as_millis()).unwrap_or(1) + 1;
    for (a, name) in agents.iter().zip(&names) {
        let first = after.agent(name).first_seq;
        assert!(
            first <= seen[*name] + 1 + slack,
            "{name}: the new server's history starts at seq {first}, but the dead server had \
             only seq {} ({since_snapshot} ms before the kill, slack {slack}): samples lost\n\
             {}",
            seen[*name],
            after.to_json()
        );
        assert_exactly_once(&after, name, "after the server restart");
        assert!(
            a.stdout().contains("buffered"),
            "agent {name} did not say it sent buffered samples\n{}",
            a.diagnostics()
        );
    }
}

/// One status observation of the frozen agent (`None`: not listed).
#[derive(Debug)]
struct Seen {
    after: Duration,
    status: Option<Status>,
}

/// An agent frozen with SIGSTOP turns `stale`, then `offline` with a `timeout` reason, while
/// the others stay live; after SIGCONT it reconnects by itself and has lost nothing.
#[test]
fn frozen_agent_goes_stale_then_offline_and_comes_back() {
    /// Generous bounds for CI; by design stale comes after ~0.45 s (2¼ intervals) and
    /// offline after ~1 s (3 intervals, at least 1 s).
    const STALE_WITHIN: Duration = Duration::from_secs(2);
    const OFFLINE_WITHIN: Duration = Duration::from_secs(3);

    let server = Server::start();
    let frozen = Agent::start(&server.join(), "frozen");
    let steady = [
        Agent::start(&server.join(), "steady-a"),
        Agent::start(&server.join(), "steady-b"),
    ];
    let steady_names: Vec<&str> = steady.iter().map(Agent::name).collect();
    server.wait_for(DEADLINE, |s| {
        s.is_live("frozen") && s.seq("frozen") >= 2 && s.all_live(&steady_names)
    });

    frozen.signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    poll(DEADLINE, || {
        (process_state(frozen.pid()) == Some('T')).then_some(())
    })
    .unwrap_or_else(|| panic!("agent not stopped: state {:?}", process_state(frozen.pid())));
    let at_stop = server.wait_for(DEADLINE, |_| true).seqs(&steady_names);
    // Every snapshot the server prints (one per 100 ms; we look every 20 ms), until offline.
    let mut seen: Vec<Seen> = Vec::new();
    let mut last_ts = None;
    let mut others_not_live = Vec::new();
    let offline = server.wait_for(DEADLINE, |s| {
        if last_ts != Some(s.ts_ms) {
            last_ts = Some(s.ts_ms);
            seen.push(Seen {
                after: stopped_at.elapsed(),
                status: s.status("frozen"),
            });
            others_not_live.extend(
                steady_names
                    .iter()
                    .filter(|n| !s.is_live(n))
                    .map(|n| format!("{n}: {:?}", s.status(n))),
            );
        }
        s.status("frozen") == Some(Status::Offline)
    });

    let first = |wanted: Status| seen.iter().position(|o| o.status == Some(wanted));
    let (Some(stale), Some(off)) = (first(Status::Stale), first(Status::Offline)) else {
        panic!("the frozen agent was not seen stale, then offline: {seen:?}");
    };
    assert!(
        stale < off
            && seen[stale..off]
                .iter()
                .all(|o| o.status == Some(Status::Stale)),
        "expected live → stale → offline: {seen:?}"
    );
    assert!(
        seen[..stale].iter().all(|o| o.status == Some(Status::Live)),
        "expected live → stale → offline: {seen:?}"
    );
    assert!(
        seen[stale].after <= STALE_WITHIN,
        "stale only after {:?}: {seen:?}",
        seen[stale].after
    );
    assert!(
        seen[off].after <= OFFLINE_WITHIN,
        "offline only after {:?}: {seen:?}",
        seen[off].after
    );
    let reason = offline
        .find("frozen")
        .and_then(|a| a.offline_reason.as_deref());
    assert!(
        reason.is_some_and(|r| r.starts_with("timeout")),
        "offline_reason = {reason:?}\n{}",
        offline.to_json()
    );
    assert!(
        others_not_live.is_empty(),
        "the other agents must stay live: {others_not_live:?}"
    );
    // Over the second or so the agent was frozen, the others sent about five samples each.
    assert!(
        offline.all_live_and_advanced_by(&at_stop, 2),
        "the other agents must keep sending: at the stop {at_stop:?}\n{}",
        offline.to_json()
    );

    let logged = frozen.stdout().len();
    let seq_at_offline = offline.seq("frozen");
    frozen.signal(libc::SIGCONT);
    frozen.wait_for_output(DEADLINE, logged, "Connected to");
    let back = server.wait_for(DEADLINE, |s| {
        s.is_live("frozen") && s.seq("frozen") > seq_at_offline + 3
    });
    assert_exactly_once(&back, "frozen", "after SIGCONT");
    for name in &steady_names {
        assert_exactly_once(&back, name, "the steady agents");
    }
}
