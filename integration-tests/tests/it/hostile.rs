//! Hostile input: bad input ends that connection only (an `error` frame where possible and one
//! log line naming the peer), while the server and every other agent carry on, and the
//! server's memory stays bounded.
//!
//! Every test keeps a real agent (`steady`, 200 ms interval, protocol 2) streaming to the
//! server under attack and checks it is `live` with an advancing `seq` before and after the
//! attack. Memory is read from the server's `VmRSS` in /proc. Raw clients speak the wire
//! protocol by hand (README, "Wire protocol"), so that they can split, coalesce, corrupt and
//! withhold frames: plaintext protocol 1, so those servers run `--auth optional` (the same
//! codec and validation serve the frames inside a protocol-2 session). The idle flood runs the
//! secure default.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use lanmon::snapshot::{AgentView, Status};
use lanmon::util::now_ms;
use serde_json::{Value, json};

use crate::support::{Agent, DEADLINE, LOOPBACK, Server, SnapshotExt, ToJson, poll, poll_every};

/// Name of the real agent that must not notice any attack.
const STEADY: &str = "steady";

/// Cores announced by the raw clients (so `cpu.per_core` has this many entries).
const RAW_CORES: u64 = 2;

/// Interval announced by the raw clients: long enough that the idle timeout (3 intervals)
/// cannot end a raw session while a test still looks at it.
const RAW_INTERVAL_MS: u64 = 2_000;

/// Most the server's resident memory may grow over an attack by one connection: it holds at
/// most one frame (64 KiB) and 256 queued answers for it, so this is mostly allocator slack;
/// a server that buffered the 10 MB line would blow it.
const RSS_BUDGET_KIB: u64 = 4 * 1024;

/// Most the server's resident memory may grow while a peer that never reads is cut off: on top
/// of [`RSS_BUDGET_KIB`], the ~150,000 samples it sent meanwhile are stored, and SQLite's page
/// cache grows with them (seen: +4.7 MiB on a loaded machine). A server that queued every
/// unread ack would not stop reading at all, which the test catches first.
const SLOW_READER_RSS_BUDGET_KIB: u64 = 8 * 1024;

/// Most the server's resident memory may grow while it holds 1000 idle sessions (about 32 KiB
/// each).
const FLOOD_RSS_BUDGET_KIB: u64 = 32 * 1024;

/// Size of the line without a newline in [`ten_megabyte_line_is_refused_with_bounded_memory`].
const HUGE_LINE_BYTES: usize = 10 * 1024 * 1024;

/// Hello timeout of the server in [`thousands_of_idle_connections_are_shed`].
const FLOOD_HELLO_TIMEOUT: Duration = Duration::from_secs(1);

/// Per-IP connection limit of the server in [`thousands_of_idle_connections_are_shed`].
const FLOOD_PER_IP: usize = 1_000;

/// Idle connections opened in [`thousands_of_idle_connections_are_shed`].
const FLOOD_CONNECTIONS: usize = 1_500;

/// Identical floods in [`thousands_of_idle_connections_are_shed`].
const FLOOD_ROUNDS: u32 = 3;

/// Most the last flood round may grow the server's memory per session it held: a leaked
/// session would keep at least its 8 KiB read buffer.
const LEAK_PER_SESSION_KIB: u64 = 4;

/// Connections opened at once in [`thousands_of_idle_connections_are_shed`], after waiting
/// until at most [`FLOOD_QUEUED`] are still waiting to be accepted: together well under the
/// server's listen backlog (4096, capped by `net.core.somaxconn`; 128 on systems that keep
/// the old default), so that no SYN is dropped.
const FLOOD_WAVE: usize = 96;

/// Connections that may still wait to be accepted when the next wave of the flood starts.
const FLOOD_QUEUED: usize = 32;

/// Held by the tests that load the server hardest (the idle flood, the slow reader), so that
/// they do not run at the same time: the flood is timed against the hello timeout.
static HEAVY: Mutex<()> = Mutex::new(());

/// A server that also takes plaintext protocol-1 clients (the raw clients here).
#[track_caller]
fn plaintext_server() -> Server {
    Server::start_with(0, &["--auth", "optional"])
}

/// Takes [`HEAVY`] (a test that failed while holding it does not poison it for the others).
fn heavy() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---- Frames, written by hand ----------------------------------------------------------------

