//! The Store actor alone, on a temporary data directory, with a probe subscribed in the
//! Registry's place: what it commits, it reports. (The store's pure logic — schema, tiers,
//! rollups, repair, retention — has its own unit tests; this is the actor's message flow.)

// Test helpers: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use lanmon::protocol::{Cpu, Hello, Metrics, PROTOCOL_VERSION};
use lanmon::server::store::{
    Append, Attach, Committed, DurableSeq, Flush, Retention, Store, StoreConfig, Subscribe,
};

const DEADLINE: Duration = Duration::from_secs(10);

/// Stands in for the Registry: remembers every `Committed`.
#[derive(Default)]
struct Probe {
    heard: Vec<DurableSeq>,
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<Committed> for Probe {
    type Result = ();

    fn handle(&mut self, msg: Committed, _: &mut Self::Context) {
        self.heard.extend(msg.runs);
    }
}

/// Asks the probe whether it heard that `(agent a, run)` is on disk through `seq`. Answered
/// after every `Committed` sent to the probe before this question.
#[derive(Message)]
#[rtype(result = "bool")]
struct Heard {
    run: &'static str,
    seq: u64,
}

impl Handler<Heard> for Probe {
    type Result = bool;

    fn handle(&mut self, q: Heard, _: &mut Self::Context) -> bool {
        self.heard
            .iter()
            .any(|d| d.agent_id == "a" && d.run_id == q.run && d.seq == q.seq)
    }
}

/// A fresh data directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let unique = format!("lanmon-store-actor-{name}-{}", std::process::id());
        let dir = std::env::temp_dir().join(unique);
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn hello(run: &str) -> Hello {
    Hello {
        proto: PROTOCOL_VERSION,
        agent_id: "a".into(),
        run_id: run.into(),
        name: "a".into(),
        hostname: "host".into(),
        os: "test".into(),
        cores: 1,
        agent_version: "0".into(),
        interval_ms: 1000,
    }
}

fn append(run: &str, seq: u64) -> Append {
    Append {
        agent_id: "a".into(),
        run_id: run.into(),
        metrics: Metrics {
            seq,
            ts_ms: 1_700_000_000_000 + 1_000 * seq,
            cpu: Some(Cpu {
                total: 10.0,
                per_core: vec![10.0],
            }),
            memory: None,
            ..Metrics::default()
        },
        rates: lanmon::server::store::Rates::default(),
    }
}

/// Waits until the probe has heard that `run` is on disk through `seq`.
async fn committed_through(probe: &Addr<Probe>, run: &'static str, seq: u64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !probe.send(Heard { run, seq }).await.expect("probe") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no commit of {run} through {seq} within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Proves that the subscriber hears of every commit with the highest seq on disk per run, and
/// that `Flush` commits at once and says it worked.
#[actix_rt::test]
async fn the_subscriber_hears_of_each_commit_and_flush_commits_at_once() {
    let dir = TempDir::new("commit");
    let config = StoreConfig {
        data_dir: dir.0.clone(),
        retention: Retention::default(),
    };
    let (store, restored) = Store::open(&config, 10).expect("store opens");
    assert!(restored.is_empty(), "a new data directory");
    let store = store.start();
    let probe = Probe::default().start();
    let committed = probe.clone().recipient();
    store
        .send(Subscribe { committed })
        .await
        .expect("subscribed");

    store.do_send(Attach {
        hello: hello("r1"),
        ip: "127.0.0.1".into(),
    });
    store.do_send(append("r1", 1));
    store.do_send(append("r1", 2));
    committed_through(&probe, "r1", 2).await;

    // Flush commits before it answers: the commit is reported by then, without waiting.
    store.do_send(append("r1", 3));
    assert_eq!(store.send(Flush).await.ok(), Some(true), "flush worked");
    let heard = probe.send(Heard { run: "r1", seq: 3 }).await;
    assert_eq!(heard.ok(), Some(true), "commit of 3 reported by the flush");
    assert_eq!(store.send(Flush).await.ok(), Some(true), "nothing left");
}
