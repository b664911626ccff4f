//! What one hostile agent (a raw client speaking the wire protocol by hand) can make the
//! server hold, answer and store, against the real `server` binary with its durable history
//! (issue 11, items 4 and 5): the history of an agent announcing 4,096 cores is answered
//! within its caps however it is asked for, and slow readers of it cannot pile answers up in
//! memory; samples dated far from the server's clock are stored when they arrive (and
//! counted), a sender far above its interval is refused without losing what was
//! acknowledged, and what one agent sends cannot grow the data directory by more than it
//! sent.
//!
//! Memory is the server's `VmRSS` in /proc; answers are read with `support::http`; disk use is
//! the size of the files in the data directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use lanmon::snapshot::AgentView;
use lanmon::util::now_ms;
use serde_json::{Value, json};

use crate::support::http::{History, get};
use crate::support::{DEADLINE, LOOPBACK, Server, SnapshotExt, TempDir, ToJson, poll};

/// Cores announced by the wide agent: the protocol's limit.
const WIDE_CORES: usize = 4096;

/// Samples the wide agent sends, one millisecond apart.
const WIDE_SAMPLES: u64 = 400;

/// Largest history answer allowed: the cap is 50,000 values of about 40 bytes of JSON.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Slow history clients in [`slow_history_readers_hold_bounded_memory`].
const SLOW_CLIENTS: usize = 8;

/// Most the server's memory may grow while the slow clients wait: a few answers of at most
/// [`MAX_ANSWER_BYTES`] (at most 4 at a time), and allocator slack. The unbounded answers
/// were about 60 MB each here.
const SLOW_RSS_BUDGET_KIB: u64 = 64 * 1024;

/// How long the slow clients read nothing.
const SLOW_PAUSE: Duration = Duration::from_secs(3);

// ---- A raw agent ----------------------------------------------------------------------------

/// A hello of agent `id` (also its name) announcing `cores` cores every `interval_ms`.
fn hello(id: &str, cores: usize, interval_ms: u64) -> Value {
    json!({
        "type": "hello", "proto": 1, "agent_id": id, "run_id": format!("run-{id}"),
        "name": id, "hostname": "limits-test", "os": "test", "cores": cores,
        "agent_version": "0.0.0-test", "interval_ms": interval_ms
    })
}

/// A metrics line (with its newline) numbered `seq`, taken at `ts_ms`, with `cores` per-core
/// values.
fn metrics_line(seq: u64, ts_ms: u64, cores: usize) -> String {
    let per_core = vec!["12.5"; cores].join(",");
    format!(
        "{{\"type\":\"metrics\",\"seq\":{seq},\"ts_ms\":{ts_ms},\
         \"cpu\":{{\"total\":12.5,\"per_core\":[{per_core}]}}}}\n"
    )
}

/// A connection speaking the wire protocol by hand.
struct RawAgent {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl RawAgent {
    /// Connects to the server on `port`, says `hello` and reads the `welcome`.
    #[track_caller]
    fn connect(port: u16, hello: &Value) -> RawAgent {
        let stream = TcpStream::connect((LOOPBACK, port))
            .unwrap_or_else(|e| panic!("cannot connect to {LOOPBACK}:{port}: {e}"));
        stream
            .set_read_timeout(Some(DEADLINE))
            .and_then(|()| stream.set_write_timeout(Some(DEADLINE)))
            .unwrap_or_else(|e| panic!("cannot set timeouts: {e}"));
        let reader = BufReader::new(
            stream
                .try_clone()
                .unwrap_or_else(|e| panic!("cannot clone the stream: {e}")),
        );
        let mut agent = RawAgent { stream, reader };
        agent.send(&format!("{hello}\n"));
        let welcome = agent.frame();
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        agent
    }

    #[track_caller]
    fn send(&mut self, text: &str) {
        self.stream
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("cannot send: {e}"));
    }

    /// The next frame from the server.
    #[track_caller]
    fn frame(&mut self) -> Value {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("no frame from the server: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a frame: {line:?} ({e})"))
    }

    /// Sends samples `1..=count` as a well-behaved agent does: at most 32 unacknowledged.
    #[track_caller]
    fn send_acked(&mut self, count: u64, mut line: impl FnMut(u64) -> String) {
        let mut acked = 0;
        for seq in 1..=count {
            self.send(&line(seq));
            while seq - acked >= 32 || (seq == count && acked < count) {
                let f = self.frame();
                assert_eq!(f["type"], "ack", "{f}");
                acked = f["seq"].as_u64().unwrap_or(0);
            }
        }
    }
}