/// A valid `hello` for a raw client named `name` (also its agent id).
fn hello(name: &str) -> Value {
    json!({
        "type": "hello", "proto": 1, "agent_id": format!("hostile-{name}"),
        "run_id": format!("run-{name}"), "name": name, "hostname": "hostile-test",
        "os": "test", "cores": RAW_CORES, "agent_version": "0.0.0-test",
        "interval_ms": RAW_INTERVAL_MS
    })
}

/// A valid `metrics` frame number `seq` for a raw client.
fn metrics(seq: u64) -> Value {
    json!({
        "type": "metrics", "seq": seq, "ts_ms": now_ms(),
        "cpu": {"total": 12.5, "per_core": [10.0, 15.0]},
        "memory": {"total": 8_589_934_592_u64, "used": 3_221_225_472_u64,
                   "free": 1_073_741_824_u64, "available": 5_368_709_120_u64}
    })
}

/// `count` minimal valid `metrics` lines (no `cpu`, no `memory`: both are optional) from
/// `first_seq` on: the slow-reader test needs hundreds of thousands, cheap to make and parse.
fn bare_metrics(first_seq: u64, count: u64) -> String {
    let ts_ms = now_ms();
    (first_seq..first_seq + count)
        .map(|seq| format!("{{\"type\":\"metrics\",\"seq\":{seq},\"ts_ms\":{ts_ms}}}\n"))
        .collect()
}

/// `frames` as newline-delimited JSON.
fn lines(frames: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        out.extend_from_slice(frame.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// xorshift64: a tiny seeded PRNG, so the "random" bytes are the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// About `len` random bytes in lines of about 128 bytes on average (a newline byte from the
/// PRNG, or one added after 1 byte in 256): far below the frame limit, so each line is judged
/// as a frame.
fn random_lines(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = XorShift(seed);
    let mut out = Vec::with_capacity(len + len / 64);
    while out.len() < len {
        let word = rng.next();
        out.push(word.to_le_bytes()[0]);
        if word >> 56 == 0 {
            out.push(b'\n');
        }
    }
    out.push(b'\n');
    out
}

// ---- Raw connections ------------------------------------------------------------------------

/// Connects to the server like an agent would: 127.0.0.1, `TCP_NODELAY`, reads and writes that
/// give up after [`DEADLINE`].
#[track_caller]
fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect((LOOPBACK, port))
        .unwrap_or_else(|e| panic!("cannot connect to {LOOPBACK}:{port}: {e}"));
    stream
        .set_nodelay(true)
        .unwrap_or_else(|e| panic!("cannot set TCP_NODELAY: {e}"));
    stream
        .set_read_timeout(Some(DEADLINE))
        .unwrap_or_else(|e| panic!("cannot set a read timeout: {e}"));
    stream
        .set_write_timeout(Some(DEADLINE))
        .unwrap_or_else(|e| panic!("cannot set a write timeout: {e}"));
    stream
}

/// The client's own address, which the server logs as `peer=`.
#[track_caller]
fn local_addr(stream: &TcpStream) -> SocketAddr {
    stream
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"))
}

/// A reader over a clone of `stream`, so the test can keep writing to `stream`.
#[track_caller]
fn reader(stream: &TcpStream) -> BufReader<TcpStream> {
    BufReader::new(
        stream
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone a socket: {e}")),
    )
}

/// Reads one frame; `None` at end of stream or on a reset (the server closed).
#[track_caller]
fn read_frame(reader: &mut BufReader<TcpStream>, what: &str) -> Option<Value> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => None,
        Ok(_) => Some(serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!("{what}: the server sent a line that is not JSON: {line:?} ({e})")
        })),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
        Err(e) => panic!("{what}: no frame from the server within {DEADLINE:?}: {e}"),
    }
}

/// Reads frames until an `error` frame and returns it with every frame read before it.
#[track_caller]
fn read_until_error(reader: &mut BufReader<TcpStream>, what: &str) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    // Bounded: a client in these tests is answered at most once per frame it sent (≤ 500).
    for _ in 0..1_000 {
        match read_frame(reader, what) {
            Some(frame) if frame["type"] == "error" => return (frame, before),
            Some(frame) => before.push(frame),
            None => panic!("{what}: connection closed without an error frame; got {before:?}"),
        }
    }
    panic!("{what}: no error frame among the first 1000 frames")
}

/// Whether the server closed the connection (end of stream or reset) within [`DEADLINE`],
/// sending nothing more.
#[track_caller]
fn closed_by_server(reader: &mut BufReader<TcpStream>, what: &str) -> bool {
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => {
            assert!(
                rest.is_empty(),
                "{what}: the server kept talking after its error frame: {:?}",
                String::from_utf8_lossy(&rest)
            );
            true
        }
        Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("{what}: unexpected read error: {e}"),
    }
}

