//! The in-process layer: one server and several agents in this test process, on one actix
//! System, over real loopback TCP (see `support::inproc`). Agents read fake sources of exact
//! values, so what the server shows is checked to the bit; agents are stopped and killed
//! without processes, and the server restarts in place.

use lanmon::protocol::{Cpu, Memory};
use lanmon::snapshot::{Status, Summary};

use crate::support::inproc::{
    AGENT_INTERVAL, FakeSource, MANUAL_INTERVAL, agent_id, end, restart_server, server_config,
    start_agent, start_manual_agent, start_server, wait_for,
};
use crate::support::{DEADLINE, SnapshotExt, ToJson};

/// A source for agent number `i` with values of its own: `i + 2` cores, the CPU total at
/// `10.5 + i` % with core `c` at `c + 0.25` %, and `i + 1` GiB of 16 GiB used.
fn source(i: u32) -> FakeSource {
    const GIB: u64 = 1 << 30;
    let cores = i + 2;
    let used = u64::from(i + 1) * GIB;
    FakeSource::new(
        &format!("fake-host-{i}"),
        lanmon::metrics::Reading {
            cpu: Some(Cpu {
                total: 10.5 + i as f32,
                per_core: (0..cores).map(|c| c as f32 + 0.25).collect(),
            }),
            memory: Some(Memory {
                total: 16 * GIB,
                used,
                free: GIB / 2,
                available: Some(16 * GIB - used),
            }),
            ..lanmon::metrics::Reading::default()
        },
    )
}

/// Four agents go live, each with exactly the host facts and readings its source gave, its
/// id, source IP and interval, and every sample counted once.
#[actix_rt::test]
async fn agents_go_live_with_the_exact_values_they_read() {
    let (server, addr) = start_server(server_config()).await;
    let names = ["exact-1", "exact-2", "exact-3", "exact-4"];
    let sources: Vec<FakeSource> = (0..4).map(source).collect();
    let agents: Vec<_> = names
        .iter()
        .zip(&sources)
        .map(|(name, source)| start_agent(&server, name, source.clone()))
        .collect();

    let snap = wait_for(&server, DEADLINE, |s| {
        names.iter().all(|n| s.is_live(n) && s.seq(n) >= 3)
    })
    .await;
    let summary = Summary {
        agents: 4,
        live: 4,
        stale: 0,
        offline: 0,
    };
    assert_eq!(snap.summary, summary, "{}", snap.to_json());
    assert_eq!(snap.names(), names, "listed by name");
    assert_eq!(snap.server.listen, addr.to_string(), "{}", snap.to_json());
    assert_eq!(snap.server.name, "inproc", "{}", snap.to_json());
    let interval_ms = u64::try_from(AGENT_INTERVAL.as_millis()).unwrap_or(u64::MAX);
    for (name, source) in names.iter().zip(&sources) {
        let a = snap.agent(name);
        let shown = a.to_json();
        assert_eq!(a.status, Status::Live, "{shown}");
        assert_eq!(a.id, agent_id(name), "{shown}");
        assert_eq!(a.ip, "127.0.0.1", "{shown}");
        assert_eq!(a.hostname, source.host.hostname, "{shown}");
        assert_eq!(a.os, source.host.os, "{shown}");
        assert_eq!(a.cores, source.host.cores, "{shown}");
        assert_eq!(a.agent_version, lanmon::VERSION, "{shown}");
        assert_eq!(a.interval_ms, interval_ms, "{shown}");
        assert_eq!(a.cpu, source.reading.cpu, "{shown}");
        assert_eq!(a.memory, source.reading.memory, "{shown}");
        assert_eq!(a.offline_reason, None, "{shown}");
        assert_eq!(
            (a.first_seq, a.received, a.gaps, a.duplicates),
            (1, a.seq, 0, 0),
            "every seq from 1 exactly once: {shown}"
        );
        assert!(
            a.last_seen_ms.is_some() && a.last_sample_ts_ms.is_some(),
            "{shown}"
        );
    }

    for agent in agents {
        assert!(
            agent.stop().await.is_ok(),
            "the agent's run returned an error"
        );
    }
    server.shutdown().await;
    end();
}