// ---- Helpers ----------------------------------------------------------------------------------

/// A server with the durable history in `dir` and HTTP on an ephemeral port, taking the raw
/// (protocol 1) agents of these tests beside authenticated ones (`--auth optional`; HTTP
/// still needs the login, which `support::http` sends).
#[track_caller]
fn server(dir: &TempDir, extra: &[&str]) -> Server {
    let data = dir.arg();
    let mut args = vec![
        "--http",
        "127.0.0.1:0",
        "--data-dir",
        data.as_str(),
        "--auth",
        "optional",
    ];
    args.extend_from_slice(extra);
    let server = Server::start_with(0, &args);
    server.wait_for(DEADLINE, |s| s.server.http.is_some());
    server
}

/// The agent named `name` in the latest snapshot, once `pred` holds for it.
#[track_caller]
fn wait_agent(server: &Server, name: &str, pred: impl Fn(&AgentView) -> bool) -> AgentView {
    let snap = server.wait_for(DEADLINE, |s| s.find(name).is_some_and(&pred));
    snap.agent(name).clone()
}

/// Starts an agent `wide` announcing [`WIDE_CORES`] cores that sends [`WIDE_SAMPLES`]
/// samples, one millisecond apart from a minute ago; returns the time of the first.
#[track_caller]
fn wide_agent(server: &Server) -> u64 {
    let base = now_ms() - 60_000;
    let mut agent = RawAgent::connect(server.port(), &hello("wide", WIDE_CORES, 1000));
    agent.send_acked(WIDE_SAMPLES, |seq| {
        metrics_line(seq, base + seq, WIDE_CORES)
    });
    wait_agent(server, "wide", |a| a.stored_seq == Some(WIDE_SAMPLES));
    base
}

/// Checks that a history answer keeps the caps: points × (1 + cores) within 50,000 values,
/// per-core series for at most 256 cores, and the coarser step named.
#[track_caller]
fn assert_within_caps(h: &History, body: &Value) {
    let cells: usize = h.points.iter().map(|p| 1 + p.cores.len()).sum();
    assert!(cells <= 50_000, "{cells} values in one answer");
    assert!(h.points.iter().all(|p| p.cores.len() <= 256));
    assert_eq!(
        h.points.iter().map(|p| p.n).sum::<u64>(),
        WIDE_SAMPLES,
        "every sample is in some point"
    );
    assert_eq!(body["requested_step"], 1, "the coarser step is named");
    assert!(body["step"].as_u64().unwrap_or(0) > 1, "{}", body["step"]);
    assert_eq!(
        body["cores_omitted"].as_u64(),
        Some((WIDE_CORES - 256) as u64)
    );
}

// ---- Item 4: the history API ------------------------------------------------------------------

/// Proves that the history of an agent announcing 4,096 cores, asked for at one point per
/// sample, is answered within the caps: at most 50,000 values (a coarser step, named in the
/// answer), per-core series for 256 cores, a few MB (it was about 60 MB for 400 samples, and
/// 718 MB for 5,000).
#[test]
fn a_wide_agents_history_is_answered_within_the_caps() {
    let dir = TempDir::new("limits-wide");
    let server = server(&dir, &[]);
    let base = wide_agent(&server);
    let path = format!(
        "/api/agents/wide/history?from={base}&to={}&step=1",
        base + WIDE_SAMPLES + 1
    );
    let r = get(server.http_addr(), &path);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.len() <= MAX_ANSWER_BYTES,
        "{} bytes in one history answer",
        r.body.len()
    );
    assert_within_caps(&r.parse(), &r.json());
    let bare = get(server.http_addr(), &format!("{path}&cores=0"));
    let h: History = bare.parse();
    assert!(h.points.iter().all(|p| p.cores.is_empty()), "cores=0");
    assert_eq!(
        h.points.len() as u64,
        WIDE_SAMPLES,
        "without cores: as asked"
    );
}