/// Whether a write failed because the server had already closed the connection: an expected
/// outcome when a test keeps sending after the server refused it.
fn closed_on_write(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

// ---- The server under attack ----------------------------------------------------------------

/// Starts the `steady` agent and waits until it is live; returns its seq at that point.
#[track_caller]
fn start_steady(server: &Server) -> (Agent, u64) {
    let steady = Agent::start(&server.join(), STEADY);
    let snap = server.wait_for(DEADLINE, |s| s.is_live(STEADY) && s.seq(STEADY) >= 1);
    (steady, snap.seq(STEADY))
}

/// Waits until `steady` is live with a seq above `before`; returns the new seq.
#[track_caller]
fn steady_advanced(server: &Server, before: u64) -> u64 {
    let snap = server.wait_for(DEADLINE, |s| s.is_live(STEADY) && s.seq(STEADY) > before);
    snap.seq(STEADY)
}

/// Whether `line` carries the field `peer=<peer>` (exactly that address, not a longer port).
fn names_peer(line: &str, peer: SocketAddr) -> bool {
    let field = format!("peer={peer}");
    line.split_whitespace().any(|word| word == field)
}

/// The server's warning and error lines that name `peer`.
fn warnings_naming(stderr: &str, peer: SocketAddr) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && names_peer(l, peer))
        .map(str::to_string)
        .collect()
}

/// The agent named `name` in the latest snapshot, once `pred` holds for it.
#[track_caller]
fn wait_agent(server: &Server, name: &str, pred: impl Fn(&AgentView) -> bool) -> AgentView {
    let snap = server.wait_for(DEADLINE, |s| s.find(name).is_some_and(&pred));
    snap.agent(name).clone()
}

/// Like [`poll`], pausing only 1 ms between looks: for waits of a few milliseconds that are
/// repeated many times.
fn poll_briefly<T>(within: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
    poll_every(Duration::from_millis(1), within, f)
}

/// Connections waiting in the accept queue of the listening socket on 127.0.0.1:`port`
/// (`rx_queue` of its LISTEN line in /proc/net/tcp). The kernel lists listening sockets
/// first, so this reads only the start of the table, however many connections are open.
#[track_caller]
fn accept_queue(port: u16) -> usize {
    let table = std::fs::File::open("/proc/net/tcp")
        .unwrap_or_else(|e| panic!("cannot open /proc/net/tcp: {e}"));
    let local = format!("0100007F:{port:04X}");
    let queues = BufReader::new(table)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            // sl, local_address, rem_address, st, tx_queue:rx_queue, ...
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| fields.get(4).map(|q| (*q).to_string()))
                .flatten()
        })
        .unwrap_or_else(|| panic!("no LISTEN socket on {local} in /proc/net/tcp"));
    queues
        .split_once(':')
        .and_then(|(_, rx)| usize::from_str_radix(rx, 16).ok())
        .unwrap_or_else(|| panic!("bad tx_queue:rx_queue {queues:?} in /proc/net/tcp"))
}

/// Raises this process's soft open-files limit to at least `want` (never above the hard
/// limit); returns the soft limit now in force.
fn raise_open_files_limit(want: u64) -> u64 {
    lanmon::process::raise_fd_limit(want)
        .unwrap_or_else(|e| panic!("cannot raise the open-files limit: {e}"))
}

// ---- The tests ------------------------------------------------------------------------------

