//! Trust on the LAN (protocol 2), on the real binaries: discovery is only a hint, the
//! handshake decides; nothing but a handshake reaches a server that cannot prove its key;
//! nobody unenrolled sends a sample; the stream is confidential and tamper-evident; insiders
//! (holders of the join token) can neither pose as the server nor as an enrolled agent;
//! revocation and key rotation work while agents run; old agents are accepted only where the
//! operator said so; the dashboard, the API and `/metrics` need a login.
//!
//! The adversaries are the test itself, on loopback: forged and replayed beacons sent from
//! 127.0.0.2 (so an agent fooled by one would connect *there*, into a trap that counts
//! connections), fake servers written with `lanmon::auth` (with and without the network key),
//! and a recording, optionally tampering, TCP proxy between agent and server. Each attack has
//! a control that shows it would have worked on an agent or server without the protection
//! (so the test can fail).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanmon::auth::beacon_auth::{BeaconSigner, SignedBeacon};
use lanmon::auth::fingerprint::Fingerprint;
use lanmon::auth::keys::{NetworkKey, StaticKeypair};
use lanmon::auth::noise::{self, ServerHandshake, ServerIdentity};
use lanmon::auth::token::JoinToken;
use lanmon::discovery::Beacon;
use lanmon::snapshot::{AgentAuth, Status};
use socket2::{Domain, Protocol, Socket, Type};

use crate::support::http::{anonymous, request_with};
use crate::support::process::command;
use crate::support::{
    Agent, DEADLINE, Home, Join, LOOPBACK, Server, SnapshotExt, ToJson, UdpPortReservation, lock,
    poll,
};

/// Where forged beacons and fake servers live: loopback, but not the real server's address.
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const LOOPBACK_BROADCAST: Ipv4Addr = Ipv4Addr::new(127, 255, 255, 255);
/// How long an attack goes on while the test watches that nothing bad happens.
const ATTACK: Duration = Duration::from_secs(3);
/// Bytes an agent sends before it has checked the server's key: the preamble and message 1
/// (its ephemeral key and the 8-byte pin hint), framed.
const BEFORE_PIN_CHECK: usize = 5 + 2 + 32 + 8;
/// Bytes of the agent's handshake: that, and message 3 (its static key and the join proof,
/// encrypted), framed.
const HANDSHAKE_BYTES: usize = BEFORE_PIN_CHECK + 2 + 48 + 48;

// ---- Adversaries ----------------------------------------------------------------------------

/// A TCP listener that counts connections and records what each sent; answers nothing.
struct Trap {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Trap {
    #[track_caller]
    fn on(ip: Ipv4Addr, port: u16) -> Trap {
        let listener =
            TcpListener::bind((ip, port)).unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let i = {
                        let mut all = lock(&sink);
                        all.push(Vec::new());
                        all.len() - 1
                    };
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        lock(&sink)[i].extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Trap { addr, received }
    }

    fn connections(&self) -> usize {
        lock(&self.received).len()
    }
}

/// A server that speaks the handshake with a key of its own (and, for an insider, the real
/// network key), recording every byte each connection sent.
struct FakeServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl FakeServer {
    #[track_caller]
    fn start(ip: Ipv4Addr, network_key: NetworkKey) -> FakeServer {
        let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let identity = ServerIdentity {
            keys: vec![StaticKeypair::generate().unwrap_or_else(|e| panic!("{e}"))],
            network_key,
        };
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (sink, identity) = (sink.clone(), identity.clone());
                std::thread::spawn(move || fake_session(conn, &identity, &sink));
            }
        });
        FakeServer { addr, received }
    }

    fn sessions(&self) -> Vec<Vec<u8>> {
        lock(&self.received).clone()
    }
}

/// Answers message 1 with message 2 (its own key), then records whatever else comes.
fn fake_session(mut conn: TcpStream, id: &ServerIdentity, sink: &Mutex<Vec<Vec<u8>>>) {
    let i = {
        let mut all = lock(sink);
        all.push(Vec::new());
        all.len() - 1
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut answered = false;
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        lock(sink)[i].clone_from(&got);
        if !answered
            && let Some(rest) = got.get(noise::PREAMBLE.len()..)
            && let Ok(Some((msg1, _))) = noise::parse_frame(rest, noise::MAX_HANDSHAKE_MSG)
        {
            answered = true;
            if let Ok((_, msg2)) = ServerHandshake::respond(id, msg1) {
                let _ = conn.write_all(&msg2);
            }
        }
    }
}

