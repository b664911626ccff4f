//! The core system: server and `--host` agents on 127.0.0.1.

use std::time::{Duration, Instant};

use lanmon::snapshot::Status;

use crate::support::{
    Agent, DEADLINE, Home, Join, Server, SnapshotExt, TcpPortReservation, ToJson, mem_total_bytes,
    proc_stat_cores, raw_exchange,
};

/// How long the server may take to stop after SIGINT or SIGTERM.
const SERVER_STOP_LIMIT: Duration = Duration::from_secs(2);

/// Three agents show up `live` with this machine's real core count and memory size, their
/// source IP and names, and a `seq` that keeps advancing.
#[test]
fn three_agents_live_with_real_metrics() {
    let server = Server::start();
    let agents: Vec<Agent> = ["alpha", "bravo", "charlie"]
        .iter()
        .map(|n| Agent::start(&server.join(), n))
        .collect();
    let wanted: Vec<&str> = agents.iter().map(Agent::name).collect();

    let snap = server.wait_for(DEADLINE, |s| {
        wanted.iter().all(|n| {
            s.is_live(n)
                && s.find(n)
                    .is_some_and(|a| a.cpu.is_some() && a.memory.is_some())
        })
    });

    assert_eq!(snap.summary.agents, 3, "{}", snap.to_json());
    assert_eq!(snap.summary.live, 3, "{}", snap.to_json());
    assert_eq!(snap.names(), wanted, "agents listed by name");
    let cores = proc_stat_cores();
    let mem_total = mem_total_bytes();
    for name in &wanted {
        let a = snap.agent(name);
        let shown = a.to_json();
        assert_eq!(a.ip, "127.0.0.1", "{shown}");
        assert_eq!(a.cores as usize, cores, "{shown}");
        let per_core = &a.cpu.as_ref().unwrap().per_core;
        assert_eq!(per_core.len(), cores, "per_core vs /proc/stat: {shown}");
        assert_eq!(
            a.memory.map(|m| m.total),
            Some(mem_total),
            "memory.total vs /proc/meminfo: {shown}"
        );
        assert!(a.seq >= 1, "{shown}");
    }

    let before = snap.seqs(&wanted);
    server.wait_for(DEADLINE, |s| s.all_live_and_advanced_by(&before, 1));
}

/// SIGKILL on one agent turns it `offline` (without a `bye`) while the other two stay `live`
/// and keep sending.
#[test]
fn killed_agent_goes_offline_others_stay_live() {
    let server = Server::start();
    let mut victim = Agent::start(&server.join(), "victim");
    let survivors = [
        Agent::start(&server.join(), "steady-1"),
        Agent::start(&server.join(), "steady-2"),
    ];
    let survivor_names: Vec<&str> = survivors.iter().map(Agent::name).collect();
    server.wait_for(DEADLINE, |s| {
        s.is_live("victim") && s.all_live(&survivor_names)
    });

    victim.kill();
    let at_kill = server.wait_for(DEADLINE, |_| true).seqs(&survivor_names);

    let snap = server.wait_for(DEADLINE, |s| {
        s.status("victim") == Some(Status::Offline) && s.all_live_and_advanced_by(&at_kill, 1)
    });
    let reason = snap
        .agent("victim")
        .offline_reason
        .as_deref()
        .unwrap_or_default();
    assert!(
        !reason.is_empty() && !reason.starts_with("bye"),
        "a killed agent cannot say bye; offline_reason = {reason:?}"
    );
    assert_eq!(snap.summary.live, 2, "{}", snap.to_json());
    assert_eq!(snap.summary.offline, 1, "{}", snap.to_json());
}

/// An agent started before the server logs that the connection was refused, keeps retrying,
/// and becomes `live` once the server is up.
#[test]
fn agent_started_before_server_connects_later() {
    // Held until the server binds it: refused meanwhile, and nobody else's.
    let reserved = TcpPortReservation::new();
    let port = reserved.port();
    // The token exists before the server first runs: `server token` creates the identity.
    let home = Home::new();
    let early = Agent::start(&Join::new(port, Some(home.token())), "early-bird");
    let refused_at = early.wait_for_output(DEADLINE, 0, "connection refused");

    let server = Server::start_in(&home, port, &[]);
    drop(reserved);
    let snap = server.wait_for(DEADLINE, |s| {
        s.is_live("early-bird") && s.seq("early-bird") >= 1
    });
    assert_eq!(snap.server.listen, format!("127.0.0.1:{port}"));
    let connected_at = early.wait_for_output(DEADLINE, 0, "Connected to");
    assert!(
        refused_at < connected_at,
        "the refusal should be logged before the connection\n{}",
        early.diagnostics()
    );
}

/// SIGTERM makes an agent say `bye` and exit 0; the server shows it `offline` because of that
/// `bye`.
#[test]
fn agent_sigterm_says_bye_and_exits_zero() {
    let server = Server::start();
    let mut leaving = Agent::start(&server.join(), "leaving");
    server.wait_for(DEADLINE, |s| s.is_live("leaving"));

    leaving.signal(libc::SIGTERM);
    let status = leaving.wait_exit(DEADLINE);
    assert_eq!(
        status.code(),
        Some(0),
        "agent exit: {status}\n{}",
        leaving.diagnostics()
    );

    let snap = server.wait_for(DEADLINE, |s| s.status("leaving") == Some(Status::Offline));
    let reason = snap.agent("leaving").offline_reason.as_deref();
    assert!(
        reason.is_some_and(|r| r.starts_with("bye")),
        "offline_reason = {reason:?}"
    );
}