/// Frames split into one-byte writes and 501 frames coalesced into one write are decoded
/// exactly like an agent's frames: `welcome`, an `ack` per sample, 500 received and no gaps.
#[test]
fn frames_split_byte_by_byte_and_coalesced_are_accepted() {
    let server = plaintext_server();
    let (_steady, before) = start_steady(&server);

    // One byte per write (TCP_NODELAY, so each byte leaves as its own segment).
    let mut split = connect(server.port());
    let mut split_reader = reader(&split);
    let split_frames = lines(&[hello("split"), metrics(1), metrics(2), metrics(3)]);
    for byte in &split_frames {
        split
            .write_all(std::slice::from_ref(byte))
            .and_then(|()| split.flush())
            .unwrap_or_else(|e| panic!("split: cannot write one byte: {e}"));
    }
    let welcome = read_frame(&mut split_reader, "split").unwrap_or_default();
    assert_eq!(welcome["type"], "welcome", "split: {welcome}");
    assert_eq!(welcome["proto"], 1, "split: {welcome}");
    let mut acked = Vec::new();
    for _ in 0..3 {
        let ack = read_frame(&mut split_reader, "split").unwrap_or_default();
        assert_eq!(ack["type"], "ack", "split: {ack}");
        acked.push(ack["seq"].as_u64().unwrap_or(0));
    }
    assert_eq!(acked, [1, 2, 3], "split: one ack per sample, in order");

    // Hello and 500 samples in a single write.
    let mut coalesced = connect(server.port());
    let mut coalesced_reader = reader(&coalesced);
    let mut frames = vec![hello("coalesced")];
    frames.extend((1..=500).map(metrics));
    let blob = lines(&frames);
    coalesced
        .write_all(&blob)
        .unwrap_or_else(|e| panic!("coalesced: cannot write {} bytes: {e}", blob.len()));
    let welcome = read_frame(&mut coalesced_reader, "coalesced").unwrap_or_default();
    assert_eq!(welcome["type"], "welcome", "coalesced: {welcome}");
    let mut last = 0;
    for _ in 0..500 {
        let Some(ack) = read_frame(&mut coalesced_reader, "coalesced") else {
            panic!(
                "coalesced: the server closed the connection after ack {last}\n\
                 --- server stderr ---\n{}",
                server.stderr()
            );
        };
        assert_eq!(ack["type"], "ack", "coalesced: {ack}");
        let seq = ack["seq"].as_u64().unwrap_or(0);
        assert!(seq > last, "coalesced: ack {seq} after ack {last}");
        last = seq;
        if last == 500 {
            break;
        }
    }
    assert_eq!(last, 500, "coalesced: highest ack");

    let split_entry = wait_agent(&server, "split", |a| a.received == 3);
    assert_eq!(split_entry.gaps, 0, "{}", split_entry.to_json());
    let coalesced_entry = wait_agent(&server, "coalesced", |a| a.received == 500);
    let shown = coalesced_entry.to_json();
    assert_eq!(coalesced_entry.seq, 500, "{shown}");
    assert_eq!(coalesced_entry.gaps, 0, "{shown}");
    assert_eq!(coalesced_entry.duplicates, 0, "{shown}");
    assert_eq!(coalesced_entry.first_seq, 1, "{shown}");

    steady_advanced(&server, before);
}