/// Sends `datagram` to the discovery port from `from` (loopback broadcast).
#[track_caller]
fn send_beacon(from: Ipv4Addr, udp_port: u16, datagram: &[u8]) {
    let socket = UdpSocket::bind((from, 0)).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    socket
        .set_broadcast(true)
        .unwrap_or_else(|e| panic!("SO_BROADCAST: {e}"));
    socket
        .send_to(datagram, (LOOPBACK_BROADCAST, udp_port))
        .unwrap_or_else(|e| panic!("send a beacon: {e}"));
}

/// Sends `datagrams` every 50 ms until dropped.
struct Spammer {
    stop: Arc<AtomicBool>,
}

impl Spammer {
    fn start(from: Ipv4Addr, udp_port: u16, datagrams: Vec<Vec<u8>>) -> Spammer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                for d in &datagrams {
                    send_beacon(from, udp_port, d);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Spammer { stop }
    }
}

impl Drop for Spammer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Receives copies of every beacon sent to the discovery port (SO_REUSEPORT, like agents).
#[track_caller]
fn capture_beacon(udp_port: u16) -> Vec<u8> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .unwrap_or_else(|e| panic!("{e}"));
    socket
        .set_reuse_address(true)
        .and_then(|()| socket.set_reuse_port(true))
        .unwrap_or_else(|e| panic!("{e}"));
    socket
        .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, udp_port)).into())
        .unwrap_or_else(|e| panic!("bind the discovery port: {e}"));
    let socket: UdpSocket = socket.into();
    socket
        .set_read_timeout(Some(DEADLINE))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 2048];
    loop {
        let (n, _) = socket
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no beacon captured: {e}"));
        if SignedBeacon::parse(&buf[..n]).is_ok_and(|b| b.mac.is_some()) {
            return buf[..n].to_vec();
        }
    }
}

/// Per connection: (agent → server bytes, server → agent bytes).
type Records = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>)>>>;

/// A TCP proxy on 127.0.0.1 that records both directions of every connection and can flip a
/// bit of what the agent sends on one connection.
struct Proxy {
    port: u16,
    records: Records,
}

impl Proxy {
    /// Forwards to `upstream`; on connection `tamper.0`, flips the low bit of byte `tamper.1`
    /// of the agent's stream.
    #[track_caller]
    fn start(upstream: u16, tamper: Option<(usize, usize)>) -> Proxy {
        let listener = TcpListener::bind((LOOPBACK, 0)).unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let records = Arc::new(Mutex::new(Vec::new()));
        let shared = records.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(agent) = conn else { return };
                let Ok(server) = TcpStream::connect((LOOPBACK, upstream)) else {
                    continue;
                };
                let i = {
                    let mut all = lock(&shared);
                    all.push((Vec::new(), Vec::new()));
                    all.len() - 1
                };
                let flip = tamper.filter(|(c, _)| *c == i).map(|(_, at)| at);
                let (a2, s2) = (
                    agent.try_clone().unwrap_or_else(|e| panic!("{e}")),
                    server.try_clone().unwrap_or_else(|e| panic!("{e}")),
                );
                let (up, down) = (shared.clone(), shared.clone());
                std::thread::spawn(move || copy(agent, server, flip, &up, i, true));
                std::thread::spawn(move || copy(s2, a2, None, &down, i, false));
            }
        });
        Proxy { port, records }
    }

    fn records(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        lock(&self.records).clone()
    }

    /// Everything that crossed the proxy, both ways.
    fn all_bytes(&self) -> Vec<u8> {
        self.records()
            .into_iter()
            .flat_map(|(a, b)| a.into_iter().chain(b))
            .collect()
    }
}

