//! Helpers shared by the store's unit tests: throwaway data directories, one agent `a1`, and
//! its samples queued straight into a [`Store`]'s batch.

use std::path::PathBuf;

use super::{Append, Attach, Moves, Op, Rates, Reader, Retention, Store, StoreConfig, Tier};
use crate::protocol::{Hello, Metrics};
use crate::server::series::Bucket;

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "lanmon-store-{name}-{}-{}",
        std::process::id(),
        crate::util::random_id()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("temp dir: {e}"));
    dir
}

pub fn temp_config(name: &str, retention: Retention) -> (PathBuf, StoreConfig) {
    let dir = temp_dir(name);
    let config = StoreConfig {
        data_dir: dir.clone(),
        retention,
    };
    (dir, config)
}

pub fn attach_a1(store: &mut Store, run: &str) {
    attach(store, "a1", run);
}

/// Queues the hello of agent `agent`'s run `run` (from 127.0.0.1).
pub fn attach(store: &mut Store, agent: &str, run: &str) {
    store.batch.push(Op::Attach(Attach {
        hello: Hello {
            agent_id: agent.into(),
            ..hello(run)
        },
        ip: "127.0.0.1".into(),
    }));
}

pub fn hello(run: &str) -> Hello {
    Hello {
        proto: crate::protocol::PROTOCOL_VERSION,
        agent_id: "a1".into(),
        run_id: run.into(),
        name: "one".into(),
        hostname: "one".into(),
        os: "test".into(),
        cores: 2,
        agent_version: "0".into(),
        interval_ms: 1000,
    }
}

/// A sample with CPU `cpu` and two cores at `cpu` and `100 - cpu`.
pub fn metrics(seq: u64, ts_ms: u64, cpu: f32) -> Metrics {
    Metrics {
        seq,
        ts_ms,
        cpu: Some(crate::protocol::Cpu {
            total: cpu,
            per_core: vec![cpu, 100.0 - cpu],
        }),
        memory: None,
        ..Metrics::default()
    }
}

/// a1's one 1-minute point starting at `from`.
#[track_caller]
pub fn minute_of(reader: &Reader, from: u64) -> Bucket {
    let series = reader
        .history("a1", from, from + 60_000, 60_000, from + 60_000)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("agent missing"));
    assert_eq!(series.tier, Tier::Min1);
    assert_eq!(series.points.len(), 1, "{series:?}");
    series.points[0].clone()
}

/// Queues samples `seqs` of a1's run `run`, sample `seq` at `at + seq` seconds with CPU `seq`.
pub fn append(store: &mut Store, run: &str, seqs: std::ops::RangeInclusive<u64>, at: u64) {
    for seq in seqs {
        store.batch.push(Op::Append(Append {
            agent_id: "a1".into(),
            run_id: run.into(),
            metrics: metrics(seq, at + seq * 1000, seq as f32),
            rates: Rates::default(),
        }));
    }
}

/// Commits the batch and moves every logged sample.
#[track_caller]
pub fn commit_all(store: &mut Store) {
    store.commit(Moves::All).unwrap_or_else(|e| panic!("{e}"));
}

/// A filesystem mounted at `mount` of 1000 bytes with `used` of them used (none reserved).
pub fn filesystem(mount: &str, used: u64) -> crate::protocol::Filesystem {
    crate::protocol::Filesystem {
        mount: mount.into(),
        fs_type: "ext4".into(),
        device: format!("/dev/{}", mount.trim_start_matches('/')),
        size_bytes: 1000,
        used_bytes: used,
        avail_bytes: 1000 - used,
        inodes: 0,
        inodes_used: 0,
    }
}

/// Queues sample `seq` of a1's run `run` at `ts_ms` with the whole machine: load `v / 10`,
/// swap `v` bytes used, `/` with `v` of 1000 bytes used and `/data` with `1000 - v`, and
/// every rate `v * 100` per second.
pub fn append_host(store: &mut Store, run: &str, seq: u64, ts_ms: u64, v: u64) {
    let mut m = metrics(seq, ts_ms, 1.0);
    m.load = Some(crate::protocol::Load {
        load1: v as f32 / 10.0,
        load5: 0.0,
        load15: 0.0,
        running: None,
        threads: None,
        procs: None,
    });
    m.swap = Some(crate::protocol::Swap {
        total_bytes: 1 << 20,
        used_bytes: v,
    });
    m.filesystems = Some(vec![filesystem("/", v), filesystem("/data", 1000 - v)]);
    let rate = Some(v as f64 * 100.0);
    store.batch.push(Op::Append(Append {
        agent_id: "a1".into(),
        run_id: run.into(),
        metrics: m,
        rates: Rates {
            net_rx: rate,
            net_tx: rate,
            disk_read: rate,
            disk_write: rate,
        },
    }));
}