/// Random bytes, NaN, out-of-range values, a wrong core count, a second hello, metrics before
/// hello and an unknown type each get an `error` frame with the right code, close only that
/// connection, count no bad sample, and leave exactly one warning naming the peer.
#[test]
fn random_bytes_and_bad_values_close_only_that_connection() {
    let server = plaintext_server();
    let (_steady, before) = start_steady(&server);

    let with_hello = |name: &str, bad: Value| lines(&[hello(name), metrics(1), bad]);
    let mut nan = metrics(2).to_string();
    nan = nan.replacen("12.5", "NaN", 1);
    assert!(nan.contains("NaN"), "{nan}");
    let mut nan_payload = lines(&[hello("nan"), metrics(1)]);
    nan_payload.extend_from_slice(nan.as_bytes());
    nan_payload.push(b'\n');
    let mut negative = metrics(2);
    negative["cpu"]["total"] = json!(-1.0);
    let mut over_100 = metrics(2);
    over_100["cpu"]["per_core"] = json!([150.0, 10.0]);
    let mut used_over_total = metrics(2);
    used_over_total["memory"]["used"] = json!(8_589_934_593_u64);
    let mut wrong_cores = metrics(2);
    wrong_cores["cpu"]["per_core"] = json!([10.0, 15.0, 20.0]);

    // (case, bytes sent, expected error code, name in the hello if it has one)
    let cases: Vec<(&str, Vec<u8>, &str, Option<&str>)> = vec![
        (
            "random bytes",
            random_lines(0x5eed_1234_abcd_9876, 64 * 1024),
            "bad_frame",
            None,
        ),
        ("NaN literal", nan_payload, "bad_frame", Some("nan")),
        (
            "negative percent",
            with_hello("negative", negative),
            "invalid_value",
            Some("negative"),
        ),
        (
            "150 %",
            with_hello("over-100", over_100),
            "invalid_value",
            Some("over-100"),
        ),
        (
            "used > total",
            with_hello("used-over-total", used_over_total),
            "invalid_value",
            Some("used-over-total"),
        ),
        (
            "per_core of the wrong length",
            with_hello("wrong-cores", wrong_cores),
            "invalid_value",
            Some("wrong-cores"),
        ),
        (
            "second hello",
            with_hello("second-hello", hello("second-hello")),
            "bad_frame",
            Some("second-hello"),
        ),
        (
            "metrics before hello",
            lines(&[metrics(1)]),
            "bad_frame",
            None,
        ),
        (
            "unknown type",
            lines(&[json!({"type": "gimme", "seq": 1})]),
            "bad_frame",
            None,
        ),
    ];

    let mut peers = Vec::new();
    for (case, payload, code, name) in &cases {
        let mut stream = connect(server.port());
        let peer = local_addr(&stream);
        let mut answers = reader(&stream);
        // The server may close while the rest is still on its way: a reset is fine here.
        if let Err(e) = stream.write_all(payload) {
            assert!(closed_on_write(&e), "{case}: write failed: {e}");
        }
        let (error, before_error) = read_until_error(&mut answers, case);
        assert_eq!(error["code"], *code, "{case}: {error}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case}: {error}"
        );
        let welcomed = before_error.iter().any(|f| f["type"] == "welcome");
        assert_eq!(welcomed, name.is_some(), "{case}: frames {before_error:?}");
        assert!(
            closed_by_server(&mut answers, case),
            "{case}: the connection stayed open after the error frame"
        );
        peers.push((*case, peer, *code));
    }

    // Only the valid sample before the bad frame was counted; the sessions that had said hello
    // are offline.
    for (case, _, _, name) in &cases {
        if let Some(name) = name {
            let entry = wait_agent(&server, name, |a| a.status == Status::Offline);
            let shown = entry.to_json();
            assert_eq!(
                entry.received, 1,
                "{case}: only the valid sample counts: {shown}"
            );
            let reason = entry.offline_reason.as_deref().unwrap_or_default();
            assert!(reason.starts_with("error"), "{case}: {shown}");
        }
    }

    // The steady agent carried on, and by now every warning has been written.
    steady_advanced(&server, before);
    let stderr = server.stderr();
    for (case, peer, code) in &peers {
        let warnings = warnings_naming(&stderr, *peer);
        assert_eq!(
            warnings.len(),
            1,
            "{case}: expected one warning naming peer={peer}, got {warnings:#?}\n\
             --- server stderr ---\n{stderr}"
        );
        assert!(warnings[0].contains(code), "{case}: {}", warnings[0]);
    }
}

/// A 10 MB line without a newline is refused with `bad_frame` ("longer than") as soon as it
/// passes the frame limit, and the server's resident memory grows by less than 4 MiB.
#[test]
fn ten_megabyte_line_is_refused_with_bounded_memory() {
    let server = plaintext_server();
    let (_steady, before) = start_steady(&server);
    let rss_before = server.rss_kib();

    let mut stream = connect(server.port());
    let mut answers = reader(&stream);
    stream
        .write_all(&lines(&[hello("huge")]))
        .unwrap_or_else(|e| panic!("huge: cannot send hello: {e}"));
    let welcome = read_frame(&mut answers, "huge").unwrap_or_default();
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    let mut rss_peak = rss_before;
    let mut refused_on_write = None;
    stream
        .write_all(br#"{"type":"metrics","seq":1,"pad":""#)
        .unwrap_or_else(|e| panic!("huge: cannot start the line: {e}"));
    while sent < HUGE_LINE_BYTES {
        if let Err(e) = stream.write_all(&chunk) {
            // The server refused the line and closed: the expected end of the attack.
            assert!(
                closed_on_write(&e),
                "huge: write failed after {sent} bytes: {e}"
            );
            refused_on_write = Some(e);
            break;
        }
        sent += chunk.len();
        rss_peak = rss_peak.max(server.rss_kib());
    }

    let (error, _) = read_until_error(&mut answers, "huge");
    assert_eq!(error["code"], "bad_frame", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("longer than"), "{error}");
    assert!(
        closed_by_server(&mut answers, "huge"),
        "huge: the connection stayed open after the error frame"
    );
    rss_peak = rss_peak.max(server.rss_kib());
    let growth = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "huge line: {sent} bytes accepted by the socket before the server closed \
         (write error: {refused_on_write:?}); server VmRSS {rss_before} KiB -> peak \
         {rss_peak} KiB (+{growth} KiB)"
    );
    assert!(
        growth < RSS_BUDGET_KIB,
        "server VmRSS grew by {growth} KiB (from {rss_before} KiB) during a 10 MB line"
    );

    steady_advanced(&server, before);
}

