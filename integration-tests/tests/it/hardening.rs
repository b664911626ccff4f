//! Hardening (issue 11): what one hostile client on the LAN can no longer do to a real agent,
//! to the server's slots and memory, to the operator's terminal or to a browser. Real
//! binaries on loopback; hostile clients are raw TCP connections, some from another loopback
//! address (127.0.0.2: the kernel lets a client bind any 127/8 source), so the server sees
//! them as another machine.
//!
//! Snapshots are read as the typed [`Snapshot`] (through [`wait`]).
//!
//! The raw clients speak plaintext protocol 1: the servers run with `--auth optional` (v1
//! beside v2, HTTP still logged in) or, where a test is about the rules that go by address
//! alone (no keys) or about HTTP hygiene apart from the login, `--auth off`. What the keys add
//! is tested in `trust.rs`.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};

use lanmon::snapshot::{AgentView, Snapshot, Status};
use serde_json::{Value, json};

use crate::support::{Agent, DEADLINE, LOOPBACK, Server};

/// Another machine, as far as the server can tell.
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

// ---- Snapshots ---------------------------------------------------------------------------

/// Waits until the server's latest snapshot satisfies `pred`; returns it.
#[track_caller]
fn wait(server: &Server, pred: impl Fn(&Snapshot) -> bool) -> Snapshot {
    server.wait_for(DEADLINE, pred)
}

/// The agent called `name` in `s`.
fn agent<'a>(s: &'a Snapshot, name: &str) -> Option<&'a AgentView> {
    s.agents.iter().find(|a| a.name == name)
}

/// Whether `name` is live in `s` with a seq above `above`.
fn live_above(s: &Snapshot, name: &str, above: u64) -> bool {
    agent(s, name).is_some_and(|a| a.status == Status::Live && a.seq > above)
}

/// The real agent named `name`, plaintext (`--auth off`), sending to `server`.
#[track_caller]
fn plaintext_agent(server: &Server, name: &str) -> Agent {
    let port = server.port().to_string();
    Agent::start_with(
        name,
        &["--host", "127.0.0.1", "--port", &port, "--auth", "off"],
    )
}

// ---- Raw clients -------------------------------------------------------------------------

/// A raw connection to the server on 127.0.0.1:`port` from the source address `from`.
struct Raw {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Raw {
    #[track_caller]
    fn connect_from(from: Ipv4Addr, port: u16) -> Raw {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .unwrap_or_else(|e| panic!("socket: {e}"));
        let local = SocketAddr::new(IpAddr::V4(from), 0);
        socket
            .bind(&local.into())
            .unwrap_or_else(|e| panic!("bind {local}: {e}"));
        let server = SocketAddr::new(IpAddr::V4(LOOPBACK), port);
        socket
            .connect(&server.into())
            .unwrap_or_else(|e| panic!("connect {server}: {e}"));
        let stream: TcpStream = socket.into();
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(DEADLINE))
            .unwrap_or_else(|e| panic!("read timeout: {e}"));
        let reader = BufReader::new(
            stream
                .try_clone()
                .unwrap_or_else(|e| panic!("clone a socket: {e}")),
        );
        Raw { stream, reader }
    }

    #[track_caller]
    fn send(&mut self, frame: &Value) {
        let mut line = frame.to_string().into_bytes();
        line.push(b'\n');
        self.stream
            .write_all(&line)
            .unwrap_or_else(|e| panic!("write: {e}"));
    }

    /// The next frame; `None` when the server closed the connection.
    #[track_caller]
    fn frame(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}")),
            ),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) => panic!("no frame from the server within {DEADLINE:?}: {e}"),
        }
    }

    /// The server's first answer, which must be of `kind` (`welcome`, `error`, `ack`).
    #[track_caller]
    fn expect(&mut self, kind: &str) -> Value {
        match self.frame() {
            Some(f) if f["type"] == kind => f,
            other => panic!("expected a `{kind}` frame, got {other:?}"),
        }
    }
}

/// A `hello` claiming to be the agent `id`, run `run`, named `name`.
fn hello(id: &str, run: &str, name: &str) -> Value {
    json!({
        "type": "hello", "proto": 1, "agent_id": id, "run_id": run, "name": name,
        "hostname": "hostile", "os": "test", "cores": 1, "agent_version": "0",
        "interval_ms": 2_000
    })
}

/// A `metrics` frame without readings (both are optional): only the seq matters.
fn bare_metrics(seq: u64) -> Value {
    json!({"type": "metrics", "seq": seq, "ts_ms": 1})
}

// ---- Item 2: kicking and locking out a real agent ---------------------------------------

