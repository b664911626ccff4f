//! Discovery on one machine: servers beacon to 127.255.255.255 only, on a UDP port of the
//! test's own (a [`UdpPortReservation`], held for the whole test), and agents find them with
//! `--discover`, joining with the server's token (so they verify its signed beacons). Forged,
//! replayed and foreign-key beacons: `trust.rs`.

use std::net::{Ipv4Addr, UdpSocket};

use crate::support::{Agent, DEADLINE, Server, SnapshotExt, ToJson, UdpPortReservation};

const LOOPBACK_BROADCAST: Ipv4Addr = Ipv4Addr::new(127, 255, 255, 255);

/// A server that beacons to loopback broadcast on `udp`'s port every 200 ms.
#[track_caller]
fn beaconing_server(udp: &UdpPortReservation, name: &str) -> Server {
    let port = udp.arg();
    Server::start_with(
        0,
        &[
            "--beacon-to",
            "127.255.255.255",
            "--discovery-port",
            &port,
            "--beacon-interval",
            "200ms",
            "--name",
            name,
        ],
    )
}

/// An agent that `--discover`s on `udp`'s port, joining `server` (with its token) if given.
#[track_caller]
fn discover_agent(
    name: &str,
    udp: &UdpPortReservation,
    server: Option<&Server>,
    extra: &[&str],
) -> Agent {
    let port = udp.arg();
    let token = server.map(Server::token);
    let mut args = vec!["--discover", "--discovery-port", &port];
    if let Some(t) = &token {
        args.extend(["--join", t]);
    }
    args.extend_from_slice(extra);
    Agent::start_with(name, &args)
}

/// Three `--discover` agents and one `--host` agent, side by side on one machine, all stream
/// to the same server; each discovering agent says which server it found.
#[test]
fn discover_agents_and_a_host_agent_are_all_live() {
    let udp = UdpPortReservation::new();
    let server = beaconing_server(&udp, "lab");
    let discovered: Vec<Agent> = ["disc-1", "disc-2", "disc-3"]
        .iter()
        .map(|n| discover_agent(n, &udp, Some(&server), &[]))
        .collect();
    let _host = Agent::start(&server.join(), "by-host");
    let names = ["disc-1", "disc-2", "disc-3", "by-host"];
    let snap = server.wait_for(DEADLINE, |s| s.all_live(&names));
    assert_eq!(snap.summary.live, 4, "{}", snap.to_json());
    let expected = format!("Discovered server lab at 127.0.0.1:{}", server.port());
    for agent in &discovered {
        agent.wait_for_output(DEADLINE, 0, &expected);
    }
}

/// `agent discover` lists a beaconing server with its address and exits 0; with nothing to
/// hear it says what to check and exits 1.
#[test]
fn agent_discover_lists_servers_or_explains() {
    let udp = UdpPortReservation::new();
    let server = beaconing_server(&udp, "listed");
    let port = udp.arg();
    let mut lister =
        Agent::start_with_args(&["discover", "--discovery-port", &port, "--listen-for", "1s"]);
    let status = lister.wait_exit(DEADLINE);
    let out = lister.stdout();
    assert!(status.success(), "{status:?}\n{out}");
    let row = out
        .lines()
        .find(|l| l.starts_with("listed"))
        .unwrap_or_default();
    assert!(
        row.contains(&format!("127.0.0.1:{}", server.port())),
        "{out}"
    );
    // `--auth required`: protocol 2 and up, and the server's fingerprint as the beacon says.
    assert!(row.contains("v2"), "{out}");
    let fp = server
        .wait_for(DEADLINE, |_| true)
        .server
        .fingerprint
        .unwrap_or_default();
    assert!(!fp.is_empty() && row.contains(&fp), "{fp}\n{out}");

    let silent = UdpPortReservation::new();
    let mut lister = Agent::start_with_args(&[
        "discover",
        "--discovery-port",
        &silent.arg(),
        "--listen-for",
        "300ms",
    ]);
    let status = lister.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(1), "{}", lister.stdout());
    assert!(
        lister.stdout().contains("no server heard"),
        "{}",
        lister.stdout()
    );
}

/// With `--discover-timeout` and no server, the agent gives up with a non-zero exit and a
/// message that names the likely causes.
#[test]
fn discover_timeout_gives_up_with_an_explanation() {
    let udp = UdpPortReservation::new();
    let mut agent = discover_agent("lonely", &udp, None, &["--discover-timeout", "500ms"]);
    let status = agent.wait_exit(DEADLINE);
    assert!(!status.success(), "{status:?}");
    let all = agent.diagnostics();
    assert!(all.contains("no lanmon server heard"), "{all}");
    assert!(all.contains("firewall"), "{all}");
}

/// With two servers beaconing, `--server-name` picks the named one; the other never sees
/// the agent.
#[test]
fn server_name_picks_one_of_several() {
    let udp = UdpPortReservation::new();
    let first = beaconing_server(&udp, "first");
    let second = beaconing_server(&udp, "second");
    let _agent = discover_agent("picky", &udp, Some(&second), &["--server-name", "second"]);
    second.wait_for(DEADLINE, |s| s.is_live("picky"));
    let on_first = first.wait_for(DEADLINE, |_| true);
    assert_eq!(on_first.summary.agents, 0, "{}", on_first.to_json());
}

/// Malformed, oversized and foreign datagrams on the discovery port change nothing: agents
/// stay live and keep streaming, and warn about them at most once (rate-limited).
#[test]
fn bad_datagrams_change_nothing() {
    let udp = UdpPortReservation::new();
    let server = beaconing_server(&udp, "steady");
    let agents: Vec<Agent> = ["calm-1", "calm-2"]
        .iter()
        .map(|n| discover_agent(n, &udp, Some(&server), &[]))
        .collect();
    let names = ["calm-1", "calm-2"];
    let before = server.wait_for(DEADLINE, |s| s.all_live(&names));

    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    sender.set_broadcast(true).unwrap();
    let oversized = vec![b'{'; 4000];
    let bad: Vec<&[u8]> = vec![
        b"garbage",
        b"\xff\xfe\x00",
        &oversized,
        br#"{"service":"other","proto":1,"server_id":"x","server_name":"evil","port":1}"#,
        br#"{"service":"lanmon","proto":99,"server_id":"x","server_name":"future","port":1}"#,
        br#"{"service":"lanmon","proto":1,"server_id":"x","server_name":"zero","port":0}"#,
    ];
    for _ in 0..20 {
        for datagram in &bad {
            sender
                .send_to(datagram, (LOOPBACK_BROADCAST, udp.port()))
                .unwrap();
        }
    }
    let at_attack = before.seqs(&names);
    let after = server.wait_for(DEADLINE, |s| s.all_live_and_advanced_by(&at_attack, 4));
    assert_eq!(after.summary.agents, 2, "{}", after.to_json());
    for agent in &agents {
        agent.wait_for_output(DEADLINE, 0, "ignored a datagram");
        let warnings = agent.stdout().matches("ignored a datagram").count();
        assert_eq!(
            warnings,
            1,
            "rate-limited to one warning\n{}",
            agent.diagnostics()
        );
    }
}