fn copy(
    mut from: TcpStream,
    mut to: TcpStream,
    flip: Option<usize>,
    records: &Mutex<Vec<(Vec<u8>, Vec<u8>)>>,
    i: usize,
    upstream: bool,
) {
    let mut buf = [0u8; 16 * 1024];
    let mut offset = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(at) = flip
            && (offset..offset + n).contains(&at)
        {
            buf[at - offset] ^= 1;
        }
        offset += n;
        {
            let mut all = lock(records);
            let side = if upstream {
                &mut all[i].0
            } else {
                &mut all[i].1
            };
            side.extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

// ---- Servers and agents ---------------------------------------------------------------------

/// A server that beacons (signed) to loopback broadcast on `udp`'s port every 200 ms.
#[track_caller]
fn beaconing_server(home: &Home, udp: &UdpPortReservation, port: u16) -> Server {
    let p = udp.arg();
    Server::start_in(
        home,
        port,
        &[
            "--beacon-to",
            "127.255.255.255",
            "--discovery-port",
            &p,
            "--beacon-interval",
            "200ms",
            "--name",
            "real",
        ],
    )
}

/// An agent that discovers on `udp`'s port, joining with `token` (or trusting the first
/// server it finds, without).
#[track_caller]
fn discovering(name: &str, udp: &UdpPortReservation, token: Option<&str>) -> Agent {
    let p = udp.arg();
    let mut args = vec!["--discover", "--discovery-port", &p];
    if let Some(t) = token {
        args.extend(["--join", t]);
    }
    Agent::start_with(name, &args)
}

/// A beacon of a server at `port` that is not the real one.
fn evil_beacon(port: u16) -> Beacon {
    Beacon::new("evil", "evil", port)
}

/// `server agents ACTION…` on `home`; its stdout (panics if it fails).
#[track_caller]
fn agents_cli(home: &Home, action: &[&str]) -> String {
    let out = command("server")
        .arg("agents")
        .args(action)
        .args(["--data-dir", &home.arg()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `server agents`: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`server agents {action:?}` failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

// ---- Discovery is a hint, the connection decides ---------------------------------------------

/// Forged beacons (unsigned, and signed with another network's key) pointing at a trap do not
/// make an agent with the join token connect there: it connects to the real server only. A
/// control agent without a token takes them (so the forgeries are tempting).
#[test]
fn forged_beacons_are_ignored() {
    let udp = UdpPortReservation::new();
    let home = Home::new();
    let trap = Trap::on(ELSEWHERE, 0);
    let fp = Fingerprint::of(&JoinToken::decode(&home.token()).unwrap().server_key);
    let mut outsider = BeaconSigner::new(&NetworkKey([7; 32]), fp);
    let forged = vec![
        evil_beacon(trap.addr.port()).encode(),
        outsider
            .sign(evil_beacon(trap.addr.port()), lanmon::util::now_ms())
            .encode(),
    ];
    let spam = Spammer::start(ELSEWHERE, udp.port(), forged);
    let agent = discovering("pinned", &udp, Some(&home.token()));
    // The forgeries come first, four times as often as the real beacon.
    agent.wait_for_output(DEADLINE, 0, "ignored a datagram");
    let server = beaconing_server(&home, &udp, 0);
    server.wait_for(DEADLINE, |s| s.is_live("pinned"));
    std::thread::sleep(ATTACK);
    assert_eq!(trap.connections(), 0, "{}", agent.diagnostics());
    server.wait_for(DEADLINE, |s| s.is_live("pinned"));

    let _control = discovering("naive", &udp, None);
    assert!(
        poll(DEADLINE, || (trap.connections() > 0).then_some(())).is_some(),
        "an agent without a token should have taken a forged beacon"
    );
    drop(spam);
}

/// A beacon recorded from the real server and replayed from elsewhere (while the server is
/// down, so the agent is looking) is refused as a replay: the agent never connects to where
/// the replay came from, and comes back to the real server when it returns. A control agent
/// without a token follows the replay.
#[test]
fn replayed_beacons_are_ignored() {
    let udp = UdpPortReservation::new();
    let home = Home::new();
    let mut server = beaconing_server(&home, &udp, 0);
    let port = server.port();
    let recorded = capture_beacon(udp.port());
    let agent = discovering("pinned", &udp, Some(&server.token()));
    server.wait_for(DEADLINE, |s| s.is_live("pinned"));
    // The replay points at 127.0.0.2 (its source) with the server's port: a trap there.
    let trap = Trap::on(ELSEWHERE, port);
    server.kill();
    let spam = Spammer::start(ELSEWHERE, udp.port(), vec![recorded]);
    agent.wait_for_output(DEADLINE, 0, "replayed beacon");
    std::thread::sleep(ATTACK);
    assert_eq!(trap.connections(), 0, "{}", agent.diagnostics());

    let _control = discovering("naive", &udp, None);
    assert!(
        poll(DEADLINE, || (trap.connections() > 0).then_some(())).is_some(),
        "an agent without a token should have followed the replay"
    );
    drop(spam);
    let reborn = beaconing_server(&home, &udp, port);
    reborn.wait_for(DEADLINE, |s| s.is_live("pinned"));
}

/// An insider (holds the join token, so the network key) beacons with a valid MAC: under its
/// own server key the agent ignores the beacon; claiming the real server's fingerprint it
/// gets the agent to connect, but its fake server cannot prove the pinned key, and gets
/// nothing but the preamble and handshake message 1 (no host name, no sample), every time.
#[test]
fn insider_beacons_and_a_fake_server_with_the_network_key() {
    let udp = UdpPortReservation::new();
    let home = Home::new();
    let mut server = beaconing_server(&home, &udp, 0);
    let token = JoinToken::decode(&server.token()).unwrap();
    let agent = discovering("pinned", &udp, Some(&server.token()));
    server.wait_for(DEADLINE, |s| s.is_live("pinned"));
    let port = server.port();
    server.kill();

    let fake = FakeServer::start(ELSEWHERE, token.network_key.clone());
    let insider_key = StaticKeypair::generate().unwrap().public();
    let mut own = BeaconSigner::new(&token.network_key, Fingerprint::of(&insider_key));
    let now = lanmon::util::now_ms();
    let spam = Spammer::start(
        ELSEWHERE,
        udp.port(),
        vec![own.sign(evil_beacon(fake.addr.port()), now).encode()],
    );
    agent.wait_for_output(DEADLINE, 0, "another server key");
    std::thread::sleep(ATTACK);
    assert!(fake.sessions().is_empty(), "{}", agent.diagnostics());
    drop(spam);

    // Claiming the real fingerprint: fresh beacons, each with the next sequence number.
    let real_fp = Fingerprint::of(&token.server_key);
    let mut claims = BeaconSigner::new(&token.network_key, real_fp);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let fake_port = fake.addr.port();
    let sender = std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            let b = claims.sign(evil_beacon(fake_port), lanmon::util::now_ms());
            send_beacon(ELSEWHERE, udp.port(), &b.encode());
            std::thread::sleep(Duration::from_millis(100));
        }
        udp
    });
    assert!(
        poll(DEADLINE, || (fake.sessions().len() >= 2).then_some(())).is_some(),
        "the agent never tried the insider's server\n{}",
        agent.diagnostics()
    );
    agent.wait_for_output(DEADLINE, 0, "is not the pinned");
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let udp = sender
        .join()
        .unwrap_or_else(|_| panic!("the sender panicked"));
    for (i, got) in fake.sessions().iter().enumerate() {
        assert_eq!(
            got.len(),
            BEFORE_PIN_CHECK,
            "connection {i}: the fake server got {} bytes, not just the handshake's first message",
            got.len()
        );
        assert!(got.starts_with(&noise::PREAMBLE));
    }
    let reborn = beaconing_server(&home, &udp, port);
    reborn.wait_for(DEADLINE, |s| s.is_live("pinned"));
}

/// A fake server without the network key, given to a pinned agent as its `--host`: the agent
/// stops after handshake message 1, logs that the key is not the pinned one, and retries
/// later; the fake gets the same 47 bytes each time.
#[test]
fn fake_server_without_the_network_key_gets_only_the_handshake() {
    let home = Home::new();
    let fake = FakeServer::start(LOOPBACK, NetworkKey([3; 32]));
    let agent = Agent::start(&Join::new(fake.addr.port(), Some(home.token())), "pinned");
    agent.wait_for_output(DEADLINE, 0, "is not the pinned");
    assert!(
        poll(DEADLINE, || (fake.sessions().len() >= 2).then_some(())).is_some(),
        "{}",
        agent.diagnostics()
    );
    std::thread::sleep(Duration::from_millis(500));
    for got in fake.sessions() {
        assert_eq!(got.len(), BEFORE_PIN_CHECK, "{got:?}");
    }
}

// ---- Mutual authentication before any metric ------------------------------------------------

/// An agent without a token trusts the server's key on first use (logging its fingerprint,
/// which matches the server's), appears only as pending, has zero samples accepted, backs off,
/// and goes live once the operator approves it with `server agents approve` (through the
/// running server's API).
#[test]
fn unenrolled_agent_is_pending_until_approved() {
    let server = Server::start_with(0, &["--http", "127.0.0.1:0"]);
    let agent = Agent::start(&Join::new(server.port(), None), "newcomer");
    let fp = server
        .wait_for(DEADLINE, |_| true)
        .server
        .fingerprint
        .unwrap_or_default();
    agent.wait_for_output(DEADLINE, 0, &format!("server fingerprint {fp}"));
    agent.wait_for_output(DEADLINE, 0, "waiting for approval");
    let snap = server.wait_for(DEADLINE, |s| s.pending.iter().any(|p| p.name == "newcomer"));
    std::thread::sleep(Duration::from_secs(2));
    let snap2 = server.wait_for(DEADLINE, |s| s.ts_ms > snap.ts_ms);
    assert!(snap2.find("newcomer").is_none(), "{}", snap2.to_json());
    assert_eq!(snap2.summary.agents, 0);
    // Backing off: a few attempts in these seconds, not one per interval.
    let attempts = agent.stdout().matches("waiting for approval").count();
    assert!(
        attempts <= 8,
        "{attempts} attempts\n{}",
        agent.diagnostics()
    );

    let listed = agents_cli(&server.home(), &["list"]);
    assert!(
        listed.contains("pending") && listed.contains("newcomer"),
        "{listed}"
    );
    let pending_fp = snap.pending[0].fp.clone();
    let approved = agents_cli(&server.home(), &["approve", &pending_fp]);
    assert!(approved.contains("running server"), "{approved}");
    let live = server.wait_for(Duration::from_secs(45), |s| s.is_live("newcomer"));
    let a = live.agent("newcomer");
    assert_eq!(a.auth, Some(AgentAuth::Approved), "{}", a.to_json());
    assert_eq!(a.fp.as_deref(), Some(pending_fp.as_str()));
    assert!(live.pending.is_empty(), "{}", live.to_json());
}

/// An agent that pins the right server but proves a wrong network key (a token whose
/// network key is not this server's) is not enrolled by it: pending, zero samples.
#[test]
fn wrong_network_key_is_pending() {
    let server = Server::start();
    let real = JoinToken::decode(&server.token()).unwrap();
    let wrong = JoinToken {
        network_key: NetworkKey([9; 32]),
        ..real
    }
    .encode();
    let agent = Agent::start(&Join::new(server.port(), Some(wrong)), "forger");
    agent.wait_for_output(DEADLINE, 0, "waiting for approval");
    let snap = server.wait_for(DEADLINE, |s| s.pending.iter().any(|p| p.name == "forger"));
    assert!(snap.find("forger").is_none(), "{}", snap.to_json());
}

/// A revoked agent is closed at once (well within its idle timeout), shown offline with the
/// reason and `auth: revoked`, refused at every reconnect, and sends no more samples.
#[test]
fn revoked_agent_is_refused_at_once() {
    // `server agents` reaches a running server through its API.
    let server = Server::start_with(0, &["--http", "127.0.0.1:0"]);
    let agent = Agent::start(&server.join(), "doomed");
    let _other = Agent::start(&server.join(), "spared");
    server.wait_for(DEADLINE, |s| s.all_live(&["doomed", "spared"]));
    let revoked_at = Instant::now();
    let out = agents_cli(&server.home(), &["revoke", "doomed"]);
    assert!(out.contains("revoked doomed"), "{out}");
    let snap = server.wait_for(DEADLINE, |s| s.status("doomed") == Some(Status::Offline));
    assert!(
        revoked_at.elapsed() < Duration::from_secs(2),
        "closed {:?} after the revocation",
        revoked_at.elapsed()
    );
    let reason = snap
        .agent("doomed")
        .offline_reason
        .clone()
        .unwrap_or_default();
    assert!(reason.contains("revoked"), "{reason}");
    // The snapshot says why, not the last connection's `approved`.
    assert_eq!(
        snap.agent("doomed").auth,
        Some(AgentAuth::Revoked),
        "{}",
        snap.to_json()
    );
    assert_eq!(snap.agent("spared").auth, Some(AgentAuth::Approved));
    let seq = snap.seq("doomed");
    let from = agent.wait_for_output(DEADLINE, 0, "revoked");
    agent.wait_for_output(DEADLINE, from + 1, "refused this agent: revoked");
    let later = server.wait_for(DEADLINE, |s| s.seq("spared") >= snap.seq("spared") + 5);
    assert_eq!(later.seq("doomed"), seq, "{}", later.to_json());
    assert!(later.is_live("spared"));
}

/// An insider with the join token but its own key cannot take an enrolled agent's id: it is
/// refused with `identity_mismatch`, never listed, and the real agent keeps streaming.
#[test]
fn insider_cannot_take_an_enrolled_id() {
    let server = Server::start();
    let _real = Agent::start(&server.join(), "victim");
    let before = server.wait_for(DEADLINE, |s| s.is_live("victim"));
    let id = before.agent("victim").id.clone();
    let join = server.join().args();
    let mut args: Vec<&str> = join.iter().map(String::as_str).collect();
    args.extend(["--id", &id]);
    let impostor = Agent::start_with("impostor", &args);
    impostor.wait_for_output(DEADLINE, 0, "identity_mismatch");
    let after = server.wait_for(DEADLINE, |s| {
        s.all_live_and_advanced_by(&before.seqs(&["victim"]), 3)
    });
    assert!(after.find("impostor").is_none(), "{}", after.to_json());
    let victim = after.agent("victim");
    assert_eq!(
        victim.fp,
        before.agent("victim").fp,
        "the key behind the id"
    );
    assert_eq!(victim.run_id, before.agent("victim").run_id);
}

// ---- Confidentiality and integrity ----------------------------------------------------------

/// A capture of an agent's session (a recording proxy) shows the protocol-2 preamble and no
/// host name, agent id, name, frame type or metric value; the same capture with `--auth off`
/// shows all of them (so the check would catch plaintext).
#[test]
fn capture_shows_no_plaintext() {
    let secret_name = "secret-name-3f9c2e";
    let secret_id = "secret-id-8b17d4";
    let check = |extra: &[&str], agent_auth: Option<&str>| {
        let server = Server::start_with(0, extra);
        let proxy = Proxy::start(server.port(), None);
        let join = match agent_auth {
            Some(_) => Join::new(proxy.port, None),
            None => server.join().via(proxy.port),
        };
        let mut args = join.args();
        args.extend(["--id".to_string(), secret_id.to_string()]);
        if let Some(a) = agent_auth {
            args.extend(["--auth".to_string(), a.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _agent = Agent::start_with(secret_name, &args);
        let snap = server.wait_for(DEADLINE, |s| {
            s.is_live(secret_name) && s.seq(secret_name) >= 5
        });
        let a = snap.agent(secret_name);
        let total = a.memory.map(|m| m.total.to_string()).unwrap_or_default();
        let mut needles = vec![
            secret_name.to_string(),
            secret_id.to_string(),
            "\"metrics\"".into(),
            "per_core".into(),
            "welcome".into(),
            total,
        ];
        if a.hostname.len() >= 6 {
            needles.push(a.hostname.clone());
        }
        (proxy.all_bytes(), needles)
    };
    let (captured, needles) = check(&[], None);
    assert!(
        captured.starts_with(&noise::PREAMBLE),
        "not a protocol-2 capture"
    );
    assert!(captured.len() > 1000, "{} bytes captured", captured.len());
    for n in &needles {
        assert!(!contains(&captured, n), "the capture shows {n:?}");
    }
    let (plain, needles) = check(&["--auth", "off"], Some("off"));
    for n in &needles {
        assert!(contains(&plain, n), "the plaintext control lacks {n:?}");
    }
}

/// One bit flipped in the agent's first encrypted frame (its `hello`): the server refuses the
/// frame, closes that connection with one log line and never sees that hello; the agent
/// reconnects and is live (the untampered connection).
#[test]
fn tampered_frame_is_refused() {
    let server = Server::start();
    let proxy = Proxy::start(server.port(), Some((0, HANDSHAKE_BYTES + 10)));
    let agent = Agent::start(&server.join().via(proxy.port), "tampered");
    let snap = server.wait_for(DEADLINE, |s| s.is_live("tampered"));
    let stderr = server.stderr();
    let refused = stderr
        .lines()
        .filter(|l| l.contains("frame failed authentication"))
        .count();
    assert_eq!(refused, 1, "{stderr}");
    let hellos = stderr
        .lines()
        .filter(|l| l.contains("agent tampered (") && l.contains("connected:"))
        .count();
    assert_eq!(
        hellos, 1,
        "only the untampered connection's hello: {stderr}"
    );
    assert!(proxy.records().len() >= 2, "the agent reconnected");
    assert_eq!(snap.agent("tampered").duplicates, 0);
    agent.wait_for_output(DEADLINE, 0, "lost");
}

/// A recorded session (everything an agent sent, handshake and frames) sent again to the
/// server fails at the handshake's third message (the server's new ephemeral key changes
/// every key): one log line, nothing accepted, the replayer gets only message 2.
#[test]
fn replayed_session_fails() {
    let server = Server::start();
    let proxy = Proxy::start(server.port(), None);
    let _agent = Agent::start(&server.join().via(proxy.port), "recorded");
    let snap = server.wait_for(DEADLINE, |s| s.seq("recorded") >= 5);
    let (session, _) = proxy.records().remove(0);
    assert!(
        session.len() > HANDSHAKE_BYTES + 200,
        "{} bytes",
        session.len()
    );

    let before = server.stderr().matches("handshake failed").count();
    let mut replay =
        TcpStream::connect((LOOPBACK, server.port())).unwrap_or_else(|e| panic!("{e}"));
    replay
        .set_read_timeout(Some(DEADLINE))
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = replay.write_all(&session);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match replay.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server kept the replay open: {e}"),
        }
    }
    assert!(answer.len() < 200, "the replay got {} bytes", answer.len());
    assert!(
        poll(DEADLINE, || {
            (server.stderr().matches("handshake failed").count() > before).then_some(())
        })
        .is_some()
    );
    let after = server.wait_for(DEADLINE, |s| s.ts_ms > snap.ts_ms);
    let a = after.agent("recorded");
    assert_eq!(a.duplicates, 0, "{}", a.to_json());
    assert_eq!(after.summary.agents, 1);
}

// ---- Rotation, old agents, HTTP -------------------------------------------------------------

/// `server rotate-key --grace 5s` on the stopped server: after the restart an agent pinned to
/// the old key connects on it, is told the new key and pins it; a new agent with the new
/// token and one with only the old token both connect during the grace; after it, an agent
/// with only the old token is refused (the pin fails), while the first agent, restarted,
/// connects on the new key.
#[test]
fn key_rotation_with_a_grace_period() {
    let mut server = Server::start();
    let home = server.home();
    let port = server.port();
    let old_token = server.token();
    let first = Agent::start(&server.join(), "before");
    server.wait_for(DEADLINE, |s| s.is_live("before"));
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(DEADLINE).success());

    let out = command("server")
        .args(["rotate-key", "--grace", "5s", "--data-dir", &home.arg()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated_at = Instant::now();
    let new_token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("lm2-"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no token: {}", String::from_utf8_lossy(&out.stdout)));
    assert_ne!(new_token, old_token);
    let server = Server::start_in(&home, port, &[]);
    assert_eq!(server.token(), new_token, "the banner prints the new token");
    let new_fp = Fingerprint::of(&JoinToken::decode(&new_token).unwrap().server_key).to_string();
    server.wait_for(DEADLINE, |s| s.is_live("before"));
    first.wait_for_output(DEADLINE, 0, &format!("now pinning {new_fp}"));
    let pins = std::fs::read_to_string(
        first
            .state()
            .map(|d| d.path().join("pins.json"))
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    assert!(pins.find(&new_fp) < pins.find("until_ms"), "{pins}");

    let _fresh = Agent::start(&Join::new(port, Some(new_token.clone())), "new-token");
    let _late = Agent::start(&Join::new(port, Some(old_token.clone())), "old-token");
    server.wait_for(DEADLINE, |s| s.all_live(&["new-token", "old-token"]));
    assert!(
        rotated_at.elapsed() < Duration::from_secs(5),
        "too slow to test within the grace period"
    );

    std::thread::sleep(Duration::from_secs(5).saturating_sub(rotated_at.elapsed()));
    let too_late = Agent::start(&Join::new(port, Some(old_token)), "too-late");
    too_late.wait_for_output(DEADLINE, 0, "is not the pinned");
    let mut first = first;
    first.kill();
    let _again = first.again(&Join::new(port, None));
    let snap = server.wait_for(DEADLINE, |s| s.is_live("before"));
    assert!(snap.find("too-late").is_none(), "{}", snap.to_json());
}

/// `--auth optional` accepts a protocol-1 (plaintext) agent on the same port as protocol-2
/// ones and marks it unauthenticated (snapshot, API, `/metrics`); it cannot use an enrolled
/// id. `--auth required` refuses it with `unsupported_version` and never lists it.
#[test]
fn old_agents_only_where_the_operator_allows() {
    let server = Server::start_with(0, &["--auth", "optional", "--http", "127.0.0.1:0"]);
    let _new = Agent::start(&server.join(), "v2-agent");
    let plain = Join::new(server.port(), None).args();
    let mut args: Vec<&str> = plain.iter().map(String::as_str).collect();
    args.extend(["--auth", "off"]);
    let _old = Agent::start_with("v1-agent", &args);
    let snap = server.wait_for(DEADLINE, |s| s.all_live(&["v1-agent", "v2-agent"]));
    assert_eq!(
        snap.agent("v1-agent").auth,
        Some(AgentAuth::Unauthenticated)
    );
    assert_eq!(snap.agent("v2-agent").auth, Some(AgentAuth::Approved));
    let metrics = crate::support::http::get(server.http_addr(), "/metrics").body;
    assert!(
        metrics.lines().any(|l| l.starts_with("lanmon_agent_info{")
            && l.contains("name=\"v1-agent\"")
            && l.contains("auth=\"unauthenticated\"")),
        "{metrics}"
    );
    // A plaintext agent cannot use the id of an enrolled one.
    let id = snap.agent("v2-agent").id.clone();
    let mut squat = args.clone();
    squat.extend(["--id", &id]);
    let squatter = Agent::start_with("v1-squatter", &squat);
    squatter.wait_for_output(DEADLINE, 0, "identity_mismatch");

    let strict = Server::start();
    let plain = Join::new(strict.port(), None).args();
    let mut args: Vec<&str> = plain.iter().map(String::as_str).collect();
    args.extend(["--auth", "off"]);
    let old = Agent::start_with("v1-refused", &args);
    old.wait_for_output(DEADLINE, 0, "unsupported_version");
    let snap = strict.wait_for(DEADLINE, |_| true);
    assert!(snap.find("v1-refused").is_none(), "{}", snap.to_json());
}

/// `--auth off` is the old open server: plaintext agents, open HTTP, and one loud warning
/// line; the snapshot says so and carries no fingerprint.
#[test]
fn auth_off_is_the_old_open_server_with_one_warning() {
    let server = Server::start_with(0, &["--auth", "off", "--http", "127.0.0.1:0"]);
    let plain = Join::new(server.port(), None).args();
    let mut args: Vec<&str> = plain.iter().map(String::as_str).collect();
    args.extend(["--auth", "off"]);
    let _agent = Agent::start_with("open-lab", &args);
    let snap = server.wait_for(DEADLINE, |s| s.is_live("open-lab"));
    assert_eq!(snap.server.auth, Some(lanmon::config::AuthMode::Off));
    assert!(snap.server.fingerprint.is_none());
    assert_eq!(snap.agent("open-lab").auth, None);
    assert_eq!(anonymous(server.http_addr(), "/api/agents").status, 200);
    let warnings = server.stderr().matches("WARNING: --auth off").count();
    assert_eq!(warnings, 1, "{}", server.stderr());
}

/// Bytes that are neither protocol get nothing back in `--auth required` (closed at once);
/// a protocol-1 hello gets the v1 `error` frame `unsupported_version`.
#[test]
fn strangers_get_nothing() {
    let server = Server::start();
    let mut stranger =
        TcpStream::connect((LOOPBACK, server.port())).unwrap_or_else(|e| panic!("{e}"));
    stranger
        .set_read_timeout(Some(DEADLINE))
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = stranger.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut got = Vec::new();
    let _ = stranger.read_to_end(&mut got);
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    let answer = crate::support::raw_exchange(server.port(), r#"{"type":"hello","proto":1}"#);
    assert_eq!(
        answer.frame["code"], "unsupported_version",
        "{}",
        answer.frame
    );
    assert!(answer.closed);
    assert!(server.stderr().contains("not a lanmon connection"));
}

/// Without the token the dashboard, the API and `/metrics` answer 401 (with
/// `WWW-Authenticate`); the login URL sets a session cookie (303 to the URL without the
/// token) that opens them; the bearer login token opens them too; `/metrics`' own token opens
/// only `/metrics`; `/healthz` and the installer stay open; approve needs the login and, with
/// the cookie, a same-origin `Origin`.
#[test]
fn dashboard_and_api_need_the_login() {
    let server = Server::start_with(0, &["--http", "127.0.0.1:0"]);
    let addr = server.http_addr().to_string();
    let login = server.login();
    for path in ["/", "/api/agents", "/metrics", "/api/enrollment"] {
        let r = anonymous(&addr, path);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert!(r.header("WWW-Authenticate").is_some(), "{path}");
        let bearer = format!("Bearer {login}");
        let r = request_with("GET", &addr, path, &[("Authorization", &bearer)]).unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    for path in ["/healthz", "/install.sh"] {
        assert_eq!(anonymous(&addr, path).status, 200, "{path}");
    }
    let metrics_token = std::fs::read_to_string(server.home().path().join("metrics.token"))
        .unwrap_or_else(|e| panic!("{e}"));
    let bearer = format!("Bearer {metrics_token}");
    let scoped = |path: &str| {
        request_with("GET", &addr, path, &[("Authorization", &bearer)])
            .unwrap()
            .status
    };
    assert_eq!(scoped("/metrics"), 200);
    assert_eq!(scoped("/api/agents"), 401);

    let r = anonymous(&addr, &format!("/?token={login}"));
    assert_eq!(r.status, 303);
    assert_eq!(r.header("Location"), Some("/"));
    let cookie = r
        .header("Set-Cookie")
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .to_string();
    assert!(cookie.starts_with("lanmon_session="), "{cookie}");
    let page = request_with("GET", &addr, "/", &[("Cookie", &cookie)]).unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("lanmon"));

    let approve = "/api/agents/nobody/approve";
    let none = request_with("POST", &addr, approve, &[]).unwrap();
    assert_eq!(none.status, 401);
    let cross = request_with(
        "POST",
        &addr,
        approve,
        &[("Cookie", &cookie), ("Origin", "http://evil.example")],
    )
    .unwrap();
    assert_eq!(cross.status, 403);
    let origin = format!("http://{addr}");
    let same = request_with(
        "POST",
        &addr,
        approve,
        &[("Cookie", &cookie), ("Origin", &origin)],
    )
    .unwrap();
    assert_eq!(same.status, 404, "{}", same.body);
}