/// An agent dropped mid-flight (SIGKILL) goes offline without a `bye`, one shut down goes
/// offline because of its `bye`, and the two others stay live and keep sending.
#[actix_rt::test]
async fn killed_and_stopped_agents_go_offline_while_others_stay_live() {
    let (server, _) = start_server(server_config()).await;
    let victim = start_agent(&server, "victim", source(0));
    let leaver = start_agent(&server, "leaver", source(1));
    let _steady = [
        start_agent(&server, "steady-1", source(2)),
        start_agent(&server, "steady-2", source(3)),
    ];
    let steady = ["steady-1", "steady-2"];
    wait_for(&server, DEADLINE, |s| {
        s.all_live(&["victim", "leaver"]) && s.all_live(&steady)
    })
    .await;

    victim.kill().await;
    assert!(
        leaver.stop().await.is_ok(),
        "the agent's run returned an error"
    );
    let at_stop = wait_for(&server, DEADLINE, |_| true).await.seqs(&steady);

    let snap = wait_for(&server, DEADLINE, |s| {
        s.all_offline(&["victim", "leaver"]) && s.all_live_and_advanced_by(&at_stop, 2)
    })
    .await;
    let reason = |name: &str| snap.agent(name).offline_reason.clone().unwrap_or_default();
    assert!(
        !reason("victim").is_empty() && !reason("victim").starts_with("bye"),
        "a killed agent cannot say bye: {}",
        snap.agent("victim").to_json()
    );
    assert!(
        reason("leaver").starts_with("bye"),
        "{}",
        snap.agent("leaver").to_json()
    );
    for name in steady {
        let a = snap.agent(name);
        assert_eq!(
            (a.first_seq, a.received, a.gaps, a.duplicates),
            (1, a.seq, 0, 0),
            "{}",
            a.to_json()
        );
    }
    let summary = Summary {
        agents: 4,
        live: 2,
        stale: 0,
        offline: 2,
    };
    assert_eq!(snap.summary, summary, "{}", snap.to_json());
    server.shutdown().await;
    end();
}

/// Across a graceful server restart on the same address (no store), every sample reaches a
/// server exactly once: the first server holds seq 1 to 5 of each run and acknowledged them
/// before its `bye`; the samples taken while no server ran are kept by the agents and sent to
/// the new server, which holds exactly seq 6 to 10 of the same runs, with no gap and no
/// duplicate.
#[actix_rt::test]
async fn a_graceful_server_restart_delivers_every_sample_exactly_once() {
    let (server, addr) = start_server(server_config()).await;
    let names = ["once-1", "once-2"];
    let (_agents, ticks): (Vec<_>, Vec<_>) = names
        .iter()
        .zip(0..)
        .map(|(name, i)| start_manual_agent(&server, name, source(i)))
        .unzip();

    for t in &ticks {
        t.tick(5);
    }
    let before = wait_for(&server, DEADLINE, |s| {
        names.iter().all(|n| s.is_live(n) && s.seq(n) == 5)
    })
    .await;
    for name in names {
        let a = before.agent(name);
        assert_eq!(
            (a.first_seq, a.seq, a.received, a.gaps, a.duplicates),
            (1, 5, 5, 0, 0),
            "the first server: {}",
            a.to_json()
        );
        let interval_ms = u64::try_from(MANUAL_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        assert_eq!(a.interval_ms, interval_ms, "{}", a.to_json());
    }
    server.shutdown().await;

    // Sampled while no server runs: kept in the agents' outboxes.
    for t in &ticks {
        t.tick(3);
    }
    let (reborn, _) = restart_server(server_config(), addr).await;
    wait_for(&reborn, DEADLINE, |s| {
        names.iter().all(|n| s.is_live(n) && s.seq(n) == 8)
    })
    .await;
    // And live again.
    for t in &ticks {
        t.tick(2);
    }
    let after = wait_for(&reborn, DEADLINE, |s| {
        names.iter().all(|n| s.is_live(n) && s.seq(n) == 10)
    })
    .await;
    for name in names {
        let a = after.agent(name);
        assert_eq!(
            a.run_id,
            before.agent(name).run_id,
            "the same run on both servers"
        );
        assert_eq!(
            (a.first_seq, a.seq, a.received, a.gaps, a.duplicates),
            (6, 10, 5, 0, 0),
            "the new server holds exactly what the first one did not: {}",
            a.to_json()
        );
    }
    reborn.shutdown().await;
    end();
}
