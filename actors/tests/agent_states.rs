//! The agent's connection state machine (`Connecting → Connected → Backoff`), driven against a
//! scripted fake server on 127.0.0.1 with an injected `MetricsSource`: what it sends, when it
//! reconnects, what it replays. Every wait has a deadline. The agent runs `--auth off`
//! (plaintext protocol 1) so the fake server can script frames by hand.

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use lanmon::agent::{AgentConfig, Target};
use lanmon::codec::ServerCodec;
use lanmon::metrics::{HostInfo, MetricsSource, Reading};
use lanmon::protocol::{Ack, AgentFrame, Cpu, ErrorCode, ErrorFrame, Memory, ServerFrame, Welcome};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(10);
const INTERVAL: Duration = Duration::from_millis(50);

/// Exact, made-up readings: the test knows every value the agent sends.
struct FakeSource;

impl MetricsSource for FakeSource {
    fn host(&self) -> HostInfo {
        HostInfo {
            hostname: "fake-host".into(),
            os: "FakeOS 1".into(),
            cores: 2,
        }
    }

    fn read(&mut self) -> Reading {
        Reading {
            cpu: Some(Cpu {
                total: 25.0,
                per_core: vec![20.0, 30.0],
            }),
            memory: Some(Memory {
                total: 1000,
                used: 400,
                free: 100,
                available: Some(600),
            }),
            ..Reading::default()
        }
    }
}

type Conn = Framed<TcpStream, ServerCodec>;

fn start_agent(
    port: u16,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<lanmon::Result<()>>,
) {
    let config = AgentConfig {
        target: Target::Host {
            host: "127.0.0.1".into(),
            port,
        },
        id: "agent-under-test".into(),
        name: "under-test".into(),
        interval: INTERVAL,
        buffer: 1000,
        // The fake server speaks plaintext protocol 1: the state machine is the same over the
        // encrypted stream (tested end to end in integration-tests' trust.rs).
        auth: lanmon::config::AuthMode::Off,
        state_dir: None,
        join: None,
        collect: Default::default(),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(lanmon::agent::run(config, FakeSource, shutdown.clone()));
    (shutdown, task)
}

async fn accept(listener: &TcpListener) -> Conn {
    let (stream, _) = timeout(DEADLINE, listener.accept())
        .await
        .expect("agent did not connect in time")
        .expect("accept failed");
    Framed::new(stream, ServerCodec::new())
}

async fn next(conn: &mut Conn) -> Option<AgentFrame> {
    match timeout(DEADLINE, conn.next()).await {
        Ok(Some(Ok(frame))) => Some(frame),
        Ok(Some(Err(e))) => panic!("agent sent a bad frame: {e}"),
        Ok(None) => None,
        Err(_) => panic!("agent sent nothing within {DEADLINE:?}"),
    }
}

/// Reads the hello and answers welcome (with `last_seq`); returns the hello's run id.
async fn handshake(conn: &mut Conn, last_seq: Option<u64>) -> String {
    let Some(AgentFrame::Hello(hello)) = next(conn).await else {
        panic!("first frame was not hello");
    };
    assert_eq!((hello.cores, hello.name.as_str()), (2, "under-test"));
    let welcome = Welcome {
        proto: 1,
        server_id: "fake".into(),
        server_name: "fake".into(),
        server_version: "0".into(),
        last_seq,
        ts_ms: None,
    };
    conn.send(ServerFrame::Welcome(welcome))
        .await
        .expect("send welcome");
    hello.run_id
}

/// Reads metrics frames until `n` were received; acks each if `ack`.
async fn metrics(conn: &mut Conn, n: usize, ack: bool) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        match next(conn).await {
            Some(AgentFrame::Metrics(m)) => {
                assert_eq!(m.cpu.as_ref().map(|c| c.total), Some(25.0));
                seqs.push(m.seq);
                if ack {
                    conn.send(ServerFrame::Ack(Ack { seq: m.seq }))
                        .await
                        .expect("send ack");
                }
            }
            other => panic!("expected metrics, got {other:?}"),
        }
    }
    seqs
}