/// Proves that clients that ask for a wide agent's history and then do not read cannot pile
/// answers up in the server's memory (at most 4 are worked on and held at once), and that each
/// still gets its whole answer once it reads.
#[test]
fn slow_history_readers_hold_bounded_memory() {
    let dir = TempDir::new("limits-slow");
    let server = server(&dir, &[]);
    let base = wide_agent(&server);
    let path = format!(
        "/api/agents/wide/history?from={base}&to={}&step=1",
        base + WIDE_SAMPLES + 1
    );
    let before = server.rss_kib();
    let mut peak = before;
    let login = server.login();
    let clients: Vec<TcpStream> = (0..SLOW_CLIENTS)
        .map(|_| {
            let mut s = TcpStream::connect(server.http_addr())
                .unwrap_or_else(|e| panic!("cannot connect: {e}"));
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {login}\r\n\
                 Connection: close\r\n\r\n",
                server.http_addr()
            );
            s.write_all(request.as_bytes())
                .unwrap_or_else(|e| panic!("cannot send: {e}"));
            s
        })
        .collect();
    let until = Instant::now() + SLOW_PAUSE;
    while Instant::now() < until {
        peak = peak.max(server.rss_kib());
        std::thread::sleep(Duration::from_millis(20));
    }
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                s.set_read_timeout(Some(DEADLINE * 4)).ok();
                let mut all = Vec::new();
                let _ = s.read_to_end(&mut all);
                all
            })
        })
        .collect();
    let done = poll(DEADLINE * 4, || {
        peak = peak.max(server.rss_kib());
        readers.iter().all(|r| r.is_finished()).then_some(())
    });
    assert!(done.is_some(), "the slow clients did not get their answers");
    let grew = peak.saturating_sub(before);
    assert!(
        grew <= SLOW_RSS_BUDGET_KIB,
        "the server grew by {grew} KiB while {SLOW_CLIENTS} clients did not read \
         ({SLOW_RSS_BUDGET_KIB} KiB allowed)"
    );
    for r in readers {
        let all = r
            .join()
            .unwrap_or_else(|_| panic!("a reader thread panicked"));
        let text = String::from_utf8_lossy(&all);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no answer: {}", text.len()));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let body: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("a whole JSON answer ({} bytes): {e}", body.len()));
        assert_within_caps(
            &serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}")),
            &body,
        );
    }
    let snap = server.wait_for(DEADLINE, |s| s.find("wide").is_some());
    assert!(snap.find("wide").is_some(), "{}", snap.to_json());
}

// ---- Item 5: what one agent can make the server store -----------------------------------------

/// Size of every file in `dir` (the database, its WAL and shared-memory files), in bytes.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Proves that samples dated far from the server's clock (ten years ahead, 2^64-1, 1970) are
/// stored at the time they arrive, where retention reaches them, and counted in the agent's
/// `retimed`; a sample within the window keeps its own time.
#[test]
fn samples_far_from_the_servers_clock_are_stored_when_they_arrive() {
    let dir = TempDir::new("limits-clock");
    let server = server(&dir, &[]);
    let now = now_ms();
    let ten_years = 10 * 365 * 24 * 3_600_000;
    let stamps = [now + ten_years, u64::MAX, 0, now - 30_000];
    let mut agent = RawAgent::connect(server.port(), &hello("skewed", 2, 1000));
    let line = |seq: u64| metrics_line(seq, stamps[seq as usize - 1], 2);
    agent.send_acked(stamps.len() as u64, line);
    let a = wait_agent(&server, "skewed", |a| a.stored_seq == Some(4));
    assert_eq!(a.retimed, 3, "{}", a.to_json());
    let around_now = format!(
        "/api/agents/skewed/history?from={}&to={}&step=1000",
        now - 60_000,
        now_ms() + 60_000
    );
    let h: History = get(server.http_addr(), &around_now).parse();
    assert_eq!(
        h.samples(),
        4,
        "every sample where retention reaches it: {h:?}"
    );
    let future = format!(
        "/api/agents/skewed/history?from={}&to={}&step=3600000",
        now + ten_years - 3_600_000,
        now + ten_years + 3_600_000
    );
    let h: History = get(server.http_addr(), &future).parse();
    assert_eq!(h.samples(), 0, "nothing ten years ahead: {h:?}");
}