/// What one idle connection of the flood saw.
struct Idle {
    stream: TcpStream,
    opened: Instant,
    received: Vec<u8>,
    /// When the first complete line had arrived (the error frame).
    answered: Option<Instant>,
    closed: bool,
}

impl Idle {
    /// Reads whatever has arrived without blocking.
    fn pump(&mut self, now: Instant) {
        let mut buf = [0u8; 1024];
        // Bounded: the server sends one short frame, then closes.
        for _ in 0..16 {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    self.received.extend_from_slice(&buf[..n]);
                    if self.answered.is_none() && self.received.contains(&b'\n') {
                        self.answered = Some(now);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    self.closed = true;
                    break;
                }
                Err(e) => panic!("idle connection: read error: {e}"),
            }
        }
    }

    /// The error frame's code, if one complete frame arrived.
    fn code(&self) -> Option<String> {
        let line = self.received.split(|&b| b == b'\n').next()?;
        let frame: Value = serde_json::from_slice(line).ok()?;
        (frame["type"] == "error").then(|| frame["code"].as_str().unwrap_or_default().into())
    }
}

/// What one round of the idle flood showed.
struct Flood {
    limited: usize,
    timed_out: usize,
    /// The server's highest VmRSS seen during the round, in KiB.
    rss_peak: u64,
    /// The steady agent's seq at the end of the round.
    steady_seq: u64,
}

/// Opens [`FLOOD_CONNECTIONS`] idle connections to `server` and waits until the server has
/// closed every one; checks that each got exactly one `error` frame, `limit` at once or
/// `timeout` after about [`FLOOD_HELLO_TIMEOUT`], in the numbers the per-IP limit implies, and
/// that the steady agent was live at every look.
#[track_caller]
fn idle_flood(server: &Server, round: u32, steady_seq: u64) -> Flood {
    // Open the flood in waves that fit in the server's listen backlog, each time waiting until
    // the server has accepted most of the previous wave, so that no SYN is dropped (a dropped
    // SYN costs the client a 1 s retransmit and would stretch the flood past the hello timeout).
    let started = Instant::now();
    let mut idle: Vec<Idle> = Vec::with_capacity(FLOOD_CONNECTIONS);
    while idle.len() < FLOOD_CONNECTIONS {
        let wave = FLOOD_WAVE.min(FLOOD_CONNECTIONS - idle.len());
        for _ in 0..wave {
            let stream = connect(server.port());
            stream
                .set_nonblocking(true)
                .unwrap_or_else(|e| panic!("cannot make a socket non-blocking: {e}"));
            idle.push(Idle {
                stream,
                opened: Instant::now(),
                received: Vec::new(),
                answered: None,
                closed: false,
            });
        }
        let now = Instant::now();
        for conn in idle.iter_mut().filter(|c| !c.closed) {
            conn.pump(now);
        }
        let accepted = poll_briefly(DEADLINE, || {
            (accept_queue(server.port()) <= FLOOD_QUEUED).then_some(())
        });
        assert!(
            accepted.is_some(),
            "round {round}: the server did not accept {} connections within {DEADLINE:?}",
            idle.len()
        );
    }
    let all_accepted = poll_briefly(DEADLINE, || {
        (accept_queue(server.port()) == 0).then_some(())
    });
    assert!(
        all_accepted.is_some(),
        "round {round}: the server did not accept the last wave within {DEADLINE:?}"
    );
    let connect_phase = started.elapsed();

    let mut rss_peak = 0;
    let mut steady_seq = steady_seq;
    let mut steady_lapses = Vec::new();
    let all_closed = poll(FLOOD_HELLO_TIMEOUT + DEADLINE, || {
        let now = Instant::now();
        for conn in idle.iter_mut().filter(|c| !c.closed) {
            conn.pump(now);
        }
        rss_peak = rss_peak.max(server.rss_kib());
        let snap = server.wait_for(DEADLINE, |_| true);
        if !snap.is_live(STEADY) {
            steady_lapses.push(snap.agents.to_json());
        }
        steady_seq = steady_seq.max(snap.seq(STEADY));
        idle.iter().all(|c| c.closed).then_some(())
    });
    let shed_after = started.elapsed();
    let open = idle.iter().filter(|c| !c.closed).count();
    assert!(
        all_closed.is_some(),
        "round {round}: {open} of {FLOOD_CONNECTIONS} idle connections still open after \
         {shed_after:?}"
    );
    assert!(
        steady_lapses.is_empty(),
        "round {round}: the steady agent was not live during the flood: {steady_lapses:?}"
    );

    // Every connection got exactly one error frame: `limit` at once, or `timeout` about one
    // hello timeout after it was opened.
    let (mut limited, mut timed_out) = (0, 0);
    let soon = FLOOD_HELLO_TIMEOUT.mul_f64(0.9);
    let late = FLOOD_HELLO_TIMEOUT + Duration::from_secs(3);
    for (i, conn) in idle.iter().enumerate() {
        let text = String::from_utf8_lossy(&conn.received);
        assert_eq!(
            conn.received.iter().filter(|&&b| b == b'\n').count(),
            1,
            "round {round}, connection {i}: expected exactly one frame, got {text:?}"
        );
        let took = conn.answered.map(|t| t - conn.opened).unwrap_or_default();
        match conn.code().as_deref() {
            Some("limit") => {
                assert!(
                    took < soon,
                    "round {round}, connection {i}: `limit` after {took:?}"
                );
                limited += 1;
            }
            Some("timeout") => {
                assert!(
                    took >= soon && took < late,
                    "round {round}, connection {i}: `timeout` after {took:?} \
                     (hello timeout {FLOOD_HELLO_TIMEOUT:?})"
                );
                timed_out += 1;
            }
            other => panic!(
                "round {round}, connection {i}: expected an error `limit` or `timeout`, \
                 got {other:?} in {text:?}"
            ),
        }
    }
    eprintln!(
        "idle flood, round {round}: {FLOOD_CONNECTIONS} connections opened in \
         {connect_phase:?}, all closed after {shed_after:?}: {limited} `limit`, \
         {timed_out} `timeout`; server VmRSS peak {rss_peak} KiB"
    );
    // Exact numbers only if no session can have timed out (and freed its slot) before the
    // last connection was accepted.
    assert!(
        connect_phase < soon,
        "round {round}: opening {FLOOD_CONNECTIONS} connections took {connect_phase:?}: too \
         slow to tell the limit from the hello timeout"
    );
    // The steady agent holds one of the per-IP slots.
    let sessions = FLOOD_PER_IP - 1;
    assert_eq!(
        timed_out, sessions,
        "round {round}: sessions held until the hello timeout"
    );
    assert_eq!(
        limited,
        FLOOD_CONNECTIONS - sessions,
        "round {round}: connections refused by the per-IP limit"
    );
    Flood {
        limited,
        timed_out,
        rss_peak,
        steady_seq,
    }
}