/// Connected: hello first, then samples numbered 1, 2, 3… On shutdown the agent says bye and
/// `run` returns Ok.
#[tokio::test]
async fn streams_numbered_samples_and_says_bye() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (shutdown, task) = start_agent(listener.local_addr().expect("addr").port());
    let mut conn = accept(&listener).await;
    handshake(&mut conn, None).await;
    assert_eq!(metrics(&mut conn, 5, true).await, [1, 2, 3, 4, 5]);
    shutdown.cancel();
    loop {
        match next(&mut conn).await {
            Some(AgentFrame::Bye(_)) => break,
            Some(AgentFrame::Metrics(_)) => continue,
            other => panic!("expected bye, got {other:?}"),
        }
    }
    let result = timeout(DEADLINE, task).await.expect("agent did not stop");
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
}

/// Connected → Backoff → Connecting → Connected: after the connection drops, the agent comes
/// back with the same run id and sends exactly what was not acknowledged, in order — and
/// nothing the server said it already holds (`welcome.last_seq`).
#[tokio::test]
async fn reconnects_and_replays_only_unacknowledged_samples() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (shutdown, _task) = start_agent(listener.local_addr().expect("addr").port());

    let mut conn = accept(&listener).await;
    let run = handshake(&mut conn, None).await;
    let first = metrics(&mut conn, 3, true).await;
    // Receive two more without acknowledging them, then drop the connection.
    let unacked = metrics(&mut conn, 2, false).await;
    assert_eq!([first, unacked.clone()].concat(), [1, 2, 3, 4, 5]);
    drop(conn);

    let mut conn = accept(&listener).await;
    // Pretend the server did store seq 4 before the drop: only 5 onwards may come again.
    assert_eq!(
        handshake(&mut conn, Some(4)).await,
        run,
        "same run after reconnect"
    );
    let again = metrics(&mut conn, 4, true).await;
    assert_eq!(
        again[0], 5,
        "replay starts after welcome.last_seq: {again:?}"
    );
    assert!(
        again.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, no holes: {again:?}"
    );
    shutdown.cancel();
}

/// A server that accepts but never acknowledges is given up after a few intervals (a
/// half-open connection must not stall the agent): it reconnects by itself.
#[tokio::test]
async fn silent_server_is_dropped_and_the_agent_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (shutdown, _task) = start_agent(listener.local_addr().expect("addr").port());
    let mut silent = accept(&listener).await;
    handshake(&mut silent, None).await;
    // Read (so the agent's writes succeed) but never ack, and keep the socket open.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = silent.next().await {} });
    let mut conn = accept(&listener).await;
    handshake(&mut conn, None).await;
    let seqs = metrics(&mut conn, 3, true).await;
    assert_eq!(
        seqs[0], 1,
        "nothing was acknowledged, so everything is sent again: {seqs:?}"
    );
    reader.abort();
    shutdown.cancel();
}

/// Nothing listening: the agent keeps trying (Backoff → Connecting) and connects as soon as a
/// server appears on the port, with its first sample intact.
#[tokio::test]
async fn keeps_trying_until_a_server_appears() {
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        probe.local_addr().expect("addr").port()
    };
    let (shutdown, task) = start_agent(port);
    // The outage being simulated: 300 ms with nothing on the port (the first retries come
    // after 0.25–0.5 s and 0.5–1 s, so at least one attempt fails). Not a synchronisation.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !task.is_finished(),
        "the agent must not exit while the server is away"
    );
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    let mut conn = accept(&listener).await;
    handshake(&mut conn, None).await;
    assert_eq!(metrics(&mut conn, 1, true).await, [1]);
    shutdown.cancel();
}

/// A server that welcomes the agent and then refuses it at once (here `replaced`) gets ever
/// longer pauses between attempts: the backoff is not reset by a `welcome`, only by an ack.
#[tokio::test]
async fn a_server_that_welcomes_then_refuses_gets_ever_longer_pauses() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (shutdown, _task) = start_agent(listener.local_addr().expect("addr").port());
    let mut accepted = Vec::new();
    for _ in 0..4 {
        let mut conn = accept(&listener).await;
        accepted.push(std::time::Instant::now());
        handshake(&mut conn, None).await;
        let refusal = ErrorFrame {
            code: ErrorCode::Replaced,
            message: "a newer connection with the same agent id took over".into(),
        };
        conn.send(ServerFrame::Error(refusal))
            .await
            .expect("send error");
    }
    // Attempt n waits between half and all of 0.5 s × 2ⁿ: the pause before the fourth
    // connection is at least 1 s (it was at most 0.5 s when every welcome reset the backoff).
    let pauses: Vec<Duration> = accepted.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        pauses[2] >= Duration::from_secs(1),
        "pauses between attempts: {pauses:?}"
    );
    shutdown.cancel();
}