/// Stops a server that has one connected agent with `signal`; checks the server exits 0
/// within [`SERVER_STOP_LIMIT`] and that the agent survives: it logs the lost connection,
/// retries, and is still running.
fn server_stops_cleanly_on(signal: libc::c_int, agent_name: &str) {
    let mut server = Server::start();
    let mut survivor = Agent::start(&server.join(), agent_name);
    server.wait_for(DEADLINE, |s| {
        s.is_live(agent_name) && s.seq(agent_name) >= 1
    });

    let sent = Instant::now();
    server.signal(signal);
    let exit = server.wait_exit(DEADLINE);
    let took = sent.elapsed();
    assert_eq!(
        exit.code(),
        Some(0),
        "server exit: {exit}\n{}",
        server.stderr()
    );
    assert!(
        took <= SERVER_STOP_LIMIT,
        "server took {took:?} to stop (limit {SERVER_STOP_LIMIT:?})\n{}",
        server.stderr()
    );

    // The last report shows the agents the server let go.
    let last = server.final_snapshot(DEADLINE);
    assert_eq!(
        last.status(agent_name),
        Some(Status::Offline),
        "{}",
        last.to_json()
    );
    assert_eq!(
        last.find(agent_name).map(|a| a.offline_reason.as_deref()),
        Some(Some("server shut down")),
        "{}",
        last.to_json()
    );

    let lost_at = survivor.wait_for_output(DEADLINE, 0, " lost: ");
    // Observable proof that it is still alive after the loss: the next connect attempt.
    survivor.wait_for_output(DEADLINE, lost_at, "cannot connect");
    assert_eq!(
        survivor.try_exit(),
        None,
        "the agent must outlive the server\n{}",
        survivor.diagnostics()
    );
}

/// SIGINT makes the server exit 0 within 2 s after a last report showing its agent offline;
/// the agent logs the loss and keeps running.
#[test]
fn server_sigint_exits_zero_and_agent_survives() {
    server_stops_cleanly_on(libc::SIGINT, "outlives-sigint");
}

/// SIGTERM makes the server exit 0 within 2 s after a last report showing its agent offline;
/// the agent logs the loss and keeps running.
#[test]
fn server_sigterm_exits_zero_and_agent_survives() {
    server_stops_cleanly_on(libc::SIGTERM, "outlives-sigterm");
}

/// Sends `line` from a raw client (plaintext protocol 1, so the server runs `--auth
/// optional`) next to a streaming agent and proves: the client gets one `error` frame with
/// `code` and a message and is disconnected, it is never listed, and the agent stays `live`
/// with its seq advancing.
#[track_caller]
fn refused_alone(line: &str, code: &str) {
    let server = Server::start_with(0, &["--auth", "optional"]);
    let _steady = Agent::start(&server.join(), "steady");
    let before = server
        .wait_for(DEADLINE, |s| s.is_live("steady"))
        .seqs(&["steady"]);

    let answer = raw_exchange(server.port(), line);
    assert_eq!(answer.frame["type"], "error", "{}", answer.frame);
    assert_eq!(answer.frame["code"], code, "{}", answer.frame);
    assert!(answer.frame["message"].is_string(), "{}", answer.frame);
    assert!(
        answer.closed,
        "server kept the connection open after an error frame"
    );

    let snap = server.wait_for(DEADLINE, |s| s.all_live_and_advanced_by(&before, 1));
    assert_eq!(
        snap.names(),
        ["steady"],
        "the refused client must not be listed"
    );
}

/// A plaintext client that sends a line that is not JSON (but opens like protocol 1, `{`)
/// gets an `error` frame with code `bad_frame` and is disconnected, while a real agent on the
/// same server stays `live`. (Bytes that open like neither protocol are closed without a word:
/// `trust::strangers_get_nothing`.)
#[test]
fn garbage_client_gets_bad_frame_agent_unaffected() {
    refused_alone("{not json", "bad_frame");
}

/// A `hello` speaking protocol 99 gets an `error` frame with code `unsupported_version` and is
/// disconnected, while a real agent on the same server stays `live`.
#[test]
fn future_protocol_gets_unsupported_version_agent_unaffected() {
    let hello = serde_json::json!({
        "type": "hello", "proto": 99, "agent_id": "from-the-future", "run_id": "r1",
        "name": "from-the-future", "hostname": "test", "os": "test", "cores": 1,
        "agent_version": "99.0.0", "interval_ms": 1000
    });
    refused_alone(&hello.to_string(), "unsupported_version");
}

/// Two agents that share an id (same host, same name, so the same state directory and key)
/// do not take it from each other: the first keeps streaming, the second is refused with
/// `duplicate_id` and an explanation, and keeps retrying instead of exiting. (With another
/// key the id is refused as `identity_mismatch`: `trust::insider_cannot_take_an_enrolled_id`.)
#[test]
fn two_agents_with_one_id_do_not_fight() {
    let server = Server::start();
    let first = Agent::start(&server.join(), "twin");
    let before = server
        .wait_for(DEADLINE, |s| s.is_live("twin"))
        .seqs(&["twin"]);
    let join = server.join().args();
    let join: Vec<&str> = join.iter().map(String::as_str).collect();
    let mut second = Agent::start_in(first.state(), "twin", &join);
    second.wait_for_output(DEADLINE, 0, "duplicate_id");
    assert!(
        second.stdout().contains("--name or --id"),
        "{}",
        second.diagnostics()
    );
    let snap = server.wait_for(DEADLINE, |s| s.all_live_and_advanced_by(&before, 1));
    let twin = snap.agent("twin");
    assert_eq!(snap.summary.agents, 1, "{}", snap.to_json());
    assert_eq!(twin.duplicates, 0, "{}", twin.to_json());
    assert_eq!(
        twin.first_seq,
        1,
        "the first agent's run was never reset: {}",
        twin.to_json()
    );
    assert_eq!(second.try_exit(), None, "{}", second.diagnostics());
    drop(first);
}