/// 1500 idle connections from one IP against a per-IP limit of 1000, three times: those over
/// the limit get `error` `limit` and are closed at once, the rest get `error` `timeout` about
/// 1 s later; the limit refusals are logged a few times, not 1500; memory stays bounded and
/// the last round does not grow it (nothing is kept per connection); a new agent can connect,
/// and the original agent stays live throughout.
#[test]
fn thousands_of_idle_connections_are_shed() {
    let _exclusive = heavy();
    let open_files = raise_open_files_limit(FLOOD_CONNECTIONS as u64 + 1_000);
    assert!(
        open_files >= FLOOD_CONNECTIONS as u64 + 200,
        "open-files limit {open_files} is too low for {FLOOD_CONNECTIONS} connections"
    );
    let hello_timeout = format!("{}ms", FLOOD_HELLO_TIMEOUT.as_millis());
    let per_ip = FLOOD_PER_IP.to_string();
    let server = Server::start_with(
        0,
        &[
            "--hello-timeout",
            &hello_timeout,
            "--max-connections-per-ip",
            &per_ip,
        ],
    );
    let (_steady, before) = start_steady(&server);
    let rss_before = server.rss_kib();

    // Three identical rounds: the allocator keeps some of what the first round freed (RSS does
    // not come back down), but later rounds must reuse it rather than grow.
    let mut rounds = Vec::new();
    let mut rss_after = Vec::new();
    let mut steady_seq = before;
    for round in 1..=FLOOD_ROUNDS {
        let flood = idle_flood(&server, round, steady_seq);
        steady_seq = flood.steady_seq;
        rss_after.push(server.rss_kib());
        rounds.push(flood);
    }
    let rss_peak = rounds.iter().map(|f| f.rss_peak).max().unwrap_or(0);
    eprintln!(
        "idle flood: server VmRSS {rss_before} KiB before, after each round {rss_after:?} KiB, \
         peak {rss_peak} KiB"
    );
    assert!(
        rss_peak < rss_before + FLOOD_RSS_BUDGET_KIB,
        "server VmRSS peaked at {rss_peak} KiB (from {rss_before} KiB) for \
         {FLOOD_PER_IP} idle sessions"
    );
    let last_growth = match rss_after[..] {
        [.., previous, last] => last.saturating_sub(previous),
        _ => 0,
    };
    let per_session_kib = last_growth / (FLOOD_PER_IP as u64 - 1);
    assert!(
        per_session_kib < LEAK_PER_SESSION_KIB,
        "the last round grew the server's VmRSS by {last_growth} KiB ({per_session_kib} KiB per \
         session): memory is kept per connection (after each round: {rss_after:?} KiB)"
    );

    let stderr = server.stderr();
    let refused: usize = rounds.iter().map(|f| f.limited).sum();
    let refusal_lines = stderr
        .lines()
        .filter(|l| l.contains("refusing connection"))
        .count();
    assert!(
        (1..=3).contains(&refusal_lines),
        "{refused} refusals logged in {refusal_lines} lines (rate limit: one per 10 s)"
    );
    let timeout_lines = stderr
        .lines()
        .filter(|l| l.contains("closing connection: timeout"))
        .count();
    assert_eq!(
        timeout_lines,
        rounds.iter().map(|f| f.timed_out).sum::<usize>(),
        "one log line per hello timeout"
    );

    let _late = Agent::start(&server.join(), "after-flood");
    server.wait_for(DEADLINE, |s| s.is_live("after-flood"));
    steady_advanced(&server, steady_seq);
}