/// A `welcome` claiming more of the run than the agent ever sampled (seq 2⁶⁴−1, as a client
/// that sent samples in the agent's name can cause) does not lock the agent out: it comes
/// back with a new run id, seqs from 1, and the samples nobody acknowledged carried over
/// first, with their original timestamps.
#[tokio::test]
async fn a_claim_beyond_the_run_starts_a_new_run_that_keeps_every_sample() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (shutdown, _task) = start_agent(listener.local_addr().expect("addr").port());

    let mut conn = accept(&listener).await;
    let old_run = handshake(&mut conn, None).await;
    // Three samples that nobody acknowledges; remember their timestamps.
    let mut unacked = Vec::new();
    while unacked.len() < 3 {
        match next(&mut conn).await {
            Some(AgentFrame::Metrics(m)) => unacked.push(m.ts_ms),
            other => panic!("expected metrics, got {other:?}"),
        }
    }
    drop(conn);

    let mut conn = accept(&listener).await;
    assert_eq!(handshake(&mut conn, Some(u64::MAX)).await, old_run);
    // The agent gives up on that connection and comes back with a new run.
    let mut conn = loop {
        let mut next_conn = accept(&listener).await;
        let Some(AgentFrame::Hello(hello)) = next(&mut next_conn).await else {
            continue; // the claimed connection's end, or noise
        };
        assert_ne!(
            hello.run_id, old_run,
            "the agent came back with the refuted run"
        );
        let welcome = Welcome {
            proto: 1,
            server_id: "fake".into(),
            server_name: "fake".into(),
            server_version: "0".into(),
            last_seq: None,
            ts_ms: None,
        };
        next_conn
            .send(ServerFrame::Welcome(welcome))
            .await
            .expect("send welcome");
        break next_conn;
    };
    let mut seqs = Vec::new();
    let mut stamps = Vec::new();
    while seqs.len() < 5 {
        match next(&mut conn).await {
            Some(AgentFrame::Metrics(m)) => {
                seqs.push(m.seq);
                stamps.push(m.ts_ms);
                conn.send(ServerFrame::Ack(Ack { seq: m.seq }))
                    .await
                    .expect("send ack");
            }
            other => panic!("expected metrics, got {other:?}"),
        }
    }
    assert_eq!(seqs, [1, 2, 3, 4, 5], "the new run counts from 1, in order");
    assert_eq!(
        stamps[..3],
        unacked[..],
        "the unacknowledged samples came first"
    );
    shutdown.cancel();
}

/// A server that sends its clock in `welcome` gets it back, with the agent's receive time and
/// round trip, on the first frame of the connection only; after a reconnect the new
/// `welcome`'s clock rides on the first frame again (a replayed sample included).
#[tokio::test]
async fn echoes_the_welcome_clock_once_per_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (shutdown, _task) = start_agent(listener.local_addr().expect("addr").port());
    for (server_ts, ack) in [(1_000_u64, false), (2_000, true)] {
        let mut conn = accept(&listener).await;
        let Some(AgentFrame::Hello(_)) = next(&mut conn).await else {
            panic!("first frame was not hello");
        };
        let before = lanmon::util::now_ms();
        let welcome = Welcome {
            proto: 1,
            server_id: "fake".into(),
            server_name: "fake".into(),
            server_version: "0".into(),
            last_seq: None,
            ts_ms: Some(server_ts),
        };
        conn.send(ServerFrame::Welcome(welcome))
            .await
            .expect("send welcome");
        let mut clocks = Vec::new();
        for _ in 0..3 {
            match next(&mut conn).await {
                Some(AgentFrame::Metrics(m)) => {
                    if ack {
                        conn.send(ServerFrame::Ack(Ack { seq: m.seq }))
                            .await
                            .expect("send ack");
                    }
                    clocks.push(m.clock)
                }
                other => panic!("expected metrics, got {other:?}"),
            }
        }
        let first = clocks[0]
            .as_ref()
            .expect("the first frame carries the clock");
        assert_eq!(first.welcome_ts_ms, server_ts);
        assert!(first.received_ts_ms >= before, "{first:?}");
        assert!(first.rtt_ms < DEADLINE.as_millis() as u64);
        assert!(clocks[1..].iter().all(Option::is_none), "{clocks:?}");
        drop(conn);
    }
    shutdown.cancel();
}