/// A client on another address cannot take a streaming agent's id, with the agent's own run
/// id (which took the agent over before, `replaced`) or another; and a client on the agent's
/// own address that takes the run over and claims seq 2⁶⁴−1 does not lock the agent out: it
/// comes back with a new run (saying so once in its log) and streams on.
#[test]
fn a_hostile_client_cannot_kick_or_lock_out_a_real_agent() {
    // Without keys the id's rules go by address (with `--auth optional` an enrolled id is not
    // open to protocol 1 at all: `trust::insider_cannot_take_an_enrolled_id`).
    let server = Server::start_with(0, &["--auth", "off"]);
    let victim = plaintext_agent(&server, "victim");
    let snap = wait(&server, |s| live_above(s, "victim", 1));
    let real = agent(&snap, "victim")
        .cloned()
        .unwrap_or_else(|| panic!("no victim"));

    for run in [real.run_id.as_str(), "squatter-run"] {
        let mut squatter = Raw::connect_from(ELSEWHERE, server.port());
        squatter.send(&hello(&real.id, run, "squatter"));
        let refused = squatter.expect("error");
        assert_eq!(refused["code"], "duplicate_id", "run {run}: {refused}");
    }
    let snap = wait(&server, |s| live_above(s, "victim", real.seq + 2));
    let now = agent(&snap, "victim")
        .cloned()
        .unwrap_or_else(|| panic!("no victim"));
    assert_eq!(
        (now.run_id.as_str(), now.ip.as_str()),
        (real.run_id.as_str(), "127.0.0.1")
    );

    // From the victim's own address the run can be taken over (a half-open connection's
    // replacement looks just like it): claim the highest seq there is, then go.
    let mut hijacker = Raw::connect_from(LOOPBACK, server.port());
    hijacker.send(&hello(&real.id, &real.run_id, "victim"));
    hijacker.expect("welcome");
    hijacker.send(&bare_metrics(u64::MAX));
    hijacker.expect("ack");
    drop(hijacker);

    let snap = wait(&server, |s| {
        agent(s, "victim")
            .is_some_and(|a| a.status == Status::Live && a.run_id != real.run_id && a.seq >= 3)
    });
    let reborn = agent(&snap, "victim")
        .cloned()
        .unwrap_or_else(|| panic!("no victim"));
    assert!(reborn.seq < 1_000, "the new run counts from 1: {reborn:?}");
    let log = victim.stdout();
    assert_eq!(
        log.matches("starting a new run").count(),
        1,
        "one log line for the new run\n{}",
        victim.diagnostics()
    );
    // The hijack itself shows (`replaced`); the squatters never reached the victim.
    assert!(!log.contains("duplicate_id"), "{}", victim.diagnostics());
}

// ---- Item 10: terminal escapes ----------------------------------------------------------

/// A frame whose type is an OSC/CSI sequence with CR and BEL (serde's "unknown variant"
/// error quotes it) leaves no control character in the server's log nor in the agent's
/// offline reason: both show it escaped.
#[test]
fn terminal_escapes_from_an_agent_reach_neither_the_log_nor_the_reason() {
    let server = Server::start_with(0, &["--auth", "optional"]);
    let mut raw = Raw::connect_from(LOOPBACK, server.port());
    raw.send(&hello("escapist", "run-1", "escapist"));
    raw.expect("welcome");
    raw.send(&json!({"type": "\u{1b}]0;pwned\u{7}\r\u{1b}[2J"}));
    let refused = raw.expect("error");
    assert_eq!(refused["code"], "bad_frame", "{refused}");

    let snap = wait(&server, |s| {
        agent(s, "escapist").is_some_and(|a| a.status == Status::Offline)
    });
    let reason = agent(&snap, "escapist")
        .and_then(|a| a.offline_reason.clone())
        .unwrap_or_default();
    assert!(reason.contains("\\u{1b}]0;pwned\\u{7}\\r"), "{reason:?}");
    assert!(!reason.chars().any(char::is_control), "{reason:?}");
    let log = server.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("pwned"))
        .unwrap_or_else(|| panic!("no log line about the frame:\n{log}"));
    assert!(line.contains("\\u{1b}]0;pwned"), "{line:?}");
    assert!(
        !log.contains(['\u{1b}', '\r', '\u{7}']),
        "raw control in the log: {log:?}"
    );
}

// ---- Item 11: HTTP hygiene --------------------------------------------------------------

/// A server with HTTP on 127.0.0.1 (port from its snapshot) and `extra` flags.
#[track_caller]
fn http_server(extra: &[&str]) -> (Server, String) {
    // The login is not what these tests are about (trust.rs tests it): no credentials needed.
    let mut args = vec!["--http", "127.0.0.1:0", "--auth", "off"];
    args.extend_from_slice(extra);
    let server = Server::start_with(0, &args);
    let snap = wait(&server, |s| s.server.http.is_some());
    let http = snap.server.http.unwrap_or_default();
    (server, http)
}