/// A client that sends samples as fast as it can but never reads its acks is cut off ("not
/// reading") once its send queue is full; the server's memory stays bounded meanwhile and the
/// steady agent stays live.
#[test]
fn slow_reader_is_cut_off_with_bounded_memory() {
    let _exclusive = heavy();
    // Without the rate limit (it would refuse this sender after its burst): this is about
    // the send queue.
    let server = Server::start_with(
        0,
        &["--auth", "optional", "--max-samples-per-interval", "0"],
    );
    let (_steady, before) = start_steady(&server);
    let rss_before = server.rss_kib();

    let mut stream = connect(server.port());
    let peer = local_addr(&stream);
    // A stalled write means the server stopped reading us: what this test waits for.
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap_or_else(|e| panic!("cannot set a write timeout: {e}"));
    stream
        .write_all(&lines(&[hello("never-reads")]))
        .unwrap_or_else(|e| panic!("never-reads: cannot send hello: {e}"));

    let started = Instant::now();
    let mut next_seq = 1;
    let mut rss_peak = rss_before;
    let mut stopped = None;
    // Bounded by the deadline: 100 samples per write, until the server stops taking them.
    while started.elapsed() < DEADLINE {
        let batch = bare_metrics(next_seq, 100);
        if let Err(e) = stream.write_all(batch.as_bytes()) {
            stopped = Some(e);
            break;
        }
        next_seq += 100;
        if next_seq % 5_000 == 1 {
            rss_peak = rss_peak.max(server.rss_kib());
        }
    }
    rss_peak = rss_peak.max(server.rss_kib());
    let took = started.elapsed();
    let sent = next_seq - 1;
    let Some(stopped) = stopped else {
        panic!("the server kept reading {sent} samples for {took:?} from a peer that never reads");
    };
    assert!(
        closed_on_write(&stopped)
            || matches!(stopped.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "never-reads: unexpected write error: {stopped}"
    );

    let entry = wait_agent(&server, "never-reads", |a| a.status == Status::Offline);
    let growth = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "slow reader: {sent} samples sent in {took:?} before the server stopped reading \
         ({stopped}); server VmRSS {rss_before} KiB -> peak {rss_peak} KiB (+{growth} KiB); {}",
        entry.to_json()
    );
    assert_eq!(
        entry.offline_reason.as_deref(),
        Some("error: peer not reading"),
        "{}",
        entry.to_json()
    );
    let logged = poll(DEADLINE, || {
        let warnings = warnings_naming(&server.stderr(), peer);
        warnings
            .iter()
            .any(|l| l.contains("not reading"))
            .then_some(warnings)
    });
    assert!(
        logged.is_some(),
        "no `not reading` warning naming peer={peer}\n--- server stderr ---\n{}",
        server.stderr()
    );
    assert!(
        growth < SLOW_READER_RSS_BUDGET_KIB,
        "server VmRSS grew by {growth} KiB (from {rss_before} KiB) for a peer that never reads"
    );
    drop(stream);
    steady_advanced(&server, before);
}