/// Proves that an agent sending far above its announced interval is refused with `limit`
/// once its burst is spent, that nothing beyond what was acknowledged is claimed (every
/// acknowledged sample is on disk, the refused one is not acknowledged), and that
/// reconnecting at once does not buy a new burst.
#[test]
fn a_sender_far_above_its_interval_is_refused_and_loses_nothing() {
    let dir = TempDir::new("limits-rate");
    let burst = 50;
    let server = server(&dir, &["--sample-burst", "50"]);
    let mut agent = RawAgent::connect(server.port(), &hello("eager", 2, 10_000));
    let now = now_ms();
    let all: String = (1..=200).map(|seq| metrics_line(seq, now, 2)).collect();
    agent.send(&all);
    let mut acked = 0;
    let refusal = loop {
        let f = agent.frame();
        match f["type"].as_str() {
            Some("ack") => acked = f["seq"].as_u64().unwrap_or(0),
            Some("error") => break f,
            _ => panic!("unexpected frame {f}"),
        }
    };
    assert_eq!(refusal["code"], "limit", "{refusal}");
    assert!(
        refusal["message"]
            .as_str()
            .is_some_and(|m| m.contains("faster than")),
        "{refusal}"
    );
    assert!(acked <= burst, "acknowledged {acked} of a burst of {burst}");
    // The samples before the refused one are stored; the refused one and the rest are not.
    let a = wait_agent(&server, "eager", |a| {
        a.status == lanmon::snapshot::Status::Offline && a.stored_seq == Some(burst)
    });
    let stored = a.stored_seq.unwrap_or(0);
    assert!(stored >= acked, "every acknowledged sample is on disk");
    let path = format!(
        "/api/agents/eager/history?from={}&to={}&step=1&cores=0",
        now - 1,
        now + 1
    );
    let h: History = get(server.http_addr(), &path).parse();
    assert_eq!(
        h.samples(),
        stored,
        "the history holds exactly what is stored"
    );
    // Back at once, resuming where the server is: the bucket is as empty as it was left.
    let mut again = RawAgent::connect(server.port(), &hello("eager", 2, 10_000));
    let more: String = (stored + 1..=stored + 10)
        .map(|seq| metrics_line(seq, now, 2))
        .collect();
    again.send(&more);
    let f = loop {
        let f = again.frame();
        if f["type"] != "ack" {
            break f;
        }
    };
    assert_eq!(f["code"], "limit", "no new burst after a reconnect: {f}");
}

/// Proves that what one agent announcing 4,096 cores at a 100 ms interval sends, dated an
/// hour apart each into the future, does not grow the data directory by more than it sent
/// (per-core history for 256 cores, re-timed samples share their rollup rows): 41 MB sent
/// used to become 826 MB on disk.
#[test]
fn a_hostile_agent_cannot_make_the_disk_grow_faster_than_it_sends() {
    let dir = TempDir::new("limits-disk");
    let server = server(&dir, &[]);
    let start = dir_bytes(dir.path());
    let now = now_ms();
    let samples = 600;
    let mut agent = RawAgent::connect(server.port(), &hello("filler", WIDE_CORES, 100));
    let mut sent = 0u64;
    agent.send_acked(samples, |seq| {
        let line = metrics_line(seq, now + seq * 3_600_000, WIDE_CORES);
        sent += line.len() as u64;
        line
    });
    let a = wait_agent(&server, "filler", |a| a.stored_seq == Some(samples));
    // Everything moved into raw and the rollups (after at most 10 s): the 1 h tier over
    // every hour the samples claim holds them all.
    poll(DEADLINE, || {
        let h: History = get(
            server.http_addr(),
            &format!(
                "/api/agents/filler/history?from={}&to={}&step=3600000&cores=0",
                now - 3_600_000,
                now + (samples + 2) * 3_600_000
            ),
        )
        .parse();
        (h.source == "1h" && h.samples() == samples).then_some(())
    })
    .unwrap_or_else(|| panic!("the rollups did not catch up: {}", a.to_json()));
    let grew = dir_bytes(dir.path()).saturating_sub(start);
    assert!(
        grew <= sent,
        "{sent} bytes sent grew the data directory by {grew} bytes"
    );
}