/// One HTTP/1.1 answer: status, headers (names lowercased), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` from `from` to the HTTP address `addr`, sent with the `Host` header `host`.
#[track_caller]
fn get_from(from: Ipv4Addr, addr: &str, path: &str, host: &str) -> Answer {
    let port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP address {addr}"));
    let mut raw = Raw::connect_from(from, port);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    raw.stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut text = String::new();
    std::io::Read::read_to_string(&mut raw.reader, &mut text)
        .unwrap_or_else(|e| panic!("read the answer to GET {path}: {e}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A request naming a host the server does not answer for (what a DNS-rebinding page
/// sends) gets 421 with the fix in its body; IP literals, `localhost` and `--http-host`
/// names are answered; every answer forbids sniffing, framing and referrers and carries a
/// Content-Security-Policy.
#[test]
fn http_answers_only_its_own_host_names_with_security_headers() {
    let (_server, http) = http_server(&["--http-host", "lanmon.lab"]);
    let refused = get_from(LOOPBACK, &http, "/api/agents", "evil.example:8081");
    assert_eq!(refused.status, 421, "{}", refused.body);
    assert!(
        refused.body.contains("--http-host evil.example"),
        "{}",
        refused.body
    );
    for host in [http.as_str(), "localhost", "LANMON.lab:8081", "[::1]:8081"] {
        let ok = get_from(LOOPBACK, &http, "/api/agents", host);
        assert_eq!(ok.status, 200, "Host: {host}: {}", ok.body);
    }
    for path in ["/", "/api/agents", "/metrics", "/nothing-here"] {
        let answer = get_from(LOOPBACK, &http, path, &http);
        assert_eq!(
            answer.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(answer.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            answer.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        let csp = answer.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
}

// ---- Item 8: dashboard lockout ----------------------------------------------------------

/// Opens the dashboard's live feed from `from`; returns the status and the open connection
/// (headers read), which holds the stream while it lives.
#[track_caller]
fn open_events(from: Ipv4Addr, addr: &str) -> (u16, Raw) {
    let port: u16 = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP address {addr}"));
    let mut raw = Raw::connect_from(from, port);
    let request = format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    raw.stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut status = 0;
    loop {
        let mut line = String::new();
        match raw.reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) if status == 0 => {
                status = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("no status line: {line:?}"));
            }
            Ok(_) => {}
            Err(e) => panic!("reading the feed's headers: {e}"),
        }
    }
    (status, raw)
}

/// One client holding live feeds gets at most 8 of them (the 9th: 503); a browser at another
/// address still gets the feed and the page (before, one address could hold all 256 slots).
#[test]
fn one_client_cannot_take_every_dashboard_slot() {
    let (_server, http) = http_server(&[]);
    let mut held = Vec::new();
    for n in 1..=8 {
        let (status, stream) = open_events(LOOPBACK, &http);
        assert_eq!(status, 200, "feed {n}");
        held.push(stream);
    }
    let (status, _) = open_events(LOOPBACK, &http);
    assert_eq!(status, 503, "a 9th feed from one address");
    let (status, mut feed) = open_events(ELSEWHERE, &http);
    assert_eq!(status, 200, "a feed from another address");
    let mut first = String::new();
    feed.reader
        .read_line(&mut first)
        .unwrap_or_else(|e| panic!("no event: {e}"));
    assert!(!first.is_empty(), "the other browser's feed delivers");
    assert_eq!(get_from(ELSEWHERE, &http, "/", &http).status, 200);
}

// ---- Item 9: slots and memory held by silence -------------------------------------------

/// Connections that each send 60 KiB of a frame and then nothing hold no more than the
/// shared budget (4 MiB here) between them: those that would go over it are closed with
/// `limit`, the server's memory grows by about the budget (300 of them held 19 MiB before),
/// and a real agent streams on.
#[test]
fn partly_sent_frames_cannot_hold_more_than_the_budget() {
    const CONNECTIONS: usize = 300;
    const PARTIAL: usize = 60 * 1024;
    let server = Server::start_with(
        0,
        &["--auth", "optional", "--max-buffered-bytes", "4194304"],
    );
    let steady = Agent::start(&server.join(), "steady");
    let snap = wait(&server, |s| live_above(s, "steady", 0));
    let steady_seq = agent(&snap, "steady").map_or(0, |a| a.seq);
    let before = server.rss_kib();

    let partial = format!("{{\"type\":\"bye\",\"reason\":\"{}", "x".repeat(PARTIAL));
    let mut held = Vec::new();
    for n in 0..CONNECTIONS {
        let mut raw = Raw::connect_from(LOOPBACK, server.port());
        raw.send(&hello(
            &format!("buffer-{n}"),
            "run-1",
            &format!("buffer-{n}"),
        ));
        raw.expect("welcome");
        // A refused connection may already be closed when the rest of the line goes out.
        let _ = raw.stream.write_all(partial.as_bytes());
        held.push(raw);
    }
    let refused = crate::support::poll(DEADLINE, || {
        let n = server.stderr().matches("partly received frames").count();
        (n >= CONNECTIONS - 100).then_some(n)
    })
    .unwrap_or_else(|| panic!("too few connections refused:\n{}", server.stderr()));
    let grown = server.rss_kib().saturating_sub(before);
    assert!(
        grown < 10 * 1024,
        "{refused} of {CONNECTIONS} refused, yet the server grew by {grown} KiB"
    );
    wait(&server, |s| live_above(s, "steady", steady_seq + 2));
    drop(steady);
}
